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
    """``n`` real rows of every class in turn (axial, coronal, sagittal, axial, ...)."""
    rng = np.random.default_rng(0)
    masks = np.zeros((n, 1, 16, 16), np.uint8)
    masks[:, :, 4:10, 4:10] = 1
    return {"images": rng.uniform(-1, 1, (n, 1, 16, 16)).astype(np.float32), "masks": masks,
            "labels": np.arange(n, dtype=np.int64) % len(CLASSES)}


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
                                real_indices=np.array([0, 3]))  # the axial rows
    outside = real["masks"][[0, 3]] == 0
    np.testing.assert_allclose(result.images[outside], real["images"][[0, 3]][outside], atol=1e-6)


def test_a_labelled_mask_row_conditions_on_that_class_only(ddpm):
    """``{condition: mask, label: X}`` takes the masks of X's rows, in order and in turn; no label takes
    every row's and each image keeps its source's class."""
    spec, _, _ = ddpm
    config = config_from_params("ddpm", {**TINY["ddpm"], "conditioning": ["mask"]})  # rows without a label
    models = spec.build(config, 0).eval()
    real = _real(6)  # labels 0 1 2 0 1 2
    order = np.array([5, 4, 3, 2, 1, 0])
    plan = _plan([("mask", "axial", 3, ""), ("mask", "sagittal", 2, ""), ("mask", "", 3, "")])
    result = generate_from_plan(spec, config, models, plan, CLASSES, SamplerSpec("ddim", steps=1), seed=0,
                                batch_size=4, checkpoint="x", real=real, real_indices=order)
    sources = result.provenance["source_index"].tolist()
    assert sources[:3] == [3, 0, 3]  # axial rows 3 and 0 (the order given), then again
    assert sources[3:5] == [5, 2]  # sagittal
    assert sources[5:] == [5, 4, 3]  # no label: every row, from the front
    assert result.labels.tolist() == [0, 0, 0, 2, 2, 2, 1, 0]
    np.testing.assert_array_equal(result.labels, real["labels"][sources])


def test_a_labelled_mask_row_without_such_rows_names_the_class_and_counts(ddpm):
    spec, _, _ = ddpm
    config = config_from_params("ddpm", {**TINY["ddpm"], "conditioning": ["mask"]})
    models = spec.build(config, 0).eval()
    real = _real(6)
    with pytest.raises(ValueError, match=r"row 0: no 'coronal' rows among the 2 real rows .*'axial': 1, "
                                         r"'coronal': 0, 'sagittal': 1"):
        generate_from_plan(spec, config, models, _plan([("mask", "coronal", 1, "")]), CLASSES, SamplerSpec("ddim", 1),
                           seed=0, batch_size=1, checkpoint="x", real=real, real_indices=np.array([0, 2]))
    with pytest.raises(ValueError, match=r"row 0: class 'lesion' is unknown"):
        generate_from_plan(spec, config, models, _plan([("mask", "lesion", 1, "")]), CLASSES, SamplerSpec("ddim", 1),
                           seed=0, batch_size=1, checkpoint="x", real=real, real_indices=np.arange(6))


def test_a_gans_provenance_records_one_unguided_forward_pass_whatever_the_sampler():
    """GANs ignore the sampler; their rows must not claim the DDIM steps or guidance they were handed."""
    config = config_from_params("dcgan", TINY["dcgan"])
    spec = get_family("dcgan")
    models = spec.build(config, 0).eval()
    plan = _plan([("class", "axial", 2, ""), ("class", "sagittal", 1, "")])
    drawn = generate_from_plan(spec, config, models, plan, CLASSES, SamplerSpec("ddim", steps=50, guidance_scale=2.0),
                               seed=0, batch_size=3, checkpoint="abc")
    provenance = drawn.provenance
    assert provenance["sampler"].tolist() == ["forward"] * 3
    assert provenance["steps"].tolist() == [1, 1, 1] and provenance["guidance"].tolist() == [1.0, 1.0, 1.0]
