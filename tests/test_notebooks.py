"""The notebooks in notebooks/ run (nbmake) against a tiny run of the project.

A copy of the shared finished run of the project (`reproduced_project` in conftest: `dvc repro`
with the `test` configuration) commits its headline; then the headline node alone runs again with DCGAN as
the published generator (seconds, not another evaluation): two MLflow runs with a headline and a
`dvc metrics diff` to show. Each notebook then runs in
its own kernel (nbmake, in a pytest subprocess) with SYNTHMED_PROJECT pointing at that copy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, _env, sh

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory, reproduced_project: Path) -> Path:
    # A copy of the shared finished run (every pipeline, KEDRO_ENV=test; conftest): the second run
    # below changes its headline.
    project = tmp_path_factory.mktemp("notebooks") / "project"
    shutil.copytree(reproduced_project, project, symlinks=True)
    sh("git", "add", "-f", "data/08_reporting/headline.json", "data/08_reporting/metrics.json", cwd=project)
    sh("git", "commit", "-q", "--allow-empty", "-m", "first run", cwd=project)
    sh("kedro", "run", "--pipelines", "evaluation", "--nodes", "headline_metrics", "--params",
       "rebalancing.generator=dcgan", cwd=project)
    return project


def test_there_are_the_two_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_published_dataset.ipynb", "02_compare_runs.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_on_a_tiny_run(notebook: Path, tiny_project: Path):
    env = _env(SYNTHMED_PROJECT=str(tiny_project), SYNTHMED_KEDRO_ENV="test")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", "--nbmake-timeout=300",
         str(notebook)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
