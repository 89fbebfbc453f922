"""Pix2Pix: mask-to-image translation with a conditional GAN (Isola et al. 2017).

"Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017,
https://arxiv.org/abs/1611.07004. The whole family in one file, top to bottom:

1. ``Config``: the hyper-parameters (paper defaults).
2. The networks: a U-Net generator (paper sec. 3.2.1, appendix 6.1.1) that maps a
   structure/lesion mask to an image, and a PatchGAN discriminator (sec. 3.2.2) that scores
   overlapping patches of the (mask, image) pair.
3. ``build`` / ``make_optimizers``.
4. ``augment_pair``: flips and 90-degree rotations applied identically to mask and image.
5. ``train_step``: the objective of eq. 4,
   ``G* = arg min_G max_D L_cGAN(G, D) + lambda * L_L1(G)``.
6. ``sample``: one generator forward pass per mask.

Deviations from the paper, all deliberate:

- The paper's generator has no input noise z: its only stochasticity is dropout, kept on at
  test time (sec. 3.2). ``sample`` keeps it too, but draws the dropout masks from the
  caller's ``torch.Generator`` so that a seed gives the same images; batch normalisation
  uses its running statistics (eval mode), not the test batch's, so that one image does not
  depend on the others in its batch.
- The innermost encoder layer has no batch norm (as in the authors' PyTorch code): at 1x1
  spatial size with batch size 1 it would zero the bottleneck.
- The PatchGAN's two stride-1 convolutions are zero-padded to keep the size ("same"), so the
  logit map is ``image_size / 2**discriminator_layers`` on a side (32x32 instead of 30x30
  at 256 px, the same 70x70 receptive field) and small images (16 px) still get one.
- ``upsampling: resize`` (not the default) replaces the decoder's ConvTranspose(4, stride 2)
  by a nearest-neighbour x2 resize then a 3x3 (3x3x3) convolution, same channels and skips:
  resize-convolution (Odena, Dumoulin, Olah 2016, "Deconvolution and Checkerboard Artifacts",
  Distill) has no uneven kernel overlap, the source of the transposed convolution's
  checkerboard texture. The default, ``transpose``, is the paper's.

The networks and the adversarial step take the number of spatial dimensions (``dims``, 2 by
default): ``pix2pix3d`` builds the same U-Net and PatchGAN with 3D convolutions.
"""

from __future__ import annotations

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
from synthmed.generators.pix2pix_config import UPSAMPLINGS, Config, check_config  # noqa: F401 (re-exported)

# Paper, appendix 6.1.1: dropout (rate 0.5) in the first three decoder blocks (CD512, CD1024,
# CD1024), i.e. the three innermost up-sampling blocks.
DROPOUT_BLOCKS = 3
# Channel widths double per level up to 8 * base_channels (C64-C128-C256-C512-C512-...).
MAX_CHANNEL_MULTIPLIER = 8
LEAKY_SLOPE = 0.2  # "All ReLUs in the encoder are leaky, with slope 0.2" (appendix 6.1.1)



# ----------------------------------------------------------------------------- 1. config

# In pix2pix_config (no torch there: the parameter check imports it before every run).


# ----------------------------------------------------------------------------- 2. networks


def _width(config: Config, level: int) -> int:
    """Channels of encoder level ``level`` (0-based): 64, 128, 256, 512, 512, ... for base 64."""
    return config.base_channels * min(2**level, MAX_CHANNEL_MULTIPLIER)


def _dropout(x: torch.Tensor, p: float, generator: torch.Generator | None, training: bool) -> torch.Tensor:
    """Inverted dropout; with ``generator`` the mask is drawn from it (reproducible), always on."""
    if p == 0.0:
        return x
    if generator is None:
        return F.dropout(x, p, training=training)
    keep = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


# Layer classes by number of spatial dimensions: convolution, transposed convolution, batch
# norm, zero padding.
_LAYERS = {
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.ZeroPad2d),
    3: (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.ZeroPad3d),
}


def _layers(dims: int) -> tuple[type, type, type, type]:
    if dims not in _LAYERS:
        raise ValueError(f"pix2pix networks have 2 or 3 spatial dimensions, got dims={dims!r}.")
    return _LAYERS[dims]


