"""Replacing a catalog entry on purpose logs no "Replacing dataset" warning; any other replacement still does."""

from __future__ import annotations

import logging

from kedro.io import DataCatalog, MemoryDataset

from synthmed.core.catalog import CATALOG_LOGGER, replace_dataset


def test_a_deliberate_replacement_is_quiet_and_others_still_warn(caplog):
    catalog = DataCatalog({"a": MemoryDataset(1), "b": MemoryDataset(2)})
    with caplog.at_level(logging.WARNING, logger=CATALOG_LOGGER):
        replace_dataset(catalog, "a", MemoryDataset(10))
        assert catalog.load("a") == 10
        assert not [r for r in caplog.records if "Replacing dataset" in r.getMessage()]
        catalog["b"] = MemoryDataset(20)  # not through replace_dataset: Kedro's warning stays
    assert [r.getMessage() for r in caplog.records] == ["Replacing dataset 'b'"]
    assert not logging.getLogger(CATALOG_LOGGER).filters  # the filter is removed again


def test_a_new_name_is_added(caplog):
    catalog = DataCatalog()
    replace_dataset(catalog, "new", MemoryDataset(3))
    assert catalog.load("new") == 3
