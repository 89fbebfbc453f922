"""Feature encoders: the domain feature network of each source (trained on the real training split)."""

from synthmed.pipelines.feature_encoders.pipeline import create_pipeline

__all__ = ["create_pipeline"]
