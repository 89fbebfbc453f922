"""Nodes of the ``evaluation`` pipeline: parse ``params:evaluation``, call the protocol, return.

The protocol itself (what is compared with what, at which size, with which floors) lives in
``synthmed.protocols.evaluation`` and docs/evaluation.md. Per family (one template,
namespaced by the registry's families): ``prepare_evaluation``, ``fidelity_scores``,
``memorisation_scores``, ``utility_scores``, ``family_figures``, ``steps_sweep`` (FID against
solver steps, diffusion families), ``family_result``; then
across families ``compare_families``, ``collect_metrics``, ``headline_metrics``,
``build_reader_kit`` and ``build_report``, which take one input per family.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from synthmed.core.config import from_params
from synthmed.datasets.array_store import ArrayStore
from synthmed.generators.base import TrainedGenerator
from synthmed.generators.run import RunConfig, source_inputs
from synthmed.generators.sampling import SamplingConfig
from synthmed.metrics.features import TrainedClassifier
from synthmed.protocols import evaluation as protocol
from synthmed.protocols import steps_sweep as sweep
from synthmed.protocols.encoders import source_config
from synthmed.protocols.evaluation import EvaluationSet, FamilyResult


def prepare_evaluation(
    samples: ArrayStore,
    provenance: pd.DataFrame,
    slices: ArrayStore,
    slice_manifest: pd.DataFrame,
    patches: ArrayStore,
    patch_manifest: pd.DataFrame,
    lesion_patches: ArrayStore,
    lesion_patch_manifest: pd.DataFrame,
    slice_encoder: TrainedClassifier,
    patch_encoder: TrainedClassifier,
    lesion_patch_encoder: TrainedClassifier,
    family: str,
    run_params: dict[str, Any],
    params: dict[str, Any],
    checkpoint_samples: ArrayStore,
    checkpoint_provenance: pd.DataFrame,
) -> EvaluationSet:
    """The family's samples and the real splits of the source it learnt from, with their features
    (and the samples of earlier checkpoints, for the gate's fraction flagged per checkpoint)."""
    run = from_params(RunConfig, run_params, f"{family}.run")
    real = {"slices": (slices, slice_manifest, slice_encoder), "patches": (patches, patch_manifest, patch_encoder),
            "lesion_patches": (lesion_patches, lesion_patch_manifest, lesion_patch_encoder)}
    store, manifest, encoder = source_inputs(run, family, "evaluation", real)
    return protocol.prepare_evaluation(family, samples, provenance, run.source, store, manifest, encoder,
                                       protocol.evaluation_config(params), checkpoint_samples, checkpoint_provenance)


def fidelity_scores(evaluation: EvaluationSet, params: dict[str, Any]) -> dict[str, float]:
    """FID/KID with intervals beside real-vs-real floors, PRDC, diversity, paired metrics, the
    detectability AUC (a classifier telling synthetic from real) beside its real-vs-real floor, and
    the lesion signal (does the lesion class carry the lesion's mark) beside the real split's."""
    config = protocol.evaluation_config(params)
    fidelity = from_params(protocol.FidelityConfig, config.fidelity, "evaluation.fidelity")
    source = source_config(config.sources[evaluation.source], f"evaluation.sources.{evaluation.source}")
    signal = (protocol.lesion_signal(evaluation, protocol.lesion_signal_config(config.lesion_signal))
              if source.lesion_signal else {})
    return (protocol.fidelity_scores(evaluation, fidelity)
            | protocol.detectability(evaluation, protocol.detectability_config(config.detectability)) | signal)


def memorisation_scores(evaluation: EvaluationSet,
                        params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame]:
    """The memorisation gate over the family's samples and every sampled checkpoint's (reported; enforced by
    rebalancing)."""
    return protocol.memorisation_scores(evaluation,
                                        protocol.gate_config(protocol.evaluation_config(params).memorisation))


def utility_scores(evaluation: EvaluationSet, params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train-on-X, test-on-real: every mode x seed, scored on the real test split."""
    return protocol.utility_scores(evaluation, protocol.utility_config(protocol.evaluation_config(params).utility))


def family_figures(evaluation: EvaluationSet, memorisation_table: pd.DataFrame,
                   params: dict[str, Any]) -> tuple[Figure, Figure, Figure, pd.DataFrame, list[tuple[str, bytes]]]:
    """Real vs synthetic per class, the most similar sample/training pairs, t-SNE per class."""
    config = from_params(protocol.FigureConfig, protocol.evaluation_config(params).figures, "evaluation.figures")
    return protocol.family_figures(evaluation, memorisation_table, config)


def steps_sweep(generator: TrainedGenerator, evaluation: EvaluationSet, family: str, sampling_params: dict[str, Any],
                params: dict[str, Any]) -> pd.DataFrame:
    """FID against solver steps for the families in ``evaluation.steps_sweep.families`` (else an empty table)."""
    config = protocol.evaluation_config(params)
    sweep_config = from_params(sweep.StepsSweepConfig, config.steps_sweep, "evaluation.steps_sweep")
    if not sweep_config.enabled or family not in sweep_config.families:
        return pd.DataFrame(columns=sweep.SWEEP_COLUMNS)
    return sweep.steps_sweep(generator, evaluation, from_params(SamplingConfig, sampling_params, f"{family}.sampling"),
                             sweep_config,
                             from_params(protocol.FidelityConfig, config.fidelity, "evaluation.fidelity"))


def family_result(evaluation: EvaluationSet, fidelity: dict[str, float], memorisation: dict[str, float],
                  utility_summary: pd.DataFrame, figures: list[tuple[str, bytes]],
                  training_history: pd.DataFrame, memorisation_table: pd.DataFrame,
                  steps_sweep: pd.DataFrame) -> FamilyResult:
    """One family's numbers, figures, training history, fraction flagged per checkpoint and steps sweep, bundled."""
    return protocol.family_result(evaluation, fidelity, memorisation, utility_summary, figures, training_history,
                                  memorisation_table, steps_sweep)


def checkpoint_table(*results: FamilyResult) -> pd.DataFrame:
    """The fraction of samples the gate flagged, per family and sampled checkpoint."""
    return protocol.checkpoint_table(results)


def compare_families(*results: FamilyResult) -> tuple[pd.DataFrame, Figure]:
    """One row per family (each family compared with its own source's real data)."""
    return protocol.compare_families(results)


def collect_metrics(rebalancing_gate: dict[str, float], *results: FamilyResult) -> dict[str, float]:
    """Every number of the report, flat, for ``metrics.json`` (DVC) and MLflow."""
    return protocol.collect_metrics(results, rebalancing_gate)


def headline_metrics(metrics: dict[str, float], rebalancing_params: dict[str, Any]) -> dict[str, float]:
    """About 20 numbers of ``metrics`` to read first (``headline.json``, what ``dvc metrics show`` prints)."""
    return protocol.headline_metrics(metrics, str(rebalancing_params.get("generator", "")))


def build_reader_kit(params: dict[str, Any], *evaluation_sets: EvaluationSet) -> tuple[dict[str, Any], pd.DataFrame]:
    """The blinded reader sheet of ``evaluation.reader_kit.family`` and its answer key."""
    config = from_params(protocol.ReaderKitConfig, protocol.evaluation_config(params).reader_kit,
                         "evaluation.reader_kit")
    return protocol.build_reader_kit(evaluation_sets, config)


def build_report(comparison: pd.DataFrame, rebalancing_gate: dict[str, float], reader_key: pd.DataFrame,
                 params: dict[str, Any], rebalancing_params: dict[str, Any], *results: FamilyResult) -> str:
    """The self-contained HTML report of this run."""
    config = protocol.evaluation_config(params)
    fidelity = from_params(protocol.FidelityConfig, config.fidelity, "evaluation.fidelity")
    return protocol.build_report(comparison, results, rebalancing_gate, reader_key, level=float(fidelity.level),
                                 gate=protocol.gate_config(config.memorisation),
                                 gate_action=str(rebalancing_params.get("gate_action", "fail")),
                                 generator=str(rebalancing_params.get("generator", "")))
