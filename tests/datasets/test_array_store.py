"""Tests for synthmed.datasets.array_store: a pickle-free folder of memory-mapped arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError

from synthmed.datasets.array_store import FORMAT, INDEX, ArrayStoreDataset, check_array_name


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "images": rng.normal(size=(3, 1, 8, 8)).astype(np.float32),
        "labels": np.array([0, 2, 1], dtype=np.int64),
        "mask": rng.random((4, 5)) > 0.5,
        "hu": np.arange(-8, 8, dtype=np.int16).reshape(4, 4),
    }


def _leftovers(folder: Path) -> list[str]:
    """Temporary or backup siblings that an atomic save must not leave behind."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_save_load_round_trip_keeps_shapes_dtypes_and_values(tmp_path: Path) -> None:
    dataset = ArrayStoreDataset(path=str(tmp_path / "store"))
    arrays = _arrays()
    dataset.save(arrays)
    store = dataset.load()
    assert sorted(store) == sorted(arrays)
    assert len(store) == 4
    for name, expected in arrays.items():
        loaded = store[name]
        assert loaded.shape == expected.shape
        assert loaded.dtype == expected.dtype
        np.testing.assert_array_equal(loaded, expected)
        assert store.info(name)["shape"] == list(expected.shape)
        assert store.info(name)["dtype"] == expected.dtype.str
    store.verify()  # the checksums written at save time match the files


def test_load_returns_read_only_memory_maps(tmp_path: Path) -> None:
    dataset = ArrayStoreDataset(path=str(tmp_path / "store"))
    dataset.save({"images": np.zeros((2, 3), dtype=np.float32)})
    images = dataset.load()["images"]
    assert isinstance(images, np.memmap)
    assert not images.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0] = 1.0


def test_unknown_name_is_a_key_error_naming_it(tmp_path: Path) -> None:
    dataset = ArrayStoreDataset(path=str(tmp_path / "store"))
    dataset.save({"a": np.zeros(2)})
    with pytest.raises(KeyError, match="'missing'"):
        dataset.load()["missing"]


def test_callables_are_evaluated_at_save_time(tmp_path: Path) -> None:
    dataset = ArrayStoreDataset(path=str(tmp_path / "store"))
    calls: list[str] = []

    def make() -> np.ndarray:
        calls.append("made")
        return np.full((2, 2), 7, dtype=np.uint8)

    dataset.save({"lazy": make, "eager": np.ones(3)})
    assert calls == ["made"]
    np.testing.assert_array_equal(dataset.load()["lazy"], np.full((2, 2), 7, dtype=np.uint8))


def test_object_dtype_is_rejected_naming_the_array(tmp_path: Path) -> None:
    dataset = ArrayStoreDataset(path=str(tmp_path / "store"))
    with pytest.raises(DatasetError, match="'ragged' has dtype object"):
        dataset.save({"ragged": np.array([np.zeros(2), np.zeros(3)], dtype=object)})
    assert not (tmp_path / "store").exists()
    assert _leftovers(tmp_path / "store") == []


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "-dash", "a.b"])
def test_bad_array_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetError, match=f"Array name {name!r} is not allowed"):
        check_array_name(name)
    with pytest.raises(DatasetError, match=f"Array name {name!r} is not allowed"):
        ArrayStoreDataset(path=str(tmp_path / "store")).save({name: np.zeros(1)})
    assert not (tmp_path / "store").exists()
    assert not (tmp_path / "x.npy").exists()


def test_save_rejects_a_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="got list"):
        ArrayStoreDataset(path=str(tmp_path / "store")).save([np.zeros(1)])


