"""The per-file pass in worker processes: same outputs with any number of workers, one file's
failure is that file's rejection (or, for de-identification, its item's quarantine), and no
per-file pixels or copies are held in memory."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from synthmed.core.config import from_params
from synthmed.datasets.file_folder import FileFolderDataset
from synthmed.datasets.integrity import DataChecksumError
from synthmed.pipelines import ingestion, preprocessing
from synthmed.pipelines.ingestion import dicom_pass, nodes
from synthmed.pipelines.preprocessing import nodes as preprocessing_nodes
from synthmed.privacy.pixel_checks import PIXEL_COLUMNS
from tests.conftest import TEST_KEY, project_catalog, run

BOOM = "s01/i002.dcm"
PARAMS = {"max_rejection_rate": 1.0, "labels_csv": None}
DEID = {"dates": "shift", "date_shift_days": (-3650, -365), "keep_private": (),
        "quarantine_modalities": ("US", "SC", "OT"), "quarantine_burned_in": True, "allow_classes": ()}


def write_ct_series(root: Path, n_series: int, length: int) -> None:
    """``n_series`` CT series of ``length`` instances made from CT_small, one patient each."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    x, y, z = (float(v) for v in template.ImagePositionPatient)
    for series in range(n_series):
        study, series_uid = generate_uid(), generate_uid()
        for index in range(length):
            ds = template.copy()
            ds.PatientID = f"POOL{series}"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.ImagePositionPatient = [x, y, z + 2.0 * index]
            ds.PixelData = np.roll(template.pixel_array, index + series, axis=1).tobytes()
            path = root / f"s{series:02d}" / f"i{index:03d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)


def _outputs(tmp_path: Path, source: Path, workers: int) -> dict[str, str]:
    """sha256 of every file ingestion and de-identification write, by relative path."""
    work = tmp_path / f"work{workers}"
    catalog = project_catalog(work, source, overrides={"ingestion": {**PARAMS, "workers": workers}})
    pipeline = ingestion.create_pipeline() + preprocessing.create_pipeline().only_nodes(
        "check_pixels", "deidentify_sources")
    run(pipeline, catalog)
    data = work / "data"
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file() and "08_reporting" not in p.parts}


def test_two_workers_write_the_same_files_as_one(tmp_path):
    source = tmp_path / "src"
    write_ct_series(source, 3, 4)
    data = (source / "s02/i001.dcm").read_bytes()
    (source / "s02/i001.dcm").write_bytes(data[:-4000])  # truncated: rejected, its series too
    one, two = _outputs(tmp_path, source, 1), _outputs(tmp_path, source, 2)
    assert sum(p.startswith("03_primary/deidentified/dicom/") for p in one) == 8
    assert any(p.startswith("02_intermediate/ingestion/images/") and p.endswith(".npy") for p in one)
    # The candidate layer (copies and their table) is an output too: the same with 2 workers.
    assert sum(p.startswith("02_intermediate/deid_candidates/files/dicom/") for p in one) == 8
    assert one == two


def _scan_or_die(root, rel, *args):
    """`scan_dicom_file`, except that it raises past its own handler for BOOM (module level: picklable)."""
    if rel == BOOM:
        raise MemoryError("the worker ran out of memory on this file")
    return _SCAN(root, rel, *args)


_SCAN = nodes.scan_dicom_file


def _read(source: Path, workers: int):
    raw = FileFolderDataset(path=str(source)).load()
    params = {**PARAMS, "workers": workers}
    inventory = nodes.inventory_sources(raw, params)
    labels = nodes.read_label_table(raw, params)
    return raw, nodes.read_dicom_items(raw, inventory, labels, TEST_KEY, params, DEID)


