"""Nodes of the ``study_lesion_patches`` pipeline: parse ``params:study_lesion_patches``, call the library, return.

The study (issue 10, "DCGAN lesion patches"): the extraction's lesion-centred and normal patches
(cut inside each patient's split), the demo's class-conditional DCGAN trained on their training
split by the training pipeline, FID with its real-vs-real floor beside the
published figure, a t-SNE of real and synthetic features, and the downstream lesion classifier
in four modes; see ``synthmed.protocols.lesion_patches`` for the protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from synthmed.core.config import from_params
from synthmed.generators.base import SamplerSpec, TrainedGenerator
from synthmed.generators.registry import get_family
from synthmed.generators.sampling import PLAN_COLUMNS, generate_from_plan
from synthmed.imaging.lesion_patches import WHERE as EXTRACTION
from synthmed.imaging.lesion_patches import LesionPatchExtraction, check_patient_splits
from synthmed.protocols import lesion_patches as lp
from synthmed.protocols.studies import figure_png64, render_study_page, render_study_section, study_table

logger = logging.getLogger(__name__)

FAMILY = "dcgan"
WHERE = lp.WHERE


def _config(params: Mapping[str, Any]) -> lp.LesionPatchesConfig:
    return from_params(lp.LesionPatchesConfig, params, WHERE)


def _extraction(params: Mapping[str, Any]) -> LesionPatchExtraction:
    return from_params(LesionPatchExtraction, params, EXTRACTION)


def _rows(manifest: pd.DataFrame, splits: tuple[str, ...] | str) -> np.ndarray:
    wanted = (splits,) if isinstance(splits, str) else splits
    return manifest.loc[manifest["split"].isin(wanted), "index"].to_numpy(dtype=np.int64)


def _images(store: Mapping[str, np.ndarray], index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(store["images"][index], dtype=np.float32))


def _labels(store: Mapping[str, np.ndarray], index: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(store["labels"][index], dtype=np.int64))


# ----------------------------------------------------------------------------- generator


def _check_generator(generator: TrainedGenerator) -> None:
    """The study scores the demo's DCGAN on the patches it learnt: refuse any other model."""
    source = generator.card.get("source")
    if generator.family != FAMILY or source != "lesion_patches" or tuple(generator.class_names) != lp.CLASS_NAMES:
        raise ValueError(
            f"{WHERE} scores the {FAMILY} generator trained on the lesion patches (dcgan.run.source: lesion_patches, "
            f"classes {list(lp.CLASS_NAMES)}); got a {generator.family} generator trained on "
            f"{repr(source) if source else 'a source its folder does not record'} with classes "
            f"{list(generator.class_names)}. Set dcgan.run.source: lesion_patches and run kedro run --pipelines "
            "training."
        )


def sample_patches(generator: TrainedGenerator, patches: Mapping[str, np.ndarray], patch_manifest: pd.DataFrame,
                   params: dict[str, Any]) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """``synthetic_per_real`` synthetic patches per real training patch of each class, drawn from the
    demo's DCGAN (``dcgan.generator``, trained on these patches) with synthmed's sampler.

    Returns:
        ``({"images" (M, 1, P, P) float32 in [-1, 1], "labels" (M,) int64}, provenance)``.
    """
    config = _config(params)
    _check_generator(generator)
    size = int(np.asarray(patches["images"]).shape[-1])
    if generator.config.image_size != size:
        raise ValueError(f"{WHERE}: the dcgan draws {generator.config.image_size} px patches, but the lesion patches "
                         f"are {size} px; set dcgan.model.image_size = extraction.lesion_patches.patches.patch_px "
                         f"({size}) and run kedro run --pipelines training.")
    check_patient_splits(patch_manifest)
    evaluation = config.evaluation
    train_rows = patch_manifest[patch_manifest["split"] == "train"]
    counts = {name: int(round(evaluation.synthetic_per_real * (train_rows["label"] == name).sum()))
              for name in lp.CLASS_NAMES}
    plan = pd.DataFrame([{"condition": "class", "label": name, "count": count, "case": ""}
                         for name, count in counts.items() if count > 0], columns=PLAN_COLUMNS)
    if plan.empty:
        raise ValueError(f"{WHERE}: the training split has no patch to match; nothing to sample.")
    sampled = generate_from_plan(get_family(FAMILY), generator.config, generator.models, plan, list(lp.CLASS_NAMES),
                                 SamplerSpec(name="ddim", steps=1), seed=evaluation.sample_seed,
                                 batch_size=evaluation.batch_size, checkpoint=WHERE)
    logger.info("%s: sampled %s synthetic patches", WHERE, counts)
    return {"images": sampled.images.astype(np.float32), "labels": sampled.labels.astype(np.int64)}, \
        sampled.provenance


