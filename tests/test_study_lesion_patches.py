"""The "lesion patches" study (issue 10): patch cutting, the split guard, normalisation, and the nodes end
to end on a tiny cohort of 28 x 28 x 6 phantom volumes."""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd
import pytest

from synthmed.core.config import from_params
from synthmed.imaging import lesion_patches as lpx
from synthmed.imaging.lesion_patches import Normalisation, PatchSampling
from synthmed.pipeline_registry import ON_REQUEST, register_pipelines
from synthmed.protocols import lesion_patches as lp
from synthmed.protocols.studies import PublishedRow
from tests.conftest import load_parameters

SIDE, DEPTH = 28, 6
SPLITS = ["train"] * 6 + ["validation", "validation", "test", "test"]
LESION_PATIENTS = {1, 3, 5, 6, 8}   # 3 train, 1 validation, 1 test


def _phantom(rng: np.random.Generator, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """A disc of brain (white matter inside grey matter) in every slice; a bright lesion disc if asked."""
    yy, xx = np.mgrid[:SIDE, :SIDE]
    r = np.hypot(yy - SIDE / 2 + 0.5, xx - SIDE / 2 + 0.5)
    plane = np.zeros((SIDE, SIDE), np.uint8)
    plane[r < 13] = 2
    plane[r < 10] = 3
    labels = np.repeat(plane[:, :, None], DEPTH, axis=2)
    if lesion:
        cy, cx = rng.integers(9, 19, size=2)
        spot = np.hypot(yy - cy, xx - cx) < 2.6
        labels[:, :, 1:5][spot] = 4
    values = np.array([-1.0, -0.6, 0.2, 0.0, 0.9], np.float32)[labels]
    image = np.clip(values + rng.normal(0, 0.05, labels.shape), -1, 1).astype(np.float32)
    return image[None], labels[None]


@pytest.fixture(scope="module")
def cohort():
    """10 patients, one volume each, split by patient; 5 with a lesion."""
    rng = np.random.default_rng(0)
    images, masks, rows, splits = {}, {}, [], []
    for k, split in enumerate(SPLITS):
        item = f"item{k}"
        images[item], masks[item] = _phantom(rng, k in LESION_PATIENTS)
        rows.append({"item_id": item, "patient_key": f"p{k}", "kind": "volume", "has_mask": True,
                     "spacing_mm": "2x2x2", "label": "lesion" if k in LESION_PATIENTS else "normal"})
        splits.append({"item_id": item, "patient_key": f"p{k}", "split": split, "strategy": "group", "axis": -1,
                       "start": 0, "stop": SIDE, "gap_px": 0})
    return images, masks, pd.DataFrame(rows), pd.DataFrame(splits)


MODEL = {"image_size": 16, "channels": 1, "num_classes": 2, "latent_dim": 8, "base_channels": 4}
TRAINING = {"steps": 2, "batch_size": 4, "seed": 0, "checkpoint_every": 0, "log_every": 1, "sample_every": 0,
            "device": "cpu", "mixed_precision": "no"}


@pytest.fixture()
def extraction():
    """``params:extraction.lesion_patches`` for the phantom cohort."""
    return {
        "patches": {"patch_px": 16, "pixel_mm": 2.0, "lesion_labels": [4], "min_lesion_px": 4, "jitter_px": 1,
                    "normal_per_lesion": 1.5, "min_brain_fraction": 0.75, "seed": 0},
        "normalisation": {"method": "percentile", "low": 1.0, "high": 99.0},
    }


def _train(tmp_path, patches, table, source="lesion_patches", model=MODEL):
    """The demo's DCGAN as the training pipeline makes it, trained on ``source`` (every source given the same
    arrays here), saved and loaded as the catalog does (``generator.json`` keeps the source)."""
    from synthmed.datasets.array_store import ArrayStoreDataset
    from synthmed.datasets.generator import GeneratorDataset
    from synthmed.pipelines.training.nodes import train_generator

    dataset = ArrayStoreDataset(path=str(tmp_path / "arrays"))
    dataset.save(patches)
    store = dataset.load()
    run = {"source": source, "split": "train", "checkpoint_root": str(tmp_path / "checkpoints"),
           "preview_per_class": 2, "preview_sampler": {"name": "ddim", "steps": 1}}
    generator, history, _, _ = train_generator(store, table, store, table, store, table, "dcgan", model, TRAINING,
                                               run)
    saved = GeneratorDataset(path=str(tmp_path / f"dcgan-{source}"))  # as the catalog hands it to the study
    saved.save(generator)
    return saved.load(), history


@pytest.fixture()
def params():
    return {
        "evaluation": {"test_splits": ["validation", "test"], "batch_size": 8,
                       "encoder": {"width": 4, "feature_dim": 4, "fit": {"steps": 3, "batch_size": 8,
                                                                         "device": "cpu"}},
                       "fid_resamples": 5,
                       "utility": {"seeds": [0, 1], "width": 4, "feature_dim": 4, "resamples": 20,
                                   "fit": {"steps": 3, "batch_size": 8, "device": "cpu"}},
                       "tsne_perplexity": 5.0, "grid_examples": 3},
        "published": {"label": "published", "fid": 16.0, "citation": "as given in issue 10"},
    }


def test_lesion_patches_are_centred_on_lesions_and_normal_ones_hold_none(cohort, extraction):
    images, masks, manifest, split_table = cohort
    config = from_params(PatchSampling, extraction["patches"], "patches")
    arrays, table = lpx.cut_patches(images, masks, manifest, split_table, config)
    lesion, normal = table["label"] == "lesion", table["label"] == "normal"
    # 5 lesion patients x 4 slices with the lesion disc, one component each.
    assert lesion.sum() == 20 and set(table.loc[lesion, "slice_index"]) == {1, 2, 3, 4}
    assert arrays["images"].shape == (len(table), 1, 16, 16)
    centre = arrays["masks"][lesion.to_numpy(), 0, 6:10, 6:10]
    assert (centre.reshape(len(centre), -1).max(axis=1) == 1).all()        # the lesion sits at the centre
    assert arrays["masks"][normal.to_numpy()].sum() == 0                   # no lesion pixel in a normal patch
    assert (table.loc[normal, "brain_fraction"] >= 0.75).all()
    # Normal patches per split: 1.5 per lesion patch of that split, from that split's patients.
    for split, count in table[lesion].groupby("split").size().items():
        assert (table[normal]["split"] == split).sum() == round(1.5 * count)
    patient_split = dict(zip(split_table["patient_key"], split_table["split"]))
    assert (table["patient_key"].map(patient_split) == table["split"]).all()
    again, _ = lpx.cut_patches(images, masks, manifest, split_table, config)
    np.testing.assert_array_equal(again["images"], arrays["images"])       # seeded


def test_only_the_chosen_series_is_cut(cohort, extraction):
    images, masks, manifest, split_table = cohort
    # Odd items are FLAIR, even ones T1w (every item is its own patient here; the FLAIR items hold the
    # training lesions of patients 1, 3 and 5).
    labelled = manifest.assign(series=["FLAIR" if k % 2 else "T1w" for k in range(len(manifest))])
    flair = {row.item_id for row in labelled.itertuples() if row.series == "FLAIR"}
    _, all_series = lpx.cut_patches(images, masks, labelled, split_table,
                                   from_params(PatchSampling, extraction["patches"], "p"))
    assert set(all_series["item_id"]) - flair
    chosen = from_params(PatchSampling, {**extraction["patches"], "series": ["FLAIR"]}, "p")
    assert chosen.series == ("FLAIR",)
    _, table = lpx.cut_patches(images, masks, labelled, split_table, chosen)
    assert set(table["item_id"]) <= flair
    assert ((table["split"] == "train") & (table["label"] == "lesion")).sum() == 3 * 4  # 3 patients x 4 slices
    unknown = r"extraction\.lesion_patches\.patches\.series=\['T2w'\] matches none.*'FLAIR', 'T1w'"
    with pytest.raises(ValueError, match=unknown):
        lpx.cut_patches(images, masks, labelled, split_table,
                       from_params(PatchSampling, {**extraction["patches"], "series": ["T2w"]}, "p"))
    with pytest.raises(ValueError, match="series must be a non-empty list"):
        PatchSampling(series=[])


def test_patches_crossing_splits_are_refused(cohort, extraction):
    images, masks, manifest, split_table = cohort
    sampling = from_params(PatchSampling, extraction["patches"], "p")
    _, table = lpx.cut_patches(images, masks, manifest, split_table, sampling)
    moved = table.copy()
    moved.loc[moved.index[0], "split"] = "test" if moved["split"].iloc[0] != "test" else "train"
    with pytest.raises(ValueError, match="several splits"):
        lpx.check_patient_splits(moved)
    # A patient moved whole is still one split, but not the split table's.
    whole = table.copy()
    first = whole["patient_key"] == whole["patient_key"].iloc[0]
    whole.loc[first, "split"] = "test" if whole["split"].iloc[0] != "test" else "train"
    with pytest.raises(ValueError, match="not in their item's split"):
        lpx.check_patient_splits(whole, split_table)
    slabs = split_table.assign(strategy="slab", axis=2)
    with pytest.raises(ValueError, match="split by patient"):
        lpx.cut_patches(images, masks, manifest, slabs, from_params(PatchSampling, extraction["patches"], "p"))


def test_percentile_normalisation_maps_each_patch_to_the_unit_range():
    rng = np.random.default_rng(1)
    images = np.stack([rng.normal(0.0, 0.01, (1, 8, 8)), rng.normal(0.3, 0.2, (1, 8, 8))]).astype(np.float32)
    brain = np.ones_like(images, dtype=np.uint8)
    brain[:, :, :2] = 0
    out = lpx.normalise_patches(images, brain, Normalisation(low=0.0, high=100.0))
    for k in range(2):
        inside = out[k][brain[k] > 0]
        assert inside.min() == pytest.approx(-1.0) and inside.max() == pytest.approx(1.0)
        assert (out[k][brain[k] == 0] == -1.0).all()
    np.testing.assert_array_equal(lpx.normalise_patches(images, brain, Normalisation(method="none")), images)
    with pytest.raises(ValueError, match="low < high"):
        Normalisation(low=99.0, high=1.0)


def test_study_nodes_end_to_end(cohort, params, extraction, tmp_path):
    from synthmed.pipelines.extraction.nodes import extract_lesion_patches
    from synthmed.pipelines.study_lesion_patches import nodes

    images, masks, manifest, split_table = cohort
    patches, table = extract_lesion_patches(images, masks, manifest, split_table, extraction)
    assert np.abs(patches["images"]).max() <= 1.0
    generator, history = _train(tmp_path, patches, table)
    assert len(history) == 2 and generator.class_names == ("normal", "lesion")
    synthetic, provenance = nodes.sample_patches(generator, patches, table, params)
    train = table[table["split"] == "train"]
    assert np.bincount(synthetic["labels"], minlength=2).tolist() == [int((train["label"] == "normal").sum()),
                                                                      int((train["label"] == "lesion").sum())]
    assert synthetic["images"].shape[1:] == (1, 16, 16) and len(provenance) == len(synthetic["images"])
    fid_table, fidelity, _, tsne_png = nodes.score_patch_fidelity(patches, table, synthetic, params, extraction,
                                                                  TRAINING)
    assert "the demo's dcgan, 2 steps" in fid_table["source"].iloc[0]
    assert fid_table["kind"].tolist() == ["ours", "floor", "published"]
    assert fid_table["n"].iloc[0] == fid_table["n"].iloc[1] == fidelity["lesion.fid_n"]
    assert fid_table["fid"].iloc[2] == 16.0 and fid_table["source"].iloc[2] == "as given in issue 10"
    assert fidelity["lesion.fid_floor_halves"] >= 0 and tsne_png
    for kind, n_lesion in (("synthetic", (synthetic["labels"] == lp.LESION).sum()),
                           ("held_out", (table["split"].isin(["validation", "test"])
                                         & (table["label"] == "lesion")).sum())):
        assert fidelity[f"class_fidelity.{kind}.lesion_n"] == n_lesion
        assert fidelity[f"class_fidelity.{kind}.lesion_low"] <= fidelity[f"class_fidelity.{kind}.lesion"] \
            <= fidelity[f"class_fidelity.{kind}.lesion_high"]
    utility_table, runs, utility = nodes.score_patch_utility(patches, table, synthetic, params)
    assert utility_table["row"].tolist() == ["real", "real+flips", "real+GAN", "real+GAN+flips"]
    held_out = table["split"].isin(["validation", "test"])
    assert (utility_table["n"] == held_out.sum()).all() and utility["n_test_patients"] == 4
    assert set(runs["seed"]) == {0, 1} and set(runs["mode"]) == set(utility_table["row"])
    assert ((utility_table["f1_lesion_low"] <= utility_table["f1_lesion"] + 1e-9)
            & (utility_table["f1_lesion"] <= utility_table["f1_lesion_high"] + 1e-9)).all()
    html, grid, metrics = nodes.write_lesion_patches_report(fid_table, utility_table, fidelity, utility, tsne_png,
                                                            patches, table, synthetic, params, extraction)
    assert "as given in issue 10" in html and "real+GAN+flips" in html and "Normalisation: percentile" in html
    assert "Class fidelity (GAN-test" in html and "Clopper-Pearson" in html
    assert "(series FLAIR)" not in html and "(every series)" in html   # the fixture's manifest names none
    assert len(grid.axes) == 4 * 3 and all(isinstance(v, float) for v in metrics.values())
    assert metrics["utility.real_GAN.f1.lesion.mean"] == pytest.approx(utility_table["f1_lesion"].iloc[2])
    # MLflow refuses metric names with other characters (the first cohort run failed on "real+GAN").
    assert all(re.fullmatch(r"[\w.\-/: ]+", name) for name in metrics), [n for n in metrics if "+" in n]


def test_class_fidelity_counts_each_class_with_an_exact_interval():
    labels = np.array([lp.LESION] * 10 + [lp.NORMAL] * 20)
    predicted = np.array([lp.LESION] * 7 + [lp.NORMAL] * 3 + [lp.NORMAL] * 20)
    shares = lp.class_fidelity(predicted, labels, 0.95)
    assert shares["lesion"] == pytest.approx(0.7) and shares["normal"] == 1.0
    assert shares["lesion_n"] == 10 and shares["normal_n"] == 20
    # Clopper-Pearson, 7 of 10 at 95%: [0.348, 0.933] (scipy's binomtest agrees with the tables).
    assert shares["lesion_low"] == pytest.approx(0.3475, abs=1e-3) and shares["lesion_high"] == pytest.approx(
        0.9333, abs=1e-3)
    assert shares["normal_low"] < 1.0 == shares["normal_high"]
    # A lesion class drawn as normal: the classifier calls none of it lesion.
    assert lp.class_fidelity(np.full(10, lp.NORMAL), np.full(10, lp.LESION), 0.95)["lesion"] == 0.0
    assert "normal" not in lp.class_fidelity(np.full(10, lp.NORMAL), np.full(10, lp.LESION), 0.95)
    with pytest.raises(ValueError, match=r"shape \(3,\) for labels of shape \(4,\)"):
        lp.class_fidelity(np.zeros(3), np.zeros(4), 0.95)


def test_class_fidelity_note_puts_each_share_in_its_place():
    from synthmed.pipelines.study_lesion_patches.nodes import _class_fidelity_note

    fidelity = {}
    for kind, shares in (("synthetic", {"lesion": (0.82, 0.78, 0.86, 405), "normal": (0.97, 0.96, 0.98, 810)}),
                         ("held_out", {"lesion": (0.93, 0.88, 0.96, 158), "normal": (0.99, 0.98, 1.0, 316)})):
        for name, (share, low, high, n) in shares.items():
            fidelity |= {f"class_fidelity.{kind}.{name}": share, f"class_fidelity.{kind}.{name}_low": low,
                         f"class_fidelity.{kind}.{name}_high": high, f"class_fidelity.{kind}.{name}_n": n}
    note = _class_fidelity_note(fidelity, 0.95)
    assert ("calls 82% [78, 86] of 405 synthetic lesion patches lesion and 97% [96, 98] of 810 synthetic normal "
            "patches normal; on the held-out patients' real patches, 93% [88, 96] of 158 and 99% [98, 100] of 316"
            in note)
    assert "95% Clopper-Pearson" in note


def test_grid_rows_spread_over_the_class():
    assert lp.spread(4, 10).tolist() == [0, 3, 6, 9]
    assert lp.spread(8, 3).tolist() == [0, 1, 2] and lp.spread(3, 0).size == 0
    real = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1) * np.ones((1, 1, 4, 4), np.float32) / 40
    labels = np.array([lp.LESION] * 20 + [lp.NORMAL] * 20)
    figure = lp.sample_grid(real, labels, real, labels, 4)
    shown = [axis.images[0].get_array()[0, 0] for axis in figure.axes[:4]]  # the real lesion row
    np.testing.assert_allclose(shown, (real[[0, 6, 13, 19], 0, 0, 0] + 1) / 2)