def test_failing_callable_mid_save_keeps_the_previous_store(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    dataset = ArrayStoreDataset(path=str(folder))
    dataset.save({"a": np.arange(4), "b": np.ones(2)})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def boom() -> np.ndarray:
        raise RuntimeError("generator crashed")

    # Names are written in sorted order: "a" is written to the temporary folder first.
    # Kedro's save wrapper re-raises the callable's error as a DatasetError.
    with pytest.raises(DatasetError, match="generator crashed") as caught:
        dataset.save({"a": np.arange(10), "b": boom})
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    store = dataset.load()
    store.verify()
    np.testing.assert_array_equal(store["a"], np.arange(4))
    assert _leftovers(folder) == []


def test_stale_arrays_from_a_previous_save_do_not_survive(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    dataset = ArrayStoreDataset(path=str(folder))
    dataset.save({"a": np.zeros(2), "stale": np.zeros(2)})
    dataset.save({"a": np.ones(3)})
    store = dataset.load()
    assert list(store) == ["a"]
    assert not (folder / "stale.npy").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a.npy", INDEX]
    assert _leftovers(folder) == []


def test_verify_detects_a_corrupted_file(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    dataset = ArrayStoreDataset(path=str(folder))
    dataset.save({"good": np.arange(6), "bad": np.arange(16, dtype=np.float32)})
    target = folder / "bad.npy"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF  # flip one byte of the last value, keep the file size
    target.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="bad.npy is corrupt"):
        dataset.load()


def test_index_format_is_checked(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    dataset = ArrayStoreDataset(path=str(folder))
    dataset.save({"a": np.zeros(2)})
    index = json.loads((folder / INDEX).read_text())
    assert index["format"] == FORMAT
    assert set(index["arrays"]["a"]) == {"shape", "dtype", "sha256", "size"}
    index["format"] = "someone-else/9"
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(DatasetError, match="'someone-else/9'"):
        dataset.load()


def test_missing_index_is_a_clear_error_and_not_exists(tmp_path: Path) -> None:
    dataset = ArrayStoreDataset(path=str(tmp_path / "nowhere"))
    assert not dataset.exists()
    with pytest.raises(DatasetError, match=f"{INDEX} is missing"):
        dataset.load()


def test_volumes_round_trip_as_five_axis_memory_maps(tmp_path: Path) -> None:
    """Sub-volumes (N, C, D, H, W) with their label maps: shape, dtype, values, batch indexing."""
    rng = np.random.default_rng(3)
    arrays = {
        "images": rng.uniform(-1, 1, size=(3, 1, 5, 6, 7)).astype(np.float32),
        "label_maps": rng.integers(0, 5, size=(3, 1, 5, 6, 7)).astype(np.uint8),
    }
    dataset = ArrayStoreDataset(path=str(tmp_path / "volumes"))
    dataset.save(arrays)
    store = dataset.load()
    for name, expected in arrays.items():
        loaded = store[name]
        assert isinstance(loaded, np.memmap) and loaded.shape == expected.shape and loaded.dtype == expected.dtype
        assert store.info(name)["shape"] == [3, 1, 5, 6, 7]
        np.testing.assert_array_equal(loaded[[0, 2]], expected[[0, 2]])
    assert dataset.preview(max_images=2)  # a volume's middle slice is a picture


def test_an_index_that_misstates_a_volume_s_shape_is_refused(tmp_path: Path) -> None:
    """The checksum covers the file; the index's shape and dtype are checked against the file's header too."""
    folder = tmp_path / "volumes"
    dataset = ArrayStoreDataset(path=str(folder))
    dataset.save({"images": np.zeros((2, 1, 4, 4, 4), np.float32)})
    index = json.loads((folder / INDEX).read_text())
    index["arrays"]["images"]["shape"] = [2, 1, 4, 4]  # a 2D store's shape for a volume file
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(DatasetError, match=r"images.npy holds a float32 array of shape \[2, 1, 4, 4, 4\].*"
                                           r"records float32 \[2, 1, 4, 4\]"):
        dataset.load()
    index["arrays"]["images"]["shape"] = [2, 1, 4, 4, 4]
    index["arrays"]["images"]["dtype"] = "<f8"
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(DatasetError, match="records float64"):
        dataset.load()
