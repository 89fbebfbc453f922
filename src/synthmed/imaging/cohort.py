"""A multi-patient brain MR test cohort from the MNI152 template, built offline and deterministically.

Anatomy: nilearn's bundled MNI ICBM152 2009a T1 template and grey/white matter probability
maps, resampled to ``spacing_mm`` and cropped to the brain. Per subject (its own seed, from
the cohort seed and its index, so adding subjects leaves the others unchanged), TorchIO
draws an affine and an elastic deformation applied to the T1 and its tissue labels
(background / CSF / grey / white matter); lesions are placed in the deformed anatomy
(`synthmed.imaging.lesions`); a FLAIR-like second contrast is synthesised from the labels
(TorchIO ``RandomLabelsToImage``); both contrasts get gamma, bias field, noise and, for a
share of subjects, motion or ghosting. Volumes are stored as uint16 (about 1000 = white
matter on T1), as scanners do.

`build_cohort` returns the files of the cohort folder (DICOM series, each with a DICOM SEG of
the label map, for ``dicom_fraction`` of the subjects, NIfTI volumes with label maps for the
others, deliberately bad files, tables);
see the cohort's README (``templates/cohort_README.md.j2``) for the layout.
"""

from __future__ import annotations

import gzip
import logging
import time
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from pydicom.sr.coding import Code

from synthmed.core.lazy import lazy_import
from synthmed.core.seeding import seeded
from synthmed.core.templates import render
from synthmed.imaging.cohort_config import (  # noqa: F401  (re-exported: the cohort's names live there)
    BACKGROUND,
    CONTRASTS,
    CSF,
    EDEMA,
    GREY,
    LABEL_NAMES,
    LESION,
    WHITE,
    AugmentationConfig,
    BadFile,
    CohortConfig,
    ContrastIntensity,
)
from synthmed.imaging.dicom_export import SegHeader, Segment, SeriesHeader, segmentation_file, series_files, uid
from synthmed.imaging.lesions import CORE, RIM, Lesion, lesion_mask, place_lesions
from synthmed.imaging.lesions import EDEMA as EDEMA_REGION

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
ndimage = lazy_import("scipy.ndimage")
nib = lazy_import("nibabel")

logger = logging.getLogger(__name__)

# The DICOM SEG's segments: segment number = label value, so the SEG read back is the label map.
# Codes: SNOMED CT, categories of PS3.16 CID 7150.
SEGMENTS = [
    Segment(CSF, LABEL_NAMES[CSF], Code("91720002", "SCT", "Body Substance"),
            Code("65216001", "SCT", "Cerebrospinal Fluid")),
    Segment(GREY, LABEL_NAMES[GREY], Code("85756007", "SCT", "Tissue"), Code("389081007", "SCT", "Gray Matter")),
    Segment(WHITE, LABEL_NAMES[WHITE], Code("85756007", "SCT", "Tissue"), Code("389080008", "SCT", "White Matter")),
    Segment(LESION, LABEL_NAMES[LESION], Code("49755003", "SCT", "Morphologically Altered Structure"),
            Code("52988006", "SCT", "Lesion")),
    Segment(EDEMA, LABEL_NAMES[EDEMA], Code("49755003", "SCT", "Morphologically Altered Structure"),
            Code("79654002", "SCT", "Edema")),
]
# Of the labelling (tissue thresholds, lesion mask, edema); raise it when that changes. 2: the edema label.
SEG_ALGORITHM_VERSION = "2"
# Synthesis labels of the FLAIR: the tissue labels, then the lesion regions.
_SYNTH_EDEMA, _SYNTH_RIM, _SYNTH_CORE = 4, 5, 6
_MARGIN_VOXELS = 4  # background kept around the brain's bounding box (room for the deformation)




@dataclass(frozen=True)
class Template:
    t1: np.ndarray        # float32, white matter about 1
    tissue: np.ndarray    # uint8 labels BACKGROUND..WHITE
    affine: np.ndarray


