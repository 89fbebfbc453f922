"""Exporting generated volumes: NIfTI with their label maps, and DICOM MR series, marked synthetic.

A generated volume is ``(D, H, W)`` (or ``(1, D, H, W)``) float in [-1, 1] whose axes are the
RAS+ axes of the preprocessed items it was trained on (``synthmed.imaging.volumes``), with
a voxel spacing and an origin in mm: `volume_affine` turns them into the voxel -> RAS
affine that both formats carry.

- NIfTI: the volume as float32, its label map as uint8 beside it (``<name>_mask.nii.gz``,
  the name ingestion pairs with ``<name>.nii.gz``), qform and sform from the affine,
  ``descrip`` saying SYNTHETIC; gzip without a timestamp (same volume, same bytes).
- DICOM: one MR Image Storage file per axial slice, written by the cohort's series writer
  (`synthmed.imaging.dicom_export.series_files`: LPS geometry, ImagePositionPatient per
  slice, PixelSpacing, SliceThickness) with Image Type ``DERIVED\\SECONDARY\\SYNTHETIC``, no
  identifier of any person (patient name and id ``SYNTHETIC``, no dates), no private block,
  new UIDs derived from the generator's checkpoint, seed and index only. Pixels are stored
  as uint16 with the 2D export's mapping (`to_png_pixels`: [-1, 1] onto 0..65535) and a
  rescale back to [-1, 1], so readers that apply the modality LUT get the volume back to
  within half a step (1 / 65535).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import numpy as np

from synthmed.generators.export import SYNTHETIC_MARK, SyntheticOrigin, to_png_pixels
from synthmed.imaging.dicom_export import SeriesHeader, series_files, uid
from synthmed.imaging.volumes import single_volume as _volume

# Stored 0..65535 -> [-1, 1] (the inverse of to_png_pixels' 16-bit mapping).
RESCALE_SLOPE = f"{2 / 65535:.10g}"
RESCALE_INTERCEPT = "-1"
# MR Image module attributes of type 1 and 2 (PS3.3 C.8.3.1) for an image no scanner acquired:
# "RM" (research mode) and "NONE" say there was no sequence; type 2 timings stay empty.
_NO_SEQUENCE = {"ScanningSequence": "RM", "SequenceVariant": "NONE", "ScanOptions": "", "MRAcquisitionType": "3D",
                "RepetitionTime": "", "EchoTime": "", "EchoTrainLength": ""}


def volume_affine(spacing_mm: float | Sequence[float], origin_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Voxel -> RAS mm of an axis-aligned RAS+ volume: ``diag(spacing)``, first voxel centre at ``origin_mm``."""
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    origin = np.asarray(origin_mm, dtype=np.float64)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)) or origin.shape != (3,) \
            or not np.all(np.isfinite(origin)):
        raise ValueError(f"A volume needs 3 positive spacings and a finite 3D origin in mm, got spacing "
                         f"{spacing_mm!r}, origin {origin_mm!r}.")
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def to_stored(volume: np.ndarray) -> np.ndarray:
    """``(D, H, W)`` float in [-1, 1] -> uint16 0..65535, the 2D export's 16-bit mapping slice by slice."""
    array = _volume(volume, "a volume")
    flat = to_png_pixels(array.reshape(1, -1, array.shape[-1]))  # one tall grey image: the same mapping
    return flat.reshape(array.shape)


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, origin: SyntheticOrigin, what: str) -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.header.set_xyzt_units("mm")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header["descrip"] = f"{SYNTHETIC_MARK} {what} synthmed {origin.generator} {origin.checkpoint}"[:79].encode()
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def dicom_series(volume: np.ndarray, affine: np.ndarray, origin: SyntheticOrigin) -> list[bytes]:
    """One DICOM file (bytes) per axial slice, inferior to superior (see the module docstring)."""
    names = ("synthetic-volume", origin.generator, origin.checkpoint, str(origin.index))
    header = SeriesHeader(
        patient={"PatientName": f"{SYNTHETIC_MARK}^VOLUME", "PatientID": SYNTHETIC_MARK, "PatientBirthDate": "",
                 "PatientSex": "", "StudyDate": "", "StudyTime": "", "AccessionNumber": "",
                 "ReferringPhysicianName": "", "StudyID": "", "StudyDescription": f"{SYNTHETIC_MARK} VOLUME",
                 "Manufacturer": "synthmed", "SoftwareVersions": origin.software_version},
        study_uid=uid(origin.seed, *names, "study"), series_uid=uid(origin.seed, *names, "series"),
        frame_of_reference_uid=uid(origin.seed, *names, "frame"), series_number=1,
        series_description=f"{SYNTHETIC_MARK} {origin.label}"[:64], sequence=_NO_SEQUENCE, private={},
        image_type=("DERIVED", "SECONDARY", SYNTHETIC_MARK),
        extra={
            "BurnedInAnnotation": "NO", "RecognizableVisualFeatures": "NO",
            "RescaleIntercept": RESCALE_INTERCEPT, "RescaleSlope": RESCALE_SLOPE, "RescaleType": "US",
            "WindowCenter": "0", "WindowWidth": "2",
            "DerivationDescription": (f"Synthetic volume generated by synthmed ({origin.generator}, checkpoint "
                                      f"{origin.checkpoint}, seed {origin.seed}); not an image of a patient.")[:1024],
            "ImageComments": f"{SYNTHETIC_MARK}: generated, not acquired. Class: {origin.label}."[:10240],
        },
    )
    return series_files(to_stored(volume), affine, header, seed=origin.seed)


def volume_files(name: str, volume: np.ndarray, label_map: np.ndarray | None, affine: np.ndarray,
                 origin: SyntheticOrigin, *, dicom: bool = True) -> dict[str, bytes]:
    """The files of one synthetic volume: relative path -> bytes.

    ``<name>.nii.gz`` (float32), ``<name>_mask.nii.gz`` (uint8 label map, when given) and,
    with ``dicom``, ``dicom/<name>/IM0001.dcm``... (one per axial slice).

    Raises:
        ValueError: a volume or label map that is not 3D, a label map of another shape, a
            label map with values outside 0..255, or a name that is not a plain file stem.
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"Volume name {name!r} must be a plain file stem (no separators, not hidden).")
    data = _volume(volume, "a volume").astype(np.float32)
    files = {f"{name}.nii.gz": _nifti_bytes(data, affine, origin, "volume")}
    if label_map is not None:
        labels = _volume(label_map, "a label map")
        if labels.shape != data.shape:
            raise ValueError(f"The label map of {name} has shape {labels.shape}, its volume {data.shape}.")
        if labels.dtype.kind not in "iu" or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
            raise ValueError(f"The label map of {name} must hold integer labels 0..255, got {labels.dtype} "
                             f"{labels.min(initial=0)}..{labels.max(initial=0)}.")
        files[f"{name}_mask.nii.gz"] = _nifti_bytes(labels.astype(np.uint8), affine, origin, "label map")
    if dicom:
        for k, blob in enumerate(dicom_series(data, affine, origin)):
            files[f"dicom/{name}/IM{k + 1:04d}.dcm"] = blob
    return files
