"""The "lesion patches" study (issue 10): DCGAN lesion and normal patches of the cohort
(synthmed.protocols.lesion_patches)."""

from synthmed.pipelines.study_lesion_patches.pipeline import create_pipeline

__all__ = ["create_pipeline"]
