"""Every dataset load verifies what its writer recorded (issue 8: data that cannot rot silently)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError

from synthmed.core.checksums import ChecksumError
from synthmed.datasets import ArrayStoreDataset, ClassifierDataset, FileFolderDataset
from synthmed.datasets.integrity import FOLDER_LISTING, hint_for
from synthmed.generators.common import CheckpointError, verify_checksums, write_checksums
from synthmed.metrics.features import TrainedClassifier


def _store(tmp_path: Path) -> tuple[ArrayStoreDataset, Path]:
    folder = tmp_path / "slices" / "arrays"
    dataset = ArrayStoreDataset(path=str(folder))
    dataset.save({"images": np.arange(2 * 1 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8),
                  "labels": np.array([0, 1])})
    return dataset, folder / "images.npy"


def _flip_byte(path: Path, offset: int = -1) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    stat = path.stat()  # a new mtime even within one file-system timestamp tick
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


# ------------------------------------------------------------------ array stores


def test_a_corrupted_byte_in_images_fails_the_load_naming_file_and_both_checksums(tmp_path: Path) -> None:
    dataset, images = _store(tmp_path)
    expected = json.loads((images.parent / "index.json").read_text())["arrays"]["images"]["sha256"]
    _flip_byte(images)  # one float's lowest byte: the array still parses
    found = hashlib.sha256(images.read_bytes()).hexdigest()
    with pytest.raises(DatasetError) as info:
        dataset.load()
    message = str(info.value)
    assert f"{images} is corrupt" in message and expected in message and found in message
    assert f"dvc checkout {images.parent}" in message
    assert isinstance(info.value, ChecksumError)


def test_a_truncated_array_names_file_and_sizes_instead_of_numpy_mmap_error(tmp_path: Path) -> None:
    dataset, images = _store(tmp_path)
    size = images.stat().st_size
    with open(images, "r+b") as handle:
        handle.truncate(size - 100)
    with pytest.raises(DatasetError,
                       match=rf"truncated .*: size mismatch, expected {size} bytes, found {size - 100}") as info:
        dataset.load()
    assert str(images) in str(info.value) and "mmap length" not in str(info.value)


def test_an_index_without_sizes_still_loads_and_is_verified_by_sha256(tmp_path: Path) -> None:
    dataset, images = _store(tmp_path)
    index_path = images.parent / "index.json"
    index = json.loads(index_path.read_text())
    for info in index["arrays"].values():
        del info["size"]
    index_path.write_text(json.dumps(index))
    assert dataset.load()["images"].shape == (2, 1, 8, 8)
    _flip_byte(images)
    with pytest.raises(DatasetError, match="images.npy is corrupt"):
        dataset.load()


def test_an_unreadable_index_names_the_file(tmp_path: Path) -> None:
    dataset, images = _store(tmp_path)
    (images.parent / "index.json").write_text("{broken")
    with pytest.raises(DatasetError, match=r"index\.json is not valid JSON"):
        dataset.load()


def test_reloading_an_unchanged_store_does_not_rehash(tmp_path: Path, hash_calls) -> None:
    dataset, images = _store(tmp_path)
    hash_calls.clear()  # the writer's hashes
    for _ in range(3):
        store = dataset.load()
        _ = store["images"][0], store["labels"][1]
    assert sorted(p.name for p in hash_calls) == ["images.npy", "labels.npy"]


def test_an_array_modified_after_load_is_caught_when_opened(tmp_path: Path, hash_calls) -> None:
    dataset, images = _store(tmp_path)
    store = dataset.load()
    hash_calls.clear()
    _flip_byte(images)
    with pytest.raises(DatasetError, match="images.npy is corrupt"):
        store["images"]
    assert [p.name for p in hash_calls] == ["images.npy"]


def test_the_fix_names_the_dvc_stage_that_writes_the_store(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  extraction:\n    cmd: kedro run --pipelines extraction\n"
        "    outs:\n      - data/05_model_input/slices\n")
    folder = tmp_path / "data" / "05_model_input" / "slices" / "arrays"
    ArrayStoreDataset(path=str(folder)).save({"images": np.zeros(4, np.float32)})
    assert "`kedro run --pipelines extraction` / `dvc repro`" in hint_for(folder)
    _flip_byte(folder / "images.npy")
    with pytest.raises(DatasetError, match="--pipelines extraction"):
        ArrayStoreDataset(path=str(folder)).load()


# ------------------------------------------------------------------ file folders


def test_file_folders_record_a_hidden_listing_and_verify_it(tmp_path: Path) -> None:
    folder = tmp_path / "rebalanced"
    dataset = FileFolderDataset(path=str(folder))
    dataset.save({"README.md": "card", "nevus/000001.png": np.zeros((4, 4), np.uint8)})
    listing = json.loads((folder / FOLDER_LISTING).read_text())
    assert set(listing["files"]) == {"README.md", "nevus/000001.png"}
    assert listing["files"]["README.md"] == {"sha256": hashlib.sha256(b"card").hexdigest(), "size": 4}
    loaded = dataset.load()
    assert loaded.files == ("README.md", "nevus/000001.png")  # the listing stays hidden
    _flip_byte(folder / "nevus" / "000001.png", 10)
    with pytest.raises(DatasetError, match=r"000001\.png is corrupt"):
        dataset.load()
    (folder / "nevus" / "000001.png").unlink()
    with pytest.raises(DatasetError, match=r"000001\.png is missing"):
        dataset.load()


def test_folders_without_a_listing_load_unverified(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.dcm").write_bytes(b"x")
    assert FileFolderDataset(path=str(tmp_path / "raw")).load().files == ("a.dcm",)


def test_read_verified_names_both_checksums(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.dcm").write_bytes(b"now")
    folder = FileFolderDataset(path=str(tmp_path / "raw")).load()
    recorded = hashlib.sha256(b"then").hexdigest()
    with pytest.raises(DatasetError, match=f"expected sha256 {recorded}, found {hashlib.sha256(b'now').hexdigest()}"):
        folder.read_verified(["a.dcm"], recorded)


# ------------------------------------------------------------------ generator and classifier folders


def _model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ddpm"
    folder.mkdir()
    (folder / "generator.json").write_text("{}")
    (folder / "unet.safetensors").write_bytes(b"w" * 64)
    write_checksums(folder)
    return folder


def test_generator_checksums_record_sizes_and_catch_corruption(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    listing = json.loads((folder / "checksums.json").read_text())
    assert listing["files"]["unet.safetensors"]["size"] == 64
    verify_checksums(folder)
    _flip_byte(folder / "unet.safetensors")
    with pytest.raises(CheckpointError,
                       match=r"unet\.safetensors is corrupt \(does not match its checksum\): "
                             r"expected sha256 [0-9a-f]{64}, found"):
        verify_checksums(folder)


def test_generator_folders_with_older_checksums_still_verify(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    listing = json.loads((folder / "checksums.json").read_text())
    (folder / "checksums.json").write_text(json.dumps({k: v["sha256"] for k, v in listing["files"].items()}))
    verify_checksums(folder)


def test_invalid_json_in_generator_checksums_is_a_checkpoint_error_naming_it(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    (folder / "checksums.json").write_text('{"unet.safetensors": ')
    with pytest.raises(CheckpointError, match=r"checksums\.json is unreadable: not valid JSON") as info:
        verify_checksums(folder)
    assert str(folder / "checksums.json") in str(info.value)


def test_a_corrupt_classifier_is_refused(tmp_path: Path) -> None:
    from synthmed.metrics.features import ClassifierConfig, ConvClassifier

    folder = tmp_path / "encoder"
    model = ConvClassifier(ClassifierConfig(channels=1, num_classes=2, image_px=8, width=2, feature_dim=4))
    dataset = ClassifierDataset(path=str(folder))
    dataset.save(TrainedClassifier(model, ("a", "b")))
    assert dataset.load().class_names == ("a", "b")
    _flip_byte(folder / "weights.safetensors")
    with pytest.raises(DatasetError, match=r"weights\.safetensors is corrupt"):
        dataset.load()
