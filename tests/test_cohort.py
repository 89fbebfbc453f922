"""The sample cohort (issue 10 item 1): deterministic, lesions inside tissue, DICOM geometry
that reassembles exactly, fictitious headers, bad files that ingestion quarantines, and every
subject's label map reaching ingestion as its mask (DICOM SEG for DICOM subjects)."""

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
from scipy import ndimage

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.core.splits import SPLIT_COLUMNS
from synthmed.imaging.cohort import (
    EDEMA,
    GREY,
    LESION,
    SEGMENTS,
    WHITE,
    CohortConfig,
    load_template,
    subject_files,
    synthesize_subject,
)
from synthmed.imaging.dicom_export import PRIVATE_CREATOR, PRIVATE_GROUP, SegHeader, Segment, segmentation_file
from synthmed.imaging.extraction import SliceConfig, extract_slices
from synthmed.imaging.lesions import EDEMA as EDEMA_REGION
from synthmed.pipelines.sample_cohort.nodes import build_sample_cohort
from tests.conftest import load_parameters, project_catalog, run

# 4 subjects, seed of conf/base: sub-001 NIfTI normal, sub-002 DICOM normal, sub-003 DICOM lesion,
# sub-004 NIfTI lesion (every format with and without a finding).
TINY = {"n_subjects": 4, "spacing_mm": 3.0, "dicom_fraction": 0.5}


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
    # Another seed: one subject's anatomy differs, and so does every file of it (series and SEGs).
    config = from_params(CohortConfig, tiny_params(), "sample_cohort")
    reseeded = from_params(CohortConfig, tiny_params(seed=config.seed + 1), "sample_cohort")
    template = load_template(config.spacing_mm)
    first, second = (synthesize_subject(template, c, 0, lesions=False, artefact="") for c in (config, reseeded))
    assert not np.array_equal(first.images["T1w"], second.images["T1w"])
    assert not np.array_equal(first.tissue, second.tissue)
    files, other = (subject_files(s, c, 0, as_dicom=True) for s, c in ((first, config), (second, reseeded)))
    assert files.keys() == other.keys() and not any(files[name] == other[name] for name in files)
    subjects = pd.read_csv(io.BytesIO(cohort["subjects.csv"]))
    assert len(subjects) == 4 and subjects["lesion_count"].gt(0).sum() == 2
    assert set(zip(subjects["format"], subjects["label"])) == {(f, c) for f in ("dicom", "nifti")
                                                              for c in ("normal", "lesion")}
    # The DICOM SEGs are among the files compared: one per DICOM series.
    assert sum("/SEG_" in name for name in cohort) == 2 * (subjects["format"] == "dicom").sum()
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
        # The edema label: the edema shell, over grey or white matter only, touching its lesion.
        edema = labels == EDEMA
        assert (edema == (subject.regions == EDEMA_REGION)).all() and edema.any()
        assert np.isin(subject.tissue[edema], (GREY, WHITE)).all()
        assert (ndimage.binary_dilation(labels == LESION, iterations=2) & edema).any()
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
    firsts = [pydicom.dcmread(io.BytesIO(cohort[n])) for n in sorted(cohort) if n.endswith("/T1w/IM0001.dcm")]
    assert len(firsts) == 2 and len({d.PatientID for d in firsts}) == len({d.StudyInstanceUID for d in firsts}) == 2
    # Each SEG belongs to its series' patient and study, references that series, and is marked fictitious.
    for name in (n for n in sorted(cohort) if "/SEG_" in n):
        seg = pydicom.dcmread(io.BytesIO(cohort[name]))
        series = pydicom.dcmread(io.BytesIO(cohort[name.replace("/SEG_", "/")]))
        assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
        assert (seg.PatientID, seg.StudyInstanceUID) == (series.PatientID, series.StudyInstanceUID)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.SeriesInstanceUID
        assert [s.SegmentLabel for s in seg.SegmentSequence] == [
            "csf", "grey_matter", "white_matter", "lesion", "edema"]
        assert "NOT CLINICAL DATA" in seg.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x01].value


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


