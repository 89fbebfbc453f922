"""Nodes of the ``preprocessing`` pipeline.

1. ``deidentify_sources``: a de-identified copy of every accepted item in its own format
   (DICOM per PS3.15 Annex E, NIfTI with blank header text, 2D images re-encoded from
   pixels), named only by pseudonyms, plus an audit table of the actions applied (counts,
   never values) and the items quarantined (burned-in annotation, US/SC/OT by default).
2. ``preprocess_items``: per modality, resampling to a target spacing, resizing, CT
   windowing, percentile clipping, histogram normalisation and scaling to [-1, 1], with a
   foreground mask; arrays are computed one item at a time while they are saved.
3. ``assign_item_splits``: train / validation / test by patient or by slab, checked for
   leakage (``synthmed.core.splits``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.core.manifest import PATH_SEPARATOR, format_shape, format_spacing, parse_spacing
from synthmed.core.parallel import SpillFolder, chunk_size, ordered_map, resolve_workers
from synthmed.core.splits import assign_splits
from synthmed.datasets.array_store import ArrayStore
from synthmed.datasets.file_folder import SourceFolder, encode
from synthmed.datasets.integrity import DataChecksumError
from synthmed.imaging.geometry import resample_to_spacing, resize_longest_side
from synthmed.imaging.intensity import IntensitySpec, apply_intensity, foreground_mask
from synthmed.imaging.readers import load_nifti_image, read_dicom
from synthmed.privacy.dicom_deid import DicomDeidConfig, deidentify
from synthmed.privacy.nifti_deid import deidentify_nifti
from synthmed.privacy.pixel_checks import PixelFix, pixel_fixes, pixel_quarantine, with_fix

logger = logging.getLogger(__name__)

AUDIT_COLUMNS = ["item_id", "format", "n_files", "actions", "quarantined", "reason"]
QUARANTINE_COLUMNS = ["item_id", "format", "reason"]
MANIFEST_COLUMNS = [
    "item_id", "patient_key", "format", "kind", "modality", "label", "shape", "spacing_mm", "has_mask",
    "foreground_bbox",
]
_NIFTI_MAX_PIXELS = 2**40  # size was already checked at ingestion


# ------------------------------------------------------------------ de-identification


def _actions_text(actions: Mapping[str, int]) -> str:
    return ";".join(f"{name}={count}" for name, count in sorted(actions.items()) if count)


@dataclass(frozen=True)
class DicomDeidOutcome:
    """What de-identifying one DICOM file gave (small: it crosses process boundaries).

    Attributes:
        sha256: of the bytes that were parsed and de-identified.
        quarantine_reason: why the file must not be published, or None.
        actions: the action counts of `deidentify` (never values).
        spilled: where the de-identified file's bytes were written, or None.
    """

    sha256: str
    quarantine_reason: str | None = None
    actions: Mapping[str, int] = field(default_factory=dict)
    spilled: str | None = None


def deidentify_dicom_file(root: Path, rel: str, size: int, expected_sha256: str, key: bytes,
                          config: DicomDeidConfig, spill_dir: Path, index: int) -> DicomDeidOutcome:
    """Read, parse and de-identify one DICOM file once; its bytes go to ``spill_dir``.

    Runs in a worker process. The audit counts and the published copy come from this one
    pass, so they describe the same bytes; nothing is written for a quarantined file or for
    bytes that are not the ones ingestion checksummed (``sha256`` tells the caller).
    """
    data = SourceFolder(root=root, files=(rel,), sizes={rel: size}).read_bytes(rel)
    found = sha256_bytes(data)
    if found != expected_sha256:
        return DicomDeidOutcome(found)
    # The dataset is parsed for this call only, so deidentify may consume it (no deep copy).
    result = deidentify(read_dicom(data), key, config, consume=True)
    if result.quarantine_reason is not None:
        return DicomDeidOutcome(found, result.quarantine_reason)
    spilled = spill_dir / f"{index:08d}.dcm"
    spilled.write_bytes(encode(spilled.name, result.dataset))
    return DicomDeidOutcome(found, None, result.actions, str(spilled))


def _read_spilled(path: str, spill: SpillFolder) -> bytes:
    """The bytes of a de-identified file (``spill`` keeps its folder alive until saved)."""
    return Path(path).read_bytes()


def _dicom_file_checksums(raw_sources: SourceFolder, paths: list[str], sha256: str) -> list[str]:
    """Each file's sha256, after checking that the series is the one ingestion saw.

    Raises:
        DataChecksumError: the files changed since ingestion (as ``SourceFolder.read_verified``).
    """
    series, each = hashlib.sha256(), []
    for rel in paths:  # one file in memory at a time, not the whole series
        data = raw_sources.read_bytes(rel)
        series.update(data)
        each.append(sha256_bytes(data))
    if series.hexdigest() != sha256:
        raw_sources.read_verified(paths, sha256)  # raises the usual DataChecksumError (file, checksums, fix)
        raise DataChecksumError(f"{paths[0]} in {raw_sources.root} changed while it was being read; run again.",
                                path=raw_sources.root / paths[0], kind="sha256", expected=sha256, found="unstable")
    return each


def _dicom_jobs(raw_sources: SourceFolder, manifest: pd.DataFrame, key: bytes, config: DicomDeidConfig,
                spill: SpillFolder) -> Iterator[tuple[Any, ...]]:
    """One `deidentify_dicom_file` job per file of every DICOM item, in manifest order."""
    index = 0
    for item in manifest.itertuples():
        if item.format != "dicom":
            continue
        paths = item.source_paths.split(PATH_SEPARATOR)
        for rel, sha in zip(paths, _dicom_file_checksums(raw_sources, paths, item.source_sha256)):
            yield raw_sources.root, rel, raw_sources.sizes[rel], sha, key, config, spill.path, index
            index += 1


def _deidentified_nifti(raw_sources: SourceFolder, relpath: str, sha256: str) -> nib.Nifti1Image:
    (data,) = raw_sources.read_verified([relpath], sha256)
    clean, _ = deidentify_nifti(load_nifti_image(data, max_pixels=_NIFTI_MAX_PIXELS))
    return clean


# PNG holds 8- and 16-bit integers; other stored types (32-bit or float TIFF) are written
# as .npy, also pixels only, rather than clipped.
_PNG_DTYPES = {"uint8": np.uint8, "uint16": np.uint16}


def _raster_copy(array: np.ndarray, source_dtype: str) -> np.ndarray:
    """``(C, H, W)`` stored values -> ``(H, W)`` / ``(H, W, 3)`` in the source type."""
    dtype = _PNG_DTYPES.get(source_dtype, np.dtype(source_dtype))
    pixels = np.asarray(array).astype(dtype)
    return pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)


def deidentify_sources(
    raw_sources: SourceFolder,
    ingestion_manifest: pd.DataFrame,
    ingested_images: ArrayStore,
    ingested_masks: ArrayStore,
    pseudonymisation_key: bytes,
    params: dict[str, Any],
    workers: int | None,
    pixel_checks: pd.DataFrame,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """De-identified copies of the accepted items, an audit table and the quarantined items.

    Output names are ``<format>/<patient_key>/<item_id>...``: pseudonyms only. Each DICOM
    file is read, parsed and de-identified once (`deidentify_dicom_file`, in ``workers``
    processes): the same pass gives its audit counts, its quarantine decision and the
    bytes of its copy, which wait in a temporary folder until the copies are saved.

    Args:
        raw_sources: the source folder (DICOM and NIfTI headers are read from it again).
        ingestion_manifest: one row per accepted item.
        ingested_images, ingested_masks: stored pixel values of raster items.
        pseudonymisation_key: HMAC key for UIDs, patient keys and date offsets.
        params: ``DicomDeidConfig`` keys (``preprocessing.deid``).
        workers: processes (``preprocessing.workers``; None: every available core).
        pixel_checks: the ``check_pixels`` table: items to quarantine, copies to redact or deface.

    Returns:
        ``(files, audit, quarantined)``: ``files`` maps output paths to zero-argument
        loaders (written one at a time by ``FileFolderDataset``).
    """
    config = DicomDeidConfig.from_params(params)
    key = pseudonymisation_key
    files: dict[str, Any] = {}
    audit, quarantined = [], []
    pixel_reasons, fixes = pixel_quarantine(pixel_checks), pixel_fixes(pixel_checks)  # pixel checks
    # DICOM files are de-identified in the workers, in manifest order; items the pixel checks
    # quarantine are not de-identified at all.
    to_deidentify = ingestion_manifest[~ingestion_manifest["item_id"].isin(list(pixel_reasons))]
    spill = SpillFolder("synthmed-deid-")
    n_dicom_files = int(to_deidentify.loc[to_deidentify["format"] == "dicom", "n_files"].sum())
    workers = resolve_workers(workers, n_dicom_files)
    dicom_results = ordered_map(deidentify_dicom_file, _dicom_jobs(raw_sources, to_deidentify, key, config, spill),
                                workers, chunk_size(n_dicom_files, workers))
    for item in tqdm(ingestion_manifest.itertuples(), total=len(ingestion_manifest),
                     desc="de-identifying", unit="item", disable=None):
        base = f"{item.format}/{item.patient_key}/{item.item_id}"
        actions: Counter[str] = Counter()
        reason = None
        # --- pixel checks: text or a face that could not be removed keeps the item out
        if item.item_id in pixel_reasons:
            quarantined.append((item.item_id, item.format, pixel_reasons[item.item_id]))
            audit.append((item.item_id, item.format, int(item.n_files), "", True, pixel_reasons[item.item_id]))
            continue
        fix = fixes.get(item.item_id)
        actions.update(fix.actions() if fix else {})
        # --- end pixel checks
        if item.format == "dicom":
            paths = item.source_paths.split(PATH_SEPARATOR)
            outcomes = [next(dicom_results) for _ in paths]  # every file's result, in order
            outputs = {}
            for index, (rel, outcome) in enumerate(zip(paths, outcomes)):
                if isinstance(outcome, Exception):
                    # One file never stops the run; an item that cannot be de-identified is not
                    # published. The reason is in the primary layer (pushed): neither the source
                    # path nor the exception text (which may quote a header value) goes into it.
                    reason = f"de-identification failed on instance {index:04d} ({type(outcome).__name__})"
                    logger.warning("Quarantined item %s: %s", item.item_id, reason)
                    break
                if outcome.spilled is None and outcome.quarantine_reason is None:
                    raise DataChecksumError(
                        f"{rel} in {raw_sources.root} changed while it was being de-identified (sha256 "
                        f"{outcome.sha256}); run the ingestion pipeline again.", path=raw_sources.root / rel,
                        kind="sha256", expected="the checksum recorded at ingestion", found=outcome.sha256)
                if outcome.quarantine_reason is not None:
                    reason = outcome.quarantine_reason
                    break
                actions.update(outcome.actions)
                outputs[f"{base}/{index:04d}.dcm"] = partial(_read_spilled, outcome.spilled, spill)
            if reason is None:
                files.update(outputs)
            else:  # nothing of a quarantined item is kept, not even in the spill folder
                for outcome in outcomes:
                    if not isinstance(outcome, Exception) and outcome.spilled:
                        Path(outcome.spilled).unlink(missing_ok=True)
        elif item.format == "nifti":
            files[f"{base}.nii.gz"] = with_fix(  # pixel checks: defaced copy
                partial(_deidentified_nifti, raw_sources, item.source_paths, item.source_sha256), fix)
            (data,) = raw_sources.read_verified([item.source_paths], item.source_sha256)
            _, counts = deidentify_nifti(load_nifti_image(data, max_pixels=_NIFTI_MAX_PIXELS))
            actions.update(counts)
            if item.has_mask:
                files[f"{base}_mask.nii.gz"] = partial(_deidentified_nifti, raw_sources, item.mask_path,
                                                       item.mask_sha256)
        else:
            suffix = "png" if item.source_dtype in _PNG_DTYPES else "npy"
            files[f"{base}.{suffix}"] = with_fix(  # pixel checks: redacted copy
                partial(_raster_copy, ingested_images[item.item_id], item.source_dtype), fix)
            if item.has_mask:
                files[f"{base}_mask.png"] = partial(np.asarray, ingested_masks[item.item_id][0])
            actions.update({"reencoded_from_pixels": 1, "metadata_dropped": 1})
        if reason is not None:
            quarantined.append((item.item_id, item.format, reason))
        audit.append((item.item_id, item.format, int(item.n_files), _actions_text(actions),
                      reason is not None, reason or ""))
    logger.info("De-identified %d items, quarantined %d", len(audit) - len(quarantined), len(quarantined))
    return (files, pd.DataFrame(audit, columns=AUDIT_COLUMNS), pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS))


# ------------------------------------------------------------------ intensity and geometry


@dataclass(frozen=True)
class GeometrySpec:
    """Per-modality geometry: isotropic target spacing (mm) and longest side (px, 2D only)."""

    target_spacing_mm: float | None = None
    resize_longest_px: int | None = None

    def __post_init__(self) -> None:
        if self.target_spacing_mm is not None and not float(self.target_spacing_mm) > 0:
            raise ValueError(f"target_spacing_mm must be positive or null, got {self.target_spacing_mm}.")
        if self.resize_longest_px is not None and int(self.resize_longest_px) < 8:
            raise ValueError(f"resize_longest_px must be at least 8 or null, got {self.resize_longest_px}.")


@dataclass(frozen=True)
class PreprocessingConfig:
    """``params:preprocessing`` (``deid``, ``split``, ``pixels`` and ``workers`` are read by their own nodes)."""

    intensity: Mapping[str, Mapping[str, Any]]
    geometry: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    deid: Mapping[str, Any] = field(default_factory=dict)
    split: Mapping[str, Any] = field(default_factory=dict)
    pixels: Mapping[str, Any] = field(default_factory=dict)
    workers: int | None = None  # read by deidentify_sources

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise ValueError(
                f"preprocessing.workers must be a positive number of processes or null (all available cores), "
                f"got {self.workers!r}."
            )
        if "default" not in self.intensity:
            raise ValueError(
                "preprocessing.intensity needs a 'default' entry (used for modalities without "
                f"their own); found {sorted(self.intensity)}."
            )

    def for_modality(self, modality: str) -> tuple[IntensitySpec, GeometrySpec]:
        """The ``default`` settings overridden by the modality's own (e.g. ``CT``)."""
        intensity = {**self.intensity["default"], **self.intensity.get(modality, {})}
        geometry = {**self.geometry.get("default", {}), **self.geometry.get(modality, {})}
        return (
            IntensitySpec.from_params(intensity),
            from_params(GeometrySpec, geometry, f"preprocessing.geometry.{modality}"),
        )


