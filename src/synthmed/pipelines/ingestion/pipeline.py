"""Wiring of the ``ingestion`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.ingestion.nodes")

_READER_INPUTS = ["raw_sources@files", "source_listing", "label_table", "pseudonymisation_key", "params:ingestion"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            # source_listing (in memory): every file found; _nodes.combine_ingestion saves it as
            # source_inventory with the files the readers ignored (non-image, duplicates) marked.
            Node(_nodes.inventory_sources, ["raw_sources@files", "params:ingestion"], "source_listing",
                 name="inventory_sources"),
            Node(_nodes.read_label_table, ["raw_sources@files", "params:ingestion"], "label_table",
                 name="read_label_table"),
            Node(_nodes.read_raster_items, _READER_INPUTS, ["raster_manifest", "raster_rejected", "raster_items"],
                 name="read_raster_items"),
            Node(_nodes.read_nifti_items, _READER_INPUTS, ["nifti_manifest", "nifti_rejected", "nifti_items"],
                 name="read_nifti_items"),
            # One pass per DICOM file: pixels, de-identified copy and audit counts (issue 9 item 11);
            # the copies wait in the local candidate layer until preprocessing's pixel checks.
            Node(_nodes.read_dicom_items, [*_READER_INPUTS, "params:preprocessing.deid"],
                 ["dicom_manifest", "dicom_rejected", "dicom_items", "deid_candidates", "deid_candidate_items"],
                 name="read_dicom_items"),
            Node(
                _nodes.combine_ingestion,
                ["source_listing", "raster_manifest", "nifti_manifest", "dicom_manifest",
                 "raster_rejected", "nifti_rejected", "dicom_rejected",
                 "raster_items", "nifti_items", "dicom_items"],
                ["ingestion_manifest", "ingestion_rejected", "ingested_images", "ingested_masks",
                 "ingestion_metrics", "source_inventory"],
                name="combine_ingestion",
            ),
            # tag "gate": nothing staged in the primary layer is published before it passes
            # (synthmed.hooks.StagingHook), whatever order the runner picks.
            Node(_nodes.enforce_rejection_policy, ["ingestion_metrics", "params:ingestion"], None,
                 name="enforce_rejection_policy", tags=["gate"]),
        ]
    )
