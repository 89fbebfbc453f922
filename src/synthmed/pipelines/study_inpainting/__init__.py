"""The "inpainting" study (issue 10): diffusion, Pix2Pix and the neighbouring slice fill held-out slices' regions
(synthmed.protocols.inpainting)."""

from synthmed.pipelines.study_inpainting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
