"""The sample cohort (issue 10 item 1): deterministic, lesions inside tissue, DICOM geometry
that reassembles exactly, fictitious headers, bad files that ingestion quarantines."""

from __future__ import annotations

import copy
import functools
import gzip
import io

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.imaging.cohort import GREY, LESION, WHITE, CohortConfig, load_template, subject_files, synthesize_subject
from synthmed.imaging.dicom_export import PRIVATE_CREATOR, PRIVATE_GROUP
from synthmed.pipelines.sample_cohort.nodes import build_sample_cohort
from tests.conftest import load_parameters, project_catalog, run

TINY = {"n_subjects": 3, "spacing_mm": 3.0, "dicom_fraction": 0.5}


@functools.cache
def _base_params() -> dict:
    return load_parameters()["sample_cohort"]


def tiny_params(**changes) -> dict:
    params = copy.deepcopy(_base_params())
    params.update(TINY)
    params["lesions"]["fraction"] = 0.5
    params["augmentation"]["artefact_fraction"] = 0.5
    params.update(changes)
    return params


@pytest.fixture(scope="module")
def cohort() -> dict[str, bytes]:
    return build_sample_cohort(tiny_params())


@pytest.fixture(scope="module")
def config() -> CohortConfig:
    return from_params(CohortConfig, tiny_params(), "sample_cohort")


def _hash(files: dict[str, bytes]) -> str:
    return sha256_bytes([name.encode() + data for name, data in sorted(files.items())])


def test_same_seed_same_bytes_other_seed_other_bytes(cohort):
    again = build_sample_cohort(tiny_params())
    assert _hash(again) == _hash(cohort)
    other = build_sample_cohort(tiny_params(seed=tiny_params()["seed"] + 1))
    assert _hash(other) != _hash(cohort)
    # Not only the UIDs and the assignment of subjects: one subject's anatomy differs too.
    config = from_params(CohortConfig, tiny_params(), "sample_cohort")
    reseeded = from_params(CohortConfig, tiny_params(seed=config.seed + 1), "sample_cohort")
    template = load_template(config.spacing_mm)
    first, second = (synthesize_subject(template, c, 0, lesions=False, artefact="") for c in (config, reseeded))
    assert not np.array_equal(first.images["T1w"], second.images["T1w"])
    assert not np.array_equal(first.tissue, second.tissue)
    subjects = pd.read_csv(io.BytesIO(cohort["subjects.csv"]))
    assert len(subjects) == 3 and subjects["lesion_count"].gt(0).sum() == 2
    assert set(subjects["format"]) == {"dicom", "nifti"}
    assert b"not clinical data" in cohort["README.md"] and b"Louis Collins" in cohort["README.md"]


def test_lesions_inside_brain_tissue_and_of_the_requested_radius(config):
    template = load_template(config.spacing_mm)
    low, high = config.lesions.radius_mm
    n_lesions = 0
    for index in range(3):
        subject = synthesize_subject(template, config, index, lesions=True, artefact="")
        assert 1 <= len(subject.lesions) <= config.lesions.count[1]
        for number, lesion in enumerate(subject.lesions, start=1):
            voxels = np.argwhere(subject.lesion_ids == number)
            assert len(voxels), lesion
            # Inside grey or white matter of this subject's (deformed) anatomy.
            assert np.isin(subject.tissue[tuple(voxels.T)], (GREY, WHITE)).all()
            # Within the drawn radius (plus half a voxel diagonal), and the radius is in range.
            assert low <= lesion.radius_mm <= high
            reach = np.sqrt(((voxels - np.array(lesion.centre_voxel)) ** 2).sum(axis=1)).max() * config.spacing_mm
            assert reach <= lesion.radius_mm + np.sqrt(3) * config.spacing_mm / 2
            assert lesion.volume_ml == pytest.approx(len(voxels) * config.spacing_mm**3 / 1000, abs=1e-3)
            n_lesions += 1
        labels = subject.label_map()
        assert ((labels == LESION) == (subject.lesion_ids > 0)).all()
    assert n_lesions >= 3


def _read_series(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray, list[pydicom.Dataset]]:
    """A plain pydicom reader: slices sorted by position, volume (X=columns, Y=rows, Z) and RAS affine."""
    datasets = sorted((pydicom.dcmread(io.BytesIO(b)) for b in blobs), key=lambda ds: float(ds.ImagePositionPatient[2]))
    stack = np.stack([ds.pixel_array for ds in datasets], axis=-1)
    first = datasets[0]
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    cosines = np.array([float(v) for v in first.ImageOrientationPatient])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    lps = np.eye(4)
    lps[:3, 0] = cosines[:3] * col_mm
    lps[:3, 1] = cosines[3:] * row_mm
    lps[:3, 2] = positions[1] - positions[0]
    lps[:3, 3] = positions[0]
    return np.transpose(stack, (1, 0, 2)), np.diag([-1.0, -1, 1, 1]) @ lps, datasets


