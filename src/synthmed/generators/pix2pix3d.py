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

The lesion covers a fraction of a percent of a volume, so its share of the L1 term is too small
for a short CPU training to learn it: ``lesion_l1_weight`` adds the L1 averaged over the lesion
mask's voxels, weighted ``lesion_l1_weight * lambda_l1`` (``pix2pix.adversarial_step``'s ``focus``).
And a few training patients hold lesions at a few places only, which the generator learns by heart
instead of "lesion label -> lesion intensity": ``lesion_paste`` copies the batch's real lesions to
random places of grey and white matter (`paste_lesions`) before each step.

Deviation from the 2D family: augmentation is a random left-right flip only (the last axis),
applied identically to condition and volume; the 2D family's 90-degree rotations would turn
a head on its side, which a brain volume never shows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthmed.core.seeding import seeded
from synthmed.generators.base import Batch, Conditions, FamilySpec, SamplerSpec, StepContext
from synthmed.generators.common import adam_per_module, dcgan_init
from synthmed.generators.pix2pix import (
    PatchDiscriminator,
    UNetGenerator,
    adversarial_step,
    check_shape,
    translate,
)
from synthmed.generators.pix2pix3d_config import LABEL_ENCODINGS, NAME, Config  # noqa: F401 (re-exported)
from synthmed.imaging.labels import CSF, GREY, LESION, WHITE

DIMS = 3


# ----------------------------------------------------------------------------- 1. config

# In pix2pix3d_config (no torch there: the parameter check imports it before every run).


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


def _draw(generator: torch.Generator, n: int) -> int:
    """A uniform integer in [0, n) from ``generator`` (on its device: CUDA generators too)."""
    return int(torch.randint(n, (1,), generator=generator, device=generator.device).item())


def paste_lesions(label_maps: torch.Tensor, masks: torch.Tensor, images: torch.Tensor, probability: float,
                  generator: torch.Generator, *, tries: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Copy real lesions of the batch to other places (lesion copy-paste augmentation, as CarveMix does
    for lesion segmentation), so that the generator sees lesions at many places, not at the few where
    the training patients have them.

    Each volume, with ``probability``, receives one lesion (a connected component, 26-neighbourhood)
    of a batch volume that holds one: centred on a grey or white matter voxel drawn at random, kept
    only where every voxel lands on grey or white matter inside the volume (else up to ``tries``
    other centres, then nothing). Its voxels become ``LESION`` in the label map and 1 in the mask;
    their intensities, per channel, keep their distance to the donor's white matter median, scaled
    by the ratio of the two volumes' white matter - CSF contrasts (`synthmed.metrics.volumes.
    tissue_residual` measures lesions the same way). Labels: the test cohort's
    (`synthmed.imaging.cohort`).

    Returns:
        New ``(label_maps, masks, images)``; the inputs are not modified.
    """
    from scipy import ndimage

    donors = [b for b in range(len(masks)) if bool(masks[b].any())]
    if probability <= 0 or not donors:
        return label_maps, masks, images
    label_maps, masks, images = label_maps.clone(), masks.clone(), images.clone()
    labels = label_maps[:, 0].cpu().numpy()
    shape = torch.tensor(labels.shape[1:])
    for b in range(len(masks)):
        if float(torch.rand(1, generator=generator, device=generator.device)) >= probability:
            continue
        donor = donors[_draw(generator, len(donors))]
        components, n = ndimage.label(masks[donor, 0].cpu().numpy() > 0, structure=np.ones((3, 3, 3)))
        lesion = torch.as_tensor(np.argwhere(components == 1 + _draw(generator, n)))
        offsets = lesion - lesion.float().mean(0).round().long()
        parenchyma = torch.as_tensor(np.isin(labels[b], (GREY, WHITE)))
        candidates = torch.nonzero(parenchyma)
        for _ in range(tries):
            target = candidates[_draw(generator, len(candidates))] + offsets
            if bool(((target >= 0) & (target < shape)).all()) and bool(parenchyma[tuple(target.T)].all()):
                break
        else:
            continue
        source, where = tuple(lesion.T.to(images.device)), tuple(target.T.to(images.device))
        for c in range(images.shape[1]):
            donor_ref, donor_scale = _reference(images[donor, c], label_maps[donor, 0])
            ref, scale = _reference(images[b, c], label_maps[b, 0])
            images[b, c][where] = (ref + (images[donor, c][source] - donor_ref) * scale / donor_scale).clamp(-1, 1)
        label_maps[b, 0][where] = LESION
        masks[b, 0][where] = 1.0
    return label_maps, masks, images


def _reference(image: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """White matter median and |white matter - CSF| median contrast of one channel (floored at 1e-3)."""
    white = image[labels == WHITE].median() if bool((labels == WHITE).any()) else image.median()
    csf = image[labels == CSF].median() if bool((labels == CSF).any()) else image.min()
    return white, (white - csf).abs().clamp_min(1e-3)


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
        ``loss_d``, ``loss_g_adv`` and ``loss_g_l1`` (unweighted), as floats; with
        ``lesion_l1_weight`` also ``loss_g_focus``, the L1 averaged over lesion voxels.
    """
    missing = [key for key in ("label_maps", "masks", "images") if key not in batch]
    if missing:
        raise ValueError(f"{NAME} batches need label_maps, masks and images; missing {missing} "
                         f"(the training store must hold label maps: key 'label_maps').")
    label_maps, masks, y = batch["label_maps"], batch["masks"], batch["images"]
    check_shape(y, config.channels, config, "batch['images']", DIMS, rows=label_maps.shape[0])
    if config.lesion_paste:
        label_maps, masks, y = paste_lesions(label_maps, masks, y, config.lesion_paste, step.generator)
    x = encode_conditions(label_maps, masks, config, "batch")
    if config.augment:
        x, y = flip_pairs(x, y, step.generator)
    if not config.lesion_l1_weight:
        return adversarial_step(models, optimizers, x, y, config, step)
    lesion = (x[:, -1:] > 0).to(y.dtype)  # the mask channel after the flip: (B, 1, D, H, W) in {0, 1}
    return adversarial_step(models, optimizers, x, y, config, step, focus=(lesion, config.lesion_l1_weight))


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
    iterative=False,
)
