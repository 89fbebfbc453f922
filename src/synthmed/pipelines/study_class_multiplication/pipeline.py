"""Wiring of the ``study_class_multiplication`` pipeline (on request, after the cohort's data pipeline:
``kedro run --pipelines study_class_multiplication``)."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.study_class_multiplication.nodes")

_PARAMS = "params:study_class_multiplication"
_ARRAYS = "class_multiplication_arrays"
_SYNTHETIC = "class_multiplication_synthetic"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.prepare_class_slices, ["slices", "slice_manifest", _PARAMS], _ARRAYS,
                 name="prepare_class_slices"),
            Node(_nodes.train_class_diffusion, [_ARRAYS, _PARAMS],
                 ["class_multiplication_diffusion", "class_multiplication_history"], name="train_class_diffusion"),
            Node(_nodes.multiply_lesion_class, ["class_multiplication_diffusion", _ARRAYS, _PARAMS],
                 [_SYNTHETIC, "class_multiplication_provenance", "class_multiplication_gate_table",
                  "class_multiplication_gate"], name="multiply_lesion_class"),
            Node(_nodes.score_class_utility, [_ARRAYS, _SYNTHETIC, _PARAMS],
                 ["class_multiplication_classifier", "class_multiplication_classifier_runs",
                  "class_multiplication_utility"], name="score_class_utility"),
            Node(_nodes.score_class_detectability, [_ARRAYS, _SYNTHETIC, _PARAMS],
                 "class_multiplication_detectability", name="score_class_detectability"),
            Node(_nodes.build_class_reader_kit, [_ARRAYS, _SYNTHETIC, _PARAMS],
                 ["class_multiplication_reader_kit", "class_multiplication_reader_key"],
                 name="build_class_reader_kit"),
            Node(_nodes.write_class_multiplication_report,
                 ["class_multiplication_classifier", "class_multiplication_utility",
                  "class_multiplication_detectability", "class_multiplication_gate",
                  "class_multiplication_reader_key", _ARRAYS, _SYNTHETIC, _PARAMS],
                 ["class_multiplication_table", "class_multiplication_report", "class_multiplication_grid",
                  "class_multiplication_metrics"],
                 name="write_class_multiplication_report"),
        ]
    )
