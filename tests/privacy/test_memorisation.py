"""Tests for synthmed.privacy.memorisation: nearest-neighbour search, calibration and the gate.

Test images are smooth random fields (Gaussian-filtered white noise) and simple synthetic
"anatomy" (a body ellipse on air with organ ellipses and texture), never white noise: on
white noise any perturbation looks like a copy and any two images look unrelated, so a gate
would pass trivially. All data is generated here from fixed seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from synthmed.core.config import from_params
from synthmed.privacy.memorisation import (
    COLUMNS,
    GateConfig,
    GateReport,
    MemorisationError,
    PlantConfig,
    SearchConfig,
    ZoomView,
    _as_images,
    _check_chunk_size,
    _check_same_geometry,
    _prepare_references,
    calibrate_threshold,
    enforce,
    foreground_fraction,
    nearest_table,
    plant_copies,
    relative_distance,
    run_gate,
    search_transforms,
    shift_image,
    zoom_references,
    zoom_views,
)

NO_SEARCH = SearchConfig(flips=("none",), max_shift_px=0)
SIZE_PX = 32


def nearest_neighbours(queries, references, *, search: SearchConfig, embed=None, chunk_size: int = 256) -> pd.DataFrame:
    """The nearest-neighbour table exactly as `run_gate` scores images: its input checks, its
    reference preparation and `nearest_table`."""
    chunk_size = _check_chunk_size(chunk_size)
    reference_images = _as_images(references, "references")
    query_images = _as_images(queries, "queries", allow_empty=True)
    _check_same_geometry(query_images, "queries", reference_images, "references")
    prepared = _prepare_references(zoom_references(reference_images, search), search, embed, chunk_size)
    return nearest_table(query_images, prepared, search, embed, chunk_size, len(reference_images))


def smooth_fields(count: int, seed: int, *, size: int = SIZE_PX, channels: int = 1,
                  sigma_px: float = 2.0) -> torch.Tensor:
    """``(count, channels, size, size)`` float32 in [-1, 1]: Gaussian-filtered noise, std 0.4."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, channels, size, size))
    fields = ndimage.gaussian_filter(noise, (0, 0, sigma_px, sigma_px))
    fields = fields / fields.std(axis=(1, 2, 3), keepdims=True) * 0.4
    return torch.from_numpy(np.clip(fields, -1.0, 1.0).astype(np.float32))


def _ellipse(yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], axes: tuple[float, float],
             angle: float) -> np.ndarray:
    y, x = yy - centre[0], xx - centre[1]
    u, v = np.cos(angle) * x + np.sin(angle) * y, -np.sin(angle) * x + np.cos(angle) * y
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1.0


def phantoms(count: int, seed: int, *, size: int = SIZE_PX) -> torch.Tensor:
    """``(count, 1, size, size)`` float32 in [-1, 1]: axial-slice-like phantoms.

    Air at -1; a body ellipse (random size, small random offset and tilt) at soft-tissue
    level; 2-5 organ ellipses of random contrast; smooth texture; a slight blur. Every image
    shares the body-on-air layout, like CT slices of different patients.
    """
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    out = np.empty((count, 1, size, size), np.float32)
    for i in range(count):
        image = np.full((size, size), -1.0)
        cy, cx = 0.5 + rng.normal(0.0, 0.03, 2)
        a, b = rng.uniform(0.32, 0.45), rng.uniform(0.25, 0.40)
        body = _ellipse(yy, xx, (cy, cx), (a, b), rng.uniform(-0.3, 0.3))
        image[body] = rng.uniform(-0.1, 0.2)
        for _ in range(rng.integers(2, 6)):
            radius, phi = rng.uniform(0.0, 0.6), rng.uniform(0.0, 2 * np.pi)
            organ = _ellipse(yy, xx, (cy + radius * b * np.sin(phi), cx + radius * a * np.cos(phi)),
                             (rng.uniform(0.04, 0.14), rng.uniform(0.04, 0.14)), rng.uniform(0.0, np.pi))
            image[organ & body] = rng.uniform(-0.6, 0.8)
        texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5)
        image += body * texture / texture.std() * 0.08
        out[i, 0] = np.clip(ndimage.gaussian_filter(image, 0.7), -1.0, 1.0)
    return torch.from_numpy(out)


def pooled_features(images: torch.Tensor) -> torch.Tensor:
    """A tiny stand-in feature network: 4x4 average pooling, flattened."""
    return F.adaptive_avg_pool2d(images, 4).flatten(1)


