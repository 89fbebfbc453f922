"""Wiring of the ``study_3d`` pipeline (on request: ``kedro run --pipelines study_3d``; it reads
extraction's ``volumes``, written with ``extraction.volumes.enabled: true``)."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.study_3d.nodes")

_REAL = ["volumes", "volume_manifest"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.train_volume_generator, [*_REAL, "params:study_3d"],
                 ["study_3d_generator", "study_3d_training_history"], name="train_volume_generator"),
            Node(_nodes.plan_lesion_volumes, [*_REAL, "params:study_3d"], ["study_3d_conditions", "study_3d_plan"],
                 name="plan_lesion_volumes"),
            Node(_nodes.generate_volumes, ["study_3d_generator", "study_3d_conditions", "study_3d_plan",
                                           "params:study_3d"], ["study_3d_samples", "study_3d_provenance"],
                 name="generate_volumes"),
            Node(_nodes.export_volumes, ["study_3d_samples", "study_3d_provenance", "params:study_3d"],
                 "study_3d_export", name="export_volumes"),
            Node(_nodes.score_fidelity, [*_REAL, "study_3d_samples", "study_3d_provenance", "params:study_3d"],
                 "study_3d_fidelity", name="score_fidelity"),
            Node(_nodes.score_lesion_control, [*_REAL, "study_3d_samples", "study_3d_provenance", "params:study_3d"],
                 ["study_3d_lesion_control", "study_3d_control", "study_3d_segmenter"], name="score_lesion_control"),
            Node(_nodes.score_utility, [*_REAL, "study_3d_samples", "study_3d_provenance", "study_3d_segmenter",
                                        "params:study_3d"],
                 ["study_3d_utility", "study_3d_utility_summary"], name="score_utility"),
            Node(_nodes.run_volume_gate, [*_REAL, "study_3d_samples", "params:study_3d"],
                 ["study_3d_memorisation", "study_3d_gate"], name="run_volume_gate"),
            Node(_nodes.build_reader_kit, [*_REAL, "study_3d_samples", "study_3d_provenance", "params:study_3d"],
                 ["study_3d_reader_kit", "study_3d_reader_key"], name="build_volume_reader_kit"),
            Node(_nodes.write_study_report,
                 [*_REAL, "study_3d_samples", "study_3d_provenance", "study_3d_fidelity", "study_3d_lesion_control",
                  "study_3d_control", "study_3d_memorisation", "study_3d_gate", "study_3d_utility",
                  "study_3d_utility_summary", "params:study_3d"],
                 ["study_3d_metrics", "study_3d_report", "study_3d_views", "study_3d_gate_figure"],
                 name="write_study_report"),
        ]
    )
