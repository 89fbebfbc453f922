"""The evaluation's long loops log progress lines (done/total, rate, elapsed, ETA) without a terminal."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from synthmed.core import progress
from synthmed.metrics.features import ClassifierConfig, ConvClassifier, FitConfig, domain_network, fit_classifier
from synthmed.metrics.fidelity import frechet_interval, precision_recall_density_coverage
from synthmed.metrics.utility import UtilityConfig, evaluate_utility
from synthmed.privacy.memorisation import SearchConfig
from tests.privacy.test_memorisation import nearest_neighbours

LINE = r"{what}: {done}/{total} {unit} \([0-9.e+]+ {unit}/s\), elapsed \d+s, ETA \w+"


@pytest.fixture
def slow_clock(monkeypatch):
    """Each reading of the progress clock is 31 s after the last: every update is due for a line."""
    now = [0.0]

    def tick() -> float:
        now[0] += 31.0
        return now[0]

    monkeypatch.setattr(progress.time, "perf_counter", tick)


def _lines(caplog, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{what}: ")]


def test_prdc_bootstrap_features_and_memorisation_log_their_end(caplog):
    caplog.set_level(logging.INFO)
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(20, 4, generator=g), torch.randn(15, 4, generator=g)
    precision_recall_density_coverage(real, fake, k=3, block_bytes=8 * 20 * 4)  # blocks of 4 rows
    assert re.fullmatch(LINE.format(what="PRDC", done=55, total=55, unit="rows"), _lines(caplog, "PRDC")[-1])
    frechet_interval(real, fake, resamples=5)
    assert re.fullmatch(LINE.format(what="FID bootstrap", done=5, total=5, unit="resamples"),
                        _lines(caplog, "FID bootstrap")[-1])
    config = ClassifierConfig(channels=1, num_classes=2, image_px=8, width=4, feature_dim=4)
    network = domain_network(ConvClassifier(config), batch_size=4, device="cpu")
    network(torch.rand(10, 1, 8, 8) * 2 - 1)
    what = "domain encoder (4-d) features"
    assert re.fullmatch(LINE.format(what=re.escape(what), done=10, total=10, unit="images"), _lines(caplog, what)[-1])
    references, queries = torch.rand(6, 1, 8, 8), torch.rand(5, 1, 8, 8)
    nearest_neighbours(queries, references, search=SearchConfig(max_shift_px=0), chunk_size=2)
    assert re.fullmatch(LINE.format(what="memorisation search", done=5, total=5, unit="images"),
                        _lines(caplog, "memorisation search")[-1])


def test_long_loops_log_every_30_seconds(caplog, slow_clock):
    caplog.set_level(logging.INFO)
    references, queries = torch.rand(6, 1, 8, 8), torch.rand(5, 1, 8, 8)
    nearest_neighbours(queries, references, search=SearchConfig(max_shift_px=0), chunk_size=2)
    assert [re.match(r"memorisation search: (\d+)/5", line).group(1) for line in
            _lines(caplog, "memorisation search")] == ["2", "4", "5"]
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(20, 4, generator=g), torch.randn(15, 4, generator=g)
    # Blocks of 1,600 bytes of float64 distances: 10 rows against the 20 real, 13 against the 15 fake.
    precision_recall_density_coverage(real, fake, k=3, block_bytes=8 * 20 * 10)
    assert [int(re.match(r"PRDC: (\d+)/55", line).group(1)) for line in _lines(caplog, "PRDC")] == [
        10, 20, 33, 35, 48, 55]
    config = ClassifierConfig(channels=1, num_classes=2, image_px=8, width=4, feature_dim=4)
    fit_classifier(torch.rand(8, 1, 8, 8) * 2 - 1, torch.arange(8) % 2, config,
                   FitConfig(steps=3, batch_size=4, device="cpu"), seed=0, description="encoder")
    assert [line.split(" steps")[0] for line in _lines(caplog, "encoder training")] == [
        "encoder training: 1/3", "encoder training: 2/3", "encoder training: 3/3"]


def test_utility_logs_each_classifier_and_short_fits_stay_quiet(caplog):
    caplog.set_level(logging.INFO)
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    labels = torch.arange(8) % 2
    config = UtilityConfig(seeds=(0, 1), width=4, feature_dim=4, resamples=10, modes=("synthetic",),
                           fit=FitConfig(steps=2, batch_size=4, device="cpu"))
    evaluate_utility((images, labels), (images, labels), (images, labels), ["a", "b"], config)
    lines = _lines(caplog, "utility classifiers")
    assert [line.split(" classifiers (")[0] for line in lines] == ["utility classifiers: 4/4"]  # real + synthetic
    assert not [r for r in caplog.records if " training: " in r.getMessage()]  # under 30 s: the loop's line only
