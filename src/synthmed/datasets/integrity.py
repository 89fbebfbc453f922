"""Checksum verification for the datasets, and the walk behind ``synthmed verify``.

The hashing and the once-per-file cache live in ``synthmed.core.checksums``; this module
turns its ``ChecksumError`` into a Kedro ``DatasetError`` (so the catalog passes it on
unwrapped), names the DVC stage that writes a corrupt output in the fix, and finds and
verifies every store under ``data/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from kedro.io import DatasetError

from synthmed.core.checksums import (
    ChecksumError,
    FileDigest,
    read_listing,
    restore_hint,
    verify_file,
    verify_listing,
)

logger = logging.getLogger(__name__)

# The hidden listing FileFolderDataset writes last into the folders it saves. Hidden files
# are left out of a folder's listing (DEFAULT_EXCLUDE), so users and readers never see it.
FOLDER_LISTING = ".synthmed-checksums.json"
# The listing of generator and classifier folders (synthmed.generators.common.CHECKSUMS).
MODEL_LISTING = "checksums.json"
ARRAY_INDEX = "index.json"
ARRAY_FORMAT = "synthmed-array-store/1"


class DataChecksumError(ChecksumError, DatasetError):
    """``ChecksumError`` raised by a dataset: also a ``DatasetError`` for Kedro."""

    @classmethod
    def from_error(cls, exc: ChecksumError) -> DataChecksumError:
        return cls(str(exc), path=exc.path, kind=exc.kind, expected=exc.expected, found=exc.found)


# ------------------------------------------------------------------ the fix, per output


@lru_cache(maxsize=8)
def _stage_outputs(dvc_yaml: Path, mtime_ns: int) -> tuple[tuple[Path, str], ...]:
    import yaml

    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    outputs = []
    for stage in stages.values():
        cmd = stage.get("cmd") if isinstance(stage, dict) else None
        if not isinstance(cmd, str):
            continue
        for key in ("outs", "metrics", "plots"):
            for out in stage.get(key) or ():
                name = next(iter(out)) if isinstance(out, dict) else out
                if isinstance(name, str):
                    outputs.append(((dvc_yaml.parent / name).resolve(), cmd))
    return tuple(outputs)


def find_dvc_yaml(start: Path) -> Path | None:
    """The nearest dvc.yaml at or above ``start`` (the project root)."""
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / "dvc.yaml").is_file():
            return folder / "dvc.yaml"
    return None


def hint_for(path: Path) -> str:
    """``restore_hint`` naming the DVC stage command that writes ``path``, when dvc.yaml says."""
    try:
        dvc_yaml = find_dvc_yaml(path.parent if path.parent.exists() else Path.cwd())
        if dvc_yaml is not None:
            resolved = path.resolve()
            for out, cmd in _stage_outputs(dvc_yaml, dvc_yaml.stat().st_mtime_ns):
                if resolved == out or out in resolved.parents:
                    return restore_hint(path, cmd)
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # only the wording of the fix depends on it
    return restore_hint(path)


def verified(path: Path, sha256: str, size: int | None, *, store: Path) -> None:
    """``verify_file`` with the fix for ``store``, as a ``DataChecksumError``."""
    try:
        verify_file(path, sha256, size, fix=hint_for(store))
    except ChecksumError as exc:
        raise DataChecksumError.from_error(exc) from None


def verified_listing(folder: Path, listing: Path) -> dict[str, FileDigest]:
    """Read and verify a listing; ``DataChecksumError`` on the first failure."""
    fix = hint_for(folder)
    try:
        records = read_listing(listing, fix=fix)
        verify_listing(folder, records, fix=fix)
    except ChecksumError as exc:
        raise DataChecksumError.from_error(exc) from None
    return records


def read_json(path: Path, what: str) -> Any:
    """JSON of an index file, or a ``DatasetError`` naming it and the fix."""
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataChecksumError(
            f"{what} {path} is not valid JSON ({exc}); {hint_for(path.parent)}",
            path=path, kind="listing") from exc


# ------------------------------------------------------------------ synthmed verify


@dataclass
class StoreReport:
    """One line of ``synthmed verify``."""

    path: str
    kind: str  # array-store | model-folder | file-folder | dvc-output
    status: str  # intact | missing | corrupt
    files: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        head = f"{self.status:8s} {self.kind:13s} {self.path}"
        if self.status == "intact":
            return f"{head} ({self.files} files)"
        return head + "".join(f"\n         - {p['message']}" for p in self.problems)


def _problem(exc: ChecksumError, root: Path) -> dict[str, Any]:
    try:
        rel = exc.path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = str(exc.path)
    return {"file": rel, "kind": exc.kind, "expected": exc.expected, "found": exc.found,
            "message": str(exc)}


def _array_records(folder: Path) -> dict[str, FileDigest]:
    index = read_json(folder / ARRAY_INDEX, "Array store index")
    arrays = index.get("arrays") if isinstance(index, dict) else None
    if not isinstance(arrays, dict):
        raise DataChecksumError(f"{folder / ARRAY_INDEX} has no 'arrays'; {hint_for(folder)}",
                                path=folder / ARRAY_INDEX, kind="listing")
    return {f"{name}.npy": FileDigest(info["sha256"], info.get("size")) for name, info in arrays.items()}


def _verify_one(task: tuple[Path, str, FileDigest]) -> ChecksumError | None:
    folder, rel, digest = task
    try:
        verify_file(folder / rel, digest.sha256, digest.size, fix=hint_for(folder))
    except ChecksumError as exc:
        return exc
    return None


def _stores(data: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(data.rglob("*")):
        if path.name == ARRAY_INDEX and path.is_file():
            try:
                is_store = json.loads(path.read_text()).get("format") == ARRAY_FORMAT
            except (ValueError, AttributeError):
                is_store = True  # an unreadable index is reported as corrupt, not skipped
            if is_store:
                yield path.parent, "array-store"
        elif path.name == MODEL_LISTING and path.is_file():
            yield path.parent, "model-folder"
        elif path.name == FOLDER_LISTING and path.is_file():
            yield path.parent, "file-folder"


def verify_tree(data: Path, dvc_yaml: Path | None = None, *, workers: int = 4) -> list[StoreReport]:
    """Verify every store under ``data``; outputs in ``dvc_yaml`` that are absent are missing.

    Files are hashed on ``workers`` threads (hashlib releases the GIL on large reads) and
    each at most once per process (``synthmed.core.checksums`` cache).
    """
    from concurrent.futures import ThreadPoolExecutor

    root = data.parent
    reports: list[StoreReport] = []
    tasks: list[tuple[StoreReport, tuple[Path, str, FileDigest]]] = []
    for folder, kind in _stores(data):
        shown = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder)
        report = StoreReport(shown, kind, "intact")
        reports.append(report)
        try:
            if kind == "array-store":
                records = _array_records(folder)
            else:
                name = MODEL_LISTING if kind == "model-folder" else FOLDER_LISTING
                records = read_listing(folder / name, fix=hint_for(folder))
        except ChecksumError as exc:
            report.problems.append(_problem(exc, root))
            continue
        except (KeyError, TypeError, AttributeError) as exc:
            report.problems.append(_problem(ChecksumError(
                f"{folder / ARRAY_INDEX}: malformed index ({exc!r}); {hint_for(folder)}",
                path=folder / ARRAY_INDEX, kind="listing"), root))
            continue
        report.files = len(records)
        tasks.extend((report, (folder, rel, digest)) for rel, digest in records.items())
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (report, _), error in zip(tasks, pool.map(_verify_one, [t for _, t in tasks])):
            if error is not None:
                report.problems.append(_problem(error, root))
    for report in reports:
        if report.problems:
            kinds = {p["kind"] for p in report.problems}
            report.status = "missing" if kinds == {"missing"} else "corrupt"
    if dvc_yaml is not None and dvc_yaml.is_file():
        data_resolved = data.resolve()
        for out, cmd in _stage_outputs(dvc_yaml, dvc_yaml.stat().st_mtime_ns):
            if (out == data_resolved or data_resolved in out.parents) and not out.exists():
                rel = out.relative_to(dvc_yaml.parent.resolve()).as_posix()
                reports.append(StoreReport(rel, "dvc-output", "missing", problems=[{
                    "file": rel, "kind": "missing", "expected": None, "found": None,
                    "message": f"{rel} is listed in {dvc_yaml.name} but absent; "
                               f"{restore_hint(rel, cmd)}"}]))
    return reports
