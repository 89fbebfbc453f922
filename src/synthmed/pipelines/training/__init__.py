"""Generator training: one template pipeline, namespaced per family (ddpm, pix2pix, dcgan)."""

from synthmed.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
