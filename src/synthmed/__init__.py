"""synthmed: versioned, de-identified synthetic medical imaging datasets."""

__version__ = "0.1.0"
