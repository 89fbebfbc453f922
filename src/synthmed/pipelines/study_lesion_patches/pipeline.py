"""Wiring of the ``study_lesion_patches`` pipeline (on request, after ``make demo`` or ``kedro run``:
``kedro run --pipelines study_lesion_patches``). Its patches are the extraction's and its model
is the demo's ``dcgan`` (trained on those patches), so it trains nothing itself."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.study_lesion_patches.nodes")

_PATCHES = ["lesion_patches", "lesion_patch_manifest"]
_PARAMS = "params:study_lesion_patches"
_EXTRACTION = "params:extraction.lesion_patches"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.sample_patches, ["dcgan.generator", *_PATCHES, _PARAMS],
                 ["lesion_patches_synthetic", "lesion_patches_provenance"], name="sample_patches"),
            Node(_nodes.score_patch_fidelity, [*_PATCHES, "lesion_patches_synthetic", _PARAMS, _EXTRACTION,
                                               "params:dcgan.training"],
                 ["lesion_patches_fid_table", "lesion_patches_fidelity", "lesion_patches_tsne",
                  "lesion_patches_tsne_png"], name="score_patch_fidelity"),
            Node(_nodes.score_patch_utility, [*_PATCHES, "lesion_patches_synthetic", _PARAMS],
                 ["lesion_patches_utility_table", "lesion_patches_utility_runs", "lesion_patches_utility"],
                 name="score_patch_utility"),
            Node(_nodes.write_lesion_patches_report,
                 ["lesion_patches_fid_table", "lesion_patches_utility_table", "lesion_patches_fidelity",
                  "lesion_patches_utility", "lesion_patches_tsne_png", *_PATCHES, "lesion_patches_synthetic",
                  _PARAMS, _EXTRACTION],
                 ["lesion_patches_report", "lesion_patches_grid", "lesion_patches_metrics"],
                 name="write_lesion_patches_report"),
        ]
    )
