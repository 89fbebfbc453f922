"""Nodes of the ``study_class_multiplication`` pipeline: parse ``params:study_class_multiplication``, call the
library, return.

The study (issue 10, "class multiplication"): a class-conditional ``ddpm`` trained on the cohort's
training patients' slices (normal / lesion) with synthmed's trainer multiplies the lesion class;
the synthetic lesion slices go through the memorisation gate, the downstream classifier (real vs
real + synthetic, tested on held-out patients), the detectability test and a blinded reader kit;
see ``synthmed.protocols.class_multiplication`` for the protocol.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from synthmed.core.checksums import sha256_bytes
from synthmed.core.config import from_params
from synthmed.generators.base import SamplerSpec
from synthmed.generators.registry import config_from_params, get_family, load_trained_generator
from synthmed.generators.run import RunConfig, checkpoint_folder
from synthmed.generators.sampling import PLAN_COLUMNS, generate_from_plan
from synthmed.generators.tracking import active_tracker
from synthmed.generators.training import ArrayBatches, TrainingConfig, reproducible_history, train
from synthmed.metrics.features import FitConfig
from synthmed.protocols import class_multiplication as cm
from synthmed.protocols.studies import figure_png64, render_study_page, render_study_section

logger = logging.getLogger(__name__)

FAMILY = "ddpm"
WHERE = cm.WHERE


def _config(params: Mapping[str, Any]) -> cm.ClassMultiplicationConfig:
    return from_params(cm.ClassMultiplicationConfig, params, WHERE)


def _model_config(config: cm.ClassMultiplicationConfig):
    model_config = config_from_params(FAMILY, dict(config.model))
    if (model_config.image_size != config.image_size or model_config.num_classes != len(cm.CLASS_NAMES)
            or "class" not in model_config.conditioning):
        raise ValueError(
            f"{WHERE}.model: image_size={model_config.image_size}, num_classes={model_config.num_classes}, "
            f"conditioning={list(model_config.conditioning)}; expected image_size = {WHERE}.image_size = "
            f"{config.image_size}, num_classes = {len(cm.CLASS_NAMES)} ({', '.join(cm.CLASS_NAMES)}) and class "
            "in conditioning.")
    return model_config


def _tensors(arrays: Mapping[str, np.ndarray], rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(arrays["images"][rows])),
            torch.from_numpy(np.asarray(arrays["labels"][rows], dtype=np.int64)))


def _rows(arrays: Mapping[str, np.ndarray], splits: tuple[str, ...] | str, label: int | None = None) -> np.ndarray:
    keep = np.isin(arrays["split"], (splits,) if isinstance(splits, str) else splits)
    if label is not None:
        keep &= arrays["labels"] == label
    return np.flatnonzero(keep)


def _with_fit(cls: type, block: Mapping[str, Any], path: str) -> Any:
    """``cls`` from a parameter block whose ``fit`` sub-block is a ``FitConfig``."""
    fit = from_params(FitConfig, block.get("fit", {}), f"{path}.fit")
    return from_params(cls, {**block, "fit": fit}, path)


def _synthetic(synthetic: Mapping[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.asarray(synthetic["images"], dtype=np.float32))


# ----------------------------------------------------------------------------- slices and the generator


def prepare_class_slices(slices: Mapping[str, np.ndarray], slice_manifest: pd.DataFrame,
                         params: dict[str, Any]) -> dict[str, np.ndarray]:
    """The cohort's slices at the study's size with class, split and patient (``cm.class_slices``)."""
    config = _config(params)
    arrays = cm.class_slices(np.asarray(slices["images"]), slice_manifest, config.image_size)
    counts = pd.crosstab(arrays["split"], arrays["labels"]).rename(columns=dict(enumerate(cm.CLASS_NAMES)))
    logger.info("%s: %d slices at %d px, by split and class %s", WHERE, len(arrays["images"]), config.image_size,
                counts.to_dict("index"))
    return arrays


def _pretrained(folder: Path, model_config) -> torch.nn.ModuleDict:
    """The saved ``ddpm`` in ``folder`` (checksums verified), refused unless it is a ``ddpm`` with the classes
    normal / lesion and the study's ``model`` config: the same setup, so the study may share it."""
    trained = load_trained_generator(folder)
    saved, classes = trained.config, list(trained.class_names)
    if trained.family != FAMILY or classes != list(cm.CLASS_NAMES):
        raise ValueError(f"{WHERE}.pretrained {folder}: a {trained.family} with classes {classes}; expected a "
                         f"{FAMILY} with classes {list(cm.CLASS_NAMES)}.")
    differ = {f.name: (getattr(saved, f.name), getattr(model_config, f.name)) for f in dataclasses.fields(saved)
              if getattr(saved, f.name) != getattr(model_config, f.name)}
    if differ:
        raise ValueError(f"{WHERE}.pretrained {folder}: its config differs from {WHERE}.model in "
                         + ", ".join(f"{k} (saved {a!r}, study {b!r})" for k, (a, b) in differ.items())
                         + f"; set {WHERE}.model to the saved config, or pretrained: null to train the study's own.")
    return trained.models


