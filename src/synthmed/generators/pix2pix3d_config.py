"""The ``pix2pix3d`` family's ``Config``, importable without torch.

The parameter check (``synthmed.parameters``) builds every block before each run;
``synthmed.generators.pix2pix3d`` (the networks, training and sampling) re-exports ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthmed.core.validation import is_int, is_number
from synthmed.generators.pix2pix_config import check_config

NAME = "pix2pix3d"
LABEL_ENCODINGS = ("one_hot", "scaled")


@dataclass(frozen=True)
class Config:
    """Pix2Pix 3D hyper-parameters; the paper's objective and optimiser, small CPU widths.

    Args:
        image_size: side of the cubic volumes in voxels; divisible by ``2**depth``.
        channels: channels of the generated volume.
        num_classes: kept for the shared vocabulary; not class-conditional, so 0.
        label_classes: label map values are ``0 .. label_classes - 1`` (the test cohort's:
            background, CSF, grey matter, white matter, lesion, edema = 6).
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
        lesion_l1_weight: weight (times ``lambda_l1``) of an extra L1 term averaged over the
            lesion mask's voxels only; 0 = the paper's objective.
        lesion_paste: probability that a training volume receives a copy of a real lesion of its
            batch at a random grey / white matter place (``pix2pix3d.paste_lesions``); 0 = off.
        upsampling: ``transpose`` (the paper's ConvTranspose(4, stride 2) in the decoder) or
            ``resize`` (nearest-neighbour x2 then a 3x3x3 convolution: no checkerboard texture).
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
    lesion_l1_weight: float = 0.0
    lesion_paste: float = 0.0
    upsampling: str = "transpose"

    def __post_init__(self) -> None:
        if not is_number(self.lesion_l1_weight) or self.lesion_l1_weight < 0:
            raise ValueError(f"{NAME} lesion_l1_weight must be a number >= 0, got {self.lesion_l1_weight!r}.")
        if not is_number(self.lesion_paste) or not 0 <= self.lesion_paste <= 1:
            raise ValueError(f"{NAME} lesion_paste must be a probability in [0, 1], got {self.lesion_paste!r}.")
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
