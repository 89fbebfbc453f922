"""De-identification, intensity/geometry preprocessing and the group-aware split."""

from synthmed.pipelines.preprocessing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
