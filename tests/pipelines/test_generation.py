"""Training, sampling and rebalancing pipelines on the tiny extraction outputs."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthmed.generators.common import CheckpointError
from synthmed.pipelines import extraction, ingestion, preprocessing, rebalancing, sampling, training
from synthmed.pipelines.rebalancing.nodes import plan_rebalancing
from tests.conftest import project_catalog, run, write_source_folder


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("generated")
    write_source_folder(workdir / "source")
    checkpoints = {"run": {"checkpoint_root": str(workdir / "checkpoints")}}
    catalog = project_catalog(workdir, workdir / "source", overrides={
        "ingestion": {"max_rejection_rate": 0.5}, "ddpm": checkpoints, "pix2pix": checkpoints, "dcgan": checkpoints,
    })
    run(ingestion.create_pipeline() + preprocessing.create_pipeline() + extraction.create_pipeline(), catalog)
    run(training.create_pipeline() + sampling.create_pipeline() + rebalancing.create_pipeline(), catalog)
    return workdir, catalog


def test_every_family_is_trained_saved_and_reported(generated):
    workdir, catalog = generated
    for family in ("ddpm", "pix2pix", "dcgan"):
        generator = catalog.load(f"{family}.generator")
        assert generator.family == family
        history = pd.read_csv(workdir / f"data/08_reporting/training/{family}_history.csv")
        assert history["step"].tolist() == [2, 4] and (history["images_per_s"] > 0).all()
        for figure in ("samples", "loss"):
            assert (workdir / f"data/08_reporting/training/{family}_{figure}.png").stat().st_size > 1000
        assert (workdir / "checkpoints").glob(f"{family}-*/step-000000004")


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
    sources = pd.read_csv(workdir / "data/07_model_output/pix2pix/provenance.csv")["source_index"]
    real = catalog.load("patches")["masks"]
    for k, j in enumerate(sources):
        assert np.array_equal(np.asarray(pix["masks"][k]), (np.asarray(real[j]) > 0).astype(np.uint8))


def test_rebalanced_dataset_is_balanced_and_readable(generated):
    workdir, _ = generated
    root = workdir / "data/07_model_output/rebalanced"
    labels = pd.read_csv(root / "labels.csv")
    per_class = labels.groupby("label").size()
    assert per_class.nunique() == 1  # match_majority: every class reaches the majority count
    synthetic = labels[labels["is_synthetic"]]
    assert len(synthetic) and synthetic["checkpoint"].notna().all()
    for path in labels["path"]:
        parts = path.split("/")
        assert parts[0] == "train" and (root / path).is_file()  # ImageFolder: root/<class>/<file>
        assert parts[1] == labels.set_index("path").loc[path, "label"]
    card = " ".join((root / "README.md").read_text().split())
    assert "no memorisation gate has checked this dataset" in card
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

    with pytest.raises(Exception, match="No saved generator at"):
        GeneratorDataset(path=str(tmp_path / "nothing")).load()
    workdir, _ = generated
    import shutil

    copy = tmp_path / "ddpm"
    shutil.copytree(workdir / "data/06_models/ddpm", copy)
    weights = next(copy.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(Exception, match="does not match its checksum"):
        GeneratorDataset(path=str(copy)).load()
    assert issubclass(CheckpointError, RuntimeError)
