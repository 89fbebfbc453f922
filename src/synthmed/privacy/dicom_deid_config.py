"""``params:preprocessing.deid`` (`DicomDeidConfig`), in a module that imports pydicom only to check
``allow_classes`` against its UID dictionary: the parameter check reads it before any node runs,
and ``synthmed.privacy.dicom_deid`` (pydicom, dicomanonymizer's tables) loads where DICOM is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synthmed.core.config import from_params

TABLE_EDITION = "2026c"  # of PS3.15 Table E.1-1 (dicomanonymizer's shipped table)
_DATE_MODES = ("remove", "shift")
_KEEP_PRIVATE_PATTERN = re.compile(r"(?P<creator>[^|]*\S[^|]*)\|(?P<group>[0-9A-Fa-f]{4})"
                                   r"\|(?P<offset>[0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class DicomDeidConfig:
    """How `deidentify` treats dates, private tags and burned-in text.

    Args:
        dates: ``"shift"`` moves every date by one keyed offset per patient (PS3.15 E.3.6,
            Retain Longitudinal Temporal Information with Modified Dates Option);
            ``"remove"`` applies the table action (empty or delete) to dates. In both
            modes no time of day survives: TM values are removed, emptied or 000000 and a
            DT keeps only its (shifted) date, at every nesting level.
        date_shift_days: inclusive ``(min, max)`` range of the offset in days; must not
            contain 0, or some patients would keep their real dates.
        keep_private: allowlist of private elements as ``"CREATOR|gggg|ee"`` (creator string,
            group in hex, element offset within the private block in hex); all others are
            removed.
        quarantine_modalities: modalities that routinely carry burned-in text; quarantined
            whatever ``allow_classes`` says (remove a modality here to publish it).
        quarantine_burned_in: quarantine Burned In Annotation (0028,0301) = YES.
        allow_classes: image classes that often carry burned-in text which the user has
            checked and allows (see `synthmed.imaging.dicom_objects.burned_in_risks`): SOP
            class keywords or names (e.g. ``UltrasoundImageStorage`` or "Ultrasound Image
            Storage"), ``DERIVED`` (secondary images), ``OVERLAY`` (overlay planes). An
            allowed image is published only with Burned In Annotation = NO.
    """

    dates: str = "shift"
    date_shift_days: tuple[int, int] = (-3650, -365)
    keep_private: tuple[str, ...] = ()
    quarantine_modalities: tuple[str, ...] = ("US", "SC", "OT")
    quarantine_burned_in: bool = True
    allow_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dates not in _DATE_MODES:
            raise ValueError(f"dates must be one of {list(_DATE_MODES)}, got {self.dates!r}.")
        shift = self.date_shift_days
        if (
            not isinstance(shift, tuple) or len(shift) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shift)
        ):
            raise ValueError(f"date_shift_days must be a (min, max) pair of ints, got {shift!r}.")
        if shift[0] > shift[1] or shift[0] <= 0 <= shift[1]:
            raise ValueError(
                f"date_shift_days must be an ordered range (min <= max) that excludes 0, "
                f"got {shift!r}."
            )
        _parse_keep_private(self.keep_private)
        if not all(isinstance(m, str) and m for m in self.quarantine_modalities):
            raise ValueError(
                "quarantine_modalities must be non-empty modality strings such as 'US', got "
                f"{self.quarantine_modalities!r}."
            )
        if not isinstance(self.quarantine_burned_in, bool):
            raise ValueError(
                f"quarantine_burned_in must be true or false, got {self.quarantine_burned_in!r}."
            )
        known = frozenset()
        if self.allow_classes:  # pydicom's UID dictionary: imported here, only to check these
            from synthmed.imaging.dicom_objects import known_class_names

            known = known_class_names()
        unknown = [c for c in self.allow_classes if not isinstance(c, str) or c.strip().casefold() not in known]
        if unknown:
            raise ValueError(
                f"allow_classes has unknown class(es) {unknown}; expected SOP class keywords or names "
                "of pydicom's UID dictionary (e.g. 'UltrasoundImageStorage', 'Secondary Capture Image "
                f"Storage'), 'DERIVED' or 'OVERLAY'."
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DicomDeidConfig:
        """Build from a ``params:`` mapping; unknown and missing keys fail, naming them."""
        return from_params(cls, params, "preprocessing.deid")

    def fingerprint(self) -> str:
        """A short digest of every option (and of the table edition), to tell copies made with another profile.

        Ingestion makes the de-identified copies; preprocessing publishes them only if they
        were made with the profile it is configured with now (``kedro run --pipelines
        preprocessing`` after editing ``preprocessing.deid`` must not publish old copies).
        """
        options = {**dataclasses.asdict(self), "table_edition": TABLE_EDITION}
        return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


def _parse_keep_private(entries: tuple[str, ...]) -> frozenset[tuple[str, int, int]]:
    """``("CREATOR|gggg|ee", ...)`` -> ``{(creator, group, offset)}``, validated."""
    if not isinstance(entries, tuple):
        raise ValueError(f"keep_private must be a tuple of strings, got {entries!r}.")
    parsed = set()
    for entry in entries:
        match = _KEEP_PRIVATE_PATTERN.fullmatch(entry) if isinstance(entry, str) else None
        group = int(match["group"], 16) if match else 0
        # PS3.5 7.8.1: private groups are odd, except 0001-0007 and FFFF.
        if match is None or group % 2 == 0 or group <= 0x0007 or group == 0xFFFF:
            raise ValueError(
                f"keep_private entry {entry!r} is invalid; expected 'CREATOR|gggg|ee' with an "
                "odd private group in hex (e.g. 'ACME 1.0|0029|10')."
            )
        parsed.add((match["creator"].strip(), group, int(match["offset"], 16)))
    return frozenset(parsed)

