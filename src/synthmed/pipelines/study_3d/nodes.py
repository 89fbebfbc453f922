"""Nodes of the ``study_3d`` pipeline: parse ``params:study_3d``, call the library, return.

The study (issue 11): a 3D family (``pix2pix3d``) trained by the shared trainer on the
training split of extraction's sub-volumes; a plan of volumes drawn from held-out patients'
label maps, as they are (``paired``: scored against the real volume) and with a requested
lesion placed (``lesion``: `synthmed.imaging.lesion_placement.place_plan`); export as NIfTI
and DICOM series (`synthmed.generators.volume_export`); evaluation (`synthmed.metrics.volumes`):
2.5D FID with its floor, paired SSIM / PSNR, lesion control, the memorisation gate on
volumes; a report page.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from synthmed import __version__
from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.core.templates import render
from synthmed.generators.base import Conditions, SamplerSpec, TrainedGenerator
from synthmed.generators.export import SyntheticOrigin
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.run import RunConfig, checkpoint_folder, model_card_facts
from synthmed.generators.sampling import checkpoint_id
from synthmed.generators.tracking import active_tracker
from synthmed.generators.training import ArrayBatches, TrainingConfig, reproducible_history, resolved_precision, train
from synthmed.generators.volume_export import volume_affine, volume_files
from synthmed.imaging.cohort import LABEL_NAMES
from synthmed.imaging.lesion_placement import LesionPlanRow, place_plan
from synthmed.imaging.volumes import tissue_order
from synthmed.metrics import report as report_format
from synthmed.metrics import volumes as vm
from synthmed.metrics.volume_reader import build_volume_reader_kit
from synthmed.pipelines.study_3d.config import (  # noqa: F401  (re-exported: the configurations' old home)
    FidConfig,
    StudyConfig,
    StudyEvaluationConfig,
    UtilityConfig3D,
    VolumeGateConfig,
    VolumeReaderKitConfig,
)
from synthmed.privacy.memorisation import calibrate_threshold
from synthmed.protocols.encoders import patient_keys
from synthmed.protocols.studies import figure_png64

logger = logging.getLogger(__name__)

PAIRED, LESION = "paired", "lesion"
STORE_KEYS = ("images", "label_maps", "lesion_masks")


def _config(params: Mapping[str, Any]) -> StudyConfig:
    return from_params(StudyConfig, params, "study_3d")


def _evaluation(config: StudyConfig) -> StudyEvaluationConfig:
    return from_params(StudyEvaluationConfig, config.evaluation, "study_3d.evaluation")


def _selected(volumes: Mapping[str, np.ndarray], manifest: pd.DataFrame, config: StudyConfig) -> pd.DataFrame:
    """The manifest rows of the study's contrast (``study_3d.contrast``), all rows without one."""
    if not config.contrast:
        return manifest
    value = {name: label for label, name in LABEL_NAMES.items()}
    keep = tissue_order(volumes["images"], volumes["label_maps"], value[config.contrast["brighter"]],
                        value[config.contrast["darker"]])
    rows = manifest[keep[manifest["index"].to_numpy()]]
    logger.info("study_3d.contrast %s above %s: %d of %d sub-volumes", config.contrast["brighter"],
                config.contrast["darker"], len(rows), len(manifest))
    return rows


def _rows(manifest: pd.DataFrame, splits: tuple[str, ...] | str, crop: str | None = None) -> pd.DataFrame:
    wanted = (splits,) if isinstance(splits, str) else splits
    rows = manifest[manifest["split"].isin(wanted)]
    return rows[rows["crop"] == crop] if crop is not None else rows


