"""The one checksum module: sha256 of files and byte strings, and their verification.

Every writer in synthmed records the sha256 and size of what it wrote (array stores,
generator folders, checkpoints, file folders) through these functions, and every reader
checks them through ``verify_file`` / ``verify_listing`` before using the bytes.

Verification is done once per file and process: the sha256 found for a file is cached
under (resolved path, size, mtime_ns, inode), so loading an unchanged file again costs one
``stat``. Replacing the file (``dvc checkout``, an atomic re-save: new inode) or writing
into it (new mtime or size) makes the next verification hash it again. The cache lives in
the process only; a new process always hashes once. (A same-size in-place write within
one file-system timestamp tick of an earlier verification in the same process is the one
change this cannot see; no synthmed writer edits files in place.)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20

LISTING_FORMAT = "synthmed-checksums/1"


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


# ------------------------------------------------------------------ verification


class ChecksumError(ValueError):
    """A file is missing, truncated or altered since its writer recorded its checksum.

    Attributes:
        path: the file.
        kind: ``"missing"``, ``"size"``, ``"sha256"`` or ``"listing"`` (the record itself
            is unreadable).
        expected, found: the recorded and the actual value (sha256 hex or size in bytes).
    """

    def __init__(self, message: str, *, path: Path | str, kind: str,
                 expected: str | int | None = None, found: str | int | None = None):
        super().__init__(message)
        self.path = Path(path)
        self.kind = kind
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class FileDigest:
    """What a writer records about one file. ``size`` is None in records written before
    sizes were recorded (they are still verified by sha256)."""

    sha256: str
    size: int | None = None

    def to_json(self) -> dict[str, str | int]:
        record: dict[str, str | int] = {"sha256": self.sha256}
        if self.size is not None:
            record["size"] = self.size
        return record


def restore_hint(path: Path | str, command: str | None = None) -> str:
    """The fix for a corrupt or missing output, naming the command that writes it if known."""
    rerun = f"`{command}` / `dvc repro`" if command else "`kedro run --pipelines <name>` / `dvc repro`"
    return (f"run `dvc checkout {path}` to restore the version in dvc.lock, or re-run the "
            f"stage that writes it: {rerun}.")


_cache_lock = threading.Lock()
_found: dict[tuple[str, int, int, int], str] = {}


def clear_verified_cache() -> None:
    """Forget every verified file (tests, and callers that want a full re-hash)."""
    with _cache_lock:
        _found.clear()


def describe_file(path: Path | str) -> FileDigest:
    """sha256 and size of a file just written (the writer's side of ``verify_file``)."""
    size = os.stat(path).st_size
    return FileDigest(sha256_file(path), size)


def _cached_sha256(path: Path, stat: os.stat_result) -> str:
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _cache_lock:
        found = _found.get(key)
    if found is None:
        found = sha256_file(path)
        with _cache_lock:
            _found[key] = found
    return found


def verify_file(path: Path | str, sha256: str, size: int | None = None, *,
                fix: str | None = None) -> None:
    """Raise ``ChecksumError`` unless the file at ``path`` has this ``size`` and ``sha256``.

    The size is compared first (one ``stat``: a truncated file is reported as such without
    reading it); the sha256 is computed once per unchanged file and process (module doc).

    Args:
        path: the file.
        sha256: the hex sha256 its writer recorded.
        size: the size its writer recorded, or None for records that lack it.
        fix: what the reader should do; defaults to ``restore_hint(path)``.
    """
    path = Path(path)
    fix = fix or restore_hint(path)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise ChecksumError(f"{path} is missing (its sha256 {sha256} was recorded when it was "
                            f"written); {fix}", path=path, kind="missing", expected=sha256) from None
    if size is not None and stat.st_size != size:
        what = "truncated" if stat.st_size < size else "longer than written"
        raise ChecksumError(
            f"{path} is {what} (does not match its checksum record): size mismatch, "
            f"expected {size} bytes, found {stat.st_size}; {fix}",
            path=path, kind="size", expected=size, found=stat.st_size)
    found = _cached_sha256(path, stat)
    if found != sha256:
        raise ChecksumError(
            f"{path} is corrupt (does not match its checksum): expected sha256 {sha256}, found {found}; {fix}",
            path=path, kind="sha256", expected=sha256, found=found)


# ------------------------------------------------------------------ listings


def write_listing(folder: Path | str, name: str, *, skip: Iterable[str] = ()) -> dict[str, FileDigest]:
    """Record sha256 and size of every file under ``folder`` in ``folder/name`` (JSON).

    Call it last: a folder with its listing is complete. Files whose relative POSIX path is
    in ``skip`` (and the listing itself) are left out.
    """
    folder = Path(folder)
    left_out = {name, *skip}
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digests = {rel: describe_file(p) for p in files
               if (rel := p.relative_to(folder).as_posix()) not in left_out}
    payload = {"format": LISTING_FORMAT, "files": {rel: d.to_json() for rel, d in digests.items()}}
    (folder / name).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return digests


def _digest_of(value: object) -> FileDigest | None:
    if isinstance(value, str):  # older listings: {relpath: sha256}
        return FileDigest(value)
    if isinstance(value, Mapping) and isinstance(value.get("sha256"), str):
        size = value.get("size")
        if size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            return FileDigest(value["sha256"], size)
    return None


def read_listing(path: Path | str, *, fix: str | None = None) -> dict[str, FileDigest]:
    """The records of a listing written by ``write_listing`` (or an older ``{rel: sha256}``).

    Raises:
        ChecksumError: (kind ``"listing"``) the listing is unreadable or malformed.
    """
    path = Path(path)
    fix = fix or restore_hint(path.parent)

    def bad(problem: str) -> ChecksumError:
        return ChecksumError(f"{path} is unreadable: {problem}; {fix}", path=path, kind="listing")

    try:
        payload = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"not valid JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise bad(f"expected a JSON object, found {type(payload).__name__}")
    if "format" in payload:
        if payload["format"] != LISTING_FORMAT or not isinstance(payload.get("files"), dict):
            raise bad(f"format {payload.get('format')!r}, expected {LISTING_FORMAT!r} with 'files'")
        payload = payload["files"]
    records: dict[str, FileDigest] = {}
    for rel, value in payload.items():
        digest = _digest_of(value)
        if digest is None:
            raise bad(f"entry {rel!r} is {value!r}, expected {{'sha256': hex, 'size': bytes}}")
        records[rel] = digest
    return records


def verify_listing(folder: Path | str, records: Mapping[str, FileDigest], *,
                   fix: str | None = None) -> None:
    """``verify_file`` for every record, relative to ``folder``; raises on the first failure."""
    folder = Path(folder)
    for rel, digest in records.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ChecksumError(f"{folder}: listed file {rel!r} is outside the folder; "
                                f"{fix or restore_hint(folder)}", path=folder / rel, kind="listing")
        verify_file(folder / rel, digest.sha256, digest.size, fix=fix or restore_hint(folder))
