"""Pix2Pix for volumes: a tissue label map and a lesion mask in, an image volume out.

Isola et al. 2017 ("Image-to-Image Translation with Conditional Adversarial Networks",
https://arxiv.org/abs/1611.07004) with every 2D layer replaced by its 3D counterpart, as 3D
Pix2Pix variants for medical volumes do: the same U-Net generator (skip connections, dropout
in the three innermost decoder blocks as the noise source, tanh output) and the same
PatchGAN discriminator, scoring overlapping cubes of the (condition, volume) pair, trained on
the objective of eq. 4, BCE + ``lambda_l1`` * L1. The networks and the adversarial step are
``synthmed.generators.pix2pix``'s, built with ``dims=3``; this module adds what differs:

1. ``Config``: the 2D family's fields (``image_size`` is the side of the cubic volume in
   voxels) plus how the label map is encoded (``label_classes``, ``label_encoding``).
2. ``encode_conditions``: label map + lesion mask -> the generator's input channels.
3. ``build`` / ``make_optimizers`` / ``train_step`` / ``sample`` (the generator contract,
   tensors ``(N, C, D, H, W)``).

The lesion is an input of its own (a binary channel), so that a sampling plan places a
lesion of the size and location it wants by editing the mask (and the label map) of a
held-out patient; the label map may carry the lesion label too (the test cohort's maps do).

Deviation from the 2D family: augmentation is a random left-right flip only (the last axis),
applied identically to condition and volume; the 2D family's 90-degree rotations would turn
a head on its side, which a brain volume never shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.core.seeding import seeded
from synthmed.core.validation import is_int
from synthmed.generators.base import Batch, Conditions, FamilySpec, SamplerSpec, StepContext
from synthmed.generators.common import adam_per_module, dcgan_init
from synthmed.generators.pix2pix import (
    PatchDiscriminator,
    UNetGenerator,
    adversarial_step,
    check_config,
    check_shape,
    translate,
)

NAME = "pix2pix3d"
DIMS = 3
LABEL_ENCODINGS = ("one_hot", "scaled")


# ----------------------------------------------------------------------------- 1. config


@dataclass(frozen=True)
class Config:
    """Pix2Pix 3D hyper-parameters; the paper's objective and optimiser, small CPU widths.

    Args:
        image_size: side of the cubic volumes in voxels; divisible by ``2**depth``.
        channels: channels of the generated volume.
        num_classes: kept for the shared vocabulary; not class-conditional, so 0.
        label_classes: label map values are ``0 .. label_classes - 1`` (the test cohort's:
            background, CSF, grey matter, white matter, lesion = 5).
        label_encoding: ``one_hot`` (one input channel per label value) or ``scaled`` (one
            channel, the label value scaled into [-1, 1]: fewer weights, an ordering of the
            labels the network has to undo).
        base_channels: width of the first encoder level; deeper levels double it up to 8x.
        depth: down-sampling levels of the U-Net (``log2(image_size)`` reaches a 1-voxel
            bottleneck, as in the paper).
        dropout: decoder dropout in the three innermost up blocks, also the test-time noise.
        lambda_l1: weight of the L1 term in eq. 4 (paper: 100).
        learning_rate, beta1, beta2: Adam for both networks (paper: 2e-4, 0.5, 0.999).
        discriminator_layers: stride-2 convolutions of the PatchGAN (3: 70-voxel cubes).
        augment: random left-right flips, identical for condition and volume.
        grad_clip_norm: clip both networks' gradients to this norm; None = no clipping.
    """

    image_size: int = 32
    channels: int = 1
    num_classes: int = 0
    label_classes: int = 5
    label_encoding: str = "one_hot"
    base_channels: int = 8
    depth: int = 5
    dropout: float = 0.5
    lambda_l1: float = 100.0
    learning_rate: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    discriminator_layers: int = 3
    augment: bool = True
    grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        if not is_int(self.label_classes) or self.label_classes < 2:
            raise ValueError(f"{NAME} label_classes must be an integer >= 2, got {self.label_classes!r}.")
        if self.label_encoding not in LABEL_ENCODINGS:
            raise ValueError(
                f"{NAME} label_encoding must be one of {list(LABEL_ENCODINGS)}, got {self.label_encoding!r}."
            )
        check_config(self, NAME)

    @property
    def mask_channels(self) -> int:
        """Input channels of both networks' condition: the encoded label map, then the lesion mask."""
        return (self.label_classes if self.label_encoding == "one_hot" else 1) + 1

    def needed_conditions(self) -> frozenset[str]:
        """A volume is drawn from a label map and a lesion mask: both are required."""
        return frozenset({"masks", "label_maps"})


# ----------------------------------------------------------------------------- 2. conditions


