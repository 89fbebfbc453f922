"""The 3D study (issue 11): pix2pix3d on sub-volumes, lesion-controlled sampling, export, evaluation, report."""

from synthmed.pipelines.study_3d.pipeline import create_pipeline

__all__ = ["create_pipeline"]
