"""Pixel checks in the preprocessing pipeline: text in pixels quarantined or redacted, faces removed
from the NIfTI copy and from the arrays downstream, DICOM head series kept out."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

from synthmed.privacy.burned_in_text import find_text
from synthmed.privacy.pixel_checks import DICOM_FACE_REASON, PixelChecksConfig, check_item
from tests.conftest import _nifti, png_bytes, project_catalog, run
from tests.head_phantom import SPACING, synthetic_head


def _gradient_png(text: str | None) -> bytes:
    image = Image.fromarray(np.tile(np.linspace(0, 200, 320), (320, 1)).astype(np.uint8))
    if text:
        ImageDraw.Draw(image).text((20, 30), text, fill=255, font=ImageFont.load_default(size=36))
    return png_bytes(np.asarray(image))


def _run(tmp_path: Path, on_text: str):
    """Ingestion + preprocessing of a head NIfTI and two rasters: the workdir, item ids by file, catalog."""
    source = tmp_path / "source"
    (source / "heads").mkdir(parents=True)
    (source / "photos").mkdir()
    (source / "heads/head.nii.gz").write_bytes(_nifti(synthetic_head()["volume"], np.diag([*SPACING, 1.0])))
    (source / "photos/named.png").write_bytes(_gradient_png("DOE^JOHN 1984"))
    (source / "photos/plain.png").write_bytes(_gradient_png(None))
    catalog = project_catalog(tmp_path, source, overrides={
        "ingestion": {"labels_csv": None},
        "preprocessing": {"pixels": {"ocr": {"on_text": on_text}, "deface": {"nifti_is_head": True}}},
    })
    from synthmed.pipelines import ingestion, preprocessing

    run(ingestion.create_pipeline() + preprocessing.create_pipeline(), catalog)
    manifest = pd.read_csv(tmp_path / "data/02_intermediate/ingestion/manifest.csv", dtype=str)
    ids = {Path(p).stem.split(".")[0]: i for p, i in zip(manifest["source_paths"], manifest["item_id"])}
    return tmp_path, ids, catalog


@pytest.fixture(scope="module")
def quarantine_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("pixels_q"), "quarantine")


def test_text_in_pixels_quarantines_the_item_without_writing_the_text(quarantine_run):
    workdir, ids, catalog = quarantine_run
    checks = pd.read_csv(workdir / "data/03_primary/preprocessed/pixel_checks.csv", keep_default_na=False)
    row = checks.set_index("item_id").loc[ids["named"]]
    assert row["ocr_checked"] and row["text_boxes"] == 1 and row["reason"] == "text found in pixels (1 box(es))"
    assert checks.set_index("item_id").loc[ids["plain"], "reason"] == ""
    quarantined = pd.read_csv(workdir / "data/03_primary/preprocessed/quarantined.csv")
    assert set(quarantined["item_id"]) == {ids["named"]}
    copies = [p.name for p in (workdir / "data/03_primary/deidentified").rglob("*") if p.is_file()]
    assert not any(ids["named"] in name for name in copies) and any(ids["plain"] in name for name in copies)
    preprocessed = pd.read_csv(workdir / "data/03_primary/preprocessed/manifest.csv", dtype=str)
    assert ids["named"] not in set(preprocessed["item_id"])
    for path in (workdir / "data").rglob("*"):  # the text read is in no output
        if path.is_file() and path.suffix in (".csv", ".json"):
            assert "JOHN" not in path.read_text()


def test_the_nifti_copy_and_the_arrays_lose_the_face_and_keep_the_brain(quarantine_run):
    workdir, ids, catalog = quarantine_run
    head = synthetic_head()
    (copy,) = (workdir / "data/03_primary/deidentified").rglob(f"{ids['head']}.nii.gz")
    defaced = nib.as_closest_canonical(nib.load(copy)).get_fdata(dtype=np.float32)
    assert (defaced[head["face"]] == 0).all()
    assert np.array_equal(defaced[head["brain"]], head["volume"][head["brain"]])
    audit = pd.read_csv(workdir / "data/03_primary/preprocessed/audit.csv", keep_default_na=False)
    assert "face_removed=1" in audit.set_index("item_id").loc[ids["head"], "actions"]
    # Downstream arrays (resampled to the test env's 3 mm): the face is at the image minimum.
    from scipy import ndimage

    image = np.asarray(catalog.load("preprocessed_images")[ids["head"]][0])
    zoom = [n / o for n, o in zip(image.shape, head["face"].shape)]
    face = ndimage.binary_erosion(ndimage.zoom(head["face"].astype(np.uint8), zoom, order=0) > 0)
    brain = ndimage.binary_erosion(ndimage.zoom(head["brain"].astype(np.uint8), zoom, order=0) > 0, iterations=2)
    assert face.sum() > 1000
    assert (image[face] == image.min()).all()
    assert (image[brain] > image.min()).mean() > 0.9  # the brain is still there
    checks = pd.read_csv(workdir / "data/03_primary/preprocessed/pixel_checks.csv", keep_default_na=False)
    assert 0.05 < checks.set_index("item_id").loc[ids["head"], "face_removed_fraction"] < 0.3


def test_redact_mode_releases_the_item_with_no_readable_text(tmp_path):
    workdir, ids, _ = _run(tmp_path, "redact")
    checks = pd.read_csv(workdir / "data/03_primary/preprocessed/pixel_checks.csv", keep_default_na=False)
    row = checks.set_index("item_id").loc[ids["named"]]
    assert row["reason"] == "" and row["redacted_boxes"]
    (copy,) = (workdir / "data/03_primary/deidentified").rglob(f"{ids['named']}.png")
    assert find_text(np.asarray(Image.open(copy))) == []
    audit = pd.read_csv(workdir / "data/03_primary/preprocessed/audit.csv", keep_default_na=False)
    assert "text_boxes_redacted=1" in audit.set_index("item_id").loc[ids["named"], "actions"]


def test_dicom_head_series_is_quarantined_and_unknown_body_part_is_not_a_head():
    volume = synthetic_head()["volume"][None]
    config = PixelChecksConfig()
    common = dict(item_id="x", item_format="dicom", modality="MR", spacing=SPACING, at_risk=False, config=config)
    head = check_item(volume, body_part="HEAD", **common)
    assert head["head"] and head["face_plane"] and head["reason"] == DICOM_FACE_REASON
    unknown = check_item(volume, body_part=None, **common)
    assert not unknown["head"] and unknown["reason"] == ""
    failed = check_item(np.zeros((1, 20, 20, 20), np.float32), **{**common, "item_format": "nifti"}, body_part=None)
    assert failed["reason"].startswith("defacing failed: brain estimate")
    # A head series without Pixel Spacing (seen in pydicom-data): quarantined, the run goes on.
    no_spacing = check_item(volume, body_part="HEAD", **{**common, "spacing": (float("nan"), float("nan"), 1.2)})
    assert no_spacing["head"] and no_spacing["reason"] == "defacing failed: voxel size unknown (nanxnanx1.2 mm)"


def test_dicom_text_is_quarantined_even_in_redact_mode_and_bad_settings_are_refused():
    image = np.asarray(Image.open(io.BytesIO(_gradient_png("DOE^JOHN 1984"))), dtype=np.float32)[None]
    config = PixelChecksConfig.from_params({"ocr": {"on_text": "redact"}})
    row = check_item(image, item_id="x", item_format="dicom", modality="SC", spacing=(1.0, 1.0), at_risk=True,
                     body_part=None, config=config)
    assert row["ocr_checked"] and row["reason"] == "text found in pixels (1 box(es))" and not row["redacted_boxes"]
    not_at_risk = check_item(image, item_id="x", item_format="dicom", modality="CT", spacing=(1.0, 1.0),
                             at_risk=False, body_part=None, config=config)
    assert not not_at_risk["ocr_checked"]  # only the classes at risk (and rasters) are read by default
    with pytest.raises(ValueError, match="on_text must be one of"):
        PixelChecksConfig.from_params({"ocr": {"on_text": "blur"}})
    with pytest.raises(ValueError, match=r"unknown value\(s\) \['volumes'\]"):
        PixelChecksConfig.from_params({"ocr": {"check": ["volumes"]}})


def test_defaced_nifti_copy_of_a_left_right_flipped_scaled_image_matches_the_canonical_plan():
    from synthmed.privacy.deface import apply_deface, plan_deface
    from synthmed.privacy.pixel_checks import defaced_nifti

    volume = (synthetic_head()["volume"] * 1000).astype(np.int16)
    plane = plan_deface(volume.astype(np.float32), SPACING, "MR").plane
    affine = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])  # x stored right-to-left (LAS)
    stored = nib.Nifti1Image(volume[::-1], affine)
    stored.header.set_slope_inter(0.5, 10.0)  # stored values are scaled on reading
    stored = nib.Nifti1Image.from_bytes(stored.to_bytes())
    copy = nib.Nifti1Image.from_bytes(defaced_nifti(stored, plane).to_bytes())
    expected = apply_deface(nib.as_closest_canonical(stored).get_fdata(), plane)
    assert np.allclose(nib.as_closest_canonical(copy).get_fdata(), expected)
    assert np.allclose(copy.affine, nib.as_closest_canonical(stored).affine)


def test_an_item_whose_pixel_check_fails_stays_out_and_the_others_are_checked(tmp_path, monkeypatch):
    from synthmed.pipelines.preprocessing import pixel_nodes
    from synthmed.privacy.dicom_deid import CANDIDATE_COLUMNS

    real = pixel_nodes.check_item

    def fail_on_the_named_photo(image, **kwargs):
        if kwargs["item_id"] == named:
            raise RuntimeError("DOE^JOHN in an exception text")
        return real(image, **kwargs)

    manifest = pd.DataFrame([
        {"item_id": "a1", "format": "raster", "modality": "OP", "source_paths": "a.png", "spacing_mm": "1x1"},
        {"item_id": "b2", "format": "raster", "modality": "OP", "source_paths": "b.png", "spacing_mm": "1x1"},
    ])
    named = "a1"
    monkeypatch.setattr(pixel_nodes, "check_item", fail_on_the_named_photo)
    plain = np.asarray(Image.open(io.BytesIO(_gradient_png(None))))[None].astype(np.float32)
    deid = {"dates": "shift", "date_shift_days": (-3650, -365), "keep_private": (),
            "quarantine_modalities": ("US", "SC", "OT"), "quarantine_burned_in": True, "allow_classes": ()}
    no_dicom = pd.DataFrame(columns=CANDIDATE_COLUMNS)
    table = pixel_nodes.check_pixels(manifest, {"a1": plain, "b2": plain}, no_dicom, _pixel_params(), deid)
    rows = table.set_index("item_id")
    assert rows.loc["a1", "reason"] == "pixel check failed (RuntimeError)"
    assert rows.loc["b2", "reason"] == "" and bool(rows.loc["b2", "ocr_checked"])
    assert "DOE" not in table.to_csv()


def _pixel_params():
    import yaml

    from tests.conftest import PROJECT_ROOT

    return yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_preprocessing.yml").read_text())["preprocessing"][
        "pixels"]
