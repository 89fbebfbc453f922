"""The "class multiplication" study (issue 10): its pieces, and its nodes end to end on a tiny cohort of
32 px slices (studied at 16 px)."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from synthmed.core.config import from_params
from synthmed.parameters import validate_parameters
from synthmed.pipeline_registry import ON_REQUEST, register_pipelines
from synthmed.protocols import class_multiplication as cm
from synthmed.protocols.studies import STUDY_COLUMNS
from tests.conftest import PROJECT_ROOT, load_parameters

STORED, SIZE, SLICES = 32, 16, 10
SPLITS = ["train", "train", "train", "train", "validation", "validation", "test", "test"]
LESION_PATIENTS = (1, 2, 4, 6)


@pytest.fixture(scope="module")
def cohort():
    """8 patients of SLICES axial slices (4 train, 2 validation, 2 test): a disc of brain; patients 1, 2, 4, 6
    carry a bright lesion in slices 3-6 (the lesion class: 8 of 40 training slices, 8 of 40 held-out)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:STORED, :STORED].astype(float)
    images, rows = [], []
    for p, split in enumerate(SPLITS):
        for s in range(SLICES):
            lesion = p in LESION_PATIENTS and 3 <= s <= 6
            centre = STORED / 2 - 0.5 + rng.uniform(-1, 1, 2)
            r = np.hypot(yy - centre[0], xx - centre[1])
            image = np.where(r < rng.uniform(11, 14), 0.2, -1.0)
            if lesion:
                image[np.hypot(yy - centre[0] - 5, xx - centre[1]) < 3] = 0.9
            images.append(np.clip(image + rng.normal(0, 0.05, image.shape), -1, 1))
            rows.append({"index": len(rows), "item_id": f"item{p}", "patient_key": f"p{p}", "split": split,
                         "plane": "axial", "slice_index": s, "label": cm.CLASS_NAMES[int(lesion)],
                         "class_id": int(lesion)})
    manifest = pd.DataFrame(rows)
    return {"images": np.stack(images)[:, None].astype(np.float32), "labels": manifest["class_id"].to_numpy()}, \
        manifest


@pytest.fixture(scope="module")
def base_params():
    return load_parameters("base")


@pytest.fixture()
def params(tmp_path, base_params):
    study = copy.deepcopy(base_params["study_class_multiplication"])
    study.update(image_size=SIZE, checkpoint_root=str(tmp_path / "checkpoints"), pretrained=None)
    study["model"].update(image_size=SIZE, block_out_channels=[8, 8])
    study["training"].update(steps=2, batch_size=4, log_every=1, device="cpu", mixed_precision="no")
    study["multiplication"].update(sampler={"name": "ddim", "steps": 2, "guidance_scale": 2.0, "eta": 0.0},
                                   batch_size=8)
    evaluation = study["evaluation"]
    evaluation["utility"].update(seeds=[0, 1], width=4, feature_dim=4, resamples=20,
                                 fit={"steps": 3, "batch_size": 8, "device": "cpu"})
    evaluation["detectability"].update(width=4, feature_dim=4, resamples=20,
                                       fit={"steps": 3, "batch_size": 8, "device": "cpu"})
    evaluation["memorisation"].update(plant={**evaluation["memorisation"]["plant"], "count": 10},
                                      min_self_test_recall=0.0)
    evaluation["reader_kit"].update(per_source=5, display_px=32)
    evaluation["grid_examples"] = 3
    return study


def test_slices_are_downsampled_with_their_class_split_and_patient(cohort):
    store, manifest = cohort
    arrays = cm.class_slices(store["images"], manifest.sample(frac=1.0, random_state=0), SIZE)
    assert arrays["images"].shape == (len(manifest), 1, SIZE, SIZE)
    np.testing.assert_allclose(arrays["images"][5, 0, 0, 0], store["images"][5, 0, :2, :2].mean(), rtol=1e-5)
    assert arrays["labels"].tolist() == manifest["class_id"].tolist()        # the stored order, not the table's
    assert arrays["split"].tolist() == manifest["split"].tolist()
    with pytest.raises(ValueError, match="must divide"):
        cm.class_slices(store["images"], manifest, 24)
    planes = manifest.assign(label=np.where(manifest["class_id"] == 1, "coronal", "axial"))
    with pytest.raises(ValueError, match="classed by finding"):
        cm.class_slices(store["images"], planes, SIZE)
    crossing = manifest.copy()
    crossing.loc[0, "split"] = "test"                                         # patient p0 in train and test
    with pytest.raises(ValueError, match=r"p0.*several splits"):
        cm.class_slices(store["images"], crossing, SIZE)


