"""Tests for synthmed.core.config.from_params: frozen configs that name unknown and missing keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from synthmed.core.config import from_params


@dataclasses.dataclass(frozen=True)
class _Config:
    size_px: int
    spacing_mm: tuple[float, ...] = (1.0, 1.0)
    windows: Mapping[str, int] = dataclasses.field(default_factory=dict)
    name: str = "default"


def test_valid_params_build_the_config_with_defaults() -> None:
    config = from_params(_Config, {"size_px": 32}, "block")
    assert config == _Config(size_px=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.size_px = 64  # type: ignore[misc]


def test_unknown_keys_are_named_with_the_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"Unknown key\(s\) \['sise_px', 'zzz'\] in parameters 'ingestion'; "
        r"valid keys: \['name', 'size_px', 'spacing_mm', 'windows'\]",
    ):
        from_params(_Config, {"sise_px": 32, "zzz": 1, "size_px": 32}, "ingestion")


def test_missing_keys_are_named() -> None:
    with pytest.raises(ValueError, match=r"Missing key\(s\) \['size_px'\] in parameters 'extraction'"):
        from_params(_Config, {"name": "x"}, "extraction")
    with pytest.raises(ValueError, match=r"Missing key\(s\) \['size_px'\] in parameters 'extraction'"):
        from_params(_Config, None, "extraction")


def test_lists_become_tuples_and_mappings_are_copied() -> None:
    windows = {"lung": 1500}
    config = from_params(_Config, {"size_px": 8, "spacing_mm": [0.5, 0.7], "windows": windows}, "b")
    assert config.spacing_mm == (0.5, 0.7)
    assert isinstance(config.spacing_mm, tuple)
    assert config.windows == windows and config.windows is not windows


def test_non_mapping_params_are_rejected_naming_the_type() -> None:
    with pytest.raises(ValueError, match="Parameters 'block' must be a mapping, got list"):
        from_params(_Config, [("size_px", 8)], "block")  # type: ignore[arg-type]
