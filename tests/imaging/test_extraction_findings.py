"""Slices classed by finding (normal / lesion from the lesion mask) instead of by plane."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthmed.core.config import from_params
from synthmed.core.splits import SPLIT_COLUMNS
from synthmed.imaging.extraction import SliceConfig, extract_slices

SHAPE = (1, 12, 12, 10)  # (C, X, Y, Z)


def _inputs(lesion_slices: dict[int, int], *, with_mask: bool = True) -> tuple[dict, dict, dict, pd.DataFrame,
                                                                               pd.DataFrame]:
    """One volume whose axial slice z holds ``lesion_slices[z]`` lesion voxels (label 2), and tissue (label 1)."""
    volume = np.linspace(-1, 1, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[0, 2:10, 2:10, :] = 1  # tissue label: not a lesion
    for z, n in lesion_slices.items():
        xs, ys = np.unravel_index(np.arange(n), SHAPE[1:3])
        mask[0, xs, ys, z] = 2
    foreground = np.ones(SHAPE, dtype=np.uint8)
    manifest = pd.DataFrame([{"item_id": "a" * 16, "patient_key": "p1", "kind": "volume", "label": "mr",
                              "has_mask": with_mask}])
    splits = pd.DataFrame([("a" * 16, "p1", "train", "group", -1, 0, 0, 0)], columns=SPLIT_COLUMNS)
    return {"a" * 16: volume}, {"a" * 16: mask}, {"a" * 16: foreground}, manifest, splits


def _config(**finding) -> SliceConfig:
    return from_params(SliceConfig, {"planes": ["axial"], "keep_every": {"axial": 1}, "size_px": 8,
                                     "classes": "finding", "finding": {"lesion_labels": [2], **finding}},
                       "extraction.slices")


def test_slices_are_classed_by_their_lesion_pixels() -> None:
    arrays, table = extract_slices(*_inputs({3: 12, 4: 10, 5: 4}), _config(min_lesion_px=10))
    by_slice = dict(zip(table["slice_index"], table["label"]))
    assert by_slice[3] == by_slice[4] == "lesion"  # 12 and 10 lesion voxels: >= 10
    assert 5 not in by_slice                        # a sliver of 4: neither class, left out
    assert {by_slice[z] for z in (0, 1, 2, 6, 7, 8, 9)} == {"normal"}  # tissue label 1 is not a lesion
    assert list(arrays["labels"]) == [{"normal": 0, "lesion": 1}[label] for label in table["label"]]
    assert table["class_id"].tolist() == arrays["labels"].tolist()


def test_finding_class_names_are_configurable_and_order_normal_first() -> None:
    config = _config(class_names={"normal": "healthy", "lesion": "tumour"})
    assert config.class_names() == ["healthy", "tumour"]
    _, table = extract_slices(*_inputs({3: 12}), config)
    assert set(table["label"]) == {"healthy", "tumour"}
    assert table.loc[table["label"] == "tumour", "class_id"].unique().tolist() == [1]


def test_volumes_without_a_mask_are_left_out_not_called_normal() -> None:
    arrays, table = extract_slices(*_inputs({3: 12}, with_mask=False), _config())
    assert len(table) == 0 and arrays["images"].shape == (0, 1, 8, 8)


def test_plane_classes_stay_the_default() -> None:
    config = from_params(SliceConfig, {"planes": ["axial", "coronal"], "keep_every": {"axial": 1, "coronal": 1},
                                       "size_px": 8}, "extraction.slices")
    _, table = extract_slices(*_inputs({3: 12}), config)
    assert set(table["label"]) == {"axial", "coronal"} and (table["label"] == table["plane"]).all()


@pytest.mark.parametrize(("params", "message"), [
    ({"classes": "lesions"}, "extraction.slices.classes must be"),
    ({"classes": "finding", "finding": {"lesion_labels": [0]}}, "lesion_labels must list mask values > 0"),
    ({"classes": "finding", "finding": {"min_lesion_px": 0}}, "min_lesion_px must be at least 1"),
    ({"classes": "finding", "finding": {"class_names": {"lesion": "x"}}}, "needs keys 'normal' and 'lesion'"),
    # An empty list would select no volume and fail later with an empty split; null means all.
    ({"series": []}, r"extraction\.slices\.series must be a non-empty list of names \(e\.g\. \[FLAIR\]\) or null"),
    ({"labels": []}, r"extraction\.slices\.labels must be a non-empty list of names"),
])
def test_bad_finding_settings_are_named(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_params(SliceConfig, {"planes": ["axial"], "keep_every": {"axial": 1}, **params}, "extraction.slices")
