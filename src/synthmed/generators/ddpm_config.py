"""The ``ddpm`` family's ``Config``, importable without torch.

The parameter check (``synthmed.parameters``) builds every block before each run;
``synthmed.generators.ddpm`` (the networks, training and sampling) re-exports ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass

CONDITIONING = ("class", "mask", "inpaint")
BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class Config:
    """``params:ddpm.model``.

    Args:
        image_size: height = width in pixels; divisible by 2 ** (len(block_out_channels) - 1).
        channels: image channels (1 for CT/MR slices).
        num_classes: number of classes; with ``"class"`` conditioning, labels lie in
            ``[0, num_classes)`` and ``num_classes`` itself is the null (unconditional) label.
        conditioning: subset of ``("class", "mask", "inpaint")``; see the module docstring.
        block_out_channels: UNet widths, one per resolution (highest first).
        layers_per_block: ResNet layers per UNet block.
        attention: self-attention blocks at the lowest resolution and in the mid block.
        train_timesteps: T, the number of diffusion steps in training.
        beta_schedule: diffusers name: ``"linear"`` (Ho et al. 2020) or ``"squaredcos_cap_v2"``
            (cosine, Nichol & Dhariwal 2021).
        prediction_type: ``"epsilon"`` (Ho et al. 2020) or ``"v_prediction"`` (Salimans & Ho 2022).
        learning_rate: AdamW learning rate.
        adam_betas: AdamW (beta1, beta2).
        weight_decay: AdamW decoupled weight decay.
        label_dropout: probability of replacing a label by the null label during training
            (classifier-free guidance).
        min_snr_gamma: Min-SNR-gamma loss weighting (Hang et al. 2023); None = plain MSE.
        ema_decay: decay of the EMA copy (``unet_ema``) kept by the trainer.
        grad_clip_norm: gradient norm clip applied by the trainer's ``clip``.
    """

    image_size: int = 32
    channels: int = 1
    num_classes: int = 0
    conditioning: tuple[str, ...] = ()
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention: bool = True
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    learning_rate: float = 1e-3
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    label_dropout: float = 0.1
    min_snr_gamma: float | None = 5.0
    ema_decay: float = 0.999
    grad_clip_norm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("conditioning", "block_out_channels", "adam_betas"):  # lists from Python callers
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.channels < 1:
            raise ValueError(f"ddpm.channels must be >= 1, got {self.channels}.")
        if self.num_classes < 0:
            raise ValueError(f"ddpm.num_classes must be >= 0, got {self.num_classes}.")
        unknown = [c for c in self.conditioning if c not in CONDITIONING]
        if unknown or len(set(self.conditioning)) != len(self.conditioning):
            raise ValueError(
                f"ddpm.conditioning must be distinct values from {list(CONDITIONING)}, got {list(self.conditioning)}."
            )
        if "class" in self.conditioning and self.num_classes < 1:
            raise ValueError(
                f"ddpm.conditioning includes 'class' but num_classes is {self.num_classes}; expected >= 1."
            )
        if not self.block_out_channels or any(int(w) < 1 for w in self.block_out_channels):
            raise ValueError(f"ddpm.block_out_channels must be a non-empty list of widths >= 1, got "
                             f"{list(self.block_out_channels)}.")
        factor = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size < 1 or self.image_size % factor:
            raise ValueError(f"ddpm.image_size must be a positive multiple of {factor} (the UNet halves it "
                             f"{len(self.block_out_channels) - 1} times), got {self.image_size}.")
        if self.layers_per_block < 1:
            raise ValueError(f"ddpm.layers_per_block must be >= 1, got {self.layers_per_block}.")
        if self.train_timesteps < 2:
            raise ValueError(f"ddpm.train_timesteps must be >= 2, got {self.train_timesteps}.")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"ddpm.beta_schedule must be one of {list(BETA_SCHEDULES)}, got {self.beta_schedule!r}.")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"ddpm.prediction_type must be one of {list(PREDICTION_TYPES)}, got {self.prediction_type!r}."
            )
        if not self.learning_rate > 0:
            raise ValueError(f"ddpm.learning_rate must be > 0, got {self.learning_rate}.")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"ddpm.adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}.")
        if self.weight_decay < 0:
            raise ValueError(f"ddpm.weight_decay must be >= 0, got {self.weight_decay}.")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"ddpm.label_dropout must be in [0, 1], got {self.label_dropout}.")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"ddpm.min_snr_gamma must be > 0 or null (plain MSE), got {self.min_snr_gamma}.")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ValueError(f"ddpm.ema_decay must be in [0, 1], got {self.ema_decay}.")
        if not self.grad_clip_norm > 0:
            raise ValueError(f"ddpm.grad_clip_norm must be > 0, got {self.grad_clip_norm}.")

    def needed_conditions(self) -> frozenset[str]:
        """Which of ``labels``, ``masks``, ``inpaint`` (images + keep) batches and sampling need."""
        names = {"class": "labels", "mask": "masks", "inpaint": "inpaint"}
        return frozenset(names[c] for c in self.conditioning)

    @property
    def in_channels(self) -> int:
        """UNet input channels: x_t, then the mask, then the known image and keep mask."""
        extra = (1 if "mask" in self.conditioning else 0) + (self.channels + 1 if "inpaint" in self.conditioning else 0)
        return self.channels + extra
