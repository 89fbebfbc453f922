"""Rebalancing: fill the minority classes of the train split with synthetic images and publish."""

from synthmed.pipelines.rebalancing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
