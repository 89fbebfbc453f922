"""What one generator is trained on and where its checkpoints go (``params:<family>.run``).

Training, sampling, evaluation and rebalancing all read a family's run block: it names the
extraction output (``slices`` or ``patches``) the family learns from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synthmed.core.checksums import sha256_bytes

SOURCES = ("slices", "patches")


@dataclass(frozen=True)
class RunConfig:
    """``params:<family>.run``.

    Args:
        source: the extraction output trained on: ``slices`` or ``patches``.
        split: the split trained on.
        checkpoint_root: parent folder of every run's checkpoints.
        preview_per_class: images per class in the sample grid.
        preview_sampler: the ``SamplerSpec`` keys of the sample grid.
        preview_seed: seed of the sample grid.
    """

    source: str = "slices"
    split: str = "train"
    checkpoint_root: str = "data/06_models/checkpoints"
    preview_per_class: int = 6
    preview_sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 25})
    preview_seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"run.source must be one of {list(SOURCES)}, got {self.source!r}.")


def checkpoint_folder(run: RunConfig, family: str, model_config: Any, training_config: Any,
                      data_checksums: list[str]) -> Path:
    """``run.checkpoint_root/<family>-<digest>``.

    The digest covers the model and training parameters, the training arrays' checksums and
    the split, so a changed configuration or dataset never resumes an old run.
    """
    parts = (asdict(model_config), asdict(training_config), data_checksums, run.split)
    digest = sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode())[:12]
    return Path(run.checkpoint_root) / f"{family}-{digest}"
