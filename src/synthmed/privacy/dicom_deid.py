"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile.

The attribute actions come from PS3.15 Table E.1-1, edition ``TABLE_EDITION``, as shipped
(as data only) by the ``dicom-anonymizer`` package; its action functions are not used
because they make random or unkeyed UIDs. Every UID, patient key and date offset here is a
keyed HMAC (see ``synthmed.privacy.pseudonyms``), so the same input and key always give
byte-identical output, and nobody without the key can link the output to the source.

Where the table allows several actions, the safer one is taken:
``Z/D -> Z``; ``X/Z``, ``X/D``, ``X/Z/D -> X``; ``X/Z/U* -> U`` for UIDs, ``X`` otherwise.
"""

from __future__ import annotations

import copy
import datetime
import functools
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from synthmed.imaging.dicom_objects import burned_in_risks, class_matches
from synthmed.privacy.dicom_deid_config import (  # noqa: F401  (re-exported)
    TABLE_EDITION,
    DicomDeidConfig,
    _parse_keep_private,
)
from synthmed.privacy.pseudonyms import date_offset_days, pseudonym, remap_uid

logger = logging.getLogger(__name__)

# Table E.1-1 action codes -> the action applied (the safer choice where several are allowed).
_CATEGORY_ACTIONS = {
    "X_TAGS": "X", "X_Z_TAGS": "X", "X_D_TAGS": "X", "X_Z_D_TAGS": "X",
    "Z_TAGS": "Z", "Z_D_TAGS": "Z", "D_TAGS": "D", "U_TAGS": "U", "X_Z_U_STAR_TAGS": "U*",
}
# Removed at every level although Table E.1-1 does not (or not fully) list them: PS3.15
# E.3.2 names overlays (60xx), curves (50xx), icons and signatures as possible carriers of
# identity; MAC Parameters and Encrypted Attributes hold (re-)identifying payloads.
_ALWAYS_REMOVED = frozenset(
    Tag(t) for t in (0x00880200, 0x04000561, 0xFFFAFFFA, 0x4FFE0001, 0x04000500, 0xFFFCFFFC)
)
_REPEATING_GROUPS_REMOVED = (0x5000, 0x6000)  # PS3.5 7.6: 50xx curves, 60xx overlays
# Patient's Birth Date keeps its table action (Z) even when shifting: a shifted birth date
# still gives the age, which the Basic Profile removes (Patient's Age is X).
_PATIENT_BIRTH_DATE = Tag(0x00100030)

# Dummy values for D, valid for their VR (PS3.5 Table 6.2-1). "ANONYMIZED" fits every text
# VR: 10 characters, uppercase, no backslash. A VR without a dummy is deleted instead.
_DUMMIES: dict[str, Any] = {
    **dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"), "ANONYMIZED"),
    **dict.fromkeys(("DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"), 0),
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), b""),
    "AS": "000Y", "TM": "000000",
}


# The candidate table (``deid_candidate_items``, local): one row per accepted DICOM item,
# written by ingestion's one pass, read by preprocessing. ``actions``: `format_actions` of the
# files de-identified before the first that failed or was quarantined (all when none did);
# ``reason``: why the item must not be published ("" when its copies are in the candidate
# layer); ``at_risk``, ``body_part``: of the first instance (the pixel checks' OCR and head
# rules); ``source_sha256``: the series checksum of the ingestion manifest; ``deid_profile``:
# `DicomDeidConfig.fingerprint` of the profile the copies were made with.
CANDIDATE_COLUMNS = ["item_id", "instances", "actions", "reason", "at_risk", "body_part", "source_sha256",
                     "deid_profile"]


def format_actions(actions: Mapping[str, int]) -> str:
    """Action counts as the audit writes them: ``"name=count;..."``, sorted, zero counts left out."""
    return ";".join(f"{name}={count}" for name, count in sorted(actions.items()) if count)


def parse_actions(text: str) -> Counter[str]:
    """The counts of a `format_actions` text (empty text: no action)."""
    counts: Counter[str] = Counter()
    for part in filter(None, str(text).split(";")):
        name, count = part.split("=")
        counts[name] += int(count)
    return counts


def failed_reason(instance: int, error: str) -> str:
    """The quarantine reason of an item one of whose instances could not be de-identified.

    Only the exception class is kept: the reason goes to the primary layer (pushed), and an
    exception text may quote a header value.
    """
    return f"de-identification failed on instance {instance:04d} ({error})"


@dataclass(frozen=True)
class DeidResult:
    """The outcome of `deidentify` for one dataset.

    Attributes:
        dataset: the de-identified copy, or None when quarantined.
        patient_key: the keyed pseudonym of `dicom_patient_identity` (a hex string).
        quarantine_reason: why the dataset was not processed, or None.
        actions: counts per action ("removed", "emptied", "dummy", "uid_remapped",
            "date_shifted", "time_removed", "private_removed", "private_kept"); never values.
    """

    dataset: Dataset | None
    patient_key: str
    quarantine_reason: str | None
    actions: Mapping[str, int]


@functools.cache
def _action_table() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Exact tag -> action, and masked (repeating group) entries, from Table E.1-1."""
    database = dicom_anonymization_database_selector(f"dicomfields_{TABLE_EDITION}")
    exact: dict[int, str] = {}
    masked = []
    for category, action in _CATEGORY_ACTIONS.items():
        for entry in database[category]:
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            else:
                masked.append((*entry, action))
    return exact, tuple(masked)


