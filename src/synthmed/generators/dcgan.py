"""DCGAN: an unconditional or class-conditional convolutional GAN.

Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks", https://arxiv.org/abs/1511.06434; trained
with the GAN objective of Goodfellow et al. 2014 (https://arxiv.org/abs/1406.2661) and,
with ``num_classes > 0``, conditioned on a class label as in Mirza & Osindero 2014
(https://arxiv.org/abs/1411.1784). The whole family in one file, top to bottom:

1. ``Config``.
2. The networks (Radford et al. sec. 3 guidelines): strided convolutions instead of
   pooling, batch norm in both networks except the generator output and the discriminator
   input layers, ReLU + Tanh output in the generator, LeakyReLU(0.2) in the discriminator.
3. ``build`` / ``make_optimizers`` (Adam, lr 2e-4, beta1 0.5; Radford et al. sec. 4).
4. ``train_step``: Goodfellow et al. eq. 1 with the non-saturating generator loss.
5. ``sample``: one generator pass on latents drawn from the caller's ``torch.Generator``.

Conditioning (Mirza & Osindero): the generator sees ``[z, embed(label)]``; the
discriminator sees the image with one extra channel, ``Linear(embed(label))`` reshaped to
``H x W`` (a learned label map), so every layer of D can relate the class to the content;
or (``discriminator_conditioning: projection``, Miyato & Koyama 2018) D adds to its logit
the inner product of a class embedding with its sum-pooled last features. With
``auxiliary_classifier_weight > 0`` D also predicts the class (AC-GAN, Odena et al. 2017),
learning on real images, and G is trained to draw images D classifies as their class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.core.seeding import seeded
from synthmed.generators.base import Batch, Conditions, FamilySpec, SamplerSpec, StepContext
from synthmed.generators.common import (
    adam_per_module,
    apply_gradients,
    bce_to,
    dcgan_init,
    evaluating,
)
from synthmed.generators.dcgan_config import MIN_IMAGE_SIZE, Config  # noqa: F401 (re-exported)

START_SIZE = 4  # the generator starts from a 4x4 feature map (Radford et al. fig. 1)
LEAKY_SLOPE = 0.2  # Radford et al. sec. 4



# ----------------------------------------------------------------------------- 1. config

# In dcgan_config (no torch there: the parameter check imports it before every run).


# ----------------------------------------------------------------------------- 2. networks


def _levels(config: Config) -> int:
    """Number of resolution doublings from 4x4 to ``image_size`` (4 for 64 px)."""
    return int(math.log2(config.image_size // START_SIZE))


def _width(config: Config, level: int) -> int:
    """Channels at resolution ``image_size / 2**(level+1)``: base, 2 base, 4 base, ..."""
    return config.base_channels * 2**level


class Generator(nn.Module):
    """``forward(z, labels)``: ``(B, latent_dim)`` [+ ``(B,)`` int64] -> ``(B, channels, H, W)`` in [-1, 1].

    Radford et al. fig. 1 at 64 px: z -> 4x4x8b -> 8x8x4b -> 16x16x2b -> 32x32xb -> 64x64xC
    (b = base_channels), each step ConvTranspose(4, stride 2) + BatchNorm + ReLU.
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        n = _levels(config)
        self.embed = nn.Embedding(config.num_classes, config.label_embedding_dim) if config.conditional else None
        in_features = config.latent_dim + (config.label_embedding_dim if config.conditional else 0)
        # Project [z, embed(label)] (as a 1x1 map) to 4x4: ConvTranspose(4, stride 1, no padding).
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_features, _width(config, n - 1), START_SIZE, 1, 0, bias=False),
            nn.BatchNorm2d(_width(config, n - 1)),
            nn.ReLU(),
        ]
        for level in reversed(range(n - 1)):  # doubles H and W, halves the channels
            layers += [
                nn.ConvTranspose2d(_width(config, level + 1), _width(config, level), 4, 2, 1, bias=False),
                nn.BatchNorm2d(_width(config, level)),
                nn.ReLU(),
            ]
        # Output layer: no batch norm, Tanh into [-1, 1].
        layers += [nn.ConvTranspose2d(_width(config, 0), config.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)  # (B, latent_dim + label_embedding_dim)
        return self.net(z[:, :, None, None])  # (B, *, 1, 1) -> (B, channels, H, W)


class Discriminator(nn.Module):
    """``forward(images, labels)``: ``(B, channels, H, W)`` [+ ``(B,)``] -> ``(B,)`` logits.

    The generator mirrored: Conv(4, stride 2) + BatchNorm + LeakyReLU(0.2) halving H and W
    down to 4x4 (no batch norm on the first layer), then Conv(4, stride 1) to one logit.
    Conditional, ``label_map``: a learned label map ``Linear(embed(label)) -> (B, 1, H, W)`` is
    an extra input channel. ``projection``: the logit gains ``<project(label), sum of the last
    features over the 4x4 positions>`` (Miyato & Koyama 2018, eq. 3). With
    ``auxiliary_classifier_weight > 0``, ``classifier`` maps the average-pooled last features to
    class logits (``forward(..., with_classes=True)`` returns them too; AC-GAN, Odena et al. 2017).
    """

    def __init__(self, config: Config) -> None:
        super().__init__()
        n = _levels(config)
        self.image_size = config.image_size
        self.embed, self.label_map, self.project = None, None, None
        label_channel = config.conditional and config.discriminator_conditioning == "label_map"
        if label_channel:
            self.embed = nn.Embedding(config.num_classes, config.label_embedding_dim)
            self.label_map = nn.Linear(config.label_embedding_dim, config.image_size**2)
        elif config.conditional:
            self.project = nn.Embedding(config.num_classes, _width(config, n - 1))
            nn.init.normal_(self.project.weight, 0.0, 0.02)  # as the convolutions (dcgan_init skips embeddings)
        in_channels = config.channels + (1 if label_channel else 0)
        layers: list[nn.Module] = []
        for level in range(n):  # H / 2**(level+1), _width(level) channels
            norm = level > 0  # no batch norm on the discriminator input layer (sec. 3)
            layers += [nn.Conv2d(in_channels, _width(config, level), 4, 2, 1, bias=not norm)]
            layers += [nn.BatchNorm2d(_width(config, level))] if norm else []
            layers += [nn.LeakyReLU(LEAKY_SLOPE)]
            in_channels = _width(config, level)
        self.net = nn.Sequential(*layers)
        self.classifier = (nn.Linear(in_channels, config.num_classes)
                           if config.auxiliary_classifier_weight > 0 else None)
        self.minibatch_std = config.minibatch_std
        final_in = in_channels + (1 if config.minibatch_std else 0)
        self.head = nn.Conv2d(final_in, 1, START_SIZE, 1, 0)  # 4x4 -> 1x1 logit

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                with_classes: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B,)`` real/fake logits; with ``with_classes``, also ``(B, num_classes)`` class logits."""
        if with_classes and self.classifier is None:
            raise ValueError("This discriminator has no classifier (dcgan auxiliary_classifier_weight is 0).")
        if self.embed is not None:
            side = self.image_size
            label_map = self.label_map(self.embed(labels)).view(-1, 1, side, side)  # (B, 1, H, W)
            images = torch.cat([images, label_map.to(images.dtype)], dim=1)  # (B, channels + 1, H, W)
        features = self.net(images)  # (B, C, 4, 4)
        projected = None
        if self.project is not None:  # <embed(y), phi(x)>, phi: sum pooling over the 4x4 positions
            projected = (self.project(labels).to(features.dtype) * features.sum(dim=(2, 3))).sum(dim=1)  # (B,)
        class_logits = self.classifier(features.mean(dim=(2, 3))) if with_classes else None  # (B, num_classes)
        if self.minibatch_std:
            # Karras et al. 2018 sec. 3: the mean over features of the batch std, as a channel.
            spread = features.float().std(dim=0, unbiased=False).mean().to(features.dtype)
            features = torch.cat([features, spread.expand(features.shape[0], 1, *features.shape[2:])], dim=1)
        logits = self.head(features).flatten()  # (B,)
        logits = logits if projected is None else logits + projected
        return logits if class_logits is None else (logits, class_logits)


# ----------------------------------------------------------------------------- 3. build


def build(config: Config, seed: int) -> nn.ModuleDict:
    """Generator and discriminator, weights N(0, 0.02) from ``seed`` (Radford et al. sec. 4)."""
    with seeded(seed):
        models = nn.ModuleDict({"generator": Generator(config), "discriminator": Discriminator(config)})
        models.apply(dcgan_init)
    return models


def make_optimizers(models: nn.ModuleDict, config: Config) -> dict[str, torch.optim.Optimizer]:
    """Adam for each network (Radford et al. sec. 4: lr 2e-4, beta1 0.5); the discriminator at
    its own ``discriminator_learning_rate`` where set (two time-scale update rule)."""
    betas = (config.beta1, config.beta2)
    optimizers = adam_per_module(models, ("generator",), config.learning_rate, betas)
    d_rate = config.discriminator_learning_rate or config.learning_rate
    return optimizers | adam_per_module(models, ("discriminator",), d_rate, betas)


# ----------------------------------------------------------------------------- 4. training


def _latents(n: int, config: Config, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """z ~ N(0, I), ``(n, latent_dim)``, drawn from ``generator`` (on its device) then moved."""
    return torch.randn((n, config.latent_dim), generator=generator, device=generator.device).to(device)


def _check_labels(labels: torch.Tensor | None, n: int, config: Config, where: str) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"dcgan with num_classes={config.num_classes} needs {where} (class indices), got None.")
    if labels.shape != (n,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"Expected {where} with shape ({n},) and an integer dtype, got {tuple(labels.shape)} {labels.dtype}."
        )
    bad = labels[(labels < 0) | (labels >= config.num_classes)]
    if bad.numel():
        raise ValueError(
            f"{where} must lie in [0, {config.num_classes}) (num_classes={config.num_classes}), "
            f"got {sorted(set(bad.tolist()))}."
        )
    return labels.long()


def diff_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DiffAugment "color,translation,cutout" (Zhao et al. 2020), differentiable in ``x``.

    ``(B, C, H, W)`` in, same shape out; every random draw comes from ``generator``.
    """
    b, _, h, w = x.shape

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=generator.device).to(x.device, x.dtype)

    x = x + (uniform(b, 1, 1, 1) - 0.5)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (uniform(b, 1, 1, 1) + 0.5) + mean  # contrast
    shift = max(h // 8, 1)  # translation by up to 1/8 of the size, zero padding
    padded = F.pad(x, (shift, shift, shift, shift))
    offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator, device=generator.device).to(x.device)
    # Image i is padded[i, :, dy:dy + h, dx:dx + w]: two gathers, one per axis, for the whole batch
    # (a Python loop over the images launched 2 B small operations a call, 3 calls a training step).
    rows = (offsets[:, :1] + torch.arange(h, device=x.device))[:, None, :, None]    # (B, 1, h, 1)
    cols = (offsets[:, 1:] + torch.arange(w, device=x.device))[:, None, None, :]    # (B, 1, 1, w)
    x = padded.gather(2, rows.expand(-1, x.shape[1], -1, padded.shape[3]))
    x = x.gather(3, cols.expand(-1, x.shape[1], h, -1))
    size = h // 2  # cutout of half the size
    corners = torch.randint(0, h - size + 1, (b, 2), generator=generator, device=generator.device).to(x.device)
    inside_rows = (torch.arange(h, device=x.device) - corners[:, :1]).view(b, 1, h, 1)
    inside_cols = (torch.arange(w, device=x.device) - corners[:, 1:]).view(b, 1, 1, w)
    cut = (inside_rows >= 0) & (inside_rows < size) & (inside_cols >= 0) & (inside_cols < size)
    return x * (~cut).to(x.dtype)



