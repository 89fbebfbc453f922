"""kedro-viz in a real browser: after a tiny run, the default view draws every pipeline and a dataset preview.

Headless Debian Chromium (``/usr/bin/chromium``) driven by Playwright, through the helpers of
``tools/screenshots.py``. Without the browser the test is skipped, saying why, unless
``SYNTHMED_REQUIRE_BROWSER=1`` (CI sets it in ``.ci/run``, after installing Chromium): then it fails.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import PROJECT_ROOT

REQUIRED = os.environ.get("SYNTHMED_REQUIRE_BROWSER") == "1"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshots", PROJECT_ROOT / "tools/screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _browser_or_skip(tool: ModuleType) -> None:
    missing = None
    if not tool.BROWSER.is_file():
        missing = f"{tool.BROWSER} is not installed (as root: `apt-get install -y chromium`)"
    elif importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is not installed (`pip install -e '.[test]'`)"
    if missing and REQUIRED:
        pytest.fail(f"SYNTHMED_REQUIRE_BROWSER=1 but {missing}.")
    if missing:
        pytest.skip(f"no headless browser: {missing}; set SYNTHMED_REQUIRE_BROWSER=1 to make this a failure.")


def _texts(page, selector: str) -> set[str]:
    return set(page.evaluate(f"Array.from(document.querySelectorAll('{selector}')).map(e => e.textContent)"))


@pytest.mark.slow
def test_kedro_viz_draws_every_pipeline_and_a_dataset_preview_in_a_browser(tmp_path: Path,
                                                                           reproduced_project: Path) -> None:
    tool = _tool()
    _browser_or_skip(tool)
    project = reproduced_project  # every pipeline run once (conftest); kedro-viz only reads it
    with tool.browser_page() as page, tool.kedro_viz(project, log_file=tmp_path / "kedro_viz.log",
                                                      env={"KEDRO_ENV": "test"}) as url:
        tool.open_viz(page, url)
        # The default view is __default__: nodes of the first and the last pipelines, and the
        # namespaced families as collapsed modular pipelines.
        tasks, datasets = _texts(page, ".pipeline-node--task"), _texts(page, ".pipeline-node--data")
        assert {"build_sample_cohort", "inventory_sources", "extract_slices", "build_report"} <= tasks, tasks
        assert {"slices", "evaluation_report", "ddpm.released_model"} <= datasets, datasets
        assert {"ddpm", "dcgan", "pix2pix"} <= _texts(page, ".pipeline-node--modularPipeline")
        page.screenshot(path=tmp_path / "kedro_viz.png")
        # synthmed's own preview (ArrayStoreDataset.preview: a PNG grid of slices) in the metadata panel.
        image = tool.open_preview(page, "slices")
        assert image.get_attribute("src").startswith("data:image/png;base64,")
        assert image.evaluate("img => img.naturalWidth") >= 64
        page.screenshot(path=tmp_path / "kedro_viz_preview.png")
    for name in ("kedro_viz.png", "kedro_viz_preview.png"):
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, name