@dataclass(frozen=True)
class Subject:
    """One synthesised subject, before export."""

    subject_id: str
    images: dict[str, np.ndarray]   # contrast -> uint16 volume
    tissue: np.ndarray               # uint8 tissue labels of the deformed anatomy (no lesion)
    regions: np.ndarray              # uint8 EDEMA / RIM / CORE (lesions.py)
    lesion_ids: np.ndarray           # uint8 lesion number per lesion-mask voxel
    lesions: list[Lesion]
    affine: np.ndarray
    artefact: str                    # "", "motion" or "ghosting"
    seconds: float

    def label_map(self) -> np.ndarray:
        """Tissue labels with LESION under the lesion mask and EDEMA over the edema shell (uint8)."""
        labels = self.tissue.copy()
        labels[self.regions == EDEMA_REGION] = EDEMA
        labels[lesion_mask(self.regions)] = LESION
        return labels


@cache
def load_template(spacing_mm: float) -> Template:
    """MNI152 2009a T1 and tissue labels from nilearn's package data, at ``spacing_mm``, cropped."""
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    zoom = 1.0 / spacing_mm
    maps = [np.asarray(img.get_fdata(dtype=np.float32)) for img in (
        t1_img, datasets.load_mni152_gm_template(resolution=1), datasets.load_mni152_wm_template(resolution=1))]
    t1, grey, white = (ndimage.zoom(m, zoom, order=1, grid_mode=True, mode="grid-constant") for m in maps)
    brain = t1 > 0.05
    tissue = np.zeros(t1.shape, dtype=np.uint8)
    tissue[brain] = CSF
    tissue[brain & (grey >= 0.35) & (grey >= white)] = GREY
    tissue[brain & (white >= 0.35) & (white > grey)] = WHITE
    low = np.maximum(np.argwhere(brain).min(axis=0) - _MARGIN_VOXELS, 0)
    high = np.minimum(np.argwhere(brain).max(axis=0) + _MARGIN_VOXELS + 1, t1.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    # Voxel centres of the zoomed grid (grid_mode): first centre at the old corner + half a new voxel.
    affine = t1_img.affine @ np.diag([spacing_mm] * 3 + [1.0])
    affine[:3, 3] = t1_img.affine[:3, :3] @ ((np.asarray(low) + 0.5) * spacing_mm - 0.5) + t1_img.affine[:3, 3]
    t1 = t1[box] / float(np.median(t1[box][tissue[box] == WHITE]))
    return Template(t1.astype(np.float32), tissue[box], affine)


def _subject_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _to_uint16(image: np.ndarray, white: np.ndarray) -> np.ndarray:
    """White matter at about 1000, clipped to 12 bits, as an MR scanner stores it."""
    scale = 1000.0 / max(float(np.median(image[white])), 1e-6)
    return np.clip(np.rint(image * scale), 0, 4095).astype(np.uint16)


def synthesize_subject(template: Template, config: CohortConfig, index: int, *, lesions: bool,
                       artefact: str) -> Subject:
    """Subject ``index``: deformed anatomy, lesions if ``lesions``, two contrasts."""
    import torch
    import torchio as tio

    start = time.perf_counter()
    rng = _subject_rng(config.seed, index)
    aug = config.augmentation
    spacing = config.spacing_mm
    with seeded(int(rng.integers(2**31))):
        subject = tio.Subject(
            t1=tio.ScalarImage(tensor=torch.from_numpy(template.t1[None]), affine=template.affine),
            tissue=tio.LabelMap(tensor=torch.from_numpy(template.tissue[None].astype(np.int16)),
                                affine=template.affine),
        )
        spatial = tio.Compose([
            tio.RandomAffine(scales=aug.scale, degrees=aug.degrees, translation=aug.translation_mm,
                             default_pad_value=0.0),
            tio.RandomElasticDeformation(num_control_points=aug.elastic_control_points,
                                         max_displacement=aug.elastic_max_mm, locked_borders=2),
        ])
        subject = spatial(subject)
        t1 = subject["t1"].data[0].numpy().astype(np.float32)
        tissue = subject["tissue"].data[0].numpy().astype(np.uint8)
        if lesions:
            regions, ids, placed = place_lesions(tissue, (GREY, WHITE), spacing, template.affine, config.lesions, rng)
        else:
            regions, ids, placed = np.zeros_like(tissue), np.zeros_like(tissue), []
        # T1: lesion regions scale the local intensity, softened over a voxel like a partial volume.
        t1_gain = np.ones(t1.shape, dtype=np.float32)
        t1_lesion = config.lesion_intensity["T1w"]
        for region, value in ((EDEMA_REGION, t1_lesion.edema), (RIM, t1_lesion.rim), (CORE, t1_lesion.core)):
            t1_gain[regions == region] = value
        t1 *= ndimage.gaussian_filter(t1_gain, sigma=0.6)
        # FLAIR: one Gaussian intensity per synthesis label, then blurred to the acquisition's smoothness.
        synth = tissue.astype(np.int16)
        for region, label in ((EDEMA_REGION, _SYNTH_EDEMA), (RIM, _SYNTH_RIM), (CORE, _SYNTH_CORE)):
            synth[regions == region] = label
        flair_lesion = config.lesion_intensity["FLAIR"]
        means = [0.0, config.flair_tissue["csf"], config.flair_tissue["grey_matter"],
                 config.flair_tissue["white_matter"], flair_lesion.edema, flair_lesion.rim, flair_lesion.core]
        # TorchIO wants one mean per label present, indexed by label value: present labels renumbered 0..n-1.
        present = np.unique(synth)
        synth = np.searchsorted(present, synth).astype(np.int16)
        subject = tio.Subject(
            t1=tio.ScalarImage(tensor=torch.from_numpy(t1[None]), affine=template.affine),
            synth=tio.LabelMap(tensor=torch.from_numpy(synth[None]), affine=template.affine),
        )
        intensity = [
            tio.RandomLabelsToImage(label_key="synth", image_key="flair", mean=[means[v] for v in present],
                                    std=[0.0 if v == BACKGROUND else 0.04 for v in present]),
            tio.RandomBlur(std=(1.0, 1.6), include=["flair"]),  # std in mm
            tio.RandomGamma(log_gamma=aug.log_gamma, include=["t1", "flair"]),
            tio.RandomBiasField(coefficients=aug.bias_coefficients, include=["t1", "flair"]),
        ]
        if artefact == "motion":
            intensity.append(tio.RandomMotion(degrees=4, translation=4, num_transforms=2, include=["t1", "flair"]))
        elif artefact == "ghosting":
            intensity.append(tio.RandomGhosting(num_ghosts=(2, 5), intensity=(0.3, 0.6), include=["t1", "flair"]))
        intensity.append(tio.RandomNoise(std=(0.0, aug.noise_std), include=["t1", "flair"]))
        subject = tio.Compose(intensity)(subject)
        white = tissue == WHITE
        images = {"T1w": _to_uint16(subject["t1"].data[0].numpy(), white & (regions == 0)),
                  "FLAIR": _to_uint16(subject["flair"].data[0].numpy(), white & (regions == 0))}
    return Subject(f"sub-{index + 1:03d}", images, tissue, regions, ids, placed, template.affine, artefact,
                   time.perf_counter() - start)


# ----------------------------------------------------------------------------- export


_FAMILY = ("Testperson", "Mustermann", "Doe", "Bloggs", "Public", "Nomen", "Sample", "Placeholder")
_GIVEN = ("Alex", "Sam", "Jo", "Robin", "Kim", "Charlie", "Max", "Toni", "Erika", "Jane", "John", "Fred")


def fictitious_patient(seed: int, subject_id: str, rng: np.random.Generator) -> dict[str, str]:
    """Identifying headers that look real and are obviously invented (placeholder names,
    a fictitious hospital); the de-identification stage has something to remove."""
    birth = np.datetime64("1935-01-01") + int(rng.integers(0, 365 * 60))
    study = np.datetime64("2019-01-07") + int(rng.integers(0, 365 * 5))
    age = int((study - birth).astype(int) // 365.25)
    time_of_day = f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}"
    family = _FAMILY[int(rng.integers(len(_FAMILY)))]
    return {
        "PatientName": f"{family}^{_GIVEN[int(rng.integers(len(_GIVEN)))]}^^^FICTITIOUS",
        "PatientID": f"FAKE{int(rng.integers(10**6, 10**7))}",
        "PatientBirthDate": str(birth).replace("-", ""),
        "PatientSex": "FM"[int(rng.integers(2))],
        "PatientAge": f"{age:03d}Y",
        "PatientAddress": f"{int(rng.integers(1, 200))} Nowhere Street, Testville",
        "OtherPatientIDs": f"TEST-{subject_id}",
        "StudyDate": str(study).replace("-", ""),
        "SeriesDate": str(study).replace("-", ""),
        "AcquisitionDate": str(study).replace("-", ""),
        "ContentDate": str(study).replace("-", ""),
        "StudyTime": time_of_day,
        "SeriesTime": time_of_day,
        "StudyID": f"{int(rng.integers(1, 9999))}",
        "AccessionNumber": f"ACC{int(rng.integers(10**7, 10**8))}",
        "StudyDescription": "MR BRAIN W/O CONTRAST (TEST COHORT)",
        "ReferringPhysicianName": "Placeholder^Pat^^Dr",
        "PerformingPhysicianName": "Example^Morgan^^Dr",
        "OperatorsName": "Tech^Test",
        "InstitutionName": "Fictitious General Hospital (synthmed test cohort)",
        "InstitutionAddress": "1 Imaginary Road, Testville, Nowhere",
        "StationName": "MRTEST01",
        "Manufacturer": "synthmed (synthetic, not a scanner)",
        "ManufacturerModelName": "sample_cohort",
        "DeviceSerialNumber": f"SN{seed % 10**6:06d}",
        "MagneticFieldStrength": "3",
    }


_SEQUENCES = {
    "T1w": (1, "AX T1 3D GRE", {"ScanningSequence": "GR", "SequenceVariant": "SP", "MRAcquisitionType": "3D",
                                "RepetitionTime": "2300", "EchoTime": "2.98", "InversionTime": "900",
                                "FlipAngle": "9"}),
    "FLAIR": (2, "AX FLAIR 3D", {"ScanningSequence": ["SE", "IR"], "SequenceVariant": "SK",
                                 "MRAcquisitionType": "3D", "RepetitionTime": "5000", "EchoTime": "387",
                                 "InversionTime": "1800", "FlipAngle": "120"}),
}


def _nifti(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """NIfTI-1 bytes, gzip with mtime 0 (same volume, same bytes)."""
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def subject_files(subject: Subject, config: CohortConfig, index: int, as_dicom: bool) -> dict[str, bytes]:
    """The files of one subject: two DICOM series with a DICOM SEG each, or NIfTI volumes with label maps."""
    files: dict[str, bytes] = {}
    sid = subject.subject_id
    if as_dicom:
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, index, 1]))
        patient = fictitious_patient(config.seed, sid, rng)
        study_uid = uid(config.seed, sid, "study")
        labels = subject.label_map()
        for contrast, (number, description, sequence) in _SEQUENCES.items():
            header = SeriesHeader(
                patient=patient, study_uid=study_uid, series_uid=uid(config.seed, sid, contrast),
                frame_of_reference_uid=uid(config.seed, sid, "frame"), series_number=number,
                series_description=description, sequence=sequence,
                private={0x01: "FICTITIOUS RECORD - TEST COHORT, NOT CLINICAL DATA", 0x02: sid,
                         0x03: f"lesions={len(subject.lesions)}"},
            )
            blobs = series_files(subject.images[contrast], subject.affine, header, seed=config.seed)
            for k, blob in enumerate(blobs):
                files[f"dicom/{sid}/{contrast}/IM{k + 1:04d}.dcm"] = blob
            # The label map as a DICOM SEG of this series (one per contrast, as the NIfTI subjects
            # have one mask per contrast): ingestion reads it as the mask of the series it references.
            seg_header = SegHeader(
                series_uid=uid(config.seed, sid, contrast, "seg"), series_number=100 + number,
                series_description=f"SEG labels of {description}", algorithm_name="synthmed sample_cohort",
                algorithm_version=SEG_ALGORITHM_VERSION, private=header.private)
            files[f"dicom/{sid}/SEG_{contrast}/IM0001.dcm"] = segmentation_file(
                labels, subject.affine, blobs, SEGMENTS, seg_header, seed=config.seed)
    else:
        labels = _nifti(subject.label_map(), subject.affine)
        for contrast in CONTRASTS:
            files[f"nifti/{sid}/{sid}_{contrast}.nii.gz"] = _nifti(subject.images[contrast], subject.affine)
            # The ingestion mask rule pairs x.nii.gz with x_mask.nii.gz: one label map per contrast.
            files[f"nifti/{sid}/{sid}_{contrast}_mask.nii.gz"] = labels
    return files