def encode_conditions(label_maps: torch.Tensor, masks: torch.Tensor, config: Config, where: str) -> torch.Tensor:
    """``(B, 1, D, H, W)`` label values and lesion mask -> ``(B, mask_channels, D, H, W)`` in [-1, 1].

    Raises:
        ValueError: a shape other than the config's, or a label outside ``[0, label_classes)``
            (the message names ``where``, the value found and the fix).
    """
    check_shape(label_maps, 1, config, f"{where} label_maps", DIMS)
    check_shape(masks, 1, config, f"{where} masks", DIMS, rows=label_maps.shape[0])
    labels = label_maps[:, 0].long()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= config.label_classes:
        raise ValueError(
            f"{where} label_maps hold values {low}..{high}, expected 0..{config.label_classes - 1} "
            f"({NAME}.model.label_classes={config.label_classes}); raise label_classes to cover every label."
        )
    if config.label_encoding == "one_hot":
        encoded = F.one_hot(labels, config.label_classes).movedim(-1, 1).float()  # (B, K, D, H, W) in {0, 1}
    else:
        encoded = labels[:, None].float() / (config.label_classes - 1)  # (B, 1, D, H, W) in [0, 1]
    return torch.cat([encoded, (masks > 0).float()], dim=1) * 2.0 - 1.0


# ----------------------------------------------------------------------------- 3. the contract


def build(config: Config, seed: int) -> nn.ModuleDict:
    """The 3D U-Net generator and 3D PatchGAN, initialised N(0, 0.02) from ``seed``."""
    with seeded(seed):
        models = nn.ModuleDict({"generator": UNetGenerator(config, dims=DIMS),
                                "discriminator": PatchDiscriminator(config, dims=DIMS)})
        models.apply(dcgan_init)
    return models


def make_optimizers(models: nn.ModuleDict, config: Config) -> dict[str, torch.optim.Optimizer]:
    """Adam for each network (paper: lr 2e-4, betas (0.5, 0.999))."""
    return adam_per_module(models, ("generator", "discriminator"), config.learning_rate, (config.beta1, config.beta2))


def flip_pairs(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each (condition, volume) pair left-right (last axis) with probability 1/2, both alike."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    where = flip.view(-1, *([1] * (x.ndim - 1)))
    return torch.where(where, x.flip(-1), x), torch.where(where, y.flip(-1), y)


def train_step(
    models: nn.ModuleDict,
    optimizers: dict[str, torch.optim.Optimizer],
    batch: Batch,
    config: Config,
    step: StepContext,
) -> dict[str, float]:
    """One D update then one G update on ``batch`` (eq. 4, see ``pix2pix.adversarial_step``).

    Args:
        batch: ``label_maps`` ``(B, 1, D, H, W)`` integer labels, ``masks`` ``(B, 1, D, H, W)``
            lesion mask in {0, 1}, ``images`` ``(B, channels, D, H, W)`` in [-1, 1].

    Returns:
        ``loss_d``, ``loss_g_adv`` and ``loss_g_l1`` (unweighted), as floats.
    """
    missing = [key for key in ("label_maps", "masks", "images") if key not in batch]
    if missing:
        raise ValueError(f"{NAME} batches need label_maps, masks and images; missing {missing} "
                         f"(the training store must hold label maps: key 'label_maps').")
    x = encode_conditions(batch["label_maps"], batch["masks"], config, "batch")
    y = batch["images"]
    check_shape(y, config.channels, config, "batch['images']", DIMS, rows=x.shape[0])
    if config.augment:
        x, y = flip_pairs(x, y, step.generator)
    return adversarial_step(models, optimizers, x, y, config, step)


@torch.no_grad()
def sample(
    models: nn.ModuleDict,
    config: Config,
    conditions: Conditions,
    sampler: SamplerSpec,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw one volume per (label map, lesion mask): one generator pass (``sampler`` is unused).

    Batch norm in eval mode, dropout on with masks from ``generator``: a seed gives the same
    volumes, and a volume does not depend on the others in its batch.

    Args:
        conditions: ``label_maps`` and ``masks`` ``(n, 1, D, H, W)``, both required; labels
            and inpainting context are not supported.

    Returns:
        ``(n, channels, D, H, W)`` float32 in [-1, 1] on the CPU.
    """
    if conditions.label_maps is None or conditions.masks is None:
        raise ValueError(f"{NAME} samples need Conditions.label_maps and Conditions.masks (the anatomy and the "
                         "lesion to draw); got "
                         f"label_maps={conditions.label_maps is not None}, masks={conditions.masks is not None}.")
    unsupported = [name for name in ("labels", "images", "keep") if getattr(conditions, name) is not None]
    if unsupported:
        raise ValueError(f"{NAME} is conditioned on label maps and masks only; got unsupported Conditions "
                         f"{unsupported}.")
    x = encode_conditions(conditions.label_maps, conditions.masks, config, "Conditions")
    return translate(models, x, generator)


FAMILY = FamilySpec(
    name=NAME,
    config_cls=Config,
    build=build,
    make_optimizers=make_optimizers,
    train_step=train_step,
    sample=sample,
    ema_modules=(),
    spatial_dims=DIMS,
)
