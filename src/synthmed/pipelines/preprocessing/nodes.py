"""Nodes of the ``preprocessing`` pipeline.

1. ``deidentify_sources``: a de-identified copy of every accepted item in its own format
   (DICOM per PS3.15 Annex E, made by ingestion's one pass and published here as they are;
   NIfTI with blank header text; 2D images re-encoded from pixels), named only by
   pseudonyms, plus an audit table of the actions applied (counts, never values) and the
   items quarantined (burned-in annotation, US/SC/OT by default, the pixel checks).
2. ``preprocess_items``: per modality, resampling to a target spacing, resizing, CT
   windowing, percentile clipping, histogram normalisation and scaling to [-1, 1], with a
   foreground mask; arrays are computed one item at a time while they are saved.
3. ``assign_item_splits``: train / validation / test by patient or by slab, checked for
   leakage (``synthmed.core.splits``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import format_shape, format_spacing, parse_spacing
from synthmed.core.splits import assign_splits, item_has_finding, split_config
from synthmed.datasets.array_store import ArrayStore
from synthmed.datasets.file_folder import SourceFolder
from synthmed.datasets.integrity import DataChecksumError
from synthmed.imaging.geometry import resample_to_spacing, resize_longest_side
from synthmed.imaging.intensity import IntensitySpec, apply_intensity, foreground_mask
from synthmed.imaging.readers import load_nifti_image
from synthmed.pipelines.preprocessing.candidates import dicom_candidates
from synthmed.pipelines.preprocessing.config import GeometrySpec, PreprocessingConfig  # noqa: F401  (re-exported)
from synthmed.privacy.dicom_deid import format_actions, parse_actions
from synthmed.privacy.nifti_deid import deidentify_nifti
from synthmed.privacy.pixel_checks import PixelFix, pixel_fixes, pixel_quarantine, with_fix

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
nib = lazy_import("nibabel")

logger = logging.getLogger(__name__)

AUDIT_COLUMNS = ["item_id", "format", "n_files", "actions", "quarantined", "reason"]
QUARANTINE_COLUMNS = ["item_id", "format", "reason"]
MANIFEST_COLUMNS = [
    "item_id", "patient_key", "format", "kind", "modality", "label", "series", "shape", "spacing_mm", "has_mask",
    "foreground_bbox",
]
_NIFTI_MAX_PIXELS = 2**40  # size was already checked at ingestion


# ------------------------------------------------------------------ de-identification


def _check_copies(candidates: SourceFolder, names: list[str]) -> None:
    """Every copy an item needs is in the candidate layer (its checksums were verified on load).

    Raises:
        DataChecksumError: a copy is missing (the layer was changed after ingestion).
    """
    for name in names:
        if name not in candidates.sizes:
            raise DataChecksumError(
                f"{name} is missing from the de-identification candidates in {candidates.root}; run the "
                "ingestion pipeline again (`kedro run --pipelines ingestion`, or `dvc repro`).",
                path=candidates.root / name, kind="file", expected="present", found="missing")


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
    deid_candidates: SourceFolder,
    deid_candidate_items: pd.DataFrame,
    params: dict[str, Any],
    pixel_checks: pd.DataFrame,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """De-identified copies of the accepted items, an audit table and the quarantined items.

    Output names are ``<format>/<patient_key>/<item_id>...``: pseudonyms only. DICOM files
    were de-identified by ingestion, in the pass that decoded them: their copies are taken
    from the candidate layer as they are (bytes, not parsed or re-encoded), with the audit
    counts and the quarantine decision of that pass. NIfTI and 2D copies are made here. The
    returned mapping is saved into the staged primary layer, which replaces
    ``data/03_primary`` only when every check of the run passed (``synthmed.core.staging``).

    Args:
        raw_sources: the source folder (NIfTI headers are read from it again).
        ingestion_manifest: one row per accepted item.
        ingested_images, ingested_masks: stored pixel values of raster items.
        deid_candidates: the de-identified DICOM copies ingestion made.
        deid_candidate_items: one row per DICOM item (``CANDIDATE_COLUMNS``).
        params: ``DicomDeidConfig`` keys (``preprocessing.deid``): the copies must have been
            made with this profile.
        pixel_checks: the ``check_pixels`` table: items to quarantine, copies to redact or deface.

    Returns:
        ``(files, audit, quarantined)``: ``files`` maps output paths to zero-argument
        loaders (written one at a time by ``FileFolderDataset``).
    """
    candidates = dicom_candidates(deid_candidate_items, ingestion_manifest, params)
    files: dict[str, Any] = {}
    audit, quarantined = [], []
    pixel_reasons, fixes = pixel_quarantine(pixel_checks), pixel_fixes(pixel_checks)  # pixel checks
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
            candidate = candidates[item.item_id]
            actions.update(parse_actions(candidate.actions))
            if candidate.reason:
                reason = candidate.reason
                logger.info("Quarantined item %s: %s", item.item_id, reason)
            else:
                if fix is not None:
                    # check_item quarantines every DICOM item a check would change (copies keep
                    # their pixels); a fix here means that rule was broken, not bad input.
                    raise RuntimeError(f"DICOM item {item.item_id} has a pixel fix ({fix.actions()}) but DICOM "
                                       "copies are published unchanged; the pixel checks must quarantine it.")
                names = [f"{base}/{index:04d}.dcm" for index in range(candidate.instances)]
                _check_copies(deid_candidates, names)
                files.update({name: partial(deid_candidates.read_bytes, name) for name in names})
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
        audit.append((item.item_id, item.format, int(item.n_files), format_actions(actions),
                      reason is not None, reason or ""))
    logger.info("De-identified %d items, quarantined %d", len(audit) - len(quarantined), len(quarantined))
    return (files, pd.DataFrame(audit, columns=AUDIT_COLUMNS), pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS))


# ------------------------------------------------------------------ intensity and geometry


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
            # A manifest written before ingestion recorded series has none: "" (no series known).
            "series": getattr(item, "series", ""),
            "shape": format_shape(shape),
            "spacing_mm": format_spacing(spacing),
            "has_mask": bool(item.has_mask),
            "foreground_bbox": bbox,
        })
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    logger.info("Preprocessed %d items (%d quarantined before preprocessing)", len(manifest), len(excluded))
    return images, masks, foreground, manifest


def assign_item_splits(
    preprocessed_manifest: pd.DataFrame, preprocessed_masks: Mapping[str, np.ndarray], params: dict[str, Any]
) -> pd.DataFrame:
    """Train / validation / test per patient or per slab; fails on any leakage.

    ``stratify: finding``: each item's finding is read from its preprocessed mask (masks are
    loaded only then).
    """
    findings = None
    if split_config(params).stratify == "finding":
        labels = split_config(params).lesion_labels
        findings = {
            item.item_id: item_has_finding(preprocessed_masks[item.item_id], labels) if item.has_mask else None
            for item in preprocessed_manifest.itertuples()
        }
    return assign_splits(preprocessed_manifest, params, findings)


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
        actions.update(parse_actions(text))
    metrics: dict[str, float] = {
        "items_in": n_in,
        "items_preprocessed": n_out,
        "items_quarantined": n_q,
        **{f"deid_{name}": count for name, count in sorted(actions.items())},
        **{f"split_{split}_items": int(n) for split, n in split_table.groupby("split")["item_id"].nunique().items()},
        "split_rows": len(split_table),
    }
    return metrics
