"""Atomic writes: a killed save never becomes the file or folder the next step loads.

A full disk is reported as ``DiskFullError`` naming the path, the bytes needed and the bytes
free; the temporary file or folder is removed and the previous version stays in place.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# numpy reports a short write without errno: "77568 requested and 64480 written".
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


class DiskFullError(OSError):
    """No space left while writing: the message names the path, the bytes needed and free."""


def is_disk_full(exc: BaseException) -> bool:
    """An ``OSError`` that means the filesystem is full (ENOSPC, EDQUOT or a short write)."""
    if not isinstance(exc, OSError):
        return False
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or bool(_SHORT_WRITE.search(str(exc)))


def _disk_full_in_chain(exc: BaseException | None) -> bool:
    """``exc`` or an exception it was raised from means a full disk (SQLite says so in words)."""
    seen = 0
    while exc is not None and seen < 10:
        if is_disk_full(exc) or "database or disk is full" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def uri_path(uri: str) -> Path:
    """The local path of a store URI (``sqlite:///mlflow.db``, ``file:///x/mlruns``, a plain path)."""
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix):
            return Path(uri[len(prefix):])
    return Path(uri)


@contextmanager
def disk_full_reported(path: Path) -> Iterator[None]:
    """Inside the block, a full disk (however a library wraps it) becomes a ``DiskFullError`` for ``path``.

    For writes synthmed does not make itself: MLflow's tracking store and artifacts.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if _disk_full_in_chain(exc):
            raise disk_full_error(Path(path), None, exc, atomic=False) from exc
        raise


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (or of its nearest existing parent); None if unknown."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def disk_full_error(path: Path, needed_bytes: int | None, cause: BaseException, *,
                    at_least: bool = False, atomic: bool = True) -> DiskFullError:
    """A ``DiskFullError`` for ``path`` with what is needed and what is free.

    ``atomic``: the write went through a temporary (the previous version is intact).
    """
    needed = "an unknown number of" if needed_bytes is None else (
        f"{'at least ' if at_least else ''}{needed_bytes:,}")
    free = free_bytes(path)
    return DiskFullError(
        errno.ENOSPC,
        f"Disk full while writing {path}: {needed} bytes needed, "
        f"{'an unknown number of' if free is None else f'{free:,}'} bytes free ({cause}). "
        + (f"The previous version of {path.name} is intact and no temporary file was left. " if atomic else "")
        + "Free some space (or point the path at a larger disk) and run again.",
    )


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, len(data), exc) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


@contextmanager
def atomic_directory(path: Path, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` as a whole.

    On an exception the temporary folder is removed and ``path`` keeps its previous
    contents, so no half-written folder is ever left where the next step reads. Files
    that the new save does not contain do not survive (no stale partitions). A full disk
    becomes a ``DiskFullError`` (``needed_bytes``, when the caller knows it, is reported).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.tmp-{token}")
    old = path.with_name(f".{path.name}.old-{token}")
    try:
        tmp.mkdir()
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, needed_bytes, exc) from exc
        raise
    try:
        yield tmp
        _fsync_dir(tmp)
    except BaseException as exc:
        written = _folder_bytes(tmp) if tmp.exists() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            needed = needed_bytes if needed_bytes is not None else written
            raise disk_full_error(path, needed, exc, at_least=needed_bytes is None) from exc
        raise
    replace_path(tmp, path, old)


def replace_path(new: Path, path: Path, old: Path | None = None) -> None:
    """Put ``new`` (a file or folder on the same filesystem) where ``path`` is, by renames.

    ``path`` is renamed to ``old`` (a sibling by default), ``new`` to ``path``, then ``old``
    is removed: at every moment one complete version is at ``path`` or at ``old``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    old = old if old is not None else path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    if path.exists() or path.is_symlink():
        os.rename(path, old)
    os.rename(new, path)
    _fsync_dir(path.parent)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
