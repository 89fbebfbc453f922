"""Tests for synthmed.core.splits: group and slab splits, and the leakage check that guards them."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from synthmed.core.splits import (
    SPLITS,
    SplitConfig,
    SplitLeakageError,
    assign_group_splits,
    assign_slab_splits,
    assign_splits,
    check_no_leakage,
    split_config,
)


def _patients_manifest(n_patients: int, items_per_patient: int = 2) -> pd.DataFrame:
    rows = [
        {"item_id": f"p{p:02d}-i{i}", "patient_key": f"p{p:02d}", "kind": "image2d", "shape": "1x16x16"}
        for p in range(n_patients)
        for i in range(items_per_patient)
    ]
    return pd.DataFrame(rows)


def _volume_manifest(shape: str = "1x32x40x100", bbox: str = "") -> pd.DataFrame:
    return pd.DataFrame([{"item_id": "vol-1", "patient_key": "only-patient", "kind": "volume",
                          "shape": shape, "foreground_bbox": bbox}])


def _params(**overrides: Any) -> dict[str, Any]:
    return {"strategy": "auto", "gap_px": 8, "seed": 0, **overrides}


def _slab_gaps(table: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(split, next split, distance) of consecutive slabs per item and axis."""
    out = []
    for _, slabs in table.groupby(["item_id", "axis"]):
        ordered = slabs.sort_values("start").to_dict("records")
        out += [(a["split"], b["split"], b["start"] - a["stop"]) for a, b in zip(ordered, ordered[1:])]
    return out


# ----------------------------------------------------------------------------- group


def test_group_split_keeps_every_patient_in_one_split() -> None:
    manifest = _patients_manifest(20, items_per_patient=3)
    table = assign_splits(manifest, _params(strategy="group"))
    assert len(table) == 60
    assert set(table["strategy"]) == {"group"}
    assert table.groupby("patient_key")["split"].nunique().max() == 1
    assert set(table["split"]) == set(SPLITS)


def test_group_split_respects_fractions_on_20_patients() -> None:
    table = assign_splits(_patients_manifest(20), _params(strategy="group"))
    per_split = table.drop_duplicates("patient_key")["split"].value_counts().to_dict()
    # 20 x (0.7, 0.15, 0.15) = (14, 3, 3) exactly.
    assert per_split == {"train": 14, "validation": 3, "test": 3}


def test_group_split_is_seeded() -> None:
    manifest = _patients_manifest(20)
    first = assign_splits(manifest, _params(strategy="group", seed=3))
    again = assign_splits(manifest, _params(strategy="group", seed=3))
    other = assign_splits(manifest, _params(strategy="group", seed=4))
    pd.testing.assert_frame_equal(first, again)
    assert first["split"].tolist() != other["split"].tolist()


# ----------------------------------------------------------------------------- slab


def test_slab_split_cuts_each_item_into_gapped_slabs() -> None:
    table = assign_splits(_volume_manifest(), _params(strategy="slab"))
    assert table["split"].tolist() == list(SPLITS)
    assert set(table["axis"]) == {2}  # the default slab_axis for volumes
    assert table["start"].iloc[0] == 0 and table["stop"].iloc[-1] == 100
    assert all(distance >= 8 for a, b, distance in _slab_gaps(table) if a != b)


def test_slab_split_shares_out_the_foreground_extent() -> None:
    # Foreground z = [20, 80): 60 - 2 gaps of 8 = 44 px shared 0.7/0.15/0.15 by largest
    # remainder -> (31, 7, 6); train [0, 20 + 31), validation 8 px later, test 8 px later,
    # stretched to the edge. Without the bbox the 100 px give (59, 13, 12) instead.
    table = assign_splits(_volume_manifest(bbox="0:32,0:40,20:80"), _params(strategy="slab"))
    bounds = [(r.split, r.start, r.stop) for r in table.itertuples()]
    assert bounds == [("train", 0, 51), ("validation", 59, 66), ("test", 74, 100)]
    plain = assign_splits(_volume_manifest(), _params(strategy="slab"))
    assert [(r.start, r.stop) for r in plain.itertuples()] == [(0, 59), (67, 80), (88, 100)]


def test_slab_split_of_a_too_short_item_goes_to_train_whole() -> None:
    table = assign_splits(_volume_manifest(shape="1x32x40x12"), _params(strategy="slab"))
    assert table[["split", "start", "stop"]].values.tolist() == [["train", 0, 12]]


