"""Tests for the group split stratified by finding (synthmed.core.splits, ``stratify: finding``)
and its preprocessing wiring (the finding read from each item's preprocessed mask)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from synthmed.core.splits import (
    SPLITS,
    SplitConfig,
    assign_splits,
    check_no_leakage,
    item_has_finding,
    patient_strata,
)
from synthmed.pipelines.preprocessing.nodes import assign_item_splits


def _cohort(n_patients: int, lesion_patients: set[int], items_per_patient: int = 2,
            unmasked: set[int] = frozenset()) -> tuple[pd.DataFrame, dict[str, bool | None]]:
    """A manifest of ``n_patients`` and each item's finding: a lesion patient has a lesion in
    its first item only (its other items are normal), an unmasked patient has no masks."""
    rows, findings = [], {}
    for p in range(n_patients):
        for i in range(items_per_patient):
            item = f"p{p:02d}-i{i}"
            rows.append({"item_id": item, "patient_key": f"p{p:02d}", "kind": "volume", "shape": "1x8x8x8",
                         "has_mask": p not in unmasked})
            findings[item] = None if p in unmasked else (p in lesion_patients and i == 0)
    return pd.DataFrame(rows), findings


def _params(**overrides: Any) -> dict[str, Any]:
    return {"strategy": "group", "stratify": "finding", "lesion_labels": [4], "seed": 0, **overrides}


def _patients_per_split(table: pd.DataFrame, patients: set[str]) -> dict[str, int]:
    chosen = table[table["patient_key"].isin(patients)].drop_duplicates("patient_key")
    return {split: int((chosen["split"] == split).sum()) for split in SPLITS}


def test_lesion_patients_spread_in_proportion() -> None:
    # 20 patients, 6 with a lesion: 6 x (0.7, 0.15, 0.15) -> 4/1/1; the 14 others -> 10/2/2.
    manifest, findings = _cohort(20, lesion_patients={0, 3, 5, 11, 12, 19})
    table = assign_splits(manifest, _params(), findings)
    lesion = {f"p{p:02d}" for p in (0, 3, 5, 11, 12, 19)}
    assert _patients_per_split(table, lesion) == {"train": 4, "validation": 1, "test": 1}
    assert _patients_per_split(table, set(manifest["patient_key"]) - lesion) == {
        "train": 10, "validation": 2, "test": 2}


def test_every_split_gets_a_lesion_patient_when_there_are_enough() -> None:
    # 3 lesion patients: largest remainder alone gives (2, 1, 0); each split gets one instead.
    manifest, findings = _cohort(20, lesion_patients={1, 2, 7})
    for seed in range(5):
        table = assign_splits(manifest, _params(seed=seed), findings)
        assert _patients_per_split(table, {"p01", "p02", "p07"}) == {"train": 1, "validation": 1, "test": 1}


def test_too_few_lesion_patients_still_split_whole() -> None:
    manifest, findings = _cohort(10, lesion_patients={4, 8})
    table = assign_splits(manifest, _params(), findings)
    assert sum(_patients_per_split(table, {"p04", "p08"}).values()) == 2
    assert table.groupby("patient_key")["split"].nunique().max() == 1


def test_stratified_split_is_deterministic_and_seeded() -> None:
    manifest, findings = _cohort(30, lesion_patients=set(range(0, 30, 3)))
    first = assign_splits(manifest, _params(seed=7), findings)
    again = assign_splits(manifest, _params(seed=7), findings)
    other = assign_splits(manifest, _params(seed=8), findings)
    pd.testing.assert_frame_equal(first, again)
    assert not first["split"].equals(other["split"])


def test_no_patient_shared_and_a_patient_is_never_split() -> None:
    # Every lesion patient has one lesion item and one normal item: they must stay together.
    manifest, findings = _cohort(20, lesion_patients={0, 1, 2, 3, 4, 5}, items_per_patient=3)
    table = assign_splits(manifest, _params(), findings)
    check_no_leakage(table)
    assert len(table) == 60
    assert table.groupby("patient_key")["split"].nunique().max() == 1
    assert set(table["strategy"]) == {"group"}


def test_patient_strata_from_item_findings() -> None:
    manifest, findings = _cohort(4, lesion_patients={0}, unmasked={3})
    assert patient_strata(manifest, findings) == {
        "p00": "finding", "p01": "no finding", "p02": "no finding", "p03": "no mask"}


def test_unmasked_patients_are_spread_too() -> None:
    manifest, findings = _cohort(20, lesion_patients={0, 1, 2}, unmasked={10, 11, 12})
    table = assign_splits(manifest, _params(), findings)
    assert _patients_per_split(table, {"p10", "p11", "p12"}) == {"train": 1, "validation": 1, "test": 1}


def test_stratify_needs_findings_and_a_known_value() -> None:
    manifest, _ = _cohort(10, lesion_patients={0})
    with pytest.raises(ValueError, match="no item findings"):
        assign_splits(manifest, _params())
    with pytest.raises(ValueError, match="split.stratify must be one of"):
        SplitConfig(stratify="lesion")
    with pytest.raises(ValueError, match="lesion_labels must list mask values > 0"):
        SplitConfig(lesion_labels=(0,))


def test_item_has_finding_reads_only_lesion_labels() -> None:
    mask = np.zeros((1, 4, 4, 4), np.uint8)
    mask[0, :2] = 3  # white matter: not a lesion
    assert not item_has_finding(mask, (4,))
    mask[0, 3, 3, 3] = 4
    assert item_has_finding(mask, (4,))


def test_preprocessing_node_reads_findings_from_masks() -> None:
    manifest, _ = _cohort(20, lesion_patients=set())
    masks = {}
    for item in manifest["item_id"]:
        mask = np.ones((1, 8, 8, 8), np.uint8)  # tissue everywhere
        if item in {"p00-i1", "p05-i0", "p09-i1"}:
            mask[0, 2, 2, 2] = 4
        masks[item] = mask
    table = assign_item_splits(manifest, masks, _params())
    assert _patients_per_split(table, {"p00", "p05", "p09"}) == {"train": 1, "validation": 1, "test": 1}
    # Without stratification the masks are not read at all.
    assert len(assign_item_splits(manifest, {}, _params(stratify="none"))) == 40
