"""Builds data/01_raw/cohort, a multi-patient brain MR test cohort (``synthmed.imaging.cohort``)."""

from synthmed.pipelines.sample_cohort.pipeline import create_pipeline

__all__ = ["create_pipeline"]
