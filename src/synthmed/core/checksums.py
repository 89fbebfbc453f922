"""The one checksum module: sha256 of files and byte strings.

Every writer in synthmed records the sha256 of what it wrote (array stores, generator
folders, checkpoints, de-identified files) through these functions, and every reader checks
it through them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(*blobs: bytes | Iterable[bytes]) -> str:
    """Hex sha256 of the concatenation of ``blobs`` (byte strings or iterables of them)."""
    digest = hashlib.sha256()
    for blob in blobs:
        if isinstance(blob, (bytes, bytearray, memoryview)):
            digest.update(blob)
        else:
            for part in blob:
                digest.update(part)
    return digest.hexdigest()