def test_an_exception_escaping_a_worker_rejects_only_its_file(tmp_path, monkeypatch):
    source = tmp_path / "src"
    write_ct_series(source, 3, 3)
    monkeypatch.setattr(nodes, "scan_dicom_file", _scan_or_die)
    _, (manifest, rejected, items, _, _) = _read(source, workers=2)
    assert rejected[["source_path", "reason", "detail"]].values.tolist() == [
        [BOOM, "decode_failed", "MemoryError: the worker ran out of memory on this file"]]
    # The pool went on: every other file, those after BOOM included, was read and accepted.
    accepted = sorted(p for paths in manifest["source_paths"] for p in paths.split(";"))
    assert accepted == sorted(f"s{s:02d}/i{i:03d}.dcm" for s in range(3) for i in range(3) if (s, i) != (1, 2))


def test_the_reader_holds_no_pixels_and_its_spill_folder_goes_with_its_loaders(tmp_path):
    source = tmp_path / "src"
    write_ct_series(source, 2, 3)
    _, (manifest, _, items, copies, _) = _read(source, workers=1)
    assert len(items) == 2
    for loader in items.values():  # paths and checksums only; the arrays wait on disk
        assert not any(isinstance(v, np.ndarray | bytes) for v in vars(loader).values())
        assert loader.array_path.is_file()
    spill = next(iter(items.values())).spill.path
    # Per-file pixels were removed once stacked into their series: one array per item is left,
    # and each file's de-identified copy, handed over as a loader of its bytes.
    assert len(copies) == 6 and all(callable(v) for v in copies.values())
    assert sorted(p.name for p in spill.iterdir()) == sorted(
        [loader.array_path.name for loader in items.values()] + [f"{i:08d}.dcm" for i in range(6)])
    arrays = [loader.image() for loader in items.values()]
    assert [a.shape for a in arrays] == [(1, 128, 128, 3)] * 2
    del items, loader, arrays, copies
    gc.collect()
    assert not spill.exists()


def _peak_bytes_of_reading(tmp_path: Path, n_series: int) -> int:
    source = tmp_path / f"src{n_series}"
    write_ct_series(source, n_series, 4)
    raw = FileFolderDataset(path=str(source)).load()
    inventory = nodes.inventory_sources(raw, PARAMS)
    labels = nodes.read_label_table(raw, PARAMS)
    gc.collect()
    tracemalloc.start()
    result = nodes.read_dicom_items(raw, inventory, labels, TEST_KEY, {**PARAMS, "workers": 1}, DEID)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(result[2]) == n_series
    return peak


def test_reading_memory_does_not_grow_with_the_pixels_of_every_file(tmp_path):
    # 8 and 64 files (4 per series; each file's pixels are 64 KB as float32). Kept in memory,
    # 56 more files would add 3.6 MB; what is kept per file (path, checksum, series key) is
    # about 0.5 KB (measured: 1.0 MB peak for 8, 32 and 128 files alike).
    small, large = _peak_bytes_of_reading(tmp_path, 2), _peak_bytes_of_reading(tmp_path, 16)
    assert large - small < 300_000, (small, large)


def _candidates(tmp_path: Path, copies: dict) -> object:
    """The candidate layer as preprocessing loads it (saved, then listed and verified)."""
    dataset = FileFolderDataset(path=str(tmp_path / "candidates"))
    dataset.save(copies)
    return dataset.load()


def test_deidentify_sources_publishes_the_candidate_copies_as_they_are(tmp_path):
    source = tmp_path / "src"
    write_ct_series(source, 2, 3)
    raw, (manifest, _, _, copies, table) = _read(source, workers=1)
    candidates = _candidates(tmp_path, copies)
    files, audit, quarantine = preprocessing_nodes.deidentify_sources(
        raw, manifest, {}, {}, candidates, table, DEID, NO_PIXEL_CHECKS)
    assert len(files) == 6 and quarantine.empty
    assert all(callable(v) for v in files.values())  # nothing de-identified is held in memory
    # Published byte for byte as ingestion's pass made them: not parsed or re-encoded again.
    assert sorted(files) == sorted(candidates.files)
    assert all(files[name]() == candidates.read_bytes(name) for name in files)
    first = pydicom.dcmread(candidates.root / next(iter(files)))
    assert first.PatientIdentityRemoved == "YES" and first.PatientID.startswith("SM")
    assert audit["actions"].str.contains("private_removed=").all()
    assert audit["actions"].tolist() == table["actions"].tolist()


