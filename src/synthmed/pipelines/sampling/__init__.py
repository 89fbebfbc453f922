"""Sampling: plan-driven generation from a trained generator, per family namespace."""

from synthmed.pipelines.sampling.pipeline import create_pipeline

__all__ = ["create_pipeline"]