def _arrays(store: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {key: np.asarray(store[key][np.asarray(index, dtype=np.int64)]) for key in STORE_KEYS}


def _patients(manifest: pd.DataFrame, index: Any) -> np.ndarray | None:
    """The patient of each volume store row in ``index`` (None when the manifest has no patient keys): the
    crops of one patient are not independent, so the intervals draw patients (``synthmed.metrics.resampling``)."""
    return patient_keys(manifest, np.asarray(index, dtype=np.int64)) if "patient_key" in manifest else None


def _checksum(store: Mapping[str, np.ndarray], key: str) -> str:
    if hasattr(store, "info"):
        return store.info(key)["sha256"]
    return sha256_bytes(np.ascontiguousarray(store[key]).tobytes())


def _spacing(manifest: pd.DataFrame) -> tuple[float, float, float]:
    spacing = manifest[["spacing_mm_d", "spacing_mm_h", "spacing_mm_w"]].drop_duplicates()
    if len(spacing) != 1:
        raise ValueError(f"The volume manifest holds {len(spacing)} voxel spacings; the study needs one "
                         "(extraction.volumes.spacing_mm resamples every crop to it).")
    return tuple(float(v) for v in spacing.iloc[0])


# ----------------------------------------------------------------------------- training


def train_volume_generator(volumes: Mapping[str, np.ndarray], volume_manifest: pd.DataFrame,
                           params: dict[str, Any]) -> tuple[TrainedGenerator, pd.DataFrame]:
    """Train the volume family on the reference split's sub-volumes (the shared trainer, checkpoints, resume)."""
    config = _config(params)
    volume_manifest = _selected(volumes, volume_manifest, config)
    spec = get_family(config.family)
    if spec.spatial_dims != 3:
        raise ValueError(f"study_3d.family {config.family!r} is not a volume family (spatial_dims "
                         f"{spec.spatial_dims}); use one of the volume families, e.g. pix2pix3d.")
    model_config = config_from_params(config.family, dict(config.model))
    training = from_params(TrainingConfig, config.training, "study_3d.training")
    run = from_params(RunConfig, {"source": "volumes", **config.run}, "study_3d.run")
    indices = _rows(volume_manifest, config.reference_split)["index"].to_numpy()
    shape = tuple(volumes["images"].shape)
    if shape[2:] != (model_config.image_size,) * 3:
        raise ValueError(f"The volume store holds {shape[2:]} sub-volumes but study_3d.model.image_size is "
                         f"{model_config.image_size}; set extraction.volumes.size_vox to "
                         f"{[model_config.image_size] * 3} or the image size to the crops' side.")
    # The trainer's examples: images, lesion mask as `masks`, label maps, no class (one class).
    store = {"images": volumes["images"], "masks": volumes["lesion_masks"], "label_maps": volumes["label_maps"],
             "labels": np.zeros(shape[0], dtype=np.int64)}
    run_dir = checkpoint_folder(run, f"study_3d-{config.family}", model_config, training,
                                [_checksum(volumes, key) for key in STORE_KEYS])
    logger.info("study_3d: training %s on %d %s sub-volumes of %s voxels; checkpoints in %s", config.family,
                len(indices), config.reference_split, "x".join(map(str, shape[2:])), run_dir)
    dataset = ArrayBatches(store, indices, size=model_config.image_size)
    models, history = train(spec, model_config, training, dataset, run_dir, tracker=active_tracker("study_3d"))
    history = reproducible_history(history)  # images/s went to the log and MLflow
    card = model_card_facts(run, training, volume_manifest, indices, [],
                            {key: _checksum(volumes, key) for key in STORE_KEYS}, history,
                            precision=resolved_precision(training))
    return TrainedGenerator(config.family, model_config, models, ("volume",), card), pd.DataFrame(history)


# ----------------------------------------------------------------------------- plan and sampling


def warn_invisible_rows(rows: list[LesionPlanRow], min_visible_volume_ml: float) -> list[int]:
    """Warn about the plan rows asking for a lesion smaller than ``min_visible_volume_ml`` (the smallest
    size this profile draws visibly, ``study_3d.min_visible_volume_ml``); they are kept. Returns their
    numbers."""
    below = []
    for k, row in enumerate(rows):
        volume_ml = row.volume_ml if row.volume_ml is not None else 4.0 / 3.0 * math.pi * row.radius_mm**3 / 1000.0
        if volume_ml < min_visible_volume_ml:
            below.append(k)
            logger.warning("study_3d.plan[%d] asks for %.2f mL lesions, below %.2f mL, the smallest this profile's "
                           "generator draws visibly (study_3d.min_visible_volume_ml): they are placed and measured, "
                           "but expect them to be hard to see (lesion_contrast_sd in the lesion-control table).",
                           k, volume_ml, min_visible_volume_ml)
    return below


def plan_lesion_volumes(volumes: Mapping[str, np.ndarray], volume_manifest: pd.DataFrame,
                        params: dict[str, Any]) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The label maps to draw from: held-out sub-volumes as they are (``paired``), then the lesion plan's.

    Returns:
        ``({"label_maps", "lesion_masks", "real"}, plan)``: conditions ``(M, 1, D, H, W)``, the real
        volume of each paired row (zeros for lesion rows, which have no real counterpart), and one
        plan row per volume: ``kind``, ``source_index`` (volume store row), the request and the
        lesion placed.
    """
    config = _config(params)
    volume_manifest = _selected(volumes, volume_manifest, config)
    rows = [from_params(LesionPlanRow, row, f"study_3d.plan[{k}]") for k, row in enumerate(config.plan)]
    warn_invisible_rows(rows, config.min_visible_volume_ml)
    held_out = _rows(volume_manifest, config.held_out_splits)
    if held_out.empty:
        raise ValueError(f"No sub-volume in the held-out splits {list(config.held_out_splits)}: the plan needs "
                         "held-out patients' label maps (check preprocessing.split and extraction.volumes).")
    spacing = _spacing(volume_manifest)
    maps, masks, real, table = [], [], [], []
    if config.paired:
        arrays = _arrays(volumes, held_out["index"].to_numpy())
        maps.append(arrays["label_maps"])
        masks.append(arrays["lesion_masks"])
        real.append(arrays["images"])
        table += [{"kind": PAIRED, "source_index": int(r.index), "item_id": r.item_id, "split": r.split,
                   "crop": r.crop} for r in held_out.itertuples()]
    if rows:
        brains = _rows(volume_manifest, config.held_out_splits, "brain")
        sources = brains if len(brains) else held_out
        source_maps = _arrays(volumes, sources["index"].to_numpy())["label_maps"]
        placed_maps, placed_rows = place_plan(source_maps, spacing, rows, seed=config.seed,
                                              clear_label=config.clear_label)
        maps.append(placed_maps)
        masks.append((placed_maps == 4).astype(np.uint8))
        real.append(np.zeros((len(placed_maps), *np.asarray(volumes["images"]).shape[1:]), np.float32))
        for row in placed_rows:
            source = sources.iloc[row["source"]]
            table.append({"kind": LESION, "source_index": int(source["index"]), "item_id": source["item_id"],
                          "split": source["split"], "crop": source["crop"],
                          **{k: v for k, v in row.items() if k != "source"}})
    plan = pd.DataFrame(table)
    plan.insert(0, "index", np.arange(len(plan)))
    for axis, value in zip("dhw", spacing):
        plan[f"spacing_mm_{axis}"] = value
    logger.info("study_3d plan: %d paired and %d lesion-control volumes", int((plan["kind"] == PAIRED).sum()),
                int((plan["kind"] == LESION).sum()))
    return {"label_maps": np.concatenate(maps), "lesion_masks": np.concatenate(masks),
            "real": np.concatenate(real)}, plan


def generate_volumes(generator: TrainedGenerator, conditions: Mapping[str, np.ndarray], plan: pd.DataFrame,
                     params: dict[str, Any]) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """One volume per plan row, in batches, from a seeded generator (same seed, same volumes)."""
    config = _config(params)
    spec = get_family(generator.family)
    torch_generator = torch.Generator().manual_seed(config.seed)
    label_maps, masks = np.asarray(conditions["label_maps"]), np.asarray(conditions["lesion_masks"])
    images = []
    for start in range(0, len(plan), config.batch_size):
        part = slice(start, start + config.batch_size)
        batch = Conditions(n=len(label_maps[part]), label_maps=torch.as_tensor(label_maps[part].astype(np.int64)),
                           masks=torch.as_tensor(masks[part].astype(np.float32)))
        images.append(spec.sample(generator.models, generator.config, batch, SamplerSpec(), torch_generator)
                      .numpy().astype(np.float32))
    provenance = plan.assign(family=generator.family, checkpoint=checkpoint_id(generator), seed=config.seed)
    return {"images": np.concatenate(images), "label_maps": label_maps.astype(np.uint8),
            "lesion_masks": masks.astype(np.uint8), "real": np.asarray(conditions["real"], np.float32)}, provenance


def export_volumes(samples: Mapping[str, np.ndarray], provenance: pd.DataFrame,
                   params: dict[str, Any]) -> dict[str, Any]:
    """NIfTI (volume + label map) and, with ``export_dicom``, a DICOM series per volume; the provenance table.

    The files carry the voxel spacing only: the origin is 0 (a held-out patient's crop position
    is not exported).
    """
    config = _config(params)
    files: dict[str, Any] = {"provenance.csv": provenance}
    for row in provenance.itertuples():
        affine = volume_affine([row.spacing_mm_d, row.spacing_mm_h, row.spacing_mm_w])
        origin = SyntheticOrigin(generator=str(row.family), checkpoint=str(row.checkpoint), label=str(row.kind),
                                 seed=int(row.seed), index=int(row.index), software_version=__version__)
        name = f"{row.kind}_{int(row.index):04d}"

        def blobs(name=name, k=int(row.index), affine=affine, origin=origin):
            return volume_files(name, np.asarray(samples["images"][k]), np.asarray(samples["label_maps"][k]), affine,
                                origin, dicom=config.export_dicom)

        for path, blob in blobs().items():
            files[f"{row.kind}/{path}"] = blob
    logger.info("study_3d: exported %d volumes (%d files)", len(provenance), len(files) - 1)
    return files


# ----------------------------------------------------------------------------- evaluation


def _real_sets(volumes: Mapping[str, np.ndarray], manifest: pd.DataFrame, config: StudyConfig):
    reference = _arrays(volumes, _rows(manifest, config.reference_split)["index"].to_numpy())
    held_out = _arrays(volumes, _rows(manifest, config.held_out_splits)["index"].to_numpy())
    return reference, held_out


def score_fidelity(volumes: Mapping[str, np.ndarray], volume_manifest: pd.DataFrame,
                   samples: Mapping[str, np.ndarray], provenance: pd.DataFrame,
                   params: dict[str, Any]) -> dict[str, float]:
    """2.5D FID (reference split vs every synthetic volume) with its floor; paired 3D SSIM / PSNR."""
    config = _config(params)
    volume_manifest = _selected(volumes, volume_manifest, config)
    evaluation = _evaluation(config)
    encoder_config = from_params(vm.PlaneEncoderConfig, evaluation.encoder, "study_3d.evaluation.encoder")
    fid = from_params(FidConfig, evaluation.fid, "study_3d.evaluation.fid")
    reference, _ = _real_sets(volumes, volume_manifest, config)
    encoder, facts = vm.train_plane_encoder(reference["images"], reference["label_maps"], encoder_config)
    from synthmed.metrics.features import domain_network

    embed = domain_network(encoder, device=encoder_config.device)
    fraction = encoder_config.min_brain_fraction
    real_features = vm.plane_features(embed, reference["images"], reference["label_maps"], fraction)
    fake_features = vm.plane_features(embed, np.asarray(samples["images"]), np.asarray(samples["label_maps"]),
                                      fraction)
    synthetic_patients = _patients(volume_manifest, provenance["source_index"])
    out = dict(facts) | vm.fid_2_5d(real_features, fake_features, resamples=fid.resamples, level=fid.level,
                                    seed=fid.seed, synthetic_groups=synthetic_patients,
                                    reference_groups=_patients(volume_manifest, _rows(
                                        volume_manifest, config.reference_split)["index"]))
    paired = provenance.index[provenance["kind"] == PAIRED].to_numpy()
    if len(paired):
        scores = vm.paired_volume_metrics(np.asarray(samples["images"])[paired], np.asarray(samples["real"])[paired])
        from synthmed.metrics.fidelity import summarise_paired

        out |= summarise_paired(scores, resamples=fid.resamples, level=fid.level, seed=fid.seed,
                                groups=None if synthetic_patients is None else synthetic_patients[paired])
    return out


def score_lesion_control(volumes: Mapping[str, np.ndarray], volume_manifest: pd.DataFrame,
                         samples: Mapping[str, np.ndarray], provenance: pd.DataFrame,
                         params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float], vm.LesionSegmenter]:
    """Find the lesion of each lesion-control volume and compare it with the lesion asked for.

    ``evaluation.control.method``: ``intensity`` (voxels brighter than their tissue around the request,
    the threshold calibrated on the real training lesions; its floor, the same measurement of the real
    held-out lesions, beside it) or ``segmenter`` (the small 3D segmenter trained on real training
    volumes). The segmenter is trained either way (the utility's real-only segmenter) and its Dice on
    real held-out volumes reported.
    """
    config = _config(params)
    volume_manifest = _selected(volumes, volume_manifest, config)
    evaluation = _evaluation(config)
    seg_config = from_params(vm.SegmenterConfig, evaluation.segmenter, "study_3d.evaluation.segmenter")
    control = from_params(vm.IntensityControlConfig, evaluation.control, "study_3d.evaluation.control")
    fid = from_params(FidConfig, evaluation.fid, "study_3d.evaluation.fid")
    spacing = _spacing(volume_manifest)
    reference, held_out = _real_sets(volumes, volume_manifest, config)
    model = vm.fit_segmenter(reference["images"], reference["lesion_masks"], seg_config)
    held_dice = vm.dice(vm.segment(model, held_out["images"], seg_config.threshold), held_out["lesion_masks"])
    with_lesion = held_out["lesion_masks"].reshape(len(held_dice), -1).any(1)
    out = {"segmenter_dice_held_out": float(held_dice[with_lesion].mean()) if with_lesion.any() else float("nan"),
           "segmenter_held_out_with_lesion": float(with_lesion.sum())}
    if control.method == "intensity":
        # Each patient once: the brain crops (lesion crops repeat its lesions), every crop without them.
        train_real, _ = _one_crop_per_item(volumes, volume_manifest, config.reference_split)
        held_real, held_index = _one_crop_per_item(volumes, volume_manifest, config.held_out_splits)
        threshold, train_dice = vm.calibrate_intensity_threshold(
            train_real["images"], train_real["label_maps"], train_real["lesion_masks"], spacing, control)
        floor_table, floor = vm.intensity_floor(held_real["images"], held_real["label_maps"],
                                                held_real["lesion_masks"], spacing, threshold, control,
                                                resamples=fid.resamples, level=fid.level, seed=fid.seed,
                                                groups=_patients(volume_manifest, held_index))
        out |= floor | {"control_threshold": threshold, "control_threshold_train_dice": train_dice}
        logger.info("study_3d lesion control by intensity: threshold %.2f; on real held-out lesions (the floor) Dice "
                    "%.3f, detected %.2f, volume error %+.2f mL, centre error %.1f mm, false detections %.2f",
                    threshold, out["floor_dice"], out["floor_detected"], out.get("floor_volume_error_ml", np.nan),
                    out.get("floor_centre_error_mm", np.nan), out.get("floor_false_detection", np.nan))
    rows = provenance.index[provenance["kind"] == LESION].to_numpy()
    if not len(rows):
        return pd.DataFrame(), out, model
    plan = provenance.iloc[rows].reset_index(drop=True)
    images = np.asarray(samples["images"])[rows]
    if control.method == "intensity":
        label_maps = np.asarray(samples["label_maps"])[rows]
        lesion_masks = np.asarray(samples["lesion_masks"])[rows]
        residuals = [vm.tissue_residual(image, labels, control.sigma_vox) for image, labels in zip(images, label_maps)]
        masks = vm.intensity_masks(images, label_maps, plan, spacing, threshold, control, residuals=residuals)
        out["control_lesion_contrast"] = float(np.nanmean(vm.lesion_contrast(residuals, lesion_masks)))
        contrast_sd = [vm.lesion_contrast_sd(r, labels, mask, spacing, control.contrast_shell_mm)
                       for r, labels, mask in zip(residuals, label_maps, lesion_masks)]
        out |= vm.false_detection(images, label_maps, lesion_masks, float(plan["placed_volume_ml"].median()), spacing,
                                  threshold, control, residuals=residuals, seed=fid.seed)
    else:
        masks = vm.segment(model, images, seg_config.threshold)
    table = vm.lesion_control_table(plan, masks, spacing)
    out |= vm.control_summary(table, resamples=fid.resamples, level=fid.level, seed=fid.seed,
                              groups=_patients(volume_manifest, plan["source_index"]))
    if control.method == "intensity":
        table = table.assign(lesion_contrast_sd=contrast_sd, real_contrast_sd=out["floor_lesion_contrast_sd"])
        out |= _visibility(table, floor_table, control.visible_contrast_sd)
    found = table[table["realised_found"] > 0]
    out |= {"control_abs_volume_error_ml_max": float(table["abs_volume_error_ml"].max()),
            "control_centre_error_mm_max": float(found["centre_error_mm"].max()) if len(found) else float("nan")}
    logger.info("study_3d lesion control: detected %.2f, |volume error| %.2f mL, centre error %.1f mm (n = %d)",
                out["control_detected"], out.get("control_abs_volume_error_ml", float("nan")),
                out.get("control_centre_error_mm", float("nan")), len(table))
    return table, out, model


def _visibility(table: pd.DataFrame, floor_table: pd.DataFrame, visible_contrast_sd: float) -> dict[str, float]:
    """Lesion contrast per plan row against the real lesions'; a warning for each row drawn below
    ``visible_contrast_sd``. Metrics: ``control_lesion_contrast_sd`` (mean over lesions),
    ``control_visible`` (share visible), per row ``control_lesion_contrast_sd_row<k>`` and
    ``control_visible_row<k>``, ``control_min_visible_volume_ml`` (the smallest row, by mean placed
    volume, whose lesions are all visible; NaN when none) and the real lesions' contrast range."""
    by_size = vm.visibility_by_size(table, visible_contrast_sd)
    values = table["lesion_contrast_sd"].to_numpy(dtype=np.float64)
    out = {"control_lesion_contrast_sd": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
           "control_visible": float(np.mean(np.nan_to_num(values, nan=-np.inf) >= visible_contrast_sd)),
           "control_visible_contrast_sd": float(visible_contrast_sd)}
    real = floor_table["lesion_contrast_sd"].to_numpy(dtype=np.float64)
    if np.isfinite(real).any():
        out |= {"floor_lesion_contrast_sd_min": float(np.nanmin(real)),
                "floor_lesion_contrast_sd_max": float(np.nanmax(real))}
    for row in by_size.itertuples():
        out |= {f"control_lesion_contrast_sd_row{row.plan_row}": row.contrast_sd,
                f"control_visible_row{row.plan_row}": row.visible}
        logger.info("study_3d lesion contrast, plan row %d (%s, %.2f mL placed, n = %d): %.2f sd (min %.2f), %.0f%% "
                    "visible; real held-out lesions %.2f sd", row.plan_row, row.requested, row.placed_volume_ml,
                    row.n, row.contrast_sd, row.contrast_sd_min, 100 * row.visible, row.real_contrast_sd)
        if row.visible < 1.0:
            logger.warning("study_3d.plan[%d] (%s): %d of %d lesions drawn below the visible contrast %.2f sd "
                           "(study_3d.evaluation.control.visible_contrast_sd; mean %.2f, real lesions %.2f).",
                           row.plan_row, row.requested, round((1 - row.visible) * row.n), row.n,
                           visible_contrast_sd, row.contrast_sd, row.real_contrast_sd)
    visible = by_size[by_size["visible"] >= 1.0]
    out["control_min_visible_volume_ml"] = (float(visible["placed_volume_ml"].min()) if len(visible)
                                            else float("nan"))
    return out


def _one_crop_per_item(volumes: Mapping[str, np.ndarray], manifest: pd.DataFrame,
                       splits: tuple[str, ...] | str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One sub-volume per item of ``splits``: the one with the most lesion voxels, the brain crop on a tie
    (a lesion crop repeats lesions its item's brain crop holds: the same lesion would count twice).
    Returns the arrays and their volume store rows."""
    rows = _rows(manifest, splits).copy()
    rows["lesion_count"] = [int(np.count_nonzero(volumes["lesion_masks"][int(i)])) for i in rows["index"]]
    rows["not_brain"] = rows["crop"] != "brain"
    chosen = rows.sort_values(["item_id", "lesion_count", "not_brain", "index"], ascending=[True, False, True, True])
    index = chosen.drop_duplicates("item_id")["index"].to_numpy()
    return _arrays(volumes, index), index


def score_utility(volumes: Mapping[str, np.ndarray], volume_manifest: pd.DataFrame,
                  samples: Mapping[str, np.ndarray], provenance: pd.DataFrame, segmenter: vm.LesionSegmenter,
                  params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Dice on real held-out volumes of lesion segmenters trained on real vs real + lesion-control volumes
    (the lesion-control segmenter is the real-only one of its seed: same data, same configuration)."""
    config = _config(params)
    volume_manifest = _selected(volumes, volume_manifest, config)
    evaluation = _evaluation(config)
    utility = from_params(UtilityConfig3D, evaluation.utility, "study_3d.evaluation.utility")
    if not utility.enabled:
        return pd.DataFrame(columns=["mode", "seed", "train_volumes", "test_volumes", "dice"]), {}
    seg_config = from_params(vm.SegmenterConfig, evaluation.segmenter, "study_3d.evaluation.segmenter")
    fid = from_params(FidConfig, evaluation.fid, "study_3d.evaluation.fid")
    reference = _arrays(volumes, _rows(volume_manifest, config.reference_split)["index"].to_numpy())
    test_index = _rows(volume_manifest, utility.test_split)["index"].to_numpy()
    test = _arrays(volumes, test_index)
    rows = provenance.index[(provenance["kind"] == LESION) & (provenance["split"] != utility.test_split)].to_numpy()
    if not len(rows):
        raise ValueError(f"No lesion-control volume was drawn outside study_3d.evaluation.utility.test_split "
                         f"{utility.test_split!r}; add plan rows or choose another test split.")
    synthetic = (np.asarray(samples["images"])[rows], np.asarray(samples["lesion_masks"])[rows])
    runs, summary = vm.segmentation_utility((reference["images"], reference["lesion_masks"]), synthetic,
                                            (test["images"], test["lesion_masks"]), seg_config, utility.seeds,
                                            resamples=fid.resamples, level=fid.level,
                                            trained={seg_config.seed: segmenter},
                                            test_groups=_patients(volume_manifest, test_index))
    logger.info("study_3d utility: Dice real %.3f, real + synthetic %.3f, difference %.3f [%.3f, %.3f]",
                summary["utility_dice_real"], summary["utility_dice_real_synthetic"],
                summary["utility_dice_difference"], summary["utility_dice_difference_low"],
                summary["utility_dice_difference_high"])
    return runs, summary


def run_volume_gate(volumes: Mapping[str, np.ndarray], volume_manifest: pd.DataFrame,
                    samples: Mapping[str, np.ndarray], params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Nearest training volume of every synthetic, held-out and planted volume; threshold from the held-out ones."""
    config = _config(params)
    volume_manifest = _selected(volumes, volume_manifest, config)
    gate = from_params(VolumeGateConfig, _evaluation(config).memorisation, "study_3d.evaluation.memorisation")
    reference, held_out = _real_sets(volumes, volume_manifest, config)
    planted, planted_from = vm.plant_volume_copies(reference["images"], gate.planted, noise_std=gate.noise_std,
                                                   seed=gate.seed)
    parts = []
    for kind, queries in (("held_out", held_out["images"]), ("synthetic", np.asarray(samples["images"])),
                          ("planted", planted)):
        table = vm.volume_nearest(queries, reference["images"])
        parts.append(table.assign(kind=kind, query=np.arange(len(table))))
    table = pd.concat(parts, ignore_index=True)
    threshold = calibrate_threshold(table.loc[table["kind"] == "held_out", "similarity"].to_numpy(), gate.percentile)
    table["flagged"] = table["similarity"] >= threshold
    planted_rows = table[table["kind"] == "planted"]
    table.loc[planted_rows.index, "planted_from"] = planted_from
    recall = float(planted_rows["flagged"].mean())
    out = {"gate_threshold": threshold, "gate_self_test_recall": recall,
           "gate_fraction_flagged": float(table.loc[table["kind"] == "synthetic", "flagged"].mean()),
           "gate_held_out_n": float((table["kind"] == "held_out").sum()),
           "gate_blind": float(recall < gate.min_self_test_recall)}
    logger.info("study_3d gate: threshold %.4f (held-out NCC, %g-th percentile), %.2f of synthetic volumes flagged, "
                "self-test recall %.2f", threshold, gate.percentile, out["gate_fraction_flagged"], recall)
    return table, out


def build_reader_kit(volumes: Mapping[str, np.ndarray], volume_manifest: pd.DataFrame,
                     samples: Mapping[str, np.ndarray], provenance: pd.DataFrame,
                     params: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """The blinded reader kit of volumes (`synthmed.metrics.volume_reader`) and its answer key.

    Real: held-out sub-volumes of ``reader_kit.real_splits`` and ``real_crop`` with a lesion.
    Synthetic: the plan rows of ``synthetic_kinds`` with a lesion in their label map, without those
    drawn from a patient whose real volumes are candidates (``distinct_patients``). The key adds,
    per image, the volume's store row (``volume_index``: the volume store for real, the samples
    for synthetic), its patient and split and the centre voxel the views go through.
    """
    config = _config(params)
    reader = from_params(VolumeReaderKitConfig, _evaluation(config).reader_kit, "study_3d.evaluation.reader_kit")
    if not reader.enabled:
        return {}, pd.DataFrame(columns=["image_id", "truth", "label", "source_index"])
    volume_manifest = _selected(volumes, volume_manifest, config)
    real_rows = _rows(volume_manifest, reader.real_splits, reader.real_crop or None)
    real = _arrays(volumes, real_rows["index"].to_numpy())
    with_lesion = real["lesion_masks"].reshape(len(real_rows), -1).any(axis=1)
    real_rows, real = real_rows[with_lesion], {k: v[with_lesion] for k, v in real.items()}
    patient = volume_manifest.set_index("index")["patient_key"]
    synthetic_rows = provenance[provenance["kind"].isin(reader.synthetic_kinds)]
    synthetic_masks = np.asarray(samples["lesion_masks"])[synthetic_rows["index"].to_numpy()]
    keep = synthetic_masks.reshape(len(synthetic_rows), -1).any(axis=1)
    if reader.distinct_patients:
        shown = set(patient.loc[real_rows["index"]])
        keep &= ~patient.loc[synthetic_rows["source_index"]].isin(shown).to_numpy()
    synthetic_rows = synthetic_rows[keep]
    if real_rows.empty or synthetic_rows.empty:
        raise ValueError(
            f"study_3d.evaluation.reader_kit: {len(real_rows)} real volume(s) with a lesion in "
            f"{list(reader.real_splits)} (crop {reader.real_crop or 'any'!r}) and {len(synthetic_rows)} synthetic "
            f"volume(s) of kinds {list(reader.synthetic_kinds)} with a lesion"
            f"{' from other patients' if reader.distinct_patients else ''}; the kit needs both. Widen real_splits "
            "or real_crop, add plan rows, or set enabled: false.")
    index = synthetic_rows["index"].to_numpy()
    kit, key = build_volume_reader_kit(
        real["images"], real["lesion_masks"], np.asarray(samples["images"])[index],
        np.asarray(samples["lesion_masks"])[index], per_source=reader.per_source, display_px=reader.display_px,
        seed=reader.seed, title=reader.title, margin=reader.margin, marks=reader.marks)
    rows = {"real": real_rows.reset_index(drop=True), "synthetic": synthetic_rows.reset_index(drop=True)}
    picked = [rows[truth].iloc[int(k)] for truth, k in zip(key["truth"], key["source_index"], strict=True)]
    key = key.assign(
        volume_index=[int(r["index"]) for r in picked],
        kind=[str(r["kind"]) if truth == "synthetic" else "real" for truth, r in zip(key["truth"], picked)],
        patient_key=[patient.loc[int(r["index"] if truth == "real" else r["source_index"])]
                     for truth, r in zip(key["truth"], picked)],
        split=[str(r["split"]) for r in picked])
    logger.info("study_3d reader kit: %d sheets (%d real of %d candidates, %d synthetic of %d)", len(key),
                int((key["truth"] == "real").sum()), len(real_rows), int((key["truth"] == "synthetic").sum()),
                len(synthetic_rows))
    return kit, key


# ----------------------------------------------------------------------------- report


def _gate_figure(table: pd.DataFrame, threshold: float) -> Figure:
    figure = Figure(figsize=(6.0, 3.0), layout="constrained")
    ax = figure.subplots()
    bins = np.linspace(min(float(table["similarity"].min()), threshold) - 0.01, 1.0, 40)
    for kind, colour in (("held_out", "tab:blue"), ("synthetic", "tab:orange"), ("planted", "tab:red")):
        values = table.loc[table["kind"] == kind, "similarity"]
        ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{kind} (n = {len(values)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4f}")
    ax.set_xlabel("NCC with the nearest training volume")
    ax.set_ylabel("volumes")
    ax.legend(fontsize=7)
    ax.set_title("Memorisation gate on volumes", fontsize=9)
    return figure


def view_rows(provenance: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most ``n`` lesion rows of the provenance for the views: each plan row's first volume, then
    each one's second, and so on, so that the figure shows every size and place the plan asked for."""
    lesion = provenance[provenance["kind"] == LESION]
    turn = lesion.groupby("plan_row", sort=False).cumcount()
    return lesion.assign(_turn=turn.to_numpy()).sort_values(["_turn", "plan_row"], kind="stable").head(n) \
        .drop(columns="_turn")


def _views(samples: Mapping[str, np.ndarray], provenance: pd.DataFrame, volumes: Mapping[str, np.ndarray],
           n: int) -> Figure:
    rows = []
    for row in view_rows(provenance, n).itertuples():
        real = np.asarray(volumes["images"][int(row.source_index)])
        centre = (row.placed_centre_d, row.placed_centre_h, row.placed_centre_w)
        caption = (f"#{row.index} {row.requested_location}\n"
                   f"{row.placed_volume_ml:.2f} mL at {' '.join(str(int(v)) for v in centre)}")
        rows.append((caption, real, samples["images"][int(row.index)], samples["lesion_masks"][int(row.index)],
                     centre))
    for row in provenance[provenance["kind"] == PAIRED].head(max(n - len(rows), 2)).itertuples():
        mask = np.asarray(samples["lesion_masks"][int(row.index)])
        centre = (np.argwhere(mask[0]).mean(0).round().astype(int) if mask.any()
                  else np.array(mask.shape[-3:]) // 2)
        rows.append((f"#{row.index} paired ({row.crop})", samples["real"][int(row.index)],
                     samples["images"][int(row.index)], mask if mask.any() else None, tuple(centre)))
    return vm.orthogonal_views(rows, title="Real (held-out patient, left) and synthetic (right), through the lesion; "
                                           "red: the lesion of the label map (outline on real, margin ticks on "
                                           "synthetic)")


def write_study_report(volumes: Mapping[str, np.ndarray], volume_manifest: pd.DataFrame,
                       samples: Mapping[str, np.ndarray], provenance: pd.DataFrame, fidelity: dict[str, float],
                       control_table: pd.DataFrame, control: dict[str, float], gate_table: pd.DataFrame,
                       gate: dict[str, float], utility_runs: pd.DataFrame, utility: dict[str, float],
                       params: dict[str, Any]) -> tuple[dict[str, float], str, Figure, Figure]:
    """The study's metrics (JSON + MLflow), its HTML page, the orthogonal views and the gate figure."""
    config = _config(params)
    volume_manifest = _selected(volumes, volume_manifest, config)
    evaluation = _evaluation(config)
    fid = from_params(FidConfig, evaluation.fid, "study_3d.evaluation.fid")
    gate_config = from_params(VolumeGateConfig, evaluation.memorisation, "study_3d.evaluation.memorisation")
    metrics = {k: float(v) for k, v in {**fidelity, **control, **gate, **utility}.items()}
    metrics |= {"n_paired": float((provenance["kind"] == PAIRED).sum()),
                "n_lesion": float((provenance["kind"] == LESION).sum()),
                "n_reference": float((volume_manifest["split"] == config.reference_split).sum())}
    views = _views(samples, provenance, volumes, evaluation.views)
    gate_figure = _gate_figure(gate_table, gate["gate_threshold"])
    columns = ["index", "requested_radius_mm", "requested_volume_ml", "requested_location", "within",
               "placed_volume_ml", "placed_centre_d", "placed_centre_h", "placed_centre_w", "realised_found",
               "realised_volume_ml", "volume_error_ml", "centre_error_mm", "lesion_contrast_sd", "real_contrast_sd"]
    shown = control_table[[c for c in columns if c in control_table]] if len(control_table) else control_table
    control = from_params(vm.IntensityControlConfig, evaluation.control, "study_3d.evaluation.control")
    visibility = (vm.visibility_by_size(control_table, control.visible_contrast_sd)
                  if "lesion_contrast_sd" in control_table else pd.DataFrame())
    html = render("study_3d_report.html.j2", config=config, metrics=metrics, level_pct=round(100 * fid.level),
                  number=report_format.number, control_table=report_format.html_table(shown.round(3)),
                  visibility_table=report_format.html_table(visibility.round(3)) if len(visibility) else "",
                  control=control,
                  views=figure_png64(views, dpi=100), gate_png=figure_png64(gate_figure, dpi=100),
                  planes=vm.PLANES, gate_percentile=gate_config.percentile,
                  utility_table=report_format.html_table(utility_runs.round(4)) if len(utility_runs) else "")
    return metrics, html, views, gate_figure