def test_duplicate_rows_copy_every_real_lesion_in_turn():
    np.testing.assert_array_equal(cm.duplicate_rows(np.array([7, 3, 5]), 7), [7, 3, 5, 7, 3, 5, 7])
    assert len(cm.duplicate_rows(np.array([4]), 0)) == 0
    with pytest.raises(ValueError, match="no real lesion slice"):
        cm.duplicate_rows(np.array([], dtype=int), 3)


def test_factors_count_the_real_training_lesions():
    labels = np.array([0] * 30 + [1] * 7)
    assert cm.lesion_counts(labels, (1.0, 2.0, 0.5)) == {1.0: 7, 2.0: 14, 0.5: 4}
    with pytest.raises(ValueError, match="no lesion slice"):
        cm.lesion_counts(np.zeros(5, int), (1.0,))
    assert cm.factor_key(2.0) == "x2" and cm.factor_key(0.5) == "x0_5"


def test_bad_parameters_name_the_value_and_what_was_expected():
    with pytest.raises(ValueError, match=r"factors must be a non-empty list of numbers > 0.*-1"):
        cm.Multiplication(factors=(1.0, -1.0))
    with pytest.raises(ValueError, match="factors must differ"):
        cm.Multiplication(factors=(2.0, 2.0))
    with pytest.raises(ValueError, match=r"over_generation must be a mapping .*got None"):
        cm.Multiplication(over_generation=None)
    with pytest.raises(ValueError, match=r"over_generation: unknown key\(s\) \['on_shortfall'\]"):
        cm.Multiplication(over_generation={"on_shortfall": "warn"})
    with pytest.raises(ValueError, match=r"multiplication\.over_generation\.max_rounds must be an integer >= 1, got 0"):
        cm.Multiplication(over_generation={"max_rounds": 0})
    with pytest.raises(ValueError, match=r"test_splits must be .*'train'"):
        cm.StudyEvaluation(test_splits=("train",))
    with pytest.raises(ValueError, match=r"gate_splits must be .*'train'"):
        cm.StudyEvaluation(gate_splits=("train",))
    with pytest.raises(ValueError, match=r"anatomically_correct must be a fraction.*66"):
        cm.PublishedFigure(label="x", anatomically_correct=66.0, citation="c")
    with pytest.raises(ValueError, match="image_size must be a power of two"):
        cm.ClassMultiplicationConfig(image_size=24)
    with pytest.raises(ValueError, match="per_source must be an integer >= 1"):
        cm.ReaderKit(per_source=0)


def test_pairwise_similarity_finds_a_copy():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 1, 8, 8))
    assert np.nanmax(cm.pairwise_similarity(images)) < 0.9
    images[3] = 0.5 * images[1] + 0.1                                         # a copy, gain and offset changed
    similarity = cm.pairwise_similarity(images)
    assert similarity[1, 3] == pytest.approx(1.0) and np.isnan(similarity[2, 2])


def test_the_reader_row_measures_nothing_and_the_published_row_is_a_constant():
    published = cm.PublishedFigure(label="published", anatomically_correct=0.66, citation="as given in issue 10")
    detect = {"detectability_auc": 0.9, "detectability_auc_low": 0.8, "detectability_auc_high": 0.95,
              "detectability_auc_n": 40.0, "detectability_auc_floor": 0.55, "detectability_auc_floor_low": 0.4,
              "detectability_auc_floor_high": 0.7, "detectability_auc_floor_n": 20.0}
    table = cm.study_frame([cm.reader_row(20, 15), *cm.detectability_rows(detect)], cm.published_rows(published),
                           level=0.95)
    assert list(table.columns[:len(STUDY_COLUMNS)]) == STUDY_COLUMNS
    reader = table.iloc[0]
    assert math.isnan(reader["anatomically_correct"]) and "needs readers" in reader["row"]
    assert cm.READER_KIT_DIR in reader["source"] and "reader_study score --key" in reader["source"]
    assert table["n"].tolist()[:3] == [20, 40, 20]                           # each row its own N
    assert table.iloc[1]["detectability_auc"] == 0.9 and math.isnan(table.iloc[1]["f1_lesion"])
    assert table.iloc[2]["kind"] == "floor" and table.iloc[2]["detectability_auc"] == 0.55
    assert table.iloc[3]["kind"] == "published" and table.iloc[3]["anatomically_correct"] == 0.66


