"""The only place that maps a family name to its implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from synthmed.core.config import from_params
from synthmed.generators import dcgan, ddpm, pix2pix
from synthmed.generators.base import FamilySpec
from synthmed.generators.common import (
    CheckpointError,
    load_weights,
    read_manifest,
    verify_checksums,
)
from synthmed.generators.names import FAMILY_NAMES

FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (ddpm.FAMILY, pix2pix.FAMILY, dcgan.FAMILY)}
if tuple(FAMILIES) != FAMILY_NAMES:
    raise RuntimeError(
        f"synthmed.generators.names.FAMILY_NAMES is {FAMILY_NAMES}, the registry has {tuple(FAMILIES)}: "
        "list the same families in the same order in both (pipelines build their namespaces from the names)."
    )


def get_family(name: str) -> FamilySpec:
    """The family called ``name``; a clear error lists the valid names."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown generator family {name!r}; expected one of {sorted(FAMILIES)}.")
    return FAMILIES[name]


def config_from_params(name: str, params: dict[str, Any]) -> Any:
    """The family's frozen ``Config`` from a ``params:`` mapping (unknown keys rejected)."""
    return from_params(get_family(name).config_cls, params, f"{name}.model")


def load_generator(folder: Path) -> tuple[FamilySpec, Any, nn.ModuleDict]:
    """Load a saved generator after verifying its checksums.

    Raises:
        CheckpointError: the folder is missing, incomplete, corrupt or of an unknown family.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"No saved generator at {folder}: train it first (kedro run --pipelines training).")
    verify_checksums(folder)
    manifest = read_manifest(folder)
    try:
        spec = get_family(manifest["family"])
    except ValueError as exc:
        raise CheckpointError(f"{folder}: {exc}") from exc
    config = from_params(spec.config_cls, manifest["config"], f"{folder}/generator.json")
    models = spec.build(config, 0)
    load_weights(folder, models)
    models.eval()
    return spec, config, models