def table_action(tag: int) -> str | None:
    """The action applied to ``tag``: "X", "Z", "D", "U", "U*" (X/Z/U*), or None if unlisted."""
    exact, masked = _action_table()
    if tag in exact:
        return exact[tag]
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, group_mask, element_mask, action in masked:
        if group & group_mask == g & group_mask and element & element_mask == e & element_mask:
            return action
    return None


def dicom_patient_identity(ds: Dataset) -> str:
    """The identifier a patient key is derived from: PatientID, else the study or instance."""
    for keyword, prefix in (("PatientID", ""), ("StudyInstanceUID", "study:"),
                            ("SOPInstanceUID", "sop:")):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return prefix + value
    raise ValueError(
        "Expected a dataset with a PatientID, StudyInstanceUID or SOPInstanceUID, got none."
    )


def quarantine_reason(ds: Dataset, config: DicomDeidConfig) -> str | None:
    """Why ``ds`` must not be published (burned-in text, recognisable features), or None.

    The one place that decides. In order:

    1. Burned In Annotation (0028,0301) = YES (unless ``quarantine_burned_in`` is false);
    2. Recognizable Visual Features (0028,0302) = YES;
    3. a Modality listed in ``quarantine_modalities``;
    4. an image that often carries burned-in text (`burned_in_risks`: Secondary Capture,
       ultrasound, visible-light/video/photographic/endoscopic/microscopic classes, secondary
       images, overlay planes): quarantined unless every such risk is in ``allow_classes``
       and Burned In Annotation is NO. A missing or other value means unknown, and unknown
       means quarantine (PS3.15 E.3.1: only a NO says that no text is burned in).
    """
    burned_in = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if config.quarantine_burned_in and burned_in == "YES":
        return "burned-in annotation (0028,0301) = YES"
    # PS3.3 C.7.6.1.1.8: the image could identify the patient (e.g. a face).
    if str(ds.get("RecognizableVisualFeatures", "") or "").strip().upper() == "YES":
        return "recognizable visual features (0028,0302) = YES"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in {m.upper() for m in config.quarantine_modalities}:
        return f"modality {modality} is quarantined by default (may carry burned-in text)"
    risks = burned_in_risks(ds)
    refused = [(label, why) for label, why in risks if not class_matches(label, config.allow_classes)]
    if refused:
        labels = ", ".join(repr(label) for label, _ in refused)
        return ("; ".join(why for _, why in refused)
                + f": quarantined unless preprocessing.deid.allow_classes lists {labels} (after checking the "
                "images) and Burned In Annotation (0028,0301) is NO")
    if risks and burned_in != "NO":
        shown = burned_in or "missing"
        return (f"burned-in annotation (0028,0301) is {shown}, i.e. unknown, on an allowed class that often "
                "carries burned-in text; only NO is published")
    return None


