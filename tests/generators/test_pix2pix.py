"""Tests for synthmed.generators.pix2pix: config checks, shapes, paired augmentation, learning."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
import torch

from synthmed.generators import pix2pix
from synthmed.generators.base import Conditions, SamplerSpec, StepContext

TINY = {"image_size": 16, "channels": 1, "base_channels": 8, "depth": 3}


def _context(seed: int = 0, clip=None) -> StepContext:
    return StepContext(
        backward=lambda loss: loss.backward(),
        clip=clip or (lambda params: None),
        generator=torch.Generator().manual_seed(seed),
        autocast=contextlib.nullcontext,
        step=0,
    )


def _rectangles(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 1, size, size)`` masks in {0, 1}, one random axis-aligned rectangle each."""
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        top, left = torch.randint(0, size - size // 4, (2,), generator=generator).tolist()
        height, width = torch.randint(size // 8 + 1, size // 2, (2,), generator=generator).tolist()
        masks[i, 0, top : top + height, left : left + width] = 1.0
    return masks


def _asymmetric_mask(size: int) -> torch.Tensor:
    """An L-shaped mask whose 8 flips/rotations are all different."""
    mask = torch.zeros(1, size, size)
    mask[0, 1 : size - 2, 2] = 1.0
    mask[0, size - 3, 2 : size // 2 + 1] = 1.0
    return mask


def test_defaults_are_the_papers_and_masks_are_needed():
    config = pix2pix.Config()
    assert (config.lambda_l1, config.learning_rate, config.beta1, config.dropout) == (100.0, 2e-4, 0.5, 0.5)
    assert config.needed_conditions() == frozenset({"masks"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 48, "depth": 5}, r"divisible by 2\*\*depth = 32, got image_size=48"),
        ({"num_classes": 2}, r"num_classes must be 0.*got 2"),
        ({"depth": 0}, r"depth must be an integer >= 1, got 0"),
        ({"channels": 1.5}, r"channels must be an integer >= 1, got 1.5"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
        ({"learning_rate": "2e-4"}, r"learning_rate must be a number > 0, got '2e-4'"),
        ({"beta1": 1.0}, r"beta1 must be a number in \[0, 1\), got 1.0"),
        ({"lambda_l1": -1.0}, r"lambda_l1 must be a number >= 0, got -1.0"),
        ({"image_size": 16, "depth": 3, "discriminator_layers": 5}, r"discriminator_layers.*<= image_size=16, got 5"),
        ({"augment": "yes"}, r"augment must be true or false, got 'yes'"),
        ({"grad_clip_norm": 0.0}, r"grad_clip_norm must be a number > 0 or null, got 0.0"),
        ({"upsampling": "bilinear"}, r"pix2pix upsampling must be one of \['transpose', 'resize'\], got 'bilinear'"),
    ],
)
def test_invalid_config_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        pix2pix.Config(**overrides)


@pytest.mark.parametrize("upsampling", ["transpose", "resize"])
@pytest.mark.parametrize(
    ("image_size", "depth", "channels", "layers"),
    [(16, 3, 1, 3), (16, 4, 3, 2), (32, 5, 1, 3), (64, 6, 3, 3)],
)
def test_network_and_sample_shapes(image_size, depth, channels, layers, upsampling):
    config = pix2pix.Config(
        image_size=image_size, depth=depth, channels=channels, base_channels=4, discriminator_layers=layers,
        upsampling=upsampling,
    )
    models = pix2pix.build(config, 0)
    transposed = any(isinstance(m, torch.nn.ConvTranspose2d) for m in models["generator"].modules())
    assert transposed == (upsampling == "transpose")
    masks = _rectangles(2, image_size, torch.Generator().manual_seed(0))
    x = masks * 2 - 1
    fake = models["generator"](x)
    assert fake.shape == (2, channels, image_size, image_size)
    side = image_size // 2**layers  # "same"-padded stride-1 layers: one logit per 2**L pixels
    assert models["discriminator"](x, fake).shape == (2, 1, side, side)
    conditions = Conditions(n=2, masks=masks)
    images = pix2pix.sample(models, config, conditions, SamplerSpec(), torch.Generator().manual_seed(0))
    assert images.shape == (2, channels, image_size, image_size)
    assert images.dtype == torch.float32 and images.device.type == "cpu"
    assert images.min() >= -1 and images.max() <= 1


def test_parameter_counts_match_the_reference_implementation():
    # The authors' PyTorch code (junyanz/pytorch-CycleGAN-and-pix2pix) prints 54.414 M for
    # unet_256 and 2.769 M for the basic 70x70 PatchGAN, 3 -> 3 channels (%.3f M). Biases
    # differ by a few hundred parameters (ours: bias where there is no batch norm), well
    # within the printed precision. Built on the meta device: no memory, no init.
    config = pix2pix.Config(image_size=256, depth=8, mask_channels=3, channels=3)
    with torch.device("meta"):
        generator = pix2pix.UNetGenerator(config)
        discriminator = pix2pix.PatchDiscriminator(config)
    assert abs(sum(p.numel() for p in generator.parameters()) - 54.414e6) < 1e3
    assert abs(sum(p.numel() for p in discriminator.parameters()) - 2.769e6) < 1e3


def _digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


# Every 32nd value of the tiny network's output below (2 x 1 x 16 x 16), and its sum.
_REFERENCE_OUTPUT = [-0.0009668983984738588, -0.0013221651315689087, 0.0006884786416776478, -0.0002896156220231205,
                     -0.0005364718963392079, 0.0013753643725067377, 0.0008878646185621619, -0.0011646937346085906,
                     0.0001894671586342156, -0.0024337582290172577, 0.003462910419330001, -5.917093949392438e-05,
                     -0.003711092984303832, 0.0032987783197313547, 0.0002418074436718598, -0.00019366330525372177]
_REFERENCE_SUM = 0.21728725083994505


def test_the_default_upsampling_is_the_papers_network_unchanged():
    # The layout digest was taken before `upsampling` existed (commit 7e570fd): the default config
    # builds the same parameters (names and shapes). The output, from the same seeds, was then checked
    # by the digest of its bytes on an Intel CPU with AMX; on a CPU whose kernels round differently (a
    # 2-core AMD EPYC with AVX2, 2026-12-06) the same network's output differs in the last bits, so it
    # is compared value by value, at a tolerance far below what another network or init would move.
    config = pix2pix.Config(**TINY)
    assert config.upsampling == "transpose"
    models = pix2pix.build(config, 0)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = pix2pix.translate(models, x, torch.Generator().manual_seed(1))
    layout = [(k, tuple(v.shape)) for k, v in models.state_dict().items()]
    assert _digest(repr(layout).encode()) == "e8c27da4923e633c36c3413b3b7a533ce7de005c2d1065e454cf575934329f25"
    expected = torch.tensor(_REFERENCE_OUTPUT)
    torch.testing.assert_close(out.flatten()[::32], expected, rtol=1e-4, atol=1e-8)
    assert float(out.double().sum()) == pytest.approx(_REFERENCE_SUM, rel=1e-5)


def test_dropout_only_in_the_three_innermost_up_blocks():
    generator = pix2pix.build(pix2pix.Config(image_size=256, depth=8, base_channels=1), 0)["generator"]
    assert [up.dropout for up in generator.up] == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_augmentation_moves_mask_and_image_together():
    size = 12
    masks = _asymmetric_mask(size).expand(64, 1, size, size).clone()
    ramp = torch.linspace(-1, 1, size * size).view(1, size, size)  # a second, unrelated pattern
    images = torch.cat([masks * 2 - 1, ramp.expand(64, 1, size, size)], dim=1)  # (64, 2, H, W)
    aug_masks, aug_images = pix2pix.augment_pair(masks, images, torch.Generator().manual_seed(0))
    assert aug_masks.shape == masks.shape and aug_images.shape == images.shape
    torch.testing.assert_close(aug_images[:, :1], aug_masks * 2 - 1, rtol=0, atol=0)  # still aligned
    # All 8 symmetries of the square occur, and each one is applied to the image's ramp as well.
    assert len({tuple(m.flatten().tolist()) for m in aug_masks}) == 8
    for mask, image in zip(aug_masks, aug_images):
        candidates = [torch.rot90(x, k, dims=(-2, -1)) for x in (masks[0], masks[0].flip(-1)) for k in range(4)]
        t = next(i for i, c in enumerate(candidates) if torch.equal(c, mask))
        source = ramp.flip(-1) if t >= 4 else ramp
        assert torch.equal(image[1:], torch.rot90(source, t % 4, dims=(-2, -1)))


def test_augmentation_is_reproducible_and_leaves_inputs_alone():
    masks = _rectangles(8, 16, torch.Generator().manual_seed(0))
    images = masks * 2 - 1
    before = masks.clone()
    first = pix2pix.augment_pair(masks, images, torch.Generator().manual_seed(3))
    second = pix2pix.augment_pair(masks, images, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert torch.equal(masks, before)


def test_train_step_losses_clip_and_no_global_rng():
    config = pix2pix.Config(**TINY, grad_clip_norm=1.0)
    models = pix2pix.build(config, 0)
    optimizers = pix2pix.make_optimizers(models, config)
    masks = _rectangles(4, 16, torch.Generator().manual_seed(0))
    clipped = []
    global_state = torch.get_rng_state()
    losses = pix2pix.train_step(
        models, optimizers, {"masks": masks, "images": masks * 2 - 1}, config, _context(clip=clipped.append)
    )
    assert torch.equal(torch.get_rng_state(), global_state)  # noise came from step.generator only
    assert set(losses) == {"loss_d", "loss_g_adv", "loss_g_l1"}
    assert all(isinstance(v, float) for v in losses.values())
    assert len(clipped) == 2  # discriminator, then generator


def test_train_step_rejects_a_mismatched_batch():
    config = pix2pix.Config(**TINY)
    models = pix2pix.build(config, 0)
    masks = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"batch\['images'\] with shape \(2, 1, 16, 16\), got \(2, 3, 16, 16\)"):
        pix2pix.train_step(
            models, pix2pix.make_optimizers(models, config), {"masks": masks, "images": torch.zeros(2, 3, 16, 16)},
            config, _context(),
        )


def test_learns_a_trivial_translation():
    # Target image = the mask itself in [-1, 1]: the L1 error of samples on held-out masks
    # falls from ~1 (tanh output ~0 at init) to ~0.1 in 100 steps (measured: 1.00 -> 0.12).
    config = pix2pix.Config(**TINY, learning_rate=1e-3)
    models = pix2pix.build(config, 0)
    optimizers = pix2pix.make_optimizers(models, config)
    held_out = _rectangles(8, 16, torch.Generator().manual_seed(99))
    conditions = Conditions(n=8, masks=held_out)

    def error() -> float:
        images = pix2pix.sample(models, config, conditions, SamplerSpec(), torch.Generator().manual_seed(1))
        return (images - (held_out * 2 - 1)).abs().mean().item()

    initial = error()
    context = _context()
    for _ in range(100):
        masks = _rectangles(8, 16, context.generator)
        pix2pix.train_step(models, optimizers, {"masks": masks, "images": masks * 2 - 1}, config, context)
    final = error()
    assert initial > 0.8
    assert final < 0.3 * initial


def test_sample_is_deterministic_per_seed_with_dropout_as_noise():
    config = pix2pix.Config(**TINY)
    models = pix2pix.build(config, 0)
    models.train()
    masks = _rectangles(3, 16, torch.Generator().manual_seed(0))
    conditions = Conditions(n=3, masks=masks)

    def draw(seed: int) -> torch.Tensor:
        return pix2pix.sample(models, config, conditions, SamplerSpec(), torch.Generator().manual_seed(seed))

    global_state = torch.get_rng_state()
    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))  # test-time dropout is the noise source
    assert torch.equal(torch.get_rng_state(), global_state)
    assert models["generator"].training  # the caller's mode is restored

    # Without dropout the output depends on the mask only: not on the seed, and (batch norm
    # in eval mode) not on the other images of the batch.
    no_noise = pix2pix.Config(**TINY, dropout=0.0)
    plain = pix2pix.build(no_noise, 0)
    a = pix2pix.sample(plain, no_noise, conditions, SamplerSpec(), torch.Generator().manual_seed(5))
    b = pix2pix.sample(plain, no_noise, conditions, SamplerSpec(), torch.Generator().manual_seed(6))
    alone = pix2pix.sample(plain, no_noise, Conditions(n=1, masks=masks[:1]), SamplerSpec(), torch.Generator())
    assert torch.equal(a, b)
    torch.testing.assert_close(alone, a[:1])