@dataclass(frozen=True)
class ItemPreprocessor:
    """Computes one item's arrays when asked: image, foreground and mask are separate calls.

    Arrays are recomputed from the (memory-mapped) ingested item on each call, so only one
    item is in memory at a time while the array stores are written.
    """

    image: np.ndarray
    mask: np.ndarray | None
    spacing: tuple[float, ...]
    intensity: IntensitySpec
    geometry: GeometrySpec
    pixel_fix: PixelFix | None = None  # redacted text boxes, face plane (``check_pixels``)

    def _source(self) -> np.ndarray:
        image = np.asarray(self.image)
        return image if self.pixel_fix is None else self.pixel_fix.apply(image)

    def _reshape(self, array: np.ndarray, order: int) -> tuple[np.ndarray, tuple[float, ...]]:
        spacing = self.spacing
        if self.geometry.target_spacing_mm is not None and all(np.isfinite(spacing)):
            target = (float(self.geometry.target_spacing_mm),) * len(spacing)
            array, spacing = resample_to_spacing(array, spacing, target, order=order)
        if self.geometry.resize_longest_px is not None and array.ndim == 3:
            old = array.shape[1:]
            array = resize_longest_side(array, int(self.geometry.resize_longest_px), order=order)
            spacing = tuple(s * o / n for s, o, n in zip(spacing, old, array.shape[1:]))
        return array, spacing

    def geometry_of_output(self) -> tuple[tuple[int, ...], tuple[float, ...], str]:
        """Output shape, spacing and foreground bounding box (``"a:b,c:d[,e:f]"``, or "")."""
        array, spacing = self._reshape(self._source(), order=1)
        fg = foreground_mask(array.mean(axis=0), self.intensity.foreground_threshold)
        if not fg.any():
            return array.shape, spacing, ""
        bounds = []
        for axis in range(fg.ndim):
            present = np.flatnonzero(fg.any(axis=tuple(a for a in range(fg.ndim) if a != axis)))
            bounds.append(f"{present[0]}:{present[-1] + 1}")
        return array.shape, spacing, ",".join(bounds)

    def scaled_image(self) -> np.ndarray:
        """``(C, H, W)`` or ``(C, X, Y, Z)`` float32 in [-1, 1]."""
        array, _ = self._reshape(self._source(), order=1)
        scaled, _ = apply_intensity(array, self.intensity)
        return scaled

    def foreground(self) -> np.ndarray:
        """``(1, ...)`` uint8, 1 where the channel mean exceeds ``foreground_threshold``."""
        array, _ = self._reshape(self._source(), order=1)
        return foreground_mask(array.mean(axis=0, keepdims=True), self.intensity.foreground_threshold).astype(np.uint8)

    def resampled_mask(self) -> np.ndarray:
        """``(1, ...)`` uint8 labels, nearest-neighbour resampled."""
        if self.mask is None:
            raise ValueError("this item has no mask")
        array, _ = self._reshape(np.asarray(self.mask), order=0)
        return array.astype(np.uint8)


