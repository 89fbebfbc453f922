"""The inpainting study (issue 10): its pieces, and its nodes end to end on a tiny cohort of 32 px slices."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from synthmed.core.config import from_params
from synthmed.generators.base import SamplerSpec
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.sampling import PLAN_COLUMNS, _box_keep, generate_from_plan
from synthmed.parameters import validate_parameters
from synthmed.pipelines.study_inpainting import nodes
from synthmed.protocols import inpainting as ip
from synthmed.protocols.studies import STUDY_COLUMNS
from tests.conftest import load_parameters

STORED, SIZE, SLICES = 32, 16, 10


def _label_map(rng: np.random.Generator, lesion: bool) -> np.ndarray:
    """A disc of brain at STORED px: CSF at the centre, white matter, a grey-matter ring; a lesion blob if asked."""
    yy, xx = np.mgrid[:STORED, :STORED].astype(float)
    centre = STORED / 2 - 0.5 + rng.uniform(-1, 1, 2)
    r = np.hypot(yy - centre[0], xx - centre[1])
    labels = np.zeros((STORED, STORED), np.uint8)
    radius = rng.uniform(12, 14)
    labels[r < radius] = 2
    labels[r < radius - 3] = 3
    labels[r < 3] = 1
    if lesion:
        labels[np.hypot(yy - centre[0] - 6, xx - centre[1]) < 2.6] = 4
    return labels


@pytest.fixture(scope="module")
def cohort():
    """8 patients of SLICES axial slices: 4 train, 2 validation, 2 test; patients 1, 4, 6 carry a lesion in
    their middle slices."""
    rng = np.random.default_rng(0)
    maps, rows = [], []
    splits = ["train", "train", "train", "train", "validation", "validation", "test", "test"]
    for p, split in enumerate(splits):
        for s in range(SLICES):
            lesion = p in (1, 4, 6) and 2 <= s <= 7
            maps.append(_label_map(rng, lesion))
            rows.append({"index": len(rows), "item_id": f"item{p}", "patient_key": f"p{p}", "split": split,
                         "plane": "axial", "slice_index": s + int(p == 0 and s >= 5),  # one gap of 2
                         "label": "lesion" if lesion else "normal", "class_id": int(lesion)})
    maps = np.stack(maps)[:, None]
    values = np.array([-1.0, -0.6, 0.2, 0.5, 0.9], np.float32)
    images = np.clip(values[maps] + rng.normal(0, 0.05, maps.shape).astype(np.float32), -1, 1)
    manifest = pd.DataFrame(rows)
    store = {"images": images.astype(np.float32), "masks": maps, "labels": manifest["class_id"].to_numpy()}
    return store, manifest


@pytest.fixture(scope="module")
def base_params():
    return load_parameters("base")


@pytest.fixture()
def params(tmp_path, base_params):
    study = copy.deepcopy(base_params["study_inpainting"])
    study.update(image_size=SIZE, checkpoint_root=str(tmp_path / "checkpoints"), variants=1)
    study["evaluation"].update(min_structure_px=3, max_slices=16, new_lesions=4, min_host_overlap=0.5,
                               sampler={"name": "ddim", "steps": 2}, batch_size=8, resamples=5, grid_examples=2,
                               encoder={"width": 4, "feature_dim": 8},
                               encoder_fit={"steps": 3, "batch_size": 8, "device": "cpu"})
    study["diffusion_model"].update(image_size=SIZE, block_out_channels=[8, 8])
    study["pix2pix_model"].update(image_size=SIZE, depth=4, base_channels=4, discriminator_layers=2)
    for key in ("diffusion_training", "pix2pix_training"):
        study[key].update(steps=2, batch_size=4, log_every=1, device="cpu", mixed_precision="no")
    return study


def test_the_base_parameters_validate(base_params):
    validate_parameters(base_params)
    broken = copy.deepcopy(base_params)
    broken["study_inpainting"]["evaluation"]["structures"] = ["kidneys"]
    with pytest.raises(ValueError, match="structures must be a non-empty list"):
        validate_parameters(broken)


def test_the_config_rejects_a_training_split_that_is_held_out(params):
    params["train_split"] = "test"
    with pytest.raises(ValueError, match="also an evaluation held-out split"):
        from_params(ip.InpaintingConfig, params, "study_inpainting")


def test_the_neighbour_is_the_nearest_slice_of_the_same_volume():
    manifest = pd.DataFrame({"index": range(7), "item_id": ["a"] * 4 + ["b"] * 3, "plane": "axial",
                             "slice_index": [0, 1, 3, 9, 0, 1, 2]})
    out = ip.neighbour_rows(manifest, max_gap=2)
    # a: 0 -> 1, 1 -> 0 (gap 1 beats 3's gap 2), 3 -> 1 (gap 2), 9 -> none; b: a tie goes to the next slice.
    assert out.tolist() == [1, 0, 1, -1, 5, 6, 5]
    assert ip.neighbour_rows(manifest, max_gap=1).tolist() == [1, 0, -1, -1, 5, 6, 5]


def test_the_central_box_is_the_samplers_outside_box_context():
    for size in (16, 32, 30):
        np.testing.assert_array_equal(ip.central_box_keep(size), _box_keep(size).numpy().astype(np.uint8))


def test_the_pix2pix_condition_is_the_masked_slice_and_the_keep_mask():
    images = np.linspace(-1, 1, 2 * 16, dtype=np.float32).reshape(2, 1, 4, 4)
    keep = np.ones_like(images, np.uint8)
    keep[:, :, 1:3, 1:3] = 0
    condition = ip.pix2pix_condition(images, keep)
    assert condition.shape == (2, 2, 4, 4)
    np.testing.assert_array_equal(condition[:, 1:], keep)
    seen = condition[:, :1] * 2 - 1  # what the pix2pix family feeds its network
    np.testing.assert_allclose(seen[keep == 1], images[keep == 1], atol=1e-6)
    assert (seen[keep == 0] == -1).all()
    with pytest.raises(ValueError, match="one shape"):
        ip.pix2pix_condition(images, keep[:1])


def test_the_cases_score_held_out_slices_in_two_disjoint_halves(cohort, params):
    store, manifest = cohort
    config = from_params(ip.InpaintingConfig, params, "study_inpainting")
    arrays = ip.working_arrays(store["images"], store["masks"], SIZE)
    neighbours = ip.neighbour_rows(manifest, 2)
    cases = ip.plan_cases(arrays, manifest, neighbours, config)
    held_out = set(manifest.loc[manifest["split"] != "train", "index"])
    assert set(cases["index"]) <= held_out and set(cases["mask_index"]) <= held_out
    for (case, structure), group in cases[cases["case"] != "new_lesion"].groupby(["case", "structure"]):
        a, b = set(group.loc[group["half"] == "a", "index"]), set(group.loc[group["half"] == "b", "index"])
        assert a and len(a) == len(b) and not a & b, (case, structure)
        if case == "inside_mask":
            area = (arrays["label_maps"][list(a)] == ip.STRUCTURES[structure]).sum(axis=(1, 2, 3))
            assert (area >= 3).all()
    lesion = cases[cases["case"] == "new_lesion"]
    assert len(lesion) > 0
    assert (arrays["label_maps"][lesion["index"]] == 4).sum() == 0  # hosts have no lesion
    assert ((arrays["label_maps"][lesion["mask_index"]] == 4).sum(axis=(1, 2, 3)) >= 3).all()


def test_a_new_lesion_goes_into_its_host_through_the_sampler(cohort, params):
    """The sampler places row j's mask into row j + 1's image; sampler_groups' shifted rows make request k
    place donor k's lesion into host k (the known pixels come back exactly)."""
    store, manifest = cohort
    config = from_params(ip.InpaintingConfig, params, "study_inpainting")
    arrays = ip.working_arrays(store["images"], store["masks"], SIZE)
    cases = ip.plan_cases(arrays, manifest, ip.neighbour_rows(manifest, 2), config)
    model_config = config_from_params("ddpm", dict(params["diffusion_model"]))
    spec = get_family("ddpm")
    models = spec.build(model_config, 0)
    positions, real, case = next(g for g in ip.sampler_groups(cases, arrays["images"], arrays["label_maps"])
                                 if g[2] == "new_lesion")
    plan = pd.DataFrame([{"condition": "inpaint", "label": "", "count": len(positions), "case": case}],
                        columns=PLAN_COLUMNS)
    sampled = generate_from_plan(spec, model_config, models, plan, [], SamplerSpec(name="ddim", steps=2), seed=0,
                                 batch_size=4, checkpoint="t", real=real, real_indices=np.arange(len(real["images"])))
    rows = cases.loc[positions]
    keep = ip.keep_masks(rows, arrays["label_maps"], SIZE).astype(bool)
    hosts = arrays["images"][rows["index"].to_numpy()]
    np.testing.assert_array_equal(sampled.images[keep], hosts[keep])
    np.testing.assert_array_equal(sampled.masks, 1 - keep)
    assert sampled.provenance["source_index"].tolist() == list(range(1, len(positions) + 1))


