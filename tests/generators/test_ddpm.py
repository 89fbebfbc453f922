"""DDPM family: configuration, conditioning, the training step and the samplers (tiny CPU models)."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
import torch
from torch import nn

from synthmed.core.config import from_params
from synthmed.generators import ddpm
from synthmed.generators.base import Conditions, SamplerSpec, StepContext

SIZE, CLASSES = 16, 3


def _config(**overrides) -> ddpm.Config:
    values = {"image_size": SIZE, "channels": 1, "num_classes": CLASSES, "block_out_channels": (8, 16),
              "attention": False, "train_timesteps": 10}
    return ddpm.Config(**{**values, **overrides})


def _context(seed: int = 0) -> StepContext:
    return StepContext(
        backward=lambda loss: loss.backward(),
        clip=lambda params: torch.nn.utils.clip_grad_norm_(params, 1.0),
        generator=torch.Generator().manual_seed(seed),
        autocast=contextlib.nullcontext,
        step=0,
    )


def _batch(n: int = 4, channels: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.rand((n, channels, SIZE, SIZE), generator=g) * 2 - 1,
        "labels": torch.arange(n) % CLASSES,
        "masks": (torch.rand((n, 1, SIZE, SIZE), generator=g) > 0.5).float(),
    }


def _left_keep(n: int) -> torch.Tensor:
    keep = torch.zeros((n, 1, SIZE, SIZE))
    keep[..., : SIZE // 2] = 1.0
    return keep


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"conditioning": ("class", "text")}, r"conditioning must be distinct values from .*'text'"),
        ({"conditioning": ("mask", "mask")}, r"conditioning must be distinct"),
        ({"conditioning": ("class",), "num_classes": 0}, r"includes 'class' but num_classes is 0"),
        ({"image_size": 10, "block_out_channels": (8, 16, 16)}, r"image_size must be a positive multiple of 4.*got 10"),
        ({"block_out_channels": ()}, r"block_out_channels must be a non-empty"),
        ({"beta_schedule": "cosine"}, r"beta_schedule must be one of \['linear', 'squaredcos_cap_v2'\], got 'cosine'"),
        ({"prediction_type": "sample"}, r"prediction_type must be one of .*got 'sample'"),
        ({"label_dropout": 1.5}, r"label_dropout must be in \[0, 1\], got 1.5"),
        ({"min_snr_gamma": 0.0}, r"min_snr_gamma must be > 0 or null"),
        ({"learning_rate": 0.0}, r"learning_rate must be > 0, got 0.0"),
        ({"adam_betas": (0.9,)}, r"adam_betas must be two numbers"),
        ({"train_timesteps": 1}, r"train_timesteps must be >= 2, got 1"),
        ({"channels": 0}, r"channels must be >= 1, got 0"),
        ({"grad_clip_norm": 0.0}, r"grad_clip_norm must be > 0"),
    ],
)
def test_config_rejects_bad_values_naming_them(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_config_from_yaml_lists_round_trips_through_json():
    config = from_params(ddpm.Config, {"conditioning": ["class", "mask"], "num_classes": 2,
                                       "block_out_channels": [8, 16], "adam_betas": [0.9, 0.99]}, "ddpm.model")
    assert config.conditioning == ("class", "mask") and config.block_out_channels == (8, 16)
    assert config.needed_conditions() == frozenset({"labels", "masks"})
    again = from_params(ddpm.Config, json.loads(json.dumps(dataclasses.asdict(config))), "generator.json")
    assert again == config


# ------------------------------------------------------------------ the network


@pytest.mark.parametrize(
    ("channels", "conditioning", "in_channels"),
    [(1, (), 1), (1, ("mask",), 2), (1, ("inpaint",), 3), (1, ("class", "mask", "inpaint"), 4),
     (3, ("mask", "inpaint"), 8)],
)
def test_in_channels_follow_the_conditioning(channels, conditioning, in_channels):
    config = _config(channels=channels, conditioning=conditioning)
    models = ddpm.build(config, 0)
    unet = models["unet"]
    assert unet.config.in_channels == config.in_channels == in_channels
    assert unet.config.out_channels == channels
    expected_embeds = CLASSES + 1 if "class" in conditioning else None  # + the null label
    assert unet.config.num_class_embeds == expected_embeds


def test_build_is_seeded_and_the_ema_copy_is_frozen():
    config = _config(block_out_channels=(12, 24), attention=True)  # gcd 12: GroupNorm of 6 groups
    models, again, other = ddpm.build(config, 0), ddpm.build(config, 0), ddpm.build(config, 1)
    assert set(models) == {"unet", "unet_ema"}
    assert models["unet"].config.norm_num_groups == 6
    assert "AttnDownBlock2D" in models["unet"].config.down_block_types
    pairs = list(zip(models["unet"].parameters(), again["unet"].parameters()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not all(torch.equal(a, b) for a, b in zip(models["unet"].parameters(), other["unet"].parameters()))
    assert all(torch.equal(a, b) for a, b in zip(models["unet"].parameters(), models["unet_ema"].parameters()))
    assert not any(p.requires_grad for p in models["unet_ema"].parameters())
    optimizers = ddpm.make_optimizers(models, config)
    assert set(optimizers) == {"unet"}
    optimised = {id(p) for group in optimizers["unet"].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in models["unet"].parameters()}


# ------------------------------------------------------------------ training


def _labels_seen_by_unet(label_dropout: float) -> torch.Tensor:
    config = _config(conditioning=("class",), label_dropout=label_dropout)
    models = ddpm.build(config, 0)
    seen = []
    models["unet"].register_forward_pre_hook(lambda _m, _a, kwargs: seen.append(kwargs["class_labels"]),
                                             with_kwargs=True)
    ddpm.train_step(models, ddpm.make_optimizers(models, config), _batch(n=32), config, _context())
    return seen[0]


def test_label_dropout_replaces_labels_by_the_null_class():
    assert (_labels_seen_by_unet(1.0) == CLASSES).all()
    kept = _labels_seen_by_unet(0.0)
    assert torch.equal(kept, torch.arange(32) % CLASSES)


def test_train_step_updates_the_unet_but_not_the_ema():
    config = _config(conditioning=("class", "mask", "inpaint"), prediction_type="v_prediction")
    models = ddpm.build(config, 0)
    ema_before = [p.clone() for p in models["unet_ema"].parameters()]
    unet_before = [p.clone() for p in models["unet"].parameters()]
    losses = ddpm.train_step(models, ddpm.make_optimizers(models, config), _batch(), config, _context())
    assert set(losses) == {"loss"} and losses["loss"] > 0
    assert all(torch.equal(a, b) for a, b in zip(ema_before, models["unet_ema"].parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(unet_before, models["unet"].parameters()))


def test_train_step_rejects_a_batch_without_needed_masks():
    config = _config(conditioning=("mask",))
    models = ddpm.build(config, 0)
    batch = {k: v for k, v in _batch().items() if k != "masks"}
    with pytest.raises(ValueError, match=r"batch\['masks'\] with shape \(4, 1, 16, 16\), got None"):
        ddpm.train_step(models, ddpm.make_optimizers(models, config), batch, config, _context())


def test_train_step_rejects_the_null_label_in_a_batch():
    config = _config(conditioning=("class",))
    models = ddpm.build(config, 0)
    batch = {**_batch(n=2), "labels": torch.tensor([1, CLASSES])}
    with pytest.raises(ValueError, match=r"batch\['labels'\] must lie in \[0, 3\), got 3"):
        ddpm.train_step(models, ddpm.make_optimizers(models, config), batch, config, _context())


def test_random_keep_holes_are_rectangles_or_the_mask():
    config = _config(image_size=32, conditioning=("inpaint",))
    g = torch.Generator().manual_seed(0)
    images = torch.zeros((64, 1, 32, 32))
    keep = ddpm.random_keep({"images": images}, config, g)
    assert keep.shape == (64, 1, 32, 32) and set(keep.unique().tolist()) <= {0.0, 1.0}
    hole = 1.0 - keep.mean(dim=(1, 2, 3))
    assert (hole > 0.2).all() and (hole < 0.8).all()  # 25-75 % up to pixel rounding
    rows, cols = (keep[:, 0] == 0).any(dim=2), (keep[:, 0] == 0).any(dim=1)
    assert torch.equal((keep[:, 0] == 0), rows[:, :, None] & cols[:, None, :])  # a rectangle
    masks = (torch.rand((64, 1, 32, 32), generator=g) > 0.5).float()
    keep = ddpm.random_keep({"images": images, "masks": masks}, config, g)
    from_mask = (keep == 1.0 - masks).flatten(1).all(dim=1)
    assert 10 < int(from_mask.sum()) < 54  # about half of 64 fill the mask


# ------------------------------------------------------------------ sampling


@pytest.fixture(scope="module")
def conditional() -> tuple[ddpm.Config, nn.ModuleDict]:
    config = _config(conditioning=("class", "mask", "inpaint"))
    return config, ddpm.build(config, 0)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmsolver++"])
def test_every_sampler_runs_and_is_deterministic(name):
    config = _config(conditioning=("class",))
    models = ddpm.build(config, 0)
    conditions = Conditions(n=2, labels=torch.tensor([0, 2]))
    sampler = SamplerSpec(name=name, steps=3, guidance_scale=2.0, eta=0.5)
    first = ddpm.sample(models, config, conditions, sampler, torch.Generator().manual_seed(7))
    second = ddpm.sample(models, config, conditions, sampler, torch.Generator().manual_seed(7))
    other = ddpm.sample(models, config, conditions, sampler, torch.Generator().manual_seed(8))
    assert first.shape == (2, 1, SIZE, SIZE) and first.dtype == torch.float32
    assert first.min() >= -1.0 and first.max() <= 1.0
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_guidance_scale_changes_class_conditional_samples():
    config = _config(conditioning=("class",))
    models = ddpm.build(config, 0)
    conditions = Conditions(n=2, labels=torch.tensor([0, 1]))
    plain, guided = (
        ddpm.sample(models, config, conditions, SamplerSpec(name="ddim", steps=3, guidance_scale=w),
                    torch.Generator().manual_seed(0))
        for w in (1.0, 3.0)
    )
    assert not torch.allclose(plain, guided)


@pytest.mark.parametrize("conditioning", [("class", "mask", "inpaint"), ()])  # () = RePaint on a plain model
def test_inpainting_returns_the_known_pixels_exactly(conditioning):
    config = _config(conditioning=conditioning)
    models = ddpm.build(config, 0)
    batch = _batch(n=2)
    keep = _left_keep(2)
    conditions = Conditions(n=2, labels=batch["labels"], masks=batch["masks"], images=batch["images"], keep=keep)
    out = ddpm.sample(models, config, conditions, SamplerSpec(name="ddpm", steps=4), torch.Generator().manual_seed(0))
    known = keep.bool().expand_as(out)
    assert torch.equal(out[known], batch["images"][known])
    assert not torch.equal(out[~known], batch["images"][~known])


def test_sample_validates_the_conditions(conditional):
    config, models = conditional
    batch = _batch(n=2)
    keep = _left_keep(2)
    ok = {"labels": batch["labels"], "masks": batch["masks"], "images": batch["images"], "keep": keep}
    sampler = SamplerSpec(name="ddim", steps=2)

    def draw(**changes):
        return ddpm.sample(models, config, Conditions(n=2, **{**ok, **changes}), sampler, torch.Generator())

    with pytest.raises(ValueError, match="Conditions.labels is missing"):
        draw(labels=None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got 3"):
        draw(labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="Conditions.masks is missing"):
        draw(masks=None)
    with pytest.raises(ValueError, match="inpainting model: Conditions.images and Conditions.keep are missing"):
        draw(images=None, keep=None)
    with pytest.raises(ValueError, match=r"Conditions.masks with shape \(2, 1, 16, 16\), got \(2, 1, 8, 8\)"):
        draw(masks=torch.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"Conditions.keep with shape \(2, 1, 16, 16\), got \(2, 3, 16, 16\)"):
        draw(keep=torch.ones((2, 3, SIZE, SIZE)))
    with pytest.raises(ValueError, match="keep must contain only 0 and 1"):
        draw(keep=keep * 0.5)
    with pytest.raises(ValueError, match="steps must be <= train_timesteps=10, got 11"):
        ddpm.sample(models, config, Conditions(n=2, **ok), SamplerSpec(name="ddpm", steps=11), torch.Generator())


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmsolver++"])
def test_every_sampler_clips_its_x0_estimate_to_the_data_range(name):
    """At the first steps x0 = (x_t - sigma eps) / alpha divides by alpha ~ 0.006 (cosine schedule).

    An eps model trained for minutes is off by far more than that allows: DPM-Solver++ without
    the clip drew noise where DDIM drew brains (benchmarks/RESULTS.md, "Samplers on conf/base's DDPM").
    """
    config = _config(train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    scheduler = ddpm.sampling_scheduler(config, SamplerSpec(name=name, steps=25))
    x = 3 * torch.randn((2, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    t = scheduler.timesteps[0]
    out = scheduler.step(torch.zeros_like(x), t, x, generator=torch.Generator().manual_seed(0))
    # DPM-Solver++ keeps its x0 estimates (it extrapolates from them); the others return theirs.
    x0 = scheduler.model_outputs[-1] if name == "dpmsolver++" else out.pred_original_sample
    assert x0.abs().max() <= ddpm.DATA_RANGE_MAX
    assert x0.abs().max() > 0.5  # clipped, not zero: x_t / alpha_t is far outside [-1, 1] here


def test_dpmsolver_refuses_repeated_timesteps():
    config = _config()  # 10 training steps; lambda clipping leaves fewer distinct ones
    with pytest.raises(ValueError, match="repeats timesteps"):
        ddpm.sampling_scheduler(config, SamplerSpec(name="dpmsolver++", steps=10))


# ------------------------------------------------------------------ training and sampling fit together


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_trained_model_reproduces_a_trivial_dataset(prediction_type):
    """Images +1 on the left half and -1 on the right: after 150 steps the samples are too.

    Observed (torch 2.13 CPU, seeds 0-2, epsilon): left/right means about +0.75/-0.65 with
    DDIM and +0.93/-0.90 with DDPM (20 steps); v_prediction about +0.92/-0.91.
    """
    config = ddpm.Config(image_size=SIZE, block_out_channels=(16, 32), attention=False, learning_rate=2e-3,
                         prediction_type=prediction_type)
    models = ddpm.build(config, 0)
    models = nn.ModuleDict({"unet": models["unet"]})  # no trainer here to update the EMA copy
    optimizers = ddpm.make_optimizers(models, config)
    images = torch.full((16, 1, SIZE, SIZE), -1.0)
    images[..., : SIZE // 2] = 1.0
    context = _context()
    for _ in range(150):
        losses = ddpm.train_step(models, optimizers, {"images": images}, config, context)
    assert losses["loss"] < 0.05
    for name in ("ddim", "ddpm"):
        out = ddpm.sample(models, config, Conditions(n=8), SamplerSpec(name=name, steps=20),
                          torch.Generator().manual_seed(0))
        left, right = out[..., : SIZE // 2].mean().item(), out[..., SIZE // 2:].mean().item()
        assert left - right > 0.8, (name, left, right)