def test_the_catalog_writes_the_kit_where_the_table_says():
    catalog = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog_study_class_multiplication.yml").read_text())
    assert catalog["class_multiplication_reader_kit"]["path"] == cm.READER_KIT_DIR
    assert catalog["class_multiplication_reader_key"]["filepath"] == cm.READER_KEY_PATH
    assert catalog["class_multiplication_reader_key"]["metadata"]["synthmed"]["mlflow_artifact"] is False


def test_study_nodes_end_to_end(cohort, params):
    from synthmed.pipelines.study_class_multiplication import nodes

    store, manifest = cohort
    arrays = nodes.prepare_class_slices(store, manifest, params)
    models, history = nodes.train_class_diffusion(arrays, params)
    assert len(history) == 2
    synthetic, provenance, gate_table, gate = nodes.multiply_lesion_class(models, arrays, params)
    assert synthetic["images"].shape == (16, 1, SIZE, SIZE)                    # x2 of the 8 training lesions
    assert (synthetic["labels"] == cm.LESION).all() and len(provenance) == 16
    again = nodes.multiply_lesion_class(models, arrays, params)
    np.testing.assert_array_equal(again[0]["images"], synthetic["images"])     # seeded
    assert len(gate_table) == gate["candidate_count"] >= 16
    assert gate_table["used"].sum() == gate["used_count"] == 16
    assert not (gate_table["used"] & gate_table["memorisation_flagged"]).any()
    # calibrated on the gate_splits patients only (conf/base: validation, as the rebalancing gate)
    assert params["evaluation"]["gate_splits"] == ["validation"]
    left_out = sum(gate.get(f"held_out_{k}", 0.0) for k in ("duplicates", "content_free", "low_foreground"))
    assert gate["held_out_count"] + left_out == SPLITS.count("validation") * SLICES
    assert gate["flagged_fraction"] == pytest.approx(gate_table["memorisation_flagged"].mean())
    summary, runs, utility = nodes.score_class_utility(arrays, synthetic, params)
    assert set(summary["factor"]) == {1.0, 2.0} and set(runs["seed"]) == {0, 1}
    assert utility["x1.n_synthetic"] == 8 and utility["x2.n_synthetic"] == 16
    assert utility["n_test"] == 40 and utility["n_test_lesion"] == 8
    detectability = nodes.score_class_detectability(arrays, synthetic, params)
    assert detectability["detectability_auc_n"] == 8 and detectability["detectability_auc_floor_n"] == 4
    kit, key = nodes.build_class_reader_kit(arrays, synthetic, params)
    assert (key["truth"] == "real").sum() == 5 and (key["truth"] == "synthetic").sum() == 5
    assert set(key.loc[key["truth"] == "real", "patient"]) <= {"p4", "p6"}   # held-out patients only
    assert "sheet.html" in kit and not any("synthetic" in str(v) for k, v in kit.items() if k.endswith(".csv"))
    table, html, grid, metrics = nodes.write_class_multiplication_report(summary, utility, detectability, gate, key,
                                                                         arrays, synthetic, params)
    assert table["kind"].tolist() == ["ours", "ours", "floor", "ours", "reference", "reference", "ours", "reference",
                                      "ours", "reference", "ours", "published"]
    # the lesion signal: the synthetic lesion slices' and the real ones', each against the real normal slices
    signal = table[table["row"].str.contains("lesion signal")].set_index("kind")["lesion_signal_auc"]
    assert signal["ours"] == pytest.approx(metrics["lesion_signal.auc"])
    assert signal["reference"] == pytest.approx(metrics["lesion_signal.auc_real"])
    assert metrics["lesion_signal.auc_n"] == metrics["lesion_signal.n_normal"] + 16  # x2 synthetic lesion slices
    # its intervals draw the real slices' patients (the training ones); each synthetic slice is a unit of its own
    train = arrays["split"] == "train"
    assert metrics["lesion_signal.auc_real_patients"] == len(set(arrays["patient"][train]))
    assert metrics["lesion_signal.auc_patients"] == len(set(arrays["patient"][train & (arrays["labels"] == cm.NORMAL)]))
    assert set(summary["added"]) == {cm.ADDED_SYNTHETIC, cm.ADDED_DUPLICATES}
    f1 = summary[(summary["score"] == "f1.lesion") & (summary["mode"] == "real+synthetic")]
    copies = f1[f1["added"] == cm.ADDED_DUPLICATES]
    f1 = f1[f1["added"] == cm.ADDED_SYNTHETIC]
    x2 = table[table["row"].str.contains("synthetic lesion slices x2")].iloc[0]
    control = table[table["row"].str.contains("copies of the real lesion slices .* x2")].iloc[0]
    assert control["f1_lesion"] == pytest.approx(copies.loc[copies["factor"] == 2.0, "mean"].iloc[0])
    assert utility["x2.duplicates.real_synthetic.f1.lesion.mean"] == pytest.approx(control["f1_lesion"])
    assert x2["f1_lesion"] == pytest.approx(f1.loc[f1["factor"] == 2.0, "mean"].iloc[0])
    assert x2["f1_lesion_delta"] == pytest.approx(f1.loc[f1["factor"] == 2.0, "delta_vs_real"].iloc[0])
    assert x2["f1_lesion_delta_low"] <= x2["f1_lesion_delta_high"] and x2["n"] == 40
    flagged = table[table["row"].str.contains("flagged")].iloc[0]
    assert flagged["flagged_fraction_low"] <= flagged["flagged_fraction"] <= flagged["flagged_fraction_high"]
    assert table["anatomically_correct"].iloc[0] != table["anatomically_correct"].iloc[0]   # NaN: not measured
    assert "0.660" in html and "needs readers" in html and "reader_study score" in html
    assert len(grid.axes) == 4 * 3
    assert metrics["synthetic.max_pairwise_similarity"] <= 1.0 + 1e-9
    assert all(re.fullmatch(r"[\w.\-/: ]+", name) for name in metrics), [n for n in metrics if "+" in n]


