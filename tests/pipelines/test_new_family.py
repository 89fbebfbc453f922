"""Adding a generator family is one module, one registry line, its name and one parameter block.

A toy family (DCGAN's implementation under a new name, so the test needs no new model code)
is registered in ``synthmed.generators.registry.FAMILIES`` and ``generators.names.FAMILY_NAMES``
and given a parameter block; the
training, sampling, rebalancing and evaluation pipelines are then built and run unchanged,
and the toy family must appear in every output a family appears in.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from synthmed.generators import dcgan, names, registry
from tests.conftest import _merge, project_catalog, run, toy_parameters, write_source_folder


@pytest.mark.slow
def test_a_registered_toy_family_runs_through_training_sampling_and_evaluation(tmp_path, monkeypatch):
    from synthmed.pipelines import (
        evaluation,
        extraction,
        feature_encoders,
        ingestion,
        preprocessing,
        rebalancing,
        sampling,
        training,
    )
    from synthmed.pipelines.evaluation import pipeline as evaluation_wiring
    from synthmed.pipelines.rebalancing import pipeline as rebalancing_wiring
    from synthmed.pipelines.sampling import pipeline as sampling_wiring
    from synthmed.pipelines.training import pipeline as training_wiring

    toy = dataclasses.replace(dcgan.FAMILY, name="toy")
    monkeypatch.setitem(registry.FAMILIES, "toy", toy)
    monkeypatch.setitem(registry.ALL_FAMILIES, "toy", toy)  # the image and volume families, looked up by name
    # ... and its name in generators.names (importable without torch), which each pipeline's wiring imports.
    with_toy = (*names.FAMILY_NAMES, "toy")
    for module in (names, training_wiring, sampling_wiring, rebalancing_wiring, evaluation_wiring):
        monkeypatch.setattr(module, "FAMILY_NAMES", with_toy)
    checkpoints = {"run": {"checkpoint_root": str(tmp_path / "checkpoints")}}
    toy_block = {**toy_parameters()["dcgan"], "family": "toy"}  # the one parameter block
    write_source_folder(tmp_path / "source")
    catalog = project_catalog(tmp_path, tmp_path / "source", overrides={
        "ingestion": {"max_rejection_rate": 0.5}, "toy": _merge(toy_block, checkpoints), "ddpm": checkpoints,
        "pix2pix": checkpoints, "dcgan": checkpoints,
    })

    run(ingestion.create_pipeline() + preprocessing.create_pipeline() + extraction.create_pipeline(), catalog)
    generation = (training.create_pipeline() + sampling.create_pipeline() + feature_encoders.create_pipeline()
                  + rebalancing.create_pipeline() + evaluation.create_pipeline())
    assert ({"toy.train_generator", "toy.sample_generator", "toy.prepare_evaluation"}
            <= {n.name for n in generation.nodes})
    run(generation, catalog)

    generator = catalog.load("toy.generator")
    assert generator.family == "toy"
    assert (tmp_path / "data/06_models/toy/generator.json").is_file()
    assert len(catalog.load("toy.samples")["images"]) > 0
    metrics = json.loads((tmp_path / "data/08_reporting/metrics.json").read_text())
    assert "toy.fidelity.fid" in metrics and "toy.utility.real.balanced_accuracy" in metrics
    comparison = pd.read_csv(tmp_path / "data/08_reporting/family_comparison.csv")
    assert comparison["family"].tolist() == list(registry.FAMILIES)
    assert "toy" in (tmp_path / "data/08_reporting/report.html").read_text()
