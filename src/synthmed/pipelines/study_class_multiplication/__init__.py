"""The "class multiplication" study (issue 10): a class-conditional DDPM multiplies the lesion class of the
cohort's slices (synthmed.protocols.class_multiplication)."""

from synthmed.pipelines.study_class_multiplication.pipeline import create_pipeline

__all__ = ["create_pipeline"]