def test_sample_needs_masks_of_the_right_shape():
    config = pix2pix.Config(**TINY)
    models = pix2pix.build(config, 0)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"Conditions\.masks"):
        pix2pix.sample(models, config, Conditions(n=2), SamplerSpec(), generator)
    with pytest.raises(ValueError, match=r"Conditions\.masks with shape \(N, 1, 16, 16\), got \(2, 1, 8, 8\)"):
        pix2pix.sample(models, config, Conditions(n=2, masks=torch.zeros(2, 1, 8, 8)), SamplerSpec(), generator)
    with pytest.raises(ValueError, match=r"unsupported Conditions \['labels'\]"):
        conditions = Conditions(n=2, masks=torch.zeros(2, 1, 16, 16), labels=torch.zeros(2, dtype=torch.long))
        pix2pix.sample(models, config, conditions, SamplerSpec(), generator)


def test_a_label_map_is_one_hot_encoded_and_its_values_are_checked():
    config = pix2pix.Config(**TINY, label_classes=3, mask_channels=3)
    assert config.needed_conditions() == frozenset({"masks", "label_maps"})
    label_maps = torch.tensor([0, 1, 2, 1]).repeat(1, 1, 16, 4).long()  # (1, 1, 16, 16)
    encoded = pix2pix.encode_condition(None, label_maps, config, "batch")
    assert encoded.shape == (1, 3, 16, 16)
    assert torch.equal(encoded.argmax(1, keepdim=True), label_maps)
    assert torch.equal(encoded.sum(1), torch.ones(1, 16, 16))  # one channel per pixel
    with pytest.raises(ValueError, match=r"batch\.label_maps hold values 0\.\.3, expected 0\.\.2"):
        pix2pix.encode_condition(None, label_maps + (label_maps == 2).long(), config, "batch")
    with pytest.raises(ValueError, match=r"needs Conditions\.label_maps"):
        pix2pix.sample(pix2pix.build(config, 0), config, Conditions(n=1, masks=torch.zeros(1, 1, 16, 16)),
                       SamplerSpec(), torch.Generator())
    with pytest.raises(ValueError, match="mask_channels must equal label_classes"):
        pix2pix.Config(**TINY, label_classes=3)
    with pytest.raises(ValueError, match="label_classes must be 0"):
        pix2pix.Config(**TINY, label_classes=1)


