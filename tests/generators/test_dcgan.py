"""Tests for synthmed.generators.dcgan: config checks, shapes, conditioning, determinism."""

from __future__ import annotations

import contextlib

import pytest
import torch

from synthmed.generators import dcgan
from synthmed.generators.base import Conditions, SamplerSpec, StepContext

TINY = {"image_size": 16, "channels": 1, "num_classes": 3, "latent_dim": 8, "base_channels": 8}


def _context(seed: int = 0, clip=None) -> StepContext:
    return StepContext(
        backward=lambda loss: loss.backward(),
        clip=clip or (lambda params: None),
        generator=torch.Generator().manual_seed(seed),
        autocast=contextlib.nullcontext,
        step=0,
    )


def _draw(models, config, labels=None, n: int = 3, seed: int = 0) -> torch.Tensor:
    conditions = Conditions(n=n, labels=labels)
    return dcgan.sample(models, config, conditions, SamplerSpec(), torch.Generator().manual_seed(seed))


def test_defaults_are_the_papers_and_needed_conditions():
    config = dcgan.Config()
    assert (config.latent_dim, config.learning_rate, config.beta1, config.image_size) == (100, 2e-4, 0.5, 64)
    assert config.needed_conditions() == frozenset()
    assert dcgan.Config(num_classes=2).needed_conditions() == frozenset({"labels"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 48}, r"power of two >= 16 \(e.g. 64 or 128\), got 48"),
        ({"image_size": 8}, r"power of two >= 16 \(e.g. 64 or 128\), got 8"),
        ({"num_classes": -1}, r"num_classes must be an integer >= 0 \(0 = unconditional\), got -1"),
        ({"latent_dim": 0}, r"latent_dim must be an integer >= 1, got 0"),
        ({"base_channels": True}, r"base_channels must be an integer >= 1, got True"),
        ({"learning_rate": 0}, r"learning_rate must be a number > 0, got 0"),
        ({"beta2": -0.1}, r"beta2 must be a number in \[0, 1\), got -0.1"),
        ({"grad_clip_norm": -1.0}, r"grad_clip_norm must be a number > 0 or null, got -1.0"),
        ({"discriminator_learning_rate": 0.0}, r"discriminator_learning_rate must be a number > 0 or null, got 0.0"),
        ({"discriminator_conditioning": "concat"}, r"discriminator_conditioning must be one of \['label_map', "
                                                   r"'projection'\], got 'concat'"),
        ({"auxiliary_classifier_weight": -1.0}, r"auxiliary_classifier_weight must be a number >= 0 \(0 = off\), "
                                                r"got -1.0"),
        ({"auxiliary_classifier_weight": 1.0}, r"auxiliary_classifier_weight=1.0 needs classes \(num_classes > 0\)"),
    ],
)
def test_invalid_config_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        dcgan.Config(**overrides)


def test_the_discriminator_trains_at_its_own_learning_rate_when_one_is_set():
    config = dcgan.Config(**TINY, learning_rate=1e-4, discriminator_learning_rate=4e-4)  # TTUR
    optimizers = dcgan.make_optimizers(dcgan.build(config, seed=0), config)
    assert optimizers["generator"].param_groups[0]["lr"] == 1e-4
    assert optimizers["discriminator"].param_groups[0]["lr"] == 4e-4
    same = dcgan.Config(**TINY, learning_rate=1e-4)
    optimizers = dcgan.make_optimizers(dcgan.build(same, seed=0), same)
    assert optimizers["discriminator"].param_groups[0]["lr"] == 1e-4


@pytest.mark.parametrize(("image_size", "num_classes", "channels"), [(16, 0, 1), (32, 3, 1), (64, 2, 3), (128, 0, 1)])
def test_network_and_sample_shapes(image_size, num_classes, channels):
    config = dcgan.Config(
        image_size=image_size, num_classes=num_classes, channels=channels, latent_dim=8, base_channels=4
    )
    models = dcgan.build(config, 0)
    labels = torch.arange(2) % num_classes if num_classes else None
    fake = models["generator"](torch.randn(2, 8), labels)
    assert fake.shape == (2, channels, image_size, image_size)
    assert models["discriminator"](fake, labels).shape == (2,)
    images = _draw(models, config, labels, n=2)
    assert images.shape == (2, channels, image_size, image_size)
    assert images.dtype == torch.float32 and images.device.type == "cpu"
    assert images.min() >= -1 and images.max() <= 1


