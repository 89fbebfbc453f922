"""Tests for the PS3.15 Annex E Basic Profile de-identification (synthmed.privacy.dicom_deid)."""

from __future__ import annotations

import copy
import datetime
import io

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from synthmed.privacy.dicom_deid import (
    TABLE_EDITION,
    DicomDeidConfig,
    deidentify,
    dicom_patient_identity,
    quarantine_reason,
    table_action,
)
from synthmed.privacy.pseudonyms import pseudonym
from tests.dicom_factory import (
    DATES,
    DATETIMES,
    INNER_SEQUENCE,
    OUTER_SEQUENCE,
    PRIVATE_CREATOR,
    PRIVATE_GROUP,
    SENTINEL,
    dicom_bytes,
    make_sentinel_dicom,
    sentinel_digits,
    uid_values,
)

KEY = b"test key for synthmed dicom de-identification"
OTHER_KEY = b"another test key, not the same one at all"
CLASS_UID_KEYWORDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID",
                      "TransferSyntaxUID", "ImplementationClassUID"}


def _deid(ds: Dataset, key: bytes = KEY, **config: object) -> Dataset:
    result = deidentify(ds, key, DicomDeidConfig(**config))
    assert result.dataset is not None, result.quarantine_reason
    return result.dataset


def _roundtrip(ds: Dataset) -> Dataset:
    """Write and read back, so that assertions see what a consumer would see."""
    return pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))


def _walk(ds: Dataset):
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from _walk(item)


def _inner_item(ds: Dataset) -> Dataset:
    return getattr(getattr(ds, OUTER_SEQUENCE)[0], INNER_SEQUENCE)[0]


def _day(value: str) -> datetime.date:
    return datetime.datetime.strptime(value[:8], "%Y%m%d").date()


# --- identifying text ---------------------------------------------------------------------


def test_factory_plants_the_sentinel_everywhere() -> None:
    """Guards the other tests: the input really carries the sentinel at every level."""
    ds = make_sentinel_dicom()
    raw = dicom_bytes(ds)
    assert raw.lower().count(SENTINEL.lower().encode()) > 100
    assert sentinel_digits().encode() in raw
    assert SENTINEL in str(_inner_item(ds).PatientName)
    assert any(e.tag.is_private for e in _inner_item(ds))


def test_no_sentinel_bytes_in_deidentified_file() -> None:
    out = dicom_bytes(_deid(make_sentinel_dicom()))
    assert SENTINEL.lower().encode() not in out.lower()
    assert sentinel_digits().encode() not in out


@pytest.mark.parametrize("dates", ["shift", "remove"])
def test_no_sentinel_with_either_date_mode(dates: str) -> None:
    out = dicom_bytes(_deid(make_sentinel_dicom(), dates=dates))
    assert SENTINEL.lower().encode() not in out.lower()


def test_nested_sequence_attributes_are_deidentified() -> None:
    inner = _inner_item(_roundtrip(_deid(make_sentinel_dicom())))
    assert inner.PatientName == ""  # Z
    assert inner.PatientID == ""  # Z/D -> Z
    assert inner.PersonName == "ANONYMIZED"  # (0040,A123) D
    assert "InstitutionName" not in inner  # X/Z/D -> X
    assert "StudyDescription" not in inner  # X
    assert inner.ReferencedSOPInstanceUID.startswith("2.25.")  # U
    assert inner.ReferencedSOPClassUID == CTImageStorage  # not in the table: kept


def test_table_action_semantics_by_vr() -> None:
    ds = make_sentinel_dicom()
    ds.ContentSequence = Sequence([Dataset()])  # (0040,A730) D on SQ -> empty sequence
    ds.ContentSequence[0].PersonName = "SECRET^NAME"
    ds.AcquisitionTime = "101010"  # X/Z -> X
    ds.ReferencedImageSequence = Sequence([Dataset()])  # (0008,1140) X/Z/U*
    ref = ds.ReferencedImageSequence[0]
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ref.ReferencedFrameNumber = 1
    ds.FailedSOPInstanceUIDList = ["1.2.3.1", "1.2.3.2"]  # U, multi-valued
    out = _roundtrip(_deid(ds))
    assert len(out.ContentSequence) == 0
    assert "AcquisitionTime" not in out
    assert out.ContentTime == ""  # Z/D -> Z
    assert out.StudyTime == ""  # Z
    assert out.ClinicalTrialSponsorName == "ANONYMIZED"  # D on LO
    assert out.DestinationAE == "ANONYMIZED"  # D on AE
    (ref_out,) = out.ReferencedImageSequence
    assert ref_out.ReferencedSOPClassUID == CTImageStorage
    assert ref_out.ReferencedSOPInstanceUID.startswith("2.25.")
    assert "ReferencedFrameNumber" not in ref_out
    failed = list(out.FailedSOPInstanceUIDList)
    assert len(failed) == 2 and all(u.startswith("2.25.") for u in failed)
    assert failed[0] != failed[1]


