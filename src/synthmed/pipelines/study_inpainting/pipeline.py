"""Wiring of the ``study_inpainting`` pipeline (not part of the default pipeline; run on purpose, after the
cohort's ``sample_cohort`` and ``data``: ``kedro run --pipelines study_inpainting``)."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.study_inpainting.nodes")
PARAMS = "params:study_inpainting"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.prepare_inpainting_slices, ["slices", "slice_manifest", PARAMS],
                 ["inpainting_arrays", "inpainting_cases"], name="prepare_inpainting_slices"),
            Node(_nodes.train_inpainting_diffusion, ["inpainting_arrays", PARAMS],
                 ["inpainting_diffusion", "inpainting_diffusion_history"], name="train_inpainting_diffusion"),
            Node(_nodes.train_inpainting_pix2pix, ["inpainting_arrays", PARAMS],
                 ["inpainting_pix2pix", "inpainting_pix2pix_history"], name="train_inpainting_pix2pix"),
            Node(_nodes.inpaint_held_out, ["inpainting_arrays", "inpainting_cases", "inpainting_diffusion",
                                           "inpainting_pix2pix", PARAMS],
                 "inpainting_fills", name="inpaint_held_out"),
            Node(_nodes.evaluate_inpainting, ["inpainting_arrays", "inpainting_cases", "inpainting_fills", PARAMS],
                 ["inpainting_table", "inpainting_report", "inpainting_grid_inside_mask",
                  "inpainting_grid_outside_box", "inpainting_grid_new_lesion", "inpainting_metrics"],
                 name="evaluate_inpainting"),
        ]
    )