def test_the_lesion_class_must_be_the_minority(cohort, params, extraction):
    from synthmed.pipelines.extraction.nodes import extract_lesion_patches
    from synthmed.pipelines.study_lesion_patches import nodes

    images, masks, manifest, split_table = cohort
    balanced = copy.deepcopy(extraction)
    balanced["patches"]["normal_per_lesion"] = 1.0
    patches, table = extract_lesion_patches(images, masks, manifest, split_table, balanced)
    synthetic = {"images": patches["images"][:4], "labels": patches["labels"][:4]}
    with pytest.raises(ValueError, match="normal_per_lesion above 1"):
        nodes.score_patch_utility(patches, table, synthetic, params)


def test_the_study_scores_only_a_dcgan_trained_on_the_lesion_patches(cohort, params, extraction, tmp_path):
    from synthmed.pipelines.extraction.nodes import extract_lesion_patches
    from synthmed.pipelines.study_lesion_patches import nodes

    images, masks, manifest, split_table = cohort
    patches, table = extract_lesion_patches(images, masks, manifest, split_table, extraction)
    on_slices, _ = _train(tmp_path, patches, table, source="slices")
    with pytest.raises(ValueError, match=r"trained on 'slices'.*dcgan.run.source: lesion_patches"):
        nodes.sample_patches(on_slices, patches, table, params)


