"""A folder of named ``.npy`` arrays: lossless, pickle-free, memory-mapped on load.

Layout::

    <path>/index.json        {"format": ..., "arrays": {name: {shape, dtype, sha256}}}
    <path>/<name>.npy        one array per name (NumPy format, allow_pickle=False)

Loading returns an ``ArrayStore`` mapping whose values are read-only memory maps, so a
training loop can index batches (``store["images"][idx]``) without reading the whole
array. Saving accepts arrays or zero-argument callables returning arrays (the
``PartitionedDataset`` idiom), so a node can hand over one item at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError
from tqdm.auto import tqdm

from synthmed.core.atomic import atomic_directory

logger = logging.getLogger(__name__)

FORMAT = "synthmed-array-store/1"
INDEX = "index.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_array_name(name: str) -> str:
    """Reject names that are not plain file stems (no separators, no '..')."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DatasetError(
            f"Array name {name!r} is not allowed: expected 1-128 characters from "
            "[A-Za-z0-9_-], starting with a letter or digit."
        )
    return name


class ArrayStore(Mapping[str, np.ndarray]):
    """Read-only view of a saved store; arrays open lazily as memory maps."""

    def __init__(self, root: Path, index: Mapping[str, Mapping[str, Any]]):
        self._root = root
        self._index = dict(index)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._index:
            raise KeyError(f"{name!r} is not in the array store at {self._root}")
        return np.load(self._root / f"{name}.npy", mmap_mode="r", allow_pickle=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def info(self, name: str) -> Mapping[str, Any]:
        """Shape, dtype and checksum recorded at save time."""
        return self._index[name]

    def verify(self) -> None:
        """Recompute every checksum; raise ``DatasetError`` naming the first mismatch."""
        for name, info in self._index.items():
            actual = _sha256(self._root / f"{name}.npy")
            if actual != info["sha256"]:
                raise DatasetError(
                    f"Array {name!r} in {self._root} is corrupt: sha256 {actual} does not "
                    f"match the index ({info['sha256']})."
                )


class ArrayStoreDataset(AbstractDataset[Mapping[str, Any], ArrayStore]):
    """Kedro dataset for an ``ArrayStore`` folder.

    Example catalog entry::

        ingested_images:
          type: synthmed.datasets.ArrayStoreDataset
          path: data/02_intermediate/ingestion/images

    Args:
        path: folder of the store (local filesystem).
        metadata: free-form metadata (kedro-viz layers); ignored by the dataset.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> ArrayStore:
        index_path = self._path / INDEX
        if not index_path.is_file():
            raise DatasetError(f"No array store at {self._path}: {INDEX} is missing.")
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise DatasetError(
                f"{index_path} has format {index.get('format')!r}, expected {FORMAT!r}."
            )
        return ArrayStore(self._path, index["arrays"])

    def save(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise DatasetError(
                f"ArrayStoreDataset({self._path}) saves a mapping of name -> array, got "
                f"{type(data).__name__}."
            )
        names = sorted(data)
        for name in names:
            check_array_name(name)
        index: dict[str, dict[str, Any]] = {}
        with atomic_directory(self._path) as tmp:
            for name in tqdm(names, desc=f"writing {self._path.name}", unit="array",
                             disable=None, leave=False):
                value = data[name]
                array = value() if callable(value) else value
                array = np.asarray(array)
                if array.dtype == object:
                    raise DatasetError(
                        f"Array {name!r} has dtype object; only numeric and boolean arrays "
                        "can be stored (no pickles)."
                    )
                target = tmp / f"{name}.npy"
                np.save(target, np.ascontiguousarray(array), allow_pickle=False)
                index[name] = {
                    "shape": list(array.shape),
                    "dtype": array.dtype.str,
                    "sha256": _sha256(target),
                }
            payload = {"format": FORMAT, "arrays": index}
            (tmp / INDEX).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        logger.info("Saved %d arrays to %s", len(index), PurePosixPath(self._path))

    def _exists(self) -> bool:
        return (self._path / INDEX).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
