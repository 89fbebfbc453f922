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
import yaml

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


VERSIONS = {"synthmed_version": "0.1.0", "git_commit": "a" * 40, "git_dirty": "false",
            "dvc_lock_sha256": "b" * 64, "kedro_env": "base+test"}
NOTICE = "Copyright (C) 1993-2009 Example Notice, must travel with copies."


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published") / "rebalanced"
    slices, manifest, synthetic, decision = published_inputs()
    config = RebalancingConfig(gate_action="drop", source_notice=NOTICE, source_description="Two ramps.",
                               export_formats=("dicom", "nifti"))
    files = publish_rebalanced(slices, manifest, synthetic, decision, config, VERSIONS)
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
    # The folder alone (the card's YAML block is read too): same rows.
    by_folder = datasets.load_dataset(str(published), cache_dir=str(tmp_path / "cache2"), split="train")
    assert by_folder["gate_score"] == dataset["gate_score"] and by_folder["label"] == dataset["label"]


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


def test_dataset_card_has_huggingface_metadata_and_the_versions(published):
    text = (published / "README.md").read_text()
    assert text.startswith("---\n")
    block, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(block)
    assert meta["synthetic"] is True and meta["license"] == "other" and meta["license_name"]
    assert meta["task_categories"] == ["image-classification"] and meta["size_categories"] == ["n<1K"]
    assert {"synthetic", "medical-imaging", "ddpm"} <= set(meta["tags"])
    assert meta["git_commit"] == "a" * 40 and meta["dvc_lock_sha256"] == "b" * 64
    assert meta["kedro_env"] == "base+test" and meta["synthmed_version"] == "0.1.0"
    flat = " ".join(body.split())
    for section in ("## Intended use", "## Out-of-scope use", "## Limitations", "## Source data and licence",
                    "## Versions", "## Citation"):
        assert section in body, section
    assert NOTICE in flat and "Two ramps." in flat and "Kedro environment `base+test`" in flat
    assert "recall 1.000" in flat and "**1 dropped**" in flat  # the gate's figures
    assert "conf/base only" not in flat


@pytest.mark.parametrize(("family", "expected"), [
    ("ddpm", "name=ddim, steps=50, guidance_scale=2.0"),
    ("dcgan", "none: `dcgan` draws each image in one forward pass"),
])
def test_the_cards_sampler_line_names_a_sampler_only_where_the_family_runs_one(family, expected):
    from synthmed.protocols.rebalancing import sampler_text

    text = sampler_text(RebalancingConfig(generator=family))
    assert text.startswith(expected)


def test_build_info_reads_git_dvc_lock_and_the_environment(tmp_path):
    from synthmed.core.build_info import build_info
    from synthmed.core.checksums import sha256_file

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    for args in (["add", "dvc.lock"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    info = build_info(tmp_path, "gpu")
    assert info["git_commit"] == head and info["git_dirty"] == "false" and info["kedro_env"] == "base+gpu"
    assert info["dvc_lock_sha256"] == sha256_file(tmp_path / "dvc.lock")
    (tmp_path / "dvc.lock").write_text("changed\n")
    assert build_info(tmp_path, None)["git_dirty"] == "true" and build_info(tmp_path, None)["kedro_env"] == "base"
    outside = build_info(tmp_path / "nowhere", "local")
    assert outside["git_commit"] == "unknown" and outside["dvc_lock_sha256"] == "unknown"


def test_synthetic_images_export_as_dicom_and_nifti_marked_synthetic(published):
    import nibabel as nib
    import pydicom

    labels = pd.read_csv(published / "labels.csv")
    array = np.load(published / "data/images.npy")
    kept = labels[labels["is_synthetic"]]
    uids = set()
    for row in kept.itertuples():
        stem = row.path.rsplit("/", 1)[1].removesuffix(".png")
        ds = pydicom.dcmread(published / f"dicom/{row.label}/{stem}.dcm")
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "SYNTHETIC"] and ds.ConversionType == "SYN"
        assert ds.BurnedInAnnotation == "NO" and ds.PatientID == "SYNTHETIC" and ds.StudyDate == ""
        assert "synthetic" in ds.DerivationDescription.lower() and ds.Manufacturer == "synthmed"
        uids |= {ds.SOPInstanceUID}
        assert ds.SOPInstanceUID.startswith("2.25.") or ds.SOPInstanceUID.startswith("1.2.826.0.1.3680043")
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.abs(values - array[row.array_index, 0]).max() <= 1 / 65535 + 1e-6  # 16-bit quantisation
        nifti = nib.load(published / f"nifti/{row.label}/{stem}.nii.gz")
        assert bytes(nifti.header["descrip"]).startswith(b"SYNTHETIC")
        upright = np.asarray(nifti.dataobj)[:, :, 0].T[::-1]  # (W, H, 1) -> rows top down
        assert np.array_equal(upright, array[row.array_index, 0])
    assert len(uids) == len(kept) == 2
    assert not (published / "dicom").joinpath("axial").exists()  # real images are never exported