def _copying_sampler(arrays, every: int):
    """Stands in for ``generate_from_plan``: every ``every``-th slice an exact copy of a training lesion slice, the
    others seeded noise; records the seed of each call."""
    from synthmed.generators.sampling import Sampled

    lesions = arrays["images"][(arrays["split"] == "train") & (arrays["labels"] == cm.LESION)]
    seeds = []

    def sample(spec, config, models, plan, class_names, sampler, *, seed, batch_size, checkpoint):
        seeds.append(seed)
        n = int(plan["count"].sum())
        rng = np.random.default_rng(seed)
        images = rng.uniform(-1, 1, (n, 1, SIZE, SIZE)).astype(np.float32)
        copies = np.arange(n) % every == 0
        images[copies] = lesions[np.arange(int(copies.sum())) % len(lesions)]
        provenance = pd.DataFrame({"index": range(n), "family": "ddpm", "checkpoint": checkpoint, "seed": seed,
                                   "condition": "class", "label": "lesion", "case": "", "source_index": -1,
                                   "copy": copies})
        return Sampled(images, np.full(n, cm.LESION), np.zeros((n, 1, SIZE, SIZE), np.uint8), provenance)

    return sample, seeds


def test_flagged_slices_are_dropped_and_sampled_again_before_any_measurement(cohort, params, monkeypatch):
    from synthmed.pipelines.study_class_multiplication import nodes
    from synthmed.privacy.memorisation import MemorisationError
    from synthmed.protocols.rebalancing import RebalancingShortfall

    store, manifest = cohort
    arrays = nodes.prepare_class_slices(store, manifest, params)
    sample, seeds = _copying_sampler(arrays, every=2)
    monkeypatch.setattr(nodes, "generate_from_plan", sample)
    synthetic, provenance, table, gate = nodes.multiply_lesion_class(None, arrays, params)
    # round 1: 16 candidates, the 8 copies flagged and dropped; round 2 samples again for the 8 missing
    assert len(seeds) >= 2 and seeds[1] != seeds[0]
    assert gate["rounds"] == len(seeds) and gate["used_count"] == 16 and len(synthetic["images"]) == 16
    assert table["memorisation_flagged"].tolist() == table["copy"].tolist()   # every copy, nothing else
    assert not (table["used"] & table["copy"]).any() and not provenance["copy"].any()
    assert seeds[0] == params["multiplication"]["sample_seed"]                  # round 1: the study's seed
    # provenance: one row per kept slice in array order, joined to memorisation.csv by candidate_index
    assert provenance["index"].tolist() == list(range(16))
    assert provenance["candidate_index"].tolist() == table.loc[table["used"], "candidate_index"].tolist()
    assert table["candidate_index"].tolist() == list(range(len(table)))
    assert gate["max_pixel_similarity"] == pytest.approx(1.0) and gate["used_max_pixel_similarity"] < 0.9
    assert gate["flagged_count"] == table["copy"].sum() and gate["flagged_fraction"] == pytest.approx(
        table["copy"].mean())
    training = arrays["images"][arrays["split"] == "train"].reshape(-1, SIZE * SIZE)
    used = synthetic["images"].reshape(len(synthetic["images"]), -1)
    assert not (np.abs(used[:, None] - training[None]).max(axis=2) == 0).any()  # no copy reaches the classifier
    kit, key = nodes.build_class_reader_kit(arrays, synthetic, params)          # nor the readers
    assert (key["truth"] == "synthetic").sum() == 5
    # without an action the study drops (not the gate's own default, fail)
    default = copy.deepcopy(params)
    del default["evaluation"]["memorisation"]["action"]
    assert nodes.multiply_lesion_class(None, arrays, default)[3]["used_count"] == 16
    # action fail stops at the first flagged slice; a sampler that only copies ends short, naming its limits
    fail = copy.deepcopy(params)
    fail["evaluation"]["memorisation"]["action"] = "fail"
    with pytest.raises(MemorisationError, match="flagged"):
        nodes.multiply_lesion_class(None, arrays, fail)
    monkeypatch.setattr(nodes, "generate_from_plan", _copying_sampler(arrays, every=1)[0])
    short = copy.deepcopy(params)
    short["multiplication"]["over_generation"] = {"max_rounds": 2}
    with pytest.raises(RebalancingShortfall, match=r"lesion short by 16 of 16 .*Raise study_class_multiplication"
                                                   r"\.multiplication\.over_generation\.max_rounds"):
        nodes.multiply_lesion_class(None, arrays, short)