def test_preprocessing_refuses_copies_of_another_profile_or_a_missing_copy(tmp_path):
    source = tmp_path / "src"
    write_ct_series(source, 1, 2)
    raw, (manifest, _, _, copies, table) = _read(source, workers=1)
    copies = {name: copy() for name, copy in copies.items()}  # saved three times below: moved files only once
    other = {**DEID, "dates": "remove"}
    with pytest.raises(ValueError, match="made with another preprocessing.deid profile"):
        preprocessing_nodes.deidentify_sources(raw, manifest, {}, {}, _candidates(tmp_path, copies), table, other,
                                               NO_PIXEL_CHECKS)
    first = sorted(copies)[0]
    candidates = _candidates(tmp_path, {name: v for name, v in copies.items() if name != first})
    with pytest.raises(DataChecksumError, match="missing from the de-identification candidates"):
        preprocessing_nodes.deidentify_sources(raw, manifest, {}, {}, candidates, table, DEID, NO_PIXEL_CHECKS)
    with pytest.raises(ValueError, match="1 DICOM item.s. without a row"):
        preprocessing_nodes.deidentify_sources(raw, manifest, {}, {}, candidates, table.iloc[0:0], DEID,
                                               NO_PIXEL_CHECKS)


def test_workers_must_be_positive_or_null():
    assert nodes.IngestionConfig(workers=None).workers is None
    for bad in (0, -2, True):
        with pytest.raises(ValueError, match="ingestion.workers must be a positive number"):
            nodes.IngestionConfig(workers=bad)
    # DICOM files are de-identified by ingestion's workers: preprocessing has no pool any more.
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['workers'\]"):
        from_params(preprocessing_nodes.PreprocessingConfig, {"intensity": {"default": {}}, "workers": 2},
                    "preprocessing")


def _scan_with_failing_deid(root, rel, *args):
    """`scan_dicom_file`, whose de-identification raises for BOOM (module level: picklable)."""
    if rel != BOOM:
        return _SCAN(root, rel, *args)

    def fail(*_args, **_kwargs):
        raise ValueError("SECRET-VALUE in a header")

    real, dicom_pass.deidentify = dicom_pass.deidentify, fail
    try:
        return _SCAN(root, rel, *args)
    finally:
        dicom_pass.deidentify = real


NO_PIXEL_CHECKS = pd.DataFrame(columns=PIXEL_COLUMNS)


def test_a_file_that_cannot_be_deidentified_quarantines_its_item_only(tmp_path, monkeypatch):
    source = tmp_path / "src"
    write_ct_series(source, 3, 3)
    monkeypatch.setattr(nodes, "scan_dicom_file", _scan_with_failing_deid)
    raw, (manifest, rejected, _, copies, table) = _read(source, workers=2)
    assert rejected.empty  # read and decoded: accepted; only its item stays out of the primary layer
    boom_item = manifest.loc[manifest["source_paths"].str.contains(BOOM), "item_id"].item()
    failed = "de-identification failed on instance 0002 (ValueError)"
    assert table.set_index("item_id").loc[boom_item, "reason"] == failed
    assert len(copies) == 6 and not any(boom_item in path for path in copies)  # no copy of its other files either
    files, audit, quarantine = preprocessing_nodes.deidentify_sources(
        raw, manifest, {}, {}, _candidates(tmp_path, copies), table, DEID, NO_PIXEL_CHECKS)
    assert quarantine["reason"].tolist() == [failed]
    assert quarantine["item_id"].tolist() == [boom_item]
    assert len(files) == 6 and not any(boom_item in path for path in files)
    assert "SECRET" not in audit.to_csv() + quarantine.to_csv() + table.to_csv()