def preprocess_items(
    ingestion_manifest: pd.DataFrame,
    ingested_images: ArrayStore,
    ingested_masks: ArrayStore,
    deid_quarantine: pd.DataFrame,
    params: dict[str, Any],
    pixel_checks: pd.DataFrame,
) -> tuple[dict[str, Callable[[], np.ndarray]], dict[str, Callable[[], np.ndarray]],
           dict[str, Callable[[], np.ndarray]], pd.DataFrame]:
    """Model-ready arrays of every item that was not quarantined.

    Each item is processed once here (to validate it and record its new shape and
    spacing) and again, lazily, when the array stores are written. Text boxes and faces
    found by ``check_pixels`` are removed from the ingested arrays first.

    Returns:
        ``(images, masks, foreground, manifest)``: images ``(C, ...)`` float32 in [-1, 1];
        masks and foreground ``(1, ...)`` uint8; the manifest has no source paths.
    """
    config = from_params(PreprocessingConfig, params, "preprocessing")
    excluded = set(deid_quarantine["item_id"])
    fixes = pixel_fixes(pixel_checks)
    images, masks, foreground, rows = {}, {}, {}, []
    for item in tqdm(ingestion_manifest.itertuples(), total=len(ingestion_manifest),
                     desc="preprocessing", unit="item", disable=None):
        if item.item_id in excluded:
            continue
        intensity, geometry = config.for_modality(item.modality)
        processor = ItemPreprocessor(
            image=ingested_images[item.item_id],
            mask=ingested_masks[item.item_id] if item.has_mask else None,
            spacing=parse_spacing(item.spacing_mm),
            intensity=intensity,
            geometry=geometry,
            pixel_fix=fixes.get(item.item_id),
        )
        shape, spacing, bbox = processor.geometry_of_output()
        images[item.item_id] = processor.scaled_image
        foreground[item.item_id] = processor.foreground
        if item.has_mask:
            masks[item.item_id] = processor.resampled_mask
        rows.append({
            "item_id": item.item_id, "patient_key": item.patient_key, "format": item.format,
            "kind": item.kind, "modality": item.modality, "label": item.label,
            "shape": format_shape(shape),
            "spacing_mm": format_spacing(spacing),
            "has_mask": bool(item.has_mask),
            "foreground_bbox": bbox,
        })
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    logger.info("Preprocessed %d items (%d quarantined before preprocessing)", len(manifest), len(excluded))
    return images, masks, foreground, manifest