def test_table_action_matches_repeating_groups_with_masks() -> None:
    assert table_action(0x60024000) == "X"  # Overlay Comments, group 6002 via mask FF00
    assert table_action(0x60003000) == "X"  # Overlay Data
    assert table_action(0x50100005) == "X"  # any element of a curve group 50xx
    assert table_action(0x60020010) is None  # Overlay Rows: not listed (removed anyway)
    assert table_action(0x00100010) == "Z"
    assert table_action(0x00080018) == "U"
    assert table_action(0x00080016) is None  # SOP Class UID is kept


def test_patient_id_and_name_are_pseudonyms() -> None:
    ds = make_sentinel_dicom()
    result = deidentify(ds, KEY, DicomDeidConfig())
    assert result.patient_key == pseudonym(KEY, "patient", "PAT-SNTLXQZ-001")
    assert result.dataset.PatientID == "SM" + result.patient_key
    assert result.dataset.PatientName == "SM" + result.patient_key
    assert all(isinstance(v, int) for v in result.actions.values())
    assert result.actions["private_removed"] > 0 and result.actions["uid_remapped"] > 0


def test_dataset_without_file_meta_is_rejected() -> None:
    ds = make_sentinel_dicom()
    del ds.file_meta
    with pytest.raises(ValueError, match=r"file_meta\.TransferSyntaxUID"):
        deidentify(ds, KEY, DicomDeidConfig())


def test_dicom_patient_identity_fallbacks() -> None:
    ds = make_sentinel_dicom(patient_id="P1")
    assert dicom_patient_identity(ds) == "P1"
    ds.PatientID = "  "
    assert dicom_patient_identity(ds) == "study:" + ds.StudyInstanceUID
    del ds.StudyInstanceUID
    assert dicom_patient_identity(ds) == "sop:" + ds.SOPInstanceUID
    del ds.SOPInstanceUID
    with pytest.raises(ValueError, match="PatientID"):
        dicom_patient_identity(ds)


# --- private tags, overlays, signatures -------------------------------------------------


def test_private_tags_removed_at_every_level() -> None:
    out = _roundtrip(_deid(make_sentinel_dicom()))
    assert not [e.tag for e in _walk(out) if e.tag.is_private]


def test_private_allowlist_keeps_only_listed_elements() -> None:
    allow = (f"{PRIVATE_CREATOR}|{PRIVATE_GROUP:04x}|04",)
    out = _roundtrip(_deid(make_sentinel_dicom(), keep_private=allow))
    for level in (out, _inner_item(out)):
        block = level.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        assert block[0x04].value == "1.5"
        creator_tag = Tag(PRIVATE_GROUP, block.get_tag(0x04).element >> 8)
        assert sorted(e.tag for e in level if e.tag.is_private) == [
            creator_tag, block.get_tag(0x04)
        ]


def test_removes_overlays_curves_icons_and_signatures_at_every_level() -> None:
    ds = make_sentinel_dicom()
    tags = [0x60000010, 0x60003000, 0x60024000, 0x50000005, 0x00880200, 0x04000561,
            0xFFFAFFFA, 0x4FFE0001, 0x04000500]
    for level in (ds, _inner_item(ds)):
        level.add_new(0x60000010, "US", 16)  # Overlay Rows: not in the table
        level.add_new(0x60003000, "OW", b"\x00\x01" * 8)
        level.add_new(0x60024000, "LT", "overlay comment")
        level.add_new(0x50000005, "US", 2)  # Curve Dimensions
        for tag in tags[4:]:
            level.add_new(tag, "SQ", Sequence([Dataset()]))
    # An image with overlay planes is quarantined unless allowed and marked free of burned-in text.
    ds.BurnedInAnnotation = "NO"
    out = _roundtrip(_deid(ds, allow_classes=("OVERLAY",)))
    for level in (out, _inner_item(out)):
        assert not [hex(t) for t in tags if t in level]


# --- UIDs -------------------------------------------------------------------------------


