"""Keyed pseudonyms: every identifier synthmed writes is an HMAC-SHA256 of the original.

An unkeyed hash (MD5 of a UID, pydicom's ``generate_uid(entropy_srcs=...)``) can be
recomputed by anyone who holds the original identifier, so it is not a pseudonym. A keyed
HMAC can only be recomputed with the key, which lives in ``conf/local/credentials.yml``
(never in git, DVC or MLflow). Each use has its own namespace so that, for example, a
patient key and a UID derived from the same string never coincide.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

# Documented, public key used ONLY for the bundled public sample in data/01_raw/sample.
# Pseudonyms made with a public key are reversible by anyone holding the originals, which
# is harmless for public sample files and unacceptable for anything else: see
# `resolve_pseudonymisation_key`.
PUBLIC_SAMPLE_KEY = b"synthmed public sample key - not secret - sample data only"

# DICOM PS3.5 section 9.1: a UID is at most 64 characters. "2.25." followed by a 128-bit
# integer (at most 39 digits) is the UUID-derived root of PS3.5 Annex B.2.
_UID_ROOT = "2.25."


class PseudonymisationKeyError(RuntimeError):
    """The pseudonymisation key is missing or unusable."""


MISSING_KEY_HELP = (
    "No pseudonymisation key is configured. synthmed derives every patient key, UID and "
    "file name it writes from a keyed HMAC, and will not process your data without a key. "
    "Add to conf/local/credentials.yml (git-ignored):\n"
    "  pseudonymisation:\n"
    "    key: <a long random secret, e.g. the output of "
    "`python3 -c 'import secrets; print(secrets.token_hex(32))'`>\n"
    "Keep the key: the same key gives the same pseudonyms, so later exports of the same "
    "patients stay linked. The built-in public sample key is used only for the bundled "
    "sample in data/01_raw/sample."
)


def key_from_credentials(credentials: Mapping[str, Any] | None) -> bytes | None:
    """Return the key from a ``pseudonymisation`` credentials entry, or None if absent.

    Args:
        credentials: the mapping under ``pseudonymisation`` in credentials.yml, e.g.
            ``{"key": "..."}``; None when the entry is missing.

    Raises:
        PseudonymisationKeyError: the entry exists but the key is not a non-empty string.
            How strong the key must be is decided by
            ``synthmed.datasets.secrets.check_key_strength``, which knows the source folder.
    """
    if credentials is None:
        return None
    if not isinstance(credentials, Mapping) or "key" not in credentials:
        raise PseudonymisationKeyError(
            "credentials entry 'pseudonymisation' must be a mapping with a 'key' field, got "
            f"{type(credentials).__name__} with fields "
            f"{sorted(credentials) if isinstance(credentials, Mapping) else '-'}."
        )
    key = credentials["key"]
    if not isinstance(key, str) or not key:
        found = "an empty string" if isinstance(key, str) else f"a {type(key).__name__}"
        raise PseudonymisationKeyError(
            f"credentials 'pseudonymisation.key' must be a non-empty string, got {found}. "
            "Make one with `python3 -c 'import secrets; print(secrets.token_hex(32))'`."
        )
    return key.encode("utf-8")


def keyed_digest(key: bytes, namespace: str, value: str) -> bytes:
    """HMAC-SHA256 of ``namespace`` + NUL + ``value`` under ``key``."""
    if not key:
        raise PseudonymisationKeyError("an empty pseudonymisation key was given")
    message = namespace.encode("utf-8") + b"\x00" + value.encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()


def pseudonym(key: bytes, namespace: str, value: str, length: int = 16) -> str:
    """A hex pseudonym of ``length`` characters, safe as a file or folder name."""
    if not 8 <= length <= 64:
        raise ValueError(f"pseudonym length must be between 8 and 64, got {length}")
    return keyed_digest(key, namespace, value).hex()[:length]


def remap_uid(key: bytes, uid: str) -> str:
    """Map a DICOM UID to ``2.25.<128-bit integer>`` with a keyed HMAC.

    The same UID and key always give the same new UID, so references between instances
    (series, study, frame of reference) stay consistent after remapping.
    """
    digest = keyed_digest(key, "dicom-uid", uid.strip())
    return _UID_ROOT + str(int.from_bytes(digest[:16], "big"))


def date_offset_days(key: bytes, patient_key: str, min_days: int, max_days: int) -> int:
    """One date offset per patient, in ``[min_days, max_days]``, derived from the key.

    The offset is the same for every study of a patient (so intervals between studies
    survive) and cannot be guessed without the key.
    """
    if min_days > max_days:
        raise ValueError(f"date shift range is empty: min_days={min_days} > max_days={max_days}")
    digest = keyed_digest(key, "date-shift", patient_key)
    span = max_days - min_days + 1
    return min_days + int.from_bytes(digest[:8], "big") % span
