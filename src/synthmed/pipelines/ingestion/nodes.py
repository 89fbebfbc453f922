"""Nodes of the ``ingestion`` pipeline.

Every file found under ``raw_sources`` ends in exactly one place: ignored (by pattern),
accepted (part of an item in the manifest) or rejected (with a reason and the exception
text). ``combine_ingestion`` checks ``read = accepted + rejected`` and fails if not. The
rules that make items of files (decoding, mask pairing, DICOM series grouping) are in
``synthmed.imaging.series``.

Identifiers are never written: item ids and patient keys are keyed pseudonyms
(``synthmed.privacy.pseudonyms``). The manifest and the rejected table keep the relative
source path so that a data engineer can find a file; they stay on this machine (DVC
``push: false``) and no source path is logged or sent to MLflow.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import pickle
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
from pydicom.tag import Tag
from tqdm.auto import tqdm

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.core.manifest import PATH_SEPARATOR, format_shape, format_spacing
from synthmed.core.parallel import SpillFolder, chunk_size, ordered_map, resolve_workers
from synthmed.datasets.file_folder import SourceFolder
from synthmed.imaging.readers import (
    DICOM_SUFFIXES,
    FORMATS,
    NIFTI_SUFFIXES,
    RASTER_SUFFIXES,
    Decoded,
    ReadError,
    decode_dicom_series,
    dicom_pixels,
    read_dicom,
    sniff_format,
    strip_suffix,
)
from synthmed.imaging.series import decode_item, decode_mask, group_series, pair_masks, series_key
from synthmed.privacy.dicom_deid import dicom_patient_identity
from synthmed.privacy.pseudonyms import pseudonym

logger = logging.getLogger(__name__)

INVENTORY_COLUMNS = ["source_path", "format", "role", "size_bytes", "reason", "detail"]
MANIFEST_COLUMNS = [
    "item_id", "patient_key", "format", "kind", "modality", "label", "shape", "spacing_mm",
    "source_dtype", "n_files", "has_mask", "source_paths", "mask_path", "source_sha256", "mask_sha256",
]
REJECTED_COLUMNS = ["source_path", "format", "reason", "detail"]
LABEL_COLUMNS = ["path", "label", "modality", "patient"]
_DICOM_HEAD_BYTES = 132
# Reason code of a file whose reading or decoding raised an exception no reader anticipated.
DECODE_FAILED = "decode_failed"
KNOWN_SUFFIXES = RASTER_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES


class IngestionError(RuntimeError):
    """The ingestion run must stop (strict mode, rejection rate, broken conservation)."""


@dataclass(frozen=True)
class IngestionConfig:
    """``params:ingestion``. See conf/base/parameters_ingestion.yml for each key."""

    formats: tuple[str, ...] = FORMATS
    ignore: tuple[str, ...] = ()
    labels_csv: str | None = None
    labels_from_subfolders: bool = False
    default_label: str = "unlabelled"
    default_modality: Mapping[str, str] = field(default_factory=lambda: {"raster": "OT", "nifti": "MR"})
    mask_suffix: str = "_mask"
    patient_from: str = "stem"
    max_pixels: int = 400_000_000
    max_file_mb: float = 2048.0
    strict: bool = False
    max_rejection_rate: float = 0.2
    workers: int | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"ingestion.formats has unknown format(s) {unknown}; valid: {list(FORMATS)}.")
        if self.patient_from not in ("stem", "parent"):
            raise ValueError(f"ingestion.patient_from must be 'stem' or 'parent', got {self.patient_from!r}.")
        if not 0.0 <= self.max_rejection_rate <= 1.0:
            raise ValueError(
                f"ingestion.max_rejection_rate must be in [0, 1], got {self.max_rejection_rate}."
            )
        if not self.mask_suffix:
            raise ValueError("ingestion.mask_suffix must not be empty.")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise ValueError(
                f"ingestion.workers must be a positive number of processes or null (all available cores), "
                f"got {self.workers!r}."
            )
        if self.max_pixels <= 0 or self.max_file_mb <= 0:
            raise ValueError(
                f"ingestion.max_pixels and max_file_mb must be positive, got {self.max_pixels} and {self.max_file_mb}."
            )


def _config(params: Mapping[str, Any]) -> IngestionConfig:
    return from_params(IngestionConfig, params, "ingestion")


# ------------------------------------------------------------------------- inventory


def inventory_sources(raw_sources: SourceFolder, params: dict[str, Any]) -> pd.DataFrame:
    """One row per file found: its format and role, and why it is unusable if it is.

    Roles: ``image``, ``mask`` (a raster/NIfTI file whose stem ends with
    ``mask_suffix``), ``labels`` (the labels table), ``ignored`` (matches an ``ignore``
    pattern), ``unusable`` (unsupported or disabled format, too large: rejected with
    ``reason`` and ``detail``).

    Symbolic links the source folder refused (leaving the folder, broken, loops; see
    ``synthmed.datasets.file_folder``) are ``unusable`` with that reason: nothing of them was
    read. A file reached again through a link inside the folder is ``ignored`` with the
    reason ``duplicate_link`` (the detail names its listed path).
    """
    config = _config(params)
    rows = []
    for rel in raw_sources.files:
        size = raw_sources.sizes[rel]
        row = {"source_path": rel, "format": "", "role": "image", "size_bytes": size, "reason": "", "detail": ""}
        if config.labels_csv is not None and rel == config.labels_csv:
            row["role"] = "labels"
        elif any(fnmatch.fnmatch(rel, pattern) for pattern in config.ignore):
            row["role"] = "ignored"
        else:
            # Only bare names need their first bytes read (the DICOM magic).
            head = b"" if rel.lower().endswith(KNOWN_SUFFIXES) else raw_sources.read_head(rel, _DICOM_HEAD_BYTES)
            fmt = sniff_format(rel, head)
            row["format"] = fmt or ""
            if fmt is None:
                row.update(role="unusable", reason="unsupported_format",
                           detail="not a PNG/JPEG/TIFF, DICOM or NIfTI file (add it to ingestion.ignore if expected)")
            elif fmt not in config.formats:
                row.update(role="unusable", reason="format_disabled",
                           detail=f"format {fmt!r} is not in ingestion.formats {list(config.formats)}")
            elif size > config.max_file_mb * 2**20:
                row.update(role="unusable", reason="too_large",
                           detail=f"{size} bytes is more than ingestion.max_file_mb={config.max_file_mb}")
            elif size == 0:
                row.update(role="unusable", reason="empty", detail="the file has 0 bytes")
            elif fmt != "dicom" and strip_suffix(rel).endswith(config.mask_suffix):
                row["role"] = "mask"
        rows.append(row)
    for rel, (reason, detail) in raw_sources.refused.items():
        rows.append({"source_path": rel, "format": "", "role": "unusable", "size_bytes": 0, "reason": reason,
                     "detail": detail})
    for rel, listed in raw_sources.duplicates.items():
        rows.append({"source_path": rel, "format": "", "role": "ignored", "size_bytes": raw_sources.sizes[listed],
                     "reason": "duplicate_link", "detail": f"the same file as {listed} (listed once)"})
    inventory = pd.DataFrame(rows, columns=INVENTORY_COLUMNS)
    logger.info("Inventory: %s", dict(Counter(inventory["role"])))
    return inventory


def read_label_table(raw_sources: SourceFolder, params: dict[str, Any]) -> pd.DataFrame:
    """The labels table (``path, label[, modality][, patient]``), or an empty one.

    Raises:
        ValueError: the configured table is missing, lacks ``path``/``label`` columns, or
            lists a path twice.
    """
    config = _config(params)
    if config.labels_csv is None:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    if config.labels_csv not in raw_sources.sizes:
        raise ValueError(
            f"ingestion.labels_csv={config.labels_csv!r} was not found in the source folder "
            f"{raw_sources.root}; set it to null to use sub-folder names or the default label."
        )
    table = pd.read_csv(io.BytesIO(raw_sources.read_bytes(config.labels_csv)), dtype=str, keep_default_na=False)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ValueError(
            f"{config.labels_csv} needs columns 'path' and 'label' (optional: 'modality', "
            f"'patient'); missing {sorted(missing)}, found {list(table.columns)}."
        )
    duplicated = table["path"][table["path"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{config.labels_csv} lists {len(duplicated)} path(s) twice, e.g. row for {duplicated[0]!r}.")
    for column in ("modality", "patient"):
        if column not in table.columns:
            table[column] = ""
    unknown = sorted(set(table["path"]) - set(raw_sources.files))
    if unknown:
        logger.warning("%s lists %d path(s) that are not in the source folder", config.labels_csv, len(unknown))
    return table[LABEL_COLUMNS].reset_index(drop=True)


# ------------------------------------------------------------------------- items


@dataclass(frozen=True)
class ItemLoader:
    """Gives one item's arrays at save time, so ingestion holds one item in memory at a time.

    DICOM items were decoded during the reading pass; their array waits in a `SpillFolder`
    (``array_path``) and is loaded, not decoded again. Raster and NIfTI items are re-read and
    decoded at save time: the checksums recorded when the item was validated are verified
    again, so a file that changed between validation and saving fails the save instead of
    slipping through.
    """

    source: SourceFolder
    family: str
    image_paths: tuple[str, ...]
    image_sha256: str
    mask_path: str | None
    mask_sha256: str | None
    max_pixels: int
    array_path: Path | None = None
    spill: SpillFolder | None = None  # keeps the folder of ``array_path`` alive

    def image(self) -> np.ndarray:
        if self.array_path is not None:
            return np.load(self.array_path, allow_pickle=False)
        blobs = self.source.read_verified(self.image_paths, self.image_sha256)
        return decode_item(self.family, blobs, self.max_pixels).array

    def mask(self) -> np.ndarray:
        if self.mask_path is None or self.mask_sha256 is None:
            raise ValueError(f"item {self.image_paths[0]} has no mask")
        (blob,) = self.source.read_verified((self.mask_path,), self.mask_sha256)
        return decode_mask(self.family, blob, self.max_pixels)


def _metadata(rel: str, family: str, labels: Mapping[str, Mapping[str, str]],
              config: IngestionConfig) -> dict[str, str]:
    row = labels.get(rel, {})
    parts = rel.split("/")
    if row.get("label"):
        label = row["label"]
    elif config.labels_from_subfolders and len(parts) > 1:
        label = parts[0]
    else:
        label = config.default_label
    if row.get("patient"):
        patient = row["patient"]
    elif config.patient_from == "parent" and len(parts) > 1:
        patient = "/".join(parts[:-1])
    else:
        patient = strip_suffix(rel)
    modality = row.get("modality") or config.default_modality.get(family, "OT")
    return {"label": label, "patient": patient, "modality": modality}


def _manifest_row(item_id: str, patient_key: str, family: str, decoded: Decoded, meta: Mapping[str, str],
                  loader: ItemLoader) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "patient_key": patient_key,
        "format": family,
        "kind": decoded.kind,
        "modality": meta["modality"],
        "label": meta["label"],
        "shape": format_shape(decoded.array.shape),
        "spacing_mm": format_spacing(decoded.spacing),
        "source_dtype": decoded.source_dtype,
        "n_files": len(loader.image_paths) + (loader.mask_path is not None),
        "has_mask": loader.mask_path is not None,
        "source_paths": PATH_SEPARATOR.join(loader.image_paths),
        "mask_path": loader.mask_path or "",
        "source_sha256": loader.image_sha256,
        "mask_sha256": loader.mask_sha256 or "",
    }


def _rejection(rel: str, family: str, reason: str, detail: str) -> dict[str, str]:
    return {"source_path": rel, "format": family, "reason": reason, "detail": detail}


def _as_read_error(exc: Exception) -> ReadError:
    """Any exception raised while reading, decoding or handling one file, as that file's rejection.

    A codec or library bug on one file (pydicom's NotImplementedError on a colour space, a
    RuntimeError of a decoder plugin) must reject that file, not stop the run: only
    configuration errors and the configured rejection limits stop ingestion.
    """
    if isinstance(exc, ReadError):
        return exc
    return ReadError(DECODE_FAILED, f"{type(exc).__name__}: {exc}")


def _label_lookup(labels: pd.DataFrame) -> dict[str, dict[str, str]]:
    return {row["path"]: row for row in labels.to_dict("records")}


def _read_file_items(
    family: str,
    raw_sources: SourceFolder,
    inventory: pd.DataFrame,
    labels: pd.DataFrame,
    key: bytes,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, ItemLoader]]:
    """Items of one file each (raster or NIfTI), with masks paired by the name rule."""
    config = _config(params)
    lookup = _label_lookup(labels)
    rows = inventory[inventory["format"] == family]
    mask_of, orphans = pair_masks(rows[rows["role"] == "image"]["source_path"],
                                  rows[rows["role"] == "mask"]["source_path"], config.mask_suffix)
    manifest, rejected, items = [], [], {}
    for rel, mask_rel in tqdm(mask_of.items(), desc=f"reading {family}", unit="file", disable=None):
        try:
            blob = raw_sources.read_bytes(rel)
            decoded = decode_item(family, [blob], config.max_pixels)
        except Exception as exc:  # noqa: BLE001 - one file never stops the run (see _as_read_error)
            exc = _as_read_error(exc)
            rejected.append(_rejection(rel, family, exc.reason, exc.detail))
            if mask_rel is not None:
                rejected.append(
                    _rejection(mask_rel, family, "image_rejected", f"its image was rejected ({exc.reason})")
                )
            continue
        mask_sha = None
        if mask_rel is not None:
            try:
                mask_blob = raw_sources.read_bytes(mask_rel)
                mask = decode_mask(family, mask_blob, config.max_pixels)
                if mask.shape[1:] != decoded.array.shape[1:]:
                    raise ReadError(
                        "mask_mismatch",
                        f"mask spatial shape {mask.shape[1:]} differs from image {decoded.array.shape[1:]}",
                    )
            except Exception as exc:  # noqa: BLE001 - one file never stops the run
                exc = _as_read_error(exc)
                rejected.append(_rejection(rel, family, exc.reason, f"its mask is unusable: {exc.detail}"))
                rejected.append(_rejection(mask_rel, family, exc.reason, exc.detail))
                continue
            mask_sha = sha256_bytes(mask_blob)
        meta = _metadata(rel, family, lookup, config)
        loader = ItemLoader(raw_sources, family, (rel,), sha256_bytes(blob), mask_rel, mask_sha, config.max_pixels)
        item_id = pseudonym(key, "item", rel)
        patient_key = pseudonym(key, "patient", meta["patient"])
        manifest.append(_manifest_row(item_id, patient_key, family, decoded, meta, loader))
        items[item_id] = loader
    for stem, mask_rel in orphans.items():
        rejected.append(_rejection(mask_rel, family, "mask_without_image",
                                   f"no {family} image named like {stem!r} for this mask"))
    return (pd.DataFrame(manifest, columns=MANIFEST_COLUMNS), pd.DataFrame(rejected, columns=REJECTED_COLUMNS), items)


def read_raster_items(raw_sources, source_inventory, label_table, pseudonymisation_key, params):
    """2D images (PNG, JPEG, TIFF; 8/16-bit; grey/RGB) -> manifest rows, rejections, loaders.

    Arrays (at save time): ``(C, H, W)`` float32 with the stored pixel values.
    """
    return _read_file_items("raster", raw_sources, source_inventory, label_table, pseudonymisation_key, params)


def read_nifti_items(raw_sources, source_inventory, label_table, pseudonymisation_key, params):
    """NIfTI volumes (+ label volumes by the mask name rule) -> manifest rows, rejections, loaders.

    Arrays (at save time): ``(1, X, Y, Z)`` float32, closest-canonical RAS+.
    """
    return _read_file_items("nifti", raw_sources, source_inventory, label_table, pseudonymisation_key, params)


# Header elements a scanned file keeps for grouping and series geometry (decode_dicom_series,
# series_key, dicom_patient_identity); the rest of the dataset is dropped in the worker.
HEADER_KEYWORDS = (
    "SpecificCharacterSet", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
    "ImageType", "Modality", "PixelRepresentation", "BitsAllocated", "BitsStored", "SamplesPerPixel", "NumberOfFrames",
    "Rows", "Columns", "PixelSpacing", "ImagerPixelSpacing", "SpacingBetweenSlices", "SliceThickness",
    "ImagePositionPatient", "ImageOrientationPatient", "BurnedInAnnotation",
)
_HEADER_TAGS = tuple(Tag(keyword) for keyword in HEADER_KEYWORDS)


@dataclass(frozen=True)
class DicomScan:
    """What the one pass over one DICOM file found (small: it crosses process boundaries).

    Attributes:
        path: relative source path.
        sha256: of the bytes that were parsed and decoded ("" when unreadable).
        series: the `series_key` of the file, or None when rejected.
        spilled: where its header (the `HEADER_KEYWORDS` elements, a ``pydicom.Dataset``) and
            its decoded pixels (`dicom_pixels`, float32) wait, so that the parent holds
            neither for every file (see `DicomScan.load`).
        sop_class: SOP Class UID, for classification ("" if absent).
        reason, detail: the rejection, or "" when the file is usable.
    """

    path: str
    sha256: str = ""
    series: tuple[str, str, str] | None = None
    spilled: str | None = None
    sop_class: str = ""
    reason: str = ""
    detail: str = ""

    def load(self) -> tuple[pydicom.Dataset, np.ndarray]:
        """The header and the decoded pixels the worker left in the spill folder."""
        with open(self.spilled, "rb") as handle:  # written by scan_dicom_file, in this run's own temporary folder
            elements, pixels = pickle.load(handle)  # noqa: S301 - not external data
        return pydicom.Dataset(elements), pixels


def scan_dicom_file(root: Path, rel: str, size: int, max_pixels: int, spill_dir: Path, index: int) -> DicomScan:
    """Parse, decode and describe one DICOM file: the only time its bytes are parsed at ingestion.

    Runs in a worker process. The file is read through a `SourceFolder` of that one file (the
    boundary check on links is repeated). Every exception becomes the file's rejection.
    """
    try:
        blob = SourceFolder(root=root, files=(rel,), sizes={rel: size}).read_bytes(rel)
        sha = sha256_bytes(blob)
        ds = read_dicom(blob)
        # The header's elements as parsed, before any is converted: raw elements pickle in
        # microseconds, converted pydicom objects took a millisecond per file.
        elements = {tag: ds.get_item(tag) for tag in _HEADER_TAGS if tag in ds}
        pixels = dicom_pixels(ds, max_pixels=max_pixels)
        # One instance must make an item on its own (multi-frame geometry, colour shape).
        decode_dicom_series([pydicom.Dataset(dict(elements))], max_pixels=max_pixels, pixels=[pixels])
        identity = dicom_patient_identity(ds)
        spilled = spill_dir / f"{index:08d}.pickle"
        with open(spilled, "wb") as handle:
            pickle.dump((elements, pixels), handle, protocol=5)
    except Exception as exc:  # noqa: BLE001 - one file never stops the run (see _as_read_error)
        error = _as_read_error(exc)
        return DicomScan(rel, reason=error.reason, detail=error.detail)
    return DicomScan(rel, sha, series_key(identity, ds, rel), str(spilled), str(ds.get("SOPClassUID", "") or ""))


@dataclass(frozen=True)
class SeriesAssembly:
    """A stacked series, as `assemble_dicom_series` left it (its array is in ``array_path``)."""

    array_path: str = ""
    spacing: tuple[float, ...] = ()
    source_dtype: str = ""
    modality: str | None = None
    sha256: str = ""
    reason: str = ""
    detail: str = ""

    def decoded(self) -> Decoded:
        """The item as `Decoded`, its array memory-mapped (shape and kind, no data read)."""
        return Decoded(np.load(self.array_path, mmap_mode="r"), self.spacing, self.source_dtype, self.modality)


def assemble_dicom_series(root: Path, scans: list[DicomScan], sizes: Mapping[str, int], max_pixels: int,
                          spill_dir: Path, index: int) -> SeriesAssembly:
    """Stack one series from its decoded instances, in a worker; the array goes to ``spill_dir``.

    The series checksum (sha256 of its files in order) is computed from the bytes read again
    here, each checked against the checksum of the bytes its scan decoded. The per-file
    spill files are removed.
    """
    source = SourceFolder(root=root, files=tuple(sizes), sizes=sizes)
    try:
        headers, pixels = zip(*(scan.load() for scan in scans))
        decoded = decode_dicom_series(headers, max_pixels=max_pixels, pixels=pixels)
        del headers, pixels
        digest = hashlib.sha256()
        for scan in scans:
            blob = source.read_bytes(scan.path)
            if sha256_bytes(blob) != scan.sha256:
                raise ReadError("changed_while_reading",
                                f"{scan.path} changed while it was being ingested; run the ingestion again")
            digest.update(blob)
        array_path = spill_dir / f"item-{index:08d}.npy"
        np.save(array_path, decoded.array, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - one series never stops the run
        error = _as_read_error(exc)
        return SeriesAssembly(reason=error.reason, detail=error.detail)
    finally:
        for scan in scans:  # the per-file pixels are in the item's array now (or rejected)
            Path(scan.spilled).unlink(missing_ok=True)
    return SeriesAssembly(str(array_path), decoded.spacing, decoded.source_dtype, decoded.modality,
                          digest.hexdigest())


def read_dicom_items(
    raw_sources: SourceFolder,
    source_inventory: pd.DataFrame,
    label_table: pd.DataFrame,
    pseudonymisation_key: bytes,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, ItemLoader]]:
    """DICOM files grouped into one item per series (patient, study, series).

    One pass per file (`scan_dicom_file`, in ``ingestion.workers`` processes): it is read,
    parsed and its pixel data decoded once, so one truncated or undecodable instance is
    rejected alone; its decoded pixels wait in a temporary folder. The series are then
    grouped (`group_series`) and stacked from those pixels, without decoding again (and
    rejected as ``inconsistent_series`` if a gap remains). Arrays (at save time): a single
    instance is ``(C, H, W)``; a series or multi-frame instance is ``(1, X, Y, Z)``.
    """
    config = _config(params)
    lookup = _label_lookup(label_table)
    key = pseudonymisation_key
    is_image = (source_inventory["format"] == "dicom") & (source_inventory["role"] == "image")
    files = source_inventory[is_image]["source_path"].tolist()
    spill = SpillFolder("synthmed-ingestion-")
    workers = resolve_workers(config.workers, len(files))
    logger.info("Reading %d DICOM files with %d process(es)", len(files), workers)
    jobs = ((raw_sources.root, rel, raw_sources.sizes[rel], config.max_pixels, spill.path, index)
            for index, rel in enumerate(files))
    rejected: list[dict[str, str]] = []
    scans: dict[str, DicomScan] = {}
    members: list[tuple[tuple[str, str, str], str]] = []
    results = ordered_map(scan_dicom_file, jobs, workers, chunk_size(len(files), workers))
    for rel, scan in tqdm(zip(files, results), total=len(files), desc="reading DICOM", unit="file", disable=None):
        if isinstance(scan, Exception):  # the worker itself failed (e.g. it was killed)
            error = _as_read_error(scan)
            scan = DicomScan(rel, reason=error.reason, detail=error.detail)
        if scan.reason:
            rejected.append(_rejection(rel, "dicom", scan.reason, scan.detail))
            continue
        scans[rel] = scan
        members.append((scan.series, rel))
    manifest, items = [], {}
    groups = group_series(members)
    # Stacking, the series checksum and writing the item's array also run in the workers:
    # done here, they were a fifth of the time per file, which no second core could share.
    jobs = ((raw_sources.root, [scans[p] for p in paths], {p: raw_sources.sizes[p] for p in paths},
             config.max_pixels, spill.path, index) for index, (_, paths) in enumerate(groups))
    assembled = ordered_map(assemble_dicom_series, jobs, resolve_workers(config.workers, len(groups)))
    for (group, paths), series in zip(groups, assembled):
        if isinstance(series, Exception):  # the worker itself failed
            for p in paths:
                Path(scans[p].spilled).unlink(missing_ok=True)
            error = _as_read_error(series)
            series = SeriesAssembly(reason=error.reason, detail=error.detail)
        if series.reason:
            rejected.extend(_rejection(p, "dicom", series.reason, series.detail) for p in paths)
            continue
        identity = group[0]
        decoded = series.decoded()
        meta = _metadata(paths[0], "dicom", lookup, config)
        meta["modality"] = decoded.modality or meta["modality"]
        loader = ItemLoader(raw_sources, "dicom", paths, series.sha256, None, None, config.max_pixels,
                            Path(series.array_path), spill)
        item_id = pseudonym(key, "series", "\x00".join(group))
        manifest.append(_manifest_row(item_id, pseudonym(key, "patient", identity), "dicom", decoded, meta, loader))
        items[item_id] = loader
        del decoded
    if not items:
        spill.remove()
    return (pd.DataFrame(manifest, columns=MANIFEST_COLUMNS), pd.DataFrame(rejected, columns=REJECTED_COLUMNS), items)


# ------------------------------------------------------------------------- combine


def combine_ingestion(
    source_inventory: pd.DataFrame,
    raster_manifest: pd.DataFrame,
    nifti_manifest: pd.DataFrame,
    dicom_manifest: pd.DataFrame,
    raster_rejected: pd.DataFrame,
    nifti_rejected: pd.DataFrame,
    dicom_rejected: pd.DataFrame,
    raster_items: dict[str, ItemLoader],
    nifti_items: dict[str, ItemLoader],
    dicom_items: dict[str, ItemLoader],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], dict[str, Any], dict[str, float]]:
    """Merge the readers' results and check that no file is lost or counted twice.

    Returns:
        ``(manifest, rejected, images, masks, metrics)``: images and masks are
        ``{item_id: loader}`` callables saved one at a time by ``ArrayStoreDataset``.

    Raises:
        IngestionError: a file is neither accepted, rejected nor ignored, or is both.
    """
    unusable = source_inventory[source_inventory["role"] == "unusable"]
    rejected = pd.concat(
        [unusable[REJECTED_COLUMNS], raster_rejected, nifti_rejected, dicom_rejected], ignore_index=True
    ).sort_values("source_path", kind="stable").reset_index(drop=True)
    manifest = pd.concat([raster_manifest, nifti_manifest, dicom_manifest], ignore_index=True)
    manifest = manifest.sort_values("item_id", kind="stable").reset_index(drop=True)
    loaders = {**raster_items, **nifti_items, **dicom_items}

    accepted_files = [p for loader in loaders.values()
                      for p in (*loader.image_paths, *([loader.mask_path] if loader.mask_path else []))]
    read_files = source_inventory[source_inventory["role"].isin(["image", "mask", "unusable"])]["source_path"]
    problems = []
    if len(set(accepted_files)) != len(accepted_files):
        problems.append("a file is part of two items")
    both = set(accepted_files) & set(rejected["source_path"])
    if both:
        problems.append(f"{len(both)} file(s) both accepted and rejected")
    if rejected["source_path"].duplicated().any():
        problems.append("a file is rejected twice")
    if (len(read_files) != len(accepted_files) + len(rejected)
            or set(read_files) != set(accepted_files) | set(rejected["source_path"])):
        problems.append(
            f"files read ({len(read_files)}) != accepted ({len(accepted_files)}) + rejected ({len(rejected)})"
        )
    if problems:
        raise IngestionError("Ingestion conservation check failed: " + "; ".join(problems))

    reasons = Counter(rejected["reason"])
    metrics: dict[str, float] = {
        "files_found": len(source_inventory),
        "files_ignored": int((source_inventory["role"].isin(["ignored", "labels"])).sum()),
        "files_read": len(read_files),
        "files_accepted": len(accepted_files),
        "files_rejected": len(rejected),
        "rejection_rate": round(len(rejected) / len(read_files), 6) if len(read_files) else 0.0,
        "items_accepted": len(manifest),
        "items_image2d": int((manifest["kind"] == "image2d").sum()),
        "items_volume": int((manifest["kind"] == "volume").sum()),
        "items_with_mask": int(manifest["has_mask"].astype(bool).sum()),
        **{f"rejected_{reason}": int(n) for reason, n in sorted(reasons.items())},
    }
    logger.info(
        "Ingestion: %d files read = %d accepted (%d items) + %d rejected %s; %d ignored",
        metrics["files_read"], metrics["files_accepted"], metrics["items_accepted"],
        metrics["files_rejected"], dict(sorted(reasons.items())), metrics["files_ignored"],
    )
    images = {item_id: loader.image for item_id, loader in loaders.items()}
    masks = {item_id: loader.mask for item_id, loader in loaders.items() if loader.mask_path}
    return manifest, rejected, images, masks, metrics


def enforce_rejection_policy(ingestion_metrics: dict[str, float], params: dict[str, Any]) -> None:
    """Fail the run in strict mode on any rejection, or above the maximum rejection rate.

    Runs after the rejected table is saved, so the table that explains the failure exists.
    """
    config = _config(params)
    rejected = int(ingestion_metrics["files_rejected"])
    rate = float(ingestion_metrics["rejection_rate"])
    reasons = {k.removeprefix("rejected_"): int(v) for k, v in ingestion_metrics.items() if k.startswith("rejected_")}
    summary = (
        f"{rejected} of {int(ingestion_metrics['files_read'])} files rejected (rate {rate:.3f}); "
        f"reasons {reasons}. Each file, its reason and the exception text are in the "
        "ingestion_rejected table (data/02_intermediate/ingestion/rejected.csv)."
    )
    if config.strict and rejected:
        raise IngestionError(f"ingestion.strict is true and {summary}")
    if rate > config.max_rejection_rate:
        raise IngestionError(
            f"Rejection rate above ingestion.max_rejection_rate={config.max_rejection_rate}: {summary}"
        )
