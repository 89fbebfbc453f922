"""Small type predicates shared by the configuration checks of every layer."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np


def is_number(value: object) -> bool:
    """A finite real number, numpy scalars included (YAML strings such as "2e-4" and booleans
    are not numbers)."""
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def is_int(value: object) -> bool:
    """An int (Python or numpy) that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