def test_slab_axis_all_gives_slabs_along_every_axis_without_leakage() -> None:
    params = _params(strategy="slab", slab_axis={"volume": "all", "image2d": 0})
    table = assign_splits(_volume_manifest(shape="1x40x48x56"), params)
    assert sorted(set(table["axis"])) == [0, 1, 2]
    for axis, length in zip(range(3), (40, 48, 56)):
        slabs = table[table["axis"] == axis]
        assert slabs["split"].tolist() == list(SPLITS)
        assert slabs["stop"].max() == length
    check_no_leakage(table)
    assert all(distance >= 8 for a, b, distance in _slab_gaps(table) if a != b)


def test_auto_picks_group_with_many_patients_and_slab_with_few() -> None:
    assert set(assign_splits(_patients_manifest(20), _params())["strategy"]) == {"group"}
    assert set(assign_splits(_volume_manifest(), _params())["strategy"]) == {"slab"}
    # 5 patients -> (3, 1, 1) per split: fewer than min_groups_per_split = 2 -> slab.
    assert set(assign_splits(_patients_manifest(5), _params())["strategy"]) == {"slab"}


# ----------------------------------------------------------------------------- planted leaks


def test_planted_patient_leak_is_caught() -> None:
    table = assign_group_splits(_patients_manifest(20), SplitConfig(strategy="group"))
    check_no_leakage(table)
    row = table.index[table["split"] == "test"][0]
    patient = table.loc[row, "patient_key"]
    table.loc[row, "split"] = "train"  # one image of a test patient moved to train
    with pytest.raises(SplitLeakageError, match=rf"patient {patient} is in splits \['test', 'train'\]"):
        check_no_leakage(table)


def _slab_table() -> pd.DataFrame:
    table = assign_slab_splits(_volume_manifest(), SplitConfig(strategy="slab"))
    check_no_leakage(table)
    return table


def test_planted_gap_below_gap_px_is_caught() -> None:
    table = _slab_table()
    val = table.index[table["split"] == "validation"][0]
    train_stop = int(table.loc[table["split"] == "train", "stop"].iloc[0])
    table.loc[val, "start"] = train_stop + 7  # one voxel closer than gap_px = 8
    with pytest.raises(SplitLeakageError,
                       match=r"item vol-1 axis 2: train \[0, 59\) and validation .* are 7 px apart, need 8"):
        check_no_leakage(table)


def test_planted_overlap_is_caught() -> None:
    table = _slab_table()
    test = table.index[table["split"] == "test"][0]
    table.loc[test, "start"] = 70  # validation is [67, 80)
    with pytest.raises(SplitLeakageError,
                       match=r"item vol-1 axis 2: validation \[67, 80\) and test \[70, 100\) are -10 px apart"):
        check_no_leakage(table)


def test_unknown_split_name_and_mixed_strategies_are_caught() -> None:
    table = _slab_table()
    table.loc[0, "split"] = "holdout"
    with pytest.raises(SplitLeakageError, match=r"unknown split name\(s\) \['holdout'\]"):
        check_no_leakage(table)
    mixed = pd.concat([_slab_table(), _slab_table().assign(strategy="group")])
    with pytest.raises(SplitLeakageError, match="split both by group and by slab"):
        check_no_leakage(mixed)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fractions": {"train": 0.7, "validation": 0.2, "test": 0.2}}, "'validation': 0.2"),
        ({"fractions": {"train": 0.0, "validation": 0.5, "test": 0.5}}, "'train': 0.0"),
        ({"fractions": {"train": 0.8, "val": 0.2}}, r"\['train', 'val'\]"),
        ({"strategy": "random"}, "'random'"),
        ({"slab_axis": {"volume": 3}}, "slab_axis.volume=3"),
        ({"slab_axis": {"image2d": 2}}, "slab_axis.image2d=2"),
        ({"slab_axis": {"video": 0}}, "slab_axis.video=0"),
        ({"slab_axis": {"volume": "diagonal"}}, "slab_axis.volume='diagonal'"),
        ({"gap_px": -1}, "gap_px must be >= 0, got -1"),
        ({"gaps_px": 8}, r"Unknown key\(s\) \['gaps_px'\]"),
    ],
)
def test_config_validation_names_the_bad_value(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_config(params)


def test_config_from_params_keeps_defaults_and_copies_mappings() -> None:
    fractions = {"train": 0.6, "validation": 0.2, "test": 0.2}
    config = split_config({"fractions": fractions, "strategy": "group"})
    assert config.fractions == fractions and config.fractions is not fractions
    assert config.gap_px == 8 and config.slab_axis == {"volume": 2, "image2d": 0}