def test_with_label_maps_it_draws_what_each_label_stands_for():
    """Label 1 is bright and label 2 dark, inside the same outline: a binary mask cannot tell them
    apart (its best answer is their mean), the one-hot label map can."""
    def pairs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        outline = _rectangles(n, 16, generator).long()
        inner = torch.rand(n, 1, 1, 1, generator=generator) < 0.5  # the whole region is label 1 or 2
        label_maps = outline * torch.where(inner, 1, 2)
        images = torch.where(label_maps == 1, 1.0, torch.where(label_maps == 2, -0.2, -1.0))
        return label_maps, images

    held_out, truth = pairs(16, torch.Generator().manual_seed(99))
    errors = {}
    for classes in (0, 3):
        config = pix2pix.Config(**TINY, learning_rate=1e-3, label_classes=classes, mask_channels=max(classes, 1))
        models = pix2pix.build(config, 0)
        optimizers = pix2pix.make_optimizers(models, config)
        context = _context()
        for _ in range(300):
            label_maps, images = pairs(8, context.generator)
            pix2pix.train_step(models, optimizers, {"masks": (label_maps > 0).float(), "label_maps": label_maps,
                                                    "images": images}, config, context)
        conditions = Conditions(n=16, masks=(held_out > 0).float(), label_maps=held_out)
        drawn = pix2pix.sample(models, config, conditions, SamplerSpec(), torch.Generator().manual_seed(1))
        inside = held_out > 0
        errors[classes] = (drawn - truth).abs()[inside].mean().item()
    assert errors[3] < 0.5 * errors[0], errors


