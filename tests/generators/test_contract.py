"""One contract test for every generator family: no per-family branches here.

Each family's tiny configuration lives in ``TINY``; the test builds it, takes one training
step, samples, checks shape/dtype/range, determinism for a seed, and a save/load round trip.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from synthmed.generators.base import Conditions, SamplerSpec, StepContext
from synthmed.generators.common import write_checksums, write_generator_files
from synthmed.generators.registry import FAMILIES, config_from_params, get_family, load_generator

SIZE, CLASSES = 16, 3
TINY = {
    "ddpm": {"image_size": SIZE, "channels": 1, "num_classes": CLASSES, "conditioning": ["class", "mask", "inpaint"],
             "block_out_channels": [8, 16], "layers_per_block": 1, "attention": False, "train_timesteps": 10},
    "pix2pix": {"image_size": SIZE, "channels": 3, "num_classes": 0, "base_channels": 8, "depth": 3},
    "dcgan": {"image_size": SIZE, "channels": 1, "num_classes": CLASSES, "latent_dim": 8, "base_channels": 8},
}


def _batch(config, generator: torch.Generator, n: int = 2) -> dict[str, torch.Tensor]:
    shape = (n, config.channels, config.image_size, config.image_size)
    masks = (torch.rand((n, 1, config.image_size, config.image_size), generator=generator) > 0.5).float()
    return {
        "images": torch.rand(shape, generator=generator) * 2 - 1,
        "labels": torch.arange(n) % max(config.num_classes, 1),
        "masks": masks,
    }


def _conditions(config, batch: dict[str, torch.Tensor]) -> Conditions:
    needed = config.needed_conditions()
    n = batch["images"].shape[0]
    keep = torch.zeros_like(batch["masks"])
    keep[..., : config.image_size // 2] = 1.0
    return Conditions(
        n=n,
        labels=batch["labels"] if "labels" in needed else None,
        masks=batch["masks"] if "masks" in needed else None,
        images=batch["images"] if "inpaint" in needed else None,
        keep=keep if "inpaint" in needed else None,
    )


def _context(step: int = 0) -> StepContext:
    return StepContext(
        backward=lambda loss: loss.backward(),
        clip=lambda params: torch.nn.utils.clip_grad_norm_(params, 1.0),
        generator=torch.Generator().manual_seed(123),
        autocast=contextlib.nullcontext,
        step=step,
    )


@pytest.fixture(params=sorted(TINY))
def family(request):
    return request.param


def test_every_registered_family_has_a_tiny_config():
    assert set(TINY) == set(FAMILIES) == {"ddpm", "pix2pix", "dcgan"}


def test_build_train_sample_save_load(family, tmp_path):
    spec = get_family(family)
    config = config_from_params(family, TINY[family])
    models = spec.build(config, 0)
    again = spec.build(config, 0)
    for a, b in zip(models.parameters(), again.parameters()):
        assert torch.equal(a, b)  # same seed, same initial weights

    optimizers = spec.make_optimizers(models, config)
    batch = _batch(config, torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in models.parameters()]
    losses = spec.train_step(models, optimizers, batch, config, _context())
    assert losses and all(math.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, models.parameters()))

    models.eval()
    conditions = _conditions(config, batch)
    sampler = SamplerSpec(name="ddim", steps=2, guidance_scale=2.0)
    first = spec.sample(models, config, conditions, sampler, torch.Generator().manual_seed(7))
    assert first.shape == (2, config.channels, config.image_size, config.image_size)
    assert first.dtype == torch.float32
    assert first.min() >= -1.0 and first.max() <= 1.0
    second = spec.sample(models, config, conditions, sampler, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)

    write_generator_files(tmp_path, family, config, models)
    write_checksums(tmp_path)
    loaded_spec, loaded_config, loaded = load_generator(tmp_path)
    assert loaded_spec.name == family and loaded_config == config
    reloaded = loaded_spec.sample(loaded, loaded_config, conditions, sampler, torch.Generator().manual_seed(7))
    assert torch.equal(first, reloaded)


def test_a_family_is_described_as_iterative_exactly_when_its_samples_depend_on_the_steps(family):
    """Titles and logs say "ddim, 3 steps" or "one forward pass" (``FamilySpec.describe_sampler``):
    the flag behind it must match what the family's sampler does with the step count."""
    spec = get_family(family)
    config = config_from_params(family, TINY[family])
    models = spec.build(config, 0).eval()
    conditions = _conditions(config, _batch(config, torch.Generator().manual_seed(0)))
    one, three = (spec.sample(models, config, conditions, SamplerSpec(name="ddim", steps=steps),
                              torch.Generator().manual_seed(7)) for steps in (1, 3))
    assert spec.iterative == (not torch.equal(one, three))
    described = spec.describe_sampler(SamplerSpec(name="ddim", steps=3))
    assert described == ("ddim, 3 steps" if spec.iterative else "one forward pass")
    # What the provenance records: the settings that ran, or one unguided forward pass.
    drawn = spec.drawn_with(SamplerSpec(name="ddim", steps=3, guidance_scale=2.0))
    assert drawn == (("ddim", 3, 2.0) if spec.iterative else ("forward", 1, 1.0))


def test_unknown_config_key_is_named(family):
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['not_a_key'\]"):
        config_from_params(family, {**TINY[family], "not_a_key": 1})


def test_the_gpu_profile_models_train_and_sample_at_their_size(family):
    """conf/gpu (over conf/base) builds each family at the published scale (128 px), takes a training
    step and samples with the profile's sampler on the CPU: what the GPU run needs apart from the GPU.
    A batch of 2 and at most 2 sampler steps (about 25 s on 2 cores, most of it the DDPM's 128 px U-Net);
    nothing here checks speed, memory or bf16."""
    from tests.conftest import load_parameters

    block = load_parameters("gpu")[family]
    config = config_from_params(family, block["model"])
    assert config.image_size == 128
    spec = get_family(family)
    models = spec.build(config, 0)
    generator = torch.Generator().manual_seed(0)
    batch = _batch(config, generator)
    label_classes = getattr(config, "label_classes", 0)
    if label_classes:
        batch["label_maps"] = torch.randint(0, label_classes, batch["masks"].shape, generator=generator).float()
    losses = spec.train_step(models, spec.make_optimizers(models, config), batch, config, _context())
    assert losses and all(math.isfinite(v) for v in losses.values())

    models.eval()
    needed = config.needed_conditions()
    conditions = Conditions(n=1, labels=batch["labels"][:1] if "labels" in needed else None,
                            masks=batch["masks"][:1] if "masks" in needed else None,
                            label_maps=batch["label_maps"][:1] if "label_maps" in needed else None)
    sampler = SamplerSpec(**{**block["sampling"]["sampler"], "steps": min(2, block["sampling"]["sampler"]["steps"])})
    with torch.no_grad():
        image = spec.sample(models, config, conditions, sampler, torch.Generator().manual_seed(7))
    assert image.shape == (1, config.channels, 128, 128) and torch.isfinite(image).all()
