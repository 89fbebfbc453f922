"""Wiring of the ``sample_data`` pipeline."""

from kedro.pipeline import Node, Pipeline

from synthmed.core.lazy import lazy_module

_nodes = lazy_module("synthmed.pipelines.sample_data.nodes")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(_nodes.build_brain_sample, "params:sample_data.brain", ["sample_t1", "sample_tissue"],
                 name="build_brain_sample"),
            Node(_nodes.build_fundus_sample, "params:sample_data.fundus",
                 ["sample_fundus_files", "sample_fundus_rows"], name="build_fundus_sample"),
            Node(_nodes.collect_dicom_samples, None, "sample_dicom_files", name="collect_dicom_samples"),
            Node(
                _nodes.assemble_sample_folder,
                ["sample_t1", "sample_tissue", "sample_fundus_files", "sample_fundus_rows",
                 "sample_dicom_files", "sample_readme"],
                # `raw_sources@sample`: the sample's fixed folder, transcoded with the `raw_sources@files`
                # that ingestion reads, so a combined run writes the sample first (synthmed.hooks).
                "raw_sources@sample",
                name="assemble_sample_folder",
            ),
        ]
    )
