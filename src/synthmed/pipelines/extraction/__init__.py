"""2D slices from volumes and patches from 2D images, per split, with preview grids."""

from synthmed.pipelines.extraction.pipeline import create_pipeline

__all__ = ["create_pipeline"]
