"""Wiring of the ``evaluation`` pipeline: a per-family template, then the cross-family nodes."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.generators.registry import FAMILIES
from synthmed.pipelines.evaluation.nodes import (
    build_reader_kit,
    build_report,
    checkpoint_table,
    collect_metrics,
    compare_families,
    family_figures,
    family_result,
    fidelity_scores,
    memorisation_scores,
    prepare_evaluation,
    utility_scores,
)

# Shared across families (not namespaced); samples, provenance and params:run are the family's own.
_SHARED = {"slices", "slice_manifest", "patches", "patch_manifest", "slices.feature_encoder", "patches.feature_encoder"}


def template() -> Pipeline:
    return Pipeline([
        Node(prepare_evaluation,
             ["samples", "sample_provenance", "slices", "slice_manifest", "patches", "patch_manifest",
              "slices.feature_encoder", "patches.feature_encoder", "params:family", "params:run", "params:evaluation",
              "checkpoint_samples", "checkpoint_provenance"],
             "evaluation_set", name="prepare_evaluation"),
        Node(fidelity_scores, ["evaluation_set", "params:evaluation"], "fidelity", name="fidelity_scores"),
        Node(memorisation_scores, ["evaluation_set", "params:evaluation"],
             ["memorisation_table", "memorisation", "memorisation_checkpoints"], name="memorisation_scores"),
        Node(utility_scores, ["evaluation_set", "params:evaluation"], ["utility_runs", "utility_summary"],
             name="utility_scores"),
        Node(family_figures, ["evaluation_set", "memorisation_table", "params:evaluation"],
             ["real_vs_synthetic", "nearest_pairs", "tsne", "tsne_coordinates", "report_figures"],
             name="family_figures"),
        Node(family_result, ["evaluation_set", "fidelity", "memorisation", "utility_summary", "report_figures",
                             "training_history", "memorisation_checkpoints"],
             "evaluation_result", name="family_result"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    per_family = sum(
        (pipeline(template(), namespace=family,
                  inputs=_SHARED,
                  parameters={"params:family": f"params:{family}.family", "params:run": f"params:{family}.run",
                              "params:evaluation": "params:evaluation"})
         for family in FAMILIES),
        Pipeline([]),
    )
    results = [f"{family}.evaluation_result" for family in FAMILIES]
    return per_family + Pipeline([
        Node(compare_families, results, ["family_comparison", "utility_figure"], name="compare_families"),
        Node(checkpoint_table, results, "memorisation_by_checkpoint", name="checkpoint_table"),
        Node(build_reader_kit, ["params:evaluation", *(f"{family}.evaluation_set" for family in FAMILIES)],
             ["reader_kit", "reader_key"], name="build_reader_kit"),
        Node(collect_metrics, ["rebalancing_gate_metrics", *results], "evaluation_metrics", name="collect_metrics"),
        Node(build_report,
             ["family_comparison", "rebalancing_gate_metrics", "reader_key", "params:evaluation",
              "params:rebalancing", *results],
             "evaluation_report", name="build_report"),
    ])
