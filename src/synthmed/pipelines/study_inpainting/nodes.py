"""Nodes of the ``study_inpainting`` pipeline: parse ``params:study_inpainting``, call the library, return.

See ``synthmed.protocols.inpainting`` for the protocol: the cohort's slices and label maps at
the study's size, an inpainting ``ddpm`` and a 2-channel ``pix2pix`` trained with synthmed's
trainer on the training patients, the three cases filled by each method (and the
neighbouring slice) on held-out patients, FID per structure with its floor and intervals.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.generators.base import Conditions, SamplerSpec
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.run import RunConfig, checkpoint_folder
from synthmed.generators.sampling import PLAN_COLUMNS, generate_from_plan
from synthmed.generators.tracking import active_tracker
from synthmed.generators.training import ArrayBatches, TrainingConfig, reproducible_history, train
from synthmed.protocols import inpainting as ip
from synthmed.protocols.studies import figure_png64, render_study_page, render_study_section, study_table

logger = logging.getLogger(__name__)

WHERE = "study_inpainting"
DIFFUSION, PIX2PIX = "ddpm", "pix2pix"


def _config(params: dict[str, Any]) -> ip.InpaintingConfig:
    return from_params(ip.InpaintingConfig, params, WHERE)


def _model_config(family: str, block: dict[str, Any], config: ip.InpaintingConfig, key: str):
    model_config = config_from_params(family, dict(block))
    if model_config.image_size != config.image_size:
        raise ValueError(f"{WHERE}.{key}.image_size={model_config.image_size} differs from {WHERE}.image_size="
                         f"{config.image_size}: the models work on the study's slices; set both alike.")
    return model_config


def _digest(*arrays: np.ndarray) -> list[str]:
    return [sha256_bytes(np.ascontiguousarray(a).tobytes()) for a in arrays]


def prepare_inpainting_slices(slices: dict[str, np.ndarray], slice_manifest: pd.DataFrame, params: dict[str, Any]
                              ) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The slices at the study's size with their label maps, neighbours and split, and the evaluation's cases.

    Returns:
        ``({"images" (N, 1, S, S) float32 in [-1, 1], "label_maps" (N, 1, S, S) uint8, "labels" (N,) int64,
        "neighbour" (N,) int64 (-1: none), "split" (N,) str}, cases)`` (``protocols.inpainting.plan_cases``).
    """
    config = _config(params)
    manifest = slice_manifest.sort_values("index").reset_index(drop=True)
    if not np.array_equal(manifest["index"].to_numpy(), np.arange(len(slices["images"]))):
        raise ValueError(f"The slice manifest's index column does not number the {len(slices['images'])} stored "
                         "slices 0..N-1: re-run extraction.")
    patients = manifest.groupby("patient_key")["split"].nunique()
    if (patients > 1).any():
        raise ValueError(f"Patients in more than one split: {list(patients[patients > 1].index)[:5]}; the study "
                         "needs preprocessing's split by patient (preprocessing.split.strategy: group).")
    arrays = ip.working_arrays(np.asarray(slices["images"]), np.asarray(slices["masks"]), config.image_size)
    if not np.isin(np.unique(arrays["label_maps"]), list(ip.LABEL_NAMES)).all():
        raise ValueError(f"The slices' masks hold values {np.unique(arrays['label_maps']).tolist()}, not the "
                         f"cohort's label map {ip.LABEL_NAMES}: run the study on the cohort's slices (conf/base; not "
                         "conf/template).")
    arrays |= {"labels": np.asarray(slices["labels"], dtype=np.int64),
               "neighbour": ip.neighbour_rows(manifest, config.evaluation.max_neighbour_gap),
               "split": manifest["split"].astype(str).to_numpy()}
    cases = ip.plan_cases(arrays, manifest, arrays["neighbour"], config)
    return arrays, cases