def test_the_study_refuses_a_model_of_another_size(cohort, params, extraction, tmp_path):
    from synthmed.pipelines.extraction.nodes import extract_lesion_patches
    from synthmed.pipelines.study_lesion_patches import nodes

    images, masks, manifest, split_table = cohort
    larger = copy.deepcopy(extraction)
    larger["patches"] |= {"patch_px": 32, "pixel_mm": 1.0, "min_lesion_px": 16}
    patches, table = extract_lesion_patches(images, masks, manifest, split_table, larger)
    assert set(table["label"]) == {"normal", "lesion"}
    # A 16 px model trains on the 32 px patches (image_size divides them), but draws patches the study's
    # encoder cannot take.
    generator, _ = _train(tmp_path, patches, table)
    with pytest.raises(ValueError, match=r"draws 16 px patches, but the lesion patches are 32 px"):
        nodes.sample_patches(generator, patches, table, params)


def test_training_on_an_empty_source_names_the_switch(tmp_path):
    arrays, table = lpx.empty_patches(16)
    with pytest.raises(ValueError, match=r"wrote no lesion_patches.*extraction.lesion_patches.enabled is false"):
        _train(tmp_path, arrays, table)


def test_generator_json_keeps_what_the_model_learnt(cohort, extraction, tmp_path):
    import json

    from synthmed.generators.common import write_checksums
    from synthmed.generators.registry import load_trained_generator
    from synthmed.pipelines.extraction.nodes import extract_lesion_patches

    images, masks, manifest, split_table = cohort
    patches, table = extract_lesion_patches(images, masks, manifest, split_table, extraction)
    generator, _ = _train(tmp_path, patches, table)
    assert generator.card == {"source": "lesion_patches"}
    # A folder written before generator.json kept the source loads with an empty card.
    folder = tmp_path / "dcgan-lesion_patches"
    description = json.loads((folder / "generator.json").read_text())
    del description["source"]
    (folder / "generator.json").write_text(json.dumps(description))
    write_checksums(folder)
    assert load_trained_generator(folder).card == {}