def train_step(
    models: nn.ModuleDict,
    optimizers: dict[str, torch.optim.Optimizer],
    batch: Batch,
    config: Config,
    step: StepContext,
) -> dict[str, float]:
    """One D update then one G update on ``batch``. Goodfellow et al. 2014, eq. 1:

        min_G max_D V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]

    (conditional: D(x | y), G(z | y), Mirza & Osindero eq. 2).

    Args:
        batch: ``images`` ``(B, channels, H, W)`` in [-1, 1]; ``labels`` ``(B,)`` int64 when
            ``num_classes > 0``.

    With ``auxiliary_classifier_weight`` w > 0 (AC-GAN, Odena et al. 2017, eq. 2-3, with the
    class term of D on real images only): D also minimises w * CE(class(x), y), G also
    w * CE(class(G(z, y)), y).

    Returns:
        ``loss_d`` (BCE on real + BCE on fake) and ``loss_g`` (non-saturating), as floats; with the
        auxiliary classifier, ``loss_class_real`` and ``loss_class_fake`` (the cross-entropies,
        unweighted) too.
    """
    generator, discriminator = models["generator"], models["discriminator"]
    images = batch["images"]
    expected = (config.channels, config.image_size, config.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"Expected batch['images'] with shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}."
        )
    n = images.shape[0]
    labels = _check_labels(batch.get("labels"), n, config, "batch['labels']") if config.conditional else None
    generator.train()
    discriminator.train()

    # 1. z ~ N(0, I) from the training generator. Fakes get the real batch's labels, so the
    #    class frequencies D sees are the same for real and fake images.
    z = _latents(n, config, step.generator, images.device)  # (B, latent_dim)

    # 2. D step: maximise log D(x) + log(1 - D(G(z))), i.e. minimise BCE(D(x), 1) +
    #    BCE(D(G(z)), 0); G(z) is detached so only D is updated.
    augment = (lambda x: diff_augment(x, step.generator)) if config.diff_augment else (lambda x: x)
    weight = config.auxiliary_classifier_weight
    losses: dict[str, float] = {}
    with step.autocast():
        fake = generator(z, labels)  # (B, channels, H, W)
        real_logits, loss_class_real = _judge(discriminator, augment(images), labels, weight, "real", losses)
        fake_logits = discriminator(augment(fake.detach()), labels)
        loss_d = bce_to(real_logits, 1.0) + bce_to(fake_logits, 0.0) + weight * loss_class_real
    apply_gradients(optimizers["discriminator"], loss_d, discriminator, step, clip=config.grad_clip_norm is not None)

    # 3. G step: min_G log(1 - D(G(z))) saturates when D rejects the fakes early on; the
    #    non-saturating loss maximises log D(G(z)) instead (Goodfellow et al. sec. 3), i.e.
    #    minimises BCE(D(G(z)), 1) through the updated D. D's gradients from this pass are
    #    discarded by its zero_grad in the next step.
    with step.autocast():
        fake_logits, loss_class_fake = _judge(discriminator, augment(fake), labels, weight, "fake", losses)
        loss_g = bce_to(fake_logits, 1.0) + weight * loss_class_fake
    apply_gradients(optimizers["generator"], loss_g, generator, step, clip=config.grad_clip_norm is not None)

    return {"loss_d": loss_d.item(), "loss_g": loss_g.item()} | losses


