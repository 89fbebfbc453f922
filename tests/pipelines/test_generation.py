"""Training, sampling, feature encoders, rebalancing (with the gate) and evaluation on the tiny extraction outputs."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError
from PIL import Image

from synthmed.generators.common import CheckpointError
from synthmed.generators.training import TrainingConfig, resolved_precision
from synthmed.pipelines import (
    evaluation,
    extraction,
    feature_encoders,
    ingestion,
    preprocessing,
    rebalancing,
    release,
    sampling,
    training,
)
from synthmed.pipelines.rebalancing.nodes import plan_rebalancing
from tests.conftest import project_catalog, run, write_source_folder


def _generation_catalog(workdir, source):
    checkpoints = {"run": {"checkpoint_root": str(workdir / "checkpoints")}}
    # ddpm keeps its step-2 checkpoint and samples it too (the gate's fraction flagged per checkpoint)
    ddpm = {**checkpoints, "training": {"keep_checkpoints": 2}, "sampling": {"retained_checkpoints": True}}
    return project_catalog(workdir, source, overrides={
        "ingestion": {"max_rejection_rate": 0.5}, "ddpm": ddpm, "pix2pix": checkpoints, "dcgan": checkpoints,
    })


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("generated")
    write_source_folder(workdir / "source")
    catalog = _generation_catalog(workdir, workdir / "source")
    run(ingestion.create_pipeline() + preprocessing.create_pipeline() + extraction.create_pipeline(), catalog)
    run(training.create_pipeline() + sampling.create_pipeline() + feature_encoders.create_pipeline()
        + rebalancing.create_pipeline() + evaluation.create_pipeline(), catalog)
    return workdir, catalog


def test_every_family_is_trained_saved_and_reported(generated):
    workdir, catalog = generated
    for family in ("ddpm", "pix2pix", "dcgan"):
        generator = catalog.load(f"{family}.generator")
        assert generator.family == family
        history = pd.read_csv(workdir / f"data/08_reporting/training/{family}_history.csv")
        assert history["step"].tolist() == [2, 4] and history.filter(like="loss").notna().all().all()
        assert "images_per_s" not in history  # a figure of the machine: the log and MLflow, not DVC's files
        card = (workdir / f"data/06_models/{family}/MODEL_CARD.md").read_text()
        assert "images_per_s" not in card
        precision = resolved_precision(TrainingConfig(steps=1, batch_size=1))  # auto, as the toy profile
        expected = "fp32" if precision == "no" else precision
        assert f"precision on the training machine: {expected} " in card  # auto: bf16 with AMX or CUDA, else fp32
        for figure in ("samples", "loss"):
            assert (workdir / f"data/08_reporting/training/{family}_{figure}.png").stat().st_size > 1000
        assert len(list((workdir / "checkpoints").glob(f"{family}-*/step-000000004"))) == 1


def test_training_again_on_the_same_data_writes_the_same_bytes(generated, tmp_path):
    """What DVC versions of training (the model folders, the histories) holds no wall-clock figure:
    a rerun with the same data, settings and precision gives the same hashes in dvc.lock."""
    workdir, _ = generated
    shutil.copytree(workdir / "data/05_model_input", tmp_path / "data/05_model_input")
    run(training.create_pipeline(), _generation_catalog(tmp_path, workdir / "source"))
    for folder in [f"data/06_models/{family}" for family in ("ddpm", "pix2pix", "dcgan")]:
        files = sorted(p.relative_to(workdir / folder) for p in (workdir / folder).rglob("*") if p.is_file())
        assert files and "MODEL_CARD.md" in {f.name for f in files}
        for name in files:
            assert (tmp_path / folder / name).read_bytes() == (workdir / folder / name).read_bytes(), (folder, name)
    for history in (workdir / "data/08_reporting/training").glob("*_history.csv"):
        assert (tmp_path / "data/08_reporting/training" / history.name).read_bytes() == history.read_bytes()


def test_sampling_follows_the_plan_with_provenance(generated):
    workdir, catalog = generated
    samples = catalog.load("ddpm.samples")
    provenance = pd.read_csv(workdir / "data/07_model_output/ddpm/provenance.csv")
    assert samples["images"].shape == (3, 1, 16, 16) and len(provenance) == 3
    assert set(provenance["label"]) == {"sagittal"} and (provenance["sampler"] == "ddim").all()
    assert provenance["checkpoint"].str.fullmatch(r"[0-9a-f]{16}").all()
    png = Image.open(io.BytesIO((workdir / "data/07_model_output/ddpm/png/sagittal/000000.png").read_bytes()))
    assert png.mode in ("I;16", "I") and png.size == (16, 16)  # 16-bit grey export
    pix = catalog.load("pix2pix.samples")
    assert pix["images"].shape == (3, 3, 16, 16)
    # Each mask is the recorded real validation patch's mask.
    pix_provenance = pd.read_csv(workdir / "data/07_model_output/pix2pix/provenance.csv")
    # A GAN names no sampler it never ran: one unguided forward pass.
    assert (pix_provenance["sampler"] == "forward").all() and (pix_provenance["steps"] == 1).all()
    assert (pix_provenance["guidance"] == 1.0).all()
    sources = pix_provenance["source_index"]
    real = catalog.load("patches")["masks"]
    for k, j in enumerate(sources):
        assert np.array_equal(np.asarray(pix["masks"][k]), (np.asarray(real[j]) > 0).astype(np.uint8))


def test_rebalanced_dataset_is_balanced_and_readable(generated):
    workdir, _ = generated
    root = workdir / "data/07_model_output/rebalanced"
    labels = pd.read_csv(root / "labels.csv")
    synthetic = labels[labels["is_synthetic"]]
    plan = pd.read_csv(workdir / "data/07_model_output/rebalancing/plan.csv")
    provenance = pd.read_csv(root / "provenance.csv")
    gate = json.loads((workdir / "data/08_reporting/rebalancing_gate.json").read_text())
    # match_majority: every planned class reaches its target, less the shortfall over-generation reports
    counts = labels.groupby("label").size()
    assert len(plan) > 0
    for row in plan.itertuples():
        assert counts[row.label] == row.target - int(gate[f"shortfall.{row.label}"]), row.label
    if gate["shortfall_total"] == 0:
        assert counts.nunique() == 1
    assert synthetic["checkpoint"].notna().all()
    for path in labels["path"]:
        parts = path.split("/")
        assert parts[0] == "images" and (root / path).is_file()  # ImageFolder: images/<class>/<file>
        assert parts[1] == labels.set_index("path").loc[path, "label"]
    card = " ".join((root / "README.md").read_text().split())
    assert gate["gate.self_test_recall"] >= 0.99
    assert (f"recall {gate['gate.self_test_recall']:.3f}" in card
            and f"{int(gate['gate.dropped_count'])} dropped" in card)
    assert {"nn_pixel_similarity", "nn_pixel_neighbour_index", "memorisation_flagged", "published"} <= set(provenance)
    assert len(synthetic) == int(provenance["published"].sum()) == int(gate["published_synthetic"])
    assert f"| sagittal | {int((~labels.is_synthetic & (labels.label == 'sagittal')).sum())} |" in card


def test_rebalancing_plan_strategies_and_errors():
    manifest = pd.DataFrame({"split": ["train"] * 6, "label": ["a", "a", "a", "a", "b", "c"],
                             "class_id": [0, 0, 0, 0, 1, 2]})
    plan = plan_rebalancing(manifest, {"strategy": "match_majority"})
    assert dict(zip(plan["label"], plan["count"])) == {"b": 3, "c": 3}
    plan = plan_rebalancing(manifest, {"strategy": "ratio", "ratio": 0.5})
    assert dict(zip(plan["label"], plan["count"])) == {"b": 1, "c": 1}
    plan = plan_rebalancing(manifest, {"strategy": "target_counts", "target_counts": {"c": 5}})
    assert dict(zip(plan["label"], plan["count"])) == {"c": 4}
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['lesion'\]"):
        plan_rebalancing(manifest, {"strategy": "target_counts", "target_counts": {"lesion": 5}})
    with pytest.raises(ValueError, match="target_counts.c must be a positive integer, got 0"):
        plan_rebalancing(manifest, {"strategy": "target_counts", "target_counts": {"c": 0}})
    with pytest.raises(ValueError, match="strategy must be one of"):
        plan_rebalancing(manifest, {"strategy": "oversample"})


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path, generated):
    from synthmed.datasets.generator import GeneratorDataset

    # Kedro wraps a dataset's error in DatasetError; the cause is the generator's own.
    with pytest.raises(DatasetError, match="No saved generator at") as caught:
        GeneratorDataset(path=str(tmp_path / "nothing")).load()
    assert isinstance(caught.value.__cause__, CheckpointError)
    workdir, _ = generated
    import shutil

    copy = tmp_path / "ddpm"
    shutil.copytree(workdir / "data/06_models/ddpm", copy)
    weights = next(copy.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="does not match its checksum") as caught:
        GeneratorDataset(path=str(copy)).load()
    assert isinstance(caught.value.__cause__, CheckpointError)


def _provenance(n: int) -> pd.DataFrame:
    return pd.DataFrame({"index": range(n), "family": "ddpm", "checkpoint": "0123456789abcdef", "sampler": "ddim",
                         "steps": 3, "guidance": 2.0, "seed": 0, "batch_position": range(n), "condition": "class",
                         "label": "sagittal", "case": "", "source_index": -1})


def test_gate_flags_planted_training_copies_and_publish_drops_or_refuses_them(generated):
    from synthmed.pipelines.rebalancing.nodes import publish_rebalanced
    from synthmed.privacy.memorisation import MemorisationError
    from synthmed.protocols.encoders import split_images
    from synthmed.protocols.evaluation import evaluation_config
    from synthmed.protocols.rebalancing import gate_rebalancing, rebalancing_config

    _, catalog = generated
    slices, manifest = catalog.load("slices"), catalog.load("slice_manifest")
    encoder = catalog.load("slices.feature_encoder")
    params, evaluation_params = catalog.load("params:rebalancing"), catalog.load("params:evaluation")
    size = catalog.load("ddpm.generator").config.image_size
    train, _, _ = split_images(slices, manifest, "train", size)
    rng = np.random.default_rng(0)
    fresh = rng.uniform(-1, 1, size=(4, 1, size, size)).astype(np.float32)  # noise: like no training image
    copies = train[[0, 3, 5]].numpy()
    copies = np.concatenate([copies, copies[:1, :, :, ::-1]])  # and a mirrored copy
    images = np.concatenate([fresh, copies]).astype(np.float32)
    synthetic = {"images": images, "labels": np.full(len(images), 2)}
    decision, numbers, planted = gate_rebalancing(synthetic, _provenance(len(images)), slices, manifest, encoder,
                                                  rebalancing_config({**params, "gate_action": "drop"}),
                                                  evaluation_config(evaluation_params))
    assert decision.keep.tolist() == [True] * 4 + [False] * 4
    assert numbers["gate.dropped_count"] == 4 and numbers["gate.self_test_recall"] >= 0.99
    assert (decision.provenance.loc[4:, "nn_pixel_similarity"] > 0.999).all()
    files = publish_rebalanced(slices, manifest, synthetic, decision, {**params, "gate_action": "drop"},
                               catalog.load("build_info"))
    published = files["labels.csv"]
    assert int(published["is_synthetic"].sum()) == 4
    assert not any(p.endswith(("synthetic_000004.png", "synthetic_000007.png")) for p in files)
    assert "**4 dropped**" in files["README.md"]
    with pytest.raises(MemorisationError, match="4 of 8"):
        gate_rebalancing(synthetic, _provenance(len(images)), slices, manifest, encoder,
                         rebalancing_config({**params, "gate_action": "fail"}), evaluation_config(evaluation_params))


def test_evaluation_writes_metrics_report_comparison_and_reader_kit(generated):
    from synthmed.metrics.report import number, with_interval

    workdir, _ = generated
    metrics = json.loads((workdir / "data/08_reporting/metrics.json").read_text())
    for family in ("ddpm", "pix2pix", "dcgan"):
        for key in ("fidelity.fid", "fidelity.fid_low", "fidelity.fid_n", "fidelity.fid_floor_halves",
                    "fidelity.kid", "fidelity.precision", "fidelity.coverage", "fidelity.diversity_ms_ssim",
                    "memorisation.calibrated", "utility.real.balanced_accuracy",
                    "utility.real_synthetic.balanced_accuracy_delta"):
            assert f"{family}.{key}" in metrics, f"{family}.{key}"
        if metrics[f"{family}.memorisation.calibrated"]:  # tiny 16 px patches can be all alike
            assert metrics[f"{family}.memorisation.self_test_recall"] >= 0.99
    assert metrics["ddpm.memorisation.calibrated"] == 1 and "ddpm.memorisation.flagged_fraction" in metrics
    assert "ddpm.fidelity.fid_floor_neighbour_slices" in metrics  # volumes: the neighbouring-slice floor
    assert "pix2pix.fidelity.paired_ssim" in metrics and "ddpm.fidelity.paired_ssim" not in metrics
    # detectability: dcgan's samples are scored; ddpm draws 3 here, too few for 2 folds (skipped, warned)
    assert {"dcgan.fidelity.detectability_auc", "dcgan.fidelity.detectability_auc_floor"} <= set(metrics)
    assert "ddpm.fidelity.detectability_auc" not in metrics
    # the lesion signal needs lesion and normal classes; the toy cohort's classes are planes
    assert not [k for k in metrics if "lesion_signal" in k]
    assert "rebalanced.gate.self_test_recall" in metrics
    # the gate's fraction flagged per sampled checkpoint: ddpm's step-2 checkpoint and its final generator (step 4)
    by_checkpoint = pd.read_csv(workdir / "data/08_reporting/evaluation/memorisation_by_checkpoint.csv")
    ddpm = by_checkpoint[by_checkpoint["family"] == "ddpm"]
    assert ddpm["step"].tolist() == [2, 4] and ddpm["samples"].tolist() == [3, 3]
    assert ddpm["checkpoint"].nunique() == 2 and (by_checkpoint["family"] == "dcgan").sum() == 1
    for row in ddpm.itertuples():
        assert metrics[f"ddpm.memorisation.flagged_fraction.checkpoint_{row.checkpoint}"] == row.flagged_fraction
    assert metrics["ddpm.memorisation.candidate_count"] == 3  # the family's own samples only
    row = ddpm.iloc[0]
    report = (workdir / "data/08_reporting/report.html").read_text()
    for family, key in (("ddpm", "fid"), ("ddpm", "fid_floor_halves"), ("pix2pix", "paired_psnr"),
                        ("dcgan", "detectability_auc"), ("dcgan", "detectability_auc_floor")):
        fidelity = {k.split(".", 2)[2]: v for k, v in metrics.items() if k.startswith(f"{family}.fidelity.")}
        assert with_interval(fidelity, key) in report, key  # the numbers of metrics.json, rounded to their interval
    assert number(metrics["dcgan.memorisation.pixel_threshold"]) in report
    # headline first: the image grids, then the headline table, then the details
    assert report.index('id="images"') < report.index("data:image/png;base64,") < report.index('id="headline"') \
        < report.index('id="details"')
    headline = json.loads((workdir / "data/08_reporting/headline.json").read_text())
    assert headline["ddpm.fid"] == metrics["ddpm.fidelity.fid"]  # rebalancing.generator: ddpm, in full
    assert {"ddpm.fid_low", "ddpm.fid_floor", "ddpm.kid", "ddpm.precision", "ddpm.recall", "ddpm.utility_delta",
            "dcgan.fid", "dcgan.fid_floor", "gate.self_test_recall", "published.synthetic"} <= set(headline)
    assert "dcgan.kid" not in headline and len(headline) <= 30
    assert "Fraction flagged per family and checkpoint" in report and row.checkpoint in report
    assert report.count("data:image/png;base64,") >= 11  # 3 per family + utility + losses
    comparison = pd.read_csv(workdir / "data/08_reporting/family_comparison.csv")
    assert comparison["family"].tolist() == ["ddpm", "pix2pix", "dcgan"]
    assert comparison.loc[0, "fid"] == pytest.approx(metrics["ddpm.fidelity.fid"])
    assert comparison.loc[2, "detectability_auc"] == pytest.approx(metrics["dcgan.fidelity.detectability_auc"])
    memorised = pd.read_csv(workdir / "data/08_reporting/evaluation/ddpm_memorisation.csv")
    assert {"nn_pixel_similarity", "nn_pixel_neighbour_index", "memorisation_flagged"} <= set(memorised)
    kit = workdir / "data/08_reporting/reader_kit"
    key = pd.read_csv(workdir / "data/08_reporting/reader_key/answer_key.csv")
    assert len(list((kit / "images").glob("*.png"))) == len(key) and set(key["truth"]) == {"real", "synthetic"}
    assert not any("answer" in p.name and p.suffix == ".csv" and "template" not in p.name for p in kit.rglob("*"))
    for figure in ("real_vs_synthetic", "nearest_pairs", "tsne"):
        assert (workdir / f"data/08_reporting/evaluation/ddpm_{figure}.png").stat().st_size > 1000
    # FID against solver steps (evaluation.steps_sweep, conf/test: ddim 2 and 3, dpmsolver++ 2): ddpm only
    sweep = pd.read_csv(workdir / "data/08_reporting/evaluation/ddpm_steps_sweep.csv")
    assert list(zip(sweep["sampler"], sweep["steps"])) == [("ddim", 2), ("ddim", 3), ("dpmsolver++", 2)]
    assert sweep["recommended"].sum() == 1 and metrics["ddpm.steps_sweep.recommended_steps"] in (2, 3)
    assert pd.read_csv(workdir / "data/08_reporting/evaluation/dcgan_steps_sweep.csv").empty
    assert 'id="steps-sweep-ddpm"' in report and 'id="steps-sweep-dcgan"' not in report


def test_release_copies_each_generator_with_its_evaluation_in_the_card(generated):
    """The release pipeline on the evaluated run: a loadable folder per family, its numbers from metrics.json."""
    import yaml

    workdir, catalog = generated
    run(release.create_pipeline(), catalog)
    metrics = json.loads((workdir / "data/08_reporting/metrics.json").read_text())
    for family in ("ddpm", "pix2pix", "dcgan"):
        folder = workdir / f"data/09_release/models/{family}"
        assert catalog.load(f"{family}.released_model").root == folder
        released = catalog.load(f"{family}.generator").__class__  # the same loader reads the released folder
        from synthmed.datasets.generator import GeneratorDataset

        assert isinstance(GeneratorDataset(path=str(folder)).load(), released)
        front = yaml.safe_load((folder / "MODEL_CARD.md").read_text().split("---")[1])
        assert front["evaluation"]["fidelity.fid"] == metrics[f"{family}.fidelity.fid"]
    ddpm = yaml.safe_load((workdir / "data/09_release/models/ddpm/MODEL_CARD.md").read_text().split("---")[1])
    assert len(ddpm["memorisation_gate"]["flagged_fraction_per_checkpoint"]) == 2  # step 2 and the final model
    assert set(ddpm["memorisation_gate"]["flagged_fraction_per_class"]) == {"sagittal"}


def test_mask_rows_condition_on_rows_spread_over_the_split_not_its_first_patient():
    from synthmed.pipelines.sampling.nodes import condition_rows

    # Two validation patients of 40 slices, in manifest order; a plan of 8 masks.
    manifest = pd.DataFrame({"index": np.arange(100), "split": ["train"] * 20 + ["validation"] * 80,
                             "patient_key": ["t"] * 20 + ["a"] * 40 + ["b"] * 40})
    rows = condition_rows(manifest, "validation", seed=0)
    assert sorted(rows.tolist()) == list(range(20, 100))  # every validation row, each once, no other
    assert (rows == condition_rows(manifest, "validation", seed=0)).all()
    assert not (rows == condition_rows(manifest, "validation", seed=1)).all()
    first = manifest.set_index("index").loc[rows[:8], "patient_key"]
    assert set(first) == {"a", "b"}


def test_a_volume_source_on_a_2d_pipeline_is_refused_by_name():
    # run.source accepts volumes (the volume families'); the 2D pipelines do not wire them and
    # used to fail with a bare KeyError: 'volumes'.
    from types import SimpleNamespace

    import yaml

    from synthmed.pipelines.evaluation.nodes import prepare_evaluation
    from synthmed.pipelines.sampling.nodes import sample_generator
    from synthmed.pipelines.training.nodes import train_generator
    from tests.conftest import PROJECT_ROOT

    ddpm = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_training.yml").read_text())["ddpm"]
    run_params = {**ddpm["run"], "source": "volumes"}
    message = (r"ddpm\.run\.source is 'volumes', but the {} pipeline reads only "
               r"\['slices', 'patches', 'lesion_patches'\]\. The sources \['volumes'\] feed the volume families, "
               r"which study_3d trains and samples")
    with pytest.raises(ValueError, match=message.format("training")):
        train_generator(*[None] * 6, "ddpm", ddpm["model"], ddpm["training"], run_params)
    with pytest.raises(ValueError, match=message.format("sampling")):
        sample_generator(SimpleNamespace(family="ddpm"), None, *[None] * 6, run_params, ddpm["sampling"])
    with pytest.raises(ValueError, match=message.format("evaluation")):
        prepare_evaluation(None, None, *[None] * 9, "ddpm", run_params, {}, None, None)
