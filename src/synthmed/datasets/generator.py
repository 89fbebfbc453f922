"""A trained generator as a catalog dataset: a folder of safetensors weights and its config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedro.io import AbstractDataset, DatasetError

from synthmed.core.atomic import atomic_directory
from synthmed.datasets.preview import JSONPreview, json_file

if TYPE_CHECKING:  # torch is imported when a generator is loaded or saved, not with the catalog
    from synthmed.generators.base import TrainedGenerator

logger = logging.getLogger(__name__)


class GeneratorDataset(AbstractDataset["TrainedGenerator", "TrainedGenerator"]):
    """Saves a ``TrainedGenerator`` atomically (checksums written last); loads it verified.

    Args:
        path: the folder (see ``synthmed.generators.common`` for its layout).
        metadata: free-form metadata (kedro-viz layers); ignored by the dataset.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> TrainedGenerator:
        # load_generator verifies checksums.json (synthmed.core.checksums) before reading
        # any weights and raises CheckpointError naming the file, both values and the fix.
        from synthmed.generators.registry import load_trained_generator

        return load_trained_generator(self._path)

    def save(self, data: TrainedGenerator) -> None:
        from synthmed.generators.base import TrainedGenerator
        from synthmed.generators.common import write_checksums, write_generator_files

        if not isinstance(data, TrainedGenerator):
            raise DatasetError(f"GeneratorDataset({self._path}) saves a TrainedGenerator, got {type(data).__name__}.")
        with atomic_directory(self._path) as tmp:
            write_generator_files(tmp, data.family, data.config, data.models, class_names=data.class_names,
                                  card=data.card)
            write_checksums(tmp)
        logger.info("Saved %s generator to %s", data.family, self._path)

    def _exists(self) -> bool:
        return (self._path / "checksums.json").is_file()

    def preview(self) -> JSONPreview:
        """kedro-viz: the generator's description (``generator.json``: family, configuration, modules)."""
        return json_file(self._path / "generator.json")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