def _bad_files(kinds: tuple[str, ...], first_dicom: Subject | None, first_nifti: Subject | None,
               config: CohortConfig) -> tuple[dict[str, bytes], list[dict[str, str]]]:
    """Deliberately bad files (each with its own series or name, so good ones stay good)."""
    files: dict[str, bytes] = {}
    rows: list[dict[str, str]] = []
    for kind in kinds:
        if kind in ("truncated_dicom", "dicom_wrong_geometry"):
            subject = first_dicom or first_nifti
            rng = np.random.default_rng(np.random.SeedSequence([config.seed, 10**6, len(rows)]))
            name = f"bad-{kind}"
            header = SeriesHeader(
                patient=fictitious_patient(config.seed, name, rng), study_uid=uid(config.seed, name, "study"),
                series_uid=uid(config.seed, name, "series"), frame_of_reference_uid=uid(config.seed, name, "frame"),
                series_number=99, series_description=f"DELIBERATELY BAD ({kind})", sequence=_SEQUENCES["T1w"][2],
                private={0x01: "FICTITIOUS RECORD - TEST COHORT, NOT CLINICAL DATA", 0x02: name},
            )
            middle = subject.images["T1w"].shape[2] // 2
            volume = subject.images["T1w"][:, :, middle - 2: middle + 3]  # 5 slices
            affine = subject.affine.copy()
            affine[:3, 3] += affine[:3, 2] * (middle - 2)
            blobs = series_files(np.ascontiguousarray(volume), affine, header, seed=config.seed)
            if kind == "truncated_dicom":
                # One slice cut in the middle of its pixel data, as an interrupted copy leaves it.
                files[f"bad/{kind}/IM0001.dcm"] = blobs[2][: len(blobs[2]) - len(blobs[2]) // 3]
                rows.append({"path": f"bad/{kind}/IM0001.dcm", "problem": "file cut short by a third (pixel data)"})
            else:
                # The fourth slice claims a position 3 slices further: a gap no reader may stack over.
                ds = pydicom.dcmread(BytesIO(blobs[3]))
                z = float(ds.ImagePositionPatient[2]) + 3 * float(ds.SpacingBetweenSlices)
                ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z:.6g}"]
                buffer = BytesIO()
                pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
                blobs[3] = buffer.getvalue()
                for k, blob in enumerate(blobs):
                    files[f"bad/{kind}/IM{k + 1:04d}.dcm"] = blob
                rows.append({"path": f"bad/{kind}/", "problem": "series of 5 slices; slice 4's "
                             "ImagePositionPatient is 3 slices too far superior (uneven spacing)"})
        elif kind == "nifti_mask_mismatch":
            subject = first_nifti or first_dicom
            files["bad/nifti_mask_mismatch/bad_T1w.nii.gz"] = _nifti(subject.images["T1w"], subject.affine)
            files["bad/nifti_mask_mismatch/bad_T1w_mask.nii.gz"] = _nifti(
                np.ascontiguousarray(subject.label_map()[1:-1]), subject.affine)
            rows.append({"path": "bad/nifti_mask_mismatch/", "problem": "label map 2 voxels narrower (x) "
                         "than its image: a mask of another geometry"})
    return files, rows