def _judge(
    discriminator: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    weight: float,
    kind: str,
    losses: dict[str, float],
) -> tuple[torch.Tensor, torch.Tensor | float]:
    """D's real/fake logits ``(B,)`` for ``images`` and, when the auxiliary classifier is on
    (``weight > 0``), the cross-entropy of its class prediction against ``labels`` (logged in
    ``losses`` as ``loss_class_<kind>``); 0.0 when it is off."""
    if weight <= 0:
        return discriminator(images, labels), 0.0
    logits, classes = discriminator(images, labels, with_classes=True)
    loss_class = F.cross_entropy(classes.float(), labels)
    losses[f"loss_class_{kind}"] = loss_class.item()
    return logits, loss_class


# ----------------------------------------------------------------------------- 5. sampling


@torch.no_grad()
def sample(
    models: nn.ModuleDict,
    config: Config,
    conditions: Conditions,
    sampler: SamplerSpec,
    generator: torch.Generator,
) -> torch.Tensor:
    """``conditions.n`` images from latents drawn from ``generator`` (``sampler`` is unused).

    The generator runs in eval mode (batch norm running statistics), so an image does not
    depend on the rest of its batch and the same seed gives the same images.

    Args:
        conditions: ``labels`` ``(n,)`` in ``[0, num_classes)``, required when conditional
            and refused when not; masks and inpainting context are not supported.

    Returns:
        ``(n, channels, H, W)`` float32 in [-1, 1] on the CPU.
    """
    unsupported = [name for name in ("masks", "images", "keep") if getattr(conditions, name) is not None]
    if not config.conditional and conditions.labels is not None:
        unsupported.insert(0, "labels")
    if unsupported:
        raise ValueError(
            f"dcgan (num_classes={config.num_classes}) does not support Conditions {unsupported}; "
            f"it needs {sorted(config.needed_conditions())}."
        )
    labels = _check_labels(conditions.labels, conditions.n, config, "Conditions.labels") if config.conditional else None
    with evaluating(models["generator"]) as net:
        device = next(net.parameters()).device
        z = _latents(conditions.n, config, generator, device)  # (n, latent_dim)
        images = net(z, None if labels is None else labels.to(device))  # (n, channels, H, W) in [-1, 1]
    return images.float().cpu()


FAMILY = FamilySpec(
    name="dcgan",
    config_cls=Config,
    build=build,
    make_optimizers=make_optimizers,
    train_step=train_step,
    sample=sample,
    ema_modules=(),
    iterative=False,
)
