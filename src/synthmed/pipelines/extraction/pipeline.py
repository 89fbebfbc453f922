"""Wiring of the ``extraction`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.extraction.nodes")

_INPUTS = ["preprocessed_images", "preprocessed_masks", "preprocessed_foreground", "preprocessed_manifest",
           "split_table"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.extract_slices, [*_INPUTS, "params:extraction.slices"], ["slices", "slice_manifest"],
                 name="extract_slices"),
            Node(_nodes.extract_patches, [*_INPUTS, "params:extraction.patches"], ["patches", "patch_manifest"],
                 name="extract_patches"),
            Node(_nodes.extract_volumes, ["preprocessed_images", "preprocessed_masks", "preprocessed_manifest",
                                          "split_table", "params:extraction.volumes"], ["volumes", "volume_manifest"],
                 name="extract_volumes"),
            Node(_nodes.extract_lesion_patches, ["preprocessed_images", "preprocessed_masks", "preprocessed_manifest",
                                                 "split_table", "params:extraction.lesion_patches"],
                 ["lesion_patches", "lesion_patch_manifest"], name="extract_lesion_patches"),
            Node(_nodes.plot_slice_preview, ["slices", "params:extraction.slices", "params:extraction.preview"],
                 "slice_preview", name="plot_slice_preview"),
            Node(_nodes.plot_patch_preview, ["patches", "params:extraction.patches", "params:extraction.preview"],
                 "patch_preview", name="plot_patch_preview"),
            Node(_nodes.plot_lesion_patch_preview, ["lesion_patches", "params:extraction.preview"],
                 "lesion_patch_preview", name="plot_lesion_patch_preview"),
            Node(_nodes.summarise_extraction, ["slice_manifest", "patch_manifest", "lesion_patch_manifest"],
                 "extraction_metrics",
                 name="summarise_extraction"),
        ]
    )
