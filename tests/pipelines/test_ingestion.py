"""Ingestion pipeline on a folder of good and bad inputs: nothing crashes, nothing vanishes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthmed.pipelines import ingestion
from synthmed.pipelines.ingestion.config import IngestionConfig
from tests.conftest import MANIFEST_DTYPES, project_catalog, read_json, run

LENIENT = {"ingestion": {"max_rejection_rate": 0.5}}


def _ingest(tmp_path, source, overrides=LENIENT):
    catalog = project_catalog(tmp_path, source, overrides=overrides)
    run(ingestion.create_pipeline(), catalog)
    base = tmp_path / "data/02_intermediate/ingestion"
    return (
        pd.read_csv(base / "manifest.csv", keep_default_na=False, dtype=MANIFEST_DTYPES),
        pd.read_csv(base / "rejected.csv", keep_default_na=False),
        read_json(tmp_path / "data/08_reporting/ingestion_metrics.json"),
        catalog,
    )


def test_every_bad_file_is_rejected_with_its_reason_and_counts_conserve(tmp_path, source_folder):
    source, expected = source_folder
    manifest, rejected, metrics, _ = _ingest(tmp_path, source)

    assert dict(zip(rejected["source_path"], rejected["reason"])) == expected
    assert (rejected["detail"] != "").all()
    accepted_files = manifest["n_files"].sum()
    assert (metrics["files_read"] == accepted_files + len(rejected)
            == metrics["files_accepted"] + metrics["files_rejected"])
    # write_source_folder writes 18 files (8 DICOM, 3 NIfTI, 5 PNG, notes.docx, labels.csv);
    # labels.csv is the labels table, the other 17 are read.
    assert metrics["files_found"] == 18 and metrics["files_read"] == 17 and metrics["files_ignored"] == 1
    assert metrics["rejected_truncated"] == 1


def test_manifest_describes_each_item(tmp_path, source_folder):
    source, _ = source_folder
    manifest, _, _, catalog = _ingest(tmp_path, source)
    rows = {r.source_paths.split(";")[0]: r for r in manifest.itertuples()}

    series = rows["dicom/series/slice0.dcm"]
    assert (series.kind, series.n_files, series.shape, series.spacing_mm) == ("volume", 4, "1x10x12x4", "0.5x0.5x2.5")
    assert rows["photos/eye.png"].label == "fundus" and rows["photos/eye.png"].mask_path == "photos/eye_mask.png"
    assert rows["nifti/head.nii.gz"].modality == "MR" and rows["nifti/head.nii.gz"].has_mask
    assert rows["photos/grey16.png"].source_dtype == "uint16"
    # Item ids and patient keys are 16-hex pseudonyms; no raw PatientID survives.
    assert manifest["item_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert not manifest["patient_key"].str.contains("PAT").any()

    images = catalog.load("ingested_images")
    masks = catalog.load("ingested_masks")
    assert set(images) == set(manifest["item_id"])
    assert set(masks) == set(manifest[manifest["has_mask"]]["item_id"])
    volume = images[series.item_id]
    assert volume.shape == (1, 10, 12, 4) and volume.dtype == np.float32
    # slice k was written with +10*k HU: ordering by position is preserved.
    assert [float(volume[0, 0, 0, k]) for k in range(4)] == [0.0, 10.0, 20.0, 30.0]


def test_same_key_same_ids_other_key_other_ids(tmp_path, source_folder):
    source, _ = source_folder
    first, *_ = _ingest(tmp_path / "a", source)
    again, *_ = _ingest(tmp_path / "b", source)
    assert first["item_id"].tolist() == again["item_id"].tolist()

    catalog = project_catalog(tmp_path / "c", source, key=b"another-key-of-enough-length", overrides=LENIENT)
    run(ingestion.create_pipeline(), catalog)
    other = pd.read_csv(tmp_path / "c/data/02_intermediate/ingestion/manifest.csv", dtype=MANIFEST_DTYPES)
    assert not set(other["item_id"]) & set(first["item_id"])


def test_strict_mode_fails_after_writing_the_rejected_table(tmp_path, source_folder):
    source, _ = source_folder
    with pytest.raises(Exception, match="ingestion.strict is true and 6 of 17 files rejected"):
        _ingest(tmp_path, source, overrides={"ingestion": {"strict": True, "max_rejection_rate": 1.0}})
    # The table that explains the failure exists.
    assert len(pd.read_csv(tmp_path / "data/02_intermediate/ingestion/rejected.csv")) == 6


def test_rejection_rate_above_the_limit_fails(tmp_path, source_folder):
    source, _ = source_folder
    with pytest.raises(Exception, match=r"max_rejection_rate=0.1.*rate 0.353"):
        _ingest(tmp_path, source, overrides={"ingestion": {"max_rejection_rate": 0.1}})


def test_disabled_format_is_rejected_not_dropped(tmp_path, source_folder):
    source, _ = source_folder
    manifest, rejected, metrics, _ = _ingest(
        tmp_path, source, overrides={"ingestion": {"formats": ["raster", "nifti"], "max_rejection_rate": 1.0}}
    )
    assert (manifest["format"] != "dicom").all()
    disabled = rejected[rejected["reason"] == "format_disabled"]["source_path"]
    assert len(disabled) == 8 and disabled.str.startswith("dicom/").all()
    assert metrics["files_read"] == metrics["files_accepted"] + metrics["files_rejected"]


def test_labels_from_subfolders(tmp_path, source_folder):
    source, _ = source_folder
    manifest, *_ = _ingest(
        tmp_path, source,
        overrides={"ingestion": {"labels_csv": None, "labels_from_subfolders": True, "ignore": ["labels.csv"],
                                 "max_rejection_rate": 0.5}},
    )
    assert set(manifest["label"]) == {"dicom", "nifti", "photos"}


def test_unknown_parameter_is_named(tmp_path, source_folder):
    source, _ = source_folder
    with pytest.raises(Exception, match=r"Unknown key\(s\) \['stirct'\] in parameters 'ingestion'"):
        _ingest(tmp_path, source, overrides={"ingestion": {"stirct": True}})


def test_links_out_of_the_source_folder_are_rejected_and_inside_duplicates_ignored(tmp_path, source_folder):
    source, expected = source_folder
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"SENTINEL-OUTSIDE-BYTES")
    (source / "link_out.png").symlink_to(outside / "secret.png")
    (source / "passwd").symlink_to("/etc/passwd")
    (source / "dir_out").symlink_to(outside, target_is_directory=True)
    (source / "loop").symlink_to(".", target_is_directory=True)
    listed = sorted(p for p in source.rglob("*.png") if not p.is_symlink())[0]
    (source / "again.png").symlink_to(listed)
    manifest, rejected, metrics, _ = _ingest(tmp_path, source)

    links = {"link_out.png": "link_outside_source", "passwd": "link_outside_source",
             "dir_out": "link_outside_source", "loop": "link_loop"}
    assert dict(zip(rejected["source_path"], rejected["reason"])) == {**expected, **links}
    # Conservation counts the refused links as read and rejected; the duplicate is ignored.
    assert metrics["files_read"] == 17 + 4 == manifest["n_files"].sum() + len(rejected)
    assert metrics["files_ignored"] == 2 and metrics["rejected_link_outside_source"] == 3
    inventory = pd.read_csv(tmp_path / "data/02_intermediate/ingestion/inventory.csv", keep_default_na=False)
    assert inventory.set_index("source_path").loc["again.png", "reason"] == "duplicate_link"
    written = [p for p in tmp_path.joinpath("data").rglob("*") if p.is_file()]
    assert written and not any(b"SENTINEL-OUTSIDE" in p.read_bytes() for p in written)


def test_series_names_come_from_whole_words_in_configuration_order():
    config = IngestionConfig(series={"FLAIR": ("flair",), "T2w": ("t2", "t2w"), "T1w": ("t1", "mprage")})
    assert config.series_of("AX T2 FLAIR", "") == "FLAIR"       # FLAIR is listed before T2w
    assert config.series_of("t1_mprage_sag") == "T1w"
    assert config.series_of("sub-003_T2w.nii.gz") == "T2w"
    assert config.series_of("T10 localizer", "DWI") == ""        # "t10" is not the word "t1"
    assert IngestionConfig().series_of("AX FLAIR") == ""  # no rules: no series
    with pytest.raises(ValueError, match=r"ingestion\.series\.FLAIR must be a non-empty list of words.*'t2-flair'"):
        IngestionConfig(series={"FLAIR": ("t2-flair",)})


def test_the_labels_table_names_a_series_the_file_name_does_not(tmp_path, source_folder):
    source, _ = source_folder
    table = pd.read_csv(source / "labels.csv", dtype=str, keep_default_na=False)
    table["series"] = ["T1w" if p == "nifti/head.nii.gz" else "" for p in table["path"]]
    assert "nifti/head.nii.gz" in set(table["path"])
    table.to_csv(source / "labels.csv", index=False)
    rules = {"series": {"FLAIR": ["flair"], "PD": ["eye"]}, "max_rejection_rate": 0.5}
    manifest, *_ = _ingest(tmp_path, source, overrides={"ingestion": rules})
    series = {r.source_paths.split(";")[0]: r.series for r in manifest.itertuples()}
    assert series["nifti/head.nii.gz"] == "T1w"     # the table
    assert series["photos/eye.png"] == "PD"         # the file name's word "eye"
    assert series["dicom/series/slice0.dcm"] == ""  # neither