def test_uids_remapped_consistently_and_class_uids_kept() -> None:
    first = make_sentinel_dicom()
    second = make_sentinel_dicom()
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"  # same study, another instance
    out1, out2 = _deid(first), _deid(second)
    assert out1.StudyInstanceUID == out2.StudyInstanceUID
    assert out1.SeriesInstanceUID == out2.SeriesInstanceUID
    assert out1.SOPInstanceUID != out2.SOPInstanceUID
    assert out1.SOPClassUID == CTImageStorage
    assert out1.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    for value, keyword in uid_values(out1).items():
        assert keyword in CLASS_UID_KEYWORDS or value.startswith("2.25."), keyword


def test_no_original_uid_in_output_bytes() -> None:
    ds = make_sentinel_dicom()
    originals = [v for v, kw in uid_values(ds).items() if kw not in CLASS_UID_KEYWORDS]
    assert len(originals) >= 7
    out = dicom_bytes(_deid(ds))
    assert not [uid for uid in originals if uid.encode() in out]


def test_different_key_gives_different_uids_and_patient_key() -> None:
    ds = make_sentinel_dicom()
    a, b = deidentify(ds, KEY, DicomDeidConfig()), deidentify(ds, OTHER_KEY, DicomDeidConfig())
    assert a.patient_key != b.patient_key
    assert a.dataset.StudyInstanceUID != b.dataset.StudyInstanceUID
    assert a.dataset.SOPInstanceUID != b.dataset.SOPInstanceUID


# --- dates ------------------------------------------------------------------------------


def test_date_shift_is_one_offset_per_patient() -> None:
    study1 = make_sentinel_dicom()
    study2 = make_sentinel_dicom()
    study2.StudyInstanceUID = study2.StudyInstanceUID + ".9"
    study2.StudyDate = "20230601"
    out1, out2 = _deid(study1), _deid(study2)
    offset1 = _day(out1.StudyDate) - _day(study1.StudyDate)
    offset2 = _day(out2.StudyDate) - _day(study2.StudyDate)
    assert offset1 == offset2
    assert -3650 <= offset1.days <= -365
    assert _day(out1.SeriesDate) - _day(study1.SeriesDate) == offset1
    assert _day(_inner_item(out1).ContentDate) - _day(DATES["ContentDate"]) == offset1
    # DT: the date is shifted by the same offset, the time of day dropped
    assert len(out1.AcquisitionDateTime) == 8
    assert _day(out1.AcquisitionDateTime) - _day(DATETIMES["AcquisitionDateTime"]) == offset1
    assert "PatientBirthDate" in out1 and not out1.PatientBirthDate  # Z, never shifted
    assert out1.LongitudinalTemporalInformationModified == "MODIFIED"


def test_different_key_gives_different_offset() -> None:
    ds = make_sentinel_dicom()
    assert _deid(ds, KEY).StudyDate != _deid(ds, OTHER_KEY).StudyDate


def test_dates_not_shifted_twice() -> None:
    ds = make_sentinel_dicom()
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    out = _deid(ds)
    assert out.StudyDate == DATES["StudyDate"]
    assert out.AcquisitionDateTime == DATETIMES["AcquisitionDateTime"][:8]  # time dropped
    # and de-identifying an output again leaves its dates alone
    once = _deid(make_sentinel_dicom())
    assert _deid(once).StudyDate == once.StudyDate


def test_dates_not_in_the_table_follow_the_date_policy() -> None:
    ds = make_sentinel_dicom()
    ds.StudyUpdateDateTime = "20210319120000"  # (0008,041F) DT, not in Table E.1-1
    shifted = _deid(ds)
    offset = _day(shifted.StudyDate) - _day(DATES["StudyDate"])
    assert _day(shifted.StudyUpdateDateTime) - _day("20210319") == offset
    ds.DateTime = "2004"  # (0040,A120) DT, year only: cannot be shifted by days
    assert not _deid(ds).DateTime
    assert not _deid(ds, dates="remove").StudyUpdateDateTime


# A DT with a time and a UTC offset, top level and inside a sequence item; digits chosen so
# that none of them (1, 3, 4, 5, 7, 9 as "hhmmss.ffffff" and "&zzxx") is in a shifted date.
_TIMED_DT = "20210316134759.975531+0945"
_TIME_DIGITS = ("134759", "975531", "0945", "1347", "4759")