# ----------------------------------------------------------------------------- evaluation


def score_patch_fidelity(patches: Mapping[str, np.ndarray], patch_manifest: pd.DataFrame,
                         synthetic: Mapping[str, np.ndarray], params: dict[str, Any], extraction_params: dict[str, Any],
                         training_params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float], Figure, str]:
    """FID of the synthetic lesion patches against the real training ones, with the real-vs-real floor on
    the same N, beside the published figure; FID per class and overall in the metrics; the t-SNE figure.

    The feature space is a domain encoder (``synthmed.protocols.encoders``' small CNN) trained on the
    real training patches to tell lesion from normal. The same encoder gives the class fidelity
    (``lp.class_fidelity``) of the synthetic patches and of the held-out patients' real ones, in the
    metrics as ``class_fidelity.<synthetic|held_out>.<class>`` with ``_low`` / ``_high`` / ``_n``.
    """
    from synthmed.metrics import report_figures
    from synthmed.metrics.features import ClassifierConfig, FitConfig, domain_network, fit_classifier
    from synthmed.protocols.encoders import EncoderConfig, patient_keys
    from synthmed.protocols.evaluation import FidelityConfig, fid_intervals, fid_splits

    config = _config(params)
    sampling = _extraction(extraction_params).patches
    evaluation = config.evaluation
    encoder = from_params(EncoderConfig, evaluation.encoder, f"{WHERE}.evaluation.encoder")
    fit = from_params(FitConfig, encoder.fit or {}, f"{WHERE}.evaluation.encoder.fit")
    train_index = _rows(patch_manifest, "train")
    real, real_labels = _images(patches, train_index), _labels(patches, train_index)
    real_patients = patient_keys(patch_manifest, train_index)
    fake = torch.from_numpy(np.asarray(synthetic["images"], dtype=np.float32))
    fake_labels = torch.from_numpy(np.asarray(synthetic["labels"], dtype=np.int64))
    spec = ClassifierConfig(channels=1, num_classes=len(lp.CLASS_NAMES), image_px=sampling.patch_px,
                            width=encoder.width, feature_dim=encoder.feature_dim)
    model = fit_classifier(real, real_labels, spec, fit, seed=encoder.seed, flips=encoder.flips,
                           class_balanced=encoder.class_balance, description="lesion patch feature encoder")
    network = domain_network(model, device=fit.device)
    real_features, fake_features = network(real), network(fake)
    fidelity = FidelityConfig(resamples=evaluation.fid_resamples, level=evaluation.level, seed=evaluation.seed,
                              splits=evaluation.fid_splits)
    metrics: dict[str, float] = {}
    for name, real_rows, fake_rows in (("lesion", real_labels == lp.LESION, fake_labels == lp.LESION),
                                       ("normal", real_labels == lp.NORMAL, fake_labels == lp.NORMAL),
                                       ("all", torch.ones_like(real_labels, dtype=torch.bool),
                                        torch.ones_like(fake_labels, dtype=torch.bool))):
        if int(real_rows.sum()) < 8 or int(fake_rows.sum()) < 4:
            raise ValueError(f"{WHERE}: FID of the {name} patches needs >= 8 real training and >= 4 synthetic "
                             f"patches, got {int(real_rows.sum())} and {int(fake_rows.sum())}; cut more patches "
                             "(extraction.lesion_patches.patches: normal_per_lesion, slice_step) or sample more "
                             "(evaluation.synthetic_per_real).")
        sets = fid_splits(real_features[real_rows], fake_features[fake_rows], seed=evaluation.seed,
                          splits=evaluation.fid_splits, groups=real_patients[real_rows.numpy()])
        scores = fid_intervals(sets, fidelity)
        metrics |= {f"{name}.{key}": float(value) for key, value in scores.items()}
        logger.info("%s: FID %s patches %.2f [%.2f, %.2f] vs real-vs-real floor %.2f (n=%d)", WHERE, name,
                    scores["fid"], scores["fid_low"], scores["fid_high"], scores["fid_floor_halves"],
                    int(scores["fid_n"]))
    lesion = {key.removeprefix("lesion."): value for key, value in metrics.items() if key.startswith("lesion.")}
    source = (f"synthetic vs real training lesion patches, {sampling.patch_px} px at "
              f"{sampling.pixel_mm:g} mm, domain encoder ({encoder.feature_dim}-d) features; "
              f"the demo's dcgan, {training_params.get('steps')} steps")
    table = study_table(lp.fid_rows(lesion, model_source=source), lp.published_rows(config.published),
                        lp.FID_METRICS, level=evaluation.level)
    coordinates = report_figures.tsne_coordinates(real_features.numpy(), real_labels.numpy(), fake_features.numpy(),
                                                  fake_labels.numpy(), list(lp.CLASS_NAMES),
                                                  perplexity=evaluation.tsne_perplexity, seed=evaluation.seed)
    tsne = report_figures.tsne_figure(coordinates, list(lp.CLASS_NAMES),
                                      title="t-SNE of domain-encoder features: real training vs synthetic patches")
    metrics |= {"encoder.train_accuracy": float((model_accuracy(model, real, real_labels, fit.device))),
                "n_real_train": float(len(real)), "n_synthetic": float(len(fake))}
    held_out = _rows(patch_manifest, evaluation.test_splits)
    held_out_labels = _labels(patches, held_out)
    _check_held_out_lesions(held_out_labels, evaluation.test_splits)
    for kind, images, labels in (("synthetic", fake, fake_labels),
                                 ("held_out", _images(patches, held_out), held_out_labels)):
        shares = lp.class_fidelity(_predict(model, images, fit.device), labels.numpy(), evaluation.level)
        metrics |= {f"class_fidelity.{kind}.{key}": value for key, value in shares.items()}
    logger.info("%s: the encoder calls %.0f%% of the synthetic lesion patches lesion (held-out real: %.0f%%) and "
                "%.0f%% of the synthetic normal patches normal (held-out real: %.0f%%)", WHERE,
                *(100 * metrics[f"class_fidelity.{kind}.{name}"] for name in ("lesion", "normal")
                  for kind in ("synthetic", "held_out")))

    return table, metrics, tsne, figure_png64(tsne)


