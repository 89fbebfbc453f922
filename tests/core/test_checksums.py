"""Tests for synthmed.core.checksums: verification, its once-per-file cache and listings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from synthmed.core.checksums import (
    ChecksumError,
    FileDigest,
    describe_file,
    read_listing,
    verify_file,
    verify_listing,
    write_listing,
)


def _file(tmp_path: Path, data: bytes = b"0123456789" * 10) -> tuple[Path, FileDigest]:
    path = tmp_path / "images.npy"
    path.write_bytes(data)
    return path, describe_file(path)


def _bump_mtime(path: Path) -> None:
    """Move mtime on explicitly: two writes can share one file-system timestamp tick."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_describe_file_records_sha256_and_size(tmp_path: Path) -> None:
    path, digest = _file(tmp_path, b"abc")
    assert digest == FileDigest(hashlib.sha256(b"abc").hexdigest(), 3)
    verify_file(path, digest.sha256, digest.size)


def test_a_changed_byte_names_the_file_both_checksums_and_the_fix(tmp_path: Path) -> None:
    path, digest = _file(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[40] ^= 0x01
    path.write_bytes(bytes(raw))
    found = hashlib.sha256(bytes(raw)).hexdigest()
    with pytest.raises(ChecksumError) as info:
        verify_file(path, digest.sha256, digest.size)
    message = str(info.value)
    assert str(path) in message and digest.sha256 in message and found in message
    assert "dvc checkout" in message and "dvc repro" in message and "kedro run --pipelines" in message
    assert isinstance(info.value, ValueError)
    assert (info.value.kind, info.value.expected, info.value.found) == ("sha256", digest.sha256, found)


def test_a_truncated_file_is_reported_by_size_without_hashing(tmp_path: Path, hash_calls) -> None:
    path, digest = _file(tmp_path)
    hash_calls.clear()  # the writer's hash
    with open(path, "r+b") as handle:
        handle.truncate(64)
    with pytest.raises(ChecksumError, match=r"truncated .*: size mismatch, expected 100 bytes, found 64") as info:
        verify_file(path, digest.sha256, digest.size)
    assert str(path) in str(info.value) and info.value.kind == "size"
    assert hash_calls == []


def test_a_missing_file_is_its_own_kind(tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="is missing") as info:
        verify_file(tmp_path / "gone.npy", "0" * 64, 3)
    assert info.value.kind == "missing"


def test_records_without_size_are_verified_by_sha256(tmp_path: Path) -> None:
    path, digest = _file(tmp_path)
    verify_file(path, digest.sha256, None)
    path.write_bytes(b"other content")
    _bump_mtime(path)
    with pytest.raises(ChecksumError, match="corrupt"):
        verify_file(path, digest.sha256, None)


def test_an_unchanged_file_is_hashed_once_per_process(tmp_path: Path, hash_calls) -> None:
    path, digest = _file(tmp_path)
    hash_calls.clear()  # the writer's hash
    for _ in range(5):
        verify_file(path, digest.sha256, digest.size)
    assert hash_calls == [path]


def test_a_file_modified_after_verification_is_hashed_again(tmp_path: Path, hash_calls) -> None:
    path, digest = _file(tmp_path)
    hash_calls.clear()  # the writer's hash
    verify_file(path, digest.sha256, digest.size)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0x01  # same size: only the mtime tells the cache the file changed
    path.write_bytes(bytes(raw))
    _bump_mtime(path)
    with pytest.raises(ChecksumError, match="corrupt"):
        verify_file(path, digest.sha256, digest.size)
    assert hash_calls == [path, path]


def test_a_replaced_file_is_hashed_again(tmp_path: Path, hash_calls) -> None:
    path, digest = _file(tmp_path)
    hash_calls.clear()  # the writer's hash
    verify_file(path, digest.sha256, digest.size)
    stat = path.stat()
    replacement = tmp_path / "new.npy"
    replacement.write_bytes(path.read_bytes())
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    os.replace(replacement, path)  # new inode, as `dvc checkout` or an atomic save gives
    verify_file(path, digest.sha256, digest.size)
    assert len(hash_calls) == 2


def test_listing_round_trip_and_older_listings(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"a" * 7)
    (tmp_path / "b.json").write_text("{}")
    written = write_listing(tmp_path, "checksums.json")
    assert set(written) == {"sub/a.bin", "b.json"}
    records = read_listing(tmp_path / "checksums.json")
    assert records == written and records["sub/a.bin"].size == 7
    verify_listing(tmp_path, records)
    # {relpath: sha256}, as written before sizes were recorded
    (tmp_path / "old.json").write_text(json.dumps({rel: d.sha256 for rel, d in records.items()}))
    old = read_listing(tmp_path / "old.json")
    assert all(d.size is None for d in old.values())
    verify_listing(tmp_path, old)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"a.bin": 3}', "entry 'a.bin'"),
    ('{"format": "other/1", "files": {}}', "format 'other/1'"),
])
def test_an_unreadable_listing_names_the_file(tmp_path: Path, content: str, problem: str) -> None:
    listing = tmp_path / "checksums.json"
    listing.write_text(content)
    with pytest.raises(ChecksumError, match=problem) as info:
        read_listing(listing)
    assert str(listing) in str(info.value) and info.value.kind == "listing"


def test_a_listing_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="outside the folder"):
        verify_listing(tmp_path, {"../x": FileDigest("0" * 64, 1)})