def test_disabled_extraction_writes_an_empty_store(cohort, extraction):
    from synthmed.pipelines.extraction.nodes import extract_lesion_patches

    images, masks, manifest, split_table = cohort
    arrays, table = extract_lesion_patches(images, masks, manifest, split_table, {**extraction, "enabled": False})
    assert arrays["images"].shape == (0, 1, 16, 16) and len(table) == 0 and list(table) == lpx.PATCH_COLUMNS
    with pytest.raises(ValueError, match="lesion_patches.enabled' must be true or false, got 'yes'"):
        extract_lesion_patches(images, masks, manifest, split_table, {**extraction, "enabled": "yes"})


def test_registered_on_request_with_checked_parameters():
    assert "study_lesion_patches" in ON_REQUEST
    pipelines = register_pipelines()
    assert "study_lesion_patches" in pipelines
    assert not set(pipelines["study_lesion_patches"].nodes) & set(pipelines["__default__"].nodes)
    base = load_parameters("base")
    config = from_params(lp.LesionPatchesConfig, base["study_lesion_patches"], "study_lesion_patches")
    # The demo's DCGAN learns the extraction's lesion patches at their size: the model the study scores.
    patches = from_params(lpx.LesionPatchExtraction, base["extraction"]["lesion_patches"], lpx.WHERE).patches
    assert base["dcgan"]["run"]["source"] == "lesion_patches"
    assert base["dcgan"]["model"]["image_size"] == patches.patch_px
    assert lp.published_rows(config.published) == [PublishedRow(config.published.label, {"fid": 16.0},
                                                                 config.published.citation)]