@dataclass
class _Context:
    key: bytes
    date_mode: str  # "shift", "remove" or "keep" (already shifted by an earlier run)
    offset_days: int
    keep_private: frozenset[tuple[str, int, int]]
    counts: Counter[str]


def deidentify(ds: Dataset, key: bytes, config: DicomDeidConfig, *, consume: bool = False) -> DeidResult:
    """De-identify a copy of ``ds`` (never mutated unless ``consume``) with keyed pseudonyms.

    Args:
        ds: one DICOM instance with file meta (its Transfer Syntax UID is kept).
        key: the pseudonymisation key; UIDs, the patient key and the date offset derive
            from it, so the same input and key give byte-identical output.
        config: date, private tag and quarantine options.
        consume: the caller hands ``ds`` over and never uses it again (a dataset parsed
            just for this call): its elements become the output's instead of being
            deep-copied first, which was a third of the time per file. ``ds`` is then
            left partly de-identified and must be dropped.

    Returns:
        The de-identified copy, or ``dataset=None`` with the reason when
        `quarantine_reason` quarantines ``ds`` (then nothing else is done).

    Raises:
        ValueError: ``ds`` has no patient identity, SOP Class/Instance UID or transfer syntax.
    """
    patient_key = pseudonym(key, "patient", dicom_patient_identity(ds))
    reason = quarantine_reason(ds, config)
    if reason is not None:
        logger.info("Quarantined a DICOM dataset: %s.", reason)
        return DeidResult(None, patient_key, reason, {})
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    missing = [keyword for keyword in ("SOPClassUID", "SOPInstanceUID") if keyword not in ds]
    if not transfer_syntax:
        missing.append("file_meta.TransferSyntaxUID")
    if missing:
        raise ValueError(f"Expected a DICOM instance with {missing}, got a dataset without them.")

    # PS3.15 E.3.6 / PS3.3 C.7.6.1: dates marked MODIFIED were already shifted; never twice.
    already_shifted = str(
        ds.get("LongitudinalTemporalInformationModified", "") or ""
    ).strip().upper() == "MODIFIED"
    shifting = config.dates == "shift"
    ctx = _Context(
        key=key,
        date_mode="keep" if shifting and already_shifted else config.dates,
        offset_days=date_offset_days(key, patient_key, *config.date_shift_days),
        keep_private=_parse_keep_private(config.keep_private),
        counts=Counter(),
    )
    # A plain Dataset: drops FileDataset's source filename and preamble. Consumed, it shares
    # the input's elements (still unparsed ones included, parsed when the profile reaches them).
    if consume:
        out = Dataset(ds)  # shares ds's mapping of elements (pydicom: Dataset(dataset))
        _keep_encoding(out, ds, transfer_syntax)
    else:
        out = Dataset()
        for element in copy.deepcopy(ds):
            out.add(element)
    _deidentify_level(out, ctx)

    pseudonymous_name = "SM" + patient_key
    out.PatientID = pseudonymous_name
    out.PatientName = pseudonymous_name
    out.PatientIdentityRemoved = "YES"  # (0012,0062)
    out.DeidentificationMethod = (  # (0012,0063), LO: at most 64 characters
        f"PS3.15 Basic Profile, Table E.1-1 {TABLE_EDITION}, dates "
        + ("shifted" if shifting else "removed")
    )
    method_codes = [codes.DCM.BasicApplicationConfidentialityProfile]  # CID 7050: 113100
    if shifting:
        method_codes.append(codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption)
    out.DeidentificationMethodCodeSequence = Sequence([_code_item(c) for c in method_codes])
    out.LongitudinalTemporalInformationModified = "MODIFIED" if shifting else "REMOVED"

    # PS3.10 7.1: regenerate the File Meta Information; the preamble is application
    # defined and can carry anything, so it is zeroed.
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    out.file_meta = meta
    out.preamble = b"\x00" * 128
    logger.debug("De-identified a DICOM dataset: %s.", dict(ctx.counts))
    return DeidResult(out, patient_key, None, dict(sorted(ctx.counts.items())))


