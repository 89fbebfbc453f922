"""dvc.yaml's code deps come from the imports, and dvc.lock matches the code and parameters.

``tools/dvc_deps.py`` derives each stage's code dependencies from the imports of its
pipeline; ``dvc status`` compares the committed ``dvc.lock`` with the code and parameters
on disk. Data deps and outs are absent in a fresh clone and do not count here: only code
(``src/``) and parameters do. After changing a stage's code or parameters, regenerate the
lock with ``make demo`` (or ``dvc repro``) and commit it (README, "Contributing").
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthmed.generators.registry import FAMILIES
from tests.conftest import PROJECT_ROOT, project_copy

_spec = importlib.util.spec_from_file_location("dvc_deps", PROJECT_ROOT / "tools" / "dvc_deps.py")
dvc_deps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dvc_deps)


@pytest.fixture(scope="module")
def stages():
    return yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def test_code_deps_are_those_the_pipeline_imports(stages):
    wrong = {}
    for name, stage in stages.items():
        expected, listed = dvc_deps.stage_code_deps(name), dvc_deps.dvc_code_deps(stage)
        if expected != listed:
            wrong[name] = {"missing": sorted(set(expected) - set(listed)),
                           "not used": sorted(set(listed) - set(expected))}
    assert not wrong, f"dvc.yaml code deps differ from the imports (run `python tools/dvc_deps.py --write`): {wrong}"


def test_a_new_import_becomes_a_dependency(monkeypatch):
    """The derivation follows imports: a module the graph says extraction imports must be listed."""
    graph = dvc_deps._graph()
    before = dvc_deps.stage_code_deps("extraction")
    assert "src/synthmed/privacy/memorisation.py" not in before
    graph.add_import(importer="synthmed.pipelines.extraction.nodes", imported="synthmed.privacy.memorisation")
    try:
        assert "src/synthmed/privacy/memorisation.py" in dvc_deps.stage_code_deps("extraction")
    finally:
        graph.remove_import(importer="synthmed.pipelines.extraction.nodes", imported="synthmed.privacy.memorisation")
    assert dvc_deps.stage_code_deps("extraction") == before


def test_every_registered_family_has_its_params_and_outs(stages):
    """dvc.yaml names families where DVC needs fixed paths; they must be the registry's."""
    for stage_name, block in (("training", ("family", "run", "model", "training")), ("sampling", ("sampling",)),
                              ("release", ("family",))):
        params = {key for entry in stages[stage_name]["params"] for keys in entry.values() for key in keys}
        assert params == {f"{family}.{part}" for family in FAMILIES for part in block}, stage_name
    outs = {next(iter(o)) if isinstance(o, dict) else o for o in stages["training"]["outs"]}
    assert {f"data/06_models/{family}" for family in FAMILIES} <= outs
    outs = {next(iter(o)) if isinstance(o, dict) else o for o in stages["sampling"]["outs"]}
    assert {f"data/07_model_output/{family}" for family in FAMILIES} <= outs
    outs = {next(iter(o)) if isinstance(o, dict) else o for o in stages["release"]["outs"]}
    assert outs == {f"data/09_release/models/{family}" for family in FAMILIES} | {"data/09_release/dataset"}
    assert {f"data/06_models/{family}" for family in FAMILIES} <= set(stages["release"]["deps"])


def _dvc() -> str:
    found = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if found is None:
        pytest.skip("dvc is not installed")
    return found


def stale_stages(project: Path) -> dict[str, list[str]]:
    """Stages whose code or parameters differ from dvc.lock (``dvc status``), with what changed."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([_dvc(), "status", "--json"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    stale: dict[str, list[str]] = {}
    for stage, changes in json.loads(result.stdout or "{}").items():
        for change in changes if isinstance(changes, list) else []:
            if not isinstance(change, dict):
                continue
            for path in change.get("changed deps", {}):
                if path.startswith(("src/", "conf/")) or ":" in path:  # "file.yml:key" is a parameter
                    stale.setdefault(stage.split(":")[-1], []).append(path)
    return stale


def test_dvc_lock_matches_the_code_and_parameters():
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    stale = stale_stages(PROJECT_ROOT)
    assert not stale, (
        f"dvc.lock is out of date for {stale}: run `make demo` (or `dvc repro`) and commit dvc.lock."
    )


def test_the_lock_check_sees_a_code_change(tmp_path):
    """Break-check of the test above: a copy of the project with one edited module is stale."""
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    copy = project_copy(tmp_path / "project")  # the working tree, not only what is committed
    edited = "src/synthmed/imaging/slicing.py"
    assert edited not in stale_stages(copy).get("extraction", [])
    with open(copy / edited, "a") as handle:
        handle.write("\n# an edit\n")
    assert edited in stale_stages(copy)["extraction"]


def _lock_outputs(root: Path) -> dict[str, str | None]:
    """Every output dvc.lock records under ``root``, with its md5 (None for folders' entries without one)."""
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {out["path"]: out.get("md5") for stage in stages.values() for out in stage.get("outs", [])}


def metrics_off_the_lock(root: Path, tracked: list[str]) -> list[str]:
    """The outputs of dvc.lock among ``tracked`` (the ``cache: false`` metrics git holds) whose bytes in
    ``root`` are not those whose md5 dvc.lock records: a demo's lock committed without its metrics."""
    outs = _lock_outputs(root)
    return [path for path in tracked if path in outs
            and hashlib.md5((root / path).read_bytes()).hexdigest() != outs[path]]


def _tracked_lock_outputs() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "data"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    outs = _lock_outputs(PROJECT_ROOT)
    return [path for path in listed if path in outs]


def test_the_committed_metrics_are_those_of_the_lock():
    """``make demo`` writes dvc.lock and the metrics beside it; both are committed together."""
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = _tracked_lock_outputs()
    assert "data/08_reporting/metrics.json" in tracked and "data/08_reporting/extraction_metrics.json" in tracked
    stale = metrics_off_the_lock(PROJECT_ROOT, tracked)
    assert not stale, (f"{stale} differ from the md5 dvc.lock records: copy them from the `make demo` that wrote "
                       "dvc.lock and commit them with it.")


def test_the_metrics_check_sees_a_stale_file(tmp_path):
    """Break-check of the test above: one committed metrics file from another run is found."""
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = _tracked_lock_outputs()
    for path in ["dvc.lock", *tracked]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / path, tmp_path / path)
    assert metrics_off_the_lock(tmp_path, tracked) == []
    stale = tmp_path / "data/08_reporting/extraction_metrics.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "slices_total": -1}))
    assert metrics_off_the_lock(tmp_path, tracked) == ["data/08_reporting/extraction_metrics.json"]