class Down(nn.Module):
    """Encoder block C_k: Conv(4, stride 2) -> [BatchNorm] -> LeakyReLU(0.2); halves every side."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool, dims: int = 2) -> None:
        super().__init__()
        conv, _, batch_norm, _ = _layers(dims)
        self.conv = conv(in_channels, out_channels, 4, stride=2, padding=1, bias=not norm)
        self.norm = batch_norm(out_channels) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), LEAKY_SLOPE)


def upsampling_layer(in_channels: int, out_channels: int, dims: int, upsampling: str, bias: bool) -> nn.Module:
    """A layer that doubles every side: ``transpose`` = ConvTranspose(4, stride 2, padding 1) (the
    paper's), ``resize`` = nearest-neighbour x2 then Conv(3, padding 1) (resize-convolution)."""
    conv, conv_transpose, _, _ = _layers(dims)
    if upsampling == "transpose":
        return conv_transpose(in_channels, out_channels, 4, stride=2, padding=1, bias=bias)
    if upsampling == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             conv(in_channels, out_channels, 3, padding=1, bias=bias))
    raise ValueError(f"pix2pix upsampling must be one of {list(UPSAMPLINGS)}, got {upsampling!r}.")


class Up(nn.Module):
    """Decoder block CD_k / C_k: ConvTranspose(4, stride 2) -> BatchNorm -> [Dropout] -> ReLU
    (``upsampling="resize"``: nearest x2 + Conv(3) instead of the ConvTranspose)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, dims: int = 2,
                 upsampling: str = "transpose") -> None:
        super().__init__()
        _, _, batch_norm, _ = _layers(dims)
        self.conv = upsampling_layer(in_channels, out_channels, dims, upsampling, bias=False)
        self.norm = batch_norm(out_channels)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.relu(_dropout(x, self.dropout, generator, self.training))


class UNetGenerator(nn.Module):
    """U-Net (paper fig. 3): encoder level i is concatenated onto the decoder at the same size.

    ``forward(mask, generator)``: ``(B, mask_channels, H, W)`` in [-1, 1] ->
    ``(B, channels, H, W)`` in [-1, 1] (``dims=3``: ``(B, C, D, H, W)``). Dropout masks come
    from ``generator`` when one is given (then dropout is on in any mode), otherwise from the
    global RNG in training mode. ``config`` needs ``depth``, ``mask_channels``, ``channels``,
    ``base_channels``, ``dropout`` and ``upsampling``.
    """

    def __init__(self, config: Config, dims: int = 2) -> None:
        super().__init__()
        d = config.depth
        # Encoder: level i outputs _width(i) channels at H / 2**(i+1). No batch norm on the first
        # level (paper) nor on the innermost one (bottleneck; see the module docstring).
        self.down = nn.ModuleList(
            Down(config.mask_channels if i == 0 else _width(config, i - 1), _width(config, i), norm=0 < i < d - 1,
                 dims=dims)
            for i in range(d)
        )
        # Decoder: up block j (j = d-2 .. 0) outputs _width(j) channels at H / 2**(j+1) and is
        # then concatenated with encoder level j; its input is the bottleneck or the previous
        # concatenation (2 * _width(j+1) channels).
        self.up = nn.ModuleList(
            Up(
                _width(config, j + 1) * (1 if j == d - 2 else 2),
                _width(config, j),
                config.dropout if j >= d - 1 - DROPOUT_BLOCKS else 0.0,
                dims,
                config.upsampling,
            )
            for j in reversed(range(d - 1))
        )
        # Output: ConvTranspose (or resize + Conv) back to full size, Tanh into [-1, 1].
        self.out = upsampling_layer(_width(config, 0) * (1 if d == 1 else 2), config.channels, dims,
                                    config.upsampling, bias=True)

    def forward(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        skips = []
        x = mask  # (B, mask_channels, H, W)
        for down in self.down:
            x = down(x)  # (B, width(i), H / 2**(i+1), W / 2**(i+1))
            skips.append(x)
        skips.pop()  # the bottleneck is x itself, not a skip
        for up in self.up:
            x = up(x, generator)  # (B, width(j), H / 2**(j+1), ...)
            x = torch.cat([x, skips.pop()], dim=1)  # (B, 2 * width(j), H / 2**(j+1), ...)
        return torch.tanh(self.out(x))  # (B, channels, H, W)


class PatchDiscriminator(nn.Module):
    """PatchGAN (paper sec. 3.2.2, appendix 6.1.2): a logit per overlapping patch of the pair.

    C64-C128-C256 (stride 2, ``discriminator_layers`` of them), C512 (stride 1), then a
    stride-1 convolution to one channel. ``forward(mask, image)``: ``(B, mask_channels, H, W)``
    and ``(B, channels, H, W)`` -> ``(B, 1, H / 2**L, W / 2**L)`` logits (L = layers); with
    ``dims=3`` a logit per overlapping cube, ``(B, 1, D / 2**L, H / 2**L, W / 2**L)``.
    """

    def __init__(self, config: Config, dims: int = 2) -> None:
        super().__init__()
        conv, _, batch_norm, zero_pad = _layers(dims)
        same = (1, 2) * dims  # kernel 4, stride 1: padded 1 before and 2 after on every side
        layers: list[nn.Module] = []
        in_channels = config.mask_channels + config.channels
        for i in range(config.discriminator_layers):  # stride 2: halves every side
            out_channels = _width(config, i)
            norm = i > 0  # no batch norm on the first layer (appendix 6.1.2)
            layers += [conv(in_channels, out_channels, 4, stride=2, padding=1, bias=not norm)]
            layers += [batch_norm(out_channels)] if norm else []
            layers += [nn.LeakyReLU(LEAKY_SLOPE)]
            in_channels = out_channels
        out_channels = _width(config, config.discriminator_layers)
        # Kernel 4, stride 1, padded 1 before and 2 after: the size is kept ("same").
        layers += [zero_pad(same), conv(in_channels, out_channels, 4, bias=False)]
        layers += [batch_norm(out_channels), nn.LeakyReLU(LEAKY_SLOPE)]
        layers += [zero_pad(same), conv(out_channels, 1, 4)]
        self.net = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([mask, image], dim=1))


# ----------------------------------------------------------------------------- 3. build


def build(config: Config, seed: int) -> nn.ModuleDict:
    """The generator and discriminator, initialised N(0, 0.02) from ``seed`` (appendix 6.2)."""
    with seeded(seed):
        models = nn.ModuleDict({"generator": UNetGenerator(config), "discriminator": PatchDiscriminator(config)})
        models.apply(dcgan_init)
    return models


def make_optimizers(models: nn.ModuleDict, config: Config) -> dict[str, torch.optim.Optimizer]:
    """Adam for each network (appendix 6.2: lr 2e-4, betas (0.5, 0.999))."""
    return adam_per_module(models, ("generator", "discriminator"), config.learning_rate, (config.beta1, config.beta2))


# ----------------------------------------------------------------------------- 4. augmentation


def augment_pair(
    masks: torch.Tensor, images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random flip/90-degree rotation per pair, the same for the mask and its image.

    The 8 symmetries of the square (the dihedral group D4): transform ``t`` in 0..7 flips
    left-right when ``t >= 4``, then rotates by ``t % 4`` quarter turns. Square images only.
    ``(B, Cm, H, W)`` and ``(B, Ci, H, W)`` -> the same shapes.
    """
    pairs = torch.cat([masks, images], dim=1)  # one tensor: one transform for both
    choice = torch.randint(0, 8, (pairs.shape[0],), generator=generator, device=generator.device).to(pairs.device)
    out = torch.empty_like(pairs)
    for t in range(8):
        rows = (choice == t).nonzero().squeeze(1)
        if rows.numel():
            x = pairs[rows].flip(-1) if t >= 4 else pairs[rows]
            out[rows] = torch.rot90(x, t % 4, dims=(-2, -1))
    return out[:, : masks.shape[1]], out[:, masks.shape[1] :]