def train_class_diffusion(arrays: dict[str, np.ndarray], params: dict[str, Any]):
    """The class-conditional ``ddpm`` (normal / lesion): the saved one of ``pretrained`` when set (the demo's,
    trained on the same patients' slices), else trained on the training patients' slices (synthmed's trainer:
    checkpoints under ``checkpoint_root``, resumed when the data and parameters are the same)."""
    config = _config(params)
    model_config = _model_config(config)
    if config.pretrained is not None:
        folder = Path(config.pretrained)
        models = _pretrained(folder, model_config)
        logger.info("%s: sampling the saved ddpm in %s (not training one: pretrained is set)", WHERE, folder)
        return models, pd.DataFrame({"pretrained": [str(folder)]})
    training = from_params(TrainingConfig, config.training, f"{WHERE}.training")
    rows = _rows(arrays, config.train_split)
    if len(rows) == 0:
        raise ValueError(f"No slice in the {WHERE}.train_split {config.train_split!r}.")
    store = {"images": arrays["images"][rows], "labels": arrays["labels"][rows]}
    run = RunConfig(source="slices", split=config.train_split, checkpoint_root=config.checkpoint_root)
    run_dir = checkpoint_folder(run, WHERE, model_config, training,
                                [sha256_bytes(np.ascontiguousarray(a).tobytes()) for a in store.values()])
    logger.info("%s: training the class-conditional ddpm on %d %s slices (%d lesion); checkpoints in %s", WHERE,
                len(rows), config.train_split, int((store["labels"] == cm.LESION).sum()), run_dir)
    store["masks"] = np.zeros_like(store["images"], dtype=np.uint8)  # the trainer's batches carry masks (unused)
    models, history = train(get_family(FAMILY), model_config, training, ArrayBatches(store, np.arange(len(rows))),
                            run_dir, tracker=active_tracker(WHERE))
    return models, pd.DataFrame(reproducible_history(history))


