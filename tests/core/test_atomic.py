"""Atomic writes on a full disk: a clear error, no temporary left, the previous version intact."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError

from synthmed.core.atomic import DiskFullError, atomic_directory, atomic_write_bytes, is_disk_full


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_injected_enospc_in_a_folder_save_names_the_path_and_keeps_the_old_version(tmp_path):
    target = tmp_path / "store"
    with atomic_directory(target) as tmp:
        (tmp / "a.npy").write_bytes(b"old")
    with pytest.raises(DiskFullError, match=r"Disk full while writing .*store: at least 7 bytes needed") as caught:
        with atomic_directory(target) as tmp:
            (tmp / "b.npy").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC and "bytes free" in str(caught.value)
    assert (target / "a.npy").read_bytes() == b"old" and not (target / "b.npy").exists()
    assert _no_temporaries(tmp_path)


def test_numpy_short_write_counts_as_disk_full(tmp_path):
    assert is_disk_full(OSError("77568 requested and 64480 written"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("77568 requested and 64480 written"))


def test_injected_enospc_in_a_file_write(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_bytes(target, b"{}")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"metrics.json: 5 bytes needed"):
        atomic_write_bytes(target, b"12345")
    monkeypatch.undo()
    assert target.read_bytes() == b"{}" and _no_temporaries(tmp_path)



def test_a_real_full_disk(small_disk):
    disk = small_disk("256k")
    """An array store that does not fit: DiskFullError, the old store intact, no temporary; then it fits."""
    from synthmed.datasets.array_store import ArrayStoreDataset

    dataset = ArrayStoreDataset(path=str(disk / "slices"))
    dataset.save({"images": np.zeros((4, 1, 8, 8), np.float32)})
    with pytest.raises(Exception) as caught:
        dataset.save({"images": np.ones((200, 1, 32, 32), np.float32)})  # 800 KiB
    error = caught.value if isinstance(caught.value, DiskFullError) else caught.value.__cause__
    assert isinstance(error, DiskFullError), repr(caught.value)
    assert "slices" in str(error) and "bytes free" in str(error)
    assert np.array_equal(dataset.load()["images"], np.zeros((4, 1, 8, 8), np.float32))
    assert _no_temporaries(disk)
    dataset.save({"images": np.ones((20, 1, 32, 32), np.float32)})  # after freeing room: 80 KiB fits
    assert dataset.load()["images"].shape == (20, 1, 32, 32)


def test_a_full_mlflow_store_is_reported_with_its_path(tmp_path, monkeypatch):
    """MLflow's SQLite store says "database or disk is full" through SQLAlchemy and MLflow wrappers."""
    import sqlite3

    import mlflow

    from synthmed.datasets.metrics import MetricsDataset

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def full(*args, **kwargs):
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as exc:
            raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) write failed") from exc

    with mlflow.start_run():
        monkeypatch.setattr(mlflow, "log_metrics", full)
        with pytest.raises(DatasetError, match=r"Disk full while writing .*mlflow\.db") as caught:
            MetricsDataset(path=str(tmp_path / "m.json")).save({"a": 1.0})
    assert isinstance(caught.value.__cause__, DiskFullError)
    assert (tmp_path / "m.json").is_file()  # the DVC metrics file was written before MLflow


def test_other_mlflow_errors_pass_through(tmp_path, monkeypatch):
    import mlflow

    from synthmed.core.atomic import disk_full_reported

    with pytest.raises(mlflow.exceptions.MlflowException, match="bad name"):
        with disk_full_reported(tmp_path / "mlflow.db"):
            raise mlflow.exceptions.MlflowException("bad name")
