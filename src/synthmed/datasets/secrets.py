"""The pseudonymisation key as a read-only dataset, built from Kedro credentials."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from synthmed.core.checksums import sha256_bytes
from synthmed.datasets.file_folder import PUBLIC_SAMPLE_MANIFEST, FileFolderDataset, SourceFolder
from synthmed.privacy.pseudonyms import (
    MISSING_KEY_HELP,
    PUBLIC_SAMPLE_KEY,
    PseudonymisationKeyError,
    key_from_credentials,
)

logger = logging.getLogger(__name__)

# The placeholder in conf/local/credentials.yml.example: public in git, so never a key.
EXAMPLE_KEY = "replace-with-a-long-random-secret"
# 32 characters: `secrets.token_hex(16)`, 128 bits, is the shortest key accepted; the
# recommended `token_hex(32)` has 64. A random hex key of 32 characters has 8 or more
# distinct characters except with a probability far below one in a million.
MIN_KEY_CHARS = 32
MIN_DISTINCT_CHARS = 8
MAKE_KEY_HELP = (
    "Make a key with `python3 -c 'import secrets; print(secrets.token_hex(32))'` and set it as "
    "pseudonymisation.key in conf/local/credentials.yml (git-ignored); keep it safe and keep it "
    "the same, since the same key gives the same pseudonyms."
)


def key_weakness(key: str) -> str | None:
    """Why ``key`` is too weak to pseudonymise real data, or None if it is acceptable.

    Refused: the example placeholder and the public sample key (both public in git), keys
    of fewer than ``MIN_KEY_CHARS`` characters once surrounding whitespace is removed,
    keys of fewer than ``MIN_DISTINCT_CHARS`` distinct characters (whitespace only, one
    repeated character) and keys that are one shorter block repeated. The reason never
    contains the key itself.
    """
    stripped = key.strip()
    if stripped in (EXAMPLE_KEY, PUBLIC_SAMPLE_KEY.decode("utf-8")):
        which = "the example value from credentials.yml.example" if stripped == EXAMPLE_KEY else "the public sample key"
        return f"{which}, which is public in git"
    if not stripped:
        return "only whitespace"
    if len(stripped) < MIN_KEY_CHARS:
        return f"{len(stripped)} characters long; at least {MIN_KEY_CHARS} are needed"
    distinct = len(set(stripped))
    if distinct < MIN_DISTINCT_CHARS:
        return f"made of {distinct} distinct characters; at least {MIN_DISTINCT_CHARS} are needed"
    if (stripped + stripped).find(stripped, 1) < len(stripped):
        return "one shorter block of characters repeated"
    return None


def check_key_strength(key: str, source: str) -> None:
    """Raise ``PseudonymisationKeyError`` if ``key`` (read from ``source``) is too weak.

    Args:
        key: the configured key, as text.
        source: where it was read, named in the message (e.g. "credentials.yml").

    Raises:
        PseudonymisationKeyError: `key_weakness` gives a reason; the message says how to
            make a key, and never contains the key.
    """
    weakness = key_weakness(key)
    if weakness is not None:
        raise PseudonymisationKeyError(
            f"The pseudonymisation key in {source} is {weakness}. A guessable or public key "
            "lets anyone who holds the original identifiers recompute the pseudonyms, so it is "
            f"accepted only for the bundled public sample. {MAKE_KEY_HELP}"
        )


def is_public_sample(folder: SourceFolder) -> bool:
    """True only if ``folder`` holds exactly the bundled public sample, byte for byte.

    A team that drops its own files into the sample folder, or edits one, gets False, so
    the public sample key is never applied to anything but the public sample.
    """
    if PUBLIC_SAMPLE_MANIFEST not in folder.sizes:
        return False
    try:
        listed = json.loads(folder.read_text(PUBLIC_SAMPLE_MANIFEST))["sha256"]
    except (ValueError, KeyError, TypeError):
        return False
    if not isinstance(listed, dict):
        return False
    if set(listed) != set(folder.files) - {PUBLIC_SAMPLE_MANIFEST}:
        return False
    return all(
        sha256_bytes(folder.read_bytes(rel)) == digest
        for rel, digest in listed.items()
    )


class PseudonymisationKeyDataset(AbstractDataset[None, bytes]):
    """Loads the key from ``credentials.yml: pseudonymisation: {key: ...}``.

    A configured key must pass `check_key_strength` unless the raw source folder is the
    untouched public sample. Without a configured key, the documented public sample key is
    returned only when the raw source folder is the untouched public sample; otherwise
    loading raises
    ``PseudonymisationKeyError`` with instructions (Kedro's catalog wraps it in a
    ``DatasetError`` that keeps the message). The key never appears in
    ``_describe`` (and so never in logs or kedro-viz).
    """

    def __init__(
        self,
        *,
        credentials: Mapping[str, Any] | None = None,
        source: FileFolderDataset | None = None,
    ):
        self._credentials = credentials
        self._source = source

    def load(self) -> bytes:
        key = key_from_credentials(self._credentials)
        if key is not None:
            text = key.decode("utf-8")
            if key_weakness(text) is None:
                return key
            if self._source_is_public_sample():
                logger.warning(
                    "The configured pseudonymisation key is weak (%s); accepted only because the "
                    "source folder is the unmodified bundled public sample.", key_weakness(text),
                )
                return key
            check_key_strength(text, "credentials.yml (pseudonymisation.key)")
        if self._source_is_public_sample():
            logger.warning(
                "No pseudonymisation key configured: using the documented public sample key, "
                "because the source folder is the unmodified bundled sample."
            )
            return PUBLIC_SAMPLE_KEY
        raise PseudonymisationKeyError(MISSING_KEY_HELP)

    def _source_is_public_sample(self) -> bool:
        return self._source is not None and self._source.exists() and is_public_sample(self._source.load())

    def save(self, data: None) -> None:
        raise DatasetError("The pseudonymisation key is read-only; set it in credentials.yml.")

    def _describe(self) -> dict[str, Any]:
        return {"configured": self._credentials is not None}