# ----------------------------------------------------------------------------- 5. training


def check_shape(tensor: torch.Tensor, channels: int, config: Config, where: str, dims: int = 2,
                rows: int | None = None) -> None:
    """Raise unless ``tensor`` is ``(rows or N, channels, image_size, ...)`` with ``dims`` spatial sides."""
    expected = (channels,) + (config.image_size,) * dims
    if tensor.ndim != 2 + dims or tuple(tensor.shape[1:]) != expected or rows not in (None, tensor.shape[0]):
        raise ValueError(f"Expected {where} with shape ({'N' if rows is None else rows}, "
                         f"{', '.join(map(str, expected))}), got {tuple(tensor.shape)}.")


def _check_masks(masks: torch.Tensor, config: Config, where: str) -> None:
    check_shape(masks, config.mask_channels, config, where)



def train_step(
    models: nn.ModuleDict,
    optimizers: dict[str, torch.optim.Optimizer],
    batch: Batch,
    config: Config,
    step: StepContext,
) -> dict[str, float]:
    """One D update then one G update on ``batch`` (paper sec. 3.3), eq. 4:

        G* = arg min_G max_D L_cGAN(G, D) + lambda * L_L1(G)
        L_cGAN(G, D) = E_{x,y}[log D(x, y)] + E_{x,z}[log(1 - D(x, G(x, z)))]      (eq. 1)
        L_L1(G) = E_{x,y,z}[|| y - G(x, z) ||_1]                                     (eq. 3)

    with x the mask, y the real image and z the dropout noise.

    Args:
        batch: ``masks`` ``(B, mask_channels, H, W)`` in {0, 1}; ``images`` ``(B, channels,
            H, W)`` in [-1, 1].

    With ``lesion_l1_weight``, ``lambda * lesion_l1_weight`` times the L1 averaged over the
    ``lesion_label`` pixels of the batch is added (``adversarial_step``'s ``focus``).

    Returns:
        ``loss_d`` (halved BCE of D), ``loss_g_adv`` (BCE of D(x, G(x)) against 1) and
        ``loss_g_l1`` (unweighted L1), as floats; with ``lesion_l1_weight`` also ``loss_g_focus``.
    """
    masks = encode_condition(batch["masks"], batch.get("label_maps"), config, "batch")
    images = batch["images"]
    check_shape(images, config.channels, config, "batch['images']", rows=masks.shape[0])

    # 0. Augmentation: the same random flip/rotation for each mask and its image; the mask
    #    {0, 1} -> x in [-1, 1], the range of the images.
    if config.augment:
        masks, images = augment_pair(masks, images, step.generator)
    focus = None
    if config.lesion_l1_weight:  # the lesion label's one-hot channel, augmented with the image
        focus = (masks[:, config.lesion_label:config.lesion_label + 1].to(images.dtype), config.lesion_l1_weight)
    return adversarial_step(models, optimizers, masks * 2.0 - 1.0, images, config, step, focus=focus)


