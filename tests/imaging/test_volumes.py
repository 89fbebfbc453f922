"""Fixed-size sub-volumes (issue 11 item 1): resampled, centred on the brain or a lesion, padded, with provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from synthmed.core.config import from_params
from synthmed.core.manifest import parse_spacing
from synthmed.core.splits import SPLIT_COLUMNS
from synthmed.datasets.array_store import ArrayStoreDataset
from synthmed.imaging.volumes import VOLUME_COLUMNS, VolumeConfig, crop_at, extract_subvolumes, extract_volumes

SPACING = (2.0, 2.0, 3.0)
SHAPE = (40, 36, 30)
RAMP = (0.01, 0.002, 0.0005)  # image value per mm along each axis: linear, so resampling keeps it


def ramp_value(mm: np.ndarray) -> np.ndarray:
    return -0.5 + sum(RAMP[a] * mm[a] for a in range(3))


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """A linear ramp image and a label map: an ellipsoid brain (labels 1..3), a big and a small lesion (4)."""
    grid = np.indices(SHAPE, dtype=np.float64) * np.array(SPACING)[:, None, None, None]
    image = ramp_value(grid)[None].astype(np.float32)
    centre = np.array([40.0, 36.0, 45.0])
    r = np.sqrt(sum(((grid[a] - centre[a]) / (22, 20, 26)[a]) ** 2 for a in range(3)))
    labels = np.select([r <= 0.5, r <= 0.8, r <= 1.0], [3, 2, 1], 0).astype(np.uint8)
    for centre_mm, radius in (((30.0, 30.0, 45.0), 7.0), ((52.0, 44.0, 48.0), 4.0)):
        labels[np.sqrt(sum((grid[a] - centre_mm[a]) ** 2 for a in range(3))) <= radius] = 4
    return image, labels


def config(**changes) -> VolumeConfig:
    return VolumeConfig(**{"enabled": True, "size_vox": (16, 16, 16), "spacing_mm": 4.0, **changes})


def test_crop_at_pads_where_the_crop_reaches_past_the_volume():
    array = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    inside = crop_at(array, (1, 1, 1), (2, 3, 4), fill=-1.0)
    assert np.array_equal(inside, array[:, 1:3, 1:4, 1:5])
    corner = crop_at(array, (-2, 3, 4), (4, 4, 4), fill=-1.0)
    assert np.array_equal(corner[:, 2:, :2, :2], array[:, :2, 3:, 4:])
    assert (corner[:, :2] == -1).all() and (corner[:, :, 2:] == -1).all() and (corner[:, :, :, 2:] == -1).all()
    assert (crop_at(array, (10, 0, 0), (2, 2, 2), fill=7.0) == 7).all()


def test_subvolumes_are_resampled_and_their_provenance_locates_every_voxel():
    image, labels = phantom()
    arrays, rows = extract_subvolumes(image, labels, SPACING, config())
    assert [(r["crop"], r["lesion_number"]) for r in rows] == [("brain", 0), ("lesion", 1), ("lesion", 2)]
    assert arrays["images"].shape == (3, 1, 16, 16, 16) and arrays["images"].dtype == np.float32
    assert arrays["label_maps"].shape == arrays["lesion_masks"].shape == (3, 1, 16, 16, 16)
    assert arrays["label_maps"].dtype == arrays["lesion_masks"].dtype == np.uint8
    assert np.array_equal(arrays["lesion_masks"], (arrays["label_maps"] == 4).astype(np.uint8))
    for k, row in enumerate(rows):
        spacing = np.array([row[f"spacing_mm_{a}"] for a in "dhw"])
        offset = np.array([row[f"offset_mm_{a}"] for a in "dhw"])
        assert spacing == pytest.approx([4.0, 4.0, 90 / 23])  # 30 x 3 mm in 23 voxels: the achieved spacing
        # Every voxel of the crop at offset + index x spacing mm holds the ramp's value there
        # (inner voxels: the resampled volume's edge voxels and the padding are not on the ramp).
        grid = np.indices((16, 16, 16), dtype=np.float64)
        mm = offset[:, None, None, None] + grid * spacing[:, None, None, None]
        origin = np.array([row[f"origin_{a}"] for a in "dhw"])
        index = origin[:, None, None, None] + grid
        inner = np.all((index >= 2) & (index <= np.array([20, 18, 23])[:, None, None, None] - 3), axis=0)
        assert inner.sum() > 500
        np.testing.assert_allclose(arrays["images"][k, 0][inner], ramp_value(mm)[inner], atol=1e-4)
        assert row["lesion_voxels"] == int(arrays["lesion_masks"][k].sum())
    # The brain crop holds the whole brain, centred; each lesion crop holds its lesion, centred.
    assert rows[0]["brain_fraction"] == 1.0
    brain = np.argwhere(arrays["label_maps"][0, 0] > 0)
    assert np.all(np.abs((brain.min(axis=0) + brain.max(axis=0)) / 2 - 7.5) <= 1.0)
    sizes = []
    for k in (1, 2):  # the crop's centre voxel (8, 8, 8) lies in its lesion, centred on it within half a voxel
        components = ndimage.label(arrays["lesion_masks"][k, 0], structure=np.ones((3, 3, 3)))[0]
        lesion = np.argwhere(components == components[8, 8, 8])
        assert components[8, 8, 8] > 0
        assert np.all(np.abs((lesion.min(axis=0) + lesion.max(axis=0)) / 2 - 8) <= 0.5)
        sizes.append(len(lesion))
    assert sizes[0] > sizes[1]  # the largest lesion first


def test_a_crop_smaller_than_the_brain_reports_the_share_it_holds_and_pads_with_fill():
    image, labels = phantom()
    arrays, rows = extract_subvolumes(image, labels, SPACING, config(size_vox=(8, 8, 8), crops=("brain",)))
    assert len(rows) == 1 and 0 < rows[0]["brain_fraction"] < 0.75
    arrays, rows = extract_subvolumes(image, labels, SPACING, config(size_vox=(32, 32, 32), fill=-0.75,
                                                                     crops=("lesion",), max_lesions_per_item=1))
    assert len(rows) == 1 and min(rows[0][f"origin_{a}"] for a in "dhw") < 0  # starts before the volume
    assert (arrays["images"][0, 0, 0] == -0.75).all() and (arrays["label_maps"][0, 0, 0] == 0).all()


def test_at_the_target_spacing_the_crop_is_the_volume_itself():
    image, labels = phantom()
    arrays, rows = extract_subvolumes(image, labels, (4.0, 4.0, 4.0), config(size_vox=(8, 8, 8)))
    origin = [rows[0][f"origin_{a}"] for a in "dhw"]
    assert np.array_equal(arrays["images"][0], crop_at(image, origin, (8, 8, 8), -1.0))
    assert [rows[0][f"offset_mm_{a}"] for a in "dhw"] == [4.0 * o for o in origin]


def _split_rows(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SPLIT_COLUMNS)


def test_extract_volumes_keeps_splits_apart_and_the_store_holds_five_axes(tmp_path: Path):
    image, labels = phantom()
    manifest = pd.DataFrame([
        {"item_id": "a", "patient_key": "p1", "kind": "volume", "label": "lesion", "has_mask": True,
         "spacing_mm": "2x2x3"},
        {"item_id": "b", "patient_key": "p2", "kind": "volume", "label": "normal", "has_mask": True,
         "spacing_mm": "2x2x3"},
        {"item_id": "c", "patient_key": "p3", "kind": "volume", "label": "normal", "has_mask": False,
         "spacing_mm": "2x2x3"},
    ])
    # Item a: slabs along x (train [0, 18), test [26, 40)); item b: a whole patient in validation.
    split_table = _split_rows([("a", "p1", "train", "slab", 0, 0, 18, 8), ("a", "p1", "test", "slab", 0, 26, 40, 8),
                               ("b", "p2", "validation", "group", 0, 0, 0, 0)])
    healthy = np.where(labels == 4, 3, labels).astype(np.uint8)
    arrays, table = extract_volumes({"a": image, "b": image, "c": image}, {"a": labels[None], "b": healthy[None]},
                                    manifest, split_table, config())
    assert list(table.columns) == VOLUME_COLUMNS and list(table["index"]) == list(range(len(table)))
    assert "c" not in set(table["item_id"])  # no label map: nothing to centre on
    assert set(zip(table["item_id"], table["split"])) == {("a", "train"), ("a", "test"), ("b", "validation")}
    assert table.loc[table.item_id == "b", "crop"].tolist() == ["brain"]
    # Test crops of item a hold only voxels of its test slab: x >= 26 voxels = 52 mm, on the ramp.
    test = table.index[(table.item_id == "a") & (table.split == "test")]
    values = arrays["images"][test][arrays["images"][test] != -1.0]
    assert values.min() >= ramp_value(np.array([52.0, 0.0, 0.0])) - 1e-4
    # The slab's first voxel centre lies 26 x 2 mm from the item's; its resampled voxel i at (i + 1/2) 4 - 1 mm.
    expected = 52 + (table.loc[test, "origin_d"] + 0.5) * 4.0 - 1.0
    assert np.allclose(table.loc[test, "offset_mm_d"], expected)
    store = ArrayStoreDataset(path=str(tmp_path / "volumes"))
    store.save(arrays)
    loaded = store.load()
    assert loaded["images"].shape == (len(table), 1, 16, 16, 16) and loaded.info("label_maps")["dtype"] == "|u1"


def test_slabs_along_two_axes_are_refused_for_volumes():
    image, labels = phantom()
    manifest = pd.DataFrame([{"item_id": "a", "patient_key": "p1", "kind": "volume", "label": "lesion",
                              "has_mask": True, "spacing_mm": "2x2x3"}])
    split_table = _split_rows([("a", "p1", "train", "slab", 0, 0, 18, 8), ("a", "p1", "test", "slab", 1, 26, 36, 8)])
    with pytest.raises(ValueError, match=r"Item a is split into slabs along axes \[0, 1\]"):
        extract_volumes({"a": image}, {"a": labels[None]}, manifest, split_table, config())


@pytest.mark.parametrize(("changes", "message"), [
    ({"size_vox": [2, 16, 16]}, r"size_vox must be 3 sizes of at least 4 voxels, got \[2, 16, 16\]"),
    ({"spacing_mm": 0}, "spacing_mm must be positive, got 0"),
    ({"crops": ["brain", "tumour"]}, r"unknown kind\(s\) \['tumour'\]"),
    ({"lesion_labels": [0]}, r"lesion_labels must list label values > 0, got \[0\]"),
    ({"max_lesions_per_item": 0}, "max_lesions_per_item must be at least 1"),
    ({"series": []}, r"extraction\.volumes\.series must be a non-empty list of names .* or null for all, got \[\]"),
    ({"labels": []}, r"extraction\.volumes\.labels must be a non-empty list of names"),
])
def test_volume_parameters_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        from_params(VolumeConfig, changes, "extraction.volumes")


def test_mismatched_label_map_is_refused():
    image, labels = phantom()
    with pytest.raises(ValueError, match=r"got \(1, 40, 36, 30\) and \(40, 36, 29\)"):
        extract_subvolumes(image, labels[:, :, :-1], SPACING, config())


@pytest.mark.slow
def test_the_sample_cohort_gives_brain_and_lesion_crops_and_a_held_out_map_takes_a_placed_lesion(tmp_path: Path):
    """Cohort -> ingestion -> preprocessing -> extraction with volumes on (about 30 s), then item 3 on its output."""
    from synthmed.imaging.lesion_placement import LesionRequest, place_lesion
    from synthmed.pipelines import extraction, ingestion, preprocessing
    from synthmed.pipelines.sample_cohort.nodes import build_sample_cohort
    from tests.conftest import load_parameters, project_catalog, run
    from tests.test_cohort import tiny_params

    root = tmp_path / "cohort"
    for name, data in build_sample_cohort(tiny_params(n_subjects=4, dicom_fraction=0.25)).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    overrides = {
        "ingestion": {"ignore": [*load_parameters()["ingestion"]["ignore"], "subjects.csv"], "workers": 1},
        "preprocessing": {"split": {"strategy": "group", "fractions": {"train": 0.5, "validation": 0.25,
                                                                         "test": 0.25}}},
        "extraction": {"volumes": {"enabled": True, "size_vox": [16, 16, 16], "spacing_mm": 6.0}},
    }
    catalog = project_catalog(tmp_path / "work", root, overrides=overrides)
    run(ingestion.create_pipeline() + preprocessing.create_pipeline() + extraction.create_pipeline(), catalog)
    table, store = catalog.load("volume_manifest"), catalog.load("volumes")
    items = catalog.load("preprocessed_manifest")
    masked = set(items.loc[items["has_mask"].astype(str) == "True", "item_id"])
    # Every item has its label map: NIfTI subjects their `_mask`, DICOM subjects their SEG.
    assert set(table["item_id"]) == masked == set(items["item_id"])
    assert store["images"].shape == (len(table), 1, 16, 16, 16)
    assert set(np.unique(store["label_maps"])) <= {0, 1, 2, 3, 4, 5}  # background, tissue, lesion, edema
    lesion = table["crop"] == "lesion"
    assert lesion.any() and (table.loc[lesion, "lesion_voxels"] > 0).all()
    splits = catalog.load("split_table").set_index("item_id")["split"]
    assert (table["split"] == table["item_id"].map(splits)).all()
    # A lesion placed into a held-out patient's whole label map, exactly where and as large as asked.
    held_out = next(i for i in sorted(masked) if splits[i] != "train")
    labels = np.asarray(catalog.load("preprocessed_masks")[held_out])[0]
    spacing = parse_spacing(items.set_index("item_id").loc[held_out, "spacing_mm"])
    result, placed = place_lesion(labels, spacing, LesionRequest(radius_mm=6.0, location="white_matter", seed=0))
    assert placed.voxels == int((result == 4).sum() - (labels == 4).sum()) > 0
    assert np.isin(labels[(result == 4) & (labels != 4)], (2, 3)).all()
