"""Reads a folder of 2D images, DICOM files and NIfTI volumes into an array store."""

from synthmed.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
