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

# Written by the sample_data pipeline next to the sample files.


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

    Without a configured key, the documented public sample key is returned only when the
    raw source folder is the untouched public sample; otherwise loading raises
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
            return key
        if self._source is not None and self._source.exists() and is_public_sample(self._source.load()):
            logger.warning(
                "No pseudonymisation key configured: using the documented public sample key, "
                "because the source folder is the unmodified bundled sample."
            )
            return PUBLIC_SAMPLE_KEY
        raise PseudonymisationKeyError(MISSING_KEY_HELP)

    def save(self, data: None) -> None:
        raise DatasetError("The pseudonymisation key is read-only; set it in credentials.yml.")

    def _describe(self) -> dict[str, Any]:
        return {"configured": self._credentials is not None}
