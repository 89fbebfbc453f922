"""The fundus sample: photographs from non-overlapping regions of one photograph, deterministic from a seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data

from synthmed.core.config import from_params
from synthmed.datasets.file_folder import encode
from synthmed.imaging.fundus_sample import (
    FundusAugmentation,
    FundusSampleConfig,
    augment_region,
    inverse_transform,
    source_regions,
)
from synthmed.pipelines.sample_data.nodes import build_fundus_sample

PARAMS = {"sigmas": [1.0, 2.0, 3.0], "quantile": 0.88, "fov_threshold": 20, "min_size_px": 200, "seed": 7,
          "grid": 2, "min_fov_fraction": 0.5, "per_region": 1, "augmentation": {"degrees": 10.0}}


def _encoded(params):
    files, rows = build_fundus_sample(params)
    return {name: encode(name, obj) for name, obj in files.items()}, rows


@pytest.fixture(scope="module")
def small_retina():
    # The vessel filter on the 1411 px photograph takes seconds; every third pixel keeps the
    # tests fast and changes nothing the tests check (regions, determinism, file list).
    small = skimage.data.retina()[::3, ::3].copy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(skimage.data, "retina", lambda: small)
        yield small


@pytest.fixture(scope="module")
def sample(small_retina):
    return _encoded(PARAMS)


def test_same_seed_gives_the_same_bytes_and_another_seed_other_photographs(sample, small_retina):
    files, rows = sample
    again, rows_again = _encoded(PARAMS)
    assert files == again and rows.equals(rows_again)
    other, _ = _encoded({**PARAMS, "seed": 8})
    assert set(other) == set(files)
    photos = [n for n in files if n.endswith(".png") and not n.endswith("_mask.png")]
    assert all(other[n] != files[n] for n in photos)


def test_sample_lists_each_photograph_with_its_region_and_one_patient(sample):
    files, rows = sample
    meta = json.loads(files["fundus/photographs.json"])
    regions = [p["region"] for p in meta["photographs"]]
    assert regions == ["r00", "r01", "r10", "r11"]  # 2x2 grid, every quadrant inside the aperture
    assert list(rows["path"]) == [p["path"] for p in meta["photographs"]]
    assert set(rows["patient"]) == {"retina"} and set(rows["modality"]) == {"OP"}
    for path in rows["path"]:
        assert path in files and path.replace(".png", "_mask.png") in files


def test_regions_do_not_overlap_and_corners_outside_the_aperture_are_dropped():
    config = from_params(FundusSampleConfig, {**PARAMS, "grid": 4}, "sample_data.fundus")
    regions = source_regions(skimage.data.retina(), config)
    assert len(regions) == 12 and not {"r00", "r03", "r30", "r33"} & {r.name for r in regions}
    covered = np.zeros((1411, 1411), dtype=int)
    for region in regions:
        covered[slice(*region.rows), slice(*region.cols)] += 1
    assert covered.max() == 1


def test_an_augmented_region_samples_only_its_own_pixels():
    # Every output pixel, corners included, must map inside the region: a sample outside it
    # would be a neighbouring region's vessel (shared across splits).
    side = 120
    aug = FundusAugmentation(degrees=30.0, zoom=0.0, hflip=True, log_gamma=0.0, brightness=0.0, noise_std=0.0)
    corners = np.array([[0, 0], [0, side - 1], [side - 1, 0], [side - 1, side - 1]], dtype=float)
    for seed in range(20):
        region = np.zeros((side, side, 3), np.uint8)
        _, _, draws = augment_region(region, np.zeros((side, side), np.uint8), np.random.default_rng(seed), aug)
        mapped = inverse_transform(side, draws["angle_deg"], draws["zoom"], draws["flipped"])(corners)
        assert mapped.min() >= -1e-6 and mapped.max() <= side - 1 + 1e-6, draws


def test_the_mask_moves_with_the_image():
    rng = np.random.default_rng(0)
    side = 96
    mask = np.zeros((side, side), np.uint8)
    mask[30:36, :] = 1
    mask[:, 60:64] = 1
    rgb = np.where(mask[..., None] > 0, 40, 200).astype(np.uint8).repeat(3, axis=2)
    aug = FundusAugmentation(degrees=20.0, noise_std=0.0, log_gamma=0.0, brightness=0.0)
    image, moved, _ = augment_region(rgb, mask, rng, aug)
    dark = image[..., 0] < 120
    assert (dark & (moved > 0)).sum() / ((dark | (moved > 0)).sum()) > 0.85
