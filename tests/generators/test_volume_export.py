"""Synthetic volumes as NIfTI with label maps and as DICOM series (issue 11 item 5), read back with their geometry."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from synthmed.generators.export import SyntheticOrigin
from synthmed.generators.volume_export import to_stored, volume_affine, volume_files
from tests.conftest import load_parameters, project_catalog, run
from tests.test_cohort import _read_series

SPACING = (2.0, 1.5, 3.0)
ORIGIN_MM = (-20.0, 12.5, 40.0)
SHAPE = (12, 10, 7)


def origin(index: int = 0) -> SyntheticOrigin:
    return SyntheticOrigin(generator="pix2pix3d", checkpoint="step-00100", label="lesion", seed=5, index=index,
                           software_version="0.0.0-test")


def synthetic() -> tuple[np.ndarray, np.ndarray]:
    """A volume in [-1, 1] with structure along every axis, and a label map with a lesion."""
    rng = np.random.default_rng(0)
    volume = np.clip(rng.normal(0.0, 0.4, size=SHAPE), -1, 1).astype(np.float32)
    volume[0, 0, 0], volume[-1, -1, -1] = -1.0, 1.0
    labels = rng.integers(0, 4, size=SHAPE).astype(np.uint8)
    labels[5:8, 4:6, 2:5] = 4
    return volume, labels


def test_nifti_read_back_by_nibabel_has_the_affine_shape_values_and_the_synthetic_mark():
    volume, labels = synthetic()
    affine = volume_affine(SPACING, ORIGIN_MM)
    files = volume_files("synth-0000", volume, labels, affine, origin(), dicom=False)
    assert sorted(files) == ["synth-0000.nii.gz", "synth-0000_mask.nii.gz"]
    image = nib.Nifti1Image.from_bytes(gzip.decompress(files["synth-0000.nii.gz"]))
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(files["synth-0000_mask.nii.gz"]))
    for nifti in (image, mask):
        assert nifti.shape == SHAPE
        np.testing.assert_array_equal(nifti.affine, affine)
        np.testing.assert_array_equal(nifti.get_qform(), affine)
        assert nifti.header.get_zooms() == SPACING
        assert nifti.header["descrip"].tobytes().startswith(b"SYNTHETIC")
    # The first voxel's centre is the origin; voxel axes run to R, A, S.
    assert nib.aff2axcodes(affine) == ("R", "A", "S") and tuple(affine[:3, 3]) == ORIGIN_MM
    assert image.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), labels)
    assert volume_files("synth-0000", volume, labels, affine, origin(), dicom=False) == files  # same bytes


def test_a_plain_pydicom_reader_reassembles_the_series_exactly_with_its_geometry():
    volume, labels = synthetic()
    affine = volume_affine(SPACING, ORIGIN_MM)
    files = volume_files("synth-0000", volume[None], labels, affine, origin())
    blobs = [files[f"dicom/synth-0000/IM{k:04d}.dcm"] for k in range(1, SHAPE[2] + 1)]
    assert len([name for name in files if name.startswith("dicom/")]) == SHAPE[2]
    stack, dicom_affine, datasets = _read_series(blobs)
    from_dicom = nib.as_closest_canonical(nib.Nifti1Image(stack, dicom_affine))
    # Stored values: exactly the volume's 16-bit mapping, in the same voxels, at the same place.
    np.testing.assert_array_equal(np.asarray(from_dicom.dataobj), to_stored(volume))
    np.testing.assert_allclose(from_dicom.affine, affine, atol=1e-5)
    # After the modality LUT (rescale), the volume itself to within half a step.
    rescaled = np.stack([pydicom.pixels.apply_modality_lut(ds.pixel_array, ds).T for ds in datasets], axis=-1)
    rescaled = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(rescaled, dicom_affine)).dataobj)
    assert np.abs(rescaled - volume).max() <= 1 / 65535 + 1e-7
    first = datasets[0]
    assert [float(v) for v in first.PixelSpacing] == [SPACING[1], SPACING[0]]  # (between rows, between columns)
    assert float(first.SliceThickness) == SPACING[2] and [float(v) for v in first.ImageOrientationPatient] == \
        [1, 0, 0, 0, 1, 0]
    # LPS: the first slice's first voxel is the RAS volume's (x max, y max, z min) corner, sign-flipped in x and y.
    corner = affine @ np.array([SHAPE[0] - 1, SHAPE[1] - 1, 0, 1])
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient], [-corner[0], -corner[1], corner[2]])


def test_dicom_headers_are_marked_synthetic_with_new_uids_and_no_identifiers():
    volume, labels = synthetic()
    affine = volume_affine(SPACING)
    files = volume_files("synth-0000", volume, None, affine, origin())
    assert "synth-0000_mask.nii.gz" not in files
    datasets = [pydicom.dcmread(io.BytesIO(blob)) for name, blob in sorted(files.items()) if name.endswith(".dcm")]
    for ds in datasets:
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "SYNTHETIC"]
        assert str(ds.PatientName) == "SYNTHETIC^VOLUME" and ds.PatientID == "SYNTHETIC"
        for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
                        "ReferringPhysicianName", "StudyID"):
            assert ds.get(keyword, "") == "", keyword
        for keyword in ("InstitutionName", "PatientAddress", "OtherPatientIDs", "OperatorsName", "StationName"):
            assert keyword not in ds
        assert not any(element.tag.is_private for element in ds)
        assert "not an image of a patient" in ds.DerivationDescription and ds.BurnedInAnnotation == "NO"
    assert len({ds.SeriesInstanceUID for ds in datasets}) == len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    other = pydicom.dcmread(io.BytesIO(volume_files("synth-0001", volume, None, affine, origin(1))[
        "dicom/synth-0001/IM0001.dcm"]))
    assert other.SeriesInstanceUID != datasets[0].SeriesInstanceUID
    assert other.SOPInstanceUID not in {ds.SOPInstanceUID for ds in datasets}
    assert other.StudyInstanceUID != datasets[0].StudyInstanceUID


def test_synthmed_ingestion_accepts_the_exported_series_and_volumes(tmp_path: Path):
    from synthmed.pipelines.ingestion import create_pipeline

    volume, labels = synthetic()
    root = tmp_path / "export"
    for k in range(2):
        files = volume_files(f"synth-{k:04d}", np.roll(volume, k, axis=0), labels, volume_affine(SPACING, ORIGIN_MM),
                             origin(k))
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    overrides = {"ingestion": {"ignore": load_parameters()["ingestion"]["ignore"], "labels_csv": None,
                               "workers": 1}}
    catalog = project_catalog(tmp_path / "work", root, overrides=overrides)
    run(create_pipeline(), catalog)
    manifest = catalog.load("ingestion_manifest")
    rejected = catalog.load("ingestion_rejected")
    assert len(rejected) == 0, rejected.to_dict("records")
    assert sorted(manifest["format"]) == ["dicom", "dicom", "nifti", "nifti"]
    assert manifest.loc[manifest["format"] == "nifti", "has_mask"].astype(str).eq("True").all()
    assert set(manifest["shape"].astype(str)) == {"x".join(str(n) for n in (1, *SHAPE))}, manifest["shape"]
    assert set(manifest["spacing_mm"].astype(str)) == {"x".join(f"{s:g}" for s in SPACING)}, manifest["spacing_mm"]
    # Each DICOM series decodes (modality LUT applied, RAS+ order) to its NIfTI twin within half a step.
    images = catalog.load("ingested_images")
    for k in range(2):
        by_format = {row.format: row.item_id for row in manifest.itertuples() if f"synth-{k:04d}" in row.source_paths}
        difference = np.abs(images[by_format["dicom"]] - images[by_format["nifti"]]).max()
        assert difference <= 1 / 65535 + 1e-6


@pytest.mark.parametrize(("call", "message"), [
    (lambda v, m: volume_files("a/b", v, m, np.eye(4), origin()), r"'a/b' must be a plain file stem"),
    (lambda v, m: volume_files("x", v, m[:-1], np.eye(4), origin()), r"label map of x has shape \(11, 10, 7\)"),
    (lambda v, m: volume_files("x", v, m.astype(np.float32), np.eye(4), origin()), "integer labels 0..255"),
    (lambda v, m: volume_files("x", v[0], m, np.eye(4), origin()), r"\(D, H, W\) or \(1, D, H, W\), got \(10, 7\)"),
    (lambda v, m: volume_affine((1.0, 0.0, 1.0)), "3 positive spacings"),
])
def test_bad_inputs_are_refused(call, message):
    volume, labels = synthetic()
    with pytest.raises(ValueError, match=message):
        call(volume, labels)