def assign_subjects(config: CohortConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Which subjects have lesions, which are DICOM, which artefact each has (from the cohort seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed]))
    n = config.n_subjects
    with_lesions = np.zeros(n, dtype=bool)
    with_lesions[rng.permutation(n)[: round(config.lesions.fraction * n)]] = True
    as_dicom = np.zeros(n, dtype=bool)
    as_dicom[rng.permutation(n)[: round(config.dicom_fraction * n)]] = True
    artefacts = ["" for _ in range(n)]
    n_artefacts = round(config.augmentation.artefact_fraction * n)
    for rank, index in enumerate(rng.permutation(n)[:n_artefacts]):
        artefacts[int(index)] = ("motion", "ghosting")[rank % 2]
    return with_lesions, as_dicom, artefacts


def _csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")


def subject_row(subject: Subject, files: list[str], as_dicom: bool, spacing_mm: float) -> dict[str, Any]:
    lesion_slices = sorted({int(z) for z in np.nonzero(lesion_mask(subject.regions).any(axis=(0, 1)))[0]})
    return {
        "subject_id": subject.subject_id,
        "format": "dicom" if as_dicom else "nifti",
        "label": "lesion" if subject.lesions else "normal",
        "lesion_count": len(subject.lesions),
        "lesion_volumes_ml": ";".join(f"{lesion.volume_ml:g}" for lesion in subject.lesions),
        "lesion_radii_mm": ";".join(f"{lesion.radius_mm:g}" for lesion in subject.lesions),
        "lesion_centres_mm": ";".join(" ".join(f"{c:g}" for c in lesion.centre_mm) for lesion in subject.lesions),
        # Axial slice indices (inferior = 0, as InstanceNumber - 1 of the DICOM series) holding lesion voxels.
        "lesion_slices": ";".join(str(z) for z in lesion_slices),
        "artefact": subject.artefact,
        "shape": "x".join(str(n) for n in subject.tissue.shape),
        "spacing_mm": spacing_mm,
        "n_files": len(files),
        "files": files[0].rsplit("/", 2)[0] + "/" if as_dicom else ";".join(files),
    }


