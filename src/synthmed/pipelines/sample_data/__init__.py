"""Builds data/01_raw/sample from real medical images bundled in installed packages."""

from synthmed.pipelines.sample_data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
