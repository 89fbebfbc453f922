"""Wiring of the ``evaluation`` pipeline: a per-family template, then the cross-family nodes."""

from kedro.pipeline import Node, Pipeline, pipeline

from synthmed.core.lazy import lazy_module
from synthmed.generators.names import FAMILY_NAMES

_nodes = lazy_module("synthmed.pipelines.evaluation.nodes")

# Shared across families (not namespaced); samples, provenance and params:run are the family's own.
_SHARED = {"slices", "slice_manifest", "patches", "patch_manifest", "lesion_patches", "lesion_patch_manifest",
           "slices.feature_encoder", "patches.feature_encoder", "lesion_patches.feature_encoder"}


def template() -> Pipeline:
    return Pipeline([
        Node(_nodes.prepare_evaluation,
             ["samples", "sample_provenance", "slices", "slice_manifest", "patches", "patch_manifest",
              "lesion_patches", "lesion_patch_manifest", "slices.feature_encoder", "patches.feature_encoder",
              "lesion_patches.feature_encoder", "params:family", "params:run", "params:evaluation",
              "checkpoint_samples", "checkpoint_provenance"],
             "evaluation_set", name="prepare_evaluation"),
        Node(_nodes.fidelity_scores, ["evaluation_set", "params:evaluation"], "fidelity", name="fidelity_scores"),
        Node(_nodes.memorisation_scores, ["evaluation_set", "params:evaluation"],
             ["memorisation_table", "memorisation", "memorisation_checkpoints"], name="memorisation_scores"),
        Node(_nodes.utility_scores, ["evaluation_set", "params:evaluation"], ["utility_runs", "utility_summary"],
             name="utility_scores"),
        Node(_nodes.family_figures, ["evaluation_set", "memorisation_table", "params:evaluation"],
             ["real_vs_synthetic", "nearest_pairs", "tsne", "tsne_coordinates", "report_figures"],
             name="family_figures"),
        Node(_nodes.steps_sweep, ["generator", "evaluation_set", "params:family", "params:sampling",
                                  "params:evaluation"], "steps_sweep", name="steps_sweep"),
        Node(_nodes.family_result, ["evaluation_set", "fidelity", "memorisation", "utility_summary", "report_figures",
                                    "training_history", "memorisation_checkpoints", "steps_sweep"],
             "evaluation_result", name="family_result"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    per_family = sum(
        (pipeline(template(), namespace=family,
                  inputs=_SHARED,
                  parameters={"params:family": f"params:{family}.family", "params:run": f"params:{family}.run",
                              "params:sampling": f"params:{family}.sampling",
                              "params:evaluation": "params:evaluation"})
         for family in FAMILY_NAMES),
        Pipeline([]),
    )
    results = [f"{family}.evaluation_result" for family in FAMILY_NAMES]
    return per_family + Pipeline([
        Node(_nodes.compare_families, results, ["family_comparison", "utility_figure"], name="compare_families"),
        Node(_nodes.checkpoint_table, results, "memorisation_by_checkpoint", name="checkpoint_table"),
        Node(_nodes.build_reader_kit, ["params:evaluation", *(f"{family}.evaluation_set" for family in FAMILY_NAMES)],
             ["reader_kit", "reader_key"], name="build_reader_kit"),
        Node(_nodes.collect_metrics, ["rebalancing_gate_metrics", *results], "evaluation_metrics",
             name="collect_metrics"),
        Node(_nodes.headline_metrics, ["evaluation_metrics", "params:rebalancing"], "evaluation_headline",
             name="headline_metrics"),
        Node(_nodes.build_report,
             ["family_comparison", "rebalancing_gate_metrics", "reader_key", "params:evaluation",
              "params:rebalancing", *results],
             "evaluation_report", name="build_report"),
    ])
