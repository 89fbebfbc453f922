"""A folder of files: a lazy listing on load, objects encoded by suffix on save.

Loading never reads file contents: it returns a ``SourceFolder`` with the sorted relative
paths and their sizes; nodes read one file at a time with ``read_bytes``. This is how raw
inputs reach the ingestion readers (which then decode bytes, not paths).

The folder is a boundary. Symbolic links are resolved and compared with the resolved root:
a link that leaves the folder is never followed nor read; it is listed in
``SourceFolder.refused`` with the reason ``link_outside_source`` (``broken_link`` for a
dangling one, ``link_loop`` for a folder link back into its own ancestors), so the
ingestion inventory rejects it visibly. Links inside the folder are followed; a file
reached more than once (itself and through links) is listed once, under its path without
links when it has one, and its other paths are in ``SourceFolder.duplicates``.

Saving takes ``{relative/path.ext: object or zero-argument callable}`` and replaces the whole folder atomically.
Last, it writes a hidden ``.synthmed-checksums.json`` (sha256 and size of every file). Hidden
files are left out of the listing, so readers and users do not see it; loading a folder that
has one verifies every listed file first (``synthmed.core.checksums``: hashed once per
unchanged file and process) and raises ``DataChecksumError`` naming a missing, truncated or
altered file, both values and the fix. Folders without it (raw inputs) are listed as is.
Objects are encoded by the file suffix:

============  ==============================================================
suffix        object
============  ==============================================================
any           ``bytes`` (written as is), or a ``SpilledFile`` (moved into place)
.md .txt      ``str``
.csv          ``pandas.DataFrame`` (no index) or ``str``
.json         ``dict`` / ``list`` (sorted keys)
.nii .nii.gz  ``nibabel.Nifti1Image`` (gzip with mtime 0: byte-reproducible)
.dcm          ``pydicom.Dataset`` (written with a DICOM file meta header)
.png          ``numpy.ndarray`` uint8/uint16, (H, W) or (H, W, 3); no metadata chunks
============  ==============================================================
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from synthmed.core.atomic import atomic_directory
from synthmed.core.checksums import sha256_bytes, write_listing
from synthmed.core.parallel import SpilledFile
from synthmed.datasets.integrity import FOLDER_LISTING, DataChecksumError, verified_listing
from synthmed.datasets.preview import TablePreview, table

logger = logging.getLogger(__name__)

_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
DEFAULT_EXCLUDE = (".*", "*/.*")
# The public sample's file list: a folder holding it is the sample, which the sample_data
# pipeline may replace; no other folder is ever replaced by the sample.
PUBLIC_SAMPLE_MANIFEST = "SAMPLE_MANIFEST.json"
# The table a folder's preview shows when it has one (a published dataset, a raw folder's labels).
PREVIEW_TABLES = ("metadata.csv", "labels.csv")
# Why a listed path is not readable (``SourceFolder.refused``), with the detail shown to users.
LINK_OUTSIDE_SOURCE = "link_outside_source"
BROKEN_LINK = "broken_link"
LINK_LOOP = "link_loop"
_REFUSAL_DETAIL = {
    LINK_OUTSIDE_SOURCE: "a symbolic link to a {kind} outside the source folder: not followed, nothing read "
                         "(copy the data into the folder if it belongs to the study)",
    BROKEN_LINK: "a symbolic link whose target does not exist",
    LINK_LOOP: "a symbolic link to a folder that contains it (a loop): not followed",
}


def check_relative_path(relpath: str) -> PurePosixPath:
    """Reject absolute paths, '..' and unusual characters in an output file name."""
    path = PurePosixPath(relpath)
    if path.is_absolute() or not path.parts or any(
        part in ("..", ".") or not _COMPONENT.match(part) for part in path.parts
    ):
        raise DatasetError(
            f"Output file name {relpath!r} is not allowed: expected a relative path whose "
            "parts use only [A-Za-z0-9._-] and do not start with '.'."
        )
    return path


@dataclass(frozen=True)
class SourceFolder:
    """A listing of files under ``root``; contents are read on demand."""

    root: Path
    files: tuple[str, ...]
    sizes: Mapping[str, int]
    # Paths found but not listed: {relpath: (reason, detail)}; nothing of them is read.
    refused: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Other paths of a listed file (through links inside the folder): {relpath: listed relpath}.
    duplicates: Mapping[str, str] = field(default_factory=dict)

    def _path(self, relpath: str) -> Path:
        """The file of a listed ``relpath``, checked to be inside the resolved root now.

        The check is repeated at read time because a file may be replaced by a link after
        the listing was made.
        """
        if relpath not in self.sizes:
            raise KeyError(f"{relpath!r} is not part of {self.root}")
        path = self.root / relpath
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise DatasetError(
                f"{relpath!r} in {self.root} now resolves outside the source folder (a symbolic link was "
                "created after the folder was listed); refusing to read it. Remove the link and run again."
            )
        return path

    def read_bytes(self, relpath: str) -> bytes:
        return self._path(relpath).read_bytes()

    def read_head(self, relpath: str, n_bytes: int) -> bytes:
        """The first ``n_bytes`` of a file (format sniffing without reading it all)."""
        with open(self._path(relpath), "rb") as handle:
            return handle.read(n_bytes)

    def read_text(self, relpath: str) -> str:
        return self.read_bytes(relpath).decode("utf-8")

    def read_verified(self, relpaths: Sequence[str], sha256: str) -> list[bytes]:
        """The bytes of ``relpaths``, checked against the sha256 of their concatenation.

        Raises:
            DatasetError: the files changed since the checksum was recorded (for example
                between ingestion and preprocessing); run the earlier step again.
        """
        blobs = [self.read_bytes(rel) for rel in relpaths]
        found = sha256_bytes(blobs)
        if found != sha256:
            raise DataChecksumError(
                f"{relpaths[0]} in {self.root} changed since its checksum was recorded "
                f"(expected sha256 {sha256}, found {found}); run the ingestion pipeline again "
                "(`kedro run --pipelines ingestion` / `dvc repro`).",
                path=self.root / relpaths[0], kind="sha256", expected=sha256, found=found)
        return blobs


def encode(relpath: str, obj: Any) -> bytes:
    """Encode ``obj`` for the file ``relpath`` according to its suffix (see module doc)."""
    name = relpath.lower()
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if name.endswith(".csv"):
        import pandas as pd

        if isinstance(obj, pd.DataFrame):
            return obj.to_csv(index=False, lineterminator="\n").encode("utf-8")
    if name.endswith(".json") and isinstance(obj, (dict, list)):
        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        if isinstance(obj, nib.Nifti1Image):
            raw = obj.to_bytes()
            # mtime=0 and no file name in the gzip header: same image, same bytes.
            return gzip.compress(raw, compresslevel=6, mtime=0) if name.endswith(".gz") else raw
    if name.endswith(".dcm"):
        import pydicom

        if isinstance(obj, pydicom.Dataset):
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, obj, enforce_file_format=True)
            return buffer.getvalue()
    if name.endswith(".png") and isinstance(obj, np.ndarray):
        return encode_png(obj)
    if name.endswith(".npy") and isinstance(obj, np.ndarray) and obj.dtype != object:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(obj), allow_pickle=False)
        return buffer.getvalue()
    raise DatasetError(
        f"Cannot write {relpath!r}: no encoder for a {type(obj).__name__} with that suffix "
        "(see synthmed.datasets.file_folder for the supported pairs)."
    )


def encode_png(array: np.ndarray) -> bytes:
    """PNG from pixels only: no text, time, EXIF or ICC chunks."""
    from PIL import Image

    if array.dtype == np.uint8 and array.ndim in (2, 3):
        mode = "L" if array.ndim == 2 else {3: "RGB", 4: "RGBA"}.get(array.shape[-1])
    elif array.dtype == np.uint16 and array.ndim == 2:
        mode = "I;16"
    else:
        mode = None
    if mode is None:
        raise DatasetError(
            f"PNG needs uint8 (H, W) / (H, W, 3|4) or uint16 (H, W); got {array.dtype} "
            f"{array.shape}."
        )
    image = Image.fromarray(np.ascontiguousarray(array))  # infers L / RGB / RGBA / I;16
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


class FileFolderDataset(AbstractDataset[Mapping[str, Any], SourceFolder]):
    """Kedro dataset for a folder of files.

    Example catalog entry (a team's own data, in conf/local/catalog.yml)::

        raw_sources:
          type: synthmed.datasets.FileFolderDataset
          path: /mnt/exports/fundus_study
          exclude: ["*.xlsx"]

    Args:
        path: the folder (local filesystem).
        exclude: glob patterns (on the relative POSIX path) left out of the listing;
            hidden files and folders are always left out.
        metadata: free-form metadata (kedro-viz layers); ignored by the dataset.
    """

    def __init__(
        self,
        *,
        path: str,
        exclude: Sequence[str] = (),
        metadata: dict[str, Any] | None = None,
    ):
        self._path = Path(path)
        self._exclude = tuple(DEFAULT_EXCLUDE) + tuple(exclude)
        self.metadata = metadata

    def load(self) -> SourceFolder:
        if not self._path.is_dir():
            raise DatasetError(
                f"Source folder {self._path} does not exist or is not a folder. Point the "
                "catalog entry at your data (README: 'Your own data')."
            )
        listing = self._path / FOLDER_LISTING
        recorded = verified_listing(self._path, listing) if listing.is_file() else None
        sizes, refused, duplicates = list_source(self._path, self._exclude)
        if refused:
            # Counts only: paths of raw data are not logged (they may identify a patient).
            logger.warning("%s: %d symbolic link(s) not followed %s; they are rejected by ingestion.",
                           self._path, len(refused), dict(sorted(Counter(r for r, _ in refused.values()).items())))
        if recorded is not None and (added := sorted(set(sizes) - set(recorded))):
            logger.warning("%s holds %d file(s) its writer did not record (first: %s); they are "
                           "not checksum-verified.", self._path, len(added), added[0])
        return SourceFolder(root=self._path, files=tuple(sizes), sizes=sizes, refused=refused, duplicates=duplicates)

    def save(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise DatasetError(
                f"FileFolderDataset({self._path}) saves a mapping of relative path -> "
                f"object, got {type(data).__name__}."
            )
        if PUBLIC_SAMPLE_MANIFEST in data and not _replaceable_by_sample(self._path):
            raise DatasetError(
                f"Refusing to write the public sample to {self._path}: that folder holds files and is not the "
                f"sample (no {PUBLIC_SAMPLE_MANIFEST}), so it would be replaced. `raw_sources` points at your "
                "own data: run the sample_data pipeline with the base catalog, or point raw_sources at an empty "
                "folder."
            )
        with atomic_directory(self._path) as tmp:
            for relpath in sorted(data):
                rel = check_relative_path(relpath)
                target = tmp.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                value = data[relpath]
                if isinstance(value, SpilledFile):  # a finished file a worker wrote: moved, not rewritten
                    value.move_to(target)
                    continue
                # Zero-argument callables are evaluated one at a time (PartitionedDataset
                # idiom), so a node can hand over many large files without holding them.
                target.write_bytes(encode(relpath, value() if callable(value) else value))
            write_listing(tmp, FOLDER_LISTING)  # last: a folder with its listing is complete
        logger.info("Saved %d files to %s", len(data), self._path)

    def preview(self, nrows: int = 20) -> TablePreview:
        """kedro-viz: the folder's ``metadata.csv`` or ``labels.csv`` if it has one, else its file listing.

        Only folders synthmed wrote (with their checksum listing): a team's raw folder is not
        previewed, since its file names and labels may identify patients.
        """
        import pandas as pd

        if not (self._path / FOLDER_LISTING).is_file():
            raise DatasetError(f"{self._path} was not written by synthmed (no {FOLDER_LISTING}): raw folders are "
                               "not previewed, their names and labels may identify patients.")

        for name in PREVIEW_TABLES:
            if (self._path / name).is_file():
                return table(pd.read_csv(self._path / name, nrows=nrows), nrows)
        sizes, _, _ = list_source(self._path, self._exclude)
        return table(pd.DataFrame({"path": list(sizes), "bytes": list(sizes.values())}), nrows)

    def _exists(self) -> bool:
        return self._path.is_dir()


    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "exclude": list(self._exclude)}


def list_source(
    root: Path, exclude: Sequence[str]
) -> tuple[dict[str, int], dict[str, tuple[str, str]], dict[str, str]]:
    """Walk ``root`` without leaving it: ``(sizes, refused, duplicates)`` (see ``SourceFolder``).

    Every entry is resolved and compared with the resolved root; links are never read before
    that check. Excluded paths (hidden ones included) are skipped silently, links too.
    """
    top = root.resolve()

    def excluded(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, pattern) for pattern in exclude)

    found: list[tuple[str, Path, bool]] = []  # (relpath, resolved file, reached through a link)
    refused: dict[str, tuple[str, str]] = {}
    # (folder as reached, its relpath, resolved folders from the root down to it, through a link?)
    stack: list[tuple[Path, str, tuple[Path, ...], bool]] = [(root, "", (top,), False)]
    while stack:
        folder, prefix, ancestors, via_link = stack.pop()
        with os.scandir(folder) as entries:
            names = sorted(entries, key=lambda e: e.name)
        for entry in names:
            rel = f"{prefix}{entry.name}"
            path = Path(entry.path)
            is_link = entry.is_symlink()
            if not is_link:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):  # hidden folders: all their files are excluded
                        stack.append((path, rel + "/", (*ancestors, path.resolve()), via_link))
                elif entry.is_file(follow_symlinks=False) and not excluded(rel):
                    found.append((rel, path.resolve(), via_link))
                continue
            if excluded(rel):
                continue
            target = path.resolve()
            if not target.is_relative_to(top):
                kind = "folder" if target.is_dir() else "file"
                refused[rel] = (LINK_OUTSIDE_SOURCE, _REFUSAL_DETAIL[LINK_OUTSIDE_SOURCE].format(kind=kind))
            elif not target.exists():
                refused[rel] = (BROKEN_LINK, _REFUSAL_DETAIL[BROKEN_LINK])
            elif target.is_dir():
                if target in ancestors:
                    refused[rel] = (LINK_LOOP, _REFUSAL_DETAIL[LINK_LOOP])
                else:
                    stack.append((path, rel + "/", (*ancestors, target), True))
            elif target.is_file():
                found.append((rel, target, True))
    # One listed path per file: its own path when it has one, else the first in sorted order.
    canonical: dict[Path, str] = {}
    for rel, target, _linked in sorted(found, key=lambda item: (item[2], item[0])):
        canonical.setdefault(target, rel)
    # Sorted by path parts, as pathlib sorts ("a/x" before "a-b/x"): the listing order is unchanged.
    sizes = {rel: target.stat().st_size for target, rel in sorted(canonical.items(), key=lambda kv: kv[1].split("/"))}
    duplicates = {rel: canonical[target] for rel, target, _ in sorted(found) if canonical[target] != rel}
    return sizes, dict(sorted(refused.items())), duplicates


def _replaceable_by_sample(folder: Path) -> bool:
    """Absent, empty, or the public sample itself."""
    return not folder.is_dir() or not any(folder.iterdir()) or (folder / PUBLIC_SAMPLE_MANIFEST).is_file()