def _timed_dataset() -> Dataset:
    ds = make_sentinel_dicom()
    ds.AcquisitionDateTime = _TIMED_DT
    ds.StudyUpdateDateTime = "20210319134759"  # (0008,041F): not in Table E.1-1
    ds.SecondaryReviewTime = "134759"  # (0014,0103) TM: not in Table E.1-1
    ds.TimezoneOffsetFromUTC = "+0945"
    inner = _inner_item(ds)
    inner.AcquisitionDateTime = _TIMED_DT
    inner.ContentTime = "134759.975531"
    inner.SecondaryReviewTime = "134759"
    return ds


def _all_text(ds: Dataset) -> str:
    return "|".join(str(element.value) for element in _walk(ds) if element.VR in ("DA", "DT", "TM"))


@pytest.mark.parametrize("dates", ["shift", "remove"])
def test_no_time_of_day_survives_in_any_vr_at_any_level(dates: str) -> None:
    out = _roundtrip(_deid(_timed_dataset(), dates=dates))
    text = _all_text(out)
    assert not [digits for digits in _TIME_DIGITS if digits in text], text
    assert not [d for d in ("134759", "975531") if d.encode() in dicom_bytes(out)]
    for item in (out, _inner_item(out)):
        tms = [element for element in item if element.VR == "TM"]
        assert all(element.value in ("", None, "000000") for element in tms), tms
        assert "SecondaryReviewTime" not in item or not item.SecondaryReviewTime
        assert "ContentTime" not in item or not item.ContentTime
    assert "TimezoneOffsetFromUTC" not in out


def test_datetime_keeps_only_the_date_shifted_like_the_patients_dates() -> None:
    ds = _timed_dataset()
    out = _roundtrip(_deid(ds))
    offset = _day(out.StudyDate) - _day(DATES["StudyDate"])
    assert offset.days != 0
    inner = _inner_item(out)
    for value in (out.AcquisitionDateTime, inner.AcquisitionDateTime):
        assert len(value) == 8 and value.isdigit()  # YYYYMMDD: a valid DT, no time, no offset
        assert _day(value) - _day(_TIMED_DT) == offset
    assert _day(inner.ContentDate) - _day(DATES["ContentDate"]) == offset  # DA, same offset
    assert out.StudyUpdateDateTime == (_day("20210319") + offset).strftime("%Y%m%d")
    assert dicom_bytes(_deid(ds)) == dicom_bytes(_deid(_timed_dataset()))  # same key, same bytes


@pytest.mark.parametrize("partial", ["2021", "202103", "2021+0945", "202103-0100", "2021031613"])
def test_partial_datetimes_are_handled(partial: str) -> None:
    ds = _timed_dataset()
    ds.AcquisitionDateTime = partial
    _inner_item(ds).AcquisitionDateTime = partial
    out = _roundtrip(_deid(ds))
    for value in (out.AcquisitionDateTime, _inner_item(out).AcquisitionDateTime):
        if len(partial.split("+")[0].split("-")[0]) < 8:
            assert not value  # a year or month cannot be shifted by days: emptied
        else:
            assert value == (_day(partial) + (_day(out.StudyDate) - _day(DATES["StudyDate"]))).strftime("%Y%m%d")


def test_already_shifted_datetimes_still_lose_their_time() -> None:
    ds = _timed_dataset()
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    out = _deid(ds)
    assert out.AcquisitionDateTime == _inner_item(out).AcquisitionDateTime == _TIMED_DT[:8]
    assert not [digits for digits in _TIME_DIGITS if digits in _all_text(out)]


def test_dates_remove_leaves_no_original_date() -> None:
    ds = make_sentinel_dicom()
    ds.StudyUpdateDateTime = "20210319120000"  # not in the table
    out = _deid(ds, dates="remove")
    raw = dicom_bytes(out)
    assert not [d for d in [*DATES.values(), "20210319"] if d.encode() in raw]
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100"]


# --- profile markers, file meta, determinism -------------------------------------------


def test_identity_removed_and_method_codes() -> None:
    out = _roundtrip(_deid(make_sentinel_dicom()))
    assert out.PatientIdentityRemoved == "YES"
    assert TABLE_EDITION in out.DeidentificationMethod
    assert len(out.DeidentificationMethod) <= 64  # LO
    items = {(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning)
             for i in out.DeidentificationMethodCodeSequence}
    # PS3.16 CID 7050 De-identification Method
    assert items == {
        ("113100", "DCM", "Basic Application Confidentiality Profile"),
        ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"),
    }


