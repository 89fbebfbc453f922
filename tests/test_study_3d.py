"""The 3D study (issue 11): its nodes end to end on a tiny cohort of 16^3 volumes, and the volume metrics."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from synthmed.imaging.lesion_placement import LesionPlanRow, place_plan
from synthmed.imaging.volumes import tissue_order
from synthmed.metrics import fidelity
from synthmed.metrics import volumes as vm
from synthmed.pipelines.study_3d import nodes

SIDE = 16
SPACING = 6.0


def _label_map(rng: np.random.Generator, lesion: bool) -> np.ndarray:
    """A ball of brain: CSF at the centre, white matter, a grey-matter shell; a lesion ball if asked."""
    grid = np.stack(np.meshgrid(*[np.arange(SIDE)] * 3, indexing="ij"), axis=-1).astype(float)
    centre = SIDE / 2 - 0.5 + rng.uniform(-0.7, 0.7, 3)
    r = np.sqrt(((grid - centre) ** 2).sum(-1))
    radius = rng.uniform(6.0, 7.2)
    labels = np.zeros((SIDE,) * 3, np.uint8)
    labels[r < radius] = 2
    labels[r < radius - 1.5] = 3
    labels[r < 1.6] = 1
    if lesion:
        spot = centre + np.array([3.0, 0.0, 0.0])
        labels[np.sqrt(((grid - spot) ** 2).sum(-1)) < 1.6] = 4
    return labels


def _image(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = np.array([-1.0, -0.6, 0.3, 0.0, 0.9], np.float32)[labels]
    return np.clip(values + rng.normal(0, 0.05, labels.shape).astype(np.float32), -1, 1)


@pytest.fixture(scope="module")
def cohort():
    """12 sub-volumes of 6 patients: 8 train, 2 validation, 2 test; every other one with a lesion."""
    rng = np.random.default_rng(0)
    maps = np.stack([_label_map(rng, lesion=bool(k % 2))[None] for k in range(12)])
    images = np.stack([_image(m[0], rng)[None] for m in maps])
    splits = ["train"] * 8 + ["validation"] * 2 + ["test"] * 2
    manifest = pd.DataFrame({
        "index": np.arange(12), "item_id": [f"item{k // 2}" for k in range(12)],
        "patient_key": [f"p{k // 2}" for k in range(12)], "split": splits,
        "crop": ["brain", "lesion"] * 6, "lesion_number": [0, 1] * 6,
        "spacing_mm_d": SPACING, "spacing_mm_h": SPACING, "spacing_mm_w": SPACING})
    store = {"images": images, "label_maps": maps, "lesion_masks": (maps == 4).astype(np.uint8)}
    return store, manifest


@pytest.fixture()
def params(tmp_path):
    return {
        "family": "pix2pix3d", "reference_split": "train", "held_out_splits": ["validation", "test"],
        "run": {"split": "train", "checkpoint_root": str(tmp_path / "checkpoints")},
        "model": {"image_size": SIDE, "channels": 1, "num_classes": 0, "label_classes": 5, "base_channels": 4,
                  "depth": 4, "augment": True},
        "training": {"steps": 3, "batch_size": 2, "seed": 0, "checkpoint_every": 0, "log_every": 1,
                     "device": "cpu", "mixed_precision": "no"},
        "seed": 0, "batch_size": 3, "paired": True, "clear_label": 3,
        "plan": [{"count": 2, "radius_mm": 6.0, "location": "random", "within": ["grey_matter", "white_matter"]},
                 {"count": 1, "volume_ml": 1.0, "location": [8, 8, 10],
                  "within": ["csf", "grey_matter", "white_matter"]}],
        "export_dicom": True,
        "evaluation": {"views": 2, "encoder": {"width": 4, "feature_dim": 8, "steps": 3, "batch_size": 8},
                       "segmenter": {"width": 4, "steps": 3, "batch_size": 2},
                       "utility": {"enabled": True, "test_split": "validation", "seeds": [0]},
                       "fid": {"resamples": 5, "level": 0.9, "seed": 0},
                       "memorisation": {"percentile": 99.0, "planted": 3, "noise_std": 0.05}},
    }


def test_study_nodes_end_to_end(cohort, params):
    store, manifest = cohort
    generator, history = nodes.train_volume_generator(store, manifest, params)
    assert len(history) == 3 and np.isfinite(history["loss_d"]).all()
    conditions, plan = nodes.plan_lesion_volumes(store, manifest, params)
    held_out = (manifest["split"] != "train").sum()
    assert list(plan["kind"]) == ["paired"] * held_out + ["lesion"] * 3
    lesion = plan[plan["kind"] == "lesion"]
    # Each lesion row's label map holds exactly the lesion written (the source's own lesion cleared).
    for row in lesion.itertuples():
        assert int((conditions["label_maps"][row.index] == 4).sum()) == row.placed_voxels
        centre = tuple(int(v) for v in (row.placed_centre_d, row.placed_centre_h, row.placed_centre_w))
        assert conditions["label_maps"][row.index][0][centre] == 4
    assert lesion.iloc[2][["placed_centre_d", "placed_centre_h", "placed_centre_w"]].tolist() == [8, 8, 10]
    samples, provenance = nodes.generate_volumes(generator, conditions, plan, params)
    assert samples["images"].shape == (len(plan), 1, SIDE, SIDE, SIDE)
    assert np.abs(samples["images"]).max() <= 1.0
    again, _ = nodes.generate_volumes(generator, conditions, plan, params)
    np.testing.assert_array_equal(again["images"], samples["images"])  # seeded
    files = nodes.export_volumes(samples, provenance, params)
    assert "lesion/lesion_0004_mask.nii.gz" in files and "paired/dicom/paired_0000/IM0016.dcm" in files
    fid = nodes.score_fidelity(store, manifest, samples, provenance, params)
    assert fid["fid_2_5d_n"] == 4 and fid["paired_ssim_n"] == held_out
    # the fixture's 6 patients: the training half's 4 volumes hold 2, the paired volumes' maps 2 (held out)
    assert fid["fid_2_5d_patients"] == 2 and fid["paired_ssim_patients"] == 2
    assert fid["fid_2_5d"] == pytest.approx(np.mean([fid[f"fid_{p}"] for p in vm.PLANES]))
    table, control, segmenter = nodes.score_lesion_control(store, manifest, samples, provenance, params)
    lesion_patients = set(manifest.set_index("index").loc[lesion["source_index"], "patient_key"])
    assert len(table) == 3 and control["control_n"] == 3 and control["control_patients"] == len(lesion_patients)
    assert control["floor_patients"] == 2  # the held-out p4 and p5, one crop each
    # The intensity method's floor: the held-out phantoms' bright lesions are found where they are.
    assert control["floor_dice"] > 0.8 and control["floor_detected"] == 1.0 and control["floor_false_detection"] == 0
    assert {"control_lesion_contrast", "control_false_detection", "control_threshold"} <= set(control)
    assert {"lesion_contrast_sd", "real_contrast_sd"} <= set(table) and "floor_lesion_contrast_sd" in control
    assert {"control_visible", "control_lesion_contrast_sd_row0", "control_visible_row1"} <= set(control)
    gate_table, gate = nodes.run_volume_gate(store, manifest, samples, params)
    assert set(gate_table["kind"]) == {"held_out", "synthetic", "planted"}
    runs, utility = nodes.score_utility(store, manifest, samples, provenance, segmenter, params)
    # Test split validation: only the lesion volume drawn from a test patient's label map is trained on.
    assert runs["train_volumes"].tolist() == [8, 9] and (runs["test_volumes"] == 1).all()
    assert utility["utility_test_patients"] == 1
    assert utility["utility_dice_difference"] == pytest.approx(
        utility["utility_dice_real_synthetic"] - utility["utility_dice_real"])
    metrics, html, views, gate_figure = nodes.write_study_report(store, manifest, samples, provenance, fid, table,
                                                                 control, gate_table, gate, runs, utility, params)
    assert "Lesion control" in html and "2.5D FID" in html and metrics["n_lesion"] == 3
    assert '<a href="reader_kit/sheet.html">' in html and "reader_key/answer_key.csv" in html
    assert "floor: real held-out lesions" in html and "false detections" in html
    assert "utility_dice_real" in metrics and "real_synthetic" in html
    assert "Lesion contrast by size" in html and "radius 6 mm" in html
    assert all(isinstance(v, float) for v in metrics.values())


def test_study_refuses_a_2d_family_and_a_size_mismatch(cohort, params):
    store, manifest = cohort
    wrong = copy.deepcopy(params) | {"family": "pix2pix"}
    with pytest.raises(ValueError, match="not a volume family"):
        nodes.train_volume_generator(store, manifest, wrong)
    wrong = copy.deepcopy(params)
    wrong["model"] |= {"image_size": 32, "depth": 5}
    with pytest.raises(ValueError, match="size_vox"):
        nodes.train_volume_generator(store, manifest, wrong)


# ----------------------------------------------------------------------------- 2.5D FID


def test_plane_slices_cut_each_axis():
    volume = np.zeros((1, 1, 4, 5, 6), np.float32)
    labels = np.ones((1, 1, 4, 5, 6), np.uint8)
    volume[0, 0, 1, 2, 3] = 1.0
    for plane, axis, shape in (("sagittal", 0, (5, 6)), ("coronal", 1, (4, 6)), ("axial", 2, (4, 5))):
        slices, owner = vm.plane_slices(volume, labels, plane, 0.0)
        assert slices.shape == (volume.shape[2 + axis], 1, *shape) and (owner == 0).all()
        # Only the slice through the marked voxel holds it.
        assert [int(s.sum() > 0) for s in slices] == [int(k == (1, 2, 3)[axis]) for k in range(len(slices))]
    labels[0, 0, 0] = 0  # the first sagittal slice holds no brain
    assert len(vm.plane_slices(volume, labels, "sagittal", 0.5)[0]) == 3


def test_fid_2_5d_is_the_mean_of_the_three_planes():
    torch.manual_seed(0)

    def features(n_volumes, shift):
        per = {p: torch.randn(n_volumes * 6, 3, dtype=torch.float64) + shift * (k + 1)
               for k, p in enumerate(vm.PLANES)}
        return vm.PlaneFeatures(per, {p: np.repeat(np.arange(n_volumes), 6) for p in vm.PLANES}, n_volumes)

    real, fake = features(12, 0.0), features(5, 0.5)
    out = vm.fid_2_5d(real, fake, resamples=4, seed=0)
    assert out["fid_2_5d_n"] == 5
    assert out["fid_2_5d"] == pytest.approx(np.mean([out[f"fid_{p}"] for p in vm.PLANES]))
    assert out["fid_2_5d_floor"] == pytest.approx(np.mean([out[f"fid_{p}_floor"] for p in vm.PLANES]))
    # Each plane's value is the plain FID of that plane's slices (volumes chosen as fid_2_5d does).
    half_a, _ = fidelity.real_floor_split(torch.arange(12)[:, None], 5, seed=0)
    pick = np.sort(np.random.default_rng(0).choice(5, size=5, replace=False))
    for plane in vm.PLANES:
        rows_a = np.concatenate([np.flatnonzero(real.volume_of[plane] == v) for v in half_a.flatten().tolist()])
        rows_f = np.concatenate([np.flatnonzero(fake.volume_of[plane] == v) for v in pick])
        expected = fidelity.frechet_distance(real.features[plane][rows_a], fake.features[plane][rows_f])
        assert out[f"fid_{plane}"] == pytest.approx(expected)
    # The shifted set is further than the floor.
    assert out["fid_2_5d"] > out["fid_2_5d_floor"]


def test_paired_volume_metrics():
    rng = np.random.default_rng(1)
    real = np.clip(rng.normal(0, 0.3, (3, 1, 12, 12, 12)), -1, 1).astype(np.float32)
    noisy = np.clip(real + rng.normal(0, 0.1, real.shape), -1, 1).astype(np.float32)
    scores = vm.paired_volume_metrics(noisy, real)
    mse = ((noisy.astype(float) - real) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(scores["psnr"].numpy(), 10 * np.log10(4 / mse), rtol=1e-9)
    assert (scores["ssim"] < 1).all() and (vm.paired_volume_metrics(real, real)["ssim"] > 0.999).all()


# ----------------------------------------------------------------------------- lesion control


def test_lesion_control_errors():
    mask = np.zeros((2, 1, 10, 10, 10), np.uint8)
    mask[0, 0, 4:7, 4:7, 5:8] = 1   # 27 voxels centred at (5, 5, 6): one voxel off the request along w
    mask[0, 0, 0, 0, 0] = 1         # a speck elsewhere: not the lesion asked for
    plan = pd.DataFrame({"placed_centre_d": [5, 5], "placed_centre_h": [5, 5], "placed_centre_w": [5, 5],
                         "placed_volume_ml": [20 * 8 / 1000, 1.0]})
    table = vm.lesion_control_table(plan, mask, (2.0, 2.0, 2.0))
    first, second = table.iloc[0], table.iloc[1]
    assert first["realised_found"] == 1 and first["realised_voxels"] == 27
    assert first["realised_volume_ml"] == pytest.approx(27 * 8 / 1000)
    assert first["volume_error_ml"] == pytest.approx(7 * 8 / 1000)
    assert first["centre_error_mm"] == pytest.approx(2.0)
    assert second["realised_found"] == 0 and np.isnan(second["centre_error_mm"])
    assert second["volume_error_ml"] == pytest.approx(-1.0)
    summary = vm.control_summary(table, resamples=10)
    assert summary["control_detected"] == 0.5 and summary["control_centre_error_mm"] == pytest.approx(2.0)
    # The nearest component is taken when none covers the requested centre.
    shifted = np.zeros((1, 1, 10, 10, 10), np.uint8)
    shifted[0, 0, 7:9, 5, 5] = 1
    shifted[0, 0, 0, 0, 0:3] = 1
    far = vm.lesion_control_table(plan.iloc[:1], shifted, (1.0, 1.0, 1.0)).iloc[0]
    assert far["realised_voxels"] == 2 and far["centre_error_mm"] == pytest.approx(2.5)


def test_tissue_residual_ignores_the_intensity_scale():
    rng = np.random.default_rng(3)
    labels = _label_map(rng, lesion=True)
    image = _image(labels, rng)
    residual = vm.tissue_residual(image, labels)
    np.testing.assert_allclose(vm.tissue_residual(0.4 * image - 0.2, labels), residual, atol=1e-5)
    # (lesion 0.9 - white 0.0) / (white 0.0 - CSF -0.6): 1.5 contrast units, give or take the noise.
    assert np.median(residual[labels == 4]) == pytest.approx(1.5, abs=0.15)
    with pytest.raises(ValueError, match=r"no voxel of label 1 \(csf\)"):
        vm.tissue_residual(image, np.where(labels == 1, 3, labels))


def test_intensity_control_finds_bright_lesions_and_only_them(cohort):
    store, _ = cohort
    spacing = (SPACING,) * 3
    config = vm.IntensityControlConfig()
    train, held = slice(0, 8), slice(8, 12)
    threshold, train_dice = vm.calibrate_intensity_threshold(store["images"][train], store["label_maps"][train],
                                                             store["lesion_masks"][train], spacing, config)
    assert 0.2 < threshold < 1.5 and train_dice > 0.8  # between tissue (0 .. 0.5) and lesion (1.5)
    table, floor = vm.intensity_floor(store["images"][held], store["label_maps"][held], store["lesion_masks"][held],
                                      spacing, threshold, config, resamples=5)
    assert len(table) == 2 and floor["floor_detected"] == 1.0 and floor["floor_centre_error_mm"] < SPACING
    assert floor["floor_lesion_contrast"] == pytest.approx(1.5, abs=0.2)
    # A "generator" that ignores the lesion (white matter drawn where the label map says lesion):
    # nothing is found there, and the contrast inside the lesion is about 0.
    images = store["images"][held].copy()
    masks = store["lesion_masks"][held].astype(bool)
    images[masks] = 0.0
    plan = vm.real_lesions(store["lesion_masks"][held], spacing)
    found = vm.intensity_masks(images, store["label_maps"][held], plan, spacing, threshold, config)
    assert vm.lesion_control_table(plan, found, spacing)["realised_found"].sum() == 0
    residuals = [vm.tissue_residual(i, m) for i, m in zip(images, store["label_maps"][held])]
    assert np.nanmean(vm.lesion_contrast(residuals, store["lesion_masks"][held])) == pytest.approx(0.0, abs=0.1)
    # A fixed threshold is used as it is.
    assert vm.calibrate_intensity_threshold(images, store["label_maps"][held], masks, spacing,
                                            vm.IntensityControlConfig(threshold=0.7)) == (0.7, pytest.approx(np.nan,
                                                                                                        nan_ok=True))


def _block(side: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """White matter (value 0, noise sd 0.1) with a grey-matter slab, a CSF corner and a lesion ball of 1.0."""
    rng = np.random.default_rng(5)
    labels = np.full((side,) * 3, 3, np.uint8)
    labels[:, :, :4] = 2
    labels[:3, :3, :3] = 1
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), axis=-1)
    lesion = np.sqrt(((grid - 10) ** 2).sum(-1)) <= 2.0
    labels[lesion] = 4
    image = np.array([-1.0, -1.0, 0.3, 0.0, 1.0])[labels] + rng.normal(0, 0.1, labels.shape)
    return image, labels, lesion


def test_lesion_contrast_sd_of_a_known_lesion():
    image, labels, lesion = _block()
    residual = vm.tissue_residual(image, labels)
    # Lesion 1.0 above white matter, which varies with sd 0.1 around it: about 10 sd, whatever the scale.
    contrast = vm.lesion_contrast_sd(residual, labels, lesion, (6.0,) * 3, 12.0)
    assert contrast == pytest.approx(10.0, rel=0.15)
    assert vm.lesion_contrast_sd(vm.tissue_residual(3 * image + 1, labels), labels, lesion, (6.0,) * 3,
                                 12.0) == pytest.approx(contrast)
    # Drawn as white matter (the generator ignored it): about 0.
    blank = np.where(lesion, image - 1.0, image)
    assert abs(vm.lesion_contrast_sd(vm.tissue_residual(blank, labels), labels, lesion, (6.0,) * 3, 12.0)) < 0.5
    # Half as bright: half the contrast.
    half = np.where(lesion, image - 0.5, image)
    assert vm.lesion_contrast_sd(vm.tissue_residual(half, labels), labels, lesion, (6.0,) * 3,
                                 12.0) == pytest.approx(contrast / 2, rel=0.15)
    assert np.isnan(vm.lesion_contrast_sd(residual, labels, np.zeros_like(lesion), (6.0,) * 3, 12.0))
    with pytest.raises(ValueError, match="shell_mm must be a number > 0, got 0"):
        vm.lesion_contrast_sd(residual, labels, lesion, (6.0,) * 3, 0)
    # Two lesions, one per component, in `real_lesions` order (scan order: the unlit one at d = 2 first).
    two = lesion.copy()
    two[2:4, 15:17, 15:17] = True
    values = vm.component_contrast_sd(residual, labels, two, (6.0,) * 3, 12.0)
    assert len(values) == 2 and values[1] == pytest.approx(contrast) and abs(values[0]) < 2.0


def test_visibility_by_size_and_the_warnings(caplog):
    table = pd.DataFrame({"plan_row": [0, 0, 1, 1], "requested_volume_ml": [4.0, 4.0, np.nan, np.nan],
                          "requested_radius_mm": [np.nan, np.nan, 12.0, 12.0],
                          "placed_volume_ml": [4.1, 3.9, 7.2, 7.2], "lesion_contrast_sd": [0.5, np.nan, 2.0, 3.0],
                          "real_contrast_sd": 2.5})
    by_size = vm.visibility_by_size(table, 1.0)
    assert by_size["requested"].tolist() == ["4 mL", "radius 12 mm"]
    assert by_size["visible"].tolist() == [0.0, 1.0] and by_size["contrast_sd"].tolist() == [0.5, 2.5]
    assert by_size["placed_volume_ml"].tolist() == pytest.approx([4.0, 7.2])
    assert (by_size["real_contrast_sd"] == 2.5).all()
    with pytest.raises(ValueError, match=r"lacks columns \['lesion_contrast_sd'\]"):
        vm.visibility_by_size(table.drop(columns="lesion_contrast_sd"), 1.0)
    floor = pd.DataFrame({"lesion_contrast_sd": [2.0, 3.0]})
    with caplog.at_level("WARNING", logger=nodes.logger.name):
        out = nodes._visibility(table, floor, 1.0)
    assert out["control_visible"] == 0.5 and out["control_min_visible_volume_ml"] == pytest.approx(7.2)
    assert out["control_lesion_contrast_sd_row0"] == 0.5 and out["floor_lesion_contrast_sd_min"] == 2.0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("study_3d.plan[0] (4 mL): 2 of 2 lesions drawn below")
    # A plan row asking below the profile's smallest visible size is kept, with a warning.
    rows = [LesionPlanRow(count=1, volume_ml=4.0), LesionPlanRow(count=1, radius_mm=12.0)]
    caplog.clear()
    with caplog.at_level("WARNING", logger=nodes.logger.name):
        assert nodes.warn_invisible_rows(rows, 5.0) == [0]
    assert "study_3d.plan[0] asks for 4.00 mL lesions, below 5.00 mL" in caplog.text
    assert nodes.warn_invisible_rows(rows, 0.0) == []


@pytest.mark.parametrize(("key", "value", "message"), [
    ("contrast_shell_mm", 0, r"control.contrast_shell_mm must be a number > 0, got 0"),
    ("visible_contrast_sd", -1, r"control.visible_contrast_sd must be a number >= 0, got -1"),
])
def test_lesion_contrast_parameters_are_checked(key, value, message):
    with pytest.raises(ValueError, match=message):
        vm.IntensityControlConfig(**{key: value})


def test_min_visible_volume_is_checked(params):
    with pytest.raises(ValueError, match=r"study_3d.min_visible_volume_ml must be a number >= 0, got -1.0"):
        nodes._config(params | {"min_visible_volume_ml": -1.0})


def test_place_plan_clears_own_lesions_and_cycles():
    maps = np.full((2, 1, 12, 12, 12), 3, np.uint8)
    maps[0, 0, 1, 1, 1] = 4
    maps[0, 0, 1, 1, 2] = 5  # its edema
    rows = [LesionPlanRow(count=3, radius_mm=2.0, location=[6, 6, 6])]
    placed, table = place_plan(maps, 1.0, rows, seed=0, clear_label=3)
    assert [r["source"] for r in table] == [0, 1, 0]
    assert placed.shape == (3, 1, 12, 12, 12)
    assert all(int((p == 4).sum()) == r["placed_voxels"] == 33 for p, r in zip(placed, table))
    assert placed[0, 0, 1, 1, 1] == placed[0, 0, 1, 1, 2] == 3
    assert not (placed == 5).any()  # the placed lesion has no edema label
    kept, _ = place_plan(maps[:1], 1.0, rows[:1], seed=0, clear_label=3, edema_label=None)
    assert kept[0, 0, 1, 1, 2] == 5
    with pytest.raises(ValueError, match="count"):
        LesionPlanRow(count=0, radius_mm=2.0)
    with pytest.raises(ValueError, match="exactly one of"):
        LesionPlanRow(count=1)


# ----------------------------------------------------------------------------- memorisation


def test_volume_gate_flags_a_planted_copy():
    rng = np.random.default_rng(2)
    smooth = [torch.nn.functional.avg_pool3d(torch.as_tensor(rng.normal(0, 1, (1, 1, 16, 16, 16)),
                                                             dtype=torch.float32), 5, 1, 2) for _ in range(10)]
    volumes = torch.cat(smooth).clamp(-1, 1) * 3
    volumes = volumes.clamp(-1, 1)
    train, held_out = volumes[:7], volumes[7:]
    copies, source = vm.plant_volume_copies(train, 2, noise_std=0.05, seed=0)
    held = vm.volume_nearest(held_out, train)
    threshold = float(np.percentile(held["similarity"], 99))
    found = vm.volume_nearest(copies, train)
    assert (found["similarity"] > threshold).all()
    assert found["neighbour"].tolist() == source.tolist()
    assert found["mirrored"].tolist() == [0, 1]  # the second copy was mirrored, and found mirrored
    exact = vm.volume_nearest(train[3:4], train)
    assert exact["similarity"].iloc[0] == pytest.approx(1.0) and exact["neighbour"].iloc[0] == 3


def test_volume_gate_node_self_test(cohort, params):
    store, manifest = cohort
    samples = {"images": np.asarray(store["images"])[:2].copy()}  # two training volumes passed off as synthetic
    table, gate = nodes.run_volume_gate(store, manifest, samples, params)
    synthetic = table[table["kind"] == "synthetic"]
    assert synthetic["flagged"].all() and gate["gate_fraction_flagged"] == 1.0
    assert gate["gate_self_test_recall"] == 1.0 and gate["gate_blind"] == 0.0


def test_contrast_selection(cohort, params):
    store, manifest = cohort
    images = np.asarray(store["images"]).copy()
    maps = np.asarray(store["label_maps"])
    # Sub-volumes 0-3 become T1w-like: grey matter darker than white matter.
    images[:4][maps[:4] == 2] = -0.2
    assert tissue_order(images, maps, 2, 3).tolist() == [False] * 4 + [True] * 8
    with_contrast = copy.deepcopy(params) | {"contrast": {"brighter": "grey_matter", "darker": "white_matter"}}
    kept = nodes._selected({**store, "images": images}, manifest, nodes._config(with_contrast))
    assert kept["index"].tolist() == list(range(4, 12))
    assert nodes._selected(store, manifest, nodes._config(params)) is manifest  # no contrast: every row
    with pytest.raises(ValueError, match="study_3d.contrast"):
        nodes._config(copy.deepcopy(params) | {"contrast": {"brighter": "bone", "darker": "white_matter"}})


def test_the_2_5d_fid_keeps_patients_out_of_both_halves_and_draws_them_whole():
    torch.manual_seed(0)
    # 16 reference volumes of 4 patients, each patient's volumes near its own centre: 4 crops of one brain
    centres = torch.randn(4, 3, dtype=torch.float64) * 3
    per = {p: centres.repeat_interleave(4 * 6, dim=0) + 0.1 * torch.randn(96, 3, dtype=torch.float64)
           for p in vm.PLANES}
    real = vm.PlaneFeatures(per, {p: np.repeat(np.arange(16), 6) for p in vm.PLANES}, 16)
    fake = vm.PlaneFeatures({p: torch.randn(36, 3, dtype=torch.float64) * 3 for p in vm.PLANES},
                            {p: np.repeat(np.arange(6), 6) for p in vm.PLANES}, 6)
    patients = np.repeat(["a", "b", "c", "d"], 4)
    plain = vm.fid_2_5d(real, fake, resamples=30, seed=0)
    grouped = vm.fid_2_5d(real, fake, resamples=30, seed=0, reference_groups=patients,
                          synthetic_groups=np.repeat(["a", "c", "e"], 2))
    assert "fid_2_5d_patients" not in plain
    # halves of whole patients: 2 in A, 2 in B (the floor compares patients with other patients)
    assert grouped["fid_2_5d_patients"] == 2 and grouped["fid_2_5d_floor_patients"] == 4
    half_a, half_b = fidelity.real_floor_split(torch.arange(16)[:, None], 6, seed=0, groups=patients)
    assert not set(patients[half_a.flatten().numpy()]) & set(patients[half_b.flatten().numpy()])
    # a patient's crops near each other: halves of different patients lie further apart than mixed halves
    assert grouped["fid_2_5d_floor"] > plain["fid_2_5d_floor"]
    # the floor's interval draws A's and B's patients whole: the same halves drawn by volume give another
    by_patient, by_volume = (fidelity.bootstrap_interval(
        vm._volume_statistic(real, real), half_a, half_b, resamples=30, seed=0,
        real_groups=patients[half_a.flatten().numpy()] if grouped_draw else None,
        fake_groups=patients[half_b.flatten().numpy()] if grouped_draw else None) for grouped_draw in (True, False))
    assert (grouped["fid_2_5d_floor_low"], grouped["fid_2_5d_floor_high"]) == pytest.approx(
        (by_patient.low, by_patient.high))
    assert (by_volume.low, by_volume.high) != pytest.approx((by_patient.low, by_patient.high))
    # the synthetic side by the patients whose maps drew them
    pick = torch.as_tensor(np.sort(np.random.default_rng(0).choice(6, size=len(half_a), replace=False)))[:, None]
    synthetic_side = fidelity.bootstrap_interval(
        vm._volume_statistic(real, fake), half_a, pick, resamples=30, seed=0,
        real_groups=patients[half_a.flatten().numpy()], fake_groups=np.repeat(["a", "c", "e"], 2)[pick.flatten()])
    assert (grouped["fid_2_5d_low"], grouped["fid_2_5d_high"]) == pytest.approx(
        (synthetic_side.low, synthetic_side.high))
    assert grouped["fid_2_5d_halves_shared_patients"] == 0


def test_control_intervals_draw_patients():
    table = pd.DataFrame({"realised_found": [1] * 8, "abs_volume_error_ml": [0.1, 0.1, 0.1, 0.1, 2.0, 2.0, 2.0, 2.0],
                          "volume_error_ml": [0.0] * 8, "centre_error_mm": [1.0] * 7 + [np.nan]})
    plain = vm.control_summary(table, resamples=200)
    grouped = vm.control_summary(table, resamples=200, groups=np.repeat(["a", "b"], 4))
    assert grouped["control_abs_volume_error_ml"] == plain["control_abs_volume_error_ml"]
    assert grouped["control_patients"] == 2 and "control_patients" not in plain
    # 2 patients drawn whole: a resample is all a, all b or half each, so the interval spans 0.1 to 2.0
    assert grouped["control_abs_volume_error_ml_low"] == pytest.approx(0.1)
    assert grouped["control_abs_volume_error_ml_high"] == pytest.approx(2.0)
    assert plain["control_abs_volume_error_ml_high"] - plain["control_abs_volume_error_ml_low"] < 1.5


def test_segmentation_utility_difference(monkeypatch):
    """Stub segmenters: the one trained with synthetic volumes finds every lesion, the real-only one none."""
    masks = np.zeros((3, 1, 4, 4, 4), np.uint8)
    masks[:2, 0, 1:3, 1:3, 1:3] = 1  # the third test volume has no lesion: not scored
    monkeypatch.setattr(vm, "fit_segmenter", lambda images, target, config: len(images))
    monkeypatch.setattr(vm, "segment", lambda model, images, threshold: masks[:len(images)] * int(model > 5))
    real = (np.zeros((5, 1, 4, 4, 4), np.float32), np.zeros((5, 1, 4, 4, 4), np.uint8))
    synthetic = (np.zeros((2, 1, 4, 4, 4), np.float32), np.zeros((2, 1, 4, 4, 4), np.uint8))
    runs, summary = vm.segmentation_utility(real, synthetic, (np.zeros((3, 1, 4, 4, 4), np.float32), masks),
                                            vm.SegmenterConfig(), seeds=[0, 1], resamples=10)
    assert runs["mode"].tolist() == ["real", "real", "real_synthetic", "real_synthetic"]
    assert runs["train_volumes"].tolist() == [5, 5, 7, 7] and (runs["test_volumes"] == 2).all()
    assert summary["utility_dice_real"] == 0.0 and summary["utility_dice_real_synthetic"] == 1.0
    assert summary["utility_dice_difference"] == 1.0 and summary["utility_test_volumes"] == 2
    with pytest.raises(ValueError, match="No test volume holds a lesion"):
        vm.segmentation_utility(real, synthetic, (np.zeros((1, 1, 4, 4, 4), np.float32), masks[2:]),
                                vm.SegmenterConfig(), seeds=[0])


# ----------------------------------------------------------------------------- reader kit


def _drawn(store, manifest, params):
    """The plan's volumes without a generator: each drawn from its label map by the cohort's intensity rule."""
    conditions, plan = nodes.plan_lesion_volumes(store, manifest, params)
    rng = np.random.default_rng(5)
    images = np.stack([_image(m[0], rng)[None] for m in conditions["label_maps"]])
    samples = {"images": images, "label_maps": conditions["label_maps"].astype(np.uint8),
               "lesion_masks": conditions["lesion_masks"].astype(np.uint8), "real": conditions["real"]}
    return samples, plan.assign(family="pix2pix3d", checkpoint="test", seed=0)


def test_reader_kit_node_blinds_held_out_lesions_against_placed_ones(cohort, params):
    store, manifest = cohort
    samples, provenance = _drawn(store, manifest, params)
    # The fixture's lesions are in its lesion crops; its brain crops (the plan's sources) have none.
    params["evaluation"]["reader_kit"] = {"real_splits": ["validation"], "real_crop": "", "per_source": 5,
                                          "display_px": 132, "distinct_patients": True}
    kit, key = nodes.build_reader_kit(store, manifest, samples, provenance, params)
    # Real: the validation lesion crop (patient p4); synthetic: only the lesion row drawn from p5's brain crop.
    lesion = provenance[provenance["kind"] == "lesion"]
    assert lesion["source_index"].tolist() == [8, 10, 8]
    assert sorted(key["truth"]) == ["real", "synthetic"] and len([n for n in kit if n.startswith("images/")]) == 2
    real, synthetic = key.set_index("truth").loc["real"], key.set_index("truth").loc["synthetic"]
    assert (real["volume_index"], real["patient_key"], real["split"], real["kind"]) == (9, "p4", "validation", "real")
    placed = lesion[lesion["source_index"] == 10].iloc[0]
    assert (synthetic["volume_index"], synthetic["patient_key"], synthetic["kind"]) == (placed["index"], "p5", "lesion")
    # The views go through the lesion: the real mask's centre, the placed lesion's recorded centre.
    real_mask = store["lesion_masks"][9, 0]
    assert real_mask[real["centre_d"], real["centre_h"], real["centre_w"]] == 1
    assert [synthetic[f"centre_{a}"] for a in "dhw"] == [placed[f"placed_centre_{a}"] for a in "dhw"]
    assert "truth" not in kit["answers_template.csv"].columns

    # Without distinct patients: both held-out lesion crops and the 3 lesion rows, so 2 of each.
    params["evaluation"]["reader_kit"] |= {"distinct_patients": False, "real_splits": ["validation", "test"]}
    _, key = nodes.build_reader_kit(store, manifest, samples, provenance, params)
    assert key["truth"].value_counts().to_dict() == {"real": 2, "synthetic": 2}
    # With them, every synthetic source is a shown patient: the node says what is missing.
    params["evaluation"]["reader_kit"]["distinct_patients"] = True
    with pytest.raises(ValueError, match=r"2 real volume\(s\) with a lesion .* and 0 synthetic volume\(s\) of kinds "
                                         r"\['lesion'\] with a lesion from other patients"):
        nodes.build_reader_kit(store, manifest, samples, provenance, params)
    # The default crop (brain) has no lesion in this fixture.
    params["evaluation"]["reader_kit"] = {"real_crop": "brain"}
    with pytest.raises(ValueError, match=r"0 real volume\(s\) with a lesion in \['validation', 'test'\] "
                                         r"\(crop 'brain'\)"):
        nodes.build_reader_kit(store, manifest, samples, provenance, params)
    params["evaluation"]["reader_kit"] = {"enabled": False}
    kit, key = nodes.build_reader_kit(store, manifest, samples, provenance, params)
    assert kit == {} and key.empty


@pytest.mark.parametrize(("block", "message"), [
    ({"per_source": 0}, r"reader_kit.per_source must be an integer >= 1, got 0"),
    ({"synthetic_kinds": ["real"]}, r"reader_kit.synthetic_kinds must be a non-empty list of lesion, paired"),
    ({"real_crop": "skull"}, r"reader_kit.real_crop must be brain, lesion or"),
    ({"real_splits": []}, r"reader_kit.real_splits must be a non-empty list"),
    ({"margin": 1}, r"reader_kit.margin must be an integer >= 2, got 1"),
])
def test_reader_kit_parameters_are_checked(cohort, params, block, message):
    store, manifest = cohort
    params["evaluation"]["reader_kit"] = block
    with pytest.raises(ValueError, match=message):
        nodes.build_reader_kit(store, manifest, {}, pd.DataFrame(), params)
def test_the_segmenter_learns_the_phantom_lesions(cohort):
    # Weighted BCE + Dice over the batch: a lesion in 2 of 3 training volumes, a few voxels each, is
    # learnt in 80 steps (held-out Dice above 0.5).
    store, _ = cohort
    config = vm.SegmenterConfig(width=4, steps=80, batch_size=2, learning_rate=0.003, pos_weight=20.0, device="cpu")
    model = vm.fit_segmenter(store["images"][:8], store["lesion_masks"][:8], config)
    held = slice(8, 12)
    with_lesion = store["lesion_masks"][held].reshape(4, -1).any(1)
    scores = vm.dice(vm.segment(model, store["images"][held], config.threshold), store["lesion_masks"][held])
    assert scores[with_lesion].mean() > 0.5
    with pytest.raises(ValueError, match=r"segmenter.pos_weight must be a number > 0, got 0"):
        vm.SegmenterConfig(pos_weight=0)


def test_the_views_outline_the_lesion_on_real_sections_and_leave_the_synthetic_ones_uncovered() -> None:
    from matplotlib.lines import Line2D

    shape = (12, 12, 12)
    real, synthetic, mask = -np.ones(shape), -np.ones(shape), np.zeros(shape, np.uint8)
    mask[5:8, 6:9, 3:6] = 1
    synthetic[mask > 0] = 1.0  # the lesion the generator drew, where it was asked
    figure = vm.orthogonal_views([("#0", real, synthetic, mask, (6, 7, 4))], title="t")
    axes = figure.axes
    contours = [len(ax.collections) for ax in axes]
    assert contours[:3] == [1, 1, 1] and contours[3:] == [0, 0, 0]  # outlines on the real sections only
    for ax in axes[3:]:
        ticks = [line for line in ax.lines if isinstance(line, Line2D) and line.get_color() == "red"]
        assert len(ticks) == 2  # the centre's row and column, in the margins
        (x0, x1), (y0, y1) = ticks[0].get_xdata(), ticks[1].get_ydata()
        assert max(x0, x1) < -0.5 and max(y0, y1) < -0.5  # outside the image: nothing drawn over it
        assert ax.get_xlim() == (-0.5, 11.5) and ax.get_ylim() == (-0.5, 11.5)


def test_the_views_show_each_plan_row_before_a_second_volume_of_any() -> None:
    provenance = pd.DataFrame({
        "index": range(9),
        "kind": ["paired", "paired", "lesion", "lesion", "lesion", "lesion", "lesion", "lesion", "lesion"],
        "plan_row": [np.nan, np.nan, 0, 0, 0, 1, 1, 2, 3],
    })
    assert nodes.view_rows(provenance, 4)["index"].tolist() == [2, 5, 7, 8]
    assert nodes.view_rows(provenance, 6)["index"].tolist() == [2, 5, 7, 8, 3, 6]
    assert nodes.view_rows(provenance, 20)["index"].tolist() == [2, 5, 7, 8, 3, 6, 4]
    assert "_turn" not in nodes.view_rows(provenance, 2).columns