def test_the_lesion_class_must_be_the_minority(cohort, params):
    from synthmed.pipelines.study_class_multiplication import nodes

    store, manifest = cohort
    arrays = nodes.prepare_class_slices(store, manifest, params)
    flipped = {**arrays, "labels": 1 - arrays["labels"]}
    synthetic = {"images": arrays["images"][:40], "labels": np.ones(40, np.int64)}
    with pytest.raises(ValueError, match="lesion class as the minority"):
        nodes.score_class_utility(flipped, synthetic, params)


def test_model_must_be_class_conditional_at_the_study_size(params):
    from synthmed.pipelines.study_class_multiplication import nodes

    wrong = copy.deepcopy(params)
    wrong["model"]["num_classes"] = 3
    with pytest.raises(ValueError, match="num_classes = 2"):
        nodes.train_class_diffusion({}, wrong)


def test_registered_on_request_with_checked_parameters(base_params):
    assert "study_class_multiplication" in ON_REQUEST
    pipelines = register_pipelines()
    assert not set(pipelines["study_class_multiplication"].nodes) & set(pipelines["__default__"].nodes)
    validate_parameters(base_params)
    config = from_params(cm.ClassMultiplicationConfig, base_params["study_class_multiplication"],
                         "study_class_multiplication")
    assert config.model["image_size"] == config.image_size and config.model["num_classes"] == 2
    assert cm.published_rows(config.published)[0].values == {"anatomically_correct": 0.66}
    gpu = load_parameters("gpu")["study_class_multiplication"]
    assert gpu["image_size"] == gpu["model"]["image_size"] == 128


