"""A trained ``ConvClassifier`` (the domain feature encoder) as a catalog dataset.

The folder holds ``classifier.json`` (format, architecture, class names, training facts),
``weights.safetensors`` and ``checksums.json`` (sha256 and size of each file, written last).
Nothing is pickled; a folder whose checksums do not match is refused with a
``DataChecksumError`` naming the file, both values and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kedro.io import AbstractDataset, DatasetError

from synthmed.core.atomic import atomic_directory
from synthmed.datasets.integrity import MODEL_LISTING, hint_for, verified_listing
from synthmed.datasets.preview import JSONPreview, json_file

if TYPE_CHECKING:  # torch is imported when a classifier is loaded or saved, not with the catalog
    from synthmed.metrics.features import TrainedClassifier

logger = logging.getLogger(__name__)

FORMAT = "synthmed-classifier/1"


class ClassifierDataset(AbstractDataset["TrainedClassifier", "TrainedClassifier"]):
    """Saves a ``TrainedClassifier`` atomically with checksums; loads it verified.

    Args:
        path: the folder.
        metadata: free-form metadata (kedro-viz layers); ignored by the dataset.
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> TrainedClassifier:
        from safetensors.torch import load_file

        from synthmed.core.config import from_params
        from synthmed.metrics.features import ClassifierConfig, ConvClassifier, TrainedClassifier

        if not self._path.is_dir():
            raise DatasetError(f"No trained classifier at {self._path}: run its pipeline first.")
        listing = self._path / MODEL_LISTING
        if not listing.is_file():
            raise DatasetError(f"{self._path} has no {MODEL_LISTING}: the save was interrupted or this is "
                               f"not a classifier folder; {hint_for(self._path)}")
        verified_listing(self._path, listing)
        manifest = json.loads((self._path / "classifier.json").read_text())
        if manifest.get("format") != FORMAT:
            raise DatasetError(f"{self._path}/classifier.json has format {manifest.get('format')!r}, "
                               f"expected {FORMAT!r}.")
        model = ConvClassifier(from_params(ClassifierConfig, manifest["config"], f"{self._path}/classifier.json"))
        model.load_state_dict(load_file(self._path / "weights.safetensors"), strict=True)
        return TrainedClassifier(model.eval(), tuple(manifest["class_names"]), dict(manifest.get("facts", {})))

    def save(self, data: TrainedClassifier) -> None:
        from safetensors.torch import save_file

        from synthmed.generators.common import write_checksums
        from synthmed.metrics.features import TrainedClassifier

        if not isinstance(data, TrainedClassifier):
            raise DatasetError(f"ClassifierDataset({self._path}) saves a TrainedClassifier, got {type(data).__name__}.")
        with atomic_directory(self._path) as tmp:
            state = {k: v.detach().contiguous().cpu() for k, v in data.model.state_dict().items()}
            save_file(state, tmp / "weights.safetensors")
            manifest = {"format": FORMAT, "config": dataclasses.asdict(data.model.config),
                        "class_names": list(data.class_names), "facts": data.facts}
            (tmp / "classifier.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            write_checksums(tmp)
        logger.info("Saved classifier (%d classes) to %s", len(data.class_names), self._path)

    def _exists(self) -> bool:
        return (self._path / MODEL_LISTING).is_file()

    def preview(self) -> JSONPreview:
        """kedro-viz: the classifier's description (``classifier.json``: architecture, classes, training facts)."""
        return json_file(self._path / "classifier.json")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
