"""Grouping source files into items: decoding one item, pairing masks, grouping DICOM series.

An item is what the ingestion manifest lists: one raster or NIfTI file (with its mask, if a
mask file is named after it), or the instances of one DICOM series. This module holds the
rules; reading bytes, pseudonymising identifiers and recording rejections stay with the
``ingestion`` pipeline's nodes.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom

from synthmed.core.checksums import sha256_bytes
from synthmed.imaging.dicom_objects import DicomClass, DicomRecord, classify, has_position
from synthmed.imaging.readers import (
    FORMATS,
    Decoded,
    ReadError,
    arrange_series_labels,
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


def decode_mask(family: str, blob: bytes, max_pixels: int, image_blobs: list[bytes] | None = None) -> np.ndarray:
    """Decode the mask file of an item to uint8 labels.

    Args:
        image_blobs: the item's image files; needed for a DICOM SEG, whose frames are laid
            out like the series they annotate.
    """
    if family == "raster":
        return decode_raster_mask(blob, max_pixels=max_pixels)
    if family == "nifti":
        return decode_nifti_mask(blob, max_pixels=max_pixels)
    if family == "dicom" and image_blobs is not None:
        return decode_dicom_seg(blob, image_blobs, max_pixels=max_pixels)
    raise ValueError(f"Masks are read for raster, NIfTI and DICOM SEG (with the images), not {family!r}.")


def decode_dicom_seg(seg_blob: bytes, image_blobs: list[bytes], *, max_pixels: int) -> np.ndarray:
    """A DICOM SEG as uint8 labels aligned with the item decoded from ``image_blobs``.

    The segments are combined into one label map (segment number = label; overlapping
    segments are refused by highdicom); source instances the SEG does not cover are 0.
    The result has the layout of `decode_dicom_series` on the same instances.

    Raises:
        ReadError: ``mask_invalid`` (not a readable SEG, more than 255 segments),
            ``mask_mismatch`` (it covers none of the item's instances, or other sizes).
    """
    datasets = [read_dicom(b, stop_before_pixels=True) for b in image_blobs]
    try:
        seg = hd.seg.segread(io.BytesIO(seg_blob))
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        covered = {str(ref.ReferencedSOPInstanceUID) for ref in _seg_references(seg)}
        if not covered & set(uids):
            raise ReadError("mask_mismatch", "the SEG covers none of the instances of its series")
        if int(seg.Rows) * int(seg.Columns) * len(uids) > max_pixels:
            raise ReadError("too_large", f"the SEG mask exceeds ingestion.max_pixels={max_pixels}")
        labels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, combine_segments=True, assert_missing_frames_are_empty=True,
            dtype=np.uint8)
    except ReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed SEG is that mask's rejection, never a crash
        raise ReadError("mask_invalid", f"DICOM SEG: {type(exc).__name__}: {exc}") from exc
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    if labels.shape[1:] != (rows, cols):
        raise ReadError("mask_mismatch", f"SEG frames are {labels.shape[1:]}, the images {(rows, cols)}")
    return arrange_series_labels(datasets, labels)


def _seg_references(seg: pydicom.Dataset) -> list[pydicom.Dataset]:
    """The referenced instance items of a SEG (ReferencedSeriesSequence > ReferencedInstanceSequence)."""
    return [ref for series in seg.get("ReferencedSeriesSequence") or []
            for ref in series.get("ReferencedInstanceSequence") or []]


@dataclass(frozen=True)
class SegRecord:
    """A DICOM SEG file waiting for its source series: path, sha256 and the series UID it references."""

    path: str
    sha256: str
    source_series: str | None


def pair_segmentations(
    segs: Iterable[SegRecord], series_of_item: Mapping[Hashable, str]
) -> tuple[dict[Hashable, SegRecord], list[tuple[SegRecord, str, str]]]:
    """Pair each SEG with the one item of the series it references; the first SEG by path wins.

    Args:
        segs: the SEG files.
        series_of_item: item key -> SeriesInstanceUID of the accepted DICOM items.

    Returns:
        ``(mask_of, unpaired)``: ``mask_of`` maps item keys to their SEG; each unpaired SEG
        comes with a reason (``mask_without_image``, ``extra_mask``) and a detail.
    """
    items_of: dict[str, list[Hashable]] = defaultdict(list)
    for key, uid in series_of_item.items():
        items_of[uid].append(key)
    mask_of: dict[Hashable, SegRecord] = {}
    unpaired = []
    for seg in sorted(segs, key=lambda s: s.path):
        items = items_of.get(seg.source_series or "", [])
        if seg.source_series is None:
            unpaired.append((seg, "mask_without_image", "the SEG references no series, or several"))
        elif len(items) != 1:
            unpaired.append((seg, "mask_without_image",
                             "no accepted DICOM item of the series it references (ReferencedSeriesSequence)"
                             if not items else "its series is split into several items (no position)"))
        elif items[0] in mask_of:
            unpaired.append((seg, "extra_mask", f"the item already has the mask {mask_of[items[0]].path}"))
        else:
            mask_of[items[0]] = seg
    return mask_of, unpaired


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
