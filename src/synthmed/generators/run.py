"""What one generator is trained on and where its checkpoints go (``params:<family>.run``).

Training, sampling, evaluation and rebalancing all read a family's run block: it names the
extraction output (``slices`` or ``patches``) the family learns from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthmed.core.checksums import sha256_bytes

if TYPE_CHECKING:
    import pandas as pd

# Image sources (N, C, H, W) for image families; volume sources (N, C, D, H, W) for volume
# families (``synthmed.generators.previews.check_training_input`` refuses a mismatch).
IMAGE_SOURCES = ("slices", "patches", "lesion_patches")
VOLUME_SOURCES = ("volumes",)
SOURCES = IMAGE_SOURCES + VOLUME_SOURCES


@dataclass(frozen=True)
class RunConfig:
    """``params:<family>.run``.

    Args:
        source: the extraction output trained on: ``slices``, ``patches`` (2D images'
            masked patches) or ``lesion_patches`` (lesion-centred and normal patches of the
            volumes) for image families, ``volumes`` for volume families.
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


def source_inputs(run: RunConfig, family: str, pipeline: str, by_source: Mapping[str, Any]) -> Any:
    """``by_source[run.source]``: what ``pipeline`` wires for the family's source.

    Raises:
        ValueError: the source is valid but not one ``pipeline`` reads (``volumes`` for a 2D
            pipeline), naming the family, the source and the sources it reads.
    """
    if run.source not in by_source:
        raise ValueError(
            f"{family}.run.source is {run.source!r}, but the {pipeline} pipeline reads only {list(by_source)}. "
            f"The sources {list(VOLUME_SOURCES)} feed the volume families, which study_3d trains and samples "
            f"(kedro run --pipelines study_3d); a 2D family needs one of {list(IMAGE_SOURCES)}.")
    return by_source[run.source]


def checkpoint_folder(run: RunConfig, family: str, model_config: Any, training_config: Any,
                      data_checksums: list[str]) -> Path:
    """``run.checkpoint_root/<family>-<digest>``.

    The digest covers the model and training parameters, the training arrays' checksums and
    the split, so a changed configuration or dataset never resumes an old run.
    """
    parts = (asdict(model_config), asdict(training_config), data_checksums, run.split)
    digest = sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode())[:12]
    return Path(run.checkpoint_root) / f"{family}-{digest}"


def model_card_facts(run: RunConfig, training_config: Any, manifest: pd.DataFrame, indices: Any,
                     class_names: list[str], data_sha256: Mapping[str, str],
                     history: list[Mapping[str, float]], *, precision: str | None = None) -> dict[str, Any]:
    """What the model card of a trained generator states (``synthmed.generators.common``): facts only.

    Args:
        run, training_config: the run and trainer settings.
        manifest: the extraction manifest trained from; ``indices`` its rows in the training split.
        class_names: by class id.
        data_sha256: the training arrays' checksums (images, labels, masks).
        history: the trainer's logged records; the last one is quoted.
        precision: what ``mixed_precision`` became on the machine (``no`` is fp32), when known.
    """
    rows = manifest[manifest["index"].isin(list(indices))]
    per_class = {name: int((rows["label"] == name).sum()) for name in class_names} if "label" in rows else {}
    settings = asdict(training_config)
    return {
        "synthmed_version": _package_version(),
        "source": run.source,
        "split": run.split,
        "n_train": len(rows),
        "per_class": per_class,
        "data_sha256": dict(data_sha256),
        "training": {k: settings[k] for k in sorted(settings) if not isinstance(settings[k], (dict, list))},
        **({"precision": "fp32" if precision == "no" else precision} if precision else {}),
        "final": {k: float(v) for k, v in (history[-1] if history else {}).items()},
    }


def _package_version() -> str:
    try:
        return version("synthmed")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"
