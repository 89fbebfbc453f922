"""Sampling plans: validation, reproducibility, provenance, inpainting cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthmed.generators.base import SamplerSpec
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.sampling import generate_from_plan, validate_plan
from tests.generators.test_contract import TINY

CLASSES = ["axial", "coronal", "sagittal"]


@pytest.fixture(scope="module")
def ddpm():
    config = config_from_params("ddpm", TINY["ddpm"])
    spec = get_family("ddpm")
    models = spec.build(config, 0).eval()
    return spec, config, models


def _real(n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, 1, 16, 16), np.uint8)
    masks[:, :, 4:10, 4:10] = 1
    return {"images": rng.uniform(-1, 1, (n, 1, 16, 16)).astype(np.float32), "masks": masks,
            "labels": np.zeros(n, np.int64)}


def _plan(rows):
    return pd.DataFrame(rows, columns=["condition", "label", "count", "case"])


def test_plan_errors_name_the_value(ddpm):
    _, config, _ = ddpm
    with pytest.raises(ValueError, match=r"class 'lesion' is unknown; expected one of \['axial'"):
        validate_plan(_plan([("class", "lesion", 3, "")]), CLASSES, config)
    with pytest.raises(ValueError, match="count must be a positive integer, got 0"):
        validate_plan(_plan([("class", "axial", 0, "")]), CLASSES, config)
    with pytest.raises(ValueError, match="inpainting case 'everywhere'"):
        validate_plan(_plan([("inpaint", "axial", 1, "everywhere")]), CLASSES, config)
    unconditional = config_from_params("ddpm", {**TINY["ddpm"], "conditioning": ["class"]})
    with pytest.raises(ValueError, match="not trained for inpainting"):
        validate_plan(_plan([("inpaint", "axial", 1, "inside_mask")]), CLASSES, unconditional)


def test_same_plan_and_seed_give_the_same_images_and_provenance(ddpm):
    spec, config, models = ddpm
    plan = _plan([("mask", "axial", 3, ""), ("inpaint", "sagittal", 2, "inside_mask"),
                  ("inpaint", "coronal", 1, "outside_box"), ("inpaint", "axial", 1, "new_lesion")])
    kwargs = dict(seed=5, batch_size=3, checkpoint="abc", real=_real(), real_indices=np.arange(4))
    sampler = SamplerSpec("ddim", steps=2)
    first = generate_from_plan(spec, config, models, plan, CLASSES, sampler, **kwargs)
    second = generate_from_plan(spec, config, models, plan, CLASSES, sampler, **kwargs)
    assert first.images.shape == (7, 1, 16, 16)
    assert np.array_equal(first.images, second.images)
    assert first.provenance["seed"].tolist() == [5, 5, 5, 6, 6, 6, 7]
    assert first.provenance["batch_position"].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert (first.provenance["checkpoint"] == "abc").all()
    # new_lesion: the host image is the next real image, not the mask's own.
    assert first.provenance["source_index"].iloc[-1] != first.provenance["source_index"].iloc[-2]


def test_inpainting_keeps_the_known_region(ddpm):
    spec, config, models = ddpm
    real = _real()
    result = generate_from_plan(spec, config, models, _plan([("inpaint", "axial", 2, "inside_mask")]), CLASSES,
                                SamplerSpec("ddim", steps=2), seed=0, batch_size=2, checkpoint="x", real=real,
                                real_indices=np.arange(2))
    outside = real["masks"][:2] == 0
    np.testing.assert_allclose(result.images[outside], real["images"][:2][outside], atol=1e-6)
