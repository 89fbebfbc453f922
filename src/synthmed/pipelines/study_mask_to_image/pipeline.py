"""Wiring of the ``study_mask_to_image`` pipeline (not part of the default pipeline; run on purpose:
``kedro run --pipelines study_mask_to_image``)."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.study_mask_to_image.nodes")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.build_study_photographs, ["params:sample_data.fundus", "params:study_mask_to_image"],
                 ["mask_to_image_arrays", "mask_to_image_split"], name="build_study_photographs"),
            Node(_nodes.train_study_generator, ["mask_to_image_arrays", "mask_to_image_split",
                                                "params:study_mask_to_image"],
                 ["mask_to_image_generator", "mask_to_image_history"], name="train_study_generator"),
            Node(_nodes.evaluate_study, ["mask_to_image_arrays", "mask_to_image_split", "mask_to_image_generator",
                                         "params:study_mask_to_image"],
                 ["mask_to_image_table", "mask_to_image_report", "mask_to_image_grid", "mask_to_image_metrics"],
                 name="evaluate_study"),
        ]
    )