@pytest.fixture(scope="module")
def ingested(cohort, tmp_path_factory) -> dict:
    """The cohort written to a folder and read by synthmed's ingestion with its default
    parameters (only ``workers: 1``): the outputs, loaded."""
    from synthmed.pipelines.ingestion import create_pipeline

    tmp_path = tmp_path_factory.mktemp("ingested")
    root = tmp_path / "cohort"
    for name, data in cohort.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    catalog = project_catalog(tmp_path / "work", root, overrides={"ingestion": {"workers": 1}})
    run(create_pipeline(), catalog)
    return {name: catalog.load(name) for name in ("ingestion_manifest", "ingestion_rejected", "source_inventory",
                                                  "ingested_images", "ingested_masks")}


def _subject_of(manifest: pd.DataFrame) -> pd.Series:
    """Subject id of each item, from its source paths (``dicom/sub-002/T1w/...``, ``nifti/sub-001/...``)."""
    return manifest["source_paths"].astype(str).str.extract(r"(sub-\d{3})", expand=False)


def test_ingestion_accepts_every_good_series_and_quarantines_the_bad_files(cohort, ingested):
    manifest, rejected = ingested["ingestion_manifest"], ingested["ingestion_rejected"]
    subjects = pd.read_csv(io.BytesIO(cohort["subjects.csv"]))
    n_dicom = int((subjects["format"] == "dicom").sum())
    n_nifti = len(subjects) - n_dicom
    # Two series per DICOM subject (each with its SEG), two NIfTI volumes (each with its label map) per NIfTI subject.
    assert (manifest["format"] == "dicom").sum() == 2 * n_dicom
    assert (manifest["format"] == "nifti").sum() == 2 * n_nifti
    assert manifest["has_mask"].astype(str).eq("True").all()
    dicom_masks = manifest.loc[manifest["format"] == "dicom", "mask_path"].astype(str)
    assert dicom_masks.str.fullmatch(r"dicom/sub-\d{3}/SEG_(T1w|FLAIR)/IM0001\.dcm").all()
    assert dicom_masks.nunique() == 2 * n_dicom
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


def test_cohort_readme_states_the_label_values_the_maps_hold(cohort):
    """The README's lesion and edema label values, and the label map layout, come from the label constants."""
    from synthmed.imaging.labels import EDEMA, LABEL_NAMES, LESION

    readme = " ".join(cohort["README.md"].decode().split())
    assert f"(label {LESION}) is core + rim" in readme
    assert f"in the label map ({EDEMA}, over the" in readme
    layout = ", ".join(f"{value} {name}" for value, name in LABEL_NAMES.items())
    assert f"label map layout: {layout}." in readme

def test_the_cohort_tables_and_notes_are_ignored_by_default(cohort, ingested):
    """Ingestion's default ignore list covers every non-image file the cohort writes (the
    labels table is read as such): nothing of the cohort is rejected for its format."""
    inventory = ingested["source_inventory"]
    role = dict(zip(inventory["source_path"], inventory["role"]))
    assert {name: role[name] for name in ("subjects.csv", "README.md", "SAMPLE_MANIFEST.json")} == dict.fromkeys(
        ("subjects.csv", "README.md", "SAMPLE_MANIFEST.json"), "ignored")
    assert role["labels.csv"] == "labels"
    assert not inventory["reason"].astype(str).eq("unsupported_format").any()
    assert set(role) == set(cohort)  # every file of the cohort is in the inventory


