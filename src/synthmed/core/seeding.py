"""Deterministic construction: the global torch RNG seeded inside a block, restored after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from synthmed.core.lazy import lazy_import

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
torch = lazy_import("torch")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global torch RNG seeded with ``seed`` inside the block, restored after.

    Network constructors draw from the global RNG; this keeps ``build(config, seed)``
    deterministic without touching the caller's RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