def test_file_meta_regenerated_and_preamble_zero() -> None:
    ds = make_sentinel_dicom()
    ds.preamble = b"SNTLXQZ".ljust(128, b"!")
    out = _deid(ds)
    raw = dicom_bytes(out)
    assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM"
    meta = pydicom.dcmread(io.BytesIO(raw)).file_meta
    assert meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationClassUID == PYDICOM_IMPLEMENTATION_UID
    assert "SourceApplicationEntityTitle" not in meta


def test_same_input_and_key_give_identical_bytes() -> None:
    assert dicom_bytes(_deid(make_sentinel_dicom())) == dicom_bytes(_deid(make_sentinel_dicom()))


def test_input_is_not_mutated() -> None:
    ds = make_sentinel_dicom()
    before, snapshot = dicom_bytes(ds), copy.deepcopy(ds)
    deidentify(ds, KEY, DicomDeidConfig())
    assert dicom_bytes(ds) == before
    assert ds == snapshot


# --- quarantine ---------------------------------------------------------------------------


def test_burned_in_annotation_is_quarantined() -> None:
    ds = make_sentinel_dicom()
    ds.BurnedInAnnotation = "YES"
    result = deidentify(ds, KEY, DicomDeidConfig())
    assert result.dataset is None and "(0028,0301)" in result.quarantine_reason
    assert result.actions == {}
    no_check = DicomDeidConfig(quarantine_burned_in=False)
    assert quarantine_reason(ds, no_check) is None


def test_recognizable_visual_features_is_quarantined() -> None:
    ds = make_sentinel_dicom()
    ds.RecognizableVisualFeatures = "YES"
    assert "(0028,0302)" in quarantine_reason(ds, DicomDeidConfig())


@pytest.mark.parametrize("modality", ["US", "SC", "OT"])
def test_text_bearing_modalities_quarantined_by_default(modality: str) -> None:
    ds = make_sentinel_dicom(modality=modality)
    result = deidentify(ds, KEY, DicomDeidConfig())
    assert result.dataset is None
    assert result.quarantine_reason == (
        f"modality {modality} is quarantined by default (may carry burned-in text)"
    )
    assert deidentify(ds, KEY, DicomDeidConfig(quarantine_modalities=())).dataset is not None


def _bundled(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)


def test_secondary_capture_without_modality_is_quarantined_by_its_class() -> None:
    ds = _bundled("SC_rgb_rle.dcm")
    del ds.Modality
    reason = quarantine_reason(ds, DicomDeidConfig())
    assert reason is not None and "Secondary Capture Image Storage often carries burned-in text" in reason
    assert "'SecondaryCaptureImageStorage', 'DERIVED'" in reason
    # With Modality NM (not a quarantined modality) too.
    ds.Modality = "NM"
    assert quarantine_reason(ds, DicomDeidConfig()) is not None


def test_ultrasound_is_quarantined_by_its_class_whatever_its_modality() -> None:
    ds = _bundled("examples_rgb_color.dcm")
    ds.Modality = "CT"
    assert "Ultrasound Image Storage often carries" in quarantine_reason(ds, DicomDeidConfig())


@pytest.mark.parametrize("allowed", ["UltrasoundImageStorage", "ultrasound image storage"])
def test_an_allowed_class_is_published_only_with_burned_in_annotation_no(allowed: str) -> None:
    ds = _bundled("examples_rgb_color.dcm")
    config = DicomDeidConfig(quarantine_modalities=(), allow_classes=(allowed,))
    assert "is missing, i.e. unknown" in quarantine_reason(ds, config)
    ds.BurnedInAnnotation = "NO"
    assert quarantine_reason(ds, config) is None
    ds.BurnedInAnnotation = "YES"
    assert "(0028,0301) = YES" in quarantine_reason(ds, config)
    # The Modality rule still applies on its own.
    ds.BurnedInAnnotation = "NO"
    assert "modality US" in quarantine_reason(ds, DicomDeidConfig(allow_classes=(allowed,)))


def test_secondary_images_and_overlays_need_their_own_allowance() -> None:
    ds = _bundled("examples_overlay.dcm")  # MR, Image Type DERIVED\SECONDARY, overlay planes
    ds.BurnedInAnnotation = "NO"
    assert "'DERIVED', 'OVERLAY'" in quarantine_reason(ds, DicomDeidConfig())
    assert "'OVERLAY'" in quarantine_reason(ds, DicomDeidConfig(allow_classes=("DERIVED",)))
    assert quarantine_reason(ds, DicomDeidConfig(allow_classes=("DERIVED", "OVERLAY"))) is None
    assert quarantine_reason(_bundled("CT_small.dcm"), DicomDeidConfig()) is None


