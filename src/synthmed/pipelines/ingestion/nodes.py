"""Nodes of the ``ingestion`` pipeline.

Every file found under ``raw_sources`` ends in exactly one place: ignored (by pattern, or
by the DICOM reader: non-image objects, copies of a kept instance), accepted (part of an
item in the manifest) or rejected (with a reason and the exception text).
``combine_ingestion`` checks ``read = accepted + rejected`` and fails if not, and saves the
inventory with every ignored file's reason. The rules that make items of files (decoding,
mask pairing, DICOM series grouping) are in ``synthmed.imaging.series``; what a DICOM
object is, and which files are the same instance, in ``synthmed.imaging.dicom_objects``.

Identifiers are never written: item ids and patient keys are keyed pseudonyms
(``synthmed.privacy.pseudonyms``). The manifest and the rejected table keep the relative
source path so that a data engineer can find a file; they stay on this machine (DVC
``push: false``) and no source path is logged or sent to MLflow.

DICOM files are de-identified in the same pass that decodes them (issue 9 item 11): the
copies and one row per item (audit counts, quarantine decision, what the pixel checks need
from the header) form the candidate layer ``data/02_intermediate/deid_candidates`` (local,
``push: false``), which preprocessing publishes once the pixel checks have decided per item.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import PATH_SEPARATOR, format_shape, format_spacing
from synthmed.core.parallel import SpilledFile, SpillFolder, chunk_size, ordered_map, resolve_workers
from synthmed.core.progress import ProgressLog
from synthmed.datasets.file_folder import SourceFolder
from synthmed.imaging.dicom_objects import DUPLICATE_OF, IGNORED_REASONS, NON_IMAGE, deduplicate, item_key
from synthmed.imaging.readers import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    RASTER_SUFFIXES,
    Decoded,
    ReadError,
    sniff_format,
    strip_suffix,
)
from synthmed.imaging.series import SegRecord, decode_item, decode_mask, group_series, pair_masks, pair_segmentations
from synthmed.pipelines.ingestion.config import IngestionConfig  # noqa: F401  (re-exported)
from synthmed.pipelines.ingestion.dicom_pass import (
    DicomScan,
    SeriesAssembly,
    as_read_error,
    assemble_dicom_series,
    scan_dicom_file,
)
from synthmed.privacy.dicom_deid import CANDIDATE_COLUMNS, DicomDeidConfig, failed_reason, format_actions
from synthmed.privacy.pseudonyms import pseudonym

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")

logger = logging.getLogger(__name__)

INVENTORY_COLUMNS = ["source_path", "format", "role", "size_bytes", "reason", "detail"]
MANIFEST_COLUMNS = [
    "item_id", "patient_key", "format", "kind", "modality", "label", "series", "shape", "spacing_mm",
    "source_dtype", "n_files", "has_mask", "source_paths", "mask_path", "source_sha256", "mask_sha256",
]
REJECTED_COLUMNS = ["source_path", "format", "reason", "detail"]
LABEL_COLUMNS = ["path", "label", "modality", "patient", "series"]
_DICOM_HEAD_BYTES = 132
KNOWN_SUFFIXES = RASTER_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES


class IngestionError(RuntimeError):
    """The ingestion run must stop (strict mode, rejection rate, broken conservation)."""


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
    """The labels table (``path, label[, modality][, patient][, series]``), or an empty one.

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
            f"'patient', 'series'); missing {sorted(missing)}, found {list(table.columns)}."
        )
    duplicated = table["path"][table["path"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{config.labels_csv} lists {len(duplicated)} path(s) twice, e.g. row for {duplicated[0]!r}.")
    for column in ("modality", "patient", "series"):
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
        if self.family == "dicom":  # a DICOM SEG is laid out like its series
            image_blobs = self.source.read_verified(self.image_paths, self.image_sha256)
            return decode_mask(self.family, blob, self.max_pixels, image_blobs)
        return decode_mask(self.family, blob, self.max_pixels)


def _metadata(rel: str, family: str, labels: Mapping[str, Mapping[str, str]],
              config: IngestionConfig, description: str | None = None) -> dict[str, str]:
    """An item's label, patient, modality and series (the labels table first, then the rules).

    The series is the labels table's ``series``, else the ``ingestion.series`` name matched in
    ``description`` (a DICOM series' description and protocol name) or, without one, in the
    file's name.
    """
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
    series = row.get("series") or config.series_of(rel.rsplit("/", 1)[-1] if description is None else description)
    return {"label": label, "patient": patient, "modality": modality, "series": series}


def _manifest_row(item_id: str, patient_key: str, family: str, decoded: Decoded, meta: Mapping[str, str],
                  loader: ItemLoader) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "patient_key": patient_key,
        "format": family,
        "kind": decoded.kind,
        "modality": meta["modality"],
        "label": meta["label"],
        "series": meta["series"],
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
    progress = ProgressLog(logger, f"Reading {family} files", len(mask_of), "files")
    for done, (rel, mask_rel) in enumerate(tqdm(mask_of.items(), desc=f"reading {family}", unit="file",
                                                disable=None)):
        progress.update(done)  # before the item: a rejected file continues the loop
        try:
            blob = raw_sources.read_bytes(rel)
            decoded = decode_item(family, [blob], config.max_pixels)
        except Exception as exc:  # noqa: BLE001 - one file never stops the run (see as_read_error)
            exc = as_read_error(exc)
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
                exc = as_read_error(exc)
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
    if mask_of:
        progress.update(len(mask_of))
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


def read_dicom_items(
    raw_sources: SourceFolder,
    source_inventory: pd.DataFrame,
    label_table: pd.DataFrame,
    pseudonymisation_key: bytes,
    params: dict[str, Any],
    deid_params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, ItemLoader], dict[str, Any], pd.DataFrame]:
    """DICOM files grouped into one item per series (patient, study, series), and their de-identified copies.

    One pass per file (`scan_dicom_file`, in ``ingestion.workers`` processes): it is read,
    parsed, classified by its SOP class, its pixel data decoded and the dataset de-identified
    (``preprocessing.deid``, the PS3.15 profile) once. Non-image objects
    (reports, RT plans and structure sets, RT Dose, DICOMDIR, presentation states,
    waveforms, ...) are ignored with the reason ``non_image`` and the class name
    (``synthmed.imaging.dicom_objects.classify``); one truncated or undecodable instance is
    rejected alone; decoded pixels wait in a temporary folder. Copies of one instance (same
    bytes, or same SOP Instance UID) are kept once, the first by path; the others are
    ignored as ``duplicate_of`` the kept path. The series are then grouped (`group_series`;
    a file without position or orientation, or a multi-frame file, is an item of its own)
    and stacked from the spilled pixels in the workers, without decoding again (rejected as
    ``inconsistent_series`` if a gap remains). A DICOM SEG is the mask of the one accepted
    item of the series it references (ReferencedSeriesSequence; the first SEG by path),
    read with highdicom and laid out like that item; a SEG without such an item is rejected
    as ``mask_without_image``, a second one as ``extra_mask``, an unreadable or misaligned
    one with its reason (the image item stays, without a mask).

    The de-identified copies of an accepted item are named like their published copies
    (``dicom/<patient_key>/<item_id>/<instance>.dcm``); an item one of whose files the
    profile quarantines (burned-in text likely) or could not de-identify has no copy, only
    its reason (the first such file in series order decides, as in the audit).

    Returns:
        ``(manifest, rejected, loaders, candidates, candidate_items)``; ``rejected`` also holds
        the ignored files, with a reason in ``IGNORED_REASONS``, which ``combine_ingestion``
        moves to the inventory. Arrays (at save time): a single instance is ``(C, H, W)``; a
        series or multi-frame instance is ``(1, X, Y, Z)``. ``candidates`` maps copy names
        to loaders of their bytes (``FileFolderDataset``), ``candidate_items`` has
        ``CANDIDATE_COLUMNS``.
    """
    config = _config(params)
    deid_config = DicomDeidConfig.from_params(deid_params)
    profile = deid_config.fingerprint()
    lookup = _label_lookup(label_table)
    key = pseudonymisation_key
    is_image = (source_inventory["format"] == "dicom") & (source_inventory["role"] == "image")
    files = source_inventory[is_image]["source_path"].tolist()
    spill = SpillFolder("synthmed-ingestion-")
    workers = resolve_workers(config.workers, len(files))
    logger.info("Reading %d DICOM files with %d process(es)", len(files), workers)
    jobs = ((raw_sources.root, rel, raw_sources.sizes[rel], config.max_pixels, spill.path, index, key, deid_config)
            for index, rel in enumerate(files))
    # Rejected rows, and ignored rows (reasons in IGNORED_REASONS) that combine_ingestion moves
    # to the inventory: one table keeps this node's outputs as they were.
    rejected: list[dict[str, str]] = []
    scans: dict[str, DicomScan] = {}
    segs: list[SegRecord] = []
    classes: Counter[str] = Counter()
    results = ordered_map(scan_dicom_file, jobs, workers, chunk_size(len(files), workers))
    progress = ProgressLog(logger, "Reading and de-identifying DICOM files", len(files), "files")
    for done, (rel, scan) in enumerate(tqdm(zip(files, results), total=len(files), desc="reading DICOM",
                                            unit="file", disable=None), start=1):
        progress.update(done)
        if isinstance(scan, Exception):  # the worker itself failed (e.g. it was killed)
            error = as_read_error(scan)
            scan = DicomScan(rel, reason=error.reason, detail=error.detail)
        if scan.class_label:
            classes[scan.class_label] += 1
        if scan.reason:
            rejected.append(_rejection(rel, "dicom", scan.reason, scan.detail))
        elif scan.seg is not None:
            segs.append(scan.seg)
        else:
            scans[rel] = scan
    logger.info("DICOM files by SOP class: %s", dict(sorted(classes.items())))
    # Issue 9 item 6: one file per instance; files that cannot be stacked are items of their own.
    kept, duplicates = deduplicate([scan.record for scan in scans.values()])
    for record, kept_path, note in duplicates:
        rejected.append(_rejection(record.path, "dicom", DUPLICATE_OF, f"{kept_path} ({note})"))
        duplicate = scans.pop(record.path)
        duplicate.remove_spilled()
        duplicate.remove_copy()
    groups = group_series((item_key(record), record.path) for record in kept)
    # Stacking, the series checksum and writing the item's array also run in the workers:
    # done here, they were a fifth of the time per file, which no second core could share.
    jobs = ((raw_sources.root, [scans[p] for p in paths], {p: raw_sources.sizes[p] for p in paths},
             config.max_pixels, spill.path, index) for index, (_, paths) in enumerate(groups))
    assembled = ordered_map(assemble_dicom_series, jobs, resolve_workers(config.workers, len(groups)))
    manifest, items, item_of = [], {}, {}
    candidates: dict[str, Any] = {}
    candidate_rows: list[dict[str, Any]] = []
    for (group, paths), series in zip(groups, assembled):
        if isinstance(series, Exception):  # the worker itself failed
            for p in paths:
                scans[p].remove_spilled()
            error = as_read_error(series)
            series = SeriesAssembly(reason=error.reason, detail=error.detail)
        if series.reason:
            rejected.extend(_rejection(p, "dicom", series.reason, series.detail) for p in paths)
            for p in paths:
                scans[p].remove_copy()
            continue
        identity = group[0]
        decoded = series.decoded()
        meta = _metadata(paths[0], "dicom", lookup, config, scans[paths[0]].description)
        meta["modality"] = decoded.modality or meta["modality"]
        loader = ItemLoader(raw_sources, "dicom", paths, series.sha256, None, None, config.max_pixels,
                            Path(series.array_path), spill)
        item_id = pseudonym(key, "series", "\x00".join(group))
        patient_key = pseudonym(key, "patient", identity)
        manifest.append(_manifest_row(item_id, patient_key, "dicom", decoded, meta, loader))
        items[item_id] = loader
        item_of[group] = item_id
        del decoded
        row, copies = _candidate_item(item_id, f"dicom/{patient_key}/{item_id}", [scans[p] for p in paths], spill)
        candidate_rows.append({**row, "source_sha256": series.sha256, "deid_profile": profile})
        candidates.update(copies)
    # Issue 9 item 6: a DICOM SEG is the mask of the one accepted item of the series it references.
    mask_of, unpaired = pair_segmentations(segs, {group: group[2] for group in item_of})
    rejected.extend(_rejection(seg.path, "dicom", reason, detail) for seg, reason, detail in unpaired)
    rows = {row["item_id"]: row for row in manifest}
    for group, seg in mask_of.items():
        item_id = item_of[group]
        with_mask = dataclasses.replace(items[item_id], mask_path=seg.path, mask_sha256=seg.sha256)
        try:
            with_mask.mask()  # checked now (aligned, readable) so that saving cannot fail on it
        except Exception as exc:  # noqa: BLE001 - one mask never stops the run; the image stays, unmasked
            exc = as_read_error(exc)
            rejected.append(_rejection(seg.path, "dicom", exc.reason, exc.detail))
            continue
        items[item_id] = with_mask
        rows[item_id].update(has_mask=True, mask_path=seg.path, mask_sha256=seg.sha256,
                             n_files=rows[item_id]["n_files"] + 1)
    if not items:
        spill.remove()
    logger.info("De-identified copies of %d of %d DICOM items (the others stay out: %s)",
                sum(not row["reason"] for row in candidate_rows), len(candidate_rows),
                dict(Counter(row["reason"].split(":")[0] for row in candidate_rows if row["reason"])))
    return (pd.DataFrame(manifest, columns=MANIFEST_COLUMNS), pd.DataFrame(rejected, columns=REJECTED_COLUMNS), items,
            candidates, pd.DataFrame(candidate_rows, columns=CANDIDATE_COLUMNS))


def _candidate_item(item_id: str, base: str, scans: list[DicomScan],
                    spill: SpillFolder) -> tuple[dict[str, Any], dict[str, Any]]:
    """One item's candidate row (``CANDIDATE_COLUMNS`` but the checksum and profile) and copies.

    The first instance (series order) that the profile quarantines or that could not be
    de-identified decides the item's reason; the counts are those of the instances before it,
    as the audit has always counted them. An item with a reason keeps no copy.
    """
    actions: Counter[str] = Counter()
    reason = ""
    for index, scan in enumerate(scans):
        outcome = scan.deid
        if outcome is None or outcome.error:
            reason = failed_reason(index, outcome.error if outcome is not None else "no de-identification")
        elif outcome.quarantine_reason:
            reason = outcome.quarantine_reason
        if reason:
            break
        actions.update(dict(outcome.actions))
    first = scans[0].deid
    row = {"item_id": item_id, "instances": len(scans), "actions": format_actions(actions), "reason": reason,
           "at_risk": bool(first is not None and first.at_risk),
           "body_part": first.body_part if first is not None else ""}
    if reason:
        for scan in scans:
            scan.remove_copy()
        return row, {}
    return row, {f"{base}/{index:04d}.dcm": SpilledFile(scan.deid.copy, spill)
                 for index, scan in enumerate(scans)}


# ------------------------------------------------------------------------- combine


def _final_inventory(listing: pd.DataFrame, ignored_by_readers: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The listing with the files the readers ignored marked ``ignored`` (reason, detail).

    Returns:
        ``(inventory, problems)``: problems name reader-ignored files that are not image
        files of the listing, or that are ignored twice.
    """
    problems = []
    inventory = listing.reset_index(drop=True)  # positions below are row numbers
    if ignored_by_readers["source_path"].duplicated().any():
        problems.append("a file is ignored twice by the readers")
    position = {path: index for index, path in enumerate(inventory["source_path"])}
    for row in ignored_by_readers.itertuples():
        index = position.get(row.source_path)
        if index is None or inventory.at[index, "role"] != "image":
            problems.append(f"{row.source_path} was ignored by a reader but is not an image file of the listing")
            continue
        inventory.loc[index, ["role", "reason", "detail"]] = ["ignored", row.reason, row.detail]
    return inventory, problems


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
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], dict[str, Any], dict[str, float], pd.DataFrame]:
    """Merge the readers' results and check that no file is lost or counted twice.

    Args:
        source_inventory: the listing of ``inventory_sources`` (before reading).
        *_rejected: each reader's rejected files, and the files it ignored (a reason in
            ``IGNORED_REASONS``: non-image objects, duplicates of a kept instance).

    Returns:
        ``(manifest, rejected, images, masks, metrics, inventory)``: images and masks are
        ``{item_id: loader}`` callables saved one at a time by ``ArrayStoreDataset``; the
        inventory is the listing with the files the readers ignored marked ``ignored``, so
        that it accounts for every file: accepted (in the manifest), ignored with a reason,
        or rejected with a reason. The rejection rate counts read files only (images, masks
        and unusable files), not ignored ones.

    Raises:
        IngestionError: a file is neither accepted, rejected nor ignored, or is two of them.
    """
    reader_rows = pd.concat([raster_rejected, nifti_rejected, dicom_rejected], ignore_index=True)
    is_ignored = reader_rows["reason"].isin(IGNORED_REASONS)
    inventory, problems = _final_inventory(source_inventory, reader_rows[is_ignored])
    unusable = inventory[inventory["role"] == "unusable"]
    rejected = pd.concat(
        [unusable[REJECTED_COLUMNS], reader_rows[~is_ignored]], ignore_index=True
    ).sort_values("source_path", kind="stable").reset_index(drop=True)
    manifest = pd.concat([raster_manifest, nifti_manifest, dicom_manifest], ignore_index=True)
    manifest = manifest.sort_values("item_id", kind="stable").reset_index(drop=True)
    loaders = {**raster_items, **nifti_items, **dicom_items}

    accepted_files = [p for loader in loaders.values()
                      for p in (*loader.image_paths, *([loader.mask_path] if loader.mask_path else []))]
    read_files = inventory[inventory["role"].isin(["image", "mask", "unusable"])]["source_path"]
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
    ignored = inventory[inventory["role"].isin(["ignored", "labels"])]
    ignored_reasons = Counter(reason for reason in ignored["reason"] if reason)
    metrics: dict[str, float] = {
        "files_found": len(inventory),
        "files_ignored": len(ignored),
        "files_non_image": ignored_reasons[NON_IMAGE],
        "files_read": len(read_files),
        "files_accepted": len(accepted_files),
        "files_rejected": len(rejected),
        "rejection_rate": round(len(rejected) / len(read_files), 6) if len(read_files) else 0.0,
        "items_accepted": len(manifest),
        "items_image2d": int((manifest["kind"] == "image2d").sum()),
        "items_volume": int((manifest["kind"] == "volume").sum()),
        "items_with_mask": int(manifest["has_mask"].astype(bool).sum()),
        **{f"ignored_{reason}": int(n) for reason, n in sorted(ignored_reasons.items())},
        **{f"rejected_{reason}": int(n) for reason, n in sorted(reasons.items())},
    }
    logger.info(
        "Ingestion: %d files read = %d accepted (%d items) + %d rejected %s; %d ignored %s",
        metrics["files_read"], metrics["files_accepted"], metrics["items_accepted"],
        metrics["files_rejected"], dict(sorted(reasons.items())), metrics["files_ignored"],
        dict(sorted(ignored_reasons.items())),
    )
    images = {item_id: loader.image for item_id, loader in loaders.items()}
    masks = {item_id: loader.mask for item_id, loader in loaders.items() if loader.mask_path}
    return manifest, rejected, images, masks, metrics, inventory


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
        "ingestion_rejected table (data/02_intermediate/ingestion/rejected.csv). "
        f"{int(ingestion_metrics.get('files_ignored', 0))} ignored files (non-image objects, duplicates, "
        "ignore patterns) are not counted; they are in the inventory (inventory.csv, role 'ignored')."
    )
    if config.strict and rejected:
        raise IngestionError(f"ingestion.strict is true and {summary}")
    if rate > config.max_rejection_rate:
        raise IngestionError(
            f"Rejection rate above ingestion.max_rejection_rate={config.max_rejection_rate}: {summary}"
        )
