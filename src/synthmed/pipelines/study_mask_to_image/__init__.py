"""The "mask to image" study: Pix2Pix from vessel masks to whole fundus images (synthmed.protocols.mask_to_image)."""

from synthmed.pipelines.study_mask_to_image.pipeline import create_pipeline

__all__ = ["create_pipeline"]