@pytest.fixture(scope="module")
def label_maps(cohort) -> dict[str, tuple[np.ndarray, tuple]]:
    """Each subject's label map in ingestion's voxel order (RAS+), synthesised again, and its subjects.csv row."""
    config = from_params(CohortConfig, tiny_params(), "sample_cohort")
    template = load_template(config.spacing_mm)
    out = {}
    for row in pd.read_csv(io.BytesIO(cohort["subjects.csv"]), keep_default_na=False).itertuples():
        index = int(row.subject_id.split("-")[1]) - 1
        subject = synthesize_subject(template, config, index, lesions=row.lesion_count > 0, artefact=row.artefact)
        canonical = nib.as_closest_canonical(nib.Nifti1Image(subject.label_map(), subject.affine))
        out[row.subject_id] = (np.asarray(canonical.dataobj), row)
    return out


def test_every_subject_ends_with_its_label_map_as_mask(ingested, label_maps):
    """The SEG round trip: cohort -> ingestion -> the mask of every item (DICOM series: its SEG;
    NIfTI: its _mask file) equals the subject's label map, lesion voxels where subjects.csv says."""
    manifest, masks, images = ingested["ingestion_manifest"], ingested["ingested_masks"], ingested["ingested_images"]
    expected = label_maps
    voxel_ml = tiny_params()["spacing_mm"] ** 3 / 1000
    seen = set()
    for item_id, subject_id, fmt in zip(manifest["item_id"], _subject_of(manifest), manifest["format"]):
        labels, row = expected[subject_id]
        mask = np.asarray(masks[item_id])
        assert mask.shape == (1, *labels.shape) == np.asarray(images[item_id]).shape, (subject_id, fmt)
        assert np.array_equal(mask[0], labels), (subject_id, fmt)
        lesion = mask[0] == LESION
        # subjects.csv: axial slices (inferior = 0) holding lesion voxels, and the lesion volumes.
        listed = {int(z) for z in str(row.lesion_slices).split(";") if z}
        assert set(np.nonzero(lesion.any(axis=(0, 1)))[0].tolist()) == listed, subject_id
        volumes = [float(v) for v in str(row.lesion_volumes_ml).split(";") if v]
        assert lesion.sum() * voxel_ml == pytest.approx(sum(volumes), abs=1e-3 * max(len(volumes), 1))
        assert (row.label == "lesion") == bool(lesion.any())
        seen.add((subject_id, fmt))
    assert {s for s, _ in seen} == set(expected) and {f for _, f in seen} == {"dicom", "nifti"}


def test_finding_classes_label_the_slices_of_dicom_subjects(ingested, label_maps):
    """``extraction.slices.classes: finding`` on the ingested cohort: DICOM subjects' slices are
    classed from their SEG, lesion exactly where the subject has enough lesion pixels."""
    manifest, masks, images = ingested["ingestion_manifest"], ingested["ingested_masks"], ingested["ingested_images"]
    manifest = manifest.assign(kind="volume", subject=_subject_of(manifest),
                               has_mask=manifest["has_mask"].astype(str).eq("True"))
    dicom = manifest[manifest["format"] == "dicom"]
    splits = pd.DataFrame([(item, patient, "train", "group", -1, 0, 0, 0)
                           for item, patient in zip(dicom["item_id"], dicom["patient_key"])], columns=SPLIT_COLUMNS)
    config = from_params(SliceConfig, {"planes": ["axial"], "keep_every": {"axial": 1}, "size_px": 16,
                                       "min_foreground_fraction": 0.0, "classes": "finding",
                                       "finding": {"lesion_labels": [LESION], "min_lesion_px": 3}},
                         "extraction.slices")
    foreground = {item: np.ones_like(np.asarray(masks[item])) for item in dicom["item_id"]}
    _, table = extract_slices(images, masks, foreground, dicom, splits, config)
    expected = label_maps
    for item, subject_id in zip(dicom["item_id"], dicom["subject"]):
        rows = table[table["item_id"] == item]
        counts = (expected[subject_id][0] == LESION).sum(axis=(0, 1))
        assert len(rows) == len(counts) - int(((counts > 0) & (counts < 3)).sum())  # slivers left out
        lesion = set(rows.loc[rows["label"] == "lesion", "slice_index"].tolist())
        assert lesion == set(np.nonzero(counts >= 3)[0].tolist()), subject_id
    assert set(table["label"]) == {"normal", "lesion"}  # the tiny cohort has a DICOM subject with lesions


