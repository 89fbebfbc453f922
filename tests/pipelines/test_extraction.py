"""Extraction: shapes, ranges and labels of slices and patches, and that each comes from its split's region."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthmed.imaging.slicing import PLANES


def test_slices_are_model_ready_and_labelled_by_plane(processed):
    _, catalog = processed
    slices = catalog.load("slices")
    manifest = catalog.load("slice_manifest")
    images, masks, labels = (np.asarray(slices[k]) for k in ("images", "masks", "labels"))
    n = len(manifest)
    assert n > 0
    assert images.shape == (n, 1, 16, 16) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert masks.shape == (n, 1, 16, 16) and masks.dtype == np.uint8
    assert labels.dtype == np.int64 and (labels == manifest["class_id"].to_numpy()).all()
    assert list(manifest["plane"].unique()) and set(manifest["plane"]) <= set(PLANES)
    assert (manifest["foreground_fraction"] >= 0.1).all()


def test_every_slice_lies_inside_its_split_region(processed):
    _, catalog = processed
    manifest = catalog.load("slice_manifest")
    splits = catalog.load("split_table")
    for row in manifest.itertuples():
        own = splits[(splits.item_id == row.item_id) & (splits.axis == PLANES[row.plane]) & (splits.split == row.split)]
        assert len(own) == 1, row
        assert own.start.iloc[0] <= row.slice_index < own.stop.iloc[0]


def test_patches_follow_the_mask_and_stay_in_their_rows(processed):
    _, catalog = processed
    patches = catalog.load("patches")
    manifest = catalog.load("patch_manifest")
    splits = catalog.load("split_table")
    images = np.asarray(patches["images"])
    assert images.shape[1:] == (3, 16, 16) and images.min() >= -1.0 and images.max() <= 1.0
    vessel = manifest[manifest["label"] == "vessel"]
    background = manifest[manifest["label"] == "background"]
    assert len(vessel) and len(background)
    assert (vessel["mask_fraction"] >= 0.08).all() and (background["mask_fraction"] <= 0.02).all()
    for row in manifest.itertuples():
        own = splits[(splits.item_id == row.item_id) & (splits.split == row.split)]
        assert own.start.iloc[0] <= row.row and row.row + 16 <= own.stop.iloc[0]


def test_preview_figures_and_metrics_are_written(processed):
    workdir, _ = processed
    for name in ("slice_preview.png", "patch_preview.png", "lesion_patch_preview.png"):
        assert (workdir / "data/08_reporting/extraction" / name).read_bytes()[:4] == b"\x89PNG"
    metrics = pd.read_json(workdir / "data/08_reporting/extraction_metrics.json", typ="series")
    assert metrics["slices_total"] == len(pd.read_csv(workdir / "data/05_model_input/slices/manifest.csv"))
    assert metrics["lesion_patches_total"] == 0   # the toy folder has no lesion label: switched off


def test_lesion_patches_switched_off_are_written_empty(processed):
    _, catalog = processed
    from synthmed.imaging.lesion_patches import PATCH_COLUMNS

    patches = catalog.load("lesion_patches")
    assert {name: patches[name].shape[0] for name in patches} == {"images": 0, "masks": 0, "brain": 0, "labels": 0}
    assert list(catalog.load("lesion_patch_manifest").columns) == PATCH_COLUMNS


def test_volumes_are_off_by_default_and_written_empty(processed):
    _, catalog = processed
    from synthmed.imaging.volumes import VOLUME_COLUMNS

    volumes = catalog.load("volumes")
    assert {name: volumes[name].shape for name in volumes} == {
        "images": (0, 1, 32, 32, 32), "label_maps": (0, 1, 32, 32, 32), "lesion_masks": (0, 1, 32, 32, 32)}
    assert list(catalog.load("volume_manifest").columns) == VOLUME_COLUMNS


def test_volumes_mode_cuts_sub_volumes_inside_one_axis_slabs(processed):
    """The node with ``enabled: true`` on the tiny folder's head volume (one patient: slabs)."""
    import pytest

    from synthmed.pipelines.extraction.nodes import extract_volumes

    _, catalog = processed
    params = {**catalog.load("params:extraction.volumes"), "enabled": True, "size_vox": [8, 8, 8],
              "spacing_mm": 4.0, "lesion_labels": [2]}
    inputs = [catalog.load(name) for name in ("preprocessed_images", "preprocessed_masks", "preprocessed_manifest")]
    splits = catalog.load("split_table")
    with pytest.raises(ValueError, match="slabs along axes .* need slabs along one axis"):
        extract_volumes(*inputs, splits, params)
    one_axis = splits[(splits.strategy != "slab") | (splits.axis == 0)]
    arrays, manifest = extract_volumes(*inputs, one_axis, params)
    assert len(manifest) > 0 and set(manifest["split"]) <= {"train", "validation", "test"}
    assert arrays["images"].shape == (len(manifest), 1, 8, 8, 8)
    assert np.array_equal(arrays["lesion_masks"], (arrays["label_maps"] == 2).astype(np.uint8))
    assert set(manifest["crop"]) == {"brain", "lesion"}
