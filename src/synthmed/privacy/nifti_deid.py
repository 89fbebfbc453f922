"""NIfTI header de-identification: free-text fields blanked, extensions dropped.

NIfTI-1 header fields that can carry text (NIfTI-1.1 specification, nifti1.h):
``descrip`` (80 bytes), ``aux_file`` (24), ``intent_name`` (16), and the unused Analyze 7.5
fields ``db_name`` (18) and ``data_type`` (10). Header extensions (``esize``/``ecode``
blocks, e.g. DICOM headers embedded by dcm2niix, AFNI or XML) are dropped whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: nibabel (and scipy with it) load where images are read
    import nibabel as nib

TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name", "data_type")


def deidentify_nifti(image: nib.Nifti1Image) -> tuple[nib.Nifti1Image, dict[str, int]]:
    """A copy of ``image`` with blank text fields and no extensions; the input is untouched.

    Returns:
        ``(clean_image, actions)`` where ``actions`` counts what was done, e.g.
        ``{"text_fields_blanked": 2, "extensions_dropped": 1}``.
    """
    header = image.header.copy()
    blanked = 0
    for name in TEXT_FIELDS:
        if name in header and bytes(header[name].tobytes()).strip(b"\x00 "):
            blanked += 1
        if name in header:
            header[name] = b""
    dropped = len(header.extensions)
    header.extensions.clear()
    clean = image.__class__(image.dataobj, image.affine, header)
    return clean, {"text_fields_blanked": blanked, "extensions_dropped": dropped}