def test_segmentation_file_refuses_labels_it_cannot_describe(cohort):
    blobs = [cohort[n] for n in sorted(cohort) if n.startswith("dicom/sub-002/T1w/")]
    labels = np.zeros((2, 2, len(blobs)), dtype=np.uint8)
    header = SegHeader(series_uid="2.25.1", series_number=101, series_description="x", algorithm_name="test",
                       algorithm_version="1", private={})
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    with pytest.raises(ValueError, match=r"numbered 1\.\.n"):
        segmentation_file(labels, affine, blobs, SEGMENTS[1:], header, seed=0)
    labels[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"values \[7\] that no segment"):
        segmentation_file(labels, affine, blobs, SEGMENTS, header, seed=0)
    labels[0, 0, 0] = 1
    one = [Segment(1, "a", SEGMENTS[0].category, SEGMENTS[0].property_type)]
    with pytest.raises(ValueError, match="2 axial slices, the series"):
        segmentation_file(labels[:, :, :2], affine, blobs, one, header, seed=0)


def test_ingestion_names_each_series_from_its_description_or_file_name(ingested):
    """``ingestion.series`` (conf/base): DICOM series by their Series Description ("AX T1 3D GRE",
    "AX FLAIR 3D"), NIfTI volumes by their file name (``sub-003_FLAIR.nii.gz``); only the name found
    is kept, never the description."""
    manifest = ingested["ingestion_manifest"]
    first = manifest["source_paths"].astype(str).str.split(";").str[0]
    # The exported folder (dicom/sub-001/FLAIR/...) or file name (sub-003_FLAIR.nii.gz) says the truth.
    truth = first.str.extract(r"(T1w|FLAIR)[/.]", expand=False)
    assert truth.notna().all()
    assert manifest["series"].tolist() == truth.tolist()
    text = manifest.to_csv(index=False)
    assert "AX FLAIR 3D" not in text and "AX T1 3D GRE" not in text


def test_extraction_keeps_the_chosen_series_and_says_which(ingested):
    manifest, masks, images = ingested["ingestion_manifest"], ingested["ingested_masks"], ingested["ingested_images"]
    manifest = manifest.assign(kind="volume", has_mask=manifest["has_mask"].astype(str).eq("True"))
    splits = pd.DataFrame([(item, patient, "train", "group", -1, 0, 0, 0)
                           for item, patient in zip(manifest["item_id"], manifest["patient_key"])],
                          columns=SPLIT_COLUMNS)
    foreground = {item: np.ones_like(np.asarray(masks[item])) for item in manifest["item_id"]}

    def slices(series):
        config = from_params(SliceConfig, {"planes": ["axial"], "keep_every": {"axial": 1}, "size_px": 16,
                                           "min_foreground_fraction": 0.0, "classes": "finding", "series": series,
                                           "finding": {"lesion_labels": [LESION], "min_lesion_px": 3}},
                             "extraction.slices")
        return extract_slices(images, masks, foreground, manifest, splits, config)[1]

    flair = slices(["FLAIR"])
    assert set(flair["series"]) == {"FLAIR"}
    assert set(flair["item_id"]) == set(manifest.loc[manifest["series"] == "FLAIR", "item_id"])
    both = slices(None)
    assert set(both["series"]) == {"FLAIR", "T1w"} and len(both) == 2 * len(flair)
    with pytest.raises(ValueError, match=r"extraction\.slices\.series=\['T2w'\] matches none .*'FLAIR', 'T1w'"):
        slices(["T2w"])