def test_unknown_allowed_class_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"allow_classes has unknown class\(es\) \['UltraSound'\]"):
        DicomDeidConfig.from_params({"allow_classes": ["UltraSound"]})


# --- configuration ---------------------------------------------------------------------


def test_from_params_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="date_shift_dayz.*'preprocessing.deid'; valid keys.*date_shift_days"):
        DicomDeidConfig.from_params({"date_shift_dayz": [-10, -1]})


def test_from_params_converts_lists_and_validates() -> None:
    config = DicomDeidConfig.from_params(
        {"dates": "remove", "date_shift_days": [-10, -1], "quarantine_modalities": ["US"]}
    )
    assert config.date_shift_days == (-10, -1) and config.quarantine_modalities == ("US",)
    with pytest.raises(ValueError, match=r"dates must be one of \['remove', 'shift'\], got 'blur'"):
        DicomDeidConfig.from_params({"dates": "blur"})
    with pytest.raises(ValueError, match=r"ordered range.*\(-1, -10\)"):
        DicomDeidConfig.from_params({"date_shift_days": [-1, -10]})
    with pytest.raises(ValueError, match="excludes 0"):
        DicomDeidConfig.from_params({"date_shift_days": [-10, 10]})
    with pytest.raises(ValueError, match="keep_private entry 'ACME'"):
        DicomDeidConfig.from_params({"keep_private": ["ACME"]})
    with pytest.raises(ValueError, match="odd private group"):
        DicomDeidConfig.from_params({"keep_private": ["ACME|0010|01"]})


# --- a real file -------------------------------------------------------------------------


def test_pydicom_ct_small_sample() -> None:
    original = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    originals = [v for v, kw in uid_values(original).items() if kw not in CLASS_UID_KEYWORDS]
    out = _deid(original)
    raw = dicom_bytes(out)
    for text in (b"CompressedSamples^CT1", b"CompressedSamples", b"1CT1", b"CLUNIE1",
                 b"JFK IMAGING CENTER", b"ABCD1234", b"GEMS_"):
        assert text not in raw, text
    assert not [uid for uid in originals if uid.encode() in raw]
    back = pydicom.dcmread(io.BytesIO(raw))
    assert not [e.tag for e in _walk(back) if e.tag.is_private]
    assert back.PixelData == original.PixelData  # pixels untouched
    assert back.SOPClassUID == original.SOPClassUID


# --- the consumed fast path ---------------------------------------------------------------

# Explicit and implicit VR, big endian, a compressed syntax with sequences, and a file that
# declares explicit VR but is implicit (parsed as implicit: its raw elements carry no VR).
_ENCODINGS = ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "SC_rgb_jpeg.dcm")


@pytest.mark.parametrize("name", _ENCODINGS)
def test_consumed_copy_has_the_same_content_as_the_reencoded_copy(name: str) -> None:
    """Unchanged raw elements are copied as bytes only where that gives the same file content."""
    config = DicomDeidConfig(quarantine_modalities=(), allow_classes=("SecondaryCaptureImageStorage", "DERIVED"))
    slow, fast = pydicom.dcmread(get_testdata_file(name)), pydicom.dcmread(get_testdata_file(name))
    slow.BurnedInAnnotation = fast.BurnedInAnnotation = "NO"  # so that every file is published
    slow, fast = deidentify(slow, KEY, config), deidentify(fast, KEY, config, consume=True)
    assert fast.actions == slow.actions and fast.actions
    back_fast, back_slow = _roundtrip(fast.dataset), _roundtrip(slow.dataset)
    assert back_fast.file_meta == back_slow.file_meta
    assert [(e.tag, e.VR, e.value) for e in _walk(back_fast)] == [(e.tag, e.VR, e.value) for e in _walk(back_slow)]


def test_consumed_copy_keeps_unchanged_elements_raw() -> None:
    """The writer copies kept elements as bytes (re-encoding them was most of a copy's cost)."""
    out = deidentify(pydicom.dcmread(get_testdata_file("CT_small.dcm")), KEY, DicomDeidConfig(), consume=True).dataset
    assert out.original_encoding == (False, True)
    assert out.get_item(Tag("Rows")).is_raw and out.get_item(Tag("PixelData")).is_raw
    assert not out.get_item(Tag("StudyInstanceUID")).is_raw  # remapped, so converted
