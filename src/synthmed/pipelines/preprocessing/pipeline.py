"""Wiring of the ``preprocessing`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.pipelines.preprocessing.nodes import (
    assign_item_splits,
    deidentify_sources,
    preprocess_items,
    summarise_preprocessing,
)
from synthmed.pipelines.preprocessing.pixel_nodes import check_pixels


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                check_pixels,
                ["raw_sources@files", "ingestion_manifest", "ingested_images", "params:preprocessing.pixels",
                 "params:preprocessing.deid"],
                "pixel_checks",
                name="check_pixels",
            ),
            Node(
                deidentify_sources,
                ["raw_sources@files", "ingestion_manifest", "ingested_images", "ingested_masks",
                 "pseudonymisation_key", "params:preprocessing.deid", "params:preprocessing.workers",
                 "pixel_checks"],
                ["deidentified_files", "deid_audit", "deid_quarantine"],
                name="deidentify_sources",
            ),
            Node(
                preprocess_items,
                ["ingestion_manifest", "ingested_images", "ingested_masks", "deid_quarantine",
                 "params:preprocessing", "pixel_checks"],
                ["preprocessed_images", "preprocessed_masks", "preprocessed_foreground",
                 "preprocessed_manifest"],
                name="preprocess_items",
            ),
            Node(assign_item_splits, ["preprocessed_manifest", "params:preprocessing.split"],
                 "split_table", name="assign_item_splits"),
            Node(
                summarise_preprocessing,
                ["ingestion_manifest", "deid_audit", "deid_quarantine", "preprocessed_manifest",
                 "split_table"],
                "preprocessing_metrics",
                name="summarise_preprocessing",
                tags=["gate"],  # the conservation check: staged primary outputs wait for it
            ),
        ]
    )