def test_parameter_counts_match_the_pytorch_dcgan_tutorial():
    # pytorch.org DCGAN tutorial (nz=100, ngf=ndf=64, nc=3, 64 px, convolutions without bias):
    # Generator 3,576,704 and Discriminator 2,765,568 parameters. Ours adds the biases of the
    # layers without batch norm: the generator output (3) and D's first (64) and last (1) convs.
    config = dcgan.Config(channels=3, minibatch_std=False)  # the tutorial has no minibatch-std channel
    with torch.device("meta"):
        generator, discriminator = dcgan.Generator(config), dcgan.Discriminator(config)
    assert sum(p.numel() for p in generator.parameters()) == 3_576_704 + 3
    assert sum(p.numel() for p in discriminator.parameters()) == 2_765_568 + 64 + 1
    # The minibatch-std channel adds one input channel to the final 4x4 convolution.
    with torch.device("meta"):
        with_std = dcgan.Discriminator(dcgan.Config(channels=3))
    assert sum(p.numel() for p in with_std.parameters()) == 2_765_568 + 64 + 1 + 4 * 4


def test_diff_augment_is_seeded_and_keeps_the_shape():
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    a = dcgan.diff_augment(x, torch.Generator().manual_seed(0))
    b = dcgan.diff_augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def _diff_augment_image_by_image(x, generator):
    """DiffAugment as Zhao et al. write it, one image at a time: the reference for the batched one."""
    b, _, h, w = x.shape
    x = x + (torch.rand((b, 1, 1, 1), generator=generator) - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (torch.rand((b, 1, 1, 1), generator=generator) + 0.5) + mean
    shift, size = max(h // 8, 1), h // 2
    padded = torch.nn.functional.pad(x, (shift,) * 4)
    offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator).tolist()
    x = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    corners = torch.randint(0, h - size + 1, (b, 2), generator=generator).tolist()
    keep = torch.ones((b, 1, h, w))
    for i, (cy, cx) in enumerate(corners):
        keep[i, :, cy:cy + size, cx:cx + size] = 0
    return x * keep


@pytest.mark.parametrize("channels, size", [(1, 32), (3, 16)])
def test_diff_augment_equals_the_image_by_image_definition_with_its_gradient(channels, size):
    # Batched translation and cutout (gathers and a mask) must draw the same images and pass back the
    # same gradient as the per-image slicing, bit for bit, so the DCGAN trains to the same weights.
    x = (torch.rand(8, channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out = dcgan.diff_augment(x, torch.Generator().manual_seed(3))
    ref = _diff_augment_image_by_image(x_ref, torch.Generator().manual_seed(3))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.equal(out, ref) and torch.equal(x.grad, x_ref.grad)
    assert ((out == 0).flatten(1).sum(1) >= channels * (size // 2) ** 2).all()  # every image has its cutout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_diff_augment_on_cuda_with_a_cpu_generator_equals_the_definition():
    # The trainer's generator may live on the CPU while the batch is on the GPU.
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = dcgan.diff_augment(x.cuda(), torch.Generator().manual_seed(3))
    assert torch.allclose(out.cpu(), _diff_augment_image_by_image(x, torch.Generator().manual_seed(3)), atol=1e-6)


def test_build_is_deterministic_per_seed():
    config = dcgan.Config(**TINY)
    a, b, c = dcgan.build(config, 0), dcgan.build(config, 0), dcgan.build(config, 1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_train_step_losses_clip_and_no_global_rng():
    config = dcgan.Config(**TINY, grad_clip_norm=1.0)
    models = dcgan.build(config, 0)
    optimizers = dcgan.make_optimizers(models, config)
    batch = {"images": torch.rand(4, 1, 16, 16) * 2 - 1, "labels": torch.tensor([0, 1, 2, 0])}
    clipped = []
    global_state = torch.get_rng_state()
    losses = dcgan.train_step(models, optimizers, batch, config, _context(clip=clipped.append))
    assert torch.equal(torch.get_rng_state(), global_state)  # latents came from step.generator only
    assert set(losses) == {"loss_d", "loss_g"} and all(isinstance(v, float) for v in losses.values())
    assert len(clipped) == 2


def test_train_step_unconditional_and_bad_labels():
    config = dcgan.Config(**{**TINY, "num_classes": 0})
    models = dcgan.build(config, 0)
    losses = dcgan.train_step(
        models, dcgan.make_optimizers(models, config), {"images": torch.zeros(2, 1, 16, 16)}, config, _context()
    )
    assert set(losses) == {"loss_d", "loss_g"}

    conditional = dcgan.Config(**TINY)
    models = dcgan.build(conditional, 0)
    batch = {"images": torch.zeros(2, 1, 16, 16), "labels": torch.tensor([0, 3])}
    with pytest.raises(ValueError, match=r"batch\['labels'\] must lie in \[0, 3\).*got \[3\]"):
        dcgan.train_step(models, dcgan.make_optimizers(models, conditional), batch, conditional, _context())


def test_samples_depend_on_the_label():
    config = dcgan.Config(**TINY)
    models = dcgan.build(config, 0)
    per_label = [_draw(models, config, torch.full((3,), label)) for label in range(3)]  # same latents
    for i in range(3):
        for j in range(i + 1, 3):
            assert (per_label[i] - per_label[j]).abs().max() > 1e-4


def test_sample_is_deterministic_per_seed():
    config = dcgan.Config(**TINY)
    models = dcgan.build(config, 0)
    models.train()
    labels = torch.tensor([0, 1, 2])
    global_state = torch.get_rng_state()
    assert torch.equal(_draw(models, config, labels, seed=4), _draw(models, config, labels, seed=4))
    assert not torch.equal(_draw(models, config, labels, seed=4), _draw(models, config, labels, seed=5))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert models["generator"].training  # the caller's mode is restored


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (None, r"num_classes=3 needs Conditions\.labels"),
        (torch.tensor([0, 3, 7]), r"Conditions\.labels must lie in \[0, 3\) \(num_classes=3\), got \[3, 7\]"),
        (torch.tensor([0, -1, 1]), r"got \[-1\]"),
        (torch.tensor([0.0, 1.0, 2.0]), r"Conditions\.labels with shape \(3,\) and an integer dtype"),
    ],
)
def test_conditional_sample_rejects_missing_or_bad_labels(labels, message):
    config = dcgan.Config(**TINY)
    models = dcgan.build(config, 0)
    with pytest.raises(ValueError, match=message):
        _draw(models, config, labels)


def test_unconditional_sample_refuses_labels():
    config = dcgan.Config(**{**TINY, "num_classes": 0})
    models = dcgan.build(config, 0)
    assert _draw(models, config).shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match=r"num_classes=0\) does not support Conditions \['labels'\]"):
        _draw(models, config, torch.zeros(3, dtype=torch.long))


def test_the_projection_discriminator_scores_the_class_by_an_inner_product_with_its_pooled_features():
    config = dcgan.Config(**TINY, discriminator_conditioning="projection")
    discriminator = dcgan.build(config, 0)["discriminator"].eval()  # eval: batch norm fixed, rows independent
    assert discriminator.label_map is None and discriminator.net[0].in_channels == 1  # no label channel
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        per_label = torch.stack([discriminator(images, torch.full((3,), label)) for label in range(3)])
        assert (per_label[0] - per_label[1]).abs().min() > 0  # the class moves every logit
        pooled = discriminator.net(images).sum(dim=(2, 3))  # (3, C)
        # the difference between two classes' logits is <project(a) - project(b), pooled features>
        expected = ((discriminator.project.weight[0] - discriminator.project.weight[1]) * pooled).sum(dim=1)
        assert torch.allclose(per_label[0] - per_label[1], expected, atol=1e-5)
    # it trains like the label-map discriminator
    models = dcgan.build(config, 0)
    batch = {"images": torch.rand(4, 1, 16, 16) * 2 - 1, "labels": torch.tensor([0, 1, 2, 0])}
    before = models["discriminator"].project.weight.detach().clone()
    dcgan.train_step(models, dcgan.make_optimizers(models, config), batch, config, _context())
    assert not torch.equal(before, models["discriminator"].project.weight)


def test_the_auxiliary_classifier_predicts_the_class_from_the_pooled_features():
    plain = dcgan.build(dcgan.Config(**TINY), 0)["discriminator"]
    assert plain.classifier is None
    with pytest.raises(ValueError, match=r"no classifier \(dcgan auxiliary_classifier_weight is 0\)"):
        plain(torch.zeros(2, 1, 16, 16), torch.tensor([0, 1]), with_classes=True)
    config = dcgan.Config(**TINY, auxiliary_classifier_weight=1.0)
    discriminator = dcgan.build(config, 0)["discriminator"].eval()
    images, labels = torch.rand(3, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 2])
    with torch.no_grad():
        logits, classes = discriminator(images, labels, with_classes=True)
        assert torch.equal(logits, discriminator(images, labels))  # the real/fake logit is unchanged
        label_map = discriminator.label_map(discriminator.embed(labels)).view(-1, 1, 16, 16)
        pooled = discriminator.net(torch.cat([images, label_map], dim=1)).mean(dim=(2, 3))
        assert classes.shape == (3, 3) and torch.allclose(classes, discriminator.classifier(pooled), atol=1e-6)


def test_the_auxiliary_class_losses_enter_d_on_real_images_and_g_on_its_own():
    # Two runs from the same weights and seeds, class weights 2 and 1: the losses differ by exactly
    # one cross-entropy each (the discriminator barely moves: learning rate 1e-12).
    images, labels = torch.rand(6, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2])
    runs, grads = {}, {}
    for weight in (2.0, 1.0):
        config = dcgan.Config(**TINY, auxiliary_classifier_weight=weight, discriminator_learning_rate=1e-12,
                              diff_augment=False)
        models = dcgan.build(config, 0)
        if weight == 1.0:  # the class cross-entropies, computed apart, before the step (train mode, as the step)
            discriminator = models["discriminator"].train()
            real_entropy = torch.nn.functional.cross_entropy(
                discriminator(images, labels, with_classes=True)[1], labels).item()
            z = torch.randn((6, config.latent_dim), generator=torch.Generator().manual_seed(0))  # the step's latents
            fake = models["generator"].train()(z, labels)
            fake_entropy = torch.nn.functional.cross_entropy(
                discriminator(fake, labels, with_classes=True)[1], labels).item()
        runs[weight] = dcgan.train_step(models, dcgan.make_optimizers(models, config),
                                        {"images": images, "labels": labels}, config, _context())
        grads[weight] = [p.grad.clone() for p in models["generator"].parameters()]
    two, one = runs[2.0], runs[1.0]
    assert set(one) == {"loss_d", "loss_g", "loss_class_real", "loss_class_fake"}
    assert one["loss_class_real"] == pytest.approx(real_entropy, abs=1e-5)
    assert one["loss_class_fake"] == pytest.approx(fake_entropy, abs=1e-5)  # on G's images of the labels asked for
    # ... and through G: its gradients differ by the class term's (not a detached copy of the images).
    assert any(not torch.allclose(a, b) for a, b in zip(grads[2.0], grads[1.0]))
    assert two["loss_class_real"] == pytest.approx(one["loss_class_real"], abs=1e-6)
    assert two["loss_d"] - one["loss_d"] == pytest.approx(one["loss_class_real"], abs=1e-5)
    assert two["loss_class_fake"] == pytest.approx(one["loss_class_fake"], abs=1e-5)
    assert two["loss_g"] - one["loss_g"] == pytest.approx(one["loss_class_fake"], abs=1e-5)
    assert one["loss_class_fake"] > 0.5  # a fresh classifier: about ln 3
