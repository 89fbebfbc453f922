"""The published (rebalanced) folder read with the loaders users have: torchvision's ImageFolder with
its default loader, HuggingFace ``datasets``' imagefolder, pandas and numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from synthmed.datasets import FileFolderDataset
from synthmed.protocols.rebalancing import GateDecision, RebalancingConfig, publish_rebalanced
from tests.conftest import PROJECT_ROOT

SIZE = 8
GATE_NUMBERS = {"gate.percentile": 99.0, "gate.held_out_count": 4.0, "gate.pixel_threshold": 0.95,
                "gate.planted_count": 8.0, "gate.self_test_recall": 1.0, "gate.planted_missed": 0.0,
                "gate.flagged_count": 1.0, "gate.candidate_count": 3.0, "gate.dropped_count": 1.0,
                "published_synthetic": 2.0}


def _ramp(k: int) -> np.ndarray:
    """A (1, H, W) image over the whole [-1, 1] range: clipping to white or black shows."""
    return np.linspace(-1.0, 1.0, SIZE * SIZE, dtype=np.float32).reshape(1, SIZE, SIZE) * (-1) ** k


def published_inputs():
    """Real slices (two classes, the minority at twice the generator's size) and three synthetic ones."""
    labels = ["axial", "axial", "axial", "sagittal"]
    manifest = pd.DataFrame({"index": range(4), "split": ["train"] * 4, "label": labels,
                             "class_id": [0, 0, 0, 1]})
    real = np.stack([np.kron(_ramp(k), np.ones((2, 2), np.float32)) for k in range(4)])  # 16 px
    synthetic = {"images": np.stack([_ramp(k) * 0.9 for k in range(3)]), "labels": np.ones(3, np.int64)}
    provenance = pd.DataFrame({
        "index": range(3), "family": "ddpm", "checkpoint": "0123456789abcdef", "sampler": "ddim", "steps": 3,
        "guidance": 2.0, "seed": 0, "batch_position": range(3), "condition": "class", "label": "sagittal",
        "case": "", "source_index": -1, "nn_pixel_similarity": [0.5, 0.99, 0.4],
        "nn_pixel_neighbour_index": [0, 3, 1], "memorisation_flagged": [False, True, False]})
    decision = GateDecision(np.array([True, False, True]), provenance, dict(GATE_NUMBERS))
    return {"images": real}, manifest, synthetic, decision


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published") / "rebalanced"
    slices, manifest, synthetic, decision = published_inputs()
    files = publish_rebalanced(slices, manifest, synthetic, decision, RebalancingConfig(gate_action="drop"))
    FileFolderDataset(path=str(root)).save(files)
    return root


# torchvision's own ImageFolder and default loader, in a subprocess (a broken torchvision must not
# reach this process: diffusers imports it when it is installed). PyPI's torchvision wheel is built
# against PyPI's (CUDA) torch; next to a CPU torch its C extension fails at `import torchvision`,
# though ImageFolder does not use it: then torchvision/datasets/folder.py is imported from the
# installed wheel without the package's __init__ (same code, same loader). Without torchvision,
# its default loader is replicated: PIL `Image.open(path).convert("RGB")`, classes = sorted folders.
_TORCHVISION_SCRIPT = r"""
import importlib, importlib.util, json, os, sys, types
import numpy as np
from PIL import Image
try:
    from torchvision.datasets import ImageFolder
    how = "torchvision " + importlib.import_module("torchvision.version").__version__
except ModuleNotFoundError as exc:
    if exc.name != "torchvision":
        raise
    ImageFolder = None
    how = "torchvision not installed: its default loader replicated (PIL convert('RGB'))"
except (RuntimeError, OSError, ImportError) as exc:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    root = importlib.util.find_spec("torchvision").submodule_search_locations[0]
    for package, path in (("torchvision", root), ("torchvision.datasets", os.path.join(root, "datasets"))):
        sys.modules[package] = module = types.ModuleType(package)
        module.__path__ = [path]
    sys.modules["torchvision"].get_image_backend = lambda: "PIL"  # its __init__'s default backend
    ImageFolder = importlib.import_module("torchvision.datasets.folder").ImageFolder
    how = "torchvision/datasets/folder.py without the package __init__ (" + type(exc).__name__ + ")"
if ImageFolder is not None:
    folder = ImageFolder(sys.argv[1])
    classes, samples = folder.classes, folder.samples
    images = [folder[i][0] for i in range(len(folder))]
else:
    classes = sorted(e.name for e in os.scandir(sys.argv[1]) if e.is_dir())
    samples = [(os.path.join(sys.argv[1], c, f), k) for k, c in enumerate(classes)
               for f in sorted(os.listdir(os.path.join(sys.argv[1], c)))]
    images = [Image.open(p).convert("RGB") for p, _ in samples]
np.save(sys.argv[2], np.stack([np.asarray(image) for image in images]))
print(json.dumps({"how": how, "classes": classes, "targets": [t for _, t in samples],
                  "paths": [p for p, _ in samples], "mode": images[0].mode}))
"""


def test_torchvision_image_folder_default_loader_reads_the_images_unclipped(published, tmp_path):
    out = tmp_path / "images.npy"
    env = dict(os.environ)
    # A torchvision kept out of the environment (`pip install --no-deps --target DIR torchvision==0.28.0`,
    # where the wheel does not fit the installed torch): SYNTHMED_TEST_TORCHVISION=DIR, for this subprocess only.
    if extra := os.environ.get("SYNTHMED_TEST_TORCHVISION"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", _TORCHVISION_SCRIPT, str(published / "images"), str(out)],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    print("ImageFolder:", seen["how"])
    assert seen["classes"] == ["axial", "sagittal"] and seen["mode"] == "RGB"
    labels = pd.read_csv(published / "labels.csv")
    rows = labels.set_index("path").loc[[os.path.relpath(p, published) for p in seen["paths"]]]
    assert seen["targets"] == rows["class_id"].tolist()
    loaded = np.load(out).astype(np.float64) / 255.0  # (N, H, W, 3): what a user's transform receives
    assert np.array_equal(loaded[..., 0], loaded[..., 2])  # grey, replicated
    lossless = np.load(published / "data/images.npy")[rows["array_index"].to_numpy()]
    expected = (lossless[:, 0].astype(np.float64) + 1.0) / 2.0
    # Within the 8-bit quantisation, over the whole range: nothing clipped to white.
    assert np.abs(loaded[..., 0] - expected).max() <= 0.5 / 255 + 1e-6
    assert loaded.min() == 0.0 and loaded.max() == 1.0 and (loaded == 1.0).mean() < 0.1


def test_huggingface_imagefolder_gets_the_metadata(published, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dataset = datasets.load_dataset("imagefolder", data_dir=str(published), cache_dir=str(tmp_path / "cache"),
                                    split="train")
    assert {"image", "label", "is_synthetic", "generator", "checkpoint", "gate_score"} <= set(dataset.column_names)
    assert len(dataset) == 4 + 2  # real + the two synthetic images the gate kept
    metadata = pd.read_csv(published / "metadata.csv")
    synthetic = dataset.filter(lambda row: row["is_synthetic"])
    assert sorted(synthetic["gate_score"]) == [0.4, 0.5] and set(synthetic["generator"]) == {"ddpm"}
    assert set(synthetic["checkpoint"]) == {"0123456789abcdef"} and set(synthetic["label"]) == {"sagittal"}
    first = dataset[0]
    row = metadata.iloc[0]
    lossless = np.load(published / "data/images.npy")[row["array_index"], 0]
    assert first["label"] == row["label"]
    pixels = np.asarray(first["image"], dtype=np.float64) / 255.0
    assert np.abs(pixels - (lossless + 1.0) / 2.0).max() <= 0.5 / 255 + 1e-6


def test_pandas_and_numpy_read_the_tables_and_the_lossless_array(published):
    labels = pd.read_csv(published / "labels.csv")
    metadata = pd.read_csv(published / "metadata.csv")
    provenance = pd.read_csv(published / "provenance.csv")
    array = np.load(published / "data/images.npy")
    assert array.dtype == np.float32 and array.shape == (6, 1, SIZE, SIZE)
    assert labels["path"].tolist() == metadata["file_name"].tolist()
    assert all((published / name).is_file() for name in metadata["file_name"])
    assert metadata["is_synthetic"].sum() == 2 and provenance["published"].tolist() == [True, False, True]
    assert not any("synthetic_000001" in name for name in metadata["file_name"])  # the flagged one
    _, manifest, synthetic, _ = published_inputs()
    kept = labels[labels["is_synthetic"]]
    for row in kept.itertuples():  # the synthetic images exactly as generated
        index = int(row.path.rsplit("_", 1)[1].split(".")[0])
        assert np.array_equal(array[row.array_index], synthetic["images"][index])
    real = labels[~labels["is_synthetic"]]
    assert real["label"].tolist() == manifest["label"].tolist()
    assert np.abs(array[real["array_index"]]).max() <= 1.0