def _check_held_out_lesions(labels: torch.Tensor, test_splits: tuple[str, ...]) -> None:
    if not (labels == lp.LESION).any():
        raise ValueError(f"{WHERE}: no lesion patch in the test splits {list(test_splits)}; class fidelity and the "
                         "lesion F1 need held-out patients with lesions (preprocessing.split stratify: finding).")


def _predict(model, images: torch.Tensor, device: str) -> np.ndarray:
    from synthmed.metrics.features import predict_proba

    return predict_proba(model, images, device=device).argmax(1).numpy()


def model_accuracy(model, images: torch.Tensor, labels: torch.Tensor, device: str) -> float:
    return float((_predict(model, images, device) == labels.numpy()).mean())


def score_patch_utility(patches: Mapping[str, np.ndarray], patch_manifest: pd.DataFrame,
                  synthetic: Mapping[str, np.ndarray], params: dict[str, Any]
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The lesion classifier in four modes (real, real+flips, real+GAN, real+GAN+flips) over several seeds,
    tested on the held-out patients' real patches: the table, the per-seed runs, metrics."""
    from synthmed.metrics.utility import UtilityConfig, evaluate_utility
    from synthmed.protocols.encoders import patient_keys
    from synthmed.protocols.evaluation import mode_key

    config = _config(params)
    evaluation = config.evaluation
    utility = from_params(UtilityConfig, {"modes": list(lp.UTILITY_MODES), **evaluation.utility},
                          f"{WHERE}.evaluation.utility")
    unknown = sorted(set(utility.modes) - set(lp.UTILITY_MODES))
    if unknown:
        raise ValueError(f"{WHERE}.evaluation.utility.modes {unknown} are not modes of this study; expected a subset "
                         f"of {list(lp.UTILITY_MODES)}.")
    train_index, test_index = _rows(patch_manifest, "train"), _rows(patch_manifest, evaluation.test_splits)
    real = (_images(patches, train_index), _labels(patches, train_index))
    test = (_images(patches, test_index), _labels(patches, test_index))
    counts = np.bincount(real[1].numpy(), minlength=len(lp.CLASS_NAMES))
    if counts[lp.LESION] >= counts[lp.NORMAL]:
        # evaluate_utility bootstraps the F1 of the rarest training class: it must be the lesion class.
        raise ValueError(f"{WHERE}: the training split has {counts[lp.LESION]} lesion and {counts[lp.NORMAL]} "
                         "normal patches; the study scores the lesion class as the minority class, so set "
                         "extraction.lesion_patches.patches.normal_per_lesion above 1.")
    _check_held_out_lesions(test[1], evaluation.test_splits)
    fake = (torch.from_numpy(np.asarray(synthetic["images"], dtype=np.float32)),
            torch.from_numpy(np.asarray(synthetic["labels"], dtype=np.int64)))
    test_patients = patient_keys(patch_manifest, test_index)
    result = evaluate_utility(real, fake, test, list(lp.CLASS_NAMES), utility, seed=evaluation.seed,
                              test_groups=test_patients)
    n_train = {mode: len(real[0]) + (len(fake[0]) if "synthetic" in mode else 0) for mode in lp.UTILITY_MODES}
    table = study_table(lp.utility_rows(result.summary, result.runs, n_train=n_train), [], lp.UTILITY_METRICS,
                        level=utility.level)
    metrics: dict[str, float] = {"n_test": float(len(test[0])), "n_test_lesion": float((test[1] == lp.LESION).sum()),
                                 "n_test_patients": float(patch_manifest.loc[patch_manifest["split"].isin(
                                     evaluation.test_splits), "patient_key"].nunique())}
    for record in result.summary.to_dict("records"):
        key = f"{mode_key(lp.UTILITY_MODES[record['mode']])}.{record['score']}"  # MLflow names allow no "+"
        for part in ("mean", "std", "low", "high", "delta_vs_real", "delta_low", "delta_high"):
            value = record[part]
            if value == value:  # not NaN
                metrics[f"{key}.{part}"] = float(value)
    runs = result.runs.assign(mode=result.runs["mode"].map(lp.UTILITY_MODES))
    logger.info("%s: lesion F1 by mode %s", WHERE,
                {row.row: round(float(row.f1_lesion), 3) for row in table.itertuples()})
    return table, runs, metrics


def _class_fidelity_note(fidelity: Mapping[str, float], level: float) -> str:
    """Does each class carry its class? The encoder's calls on synthetic and on held-out real patches."""

    def share(kind: str, name: str) -> str:
        key = f"class_fidelity.{kind}.{name}"
        return (f"{100 * fidelity[key]:.0f}% [{100 * fidelity[key + '_low']:.0f}, {100 * fidelity[key + '_high']:.0f}] "
                f"of {int(fidelity[key + '_n'])}")

    return (f"Class fidelity (GAN-test, Shmelkov et al. 2018): the feature encoder, trained on the real training "
            f"patches to tell lesion from normal, calls {share('synthetic', 'lesion')} synthetic lesion patches "
            f"lesion and {share('synthetic', 'normal')} synthetic normal patches normal; on the held-out patients' "
            f"real patches, {share('held_out', 'lesion')} and {share('held_out', 'normal')} "
            f"({100 * level:g}% Clopper-Pearson intervals). Synthetic lesion patches drawn without a lesion would "
            "be called lesion about as often as real normal patches are (100% minus the held-out normal share).")


def write_lesion_patches_report(fid_table: pd.DataFrame, utility_table: pd.DataFrame, fidelity: dict[str, float],
                       utility: dict[str, float], tsne_png: str, patches: Mapping[str, np.ndarray],
                       patch_manifest: pd.DataFrame, synthetic: Mapping[str, np.ndarray], params: dict[str, Any],
                       extraction_params: dict[str, Any]) -> tuple[str, Figure, dict[str, float]]:
    """The HTML page (the FID table beside the published figure, the classifier table, figures), the
    sample grid and the study's metrics (JSON and MLflow)."""

    config = _config(params)
    extraction = _extraction(extraction_params)
    evaluation = config.evaluation
    train_index = _rows(patch_manifest, "train")
    grid = lp.sample_grid(np.asarray(patches["images"][train_index]), np.asarray(patches["labels"][train_index]),
                          np.asarray(synthetic["images"]), np.asarray(synthetic["labels"]), evaluation.grid_examples)
    per_split = patch_manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
    patients = patch_manifest.groupby("split")["patient_key"].nunique()
    counts = "; ".join(f"{split}: {', '.join(f'{int(n)} {label}' for label, n in row.items())} "
                       f"({int(patients[split])} patients)" for split, row in per_split.iterrows())
    p = extraction.patches
    series = f"series {', '.join(p.series)}" if p.series else "every series"
    notes_fid = [
        f"Patches: {p.patch_px} px at {p.pixel_mm:g} mm ({p.patch_px * p.pixel_mm:g} mm field of view) from axial "
        f"slices of the cohort's preprocessed volumes ({series}). Lesion patches: centred on each lesion component's "
        f"centroid (>= {p.min_lesion_px} px, jitter up to {p.jitter_px} px); normal patches: no lesion pixel, >= "
        f"{100 * p.min_brain_fraction:.0f}% brain, {p.normal_per_lesion:g} per lesion patch. Per split: {counts}. "
        "Patches never cross a patient's split (checked).",
        f"Normalisation: {extraction.normalisation.method}"
        + (f" (per patch, brain pixels' {extraction.normalisation.low:g}th-{extraction.normalisation.high:g}th "
           "percentiles to [-1, 1], background -1)" if extraction.normalisation.method == "percentile" else "")
        + ". Cut by the extraction stage (extraction.lesion_patches); the model is the demo's dcgan, trained on them.",
        "FID: the project's Frechet distance (synthmed.metrics.fidelity) in the feature space of a domain encoder "
        "trained on the real training patches, synthetic lesion patches against one half of the real training "
        "lesion patches; the floor compares the two disjoint real halves on the same N. Intervals: percentile "
        "bootstrap. The published figure was measured on mammography at 128 px with Inception features: its scale "
        "is not ours; read our row against our floor, not against the published number.",
        f"FID of the normal patches: {fidelity['normal.fid']:.2f} (floor {fidelity['normal.fid_floor_halves']:.2f}, "
        f"n={int(fidelity['normal.fid_n'])}); all patches: {fidelity['all.fid']:.2f} "
        f"(floor {fidelity['all.fid_floor_halves']:.2f}, n={int(fidelity['all.fid_n'])}).",
        _class_fidelity_note(fidelity, evaluation.level),
    ]
    notes_utility = [
        f"A small CNN (synthmed.metrics.utility) per mode and seed, tested on the real patches of the held-out "
        f"patients ({', '.join(evaluation.test_splits)}: {int(utility['n_test'])} patches, "
        f"{int(utility['n_test_lesion'])} lesion, {int(utility['n_test_patients'])} patients). real+GAN adds "
        f"{evaluation.synthetic_per_real:g} synthetic patch per real training patch of each class.",
        "F1 (lesion) and balanced accuracy: mean over seeds with a percentile-bootstrap interval that draws the "
        "test patients whole (their patches are correlated) and the seeds; AUC: mean over seeds, [min, max] over "
        "seeds. With this few test patients the intervals are wide.",
    ]
    section_fid = render_study_section(
        title="Lesion patches: DCGAN FID beside the published figure", anchor="study-lesion-patches-fid",
        table=fid_table, metrics=lp.FID_METRICS, metric_labels={"fid": "FID"}, digits={"fid": 2},
        figures=[("Rows: real lesion, synthetic lesion, real normal, synthetic normal", figure_png64(grid)),
                 ("t-SNE of real training and synthetic patches (domain-encoder features)", tsne_png)],
        notes=notes_fid)
    section_utility = render_study_section(
        title="Lesion patches: downstream lesion classifier", anchor="study-lesion-patches-utility",
        table=utility_table, metrics=lp.UTILITY_METRICS, metric_labels=lp.UTILITY_LABELS,
        digits={m: 3 for m in lp.UTILITY_METRICS}, figures=[], notes=notes_utility)
    html = render_study_page(title="synthmed study: lesion patches", sections=[section_fid, section_utility])
    metrics = {**{f"fid.{k}": v for k, v in fidelity.items()}, **{f"utility.{k}": v for k, v in utility.items()},
               "n_patches": float(len(patch_manifest)),
               "n_lesion_patches": float((patch_manifest["label"] == "lesion").sum())}
    return html, grid, {k: float(v) for k, v in metrics.items()}
