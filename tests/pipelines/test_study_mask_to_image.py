"""The mask-to-image study: split by region, its table beside the published figure, its nodes end to end (tiny)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skimage.data

from synthmed.imaging.fundus_sample import FundusPhoto
from synthmed.pipelines.study_mask_to_image.nodes import build_study_photographs, evaluate_study, train_study_generator
from synthmed.protocols.mask_to_image import MaskToImageEvaluation, region_split, study_rows
from synthmed.protocols.studies import STUDY_COLUMNS
from tests.conftest import load_parameters


def _photo(region: str, k: int) -> FundusPhoto:
    return FundusPhoto(name=f"retina_{region}_a{k}", region=region, index=k, rgb=np.zeros((4, 4, 3), np.uint8),
                       mask=np.zeros((4, 4), np.uint8), angle_deg=0.0, zoom=1.0, flipped=False, gamma=1.0,
                       brightness=1.0)


def test_the_split_keeps_every_photograph_of_a_region_in_one_split():
    photos = [_photo(f"r{i}", k) for i in range(12) for k in range(3)]
    fractions = {"train": 0.67, "validation": 0.0, "test": 0.33}
    table = region_split(photos, {"fractions": fractions, "seed": 3}, 32)
    assert table.groupby("region")["split"].nunique().max() == 1
    per_split = table.groupby("split")["region"].nunique().to_dict()
    assert per_split == {"train": 8, "test": 4}
    assert list(table["name"]) == [p.name for p in photos]
    with pytest.raises(ValueError, match="gave the test split no region"):
        region_split(photos[:3], {"fractions": fractions, "seed": 0}, 32)


def test_floor_and_reference_rows_are_measured_on_the_same_images():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, size=(6, 3, 16, 16)).astype(np.float32)
    close = np.clip(real + rng.normal(0, 0.05, size=real.shape), -1, 1).astype(np.float32)
    train = rng.uniform(-1, 1, size=(10, 3, 16, 16)).astype(np.float32)
    rows = study_rows(close, real, train, MaskToImageEvaluation(resamples=50), model_label="m", model_source="s")
    assert [r.kind for r in rows] == ["ours", "floor", "reference"]
    assert {r.summaries["mse"]["n"] for r in rows} == {6.0}
    ours, floor, _ = rows
    assert ours.summaries["mse"]["mean"] < floor.summaries["mse"]["mean"]
    assert ours.summaries["psnr"]["mean"] > floor.summaries["psnr"]["mean"]
    assert ours.summaries["ssim"]["low"] <= ours.summaries["ssim"]["mean"] <= ours.summaries["ssim"]["high"]


def test_the_intervals_draw_the_held_out_regions_whole():
    # 3 regions of 4 copies each: copies of one region score alike, so drawing them one by one
    # would give an interval far narrower than the spread between regions.
    rng = np.random.default_rng(1)
    real = np.repeat(rng.uniform(-1, 1, size=(3, 3, 16, 16)), 4, axis=0).astype(np.float32)
    noise = np.repeat(rng.normal(0, 1, size=(3, 1, 1, 1)) * 0.2, 4, axis=0) * rng.normal(1, 0.01, real.shape)
    fake = np.clip(real + noise, -1, 1).astype(np.float32)
    train = rng.uniform(-1, 1, size=(5, 3, 16, 16)).astype(np.float32)
    evaluation = MaskToImageEvaluation(resamples=200)
    plain = study_rows(fake, real, train, evaluation, model_label="m", model_source="s")[0].summaries["mse"]
    regions = np.repeat(["r0", "r1", "r2"], 4)
    grouped = study_rows(fake, real, train, evaluation, model_label="m", model_source="s",
                         groups=regions)[0].summaries["mse"]
    assert grouped["mean"] == plain["mean"] and grouped["patients"] == 3 and "patients" not in plain
    assert grouped["high"] - grouped["low"] > 1.5 * (plain["high"] - plain["low"])  # about 2 (sqrt of 12 / 3)


@pytest.fixture
def tiny_params(tmp_path):
    params = load_parameters()
    study = params["study_mask_to_image"]
    study.update(image_size=32, checkpoint_root=str(tmp_path / "checkpoints"), photographs={"grid": 4, "per_region": 1})
    study["model"].update(image_size=32, depth=5, base_channels=8)
    study["training"].update(steps=2, batch_size=2, log_every=1)
    study["evaluation"].update(resamples=20, grid_examples=2)
    return params


def test_the_study_nodes_run_end_to_end_and_give_the_published_table_shape(tiny_params, monkeypatch):
    small = skimage.data.retina()[::3, ::3].copy()  # the vessel filter on 1411 px takes seconds
    monkeypatch.setattr(skimage.data, "retina", lambda: small)
    study = tiny_params["study_mask_to_image"]
    arrays, split = build_study_photographs(tiny_params["sample_data"]["fundus"], study)
    assert arrays["images"].shape == (12, 3, 32, 32) and arrays["masks"].shape == (12, 2, 32, 32)
    assert -1.0 <= arrays["images"].min() and arrays["images"].max() <= 1.0 and arrays["masks"][:, 0].any()
    # Channel 1 is the camera's aperture: black pixels (red channel about -1) lie outside it, and some
    # sub-fields cross its edge.
    aperture, red = arrays["masks"][:, 1].astype(bool), arrays["images"][:, 0]
    assert (~aperture).any() and aperture.mean() > 0.5
    assert red[~aperture].mean() < -0.6 < red[aperture].mean()
    assert split.groupby("region")["split"].nunique().max() == 1
    models, history = train_study_generator(arrays, split, study)
    assert len(history) == 2
    table, page, figure, metrics = evaluate_study(arrays, split, models, study)
    n_test = int((split["split"] == "test").sum())
    assert list(table["kind"]) == ["ours", "floor", "reference", "published"]
    assert list(table.columns[: len(STUDY_COLUMNS)]) == STUDY_COLUMNS
    assert {"mse", "ssim", "psnr", "psnr_low", "psnr_high"} <= set(table.columns)
    assert list(table["n"][:3]) == [n_test] * 3
    published = table.iloc[3]
    assert (published["mse"], published["ssim"], published["psnr"]) == (0.0378, 0.731, 21.18)
    assert "issue 10" in published["source"]
    assert "published" in page and "data:image/png;base64," in page
    assert len(figure.axes) == 2 * 3
    assert metrics["n_test"] == n_test and "floor.ssim.mean" in metrics and "pix2pix.psnr.high" in metrics
    assert metrics["n_test_regions"] == split.loc[split["split"] == "test", "region"].nunique()
    assert "regions whole" in page


def test_the_model_must_take_as_many_mask_channels_as_the_study_gives(tiny_params):
    study = tiny_params["study_mask_to_image"]
    study["model"]["mask_channels"] = 1
    arrays = {"images": np.zeros((2, 3, 32, 32), np.float32), "masks": np.zeros((2, 2, 32, 32), np.uint8),
              "labels": np.zeros(2, np.int64)}
    split = pd.DataFrame({"name": ["a", "b"], "region": ["r0", "r1"], "split": ["train", "test"]})
    with pytest.raises(ValueError, match=r"model\.mask_channels=1, but the study's masks have 2 channel\(s\)"):
        train_study_generator(arrays, split, study)
    study["aperture_channel"] = "yes"
    with pytest.raises(ValueError, match=r"'study_mask_to_image\.aperture_channel' must be true or false, got 'yes'"):
        train_study_generator(arrays, split, study)


def test_the_grid_draws_the_aperture_edge_only_where_the_model_was_given_one():
    from synthmed.protocols.mask_to_image import comparison_grid

    masks = np.zeros((2, 2, 16, 16), np.uint8)
    masks[:, 1, :, :10] = 1  # the aperture: the left 10 columns
    masks[1, 1] = 1  # the second image lies wholly inside: no edge to draw
    images = np.zeros((2, 3, 16, 16), np.float32)
    figure = comparison_grid(masks, images, images, ["a", "b"], 2)
    first, second = figure.axes[0], figure.axes[3]
    assert len(first.collections) == 1 and not second.collections
    assert "aperture" in first.get_title()
    figure = comparison_grid(masks[:, :1], images, images, ["a", "b"], 2)
    assert not figure.axes[0].collections and "aperture" not in figure.axes[0].get_title()
