"""PNG screenshots of what a user sees: kedro-viz's default view, the MLflow UI, the report's first screen.

    python tools/screenshots.py [PROJECT] [--out DIR]

Run it in a project folder after a run (``make demo``): it serves kedro-viz and ``mlflow ui``
on 127.0.0.1 (free ports), opens them in headless Chromium through Playwright and writes

    kedro_viz.png          the default pipeline view (every pipeline)
    kedro_viz_preview.png  the same with a dataset's preview open (the slices' image grid)
    mlflow.png             the MLflow UI's landing page
    report.png             the first screen of data/08_reporting/report.html

The browser is Debian's ``/usr/bin/chromium`` (``apt-get install chromium``); nothing is
downloaded (no ``playwright install``). ``tests/test_screenshots.py`` uses the same helpers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger("screenshots")

BROWSER = Path("/usr/bin/chromium")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run")
VIEWPORT = {"width": 1600, "height": 1000}
# The dataset whose preview (synthmed's ArrayStoreDataset.preview: an image grid) is opened.
PREVIEW_DATASET = "slices"
QUIET_ENV = {"KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
             "DVC_NO_ANALYTICS": "1"}


def free_port() -> int:
    """A port free on 127.0.0.1 below 49152 (kedro-viz refuses the ephemeral range the OS hands out)."""
    import random

    for port in random.sample(range(20000, 49000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free TCP port between 20000 and 49000 on 127.0.0.1")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serve(command: Sequence[str], cwd: Path, url: str, *, env: dict[str, str] | None = None,
          timeout_s: float = 240.0, log_file: Path | None = None) -> Iterator[str]:
    """Run a server until ``url`` answers 200; stop it (its whole process group) afterwards."""
    log = open(log_file, "wb") if log_file else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(list(command), cwd=cwd, env={**os.environ, **QUIET_ENV, **(env or {})},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(url):
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {process.returncode} before {url} answered"
                                   + (f"; its output is in {log_file}" if log_file else ""))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s ({' '.join(command)})")
            time.sleep(1.0)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if log_file:
            log.close()


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@contextmanager
def kedro_viz(project: Path, *, log_file: Path | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    with serve([_bin("kedro"), "viz", "run", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
               project, f"http://127.0.0.1:{port}/", env=env, log_file=log_file) as url:
        yield url


@contextmanager
def mlflow_ui(project: Path, *, log_file: Path | None = None) -> Iterator[str]:
    port = free_port()
    with serve([_bin("mlflow"), "ui", "--backend-store-uri", "sqlite:///mlflow.db", "--host", "127.0.0.1",
                "--port", str(port)], project, f"http://127.0.0.1:{port}/", log_file=log_file) as url:
        yield url


@contextmanager
def browser_page() -> Iterator[Any]:
    """A page of headless Chromium (``BROWSER``), driven by Playwright."""
    from playwright.sync_api import sync_playwright

    if not BROWSER.is_file():
        raise FileNotFoundError(f"{BROWSER} not found: install Debian's Chromium (`apt-get install -y chromium`, "
                                "as root); Playwright's own browser download is not used.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(BROWSER), args=list(BROWSER_FLAGS), headless=True)
        try:
            yield browser.new_page(viewport=VIEWPORT)
        finally:
            browser.close()


def open_viz(page: Any, url: str) -> None:
    """Load kedro-viz, wait for the graph and close its announcement banner and guided tour."""
    page.goto(url, wait_until="networkidle", timeout=180_000)
    page.wait_for_selector(".pipeline-node--task", timeout=180_000)
    for label in ("Dismiss", "Close", "Skip"):
        button = page.get_by_role("button", name=label, exact=True)
        if button.count():
            button.first.click()
    close_tour = page.locator(".feature-hints__close, .feature-hints button[aria-label='close']")
    if close_tour.count():
        close_tour.first.click()
    page.wait_for_timeout(1000)


def open_preview(page: Any, dataset: str = PREVIEW_DATASET) -> Any:
    """Click ``dataset``'s node; return the locator of its preview image in the metadata panel."""
    import re

    page.locator(".pipeline-node--data").filter(has_text=re.compile(rf"^{re.escape(dataset)}$")).first.dispatch_event(
        "click")
    image = page.locator(".pipeline-metadata .pipeline-metadata__plot-image")
    image.wait_for(state="visible", timeout=120_000)
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                           timeout=60_000)
    return image


def open_mlflow(page: Any, url: str) -> None:
    """Load the MLflow UI and wait until its single-page app has drawn the experiments (not its skeleton)."""
    # "load", not "networkidle": the UI keeps polling its server, so the network may never go idle
    # (seen on a loaded 2-core machine: a 180 s timeout); the text below says when it has drawn.
    page.goto(url, wait_until="load", timeout=180_000)
    page.wait_for_function("() => /Welcome to MLflow|Experiments/.test(document.body.innerText)", timeout=180_000)
    try:  # the home page lists the recent experiments (the project's is `synthmed`) after a second request
        page.wait_for_function("() => document.body.innerText.includes('synthmed')", timeout=60_000)
    except Exception:  # Playwright's TimeoutError: take the page as it is
        logger.warning("the MLflow home page listed no `synthmed` experiment within 60 s")
    page.wait_for_timeout(2000)


def take(project: Path, out: Path) -> list[Path]:
    """Every screenshot of the module doc for ``project``, into ``out``; returns the files written."""
    project, out = project.resolve(), out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with browser_page() as page:
        with kedro_viz(project, log_file=out / "kedro_viz.log") as url:
            open_viz(page, url)
            page.screenshot(path=out / "kedro_viz.png")
            written.append(out / "kedro_viz.png")
            try:
                open_preview(page)
                page.screenshot(path=out / "kedro_viz_preview.png")
                written.append(out / "kedro_viz_preview.png")
            except Exception as exc:  # a project without the slices yet: the default view is still useful
                logger.warning("no preview of %s: %s", PREVIEW_DATASET, exc)
        if (project / "mlflow.db").is_file():
            with mlflow_ui(project, log_file=out / "mlflow_ui.log") as url:
                open_mlflow(page, url)
                page.screenshot(path=out / "mlflow.png")
                written.append(out / "mlflow.png")
                # The synthmed experiment as `make mlflow-ui` links it: the model-training view of its runs.
                from synthmed.__main__ import runs_url

                runs = runs_url(project, url.rstrip("/"))
                if runs is not None:
                    page.goto(runs, wait_until="load", timeout=180_000)
                    page.wait_for_function("() => document.body.innerText.includes('rebalancing')", timeout=180_000)
                    page.wait_for_timeout(2000)
                    page.screenshot(path=out / "mlflow_runs.png")
                    written.append(out / "mlflow_runs.png")
        else:
            logger.warning("%s has no mlflow.db: no MLflow screenshot", project)
        report = project / "data/08_reporting/report.html"
        if report.is_file():
            page.goto(report.as_uri(), wait_until="load")
            page.screenshot(path=out / "report.png")  # the first screen only (the viewport)
            written.append(out / "report.png")
        else:
            logger.warning("%s is missing: no report screenshot", report)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?", default=".", type=Path, help="the project folder (default: .)")
    parser.add_argument("--out", type=Path, default=Path("build/screenshots"), help="where the PNGs go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in take(args.project, args.out):
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
