"""The report's real-vs-synthetic grid: examples from different patients, lesions ringed, at the samples' size."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import torch

from synthmed.metrics.report_figures import real_vs_synthetic, spread_choice
from synthmed.protocols.evaluation import Split, grid_images


def test_spread_choice_takes_one_image_per_patient_before_a_second():
    pool = np.arange(20)
    groups = np.array(["a"] * 14 + ["b", "b", "c", "c", "d", "e"], dtype=object)
    for seed in range(5):
        chosen = spread_choice(pool, groups, 5, np.random.default_rng(seed))
        assert sorted(groups[chosen]) == ["a", "b", "c", "d", "e"]  # five patients, not five slices of "a"
    chosen = spread_choice(pool, groups, 8, np.random.default_rng(0))
    assert len(set(chosen)) == 8 and set(groups[chosen]) == {"a", "b", "c", "d", "e"}


def test_spread_choice_treats_rows_without_a_patient_as_their_own_group_and_handles_small_pools():
    groups = np.array([None, None, "a", "a"], dtype=object)
    chosen = spread_choice(np.arange(4), groups, 3, np.random.default_rng(1))
    assert sorted(chosen.tolist())[:2] == [0, 1] and len(set(groups[chosen][groups[chosen] != None])) == 1  # noqa: E711
    assert len(spread_choice(np.arange(2), None, 6, np.random.default_rng(0))) == 2
    assert len(spread_choice(np.zeros(0, dtype=np.int64), None, 6, np.random.default_rng(0))) == 0


def _cohort(size: int = 16):
    """A store of 6 slices of 3 patients (label maps with a lesion, label 4, in the lesion rows)."""
    images = np.linspace(-1, 1, 6 * size * size, dtype=np.float32).reshape(6, 1, size, size)
    masks = np.zeros((6, 1, size, size), dtype=np.uint8)
    masks[:, :, 2:14, 2:14] = 2  # tissue
    masks[[1, 3, 5], :, 6:8, 6:8] = 4  # a 2x2 lesion
    manifest = pd.DataFrame({"index": np.arange(6), "split": ["train"] * 4 + ["validation"] * 2,
                             "class_id": [0, 1, 0, 1, 0, 1], "patient_key": ["p1", "p1", "p2", "p2", "p3", "p3"]})
    return {"images": images, "masks": masks, "labels": manifest["class_id"].to_numpy()}, manifest


def _reference(store, manifest) -> Split:
    """The first 4 rows as the reference split, as prepare_evaluation builds it (at the stored size here)."""
    rows = np.arange(4)
    return Split(torch.as_tensor(store["images"][rows]), torch.as_tensor(manifest["class_id"].to_numpy()[rows]), rows,
                 torch.zeros(len(rows), 2), manifest["patient_key"].to_numpy(dtype=object)[rows])


def test_grid_images_are_at_the_samples_size_with_lesion_outlines_from_the_conditioning_label_maps():
    store, manifest = _cohort(16)
    samples = {"images": np.zeros((3, 1, 8, 8), dtype=np.float32)}
    provenance = pd.DataFrame({"index": [0, 1, 2], "condition": ["mask", "mask", "class"],
                               "source_index": [5, 4, -1]})
    grid = grid_images(samples, np.array([1, 0, 1]), provenance, store, manifest, _reference(store, manifest), [4])
    assert grid.real.shape == (4, 1, 8, 8) and grid.synthetic.shape == (3, 1, 8, 8)
    assert grid.real_labels.tolist() == [0, 1, 0, 1]
    # the 2x2 lesion at 16 px is one pixel at 8 px, on the lesion rows only
    assert grid.real_outlines[:, 0].sum(axis=(1, 2)).tolist() == [0, 1, 0, 1]
    assert grid.real_outlines[1, 0, 3, 3]
    # sample 0 was drawn from slice 5's label map (a lesion), sample 1 from slice 4's (none), 2 from a class
    assert grid.synthetic_outlines[:, 0].sum(axis=(1, 2)).tolist() == [1, 0, 0]
    assert grid.real_groups.tolist() == ["p1", "p1", "p2", "p2"]
    assert grid.synthetic_groups.tolist() == ["p3", "p3", None]


def test_grid_images_without_outline_labels_or_conditioning_draw_no_rings():
    store, manifest = _cohort(16)
    samples = {"images": np.zeros((2, 1, 16, 16), dtype=np.float32)}
    provenance = pd.DataFrame({"index": [0, 1], "condition": ["class", "class"], "source_index": [-1, -1]})
    grid = grid_images(samples, np.array([0, 1]), provenance, store, manifest, _reference(store, manifest), ())
    assert grid.real_outlines is None and grid.synthetic_outlines is None and grid.synthetic_groups is None
    np.testing.assert_array_equal(grid.real, store["images"][:4])  # same size: the stored images as they are
    grid = grid_images(samples, np.array([0, 1]), provenance, store, manifest, _reference(store, manifest), [4])
    assert grid.real_outlines is not None and grid.synthetic_outlines is None


def test_the_grid_draws_a_ring_around_each_outlined_region_and_none_elsewhere():
    store, manifest = _cohort(16)
    outlines = store["masks"] == 4
    figure = real_vs_synthetic(store["images"], store["labels"], store["images"], store["labels"], ["normal", "lesion"],
                               per_class=3, rng=np.random.default_rng(0), title="t", real_outlines=outlines,
                               real_groups=manifest["patient_key"].to_numpy(dtype=object))
    rings = {i: np.concatenate([path.vertices for path in axis.collections[0].get_paths()])
             for i, axis in enumerate(figure.axes) if axis.collections}
    # the lesion row's three real images (axes 7-9: 3 real, a gap, 3 synthetic per row) each get a
    # ring; the normal row and the synthetic side none
    assert sorted(rings) == [7, 8, 9]
    for vertices in rings.values():  # the 2x2 lesion covers pixels 6-7: the ring runs 2 px outside it
        assert vertices.min() == 3.5 and vertices.max() == 9.5


def test_the_paired_figure_shows_only_maps_with_an_outlined_region_ringed_on_both_rows():
    from synthmed.metrics.report_figures import paired_outlines

    store, manifest = _cohort(16)
    outlines = store["masks"] == 4  # rows 1, 3, 5 hold the lesion
    figure = paired_outlines(store["images"], -store["images"], outlines, count=6, rng=np.random.default_rng(0),
                             title="t", groups=manifest["patient_key"].to_numpy(dtype=object))
    shown = [axis for axis in figure.axes if axis.images]
    assert len(shown) == 6  # 3 maps x (real, synthetic), not 6 maps
    assert all(axis.collections for axis in shown)  # every panel rings its lesion
    top = {round(float(axis.images[0].get_array().mean()), 4) for axis in figure.axes[:3]}
    expected = {round(float(((store["images"][i, 0] + 1) / 2).mean()), 4) for i in (1, 3, 5)}
    assert top == expected  # the real row holds the lesion rows' real slices
    empty = paired_outlines(store["images"], store["images"], np.zeros_like(outlines), count=6,
                            rng=np.random.default_rng(0), title="t")
    assert not [axis for axis in empty.axes if axis.images] and "no map holds one" in empty._suptitle.get_text()
