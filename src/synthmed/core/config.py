"""Frozen configuration dataclasses built at the node boundary from ``params:`` mappings."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def from_params(cls: type[T], params: Mapping[str, Any] | None, where: str) -> T:
    """Build the frozen dataclass ``cls`` from ``params``, rejecting unknown and missing keys.

    Lists become tuples (dataclasses are frozen and hashable). ``where`` names the
    parameters block in error messages, e.g. ``"ingestion"``.

    Raises:
        ValueError: naming the unknown or missing keys and listing the valid ones.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValueError(f"Parameters '{where}' must be a mapping, got {type(params).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"Unknown key(s) {unknown} in parameters '{where}'; valid keys: {sorted(fields)}."
        )
    missing = sorted(
        name
        for name, f in fields.items()
        if name not in params
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"Missing key(s) {missing} in parameters '{where}'.")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in params.items():
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(value, Mapping) and "Mapping" in str(hints.get(name, "")):
            value = dict(value)
        values[name] = value
    return cls(**values)