def _keep_encoding(out: Dataset, ds: Dataset, transfer_syntax: str) -> None:
    """Let the writer copy ``out``'s unchanged raw elements as they are, where that is safe.

    pydicom re-encodes every element of a dataset whose original encoding is unknown (a
    plain ``Dataset``), which was most of the cost of writing a copy. The copy keeps the
    transfer syntax ``ds`` was parsed in, so its raw elements are valid bytes there; the
    ones that carry no VR (a file that declares explicit VR but is implicit, which pydicom
    still reports as explicit) were converted by `_element_vr` on the way.
    """
    syntax = UID(str(transfer_syntax))
    if not syntax.is_transfer_syntax:
        return
    declared = (syntax.is_implicit_VR, syntax.is_little_endian)
    if tuple(ds.original_encoding) == declared:
        out.set_original_encoding(*declared, ds.original_character_set)


def _code_item(code: Any) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _deidentify_level(ds: Dataset, ctx: _Context) -> None:
    """Apply the profile to one dataset level, then recurse into every sequence item."""
    kept_private = _kept_private_tags(ds, ctx.keep_private)
    for tag in list(ds.keys()):
        if tag.is_private and tag not in kept_private:
            # Deleted unread: parsing a value only to drop it was most of the time per file
            # (a CT instance holds ~180 private elements).
            del ds[tag]
            ctx.counts["private_removed"] += 1
            continue
        vr = _element_vr(ds, tag)
        if tag.is_private:
            action = None
            ctx.counts["private_kept"] += 1
        elif (tag in _ALWAYS_REMOVED or tag.element == 0x0000  # group lengths: PS3.5 7.2
              or tag.group & 0xFF00 in _REPEATING_GROUPS_REMOVED):
            action = "X"
        else:
            action = table_action(tag)
            if vr in ("DA", "DT") and tag != _PATIENT_BIRTH_DATE:
                action = _date_action(action, ctx.date_mode, vr)
            elif vr == "TM":
                action = _time_action(action)
        if action is not None and not _apply(ds, tag, vr, action, ctx):
            continue  # deleted
        if vr == "SQ":
            for item in ds[tag].value:
                _deidentify_level(item, ctx)


def _element_vr(ds: Dataset, tag: BaseTag) -> str:
    """The VR of ``ds[tag]``, without converting its value where the file states it.

    A kept element (about half of a CT header) then stays raw: it is neither converted
    nor re-encoded, and the writer copies its bytes. An implicit-VR element (no VR in the
    file) or a UN one is converted, as pydicom then looks its VR up in the dictionary.
    """
    vr = ds.get_item(tag).VR
    return ds[tag].VR if vr in (None, "UN") else vr


def _date_action(action: str | None, date_mode: str, vr: str) -> str | None:
    """The action for a DA/DT element, listed in the table or not (PS3.15 E.3.6).

    Unlisted dates follow the same policy: a real date left beside shifted ones would
    reveal the offset, and "remove" promises that no date value survives. A DT keeps at
    most its date part in every mode (see `_shift_date`), also when its date was already
    shifted by an earlier run ("keep": shifted by 0 days, time dropped).
    """
    if date_mode == "shift":
        return "shift"
    if date_mode == "keep":  # shifted by an earlier run
        return "date_only" if vr == "DT" else None
    return "X" if action == "X" else "Z"


def _time_action(action: str | None) -> str:
    """The action for a TM element, listed in the table or not, in every date mode.

    A time of day is never kept: removed where the table says X, the dummy 000000 where it
    says D (the attribute must stay present), emptied otherwise, unlisted TMs included
    (e.g. Secondary Review Time), so that no VR carries a time that another VR drops.
    """
    return action if action in ("X", "D") else "Z"


