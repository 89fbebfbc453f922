"""Tests for synthmed.privacy.pseudonyms: keyed HMAC pseudonyms, UIDs and date offsets."""

from __future__ import annotations

import re

import pytest

from synthmed.privacy.pseudonyms import (
    PseudonymisationKeyError,
    date_offset_days,
    keyed_digest,
    pseudonym,
    remap_uid,
)

KEY = b"test key for synthmed pseudonyms"
OTHER_KEY = b"a different test key entirely"
# PS3.5 section 9.1: UID components are digits without leading zeros (except "0").
UID_PATTERN = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def test_pseudonym_is_deterministic_hex_of_the_requested_length() -> None:
    first = pseudonym(KEY, "patient", "PAT-001")
    assert first == pseudonym(KEY, "patient", "PAT-001")
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    for length in (8, 33, 64):
        value = pseudonym(KEY, "patient", "PAT-001", length=length)
        assert len(value) == length
        assert value.startswith(first[: min(length, 16)])  # prefixes of one digest


def test_pseudonym_depends_on_key_namespace_and_value() -> None:
    base = pseudonym(KEY, "patient", "PAT-001")
    assert pseudonym(OTHER_KEY, "patient", "PAT-001") != base
    assert pseudonym(KEY, "file", "PAT-001") != base
    assert pseudonym(KEY, "patient", "PAT-002") != base


def test_namespace_and_value_cannot_be_shifted_into_each_other() -> None:
    # The NUL separator keeps ("ab", "c") and ("a", "bc") apart.
    assert keyed_digest(KEY, "ab", "c") != keyed_digest(KEY, "a", "bc")


@pytest.mark.parametrize("length", [0, 7, 65])
def test_pseudonym_length_outside_bounds_is_rejected(length: int) -> None:
    with pytest.raises(ValueError, match=f"between 8 and 64, got {length}"):
        pseudonym(KEY, "patient", "PAT-001", length=length)


def test_remap_uid_is_a_valid_deterministic_2_25_uid() -> None:
    original = "1.2.826.0.1.3680043.8.498.1234567890.1"
    new = remap_uid(KEY, original)
    assert UID_PATTERN.match(new), new
    assert len(new) <= 64
    assert new == remap_uid(KEY, original)
    assert new != remap_uid(OTHER_KEY, original)
    assert new != remap_uid(KEY, original + "0")


def test_remap_uid_length_bound_holds_for_many_uids() -> None:
    # 5 + 39 digits (2**128 - 1 has 39) = 44 <= 64, for any input.
    for n in range(200):
        assert len(remap_uid(KEY, f"1.2.3.{n}")) <= 44


def test_remap_uid_strips_surrounding_whitespace() -> None:
    assert remap_uid(KEY, " 1.2.3.4 ") == remap_uid(KEY, "1.2.3.4")
    assert remap_uid(KEY, "1.2.3.4\n") == remap_uid(KEY, "1.2.3.4")


def test_date_offset_is_in_range_and_the_same_for_one_patient() -> None:
    offsets = {p: date_offset_days(KEY, p, -30, 30) for p in (f"patient-{i}" for i in range(50))}
    assert all(-30 <= v <= 30 for v in offsets.values())
    assert len(set(offsets.values())) > 10  # spread out, not a constant
    assert date_offset_days(KEY, "patient-7", -30, 30) == offsets["patient-7"]
    assert date_offset_days(KEY, "patient-7", 5, 5) == 5


def test_date_offset_depends_on_the_key() -> None:
    patients = [f"patient-{i}" for i in range(20)]
    mine = [date_offset_days(KEY, p, -365, 365) for p in patients]
    theirs = [date_offset_days(OTHER_KEY, p, -365, 365) for p in patients]
    assert mine != theirs


def test_date_offset_rejects_an_empty_range() -> None:
    with pytest.raises(ValueError, match="min_days=10 > max_days=-10"):
        date_offset_days(KEY, "patient-1", 10, -10)


def test_empty_key_is_rejected_everywhere() -> None:
    with pytest.raises(PseudonymisationKeyError, match="empty pseudonymisation key"):
        pseudonym(b"", "patient", "PAT-001")
    with pytest.raises(PseudonymisationKeyError, match="empty pseudonymisation key"):
        remap_uid(b"", "1.2.3")
    with pytest.raises(PseudonymisationKeyError, match="empty pseudonymisation key"):
        date_offset_days(b"", "patient-1", -3, 3)