def _is_mask(path: str) -> bool:
    """A label map: a NIfTI ``_mask`` file or a DICOM SEG (not an image to label)."""
    return path.endswith("_mask.nii.gz") or "/SEG_" in path


def build_cohort(config: CohortConfig) -> tuple[dict[str, bytes], list[float]]:
    """Every file of the cohort folder (relative path -> bytes; the per-subject table is
    ``subjects.csv``) and the seconds each subject took (not in the files: they would not be
    reproducible)."""
    template = load_template(config.spacing_mm)
    with_lesions, as_dicom, artefacts = assign_subjects(config)
    files: dict[str, bytes] = {}
    rows, label_rows, seconds = [], [], []
    first: dict[bool, Subject] = {}
    for index in range(config.n_subjects):
        subject = synthesize_subject(template, config, index, lesions=bool(with_lesions[index]),
                                     artefact=artefacts[index])
        own = subject_files(subject, config, index, bool(as_dicom[index]))
        files.update(own)
        seconds.append(subject.seconds)
        first.setdefault(bool(as_dicom[index]), subject)
        rows.append(subject_row(subject, sorted(own), bool(as_dicom[index]), config.spacing_mm))
        label = rows[-1]["label"]
        label_rows += [{"path": path, "label": label, "modality": "MR", "patient": subject.subject_id}
                       for path in sorted(own) if not _is_mask(path)]
        logger.info("Cohort %s: %d lesion(s), %s, %s, %.2f s", subject.subject_id, len(subject.lesions),
                    rows[-1]["format"], artefacts[index] or "no artefact", subject.seconds)
    bad, bad_rows = _bad_files(config.bad_files, first.get(True), first.get(False), config)
    files.update(bad)
    table = pd.DataFrame(rows)
    files["subjects.csv"] = _csv(table)
    files["labels.csv"] = _csv(pd.DataFrame(label_rows, columns=["path", "label", "modality", "patient"]))
    files["README.md"] = render(
        "cohort_README.md.j2", config=config, table=table, bad=bad_rows, label_names=LABEL_NAMES,
        label_of={name: value for value, name in LABEL_NAMES.items()},
        template_shape="x".join(str(n) for n in template.t1.shape),
        n_files=len(files) + 2,  # this README and the manifest
        n_lesion=int(with_lesions.sum()), n_dicom=int(as_dicom.sum()),
    ).encode("utf-8")
    return files, seconds
