"""The source formats ingestion reads and their file suffixes (no imaging library: the parameter
check validates ``ingestion.formats`` against these without importing pydicom)."""

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")
FORMATS = ("raster", "dicom", "nifti")
