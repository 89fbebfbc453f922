"""Wiring of the ``extraction`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.pipelines.extraction.nodes import (
    extract_patches,
    extract_slices,
    plot_patch_preview,
    plot_slice_preview,
    summarise_extraction,
)

_INPUTS = ["preprocessed_images", "preprocessed_masks", "preprocessed_foreground", "preprocessed_manifest",
           "split_table"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(extract_slices, [*_INPUTS, "params:extraction.slices"], ["slices", "slice_manifest"],
                 name="extract_slices"),
            Node(extract_patches, [*_INPUTS, "params:extraction.patches"], ["patches", "patch_manifest"],
                 name="extract_patches"),
            Node(plot_slice_preview, ["slices", "params:extraction.slices", "params:extraction.preview"],
                 "slice_preview", name="plot_slice_preview"),
            Node(plot_patch_preview, ["patches", "params:extraction.patches", "params:extraction.preview"],
                 "patch_preview", name="plot_patch_preview"),
            Node(summarise_extraction, ["slice_manifest", "patch_manifest"], "extraction_metrics",
                 name="summarise_extraction"),
        ]
    )
