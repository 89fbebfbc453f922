"""Tests for synthmed.core.config.from_params: frozen configs that name unknown and missing keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import pytest

from synthmed.core.config import ConfigFileError, check_yaml_files, from_params, parse_yaml_file


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
    with pytest.raises(ValueError, match=r"Parameters 'block' must be a mapping of keys to values, got .* \(list\)"):
        from_params(_Config, [("size_px", 8)], "block")  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class _Inner:
    steps: int = 1
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class _Typed:
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    name: str = "x"
    mode: Literal["fast", "slow"] = "fast"
    pair: tuple[float, float] = (0.0, 1.0)
    sizes: tuple[int, ...] = ()
    table: Mapping[str, int] = dataclasses.field(default_factory=dict)
    gamma: float | None = None
    inner: _Inner = dataclasses.field(default_factory=_Inner)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"count": "3"}, r"Parameter 'b\.count' must be an integer, got '3' \(str\)"),
        ({"count": True}, r"Parameter 'b\.count' must be an integer, got True \(bool\)"),
        ({"count": 1.5}, r"'b\.count' must be an integer, got 1\.5 \(float\)"),
        ({"rate": "abc"}, r"Parameter 'b\.rate' must be a number, got 'abc' \(str\)"),
        ({"flag": 1}, r"'b\.flag' must be true or false, got 1 \(int\)"),
        ({"name": 3}, r"'b\.name' must be a string, got 3 \(int\)"),
        ({"mode": "medium"}, r"'b\.mode' must be one of 'fast', 'slow', got 'medium' \(str\)"),
        ({"pair": [1.0]}, r"'b\.pair' must be a list of 2 items \(a number, a number\), got \[1\.0\]"),
        ({"sizes": [1, "two"]}, r"'b\.sizes\[1\]' must be an integer, got 'two' \(str\)"),
        ({"sizes": "12"}, r"'b\.sizes' must be a list of integers, got '12' \(str\)"),
        ({"table": {"a": "x"}}, r"'b\.table\.a' must be an integer, got 'x' \(str\)"),
        ({"table": [1]}, r"'b\.table' must be a mapping of keys to integers"),
        ({"gamma": "none"}, r"'b\.gamma' must be a number or null, got 'none' \(str\)"),
        ({"inner": {"scale": "big"}}, r"'b\.inner\.scale' must be a number, got 'big' \(str\)"),
        ({"inner": {"stpes": 2}}, r"Unknown key\(s\) \['stpes'\] in parameters 'b\.inner'.*did you mean 'steps'"),
    ],
)
def test_wrong_types_name_the_dotted_path_the_value_and_what_was_expected(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        from_params(_Typed, params, "b")


def test_valid_types_are_converted() -> None:
    config = from_params(
        _Typed,
        {"count": 2, "rate": 1, "flag": True, "mode": "slow", "pair": [0, 2], "sizes": [1, 2],
         "table": {"a": 1}, "gamma": 3, "inner": {"steps": 4}},
        "b",
    )
    assert config.rate == 1.0 and isinstance(config.rate, float)  # ints accepted for floats
    assert config.pair == (0.0, 2.0) and config.sizes == (1, 2)
    assert config.gamma == 3.0 and config.inner == _Inner(steps=4)
    assert from_params(_Typed, {"gamma": None}, "b").gamma is None


def test_yaml_errors_name_the_file_and_the_line(tmp_path) -> None:
    (tmp_path / "conf/local").mkdir(parents=True)
    broken = tmp_path / "conf/local/credentials.yml"
    broken.write_text("pseudonymisation:\n  key: abc\n  other: [1, 2\n")
    fine = tmp_path / "conf/local/fine.yml"
    fine.write_text("a: 1\n")
    with pytest.raises(ConfigFileError, match=r"^conf/local/credentials\.yml line 4, column 1: "):
        check_yaml_files([fine, broken], tmp_path)
    with pytest.raises(ConfigFileError, match=r"^conf/local/credentials\.yml line 4"):
        parse_yaml_file(broken, "conf/local/credentials.yml")
    check_yaml_files([fine], tmp_path)
    bad_indent = tmp_path / "conf/local/p.yml"
    bad_indent.write_text("a:\n  b: 1\n c: 2\n")
    with pytest.raises(ConfigFileError, match=r"conf/local/p\.yml line 3, column 2"):
        check_yaml_files([bad_indent], tmp_path)
