"""Grouping source files into items: decoding one item, pairing masks, grouping DICOM series.

An item is what the ingestion manifest lists: one raster or NIfTI file (with its mask, if a
mask file is named after it), or the instances of one DICOM series. This module holds the
rules; reading bytes, pseudonymising identifiers and recording rejections stay with the
``ingestion`` pipeline's nodes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable

import numpy as np
import pydicom

from synthmed.core.checksums import sha256_bytes
from synthmed.imaging.dicom_objects import DicomClass, DicomRecord, classify, has_position
from synthmed.imaging.readers import (
    FORMATS,
    Decoded,
    decode_dicom_series,
    decode_nifti,
    decode_nifti_mask,
    decode_raster,
    decode_raster_mask,
    read_dicom,
    strip_suffix,
)


def decode_item(family: str, blobs: list[bytes], max_pixels: int) -> Decoded:
    """Decode the files of one item (one file, or the instances of a DICOM series)."""
    if family == "raster":
        return decode_raster(blobs[0], max_pixels=max_pixels)
    if family == "nifti":
        return decode_nifti(blobs[0], max_pixels=max_pixels)
    if family == "dicom":
        return decode_dicom_series([read_dicom(b) for b in blobs], max_pixels=max_pixels)
    raise ValueError(f"Unknown format {family!r}; expected one of {list(FORMATS)}.")


def decode_mask(family: str, blob: bytes, max_pixels: int) -> np.ndarray:
    """Decode a mask file of a raster or NIfTI item to uint8 labels."""
    if family == "raster":
        return decode_raster_mask(blob, max_pixels=max_pixels)
    if family == "nifti":
        return decode_nifti_mask(blob, max_pixels=max_pixels)
    raise ValueError(f"Masks are read for raster and NIfTI items only, not {family!r}.")


def pair_masks(
    image_paths: Iterable[str], mask_paths: Iterable[str], mask_suffix: str
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Pair each image with the mask named after it: ``a/b.png`` with ``a/b<mask_suffix>.<any suffix>``.

    Args:
        image_paths: relative paths of the images, in reading order.
        mask_paths: relative paths of the masks; each stem must end with ``mask_suffix``.
        mask_suffix: the non-empty stem ending that marks a mask.

    Returns:
        ``(mask_of, orphans)``: ``mask_of`` maps every image path, in order, to its mask path
        or None; ``orphans`` maps the image stem each unpaired mask names to that mask.
    """
    masks = {strip_suffix(rel)[: -len(mask_suffix)]: rel for rel in mask_paths}
    mask_of = {rel: masks.get(strip_suffix(rel)) for rel in image_paths}
    paired = set(mask_of.values())
    orphans = {stem: rel for stem, rel in masks.items() if rel not in paired}
    return mask_of, orphans


def series_key(identity: str, dataset: pydicom.Dataset, rel: str) -> tuple[str, str, str]:
    """The series a DICOM instance belongs to: ``(patient identity, study UID, series UID)``.

    An instance without a SeriesInstanceUID is a series of its own (keyed by its path).
    """
    return identity, str(dataset.get("StudyInstanceUID", "")), str(dataset.get("SeriesInstanceUID", rel))


def dicom_record(rel: str, dataset: pydicom.Dataset, data: bytes, identity: str,
                 dicom_class: DicomClass | None = None) -> DicomRecord:
    """The small record of one DICOM file that deduplication and item grouping work on.

    Args:
        rel: relative source path.
        dataset: the parsed file.
        data: the file's bytes (hashed for byte-identical copies).
        identity: the patient identity (``synthmed.privacy.dicom_deid.dicom_patient_identity``).
        dicom_class: ``classify(dataset)`` when already known.
    """
    dicom_class = dicom_class or classify(dataset)
    return DicomRecord(
        path=rel,
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "") or "").strip(),
        sha256=sha256_bytes(data),
        series=series_key(identity, dataset, rel),
        has_position=has_position(dataset),
        class_keyword=dicom_class.keyword,
    )


def group_series(members: Iterable[tuple[Hashable, str]]) -> list[tuple[Hashable, tuple[str, ...]]]:
    """Group ``(series key, path)`` pairs into series.

    Returns:
        ``(key, paths)`` per series, paths sorted; series ordered by the first path seen in
        each, so the order follows the file listing and not the (identifying) keys.
    """
    series: dict[Hashable, list[str]] = defaultdict(list)
    for key, rel in members:
        series[key].append(rel)
    return [(key, tuple(sorted(series[key]))) for key in sorted(series, key=lambda k: series[k][0])]
