"""Sampling throughput options: on the CPU the ``auto`` choices give the images of before; the batch-size
probe backs off on out-of-memory; provenance records the choice; the parameters parse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from synthmed.core.config import from_params
from synthmed.generators import precision
from synthmed.generators.base import SamplerSpec
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.sampling import (
    THROUGHPUT_COLUMNS,
    SamplingConfig,
    ThroughputConfig,
    generate_from_plan,
    largest_batch_that_runs,
    prepare_models,
    resolve_throughput,
)
from tests.generators.test_contract import TINY

CLASSES = ["axial", "coronal", "sagittal"]
# channels-last weights on the CPU reorder the convolutions' sums: float32 rounding, amplified by guidance
# (w = 2) over the steps (measured 4.2e-4 at most on this tiny model).
CHANNELS_LAST_ATOL = 2e-3


@pytest.fixture(scope="module")
def ddpm():
    config = config_from_params("ddpm", {**TINY["ddpm"], "conditioning": ["class"]})
    spec = get_family("ddpm")
    return spec, config, spec.build(config, 0).eval()


def _plan(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame([("class", "axial", n, ""), ("class", "sagittal", 2, "")],
                        columns=["condition", "label", "count", "case"])


def _sample(ddpm, *, batch_size, throughput=None):
    spec, config, models = ddpm
    return generate_from_plan(spec, config, models, _plan(), CLASSES, SamplerSpec("ddim", 3, guidance_scale=2.0),
                              seed=3, batch_size=batch_size, checkpoint="c", throughput=throughput)


@pytest.fixture
def no_native_bf16(monkeypatch):
    """A CPU without AMX-BF16 (where ``auto`` precision is fp32), whatever this machine has."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the auto choices are the CPU's only without CUDA")
def test_auto_options_on_cpu_give_the_images_of_a_fixed_batch_bit_for_bit(ddpm, no_native_bf16):
    before = _sample(ddpm, batch_size=4, throughput=ThroughputConfig(device="cpu", precision="fp32",
                                                                        channels_last=False))
    auto = _sample(ddpm, batch_size="auto", throughput=ThroughputConfig(cpu_batch_size=4))
    assert np.array_equal(before.images, auto.images)
    row = auto.provenance.iloc[0]
    assert (row["batch_size"], row["device"], row["precision"], row["channels_last"], row["compiled"]) == \
        (4, "cpu", "fp32", False, False)
    assert auto.provenance["seed"].tolist() == [3, 3, 3, 3, 4, 4, 4]  # batches of cpu_batch_size
    # the default options (no throughput given) are the same choice
    assert np.array_equal(_sample(ddpm, batch_size=4).images, before.images)


def test_channels_last_on_cpu_is_within_rounding_and_recorded(ddpm):
    plain = _sample(ddpm, batch_size=4, throughput=ThroughputConfig(device="cpu", precision="fp32",
                                                                       channels_last=False))
    last = _sample(ddpm, batch_size=4, throughput=ThroughputConfig(device="cpu", precision="fp32",
                                                                      channels_last=True))
    np.testing.assert_allclose(last.images, plain.images, atol=CHANNELS_LAST_ATOL)
    assert last.provenance["channels_last"].all()


def test_bf16_autocast_on_cpu_runs_and_is_recorded(ddpm):
    result = _sample(ddpm, batch_size=7, throughput=ThroughputConfig(device="cpu", precision="bf16"))
    assert result.images.dtype == np.float32 and np.isfinite(result.images).all()
    assert (result.provenance["precision"] == "bf16").all()


def test_prepare_models_leaves_the_callers_modules_alone(ddpm):
    _, _, models = ddpm
    same = resolve_throughput(ThroughputConfig(device="cpu"), 8)
    assert prepare_models(models, same) is models
    converted = prepare_models(models, resolve_throughput(ThroughputConfig(device="cpu", channels_last=True), 8))
    assert converted is not models
    # a weight whose two layouts differ (a 1-channel or 1x1 kernel is contiguous in both)
    weight, original = next((a, b) for a, b in zip(converted.parameters(), models.parameters())
                            if a.ndim == 4 and a.shape[1] > 1 and a.shape[2] > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not original.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_is_bf16_only_where_the_cpu_has_amx_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert resolve_throughput(ThroughputConfig(device="cpu"), 4).precision == expected
    # an explicit choice is kept whatever the CPU has
    assert resolve_throughput(ThroughputConfig(device="cpu", precision="fp32"), 4).precision == "fp32"


def test_native_bf16_is_read_from_torchs_cpu_capabilities(monkeypatch):
    for capabilities, expected in (({"amx_bf16": True, "avx512_bf16": True}, True),
                                   ({"amx_bf16": False, "avx512_bf16": True}, False), ({}, False)):
        precision.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda c=capabilities: c)
        assert precision.cpu_has_native_bf16() is expected
    precision.cpu_has_native_bf16.cache_clear()


def test_auto_batch_on_cpu_is_the_configured_default_and_volumes_keep_their_format(no_native_bf16):
    chosen = resolve_throughput(ThroughputConfig(device="cpu", cpu_batch_size=12, channels_last=True), "auto",
                                spatial_dims=3, probe=lambda b: pytest.fail("the CPU needs no probe"))
    assert chosen.batch_size == 12 and not chosen.channels_last and chosen.precision == "fp32"


def test_the_probe_halves_the_batch_until_it_fits():
    tried = []

    def probe(batch: int) -> None:
        tried.append(batch)
        if batch > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert largest_batch_that_runs(probe, 256) == 32
    assert tried == [256, 128, 64, 32]

    def broken(batch: int) -> None:
        raise RuntimeError("shape mismatch")  # not a memory error: passes through at once

    with pytest.raises(RuntimeError, match="shape mismatch"):
        largest_batch_that_runs(broken, 64)

    def never(batch: int) -> None:
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        largest_batch_that_runs(never, 4)


def test_sampling_parameters_parse_auto_and_reject_bad_values():
    config = from_params(SamplingConfig, {"plan": [], "batch_size": "auto", "throughput": {"precision": "bf16"}},
                         "ddpm.sampling")
    assert config.batch_size == "auto"
    assert from_params(ThroughputConfig, config.throughput, "ddpm.sampling.throughput").precision == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        ThroughputConfig(precision="fp8")
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda"):
        ThroughputConfig(device="tpu")
    with pytest.raises(ValueError, match="batch_size"):
        from_params(SamplingConfig, {"plan": [], "batch_size": "big"}, "ddpm.sampling")
    assert set(THROUGHPUT_COLUMNS) <= set(_columns())


def _columns() -> list[str]:
    from synthmed.generators.sampling import PROVENANCE_COLUMNS

    return PROVENANCE_COLUMNS