def test_dicom_series_reassembles_the_volume_and_matches_the_nifti_geometry(config):
    subject = synthesize_subject(load_template(config.spacing_mm), config, 1, lesions=True, artefact="")
    dicom = subject_files(subject, config, 1, as_dicom=True)
    nifti = subject_files(subject, config, 1, as_dicom=False)
    sid = subject.subject_id
    for contrast in ("T1w", "FLAIR"):
        blobs = [blob for name, blob in sorted(dicom.items()) if f"/{contrast}/" in name]
        assert len(blobs) == subject.tissue.shape[2]
        volume, affine, datasets = _read_series(blobs)
        reference = nib.Nifti1Image.from_bytes(gzip.decompress(nifti[f"nifti/{sid}/{sid}_{contrast}.nii.gz"]))
        from_dicom = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
        from_nifti = nib.as_closest_canonical(reference)
        assert np.array_equal(np.asarray(from_dicom.dataobj), np.asarray(from_nifti.dataobj))
        assert np.allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
        assert np.allclose(reference.affine, subject.affine, atol=1e-5)
        assert np.array_equal(np.asarray(reference.dataobj), subject.images[contrast])
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
        assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
        assert [ds.InstanceNumber for ds in datasets] == list(range(1, len(datasets) + 1))
        assert float(datasets[0].SliceThickness) == config.spacing_mm
    study = {pydicom.dcmread(io.BytesIO(b)).StudyInstanceUID for b in dicom.values()}
    assert len(study) == 1


def test_headers_are_present_and_fictitious(cohort):
    first = next(name for name in sorted(cohort) if name.startswith("dicom/") and name.endswith(".dcm"))
    ds = pydicom.dcmread(io.BytesIO(cohort[first]))
    assert str(ds.PatientName).endswith("FICTITIOUS") and ds.PatientID.startswith("FAKE")
    assert len(ds.PatientBirthDate) == 8 and len(ds.StudyDate) == 8 and ds.PatientBirthDate < ds.StudyDate
    assert "Fictitious" in ds.InstitutionName and ds.AccessionNumber and ds.PatientAddress
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert "NOT CLINICAL DATA" in block[0x01].value and block[0x02].value == first.split("/")[1]
    # Every DICOM subject has its own patient and study.
    firsts = [pydicom.dcmread(io.BytesIO(cohort[n])) for n in sorted(cohort) if n.endswith("T1w/IM0001.dcm")]
    assert len(firsts) == 2 and len({d.PatientID for d in firsts}) == len({d.StudyInstanceUID for d in firsts}) == 2


def test_bad_files_are_bad_the_intended_way(cohort):
    truncated = cohort["bad/truncated_dicom/IM0001.dcm"]
    ds = pydicom.dcmread(io.BytesIO(truncated), force=True)
    with pytest.raises(Exception):  # noqa: B017, PT011 - pydicom raises ValueError or EOFError by version
        _ = ds.pixel_array
    series = [pydicom.dcmread(io.BytesIO(cohort[f"bad/dicom_wrong_geometry/IM000{k}.dcm"])) for k in range(1, 6)]
    steps = np.diff([float(d.ImagePositionPatient[2]) for d in series])
    assert len(set(np.round(steps, 3))) > 1  # uneven: a reader must not stack it
    image = nib.Nifti1Image.from_bytes(gzip.decompress(cohort["bad/nifti_mask_mismatch/bad_T1w.nii.gz"]))
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(cohort["bad/nifti_mask_mismatch/bad_T1w_mask.nii.gz"]))
    assert image.shape != mask.shape


def test_ingestion_accepts_every_good_series_and_quarantines_the_bad_files(cohort, tmp_path):
    from synthmed.pipelines.ingestion import create_pipeline

    root = tmp_path / "cohort"
    for name, data in cohort.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    ignore = [*load_parameters()["ingestion"]["ignore"], "subjects.csv"]
    catalog = project_catalog(tmp_path / "work", root, overrides={"ingestion": {"ignore": ignore, "workers": 1}})
    run(create_pipeline(), catalog)
    manifest = catalog.load("ingestion_manifest")
    rejected = catalog.load("ingestion_rejected")
    subjects = pd.read_csv(io.BytesIO(cohort["subjects.csv"]))
    n_dicom = int((subjects["format"] == "dicom").sum())
    n_nifti = len(subjects) - n_dicom
    # Two series per DICOM subject, two NIfTI volumes (each with its label map) per NIfTI subject.
    assert (manifest["format"] == "dicom").sum() == 2 * n_dicom
    assert (manifest["format"] == "nifti").sum() == 2 * n_nifti
    assert manifest.loc[manifest["format"] == "nifti", "has_mask"].astype(str).eq("True").all()
    assert set(manifest["label"]) == {"lesion", "normal"}
    assert manifest["patient_key"].nunique() == len(subjects)
    reasons = dict(zip(rejected["source_path"], rejected["reason"]))
    assert reasons.pop("bad/truncated_dicom/IM0001.dcm") == "truncated"
    assert {reasons.pop(f"bad/dicom_wrong_geometry/IM000{k}.dcm") for k in range(1, 6)} == {"inconsistent_series"}
    assert reasons.pop("bad/nifti_mask_mismatch/bad_T1w.nii.gz") == "mask_mismatch"
    assert reasons.pop("bad/nifti_mask_mismatch/bad_T1w_mask.nii.gz") == "mask_mismatch"
    assert reasons == {}
    assert all(rejected["detail"].astype(str).str.len() > 0)


def test_cohort_parameters_are_checked():
    with pytest.raises(ValueError, match=r"sample_cohort\.lesions\.radius_mm"):
        from_params(CohortConfig, tiny_params(lesions={**tiny_params()["lesions"], "radius_mm": [9.0, 3.0]}),
                    "sample_cohort")
    with pytest.raises(ValueError, match="lesion_intensity"):
        from_params(CohortConfig, tiny_params(lesion_intensity={"T1w": {"core": 1, "rim": 1, "edema": 1}}),
                    "sample_cohort")


def test_cohort_readme_names_every_bad_file(cohort):
    readme = cohort["README.md"].decode()
    assert all(f"`{path}" in readme for path in ("bad/truncated_dicom/IM0001.dcm", "bad/dicom_wrong_geometry/",
                                                "bad/nifti_mask_mismatch/"))
    assert "SAMPLE_MANIFEST.json" in cohort