def train_inpainting_diffusion(arrays: dict[str, np.ndarray], params: dict[str, Any]):
    """The inpainting ``ddpm`` (``conditioning: [inpaint]``) trained on the training patients' slices; its
    holes: the trainer's random rectangles or a structure mask of the slice (``training_rows``)."""
    config = _config(params)
    model_config = _model_config(DIFFUSION, config.diffusion_model, config, "diffusion_model")
    if "inpaint" not in model_config.conditioning:
        raise ValueError(f"{WHERE}.diffusion_model.conditioning must include inpaint, got "
                         f"{list(model_config.conditioning)}.")
    training = from_params(TrainingConfig, config.diffusion_training, f"{WHERE}.diffusion_training")
    rows, masks = _training_rows(arrays, config)
    store = {"images": arrays["images"][rows], "labels": np.zeros(len(rows), np.int64), "masks": masks}
    run = RunConfig(source="slices", split=config.train_split, checkpoint_root=config.checkpoint_root)
    run_dir = checkpoint_folder(run, f"{WHERE}-{DIFFUSION}", model_config, training,
                                _digest(store["images"], masks))
    logger.info("study_inpainting: training the inpainting ddpm on %d rows of %d %s slices (%d px); checkpoints in %s",
                len(rows), len(np.unique(rows)), config.train_split, config.image_size, run_dir)
    models, history = train(get_family(DIFFUSION), model_config, training, ArrayBatches(store, np.arange(len(rows))),
                            run_dir, tracker=active_tracker(f"{WHERE}.diffusion"))
    return models, pd.DataFrame(reproducible_history(history))


def _training_rows(arrays: dict[str, np.ndarray], config: ip.InpaintingConfig) -> tuple[np.ndarray, np.ndarray]:
    train_indices = np.flatnonzero(arrays["split"] == config.train_split)
    if len(train_indices) == 0:
        raise ValueError(f"No slice in the {WHERE}.train_split {config.train_split!r}.")
    return ip.training_rows(arrays["label_maps"], train_indices, config.evaluation.structures, config.variants,
                            config.evaluation.min_structure_px, config.seed)


def train_inpainting_pix2pix(arrays: dict[str, np.ndarray], params: dict[str, Any]):
    """Pix2Pix from (masked slice, keep mask) to the whole slice, on the diffusion model's training rows with
    one hole per row drawn by the ddpm family's ``random_keep`` (same hole distribution)."""
    from synthmed.generators.ddpm import random_keep

    config = _config(params)
    model_config = _model_config(PIX2PIX, config.pix2pix_model, config, "pix2pix_model")
    if model_config.mask_channels != 2 or model_config.channels != 1:
        raise ValueError(f"{WHERE}.pix2pix_model needs mask_channels 2 (masked slice, keep mask) and channels 1, got "
                         f"{model_config.mask_channels} and {model_config.channels}.")
    diffusion_config = _model_config(DIFFUSION, config.diffusion_model, config, "diffusion_model")
    training = from_params(TrainingConfig, config.pix2pix_training, f"{WHERE}.pix2pix_training")
    rows, masks = _training_rows(arrays, config)
    images = arrays["images"][rows]
    generator = torch.Generator().manual_seed(config.seed)
    keep = random_keep({"images": torch.from_numpy(images), "masks": torch.from_numpy(masks.astype(np.float32))},
                       diffusion_config, generator).numpy()
    conditions = ip.pix2pix_condition(images, keep)
    run = RunConfig(source="slices", split=config.train_split, checkpoint_root=config.checkpoint_root)
    run_dir = checkpoint_folder(run, f"{WHERE}-{PIX2PIX}", model_config, training, _digest(images, conditions))
    logger.info("study_inpainting: training the inpainting pix2pix on %d rows (%d px); checkpoints in %s", len(rows),
                config.image_size, run_dir)
    models, history = train(get_family(PIX2PIX), model_config, training, ip.ConditionBatches(images, conditions),
                            run_dir, tracker=active_tracker(f"{WHERE}.pix2pix"))
    return models, pd.DataFrame(reproducible_history(history))