@pytest.fixture(scope="module")
def fields_gate_data() -> dict[str, torch.Tensor]:
    # Disjoint seeds: train, held-out and unrelated candidates are different "patients".
    return {"train": smooth_fields(300, 1), "held_out": smooth_fields(300, 2), "unrelated": smooth_fields(40, 3)}


@pytest.fixture(scope="module")
def default_fields_report(fields_gate_data: dict[str, torch.Tensor]) -> GateReport:
    data = fields_gate_data
    return run_gate(data["unrelated"], data["train"], data["held_out"], config=GateConfig(use_features=False))


# ------------------------------------------------------------------ similarity invariants


def test_exact_copy_has_distance_zero_and_the_right_neighbour() -> None:
    references = smooth_fields(12, 10, channels=3, size=24)
    table = nearest_neighbours(references[[7, 2]], references, search=SearchConfig())
    assert list(table.columns) == list(COLUMNS)
    np.testing.assert_allclose(table["pixel_distance"], 0.0, atol=1e-5)
    assert table["pixel_neighbour"].tolist() == [7, 2]
    assert table["pixel_transform"].tolist() == ["none dx=0 dy=0"] * 2
    assert table["feature_similarity"].isna().all() and (table["feature_neighbour"] == -1).all()


def test_inverted_image_has_the_maximum_distance_without_search() -> None:
    references = smooth_fields(5, 11)
    table = nearest_neighbours(-references[[3]], references[[3]], search=NO_SEARCH)
    assert table["pixel_distance"].iloc[0] == pytest.approx(2.0, abs=1e-5)
    assert table["pixel_similarity"].iloc[0] == pytest.approx(-1.0, abs=1e-5)


def test_flipped_and_shifted_copies_are_found_only_with_search() -> None:
    references = smooth_fields(20, 12)
    flipped = references[4].flip(-1)
    # A 2-px shift whose new strip holds unrelated content: only the overlap can match.
    shifted = references[9].roll(2, dims=-1).clone()
    shifted[..., :2] = smooth_fields(1, 13)[0, ..., :2]
    queries = torch.stack([flipped, shifted])

    found = nearest_neighbours(queries, references, search=SearchConfig())
    assert (found["pixel_similarity"] > 0.99).all()
    assert found["pixel_neighbour"].tolist() == [4, 9]
    assert found["pixel_transform"].tolist() == ["hflip dx=0 dy=0", "none dx=-2 dy=0"]
    # Border rule: on the overlap, an exact shifted copy is an exact copy.
    assert found["pixel_similarity"].iloc[1] == pytest.approx(1.0, abs=1e-5)

    blind = nearest_neighbours(queries, references, search=NO_SEARCH)
    assert (blind["pixel_distance"] > 0.2).all(), blind


def test_search_transforms_cover_every_flip_and_shift_with_readable_names() -> None:
    images = smooth_fields(2, 14, size=16)
    transforms = list(search_transforms(images, SearchConfig()))
    assert len(transforms) == 3 * 5 * 5
    names = [t.name for t in transforms]
    assert names == list(SearchConfig().transform_names()) and len(set(names)) == len(names)
    assert names[0] == "none dx=0 dy=0" and "hflip dx=+1 dy=0" in names and "vflip dx=-2 dy=+2" in names
    moved = next(t for t in transforms if t.name == "hflip dx=+1 dy=0")
    assert moved.overlap == (0, 16, 1, 16)
    torch.testing.assert_close(moved.images[..., 1:], images.flip(-1)[..., :-1])
    torch.testing.assert_close(moved.images[..., 0], images.flip(-1)[..., 0])  # edge replicated
    torch.testing.assert_close(shift_image(images, 0, 0), images)


def test_constant_images_have_similarity_zero() -> None:
    references = smooth_fields(4, 15)
    constant = torch.full((1, 1, SIZE_PX, SIZE_PX), 0.3)
    table = nearest_neighbours(constant, references, search=SearchConfig())
    assert table["pixel_similarity"].iloc[0] == 0.0
    table = nearest_neighbours(references[:2], torch.cat([constant, references]), search=NO_SEARCH)
    assert table["pixel_neighbour"].tolist() == [1, 2]


def test_chunked_results_equal_unchunked_results() -> None:
    references, queries = smooth_fields(30, 16), smooth_fields(11, 17)
    whole = nearest_neighbours(queries, references, search=SearchConfig(), embed=pooled_features, chunk_size=256)
    for chunk_size in (1, 4):
        chunked = nearest_neighbours(queries, references, search=SearchConfig(), embed=pooled_features,
                                     chunk_size=chunk_size)
        pd.testing.assert_frame_equal(chunked, whole, check_exact=False, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.uint8, torch.int16])
