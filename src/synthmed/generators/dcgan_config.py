"""The ``dcgan`` family's ``Config``, importable without torch.

The parameter check (``synthmed.parameters``) builds every block before each run;
``synthmed.generators.dcgan`` (the networks, training and sampling) re-exports ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthmed.core.validation import is_int, is_number

MIN_IMAGE_SIZE = 16
DISCRIMINATOR_CONDITIONING = ("label_map", "projection")


@dataclass(frozen=True)
class Config:
    """DCGAN hyper-parameters; the defaults are Radford et al.'s (64 px, z of 100 dims).

    Args:
        image_size: side of the square images in pixels: a power of two >= 16.
        channels: image channels.
        num_classes: 0 = unconditional; otherwise labels in ``[0, num_classes)`` condition
            both networks.
        latent_dim: dimension of z ~ N(0, I).
        base_channels: width of the generator's last hidden layer and the discriminator's
            first; each resolution halving doubles it (64 -> 8x at 4x4 for 64 px).
        learning_rate: Adam learning rate of the generator (and of the discriminator unless
            ``discriminator_learning_rate`` is set).
        discriminator_learning_rate: the discriminator's own learning rate (the two time-scale
            update rule, Heusel et al. 2017, https://arxiv.org/abs/1706.08500; Zhang et al. 2019
            train D at 4e-4 and G at 1e-4); None = ``learning_rate``.
        beta1, beta2: Adam momentum terms (0.5 "helped stabilize training", sec. 4).
        label_embedding_dim: size of the learned class embedding (conditional only).
        discriminator_conditioning: how D sees the class (conditional only). ``label_map``: a
            learned ``H x W`` map of the label as an extra input channel. ``projection``: the
            projection discriminator of Miyato & Koyama 2018 (https://arxiv.org/abs/1802.05637),
            logit = head(features) + <embed(label), sum-pooled features>, so D scores how well
            the image's features match its class, not only how real it looks.
        diff_augment: apply DiffAugment (Zhao et al. 2020: brightness, contrast, translation
            by up to 1/8, cutout of 1/2) to real and fake images alike before D; with a few
            hundred training images, D otherwise memorises them and G collapses.
        minibatch_std: append the batch standard deviation of D's last features as an
            extra channel (Karras et al. 2018, sec. 3), so D can see a collapsed batch.
        grad_clip_norm: clip both networks' gradients to this norm; None = no clipping.
        auxiliary_classifier_weight: conditional only; > 0 adds an auxiliary classifier to D (the
            AC-GAN of Odena, Olah & Shlens 2017, https://arxiv.org/abs/1610.09585): a linear head
            on D's pooled last features predicts the class. It learns on real images only, and G
            is trained to make its images classified as the class they were drawn for, with this
            weight on the cross-entropy beside the adversarial loss. 0 = off (no head).
    """

    image_size: int = 64
    channels: int = 1
    num_classes: int = 0
    latent_dim: int = 100
    base_channels: int = 64
    learning_rate: float = 2e-4
    discriminator_learning_rate: float | None = None
    beta1: float = 0.5
    beta2: float = 0.999
    label_embedding_dim: int = 16
    discriminator_conditioning: str = "label_map"
    grad_clip_norm: float | None = None
    diff_augment: bool = True
    minibatch_std: bool = True
    auxiliary_classifier_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "latent_dim", "base_channels", "label_embedding_dim"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"dcgan {name} must be an integer >= 1, got {value!r}.")
        if self.image_size < MIN_IMAGE_SIZE or self.image_size & (self.image_size - 1):
            raise ValueError(
                f"dcgan image_size must be a power of two >= {MIN_IMAGE_SIZE} (e.g. 64 or 128), got {self.image_size}."
            )
        if not is_int(self.num_classes) or self.num_classes < 0:
            raise ValueError(
                f"dcgan num_classes must be an integer >= 0 (0 = unconditional), got {self.num_classes!r}."
            )
        if self.discriminator_conditioning not in DISCRIMINATOR_CONDITIONING:
            raise ValueError(f"dcgan discriminator_conditioning must be one of {list(DISCRIMINATOR_CONDITIONING)}, "
                             f"got {self.discriminator_conditioning!r}.")
        if not is_number(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"dcgan learning_rate must be a number > 0, got {self.learning_rate!r}.")
        if self.discriminator_learning_rate is not None and (
                not is_number(self.discriminator_learning_rate) or self.discriminator_learning_rate <= 0):
            raise ValueError(f"dcgan discriminator_learning_rate must be a number > 0 or null, "
                             f"got {self.discriminator_learning_rate!r}.")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not is_number(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"dcgan {name} must be a number in [0, 1), got {value!r}.")
        if not is_number(self.auxiliary_classifier_weight) or self.auxiliary_classifier_weight < 0:
            raise ValueError(f"dcgan auxiliary_classifier_weight must be a number >= 0 (0 = off), "
                             f"got {self.auxiliary_classifier_weight!r}.")
        if self.auxiliary_classifier_weight > 0 and not self.conditional:
            raise ValueError(f"dcgan auxiliary_classifier_weight={self.auxiliary_classifier_weight} needs classes "
                             "(num_classes > 0): an unconditional DCGAN has nothing to classify.")
        if self.grad_clip_norm is not None and (not is_number(self.grad_clip_norm) or self.grad_clip_norm <= 0):
            raise ValueError(f"dcgan grad_clip_norm must be a number > 0 or null, got {self.grad_clip_norm!r}.")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def needed_conditions(self) -> frozenset[str]:
        """``labels`` for a class-conditional model, nothing otherwise."""
        return frozenset({"labels"}) if self.conditional else frozenset()