def inpaint_held_out(arrays: dict[str, np.ndarray], cases: pd.DataFrame, diffusion, pix2pix,
                     params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every case row of half ``a`` filled by each method (rows of half ``b`` stay the real slice).

    Returns:
        ``{"keep", "context", "real", "pix2pix", "diffusion", "neighbour"}``, each ``(R, 1, S, S)`` in case
        order: ``context`` is the slice given (the host for ``new_lesion``), ``real`` the slice itself
        (the host, without lesion, for ``new_lesion``).
    """
    config = _config(params)
    evaluation = config.evaluation
    images, label_maps = arrays["images"], arrays["label_maps"]
    keep = ip.keep_masks(cases, label_maps, config.image_size)
    real = images[cases["index"].to_numpy()]
    fills = {"keep": keep, "context": real, "real": real}
    inpainted = (cases["half"] == "a").to_numpy()
    fills["neighbour"] = np.where(inpainted[:, None, None, None],
                                  ip.composite(real, images[arrays["neighbour"][cases["index"].to_numpy()]], keep),
                                  real)
    # Pix2Pix: one generator pass per batch of condition images, test-time dropout from the seed.
    spec, model_config = get_family(PIX2PIX), _model_config(PIX2PIX, config.pix2pix_model, config, "pix2pix_model")
    condition = ip.pix2pix_condition(real, keep)
    generator = torch.Generator().manual_seed(evaluation.sample_seed)
    out = []
    for start in range(0, len(real), evaluation.batch_size):
        part = torch.from_numpy(condition[start : start + evaluation.batch_size])
        out.append(spec.sample(pix2pix, model_config, Conditions(n=len(part), masks=part), SamplerSpec(name="ddim",
                                                                                                        steps=1),
                               generator).numpy())
    fills["pix2pix"] = np.where(inpainted[:, None, None, None], ip.composite(real, np.concatenate(out), keep), real)
    # Diffusion: synthmed's sampler, one `condition: inpaint` plan row per (case, structure).
    diffusion_images = real.copy()
    spec, model_config = get_family(DIFFUSION), _model_config(DIFFUSION, config.diffusion_model, config,
                                                              "diffusion_model")
    sampler = from_params(SamplerSpec, evaluation.sampler, f"{WHERE}.evaluation.sampler")
    for positions, group_real, case in ip.sampler_groups(cases, images, label_maps):
        plan = pd.DataFrame([{"condition": "inpaint", "label": "", "count": len(positions), "case": case}],
                            columns=PLAN_COLUMNS)
        sampled = generate_from_plan(spec, model_config, diffusion, plan, [], sampler, seed=evaluation.sample_seed,
                                     batch_size=evaluation.batch_size, checkpoint=WHERE, real=group_real,
                                     real_indices=np.arange(len(group_real["images"])))
        diffusion_images[positions] = sampled.images
    fills["diffusion"] = diffusion_images
    return fills


def _features(fills: dict[str, np.ndarray], arrays: dict[str, np.ndarray], config: ip.InpaintingConfig):
    """The domain encoder (normal vs lesion, training patients' slices) and each fill's features."""
    from synthmed.metrics.features import ClassifierConfig, FitConfig, domain_network, fit_classifier

    evaluation = config.evaluation
    train_indices = np.flatnonzero(arrays["split"] == config.train_split)
    labels = arrays["labels"][train_indices]
    classes = int(arrays["labels"].max()) + 1
    encoder_config = from_params(ClassifierConfig, {"channels": 1, "num_classes": max(classes, 2),
                                                    "image_px": config.image_size, **evaluation.encoder},
                                 f"{WHERE}.evaluation.encoder")
    fit = from_params(FitConfig, evaluation.encoder_fit, f"{WHERE}.evaluation.encoder_fit")
    encoder = fit_classifier(torch.from_numpy(arrays["images"][train_indices]), torch.from_numpy(labels),
                             encoder_config, fit, seed=evaluation.encoder_seed, flips=True,
                             description="inpainting FID encoder")
    network = domain_network(encoder, batch_size=256, device=fit.device)

    def view(images: np.ndarray) -> np.ndarray:
        return ip.region_crops(images, fills["keep"], evaluation.crop_margin_px) if evaluation.fid_view == "crop" \
            else images

    features = {name: network(torch.from_numpy(view(fills[name]))) for name in ("real", *ip.METHODS)}
    return features, network.name


def evaluate_inpainting(arrays: dict[str, np.ndarray], cases: pd.DataFrame, fills: dict[str, np.ndarray],
                        params: dict[str, Any]) -> tuple[pd.DataFrame, str, Figure, Figure, Figure, dict[str, float]]:
    """FID per structure beside the published figure, the report page, a grid per case, the metrics."""

    config = _config(params)
    evaluation = config.evaluation
    features, encoder_name = _features(fills, arrays, config)
    n_train = int((arrays["split"] == config.train_split).sum())
    source = (f"held-out patients ({', '.join(evaluation.held_out_splits)}), {config.image_size} px, FID of the "
              f"{evaluation.fid_view}, {encoder_name}")
    rows = ip.structure_rows(features, cases, evaluation, source)
    if not rows:
        raise ValueError(f"No structure of {list(evaluation.structures)} has >= 4 held-out slices with "
                         f">= {evaluation.min_structure_px} pixels: nothing to score.")
    parts = [study_table([row], [], ip.METRICS, level=evaluation.level) for row in rows]
    parts.append(study_table([], ip.published_rows(config.published), ip.METRICS, level=evaluation.level)
                 if config.published else None)
    table = pd.concat([p for p in parts if p is not None], ignore_index=True)
    metrics = _metrics(rows, cases, fills, features, evaluation)
    metrics |= {"n_train_slices": float(n_train)}
    figures, pngs = {}, []
    for case in ip.CASES:
        figure = _grid(case, cases, fills, evaluation)
        figures[case] = figure
        if (cases["case"] == case).any():
            pngs.append((f"{case}: context (region in red) | real | Pix2Pix | diffusion | neighbouring slice",
                         figure_png64(figure)))
    section = render_study_section(
        title="Inpainting: Pix2Pix, diffusion and the neighbouring slice, FID per structure",
        anchor="study-inpainting", table=table, metrics=ip.METRICS, metric_labels=ip.METRIC_LABELS,
        digits={m: 4 for m in ip.METRICS}, figures=pngs, notes=_notes(config, metrics, encoder_name, n_train))
    logger.info("Inpainting study: %s", {r.label: {m: round(r.summaries[m]["mean"], 2) for m in ip.METRICS}
                                        for r in rows})
    return (table, render_study_page(title="synthmed study: inpainting", sections=[section]),
            figures["inside_mask"], figures["outside_box"], figures["new_lesion"], metrics)


def _metrics(rows, cases: pd.DataFrame, fills: dict[str, np.ndarray], features, evaluation) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for row in rows:
        key = row.label.replace(" ", "_")
        for m in (*ip.METRICS, ip.DIFFERENCE_KEY):
            for part in ("mean", "low", "high", "n", "patients"):
                if part in row.summaries.get(m, {}):
                    metrics[f"{key}.{m}.fid.{part}"] = float(row.summaries[m][part])
    keep, real = fills["keep"], fills["real"]
    scored = (cases["half"] == "a").to_numpy()
    for (case, structure), group in cases[scored].groupby(["case", "structure"], sort=False):
        at = group.index.to_numpy()
        key = f"{case}.{structure}" if structure and case != "new_lesion" else case
        for m in ip.METHODS:
            if case != "new_lesion":
                metrics[f"{key}.{m}.region_mse"] = float(ip.region_mse(fills[m][at], real[at], keep[at]).mean())
            metrics[f"{key}.{m}.region_mean"] = float(ip.region_means(fills[m][at], keep[at]).mean())
        metrics[f"{key}.real.region_mean"] = float(ip.region_means(real[at], keep[at]).mean())
        metrics[f"{key}.n"] = float(len(at))
    box = cases[(cases["case"] == "outside_box")]
    if len(box):
        a = torch.as_tensor(np.array(box.index[box["half"] == "a"]))
        b = torch.as_tensor(np.array(box.index[box["half"] == "b"]))
        for m, summary in ip.half_summaries(features, cases, a, b, evaluation).items():
            metrics |= {f"outside_box.{m}.fid.{p}": float(v) for p, v in summary.items()}
    lesions = cases[(cases["case"] == "inside_mask") & (cases["structure"] == "lesion") & (cases["half"] == "a")]
    if len(lesions):  # real lesions' mean intensity, for the new lesions' region means
        at = lesions.index.to_numpy()
        metrics["new_lesion.real_lesions.region_mean"] = float(ip.region_means(real[at], keep[at]).mean())
    return metrics


def _grid(case: str, cases: pd.DataFrame, fills: dict[str, np.ndarray], evaluation) -> Figure:
    """The case's figure; a figure saying so when the case has no example (e.g. no held-out lesion)."""
    chosen = cases[(cases["case"] == case) & (cases["half"] == "a")]
    if chosen.empty:
        figure = Figure(figsize=(4.0, 1.0))
        figure.text(0.5, 0.5, f"{case}: no example in the held-out slices", ha="center", va="center", fontsize=9)
        return figure
    if case == "inside_mask":  # alternate the structures
        chosen = chosen.assign(_k=chosen.groupby("structure").cumcount()).sort_values(["_k", "structure"],
                                                                                        kind="stable")
    at = chosen.index.to_numpy()[: evaluation.grid_examples]
    labels = [f"{r.structure or 'box'} #{r.index}" for r in cases.loc[at].itertuples()]
    columns = {"real" if case != "new_lesion" else "host (real)": fills["real"][at],
               "Pix2Pix": fills["pix2pix"][at], "diffusion": fills["diffusion"][at],
               "neighbour": fills["neighbour"][at]}
    return ip.case_grid(fills["context"][at], fills["keep"][at], columns, labels, len(at), case.replace("_", " "))


def _notes(config: ip.InpaintingConfig, metrics: dict[str, float], encoder_name: str, n_train: int) -> list[str]:
    evaluation = config.evaluation
    notes = [
        f"Per structure: the held-out slices (patients of {', '.join(evaluation.held_out_splits)}; the split is by "
        f"patient) where it covers >= {evaluation.min_structure_px} pixels at {config.image_size} px and that have a "
        f"neighbouring slice, at most {evaluation.max_slices}, split into two disjoint halves A and B of different "
        "patients. Each method regenerates the structure in the slices of A (known pixels kept); FID compares them "
        "with their own originals (A), as the published figure appears to; the floor is FID between the real "
        "halves A and B (two different real sets of the same N, from different patients).",
        f"Features: {encoder_name}, a ConvClassifier (normal vs lesion) trained on the {n_train} slices of the "
        f"training patients ({config.train_split}), as the evaluation pipeline's default; FID of the "
        f"{evaluation.fid_view}. Intervals: {evaluation.resamples} percentile-bootstrap resamples, level "
        f"{evaluation.level}, each drawing the patients of A (and of B) whole, with all their slices (a slice's "
        "neighbours are not independent of it); a method's fills are drawn with their own originals (the same "
        "patients on both sides: they are pairs); a resample repeats slices, which raises FID, so at this N the "
        "floor's interval can lie above its "
        "estimate (synthmed.metrics.fidelity.bootstrap_interval): it shows the spread, and overlapping intervals "
        "mean the difference is not resolved. FID depends on the feature space's scale: compare a row with its "
        "floor, not with the published (Inception) values.",
        f"Diffusion: ddpm with conditioning {list(config.diffusion_model.get('conditioning', []))}, "
        f"{config.diffusion_training.get('steps')} steps, sampled with {dict(evaluation.sampler)} (known pixels "
        f"pasted at every step). Pix2Pix: mask_channels 2 (masked slice, keep mask), "
        f"{config.pix2pix_training.get('steps')} steps. Neighbouring slice: the nearest extracted slice of the same "
        f"volume (at most {evaluation.max_neighbour_gap} positions away).",
        "The published figure was measured on other data (CT: kidneys, lungs, liver, tumour) with another feature "
        "network at another size; its source paper was not confirmed (cited as given in the issue).",
    ]
    differences = [(key.split(".")[0], metrics[f"{key}.mean"], metrics[f"{key}.low"], metrics[f"{key}.high"])
                   for key in (k.removesuffix(".mean") for k in metrics
                               if k.endswith(f".{ip.DIFFERENCE_KEY}.fid.mean"))]
    if differences:
        notes.append(f"{ip.DIFFERENCE[0].capitalize()} minus {ip.DIFFERENCE[1]} (FID, the same resampled patients "
                     "for both, so this decides which method is closer where the two columns' intervals overlap; "
                     "below 0 with its whole interval: diffusion closer): "
                     + "; ".join(f"{where.replace('_', ' ')} {mean:.2g} [{low:.2g}, {high:.2g}]"
                                 for where, mean, low, high in differences) + ".")
    if "new_lesion.n" in metrics:
        notes.append("New lesion: mean intensity inside the placed lesion mask: "
                     + ", ".join(f"{m} {metrics[f'new_lesion.{m}.region_mean']:.2f}" for m in ip.METHODS)
                     + f"; the host's own pixels there {metrics['new_lesion.real.region_mean']:.2f}"
                     + (f"; real held-out lesions {metrics['new_lesion.real_lesions.region_mean']:.2f}"
                        if "new_lesion.real_lesions.region_mean" in metrics else "") + " (images in [-1, 1]).")
    return notes