def test_lesion_l1_weight_adds_the_l1_over_the_lesion_label_only():
    """The 2D family's extra L1 over the ``lesion_label`` pixels (pix2pix3d's, on slices): a batch with
    lesion pixels steps the generator differently; one without is the paper's step, bit for bit."""
    generator = torch.Generator().manual_seed(0)
    label_maps = _rectangles(2, 16, generator).long() * 2  # tissue 2
    label_maps[:, :, 6:9, 6:9] = 3  # a 3x3 lesion (label 3)
    batch = {"masks": (label_maps > 0).float(), "label_maps": label_maps,
             "images": torch.where(label_maps == 3, 1.0, torch.where(label_maps > 0, 0.0, -1.0))}

    def one_step(weight: float, data: dict[str, torch.Tensor]):
        config = pix2pix.Config(**TINY, label_classes=4, mask_channels=4, lesion_label=3, lesion_l1_weight=weight)
        models = pix2pix.build(config, 0)
        return models, pix2pix.train_step(models, pix2pix.make_optimizers(models, config), data, config, _context())

    plain, plain_losses = one_step(0.0, batch)
    focused, losses = one_step(20.0, batch)
    assert "loss_g_focus" not in plain_losses and 0.0 < losses["loss_g_focus"] <= 2.0
    assert losses["loss_d"] == plain_losses["loss_d"]  # the D step comes first, unchanged
    pairs = zip(plain["generator"].parameters(), focused["generator"].parameters())
    assert any(not torch.equal(a, b) for a, b in pairs)
    no_lesion = {**batch, "label_maps": torch.where(label_maps == 3, 2, label_maps)}
    plain, _ = one_step(0.0, no_lesion)
    focused, losses = one_step(20.0, no_lesion)
    assert losses["loss_g_focus"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(plain["generator"].parameters(), focused["generator"].parameters()))
    with pytest.raises(ValueError, match=r"lesion_l1_weight=1.0 needs lesion_label, a label-map value below "
                                         r"label_classes=4 .* got 4"):
        pix2pix.Config(**TINY, label_classes=4, mask_channels=4, lesion_label=4, lesion_l1_weight=1.0)
    with pytest.raises(ValueError, match="lesion_l1_weight must be a number >= 0, got -1"):
        pix2pix.Config(**TINY, lesion_l1_weight=-1)
