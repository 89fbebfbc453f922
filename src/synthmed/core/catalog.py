"""Replacing a Kedro catalog entry on purpose, without Kedro's warning.

``DataCatalog.__setitem__`` logs ``WARNING Replacing dataset '<name>'`` whenever the name is
already in the catalog. synthmed's hooks and runners replace entries by design: the staged copies
of the primary layer and the published ones after the run's checks, the build information, a
node's in-memory results on a Dask worker. Those warnings (about twenty a run) said nothing a user
could act on and hid the ones that do; the staging hook says what it stages in an INFO line. Any
other replacement still warns: the pseudonymisation key and the source alias are set with a plain
assignment, so a catalog entry of the user's own under those names is still reported as replaced.

The filter sits on the shared logger for the one assignment; the local Dask cluster's workers are
single-threaded processes. On a multi-threaded worker a record of another thread could pass
through it unfiltered (a warning more, never one less).
"""

from __future__ import annotations

import logging
from typing import Any

CATALOG_LOGGER = "kedro.io.data_catalog"
REPLACING = "Replacing dataset '%s'"


class _DropReplacing(logging.Filter):
    """Drops Kedro's "Replacing dataset" record for ``name`` only."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == REPLACING and record.args == (self._name,))


def replace_dataset(catalog: Any, name: str, dataset: Any) -> None:
    """``catalog[name] = dataset`` without the warning for replacing ``name``."""
    log = logging.getLogger(CATALOG_LOGGER)
    quiet = _DropReplacing(name)
    log.addFilter(quiet)
    try:
        catalog[name] = dataset
    finally:
        log.removeFilter(quiet)
