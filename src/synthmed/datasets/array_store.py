"""A folder of named ``.npy`` arrays: lossless, pickle-free, memory-mapped on load.

Layout::

    <path>/index.json        {"format": ..., "arrays": {name: {shape, dtype, sha256, size}}}
    <path>/<name>.npy        one array per name (NumPy format, allow_pickle=False)

Every load verifies each array's size and sha256 against the index before it is memory
mapped (``synthmed.core.checksums``: hashed once per unchanged file and process, a ``stat``
after that); a mismatch raises ``DataChecksumError`` naming the file, both values and the
fix. Indexes written before sizes were recorded are verified by sha256 alone.

Loading returns an ``ArrayStore`` mapping whose values are read-only memory maps, so a
training loop can index batches (``store["images"][idx]``) without reading the whole
array. Any number of axes is stored as is: images ``(N, C, H, W)``, volumes
``(N, C, D, H, W)``; each opened array's shape and dtype are checked against the index, so
an index edited by hand (or a file swapped with its checksum) cannot hand a training loop
arrays of another geometry. Saving accepts arrays or zero-argument callables returning arrays (the
``PartitionedDataset`` idiom), so a node can hand over one item at a time.
"""

from __future__ import annotations

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
from synthmed.core.checksums import describe_file
from synthmed.datasets.integrity import ARRAY_FORMAT, DataChecksumError, hint_for, read_json, verified
from synthmed.datasets.preview import ImagePreview, image_grid, store_images

logger = logging.getLogger(__name__)

FORMAT = ARRAY_FORMAT
INDEX = "index.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


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
        return self._open(name)

    def _open(self, name: str) -> np.ndarray:
        """The verified array as a read-only memory map (only its header is read here)."""
        path = self._root / f"{name}.npy"
        info = self._index[name]
        # A stat when unchanged since load (cached); a re-hash if the file was replaced.
        verified(path, info["sha256"], info.get("size"), store=self._root)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        expected = (list(info.get("shape", array.shape)), np.dtype(info.get("dtype", array.dtype)))
        if (list(array.shape), array.dtype) != expected:
            raise DataChecksumError(
                f"{path} holds a {array.dtype} array of shape {list(array.shape)}, but {self._root / INDEX} "
                f"records {expected[1]} {expected[0]}; {hint_for(self._root)}", path=path, kind="listing",
                expected=f"{expected[1]} {expected[0]}", found=f"{array.dtype} {list(array.shape)}")
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def info(self, name: str) -> Mapping[str, Any]:
        """Shape, dtype and checksum recorded at save time."""
        return self._index[name]

    def verify(self) -> None:
        """Check every array's size, sha256, shape and dtype; raise ``DataChecksumError`` on the first mismatch."""
        for name in self._index:
            self._open(name)


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
        index = read_json(index_path, "Array store index")
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            found = index.get("format") if isinstance(index, dict) else type(index).__name__
            raise DatasetError(f"{index_path} has format {found!r}, expected {FORMAT!r}.")
        arrays = index.get("arrays")
        if not isinstance(arrays, dict) or not all(
            isinstance(info, dict) and isinstance(info.get("sha256"), str) for info in arrays.values()
        ):
            raise DataChecksumError(
                f"{index_path} does not record a sha256 for every array; {hint_for(self._path)}",
                path=index_path, kind="listing")
        for name in arrays:
            check_array_name(name)
        store = ArrayStore(self._path, arrays)
        store.verify()  # before anything is memory-mapped: fail at load, not mid-training
        return store

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
                digest = describe_file(target)
                index[name] = {
                    "shape": list(array.shape),
                    "dtype": array.dtype.str,
                    "sha256": digest.sha256,
                    "size": digest.size,
                }
            payload = {"format": FORMAT, "arrays": index}
            (tmp / INDEX).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        logger.info("Saved %d arrays to %s", len(index), PurePosixPath(self._path))

    def _exists(self) -> bool:
        return (self._path / INDEX).is_file()

    def preview(self, max_images: int = 16) -> ImagePreview:
        """kedro-viz: a grid of the first images (the ``images`` array's items, else the arrays in order).

        Opens the store without verifying checksums: a preview reads a few images, not the store.
        """
        arrays = read_json(self._path / INDEX, "Array store index").get("arrays", {})
        return image_grid(store_images(ArrayStore(self._path, arrays), max_images), max_images)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