def test_the_study_nodes_run_end_to_end(cohort, params):
    store, manifest = cohort
    arrays, cases = nodes.prepare_inpainting_slices(store, manifest, params)
    assert arrays["images"].shape == (len(manifest), 1, SIZE, SIZE) and arrays["neighbour"][3] == 4
    diffusion, history = nodes.train_inpainting_diffusion(arrays, params)
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    pix2pix, history = nodes.train_inpainting_pix2pix(arrays, params)
    assert len(history) == 2 and np.isfinite(history["loss_g_l1"]).all()
    fills = nodes.inpaint_held_out(arrays, cases, diffusion, pix2pix, params)
    keep = fills["keep"].astype(bool)
    half_b = (cases["half"] == "b").to_numpy()
    for method in ip.METHODS:  # known pixels kept; the floor's half B never inpainted
        assert fills[method].shape == fills["real"].shape
        np.testing.assert_array_equal(fills[method][keep], fills["real"][keep])
        np.testing.assert_array_equal(fills[method][half_b], fills["real"][half_b])
        assert not np.array_equal(fills[method][~half_b], fills["real"][~half_b]), method
    table, html, *figures, metrics = nodes.evaluate_inpainting(arrays, cases, fills, params)
    assert list(table.columns) == STUDY_COLUMNS + [c for m in ip.METRICS for c in (m, f"{m}_low", f"{m}_high")]
    ours = table[table["kind"] == "ours"]
    assert list(ours["row"]) == ["csf", "grey matter", "white matter", "lesion"]
    published = table[table["kind"] == "published"]
    assert published[["pix2pix", "diffusion", "neighbour"]].values.tolist()[0] == [11.89, 0.47, 0.07]
    assert published["source"].str.contains("as given in issue 10").all() and published["floor"].isna().all()
    for record in ours.to_dict("records"):
        structure = record["row"].replace(" ", "_")
        n = ((cases["structure"] == structure) & (cases["case"] == "inside_mask") & (cases["half"] == "a")).sum()
        assert record["n"] == n
        assert metrics[f"{structure}.floor.fid.n"] == n
        for m in ip.METRICS:
            assert record[m] >= -1e-6 and record[f"{m}_low"] <= record[f"{m}_high"]
    assert "published: kidneys" in html and "study-inpainting" in html
    assert len(figures) == 3 and all(hasattr(f, "savefig") for f in figures)
    assert {"outside_box.diffusion.fid.mean", "new_lesion.diffusion.region_mean",
            "inside_mask.lesion.pix2pix.region_mse"} <= set(metrics)


