"""The only place that maps a family name to its implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.generators import dcgan, ddpm, pix2pix, pix2pix3d
from synthmed.generators.base import FamilySpec, TrainedGenerator
from synthmed.generators.common import (
    CheckpointError,
    load_weights,
    read_manifest,
    verify_checksums,
)
from synthmed.generators.configs import FAMILY_CONFIGS
from synthmed.generators.names import FAMILY_NAMES, VOLUME_FAMILY_NAMES

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
nn = lazy_import("torch.nn")

# The image families: the pipelines run each of them (one namespace per family).
FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (ddpm.FAMILY, pix2pix.FAMILY, dcgan.FAMILY)}
# The volume families: same contract and trainer, tensors (N, C, D, H, W); no default pipeline runs them.
VOLUME_FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (pix2pix3d.FAMILY,)}
for _names, _families, _what in ((FAMILY_NAMES, FAMILIES, "FAMILY_NAMES"),
                                 (VOLUME_FAMILY_NAMES, VOLUME_FAMILIES, "VOLUME_FAMILY_NAMES")):
    if tuple(_families) != _names:
        raise RuntimeError(
            f"synthmed.generators.names.{_what} is {_names}, the registry has {tuple(_families)}: "
            "list the same families in the same order in both (pipelines build their namespaces from the names)."
        )
if any(spec.spatial_dims != 2 for spec in FAMILIES.values()) or \
        any(spec.spatial_dims != 3 for spec in VOLUME_FAMILIES.values()):
    raise RuntimeError("registry: FAMILIES must hold image families (spatial_dims=2), VOLUME_FAMILIES volume "
                       "families (spatial_dims=3).")
ALL_FAMILIES: dict[str, FamilySpec] = {**FAMILIES, **VOLUME_FAMILIES}
if {name: spec.config_cls for name, spec in ALL_FAMILIES.items()} != FAMILY_CONFIGS:
    raise RuntimeError(
        "synthmed.generators.configs.FAMILY_CONFIGS must map every registered family to its config_cls (the "
        f"parameter check reads it without torch): it has {FAMILY_CONFIGS}, the registry "
        f"{ {name: spec.config_cls for name, spec in ALL_FAMILIES.items()} }."
    )


def get_family(name: str) -> FamilySpec:
    """The family called ``name`` (image or volume); a clear error lists the valid names."""
    if name not in ALL_FAMILIES:
        raise ValueError(f"Unknown generator family {name!r}; expected one of {sorted(ALL_FAMILIES)}.")
    return ALL_FAMILIES[name]


def config_from_params(name: str, params: dict[str, Any]) -> Any:
    """The family's frozen ``Config`` from a ``params:`` mapping (unknown keys rejected)."""
    return from_params(get_family(name).config_cls, params, f"{name}.model")


def load_generator(folder: Path) -> tuple[FamilySpec, Any, nn.ModuleDict]:
    """Load a saved generator after verifying its checksums (``load_trained_generator`` without
    the class names).

    Raises:
        CheckpointError: the folder is missing, incomplete, corrupt or of an unknown family.
    """
    trained = load_trained_generator(folder)
    return get_family(trained.family), trained.config, trained.models


def load_trained_generator(folder: Path) -> TrainedGenerator:
    """A saved generator, its checksums verified, with the class names ``generator.json`` keeps (by
    class id; empty when unconditional) and, in its ``card``, the ``source`` it was trained on
    (where ``generator.json`` names one; folders written before 2026-12-06 do not).

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
    card = {"source": manifest["source"]} if manifest.get("source") else {}
    return TrainedGenerator(spec.name, config, models, tuple(manifest.get("class_names") or ()), card)