def encode_condition(masks: torch.Tensor | None, label_maps: torch.Tensor | None, config: Config,
                     where: str) -> torch.Tensor:
    """The condition in {0, 1}: ``masks`` as given, or with ``config.label_classes`` the label map
    one-hot encoded, ``(B, label_classes, H, W)``.

    Raises:
        ValueError: naming ``where``, when the needed input is missing, has the wrong shape or
            holds a label outside ``0..label_classes - 1``.
    """
    if not config.label_classes:
        if masks is None:
            raise ValueError(f"pix2pix needs {where}.masks (the masks to translate into images), got None.")
        _check_masks(masks, config, f"{where}.masks")
        return masks.float()
    if label_maps is None:
        raise ValueError(f"pix2pix with label_classes={config.label_classes} needs {where}.label_maps "
                         "(the label map to translate into an image), got None.")
    check_shape(label_maps, 1, config, f"{where}.label_maps")
    labels = label_maps[:, 0].long()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= config.label_classes:
        raise ValueError(f"pix2pix {where}.label_maps hold values {low}..{high}, expected "
                         f"0..{config.label_classes - 1} (pix2pix.model.label_classes={config.label_classes}); "
                         "raise label_classes to cover every label.")
    return F.one_hot(labels, config.label_classes).movedim(-1, 1).float()


