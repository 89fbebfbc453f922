"""Release: each trained generator with its evaluation and gate figures in the model card (after evaluation)."""

from synthmed.pipelines.release.pipeline import create_pipeline

__all__ = ["create_pipeline"]