def multiply_lesion_class(models, arrays: dict[str, np.ndarray], params: dict[str, Any]
                          ) -> tuple[dict[str, np.ndarray], pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """``max(factors) x R`` synthetic lesion slices (R: the real training lesion slices) that passed the memorisation
    gate: synthmed's sampler and gate in rounds (``synthmed.protocols.rebalancing.rebalance_in_rounds``, as
    rebalancing does), so that slices flagged as copies of training patients reach neither the classifier, the
    detectability test nor the reader kit.

    The gate's references are the training slices; the slices of the ``evaluation.gate_splits`` patients
    calibrate its thresholds (pixel NCC, no feature network), once for every round. ``evaluation.memorisation.action``
    ``drop`` drops flagged slices and samples again; ``fail`` stops at the first one. A failed self-test stops the
    study, as it stops rebalancing.

    Returns:
        ``(synthetic, provenance, gate_table, gate)``: the kept slices (``images`` (M, 1, S, S) float32 in [-1, 1],
        ``labels`` (M,) int64, all lesion) in sampling order and their provenance; every candidate with the gate's
        columns, its ``round`` and whether it was ``used``; the gate's numbers.
    """
    from synthmed.protocols.rebalancing import rebalance_in_rounds

    config = _config(params)
    multiplication = config.multiplication
    counts = cm.lesion_counts(arrays["labels"][_rows(arrays, config.train_split)], multiplication.factors)
    plan = pd.DataFrame([{"condition": "class", "label": cm.CLASS_NAMES[cm.LESION], "count": max(counts.values()),
                          "case": ""}], columns=PLAN_COLUMNS)
    sampler = from_params(SamplerSpec, multiplication.sampler, f"{WHERE}.multiplication.sampler")
    model_config = _model_config(config)

    def sample(round_plan: pd.DataFrame, seed: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        sampled = generate_from_plan(get_family(FAMILY), model_config, models, round_plan, list(cm.CLASS_NAMES),
                                     sampler, seed=seed, batch_size=multiplication.batch_size, checkpoint=WHERE)
        return ({"images": sampled.images.astype(np.float32), "labels": sampled.labels.astype(np.int64)},
                sampled.provenance)

    result = rebalance_in_rounds(plan, sample, _study_gate(arrays, config), multiplication.rounds)
    keep, table = result.decision.keep, result.decision.provenance.rename(columns={"index": "candidate_index"})
    synthetic = {key: value[keep] for key, value in result.synthetic.items()}
    # One row per kept slice: `index` its row in the synthetic arrays, `candidate_index` its memorisation.csv row.
    provenance = table.loc[keep, [c for c in table.columns if not c.startswith(("nn_", "memorisation_"))]]
    provenance.insert(0, "index", np.arange(len(provenance)))
    numbers = {k.removeprefix("gate."): v for k, v in result.numbers.items()
               if not k.startswith("gate.flagged_fraction.")}  # one checkpoint: the fraction below
    numbers |= {"flagged_fraction": float(table["memorisation_flagged"].mean()),
                "max_pixel_similarity": float(table["nn_pixel_similarity"].max()), "used_count": float(keep.sum()),
                "used_max_pixel_similarity": float(np.max(table["nn_pixel_similarity"].to_numpy()[keep], initial=-1.0))}
    logger.info("%s: %d synthetic lesion slices used (%s per factor); %d of %d candidates flagged and dropped in "
                "%d round(s)", WHERE, int(keep.sum()), {f"x{f:g}": n for f, n in counts.items()},
                int(numbers["flagged_count"]), len(table), int(numbers["rounds"]))
    return (synthetic, provenance.reset_index(drop=True), table.assign(used=keep),
            {k: float(v) for k, v in numbers.items() if np.isfinite(v)})


def _study_gate(arrays: dict[str, np.ndarray], config: cm.ClassMultiplicationConfig):
    """The memorisation gate of ``multiply_lesion_class``, prepared once (references, thresholds, self-test) for
    every round: ``(synthetic, provenance) -> (decision, numbers, planted)`` as ``rebalance_in_rounds`` takes it."""
    from synthmed.privacy.memorisation import GateConfig, enforce, held_out_maxima, prepare_gate
    from synthmed.protocols.evaluation import scored_provenance
    from synthmed.protocols.rebalancing import GateDecision

    gate = from_params(GateConfig, {"use_features": False, "action": "drop", **config.evaluation.memorisation},
                       f"{WHERE}.evaluation.memorisation")
    train_rows = _rows(arrays, config.train_split)
    train_images, _ = _tensors(arrays, train_rows)
    held_out, _ = _tensors(arrays, _rows(arrays, config.evaluation.gate_splits))
    # Raises MemorisationError when no held-out slice can calibrate it: the study stops rather than go on ungated.
    prepared = prepare_gate(train_images, held_out, config=gate, train_groups=arrays["patient"][train_rows])
    reference = {"gate.min_self_test_recall": float(gate.min_self_test_recall)}  # the same for every round
    reference |= {f"gate.{k}": v for k, v in held_out_maxima(prepared.held_out).items()}

    def score(synthetic: Mapping[str, np.ndarray], provenance: pd.DataFrame):
        report = prepared.score(_synthetic(synthetic))
        keep = enforce(report, gate)  # raises for a failed self-test, or a flagged slice with action "fail"
        table = scored_provenance(provenance, report.candidates, train_rows)
        numbers = {f"gate.{k}": v for k, v in report.summary().items()} | reference
        return GateDecision(keep, table, numbers), numbers, report.planted

    return score


# ----------------------------------------------------------------------------- evaluation (the project's parts)


def score_class_utility(arrays: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], params: dict[str, Any]
                        ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The lesion classifier (``synthmed.metrics.utility``) trained on real and on real + each factor's synthetic
    lesion slices, several seeds, tested on the held-out patients' real slices.

    Returns:
        ``(summary, runs, metrics)``: ``evaluate_utility``'s summary and per-seed runs with a ``factor``
        column, and the metrics.
    """
    from synthmed.metrics.utility import UtilityConfig, evaluate_utility
    from synthmed.protocols.evaluation import mode_key

    config = _config(params)
    evaluation = config.evaluation
    utility = _with_fit(UtilityConfig, {"modes": list(cm.UTILITY_MODES), **evaluation.utility},
                        f"{WHERE}.evaluation.utility")
    if set(utility.modes) != set(cm.UTILITY_MODES):
        raise ValueError(f"{WHERE}.evaluation.utility.modes must be {list(cm.UTILITY_MODES)} (the study compares "
                         f"real with real + synthetic lesion slices), got {list(utility.modes)}.")
    real = _tensors(arrays, _rows(arrays, config.train_split))
    test_rows = _rows(arrays, evaluation.test_splits)
    test = _tensors(arrays, test_rows)
    counts = np.bincount(real[1].numpy(), minlength=len(cm.CLASS_NAMES))
    if counts[cm.LESION] >= counts[cm.NORMAL]:
        # evaluate_utility bootstraps the F1 of the rarest training class: it must be the lesion class.
        raise ValueError(f"{WHERE}: the training split has {counts[cm.LESION]} lesion and {counts[cm.NORMAL]} normal "
                         "slices; the study multiplies the lesion class as the minority class.")
    if not (test[1] == cm.LESION).any():
        raise ValueError(f"{WHERE}: no lesion slice in the test splits {list(evaluation.test_splits)}; the lesion F1 "
                         "needs held-out patients with lesions (preprocessing.split stratify: finding).")
    images, labels = _synthetic(synthetic), torch.from_numpy(np.asarray(synthetic["labels"], dtype=np.int64))
    per_factor = cm.lesion_counts(real[1].numpy(), config.multiplication.factors)
    if len(images) < max(per_factor.values()):
        raise ValueError(f"{WHERE}: {len(images)} synthetic slices, {max(per_factor.values())} needed for factor "
                         f"x{max(per_factor):g}; sample again (multiply_lesion_class).")
    summaries, runs = {}, []
    metrics: dict[str, float] = {"n_test": float(len(test[0])), "n_test_lesion": float((test[1] == cm.LESION).sum()),
                                 "n_train_real": float(len(real[0])),
                                 "n_train_real_lesion": float(counts[cm.LESION])}
    real_lesion = _rows(arrays, config.train_split, cm.LESION)
    for factor, n in per_factor.items():
        # The control: the same number of added lesion slices, copies of the real ones (rebalancing alone).
        additions = {cm.ADDED_SYNTHETIC: (images[:n], labels[:n]),
                     cm.ADDED_DUPLICATES: _tensors(arrays, cm.duplicate_rows(real_lesion, n))}
        for added, extra in additions.items():
            result = evaluate_utility(real, extra, test, list(cm.CLASS_NAMES), utility, seed=evaluation.seed,
                                      test_groups=arrays["patient"][test_rows])
            summaries[(factor, added)] = result.summary.assign(factor=factor, added=added)
            runs.append(result.runs.assign(factor=factor, added=added))
            prefix = cm.factor_key(factor) + ("" if added == cm.ADDED_SYNTHETIC else f".{added}")
            for record in result.summary.to_dict("records"):
                key = f"{prefix}.{mode_key(record['mode'])}.{record['score']}"
                for part in ("mean", "low", "high", "delta_vs_real", "delta_low", "delta_high"):
                    if record[part] == record[part]:  # not NaN
                        metrics[f"{key}.{part}"] = float(record[part])
        metrics[f"{cm.factor_key(factor)}.n_synthetic"] = float(n)
    summary = pd.concat(summaries.values(), ignore_index=True)
    logger.info("%s: lesion F1 %s", WHERE, {f"x{f:g} {added}": round(float(s.loc[(s["score"] == "f1.lesion")
                                                                                  & (s["mode"] == "real+synthetic"),
                                                                                  "mean"].iloc[0]), 3)
                                            for (f, added), s in summaries.items()})
    return summary, pd.concat(runs, ignore_index=True), metrics


def score_class_detectability(arrays: dict[str, np.ndarray], synthetic: dict[str, np.ndarray],
                              params: dict[str, Any]) -> dict[str, float]:
    """The detectability AUC of the synthetic lesion slices against the real training lesion slices, with its
    real-vs-real floor (``synthmed.metrics.detectability``)."""
    from synthmed.metrics.detectability import DetectabilityConfig, detectability_scores

    config = _config(params)
    detectability = _with_fit(DetectabilityConfig, config.evaluation.detectability,
                              f"{WHERE}.evaluation.detectability")
    rows = _rows(arrays, config.train_split, cm.LESION)
    real, _ = _tensors(arrays, rows)
    scores = detectability_scores(real, _synthetic(synthetic), detectability, what="synthetic lesion slices",
                                  real_groups=arrays["patient"][rows])
    return {k: float(v) for k, v in scores.items() if np.isfinite(v)}


def _lesion_signal(arrays: dict[str, np.ndarray], fake: np.ndarray,
                   config: cm.ClassMultiplicationConfig) -> dict[str, float]:
    """The lesion signal (``synthmed.metrics.lesion_signal``): the real training lesion slices and the synthetic
    ones, each against the real training normal slices; the intervals draw the real slices' patients whole
    (each synthetic slice its own unit)."""
    from synthmed.metrics.lesion_signal import LesionSignalConfig, lesion_signal

    signal = from_params(LesionSignalConfig, config.evaluation.lesion_signal, f"{WHERE}.evaluation.lesion_signal")
    rows = _rows(arrays, config.train_split)
    real = (np.asarray(arrays["images"][rows], dtype=np.float32), np.asarray(arrays["labels"][rows]))
    patients = np.asarray(arrays["patient"][rows], dtype=object)
    is_normal = real[1] == cm.NORMAL
    synthetic = (np.concatenate([real[0][is_normal], fake]),
                 np.r_[np.full(int(is_normal.sum()), cm.NORMAL), np.full(len(fake), cm.LESION)])
    synthetic_groups = np.r_[patients[is_normal], np.full(len(fake), None, dtype=object)]  # no key: its own unit
    return lesion_signal(real, synthetic, cm.CLASS_NAMES, signal, real_groups=patients,
                         synthetic_groups=synthetic_groups)


def build_class_reader_kit(arrays: dict[str, np.ndarray], synthetic: dict[str, np.ndarray],
                           params: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """The blinded reader kit (``synthmed.metrics.reader_study``): synthetic lesion slices and real lesion slices
    of the held-out patients, and the answer key (stored apart)."""
    from synthmed.metrics.reader_study import build_reader_kit

    config = _config(params)
    kit = config.evaluation.reader_kit
    rows = _rows(arrays, config.evaluation.test_splits, cm.LESION)
    if len(rows) == 0:
        raise ValueError(f"{WHERE}.evaluation.reader_kit: no real lesion slice in the held-out splits "
                         f"{list(config.evaluation.test_splits)}.")
    real, fake = arrays["images"][rows], np.asarray(synthetic["images"], dtype=np.float32)
    name = cm.CLASS_NAMES[cm.LESION]
    files, key = build_reader_kit(real, fake, real_labels=[name] * len(real), synthetic_labels=[name] * len(fake),
                                  per_source=kit.per_source, display_px=kit.display_px, seed=kit.seed,
                                  title=kit.title)
    key = key.assign(patient=[arrays["patient"][rows[i]] if t == "real" else ""
                              for t, i in zip(key["truth"], key["source_index"])])
    return files, key


def write_class_multiplication_report(utility_summary: pd.DataFrame, utility: dict[str, float],
                                      detectability: dict[str, float], gate: dict[str, float],
                                      reader_key: pd.DataFrame, arrays: dict[str, np.ndarray],
                                      synthetic: dict[str, np.ndarray], params: dict[str, Any]
                                      ) -> tuple[pd.DataFrame, str, Figure, dict[str, float]]:
    """The table (the reader row, the machine rows, the published figure), the HTML page, the sample grid and
    the study's metrics (JSON and MLflow)."""
    config = _config(params)
    evaluation = config.evaluation
    fake = np.asarray(synthetic["images"], dtype=np.float32)
    real_lesion = arrays["images"][_rows(arrays, config.train_split, cm.LESION)]
    n_kit = {truth: int((reader_key["truth"] == truth).sum()) for truth in ("real", "synthetic")}
    summaries = {float(f): part for f, part in utility_summary.groupby("factor", sort=False)}  # both additions
    n_train = {"real": int(utility["n_train_real"])}
    n_train |= {cm.factor_key(f): int(utility["n_train_real"] + utility[f"{cm.factor_key(f)}.n_synthetic"])
                for f in summaries}
    lesion_signal = _lesion_signal(arrays, fake, config)
    rows = [cm.reader_row(n_kit["synthetic"], n_kit["real"]), *cm.detectability_rows(detectability),
            *cm.lesion_signal_rows(lesion_signal), *cm.utility_rows(summaries, n_train=n_train),
            *cm.gate_row(gate, evaluation.level)]
    table = cm.study_frame(rows, cm.published_rows(config.published), level=evaluation.level)
    # No two synthetic images alike: the most similar pair, beside the real training lesion slices' own.
    similar = {"synthetic": cm.pairwise_similarity(fake), "real": cm.pairwise_similarity(real_lesion)}
    duplicate = float(dict(config.evaluation.memorisation).get("duplicate_similarity", 0.999))
    diversity = {f"{name}.max_pairwise_similarity": float(np.nanmax(s)) for name, s in similar.items()}
    diversity["synthetic.near_duplicate_pairs"] = float((np.triu(np.nan_to_num(similar["synthetic"]), 1)
                                                         >= duplicate).sum())
    grid = cm.sample_grid(real_lesion, fake, evaluation.grid_examples)
    section = render_study_section(
        title="Class multiplication: a class-conditional DDPM multiplies the lesion class",
        anchor="study-class-multiplication", table=table, metrics=cm.METRICS, metric_labels=cm.METRIC_LABELS,
        digits={m: 3 for m in cm.METRICS},
        figures=[("Rows: real training lesion slices (2), synthetic lesion slices (2)", figure_png64(grid))],
        notes=_notes(config, arrays, utility, detectability, gate, diversity, duplicate))
    html = render_study_page(title="synthmed study: class multiplication", sections=[section])
    metrics = {**{f"utility.{k}": v for k, v in utility.items()},
               **{f"detectability.{k}": v for k, v in detectability.items()},
               **{f"lesion_signal.{k.removeprefix('lesion_signal_')}": v for k, v in lesion_signal.items()},
               **{f"gate.{k}": v for k, v in gate.items()}, **diversity,
               "n_synthetic": float(len(fake)), "n_real_train_lesion": float(len(real_lesion)),
               "reader_kit.real": float(n_kit["real"]), "reader_kit.synthetic": float(n_kit["synthetic"])}
    return table, html, grid, {k: float(v) for k, v in metrics.items()}


def _generator_text(config: cm.ClassMultiplicationConfig) -> str:
    """The report's words for where the study's DDPM comes from: shared (``pretrained``) or trained here."""
    if config.pretrained is not None:
        return (f"the saved ddpm of {config.pretrained} (class-conditional, normal / lesion; the study's model "
                "config; trained outside the study, see its MODEL_CARD.md)")
    return (f"ddpm, class-conditional (normal / lesion), {config.training.get('steps')} steps of "
            f"{config.training.get('batch_size')} slices on the {config.train_split} patients")


def _notes(config: cm.ClassMultiplicationConfig, arrays: dict[str, np.ndarray], utility: dict[str, float],
           detectability: dict[str, float], gate: dict[str, float], diversity: dict[str, float],
           duplicate: float) -> list[str]:
    evaluation = config.evaluation
    by_split = "; ".join(
        f"{split}: {int((arrays['split'] == split).sum())} slices, "
        f"{int(((arrays['split'] == split) & (arrays['labels'] == cm.LESION)).sum())} lesion, "
        f"{len(set(arrays['patient'][arrays['split'] == split]))} patients" for split in cm.SPLITS)
    sampler = dict(config.multiplication.sampler)
    notes = [
        f"Slices: the cohort's axial slices classed by finding, {config.image_size} px (area-averaged); {by_split}. "
        "The split is by patient (checked).",
        f"Generator: {_generator_text(config)}; sampled with {sampler}. "
        f"Factors {[f'x{f:g}' for f in config.multiplication.factors]}: that many synthetic lesion slices per real "
        "training lesion slice are added to the classifier's training set.",
        "The published figure (66% judged anatomically correct by clinicians after the first iteration) is a "
        "reader judgement: nothing here measures it, and no machine row stands for it. Its row stays empty until "
        f"readers return the kit's sheets: {cm.SCORE_COMMAND}.",
        "Machine rows: the detectability AUC is out-of-fold (a CNN told real training lesion slices from synthetic "
        "ones, folded by patient; 0.5 = cannot tell; floor: two halves of the real lesion slices of different "
        "patients, at most half the N; intervals draw the real patients whole); the lesion F1 is the "
        f"mean over seeds of a small CNN tested on the held-out patients' real slices ({int(utility['n_test'])} "
        f"slices, {int(utility['n_test_lesion'])} lesion; {', '.join(evaluation.test_splits)}), interval a bootstrap "
        "over the test patients (all of a patient's slices together) and the seeds, the difference to real paired "
        "by patient. The control rows add as many copies of the real training lesion slices "
        "instead of synthetic ones: what rebalancing alone does; the synthetic content helps only where its row "
        "beats the control's.",
        f"No two synthetic images alike: the most similar pair of synthetic lesion slices correlates at "
        f"{diversity['synthetic.max_pairwise_similarity']:.4f} (pixel Pearson), "
        f"{int(diversity['synthetic.near_duplicate_pairs'])} pair(s) at or above {duplicate:g}; the real training "
        f"lesion slices' most similar pair (neighbouring slices of one patient): "
        f"{diversity['real.max_pairwise_similarity']:.4f}.",
    ]
    notes.append(f"Memorisation gate (enforced before every other measurement): {int(gate['flagged_count'])} of "
                 f"{int(gate['candidate_count'])} candidate synthetic slices flagged and dropped, "
                 f"{int(gate['used_count'])} used, sampled in {int(gate['rounds'])} round(s); threshold "
                 f"{gate['pixel_threshold']:.4f} from {int(gate['held_out_count'])} held-out slices; self-test "
                 f"recall {gate['self_test_recall']:.2f} on {int(gate['planted_count'])} planted copies (minimum "
                 f"{gate['min_self_test_recall']:g}: below it the gate cannot see disguised copies and the study "
                 f"stops, as rebalancing does); the most similar candidate {gate['max_pixel_similarity']:.4f}, "
                 f"the most similar slice used {gate['used_max_pixel_similarity']:.4f}.")
    if "detectability_auc_floor" not in detectability:
        notes.append("Detectability floor: not measured (too few real lesion slices for two halves).")
    return notes

