"""Wiring of the ``preprocessing`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.preprocessing.nodes")
_pixel_nodes = lazy_module("synthmed.pipelines.preprocessing.pixel_nodes")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            # DICOM: no raw file is parsed here; ingestion's one pass left the de-identified
            # copies and their header facts in the candidate layer (deid_candidates).
            Node(
                _pixel_nodes.check_pixels,
                ["ingestion_manifest", "ingested_images", "deid_candidate_items", "params:preprocessing.pixels",
                 "params:preprocessing.deid"],
                "pixel_checks",
                name="check_pixels",
            ),
            Node(
                _nodes.deidentify_sources,
                ["raw_sources@files", "ingestion_manifest", "ingested_images", "ingested_masks",
                 "deid_candidates", "deid_candidate_items", "params:preprocessing.deid", "pixel_checks"],
                ["deidentified_files", "deid_audit", "deid_quarantine"],
                name="deidentify_sources",
            ),
            Node(
                _nodes.preprocess_items,
                ["ingestion_manifest", "ingested_images", "ingested_masks", "deid_quarantine",
                 "params:preprocessing", "pixel_checks"],
                ["preprocessed_images", "preprocessed_masks", "preprocessed_foreground",
                 "preprocessed_manifest"],
                name="preprocess_items",
            ),
            Node(_nodes.assign_item_splits,
                 ["preprocessed_manifest", "preprocessed_masks", "params:preprocessing.split"],
                 "split_table", name="assign_item_splits"),
            Node(
                _nodes.summarise_preprocessing,
                ["ingestion_manifest", "deid_audit", "deid_quarantine", "preprocessed_manifest",
                 "split_table"],
                "preprocessing_metrics",
                name="summarise_preprocessing",
                tags=["gate"],  # the conservation check: staged primary outputs wait for it
            ),
        ]
    )