def test_utility_rows_keep_the_synthetic_and_the_copied_additions_apart():
    def record(mode, added, mean):
        return {"score": "f1.lesion", "mode": mode, "added": added, "mean": mean, "low": mean - 0.1,
                "high": mean + 0.1, "delta_vs_real": mean - 0.2, "delta_low": mean - 0.3, "delta_high": mean - 0.1,
                "n_test": 40, "seeds": 3}
    summary = pd.DataFrame([record("real", cm.ADDED_SYNTHETIC, 0.2), record("real+synthetic", cm.ADDED_SYNTHETIC, 0.5),
                            record("real", cm.ADDED_DUPLICATES, 0.2),
                            record("real+synthetic", cm.ADDED_DUPLICATES, 0.3)])
    rows = cm.utility_rows({2.0: summary}, n_train={"real": 100, "x2": 116})
    assert [(r.kind, r.summaries["f1_lesion"]["mean"]) for r in rows] == [("reference", 0.2), ("ours", 0.5),
                                                                          ("reference", 0.3)]
    assert "copies" in rows[2].label and rows[2].summaries["f1_lesion_delta"]["mean"] == pytest.approx(0.1)


def test_the_gate_row_names_every_rule_that_flags():
    from synthmed.protocols.class_multiplication import gate_row

    numbers = {"candidate_count": 308.0, "flagged_count": 3.0, "self_test_recall": 1.0,
               "min_self_test_recall": 0.99, "pixel_threshold": 0.9846, "percentile": 99.9}
    (absolute,) = gate_row(numbers, 0.95)
    assert absolute.summaries["flagged_fraction"]["mean"] == pytest.approx(3 / 308)
    assert "pixel NCC >= 0.9846" in absolute.source and "relative" not in absolute.source
    (both,) = gate_row(numbers | {"relative_threshold": 0.5025}, 0.95)
    assert "pixel NCC >= 0.9846" in both.source and "or relative distance <= 0.5025" in both.source


def _save(models, model_params, folder, class_names=cm.CLASS_NAMES):
    from synthmed.generators.common import write_checksums, write_generator_files
    from synthmed.generators.registry import config_from_params

    folder.mkdir()
    write_generator_files(folder, "ddpm", config_from_params("ddpm", model_params), models,
                          class_names=list(class_names))
    write_checksums(folder)
    return str(folder)


def test_the_study_samples_a_saved_ddpm_of_its_own_setup(cohort, params, tmp_path):
    """pretrained: the saved model is sampled, not retrained; another config or other classes are refused."""
    from synthmed.pipelines.study_class_multiplication import nodes

    store, manifest = cohort
    arrays = nodes.prepare_class_slices(store, manifest, params)
    trained, _ = nodes.train_class_diffusion(arrays, params)
    shared = {**params, "pretrained": _save(trained, params["model"], tmp_path / "demo_ddpm"),
              "training": {**params["training"], "steps": 10_000}}   # would take long if it trained
    models, history = nodes.train_class_diffusion(arrays, shared)
    assert history["pretrained"].tolist() == [shared["pretrained"]]
    for name, module in trained.items():
        for (key, value), loaded in zip(module.state_dict().items(), models[name].state_dict().values(), strict=True):
            assert torch.equal(value.cpu(), loaded.cpu()), (name, key)
    other = {**shared, "model": {**params["model"], "ema_decay": 0.9}}
    with pytest.raises(ValueError, match=r"pretrained .*differs from study_class_multiplication.model in ema_decay"):
        nodes.train_class_diffusion(arrays, other)
    wrong = {**params, "pretrained": _save(trained, params["model"], tmp_path / "planes", ("axial", "coronal"))}
    with pytest.raises(ValueError, match=r"classes \['axial', 'coronal'\]; expected a ddpm with classes"):
        nodes.train_class_diffusion(arrays, wrong)


def test_conf_base_shares_the_demo_ddpm_of_the_same_setup(base_params):
    """conf/base samples the demo's DDPM: the study's model block must be the training pipeline's."""
    from synthmed.generators.registry import config_from_params

    study = base_params["study_class_multiplication"]
    assert study["pretrained"] == "data/06_models/ddpm"
    assert config_from_params("ddpm", study["model"]) == config_from_params("ddpm", base_params["ddpm"]["model"])
    assert load_parameters("gpu")["study_class_multiplication"]["pretrained"] is None