def _kept_private_tags(ds: Dataset, allow: frozenset[tuple[str, int, int]]) -> set[BaseTag]:
    """Private data elements on the allowlist, plus their private creator elements."""
    kept: set[BaseTag] = set()
    for tag in ds.keys():
        if not allow or not tag.is_private or tag.element < 0x1000:
            continue
        creator_tag = Tag(tag.group, tag.element >> 8)  # PS3.5 7.8.1: block xx00-xxFF
        creator = ds.get(creator_tag)
        if creator is not None and (str(creator.value).strip(), tag.group,
                                    tag.element & 0xFF) in allow:
            kept.update((tag, creator_tag))
    return kept


def _apply(ds: Dataset, tag: BaseTag, vr: str, action: str, ctx: _Context) -> bool:
    """Apply one action to ``ds[tag]`` (of VR ``vr``); return False when the element was deleted.

    Only the actions that read the old value (UIDs, dates, sequences) convert the element;
    removed, emptied and dummy elements are deleted or replaced unread.
    """
    if action == "Z" or (action == "D" and vr == "SQ"):
        ds.add_new(tag, vr, Sequence() if vr == "SQ" else None)
        ctx.counts["emptied"] += 1
        return True
    if action == "D" and vr in _DUMMIES:
        ds.add_new(tag, vr, _DUMMIES[vr])
        ctx.counts["dummy"] += 1
        return True
    if action == "U*" and vr == "SQ":
        # X/Z/U*: keep the references, i.e. only the UIDs of each item, which the
        # recursion then remaps (instance UIDs) or keeps (SOP Class UIDs).
        for item in ds[tag].value:
            for item_tag in [t for t in item.keys() if item[t].VR != "UI"]:
                del item[item_tag]
                ctx.counts["removed"] += 1
        return True
    if vr == "UI" and action in ("U", "U*", "D"):
        element = ds[tag]
        values = element.value if element.VM > 1 else [element.value]
        remapped = [remap_uid(ctx.key, str(uid)) for uid in values if str(uid).strip()]
        element.value = remapped if element.VM > 1 else (remapped[0] if remapped else None)
        ctx.counts["uid_remapped"] += len(remapped)
        return True
    if action not in ("shift", "date_only"):
        del ds[tag]  # X, and any action that does not fit the VR (X is always the safest)
        ctx.counts["private_removed" if tag.is_private else "removed"] += 1
        return False
    return _shift_dates(ds, tag, ctx.offset_days if action == "shift" else 0, ctx)


def _shift_dates(ds: Dataset, tag: BaseTag, days: int, ctx: _Context) -> bool:
    """Shift a DA or DT element by ``days`` (DT: time dropped); an unshiftable value is emptied."""
    element = ds[tag]
    values = element.value if element.VM > 1 else [element.value]
    texts = [str(v).strip() for v in values if v is not None]
    shifted = [_shift_date(text, days) for text in texts if text]
    if None in shifted:
        # e.g. a year-only DT "2004" cannot be shifted by days: no value may survive
        element.value = None
        ctx.counts["emptied"] += 1
    elif shifted:
        element.value = shifted if element.VM > 1 else shifted[0]
        ctx.counts["date_shifted" if days else "time_removed"] += len(shifted)
    return True


def _shift_date(value: str, days: int) -> str | None:
    """The ``YYYYMMDD`` date part of a DA or DT value, shifted by ``days``; None if partial.

    PS3.15 E.3.6 (Modified Dates Option) keeps intervals between events by moving all
    dates of a patient by one offset, and Table E.1-1 removes every time of day it lists
    (e.g. Acquisition Time, X/Z) and Timezone Offset From UTC (0008,0201, X). A DT
    (PS3.5 6.2: ``YYYYMMDDHHMMSS.FFFFFF&ZZXX``) therefore keeps only its shifted date: its
    hours, minutes, seconds, fraction and UTC offset are dropped, never kept or zeroed.
    ``YYYYMMDD`` alone is a valid DT (the later components are optional), whereas a
    zeroed time would claim a midnight that never happened. A partial DT (``YYYY``,
    ``YYYYMM``) cannot be shifted by days without inventing a day, so it gives None and
    the caller empties the element.
    """
    if len(value) < 8 or not value[:8].isdigit():
        return None
    try:
        day = datetime.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        return (day + datetime.timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return None