def adversarial_step(
    models: nn.ModuleDict,
    optimizers: dict[str, torch.optim.Optimizer],
    x: torch.Tensor,
    y: torch.Tensor,
    config: Config,
    step: StepContext,
    focus: tuple[torch.Tensor, float] | None = None,
) -> dict[str, float]:
    """One D update then one G update (eq. 4) for the condition ``x`` and the real ``y``, both in [-1, 1].

    Any number of spatial dimensions (``pix2pix3d`` calls it with volumes); ``config`` needs
    ``lambda_l1`` and ``grad_clip_norm``. Returns the losses as in ``train_step``.

    ``focus = (region, weight)``: a 0/1 ``region`` shaped like ``y`` (``pix2pix3d``: the lesion
    mask) whose L1, averaged over the region's voxels only, is added with ``weight * lambda_l1``
    (so a region of a few voxels weighs as much as ``weight`` whole images); ``loss_g_focus`` is
    returned too (0 for a batch without region voxels).
    """
    generator, discriminator = models["generator"], models["discriminator"]
    generator.train()
    discriminator.train()

    # 1. D step: max_D L_cGAN. log D(x, y) and log(1 - D(x, G(x, z))) as BCE with targets 1 and
    #    0; G(x, z) is detached (only D is updated). The sum is halved "to slow down the rate
    #    at which D learns relative to G" (sec. 3.3).
    with step.autocast():
        fake = generator(x, step.generator)  # (B, channels, *sides); dropout masks from step.generator
        real_logits = discriminator(x, y)  # (B, 1, *sides / 2**L)
        fake_logits = discriminator(x, fake.detach())
        loss_d = 0.5 * (bce_to(real_logits, 1.0) + bce_to(fake_logits, 0.0))
    apply_gradients(optimizers["discriminator"], loss_d, discriminator, step, clip=config.grad_clip_norm is not None)

    # 2. G step: min_G L_cGAN + lambda * L_L1. The adversarial term uses the non-saturating
    #    form (maximise log D(x, G(x, z)), sec. 3.3), i.e. BCE against 1, through the updated D.
    #    D's gradients from this pass are discarded by its zero_grad in the next step.
    with step.autocast():
        fake_logits = discriminator(x, fake)
        loss_g_adv = bce_to(fake_logits, 1.0)
        error = (fake.float() - y.float()).abs()
        loss_g_l1 = error.mean()
        loss_g = loss_g_adv + config.lambda_l1 * loss_g_l1
        if focus is not None:
            region, weight = focus
            loss_g_focus = (error * region).sum() / region.sum().clamp_min(1.0)
            loss_g = loss_g + weight * config.lambda_l1 * loss_g_focus
    apply_gradients(optimizers["generator"], loss_g, generator, step, clip=config.grad_clip_norm is not None)

    losses = {"loss_d": loss_d.item(), "loss_g_adv": loss_g_adv.item(), "loss_g_l1": loss_g_l1.item()}
    return losses | ({"loss_g_focus": loss_g_focus.item()} if focus is not None else {})


# ----------------------------------------------------------------------------- 6. sampling


@torch.no_grad()
def sample(
    models: nn.ModuleDict,
    config: Config,
    conditions: Conditions,
    sampler: SamplerSpec,
    generator: torch.Generator,
) -> torch.Tensor:
    """Translate ``conditions.masks`` into images: one generator pass (``sampler`` is unused).

    Batch norm runs in eval mode (running statistics); dropout stays on as the noise source
    (paper sec. 3.2) with masks drawn from ``generator``, so the same seed gives the same
    images. With ``dropout=0`` the output depends on the mask only.

    Args:
        conditions: ``masks`` ``(n, mask_channels, H, W)`` in {0, 1}, required; with
            ``config.label_classes`` instead ``label_maps`` ``(n, 1, H, W)``, one-hot encoded
            (``encode_condition``). Labels and inpainting context are not supported by this family.

    Returns:
        ``(n, channels, H, W)`` float32 in [-1, 1] on the CPU.
    """
    unsupported = [name for name in ("labels", "images", "keep") if getattr(conditions, name) is not None]
    if unsupported:
        raise ValueError(f"pix2pix is conditioned on masks only; got unsupported Conditions {unsupported}.")
    x = encode_condition(conditions.masks, conditions.label_maps, config, "Conditions")
    return translate(models, x * 2.0 - 1.0, generator)  # {0, 1} -> [-1, 1]


@torch.no_grad()
def translate(models: nn.ModuleDict, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The generator (eval mode, dropout from ``generator``) applied to the condition ``x`` in [-1, 1].

    Returns ``(n, channels, *sides)`` float32 in [-1, 1] (tanh) on the CPU.
    """
    with evaluating(models["generator"]) as net:
        device = next(net.parameters()).device
        images = net(x.to(device=device, dtype=torch.float32), generator)
    return images.float().cpu()


FAMILY = FamilySpec(
    name="pix2pix",
    config_cls=Config,
    build=build,
    make_optimizers=make_optimizers,
    train_step=train_step,
    sample=sample,
    ema_modules=(),
    iterative=False,
)