def test_fid_per_structure_ranks_a_copy_below_noise(cohort, params):
    """structure_rows: a method that returns the real slices gets FID 0, one that adds noise a larger FID."""
    store, manifest = cohort
    config = from_params(ip.InpaintingConfig, params, "study_inpainting")
    arrays = ip.working_arrays(store["images"], store["masks"], SIZE)
    cases = ip.plan_cases(arrays, manifest, ip.neighbour_rows(manifest, 2), config)
    rng = torch.Generator().manual_seed(0)
    real = torch.randn(len(cases), 6, generator=rng)
    features = {"real": real, "pix2pix": real + 1.0 * torch.randn(len(cases), 6, generator=rng),
                "diffusion": real.clone(), "neighbour": real + 0.1 * torch.randn(len(cases), 6, generator=rng)}
    rows = ip.structure_rows(features, cases, config.evaluation, "s")
    assert [r.label for r in rows] == ["csf", "grey matter", "white matter", "lesion"]
    for row in rows:
        s = row.summaries
        assert s["diffusion"]["mean"] == pytest.approx(0.0, abs=1e-6)
        # a fill and its real slice are drawn together: a copy stays a copy in every resample
        assert s["diffusion"]["high"] == pytest.approx(0.0, abs=1e-6)
        # the copy is closer than the noisy fills on every resample: the difference excludes 0
        difference = s[ip.DIFFERENCE_KEY]
        assert difference["mean"] == pytest.approx(s["diffusion"]["mean"] - s["pix2pix"]["mean"])
        assert difference["low"] < difference["high"] < 0 and difference["n"] == s["diffusion"]["n"]
        assert s["neighbour"]["mean"] < s["pix2pix"]["mean"]
        assert s["floor"]["mean"] > 0


def test_the_halves_hold_different_patients_and_the_fid_intervals_draw_them(cohort, params):
    store, manifest = cohort
    config = from_params(ip.InpaintingConfig, params, "study_inpainting")
    arrays = ip.working_arrays(store["images"], store["masks"], SIZE)
    cases = ip.plan_cases(arrays, manifest, ip.neighbour_rows(manifest, 2), config)
    patient_of = manifest.set_index("index")["patient_key"]
    assert (cases["patient_key"].to_numpy() == patient_of.loc[cases["index"]].to_numpy()).all()
    for (case, structure), group in cases[cases["case"] != "new_lesion"].groupby(["case", "structure"]):
        a, b = (set(group.loc[group["half"] == h, "patient_key"]) for h in "ab")
        assert a and b and not a & b, (case, structure, a, b)
    real = torch.randn(len(cases), 6, generator=torch.Generator().manual_seed(0))
    rows = ip.structure_rows({m: real + 0.1 * i for i, m in enumerate(["real", *ip.METHODS])}, cases,
                             config.evaluation, "s")
    for row in rows:
        mine = cases[(cases["case"] == "inside_mask") & (cases["structure"].str.replace("_", " ") == row.label)]
        a = set(mine.loc[mine["half"] == "a", "patient_key"])
        assert row.summaries["floor"]["patients"] == len(a | set(mine.loc[mine["half"] == "b", "patient_key"]))
        assert row.summaries["diffusion"]["patients"] == len(a)
    # without patient keys the cases still plan (each slice its own unit) and the summaries name none
    plain = ip.plan_cases(arrays, manifest.drop(columns="patient_key"), ip.neighbour_rows(manifest, 2), config)
    assert plain["patient_key"].isna().all()
    assert "patients" not in ip.structure_rows({m: torch.randn(len(plain), 6) for m in ["real", *ip.METHODS]},
                                               plain, config.evaluation, "s")[0].summaries["floor"]
