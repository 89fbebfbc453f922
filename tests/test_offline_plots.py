"""`make plots` (`synthmed plots`): DVC's plots page with Vega inlined, so it opens without a network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synthmed.core.offline_plots import offline_template, remote_scripts
from tests.conftest import sh

DVC_YAML = """\
plots:
  - history.csv:
      x: step
      y: loss
"""


def _plots_repo(root: Path) -> Path:
    root.mkdir()
    sh("git", "init", "-q", cwd=root)
    sh(str(Path(sys.executable).parent / "dvc"), "init", "-q", cwd=root)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "history.csv").write_text("step,loss\n1,0.9\n2,0.5\n3,0.4\n")
    return root


def test_remote_scripts_finds_cdn_tags_only():
    page = ('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script><script src=//cdn.example/x.js></script>'
            '<script>var u = "https://vega.github.io/schema/";</script><script src="local.js"></script>')
    assert len(remote_scripts(page)) == 2


def test_the_template_inlines_vega_and_has_no_scripts_placeholder():
    template = offline_template()
    assert remote_scripts(template) == []
    assert "{plot_divs}" in template and "{scripts}" not in template  # DVC adds its CDN tags at {scripts}
    assert "window.vegaEmbed" in template and "</script" not in template[:template.rindex("</script>")]


@pytest.mark.slow  # two DVC commands in subprocesses: 15-40 s
def test_synthmed_plots_writes_a_page_that_loads_no_script_from_the_network(tmp_path: Path):
    repo = _plots_repo(tmp_path / "repo")
    # DVC's own page: the check sees its CDN scripts
    sh(str(Path(sys.executable).parent / "dvc"), "plots", "show", "-o", "default_plots", cwd=repo)
    assert remote_scripts((repo / "default_plots/index.html").read_text())
    result = subprocess.run([sys.executable, "-m", "synthmed", "plots"], cwd=repo, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (repo / "dvc_plots/index.html").read_text()
    assert remote_scripts(page) == []
    assert "vegaEmbed(" in page and '"loss"' in page  # the chart is there, drawn by the inlined library
    assert "opens without a network" in result.stdout or "no network needed" in result.stdout