def test_other_dtypes_give_the_float32_result_on_the_same_values(dtype: torch.dtype) -> None:
    values = ((smooth_fields(10, 20) + 1.0) * 127.5).round()  # integer-valued 0..255
    references, queries = values.to(dtype), values[[1, 6]].to(dtype)
    expected = nearest_neighbours(values[[1, 6]], values, search=SearchConfig())
    pd.testing.assert_frame_equal(nearest_neighbours(queries, references, search=SearchConfig()), expected,
                                  check_exact=False, rtol=1e-6, atol=1e-6)
    assert expected["pixel_distance"].max() < 1e-5


def test_uint8_inversion_does_not_wrap_around() -> None:
    images = ((smooth_fields(3, 21) + 1.0) * 127.5).round().to(torch.uint8)
    inverted = 255 - images  # NCC of x and 255 - x is -1 in real arithmetic
    table = nearest_neighbours(inverted[[0]], images[[0]], search=NO_SEARCH)
    assert table["pixel_distance"].iloc[0] == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        (torch.zeros(4, 32, 32), r"queries with shape \(N, C, H, W\), got \(4, 32, 32\)"),
        (torch.zeros(2, 3, 32, 32),
         r"queries with the \(C, H, W\) of references, \(1, 32, 32\), got shape \(2, 3, 32, 32\)"),
        (torch.full((1, 1, 32, 32), float("nan")), r"queries to contain only finite values, got 1024 NaN"),
    ],
)
def test_bad_queries_are_rejected_with_the_argument_and_value(queries: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nearest_neighbours(queries, smooth_fields(2, 22), search=SearchConfig())


def test_bad_search_and_chunk_arguments_are_rejected() -> None:
    references = smooth_fields(2, 23, size=8)
    with pytest.raises(ValueError, match=r"max_shift_px=4 is too large for 8x8 images: expected at most 3"):
        nearest_neighbours(references, references, search=SearchConfig(max_shift_px=4))
    with pytest.raises(ValueError, match=r"chunk_size to be a positive integer, got 0"):
        nearest_neighbours(references, references, search=SearchConfig(), chunk_size=0)


# ------------------------------------------------------------------ feature space


def test_feature_space_finds_copies() -> None:
    references = smooth_fields(20, 24)
    queries = torch.stack([references[3], references[8].flip(-1), smooth_fields(1, 25)[0]])
    table = nearest_neighbours(queries, references, search=SearchConfig(), embed=pooled_features)
    assert table["feature_neighbour"].tolist()[:2] == [3, 8]
    np.testing.assert_allclose(table["feature_similarity"].iloc[:2], 1.0, atol=1e-5)
    assert table["feature_similarity"].iloc[2] < 0.99
    with pytest.raises(ValueError, match=r"embed\(references\) to return shape \(20, D\), got \(20,\)"):
        nearest_neighbours(queries, references, search=SearchConfig(), embed=lambda x: x.mean((1, 2, 3)))


def test_gate_in_feature_space_calibrates_a_feature_threshold_and_flags_copies(
    fields_gate_data: dict[str, torch.Tensor],
) -> None:
    data = fields_gate_data
    train, held_out = data["train"][:120], data["held_out"][:120]
    # Copies buried in strong pixel noise: pixel correlation falls below its threshold, the
    # pooled features average the noise away and still point at the source.
    noise = 0.8 * torch.randn(2, 1, SIZE_PX, SIZE_PX, generator=torch.Generator().manual_seed(0))
    candidates = torch.cat([data["unrelated"][:10], train[[5, 50]], train[[70]].flip(-1),
                            (train[[5, 50]] + noise).clamp(-1.0, 1.0)])
    config = GateConfig(plant=PlantConfig(count=40))
    report = run_gate(candidates, train, held_out, config=config, embed=pooled_features)
    assert report.feature_threshold is not None
    assert report.feature_threshold == pytest.approx(
        calibrate_threshold(report.held_out["feature_similarity"].to_numpy(), config.percentile))
    table = report.candidates
    assert table["flagged"].tolist()[10:] == [True] * 5
    assert table["feature_neighbour"].tolist()[10:] == [5, 50, 70, 5, 50]
    assert (table["pixel_similarity"].iloc[13:] < report.pixel_threshold).all()  # flagged by features alone
    assert report.self_test_recall >= 0.99
    assert report.planted["feature_similarity"].notna().all()


# ------------------------------------------------------------------ calibration


def test_calibrate_threshold_low_tail_is_the_mirrored_percentile() -> None:
    values = np.random.default_rng(4).random(500)
    assert calibrate_threshold(values, 99.9, tail="low") == pytest.approx(np.percentile(values, 0.1))
    assert calibrate_threshold(values, 99.9, tail="low") == pytest.approx(-calibrate_threshold(-values, 99.9))
    with pytest.raises(ValueError, match="Expected tail 'high' or 'low', got 'left'"):
        calibrate_threshold(values, 99.9, tail="left")


def test_calibrate_threshold_is_numpys_linear_percentile() -> None:
    values = np.arange(1, 101, dtype=np.float64)  # 1..100
    assert calibrate_threshold(values, 50.0) == pytest.approx(50.5)
    assert calibrate_threshold(values, 100.0) == 100.0
    # rank 0.999 * 99 = 98.901: between the two largest values, close to the maximum
    assert calibrate_threshold(values, 99.9) == pytest.approx(99.901)
    # sorted [0.2, 0.5, 0.9], rank 0.999 * 2 = 1.998: 0.5 + 0.998 * (0.9 - 0.5)
    assert calibrate_threshold(np.array([0.2, 0.9, 0.5]), 99.9) == pytest.approx(0.8992)


@pytest.mark.parametrize(
    ("values", "percentile", "message"),
    [
        (np.array([]), 99.9, "at least one similarity, got an empty array"),
        (np.array([0.5]), 0.0, r"percentile in \(0, 100\], got 0.0"),
        (np.array([0.5]), 100.5, r"percentile in \(0, 100\], got 100.5"),
        (np.array([0.5]), float("nan"), r"percentile in \(0, 100\], got nan"),
        (np.array([0.5, np.nan]), 50.0, "only finite values, got 1 NaN"),
    ],
)
def test_calibrate_threshold_rejects_bad_input(values: np.ndarray, percentile: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate_threshold(values, percentile)


# ------------------------------------------------------------------ planting


def test_plant_copies_is_seeded_in_range_and_described() -> None:
    train = smooth_fields(10, 26)
    copies, table = plant_copies(train, PlantConfig(count=6), rng=np.random.default_rng(3))
    again, table_again = plant_copies(train, PlantConfig(count=6), rng=np.random.default_rng(3))
    torch.testing.assert_close(copies, again)
    pd.testing.assert_frame_equal(table, table_again)
    assert copies.shape == (6, 1, SIZE_PX, SIZE_PX) and copies.dtype == torch.float32
    assert copies.min() >= -1.0 and copies.max() <= 1.0
    assert list(table.columns) == ["source_index", "transform"]
    assert table["source_index"].is_unique and table["source_index"].between(0, 9).all()
    assert table["transform"].str.contains(r"crop 29x29 at y=\d x=\d, .*dx=.* dy=.*gain=.*noise_std=0.05").all()
    with pytest.raises(ValueError, match=r"train_images in \[-1, 1\], got values in \[0, 255\]"):
        plant_copies((train + 1) * 127.5, PlantConfig(), rng=np.random.default_rng(0))


# ------------------------------------------------------------------ the gate


def test_gate_defaults_flag_planted_copies_on_smooth_fields(
    default_fields_report: GateReport, fields_gate_data: dict[str, torch.Tensor],
) -> None:
    report = default_fields_report
    # Measured: recall 1.0 (100 of 100); the weakest planted copy scores about 0.03 above
    # the threshold, the crop (10% zoom) being the costliest perturbation.
    assert report.self_test_recall >= 0.99 and report.passed_self_test()
    assert len(report.planted) == 100 and report.planted["flagged"].mean() == report.self_test_recall
    assert report.pixel_threshold == pytest.approx(
        np.percentile(report.held_out["pixel_similarity"], 99.9, method="linear"))
    assert report.held_out_count == 300 and report.feature_threshold is None
    # Unrelated images of other "patients" are (mostly) not flagged.
    assert report.candidates["flagged"].mean() <= 0.05
    assert list(report.candidates.columns) == [*COLUMNS, "flagged"]
    summary = report.summary()
    assert summary["self_test_recall"] == report.self_test_recall and np.isnan(summary["feature_threshold"])
    assert enforce(report, GateConfig()).all()


def test_gate_drop_removes_exactly_the_planted_copies(fields_gate_data: dict[str, torch.Tensor]) -> None:
    data = fields_gate_data
    disguised, _ = plant_copies(data["train"], PlantConfig(count=5), rng=np.random.default_rng(99))
    candidates = torch.cat([data["unrelated"][:20], disguised, data["unrelated"][20:]])
    inserted = np.zeros(len(candidates), bool)
    inserted[20:25] = True
    config = GateConfig(use_features=False, action="drop")
    report = run_gate(candidates, data["train"], data["held_out"], config=config)
    keep = enforce(report, config)
    assert keep.dtype == bool and keep.tolist() == (~inserted).tolist()

    fail = dataclasses.replace(config, action="fail")
    with pytest.raises(MemorisationError, match=r"5 of 45 candidates are flagged.*first 5: #20: pixel similarity"):
        enforce(report, fail)


def test_self_test_failure_blocks_publication_whatever_the_action(fields_gate_data: dict[str, torch.Tensor]) -> None:
    data = fields_gate_data
    config = GateConfig(use_features=False, action="drop", plant=PlantConfig(count=20, noise_std=2.0))
    report = run_gate(data["unrelated"][:5], data["train"][:100], data["held_out"][:100], config=config)
    assert not report.passed_self_test()
    missed = int((~report.planted["flagged"]).sum())
    with pytest.raises(MemorisationError, match=rf"recall 0\.\d+ is below the minimum 0.99; {missed} of 20 planted"):
        enforce(report, config)
    # The message says what the thresholds rest on and how to find out why.
    with pytest.raises(MemorisationError, match=rf"from {report.held_out_count} held-out images.*gate_diagnose.py"):
        enforce(report, config)


def test_crops_defeat_pixel_similarity_on_anatomy_and_the_self_test_says_so() -> None:
    # On body-on-air phantoms, unrelated "patients" correlate at ~0.97-0.99 (the shared
    # layout), while a 10% crop resized back drops a copy's correlation to ~0.85-0.98: the
    # defaults cannot see such copies in pixel space, and the self-test must fail closed.
    train, held_out = phantoms(150, 30), phantoms(150, 31)
    config = GateConfig(use_features=False, plant=PlantConfig(count=50))
    report = run_gate(phantoms(5, 32), train, held_out, config=config)
    assert report.pixel_threshold > 0.97
    assert report.self_test_recall < 0.5
    with pytest.raises(MemorisationError, match="self-test failed"):
        enforce(report, config)
    # Without the crop (noise, flips, shifts, gain and offset only) the same gate sees them.
    uncropped = dataclasses.replace(config, plant=dataclasses.replace(config.plant, crop_fraction=1.0))
    assert run_gate(phantoms(5, 32), train, held_out, config=uncropped).self_test_recall >= 0.99


def test_zoom_views_hold_every_crop_position_up_to_the_configured_count() -> None:
    search = SearchConfig(zooms=(1.0, 0.95, 0.9))
    views = zoom_views(32, 32, search)
    # 32 px: a 30 px crop has 3 x 3 positions, a 29 px crop 4 x 4; the image itself once.
    assert len(views) == 1 + 9 + 16 and views[0] == ZoomView(1.0, 0, 0)
    assert {(v.top, v.left) for v in views if v.zoom == 0.9} == {(y, x) for y in range(4) for x in range(4)}
    # 64 px: a 58 px crop has 7 positions per axis; 4 of them, edge to edge.
    assert sorted({v.top for v in zoom_views(64, 64, search) if v.zoom == 0.9}) == [0, 2, 4, 6]
    # One position: the central crop.
    assert [v for v in zoom_views(32, 32, dataclasses.replace(search, zoom_positions=1)) if v.zoom == 0.9] == [
        ZoomView(0.9, 1, 1)]
    zoomed = zoom_references(phantoms(3, 5), search)
    assert zoomed.shape == (3 * 26, 1, SIZE_PX, SIZE_PX)
    # One view that is a crop is still a crop, and named as one.
    only_crop = SearchConfig(zooms=(0.9,), zoom_positions=1, max_shift_px=0, flips=("none",))
    images = phantoms(3, 5)
    assert not torch.equal(zoom_references(images, only_crop), images)
    found = nearest_neighbours(zoom_references(images, only_crop), images, search=only_crop)
    assert (found["pixel_transform"] == "none dx=0 dy=0 zoom=0.90 at y=1 x=1").all()
    np.testing.assert_allclose(found["pixel_similarity"], 1.0, atol=1e-5)


def test_a_crop_at_the_edge_is_lined_up_only_when_its_position_is_searched() -> None:
    # A 29 px crop at the bottom-left corner, enlarged and moved: the central crop cannot line it up
    # (the edge holds content the central crop lacks, and its offset is 2.2 px after resizing).
    train, held_out = phantoms(150, 30), phantoms(150, 31)
    cropped = F.interpolate(train[[5, 77]][:, :, 3:32, 0:29], size=(SIZE_PX, SIZE_PX), mode="bilinear",
                            align_corners=False)
    copies = shift_image(cropped, 2, -2)
    every = SearchConfig(max_shift_px=3, zooms=(1.0, 0.9))
    central = dataclasses.replace(every, zoom_positions=1)
    found = nearest_neighbours(copies, train, search=every)
    np.testing.assert_allclose(found["pixel_similarity"], 1.0, atol=1e-5)
    assert found["pixel_neighbour"].tolist() == [5, 77]
    assert (found["pixel_transform"] == "none dx=-2 dy=+2 zoom=0.90 at y=3 x=0").all()
    assert (nearest_neighbours(copies, train, search=central)["pixel_similarity"] < 0.97).all()
    # The self-test of the previous test, with the zoom searched: every crop position sees every
    # copy (measured 1.00); the central crop alone 0.84; the threshold is the same.
    config = GateConfig(use_features=False, plant=PlantConfig(count=50), search=every)
    report = run_gate(phantoms(5, 32), train, held_out, config=config)
    assert report.self_test_recall >= 0.99
    report_central = run_gate(phantoms(5, 32), train, held_out, config=dataclasses.replace(config, search=central))
    assert report_central.self_test_recall < 0.9
    assert report.pixel_threshold == pytest.approx(report_central.pixel_threshold, abs=1e-4)


def alike_patients(patients: int, seed: int, *, amplitude: float = 0.15) -> tuple[torch.Tensor, np.ndarray]:
    """A cohort of one template: each patient's 12 images are the template's 12 plus that patient's
    own smooth variation of ``amplitude`` (0.15: other patients' same image correlates at ~0.98)."""
    template = smooth_fields(12, 1000)
    images = [(template + amplitude * smooth_fields(12, seed * 100 + p)).clamp(-1, 1) for p in range(patients)]
    return torch.cat(images), np.repeat([f"patient-{seed}-{p}" for p in range(patients)], 12)


def test_relative_distance_is_near_over_other_and_nan_without_another_patient() -> None:
    similarity = np.array([1.0, 0.99, 0.95, 0.9, 1.0])
    other = np.array([0.98, 0.98, 0.95, -np.inf, 1.0])
    np.testing.assert_allclose(relative_distance(similarity, other), [0.0, 0.5, 1.0, np.nan, 0.0])


def test_patient_keys_let_the_gate_see_copies_that_unseen_patients_match_as_closely() -> None:
    # Unseen patients of one template come as close to some training image as a disguised copy
    # does (absolute recall 0.86 measured), but a copy is far nearer its own patient than the
    # others (relative distance), an unseen patient is not (recall 1.00 measured).
    train, keys = alike_patients(20, 1)
    held_out, _ = alike_patients(10, 2)
    config = GateConfig(use_features=False, search=SearchConfig(max_shift_px=2, zooms=(1.0, 0.9)))
    candidates = torch.cat([held_out[:6], train[[3, 50]]])
    absolute = run_gate(candidates, train, held_out, config=config)
    relative = run_gate(candidates, train, held_out, config=config, train_groups=keys)
    assert absolute.self_test_recall < 0.9 and absolute.relative_threshold is None
    assert absolute.candidates["relative_distance"].isna().all()
    assert relative.self_test_recall >= 0.99 and relative.passed_self_test()
    assert relative.pixel_threshold == absolute.pixel_threshold
    # The threshold is the low tail of the held-out patients' relative distances.
    calibration = relative.held_out["relative_distance"].to_numpy()
    assert relative.relative_threshold == pytest.approx(np.percentile(calibration, 0.1))
    assert relative.summary()["relative_threshold"] == relative.relative_threshold
    # The training images themselves are copies (distance ~0); unseen patients' images are not flagged.
    assert relative.candidates["flagged"].tolist() == [False] * 6 + [True, True]
    assert (relative.candidates["relative_distance"].to_numpy()[-2:] < 1e-3).all()
    # Each image's other-patient neighbour really is another patient's: leaving the nearest patient
    # out can only lower the similarity.
    table = relative.planted
    assert (table["other_similarity"] <= table["pixel_similarity"] + 1e-9).all()
    # One patient: nothing to be nearer to than the others; the absolute gate alone.
    alone = run_gate(candidates, train, held_out, config=config, train_groups=np.full(len(train), "p"))
    assert alone.relative_threshold is None and alone.self_test_recall == absolute.self_test_recall
    off = dataclasses.replace(config, flag_on_relative=False)
    assert run_gate(candidates, train, held_out, config=off, train_groups=keys).relative_threshold is None
    with pytest.raises(ValueError, match=r"one patient key per training image \(240\), got 3"):
        run_gate(candidates, train, held_out, config=config, train_groups=keys[:3])


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SearchConfig(flips=("diagonal",)),
         r"flips must be a non-empty tuple of distinct flips from "
         r"\['none', 'horizontal', 'vertical', 'both'\], got \('diagonal',\)"),
        (lambda: SearchConfig(flips=()), r"got \(\)"),
        (lambda: SearchConfig(max_shift_px=-1), r"max_shift_px must be an integer >= 0, got -1"),
        (lambda: SearchConfig(zoom_positions=0), r"zoom_positions must be an integer >= 1, got 0"),
        (lambda: PlantConfig(count=0), r"count must be an integer >= 1, got 0"),
        (lambda: PlantConfig(crop_fraction=0.0), r"crop_fraction must be in \(0, 1\], got 0.0"),
        (lambda: PlantConfig(intensity_gain=(1.1, 0.9)),
         r"intensity_gain must be two finite numbers .* got \(1.1, 0.9\)"),
        (lambda: PlantConfig(flip_probability=1.5), r"flip_probability must be in \[0, 1\], got 1.5"),
        (lambda: GateConfig(action="warn"), r"action must be one of \['fail', 'drop'\], got 'warn'"),
        (lambda: GateConfig(percentile=0), r"percentile must be a number in \(0, 100\], got 0"),
        (lambda: GateConfig(percentile="99.9"), r"percentile must be a number in \(0, 100\], got '99.9'"),
        (lambda: GateConfig(min_self_test_recall=1.5), r"min_self_test_recall must be a number in \[0, 1\], got 1.5"),
        (lambda: GateConfig(use_features="yes"), r"use_features must be true or false, got 'yes'"),
        (lambda: GateConfig(flag_on_relative=1), r"flag_on_relative must be true or false, got 1"),
        (lambda: GateConfig(seed=-1), r"seed must be an integer >= 0, got -1"),
        (lambda: GateConfig(search={"flip": ["none"]}),
         r"Unknown key\(s\) \['flip'\] in parameters 'memorisation.search'"),
    ],
)
def test_config_errors_name_the_field_the_value_and_the_choices(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_gate_config_builds_nested_blocks_from_parameters() -> None:
    config = from_params(GateConfig, {
        "percentile": 99.0, "action": "drop",
        "search": {"flips": ["none", "both"], "max_shift_px": 1},
        "plant": {"count": 10, "intensity_gain": [0.8, 1.2]},
    }, "memorisation")
    assert config.search == SearchConfig(flips=("none", "both"), max_shift_px=1)
    assert config.plant.intensity_gain == (0.8, 1.2) and config.plant.count == 10


def test_content_free_held_out_images_are_left_out_of_the_threshold(fields_gate_data: dict[str, torch.Tensor]) -> None:
    # Near-empty slices (standard deviation ~0.002, like the ends of a volume): the held-out ones
    # match the training ones at ~0.995 (not duplicates), above every image with content.
    faint = -0.9 + 0.002 * smooth_fields(6, 7)
    generator = torch.Generator().manual_seed(0)
    faint_held_out = faint + 0.1 * faint.std() * torch.randn(faint.shape, generator=generator)
    train = torch.cat([fields_gate_data["train"][:100], faint])
    held_out = torch.cat([fields_gate_data["held_out"][:100], faint_held_out])
    config = GateConfig(use_features=False, action="drop", plant=PlantConfig(count=20))
    report = run_gate(fields_gate_data["unrelated"][:5], train, held_out, config=config)

    table = report.held_out
    assert table["content_free"].tolist() == [False] * 100 + [True] * 6 and not table["duplicate"].any()
    assert table["pixel_similarity"].iloc[100:].min() > 0.99 > table["pixel_similarity"].iloc[:100].max()
    assert report.held_out_count == 100
    assert report.pixel_threshold == pytest.approx(
        np.percentile(table["pixel_similarity"].iloc[:100], config.percentile, method="linear"))
    assert report.summary()["held_out_content_free"] == 6.0
    # Never planted either: every planted copy comes from an image with content.
    assert (report.planted["source_index"] < 100).all()

    with pytest.raises(MemorisationError, match=r"None of the 6 held-out images .* 0 are copies .* 6 have no content"):
        run_gate(fields_gate_data["unrelated"][:5], train, faint_held_out, config=config)


def _small_silhouettes(count: int, seed: int) -> torch.Tensor:
    """``(count, 1, 32, 32)``: air (-1) with one 5 x 5 px textured patch at (4, 4), 2.4% of the frame
    (the tip of an organ at the edge of a volume); the same patch per index whatever the seed, the
    texture's noise (std 0.08) differs."""
    images = torch.full((count, 1, SIZE_PX, SIZE_PX), -1.0)
    generator = torch.Generator().manual_seed(seed)
    patch = 0.2 + 0.4 * smooth_fields(count, 40, size=5) + 0.08 * torch.randn((count, 1, 5, 5), generator=generator)
    images[:, :, 4:9, 4:9] = patch
    return images


def test_foreground_fraction_counts_what_lies_above_the_background() -> None:
    images = torch.full((3, 2, 4, 5), -1.0)
    images[0, :, :2, :] = 0.5         # half of every channel
    images[1] = torch.linspace(0, 1, 40).reshape(2, 4, 5)  # no flat background: all but the minimum
    images[2, 0, 0, 0] = -1.0 + 0.005  # within the tolerance: background
    np.testing.assert_allclose(foreground_fraction(images), [0.5, 39 / 40, 0.0])


def test_held_out_images_with_little_foreground_are_left_out_of_the_thresholds(
    fields_gate_data: dict[str, torch.Tensor],
) -> None:
    # An unseen patient's small silhouette matches a training one at ~0.995 (not a duplicate, not
    # content-free), above every image with anatomy: with min_calibration_foreground it stops
    # setting the threshold; without, it sets it.
    train = torch.cat([fields_gate_data["train"][:100], _small_silhouettes(6, 1)])
    held_out = torch.cat([fields_gate_data["held_out"][:100], _small_silhouettes(6, 2)])
    config = GateConfig(use_features=False, action="drop", plant=PlantConfig(count=20),
                        min_calibration_foreground=0.05)
    keys = np.array([f"patient-{i}" for i in range(len(train))])
    report = run_gate(fields_gate_data["unrelated"][:5], train, held_out, config=config, train_groups=keys)

    table = report.held_out
    np.testing.assert_allclose(table["foreground"].iloc[100:], 25 / SIZE_PX**2)
    assert table["low_foreground"].tolist() == [False] * 100 + [True] * 6
    assert not (table["duplicate"] | table["content_free"]).any()
    assert table["pixel_similarity"].iloc[100:].min() > 0.99 > table["pixel_similarity"].iloc[:100].max()
    assert report.held_out_count == 100 and report.summary()["held_out_low_foreground"] == 6.0
    assert report.pixel_threshold == pytest.approx(
        np.percentile(table["pixel_similarity"].iloc[:100], config.percentile, method="linear"))
    assert report.relative_threshold == pytest.approx(
        np.percentile(table["relative_distance"].iloc[:100], 100 - config.percentile, method="linear"))
    everything = run_gate(fields_gate_data["unrelated"][:5], train, held_out, train_groups=keys,
                          config=dataclasses.replace(config, min_calibration_foreground=0.0))
    assert everything.held_out_count == 106 and everything.pixel_threshold > 0.99
    # The silhouettes are far nearer one training patient than the rest: they would lower the
    # relative threshold (fewer flagged) as well.
    assert everything.relative_threshold < report.relative_threshold
    assert everything.summary()["held_out_low_foreground"] == 0.0

    # The counts are exclusive: a blank slice (foreground 0) is content-free, not also low-foreground.
    blank = torch.full((1, 1, SIZE_PX, SIZE_PX), -1.0)
    with pytest.raises(MemorisationError, match=r"None of the 7 held-out images can calibrate the threshold: "
                                                r"0 are copies .*, 1 have no content .* and 6 too little foreground"):
        run_gate(fields_gate_data["unrelated"][:5], train, torch.cat([held_out[100:], blank]), config=config)
    with pytest.raises(ValueError, match=r"min_calibration_foreground must be a number in \[0, 1\), got 1.0"):
        GateConfig(min_calibration_foreground=1.0)
