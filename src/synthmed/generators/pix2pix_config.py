"""The ``pix2pix`` family's ``Config``, importable without torch.

The parameter check (``synthmed.parameters``) builds every block before each run;
``synthmed.generators.pix2pix`` (the networks, training and sampling) re-exports ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synthmed.core.validation import is_int, is_number

# How the U-Net decoder doubles the size: the paper's ConvTranspose(4, stride 2), or a
# nearest-neighbour resize then a 3x3 convolution (no checkerboard texture; Odena et al. 2016).
UPSAMPLINGS = ("transpose", "resize")


@dataclass(frozen=True)
class Config:
    """Pix2Pix hyper-parameters; the defaults are the paper's (at 64 px instead of 256).

    Args:
        image_size: side of the square images in pixels; divisible by ``2**depth``.
        channels: channels of the generated image.
        num_classes: kept for the shared vocabulary; Pix2Pix is not class-conditional, so 0.
        mask_channels: channels of the conditioning mask (the batch vocabulary uses 1); with
            ``label_classes`` > 0, that many (one per label value).
        label_classes: 0: the condition is the binary mask (mask > 0). K > 1: the condition is the
            label map (values 0..K-1; 2D slices carry it as their mask, e.g. the cohort's 0
            background, 1 CSF, 2 grey matter, 3 white matter, 4 lesion, 5 edema), one-hot encoded into K
            channels, so the generator is told where each tissue and each lesion is.
        base_channels: width of the first encoder layer (the paper's 64); deeper layers
            double it up to 8x.
        depth: number of down-sampling levels of the U-Net (8 at 256 px in the paper, which
            reaches a 1x1 bottleneck; 6 does the same at 64 px).
        dropout: decoder dropout rate in the ``DROPOUT_BLOCKS`` innermost up blocks, also the
            test-time noise source (paper sec. 3.2).
        lambda_l1: weight of the L1 term in eq. 4 (paper: 100).
        learning_rate: Adam learning rate for both networks (paper: 2e-4).
        beta1, beta2: Adam momentum terms (paper: 0.5, 0.999).
        discriminator_layers: stride-2 convolutions of the PatchGAN (3 = the 70x70 PatchGAN).
        augment: random flips and 90-degree rotations, identical for mask and image.
        grad_clip_norm: clip both networks' gradients to this norm; None = no clipping.
        upsampling: ``transpose`` (the paper's ConvTranspose(4, stride 2) in the decoder) or
            ``resize`` (nearest-neighbour x2 then a 3x3 convolution: no checkerboard texture).
        lesion_label: with ``label_classes``, the label-map value of a lesion (the cohort's 4),
            whose pixels ``lesion_l1_weight`` weighs; None: no such label.
        lesion_l1_weight: weight (times ``lambda_l1``) of an extra L1 term averaged over the
            ``lesion_label`` pixels of the batch only (``pix2pix3d``'s, on slices): a lesion of a
            few pixels then weighs as much as this many whole images; 0 = the paper's objective.
    """

    image_size: int = 64
    channels: int = 3
    num_classes: int = 0
    mask_channels: int = 1
    label_classes: int = 0
    base_channels: int = 64
    depth: int = 6
    dropout: float = 0.5
    lambda_l1: float = 100.0
    learning_rate: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    discriminator_layers: int = 3
    augment: bool = True
    grad_clip_norm: float | None = None
    upsampling: str = "transpose"
    lesion_label: int | None = None
    lesion_l1_weight: float = 0.0

    def __post_init__(self) -> None:
        check_config(self, "pix2pix")
        if not is_int(self.label_classes) or self.label_classes < 0 or self.label_classes == 1:
            raise ValueError(f"pix2pix label_classes must be 0 (binary mask) or an integer >= 2, "
                             f"got {self.label_classes!r}.")
        if self.label_classes and self.mask_channels != self.label_classes:
            raise ValueError(f"pix2pix mask_channels must equal label_classes ({self.label_classes}: one channel "
                             f"per label value), got {self.mask_channels}.")
        if self.lesion_label is not None and (not is_int(self.lesion_label) or self.lesion_label < 1):
            raise ValueError(f"pix2pix lesion_label must be null or a label value >= 1, got {self.lesion_label!r}.")
        if not is_number(self.lesion_l1_weight) or self.lesion_l1_weight < 0:
            raise ValueError(f"pix2pix lesion_l1_weight must be a number >= 0, got {self.lesion_l1_weight!r}.")
        if self.lesion_l1_weight and (self.lesion_label is None or self.lesion_label >= self.label_classes):
            raise ValueError(f"pix2pix lesion_l1_weight={self.lesion_l1_weight} needs lesion_label, a label-map value "
                             f"below label_classes={self.label_classes} (the pixels it weighs), got "
                             f"{self.lesion_label!r}; a binary mask (label_classes 0) has no lesion label: set "
                             "lesion_l1_weight: 0.")

    def needed_conditions(self) -> frozenset[str]:
        """Pix2Pix translates a mask (or, with ``label_classes``, a label map) into an image."""
        return frozenset({"masks", "label_maps"} if self.label_classes else {"masks"})


def check_config(config: Any, family: str) -> None:
    """Raise a ``ValueError`` naming ``family``, the field and the value found unless the
    shared Pix2Pix fields of ``config`` are valid (``pix2pix3d`` checks the same ones)."""
    for name in ("image_size", "channels", "mask_channels", "base_channels", "depth", "discriminator_layers"):
        value = getattr(config, name)
        if not is_int(value) or value < 1:
            raise ValueError(f"{family} {name} must be an integer >= 1, got {value!r}.")
    if not is_int(config.num_classes) or config.num_classes != 0:
        raise ValueError(
            f"{family} num_classes must be 0 (it is conditioned on masks, not labels), got {config.num_classes!r}."
        )
    if config.image_size % 2**config.depth:
        raise ValueError(
            f"{family} image_size must be divisible by 2**depth = {2**config.depth}, "
            f"got image_size={config.image_size} with depth={config.depth}."
        )
    if 2**config.discriminator_layers > config.image_size:
        raise ValueError(
            f"{family} discriminator_layers must satisfy 2**discriminator_layers <= image_size={config.image_size}, "
            f"got {config.discriminator_layers}."
        )
    if not is_number(config.dropout) or not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"{family} dropout must be a number in [0, 1), got {config.dropout!r}.")
    if not is_number(config.lambda_l1) or config.lambda_l1 < 0:
        raise ValueError(f"{family} lambda_l1 must be a number >= 0, got {config.lambda_l1!r}.")
    if not is_number(config.learning_rate) or config.learning_rate <= 0:
        raise ValueError(f"{family} learning_rate must be a number > 0, got {config.learning_rate!r}.")
    for name in ("beta1", "beta2"):
        value = getattr(config, name)
        if not is_number(value) or not 0.0 <= value < 1.0:
            raise ValueError(f"{family} {name} must be a number in [0, 1), got {value!r}.")
    if not isinstance(config.augment, bool):
        raise ValueError(f"{family} augment must be true or false, got {config.augment!r}.")
    if config.grad_clip_norm is not None and (not is_number(config.grad_clip_norm) or config.grad_clip_norm <= 0):
        raise ValueError(f"{family} grad_clip_norm must be a number > 0 or null, got {config.grad_clip_norm!r}.")
    if config.upsampling not in UPSAMPLINGS:
        raise ValueError(f"{family} upsampling must be one of {list(UPSAMPLINGS)}, got {config.upsampling!r}.")