def assign_item_splits(preprocessed_manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Train / validation / test per patient or per slab; fails on any leakage."""
    return assign_splits(preprocessed_manifest, params)


def summarise_preprocessing(
    ingestion_manifest: pd.DataFrame,
    deid_audit: pd.DataFrame,
    deid_quarantine: pd.DataFrame,
    preprocessed_manifest: pd.DataFrame,
    split_table: pd.DataFrame,
) -> dict[str, float]:
    """Counts for DVC metrics and MLflow; checks ``items in = preprocessed + quarantined``."""
    n_in, n_out, n_q = len(ingestion_manifest), len(preprocessed_manifest), len(deid_quarantine)
    if n_in != n_out + n_q:
        raise RuntimeError(f"Preprocessing lost items: {n_in} in != {n_out} preprocessed + {n_q} quarantined.")
    actions: Counter[str] = Counter()
    for text in deid_audit["actions"].fillna(""):
        for part in filter(None, str(text).split(";")):
            name, count = part.split("=")
            actions[name] += int(count)
    metrics: dict[str, float] = {
        "items_in": n_in,
        "items_preprocessed": n_out,
        "items_quarantined": n_q,
        **{f"deid_{name}": count for name, count in sorted(actions.items())},
        **{f"split_{split}_items": int(n) for split, n in split_table.groupby("split")["item_id"].nunique().items()},
        "split_rows": len(split_table),
    }
    return metrics
