"""Tests for synthmed.privacy.nifti_deid: NIfTI free-text fields and header extensions."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from synthmed.privacy.nifti_deid import TEXT_FIELDS, deidentify_nifti

SENTINEL = b"SNTLXQZ"
AFFINE = np.array(
    [[-0.8, 0.0, 0.0, 10.0], [0.0, 0.9, 0.0, -20.0], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]]
)


def _image_with_sentinels() -> nib.Nifti1Image:
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    image = nib.Nifti1Image(data, AFFINE)
    header = image.header
    # Field sizes (nifti1.h): descrip 80, aux_file 24, intent_name 16, db_name 18, data_type 10.
    header["descrip"] = SENTINEL + b" scanned at St Example"
    header["aux_file"] = SENTINEL + b".lut"
    header["intent_name"] = SENTINEL
    header["db_name"] = SENTINEL + b"_db"
    # Extension code 6 = "comment" (NIfTI-1 extension codes, nifti1.h NIFTI_ECODE_COMMENT).
    header.extensions.append(nib.nifti1.Nifti1Extension(6, b"patient " + SENTINEL + b" comment"))
    return image


def test_sentinel_is_present_before_de_identification() -> None:
    # Guards the test itself: the sentinel must be in the bytes we then expect it to leave.
    assert _image_with_sentinels().to_bytes().count(SENTINEL) == 5


def test_sentinel_is_gone_from_the_bytes_and_counts_are_reported() -> None:
    clean, actions = deidentify_nifti(_image_with_sentinels())
    raw = clean.to_bytes()
    assert SENTINEL not in raw
    assert SENTINEL not in gzip.compress(raw)  # trivially, but as written to .nii.gz too
    assert SENTINEL.lower() not in raw.lower()
    assert actions == {"text_fields_blanked": 4, "extensions_dropped": 1}
    for name in TEXT_FIELDS:
        assert clean.header[name].tobytes().strip(b"\x00") == b""
    assert len(clean.header.extensions) == 0


def test_data_and_affine_are_unchanged_after_a_byte_round_trip() -> None:
    original = _image_with_sentinels()
    clean, _ = deidentify_nifti(original)
    reloaded = nib.Nifti1Image.from_bytes(clean.to_bytes())
    np.testing.assert_array_equal(np.asarray(reloaded.dataobj), np.asarray(original.dataobj))
    assert reloaded.get_data_dtype() == np.int16
    np.testing.assert_allclose(reloaded.affine, AFFINE, atol=1e-6)
    np.testing.assert_allclose(reloaded.header.get_zooms(), (0.8, 0.9, 2.5), atol=1e-6)


def test_input_image_is_not_mutated() -> None:
    original = _image_with_sentinels()
    before = original.to_bytes()
    deidentify_nifti(original)
    assert original.to_bytes() == before
    assert len(original.header.extensions) == 1
    assert original.header["descrip"].tobytes().startswith(SENTINEL)


def test_clean_image_reports_nothing_to_do() -> None:
    image = nib.Nifti1Image(np.zeros((2, 2, 2), dtype=np.float32), np.eye(4))
    clean, actions = deidentify_nifti(image)
    assert actions == {"text_fields_blanked": 0, "extensions_dropped": 0}
    np.testing.assert_array_equal(clean.get_fdata(), image.get_fdata())
