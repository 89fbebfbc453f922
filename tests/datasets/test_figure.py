"""FigureDataset: a figure written as an image file, without matplotlib imported by the dataset."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.io import DatasetError
from matplotlib.figure import Figure
from PIL import Image

from synthmed.datasets import FigureDataset

ROOT = Path(__file__).resolve().parents[2]


def _figure(width_in: float = 2.0, height_in: float = 1.0) -> Figure:
    figure = Figure(figsize=(width_in, height_in))
    figure.add_subplot().plot([0, 1], [1, 0])
    return figure


def test_a_figure_is_written_as_png_at_its_dpi_and_previewed(tmp_path: Path) -> None:
    path = tmp_path / "reporting" / "grid.png"
    dataset = FigureDataset(filepath=str(path), save_args={"format": "png", "dpi": 50})
    assert not dataset.exists()
    dataset.save(_figure())
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (100, 50)
    assert base64.b64decode(dataset.preview()) == path.read_bytes()
    assert dataset._describe()["filepath"] == str(path)  # what ReportingArtifactsHook logs to MLflow


def test_a_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "grid.png"
    dataset = FigureDataset(filepath=str(path))
    dataset.save(_figure())
    before = path.read_bytes()
    broken = _figure()
    broken.savefig = lambda buffer, **kwargs: (buffer.write(b"\x89PNG half"), (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(DatasetError, match="disk"):
        dataset.save(broken)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_wrong_input_and_loading_are_refused_naming_the_file(tmp_path: Path) -> None:
    dataset = FigureDataset(filepath=str(tmp_path / "grid.png"))
    with pytest.raises(DatasetError, match=r"grid\.png: expected a matplotlib Figure, got ndarray"):
        import numpy as np

        dataset.save(np.zeros((4, 4)))
    with pytest.raises(DatasetError, match="write-only"):
        dataset.load()
    with pytest.raises(DatasetError, match=r"suffix \.png does not match save_args.format 'svg'"):
        FigureDataset(filepath=str(tmp_path / "grid.png"), save_args={"format": "svg"})
    with pytest.raises(DatasetError, match="'bmp' is not one of"):
        FigureDataset(filepath=str(tmp_path / "grid"), save_args={"format": "bmp"})


def test_a_pyplot_figure_is_closed_once_saved(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    assert figure.number in plt.get_fignums()
    FigureDataset(filepath=str(tmp_path / "f.png")).save(figure)
    assert figure.number not in plt.get_fignums()


BUILD_CATALOG = """
import json, sys
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
bootstrap_project(Path.cwd())
with KedroSession.create(project_path=Path.cwd()) as session:
    catalog = session.load_context().catalog
    figures = [name for name, dataset in catalog.items() if type(dataset).__name__ == "FigureDataset"]
print(json.dumps({"figures": len(figures), "pyplot": "matplotlib.pyplot" in sys.modules,
                  "matplotlib": "matplotlib" in sys.modules}))
"""


def test_building_every_catalog_entry_does_not_import_matplotlib() -> None:
    # kedro-mlflow's after_catalog_created builds every entry before the first node of any run.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run([sys.executable, "-c", BUILD_CATALOG], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["figures"] >= 5  # the named entries; factory patterns ({family}.*) resolve on use
    assert not found["pyplot"] and not found["matplotlib"], found


def test_io_bytes_written_are_what_savefig_renders(tmp_path: Path) -> None:
    figure = _figure()
    FigureDataset(filepath=str(tmp_path / "a.png"), save_args={"dpi": 40, "metadata": {"Software": None}}).save(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=40, metadata={"Software": None})
    assert (tmp_path / "a.png").read_bytes() == buffer.getvalue()
