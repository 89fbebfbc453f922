"""Evaluation: fidelity, utility and memorisation of every family, one comparison table, an HTML report."""

from synthmed.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
