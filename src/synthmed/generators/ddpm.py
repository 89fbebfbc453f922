"""Denoising diffusion (DDPM) generator: a diffusers ``UNet2DModel`` and diffusers schedulers.

Read top to bottom: the configuration, the network, the training step (Ho et al. 2020,
Algorithm 1), then the sampler loop (Algorithm 2 / DDIM / DPM-Solver++).

Conditioning (``Config.conditioning``, any subset):

- ``"class"``: a class embedding added to the timestep embedding (``num_class_embeds``);
  index ``num_classes`` is the null label used for classifier-free guidance
  (Ho & Salimans 2022): the label is dropped to it with probability ``label_dropout``
  during training.
- ``"mask"``: the structure/lesion mask ``(B, 1, H, W)`` is concatenated to the noisy image.
- ``"inpaint"``: the known image ``images * keep`` and ``keep`` itself are concatenated;
  training draws random keep masks. At sampling time the known region is also pasted at
  every step (RePaint, Lugmayr et al. 2022), which works without this conditioning too.

The UNet input is the channel concatenation, in this order:
``[x_t (C), mask (1, "mask"), images * keep (C, "inpaint"), keep (1, "inpaint")]``.

References:
    Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (eq. 4, eq. 14,
    Algorithms 1 and 2). Nichol & Dhariwal 2021 (cosine schedule). Song, Meng & Ermon 2021
    (DDIM). Lu et al. 2022 (DPM-Solver++). Salimans & Ho 2022 (v-prediction). Ho & Salimans
    2022 (classifier-free guidance). Hang et al. 2023 (Min-SNR weighting). Lugmayr et al.
    2022 (RePaint). Lin et al. 2024 (trailing timestep spacing, Table 2).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.core.seeding import seeded
from synthmed.generators.base import Batch, Conditions, FamilySpec, SamplerSpec, StepContext
from synthmed.generators.common import apply_gradients
from synthmed.generators.ddpm_config import BETA_SCHEDULES, CONDITIONING, PREDICTION_TYPES, Config  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from diffusers import DDPMScheduler

# diffusers (about 3 s to import on 2 cores) is imported where a model or scheduler is built:
# the parameter check imports this module for ``Config`` before every run.


# GroupNorm groups: the largest divisor of every block width up to this (diffusers uses 32
# for 128+ channel models; small research UNets keep >= 4 channels per group).
MAX_NORM_GROUPS = 8
# Attention head width at the lowest resolution (diffusers' UNet2DModel default).
ATTENTION_HEAD_DIM = 8
# DPM-Solver++: clip lambda(t) = log(alpha_t / sigma_t) from below; diffusers documents this
# as critical for the cosine schedule, whose last steps have alpha_t ~ 0.
DPM_LAMBDA_MIN_CLIPPED = -5.1
# Images are in [-1, 1]: every sampler clips its estimate of x0 to this (diffusers' dynamic
# thresholding with sample_max_value 1 is this static clip).
DATA_RANGE_MAX = 1.0
# Inpainting during training: the random rectangle to fill covers this fraction of the image.
HOLE_AREA_RANGE = (0.25, 0.75)
# ... and a sample with a mask uses "fill the mask" (keep = 1 - mask) with this probability.
MASK_HOLE_PROBABILITY = 0.5


# ------------------------------------------------------------------ configuration

# In ddpm_config (no torch there: the parameter check imports it before every run).


# ------------------------------------------------------------------ the network


def build(config: Config, seed: int) -> nn.ModuleDict:
    """``{"unet": UNet2DModel, "unet_ema": its frozen copy}``, initialised from ``seed``."""
    widths = tuple(int(w) for w in config.block_out_channels)
    width_gcd = math.gcd(*widths)
    groups = max(d for d in range(1, MAX_NORM_GROUPS + 1) if width_gcd % d == 0)
    lowest = len(widths) - 1
    down = tuple("AttnDownBlock2D" if config.attention and i == lowest else "DownBlock2D" for i in range(len(widths)))
    up = tuple("AttnUpBlock2D" if config.attention and i == 0 else "UpBlock2D" for i in range(len(widths)))
    head_dim = ATTENTION_HEAD_DIM if widths[-1] % ATTENTION_HEAD_DIM == 0 else widths[-1]
    from diffusers import UNet2DModel

    with seeded(seed):
        unet = UNet2DModel(
            sample_size=config.image_size,
            in_channels=config.in_channels,
            out_channels=config.channels,
            block_out_channels=widths,
            down_block_types=down,
            up_block_types=up,
            layers_per_block=config.layers_per_block,
            norm_num_groups=groups,
            attention_head_dim=head_dim,
            add_attention=config.attention,
            num_class_embeds=config.num_classes + 1 if "class" in config.conditioning else None,
        )
    ema = copy.deepcopy(unet).requires_grad_(False)
    return nn.ModuleDict({"unet": unet, "unet_ema": ema})


def make_optimizers(models: nn.ModuleDict, config: Config) -> dict[str, torch.optim.Optimizer]:
    """AdamW on the trainable UNet (the EMA copy is updated by the trainer, not optimised)."""
    optimizer = torch.optim.AdamW(models["unet"].parameters(), lr=config.learning_rate,
                                  betas=tuple(config.adam_betas), weight_decay=config.weight_decay)
    return {"unet": optimizer}


@functools.lru_cache(maxsize=16)
def noise_scheduler(config: Config) -> DDPMScheduler:
    """The forward process q(x_t | x_0) of training; samplers are built ``from_config`` of it.

    Cached per (frozen, hashable) config: building the beta tables every training step
    cost about 10% of CPU training time. Never mutate the returned scheduler; samplers call
    ``set_timesteps`` on their own copies.

    ``clip_sample`` clips the predicted x_0 to the data range [-1, 1] in DDPM/DDIM steps;
    "trailing" spacing makes the first sampling step t = T - 1, the step the model was
    trained on with (almost) pure noise (Lin et al. 2024, Table 2).
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=True,
        clip_sample_range=DATA_RANGE_MAX,
        timestep_spacing="trailing",
    )


def _conditioning_channels(config: Config, masks: torch.Tensor | None, known: torch.Tensor | None,
                           keep: torch.Tensor | None) -> list[torch.Tensor]:
    """The channels concatenated after x_t, in the order of ``Config.in_channels``."""
    channels = []
    if "mask" in config.conditioning:
        channels.append(masks)
    if "inpaint" in config.conditioning:
        channels += [known * keep, keep]
    return channels


# ------------------------------------------------------------------ training


def _check_batch(batch: Batch, config: Config) -> torch.Tensor:
    images = batch.get("images")
    size = config.image_size
    if images is None or images.ndim != 4 or tuple(images.shape[1:]) != (config.channels, size, size):
        shape = None if images is None else tuple(images.shape)
        raise ValueError(f"Expected batch['images'] with shape (B, {config.channels}, {size}, {size}), got {shape}.")
    b = images.shape[0]
    if "class" in config.conditioning:
        labels = batch.get("labels")
        if labels is None or tuple(labels.shape) != (b,):
            raise ValueError(f"'class' conditioning needs batch['labels'] with shape ({b},), got "
                             f"{None if labels is None else tuple(labels.shape)}.")
        bad = labels[(labels < 0) | (labels >= config.num_classes)]
        if bad.numel():  # the index num_classes is reserved for the null label
            raise ValueError(f"batch['labels'] must lie in [0, {config.num_classes}), got {bad[0].item()}.")
    if "mask" in config.conditioning or ("inpaint" in config.conditioning and "masks" in batch):
        masks = batch.get("masks")
        if masks is None or tuple(masks.shape) != (b, 1, size, size):
            raise ValueError(f"Expected batch['masks'] with shape ({b}, 1, {size}, {size}), got "
                             f"{None if masks is None else tuple(masks.shape)}.")
    return images


def random_keep(batch: Batch, config: Config, generator: torch.Generator) -> torch.Tensor:
    """Inpainting keep masks ``(B, 1, H, W)`` float32 in {0, 1} for one training batch.

    Each sample's hole (keep = 0) is a random rectangle covering ``HOLE_AREA_RANGE`` of the
    image or, when the batch has masks, with probability ``MASK_HOLE_PROBABILITY`` its mask.
    """
    images = batch["images"]
    b, size = images.shape[0], config.image_size
    draw = {"generator": generator, "device": generator.device}
    # Area fraction a ~ U(range); the height fraction in [a, 1] makes width fraction a / h <= 1.
    lo, hi = HOLE_AREA_RANGE
    area = lo + (hi - lo) * torch.rand(b, **draw)
    height_frac = area + (1 - area) * torch.rand(b, **draw)
    h = (height_frac * size).round().clamp(1, size)
    w = (area / height_frac * size).round().clamp(1, size)
    top = (torch.rand(b, **draw) * (size - h + 1)).floor()
    left = (torch.rand(b, **draw) * (size - w + 1)).floor()
    pos = torch.arange(size, device=generator.device, dtype=h.dtype)
    rows = (pos[None, :] >= top[:, None]) & (pos[None, :] < (top + h)[:, None])  # (B, H)
    cols = (pos[None, :] >= left[:, None]) & (pos[None, :] < (left + w)[:, None])  # (B, W)
    keep = (~(rows[:, :, None] & cols[:, None, :])).float()[:, None].to(images.device)  # (B, 1, H, W)
    if "masks" in batch:
        use_mask = (torch.rand(b, **draw) < MASK_HOLE_PROBABILITY).to(images.device)
        keep = torch.where(use_mask[:, None, None, None], 1.0 - batch["masks"].float(), keep)
    return keep


def drop_labels(labels: torch.Tensor, config: Config, generator: torch.Generator) -> torch.Tensor:
    """Labels with each replaced by the null label ``num_classes`` with probability ``label_dropout``."""
    dropped = (torch.rand(labels.shape[0], generator=generator, device=generator.device)
               < config.label_dropout).to(labels.device)
    return torch.where(dropped, torch.full_like(labels, config.num_classes), labels)


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, config: Config) -> torch.Tensor:
    """Per-sample loss weights ``(B,)``: Min-SNR-gamma (Hang et al. 2023).

    SNR(t) = abar_t / (1 - abar_t). For epsilon targets w = min(SNR, gamma) / SNR; for v
    targets w = min(SNR, gamma) / (SNR + 1). Plain MSE (w = 1) when ``min_snr_gamma`` is None.
    """
    if config.min_snr_gamma is None:
        return torch.ones(timesteps.shape[0], device=timesteps.device)
    alpha_bar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alpha_bar / (1.0 - alpha_bar)
    clipped = snr.clamp(max=config.min_snr_gamma)
    return clipped / snr if config.prediction_type == "epsilon" else clipped / (snr + 1.0)


def train_step(models: nn.ModuleDict, optimizers: dict[str, torch.optim.Optimizer], batch: Batch,
               config: Config, step: StepContext) -> dict[str, float]:
    """One step of Ho et al. 2020, Algorithm 1, on ``batch`` (images ``(B, C, H, W)`` in [-1, 1]).

    Returns ``{"loss": float}``. The EMA copy is left to the trainer (``ema_modules``).
    """
    x0 = _check_batch(batch, config)
    unet, optimizer = models["unet"], optimizers["unet"]
    device, b = x0.device, x0.shape[0]
    scheduler = noise_scheduler(config)
    generator = step.generator

    # (1) Algorithm 1, lines 3-4: t ~ Uniform({1, ..., T}) (0-based here), eps ~ N(0, I).
    t = torch.randint(0, config.train_timesteps, (b,), generator=generator, device=generator.device).to(device)
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(device)

    # (2) q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (eq. 4). The regression target is
    #     eps (eq. 14) or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022, Sec. 4).
    x_t = scheduler.add_noise(x0, noise, t)
    target = noise if config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)

    # (3) Conditioning channels: the mask, and for inpainting a random keep mask with the
    #     known pixels x_0 * keep.
    keep = random_keep(batch, config, generator) if "inpaint" in config.conditioning else None
    masks = batch["masks"].float() if "mask" in config.conditioning else None
    model_input = torch.cat([x_t, *_conditioning_channels(config, masks, x0, keep)], dim=1)

    # (4) Classifier-free guidance training (Ho & Salimans 2022, Algorithm 1): drop labels to
    #     the null label with probability label_dropout.
    labels = drop_labels(batch["labels"].long(), config, generator) if "class" in config.conditioning else None

    # (5) L_simple = || target - model(x_t, t) ||^2 (eq. 14), per sample, Min-SNR weighted.
    with step.autocast():
        prediction = unet(model_input, t, class_labels=labels).sample
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    loss = (per_sample * min_snr_weights(scheduler, t, config)).mean()

    # (6) Algorithm 1, line 5: a gradient step (clipped by the trainer's configured norm).
    apply_gradients(optimizer, loss, unet, step)
    return {"loss": float(loss.detach())}


# ------------------------------------------------------------------ sampling


def sampling_scheduler(config: Config, sampler: SamplerSpec):
    """The diffusers scheduler for ``sampler.name``, on the training betas and prediction type."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    base = noise_scheduler(config).config
    if sampler.name == "ddpm":
        scheduler = DDPMScheduler.from_config(base)
    elif sampler.name == "ddim":
        scheduler = DDIMScheduler.from_config(base)
    elif sampler.name == "dpmsolver++":
        # DPM-Solver++'s own "linspace" spacing also starts at T - 1 and honours the lambda clip.
        # Its x0 estimate is clipped to the data range, as DDPM's and DDIM's are (their default
        # clip_sample): at the first steps x0 = (x_t - sigma_t eps) / alpha_t divides by alpha_t
        # ~ 0.006, and without the clip an eps model trained for minutes drew noise, not brains
        # (benchmarks/RESULTS.md, "Samplers on conf/base's DDPM").
        scheduler = DPMSolverMultistepScheduler.from_config(
            base, algorithm_type="dpmsolver++", timestep_spacing="linspace", lambda_min_clipped=DPM_LAMBDA_MIN_CLIPPED,
            thresholding=True, sample_max_value=DATA_RANGE_MAX,
        )
    else:  # SamplerSpec validates the name; this guards a new name added there only
        raise ValueError(f"ddpm cannot sample with {sampler.name!r}; expected ddpm, ddim or dpmsolver++.")
    scheduler.set_timesteps(sampler.steps)
    if len(torch.unique(scheduler.timesteps)) < len(scheduler.timesteps):
        # DPM-Solver++ divides by the log-SNR gap between steps: a repeated timestep gives NaN.
        # Only happens when steps approach the (lambda-clipped) number of training timesteps.
        raise ValueError(f"{sampler.name} with steps={sampler.steps} repeats timesteps "
                         f"{scheduler.timesteps.tolist()} of train_timesteps={config.train_timesteps}; "
                         "use fewer steps or the ddim sampler.")
    return scheduler


def _check_conditions(conditions: Conditions, config: Config, sampler: SamplerSpec) -> None:
    n, size = conditions.n, config.image_size
    if sampler.steps > config.train_timesteps:
        raise ValueError(f"sampler steps must be <= train_timesteps={config.train_timesteps}, got {sampler.steps}.")
    needed = config.needed_conditions()
    if "labels" in needed:
        if conditions.labels is None:
            raise ValueError("This ddpm model is class-conditional: Conditions.labels is missing.")
        labels = conditions.labels
        bad = labels[(labels < 0) | (labels >= config.num_classes)]
        if bad.numel():
            raise ValueError(f"Conditions.labels must lie in [0, {config.num_classes}), got {bad[0].item()}.")
    if "masks" in needed and conditions.masks is None:
        raise ValueError("This ddpm model is mask-conditional: Conditions.masks is missing.")
    if "inpaint" in needed and conditions.images is None:
        raise ValueError("This ddpm model is an inpainting model: Conditions.images and Conditions.keep are missing.")
    expected = {"masks": (n, 1, size, size), "keep": (n, 1, size, size), "images": (n, config.channels, size, size)}
    for name, shape in expected.items():
        value = getattr(conditions, name)
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"Expected Conditions.{name} with shape {shape}, got {tuple(value.shape)}.")
    if conditions.keep is not None and not ((conditions.keep == 0) | (conditions.keep == 1)).all():
        raise ValueError("Conditions.keep must contain only 0 and 1 (1 = keep the given pixel).")


def _predict(unet: nn.Module, x_t: torch.Tensor, t: torch.Tensor, extra: list[torch.Tensor],
             labels: torch.Tensor | None, guidance_scale: float, null_label: int) -> torch.Tensor:
    """The model output at (x_t, t), with classifier-free guidance when labels are given.

    Guided output = out_uncond + w (out_cond - out_uncond) (Ho & Salimans 2022, eq. 6 with
    their w + 1 = our w), the two passes batched. Linear, so it applies to eps and v alike.
    """
    model_input = torch.cat([x_t, *extra], dim=1)
    if labels is None or guidance_scale == 1.0:
        return unet(model_input, t, class_labels=labels).sample
    null = torch.full_like(labels, null_label)
    both = unet(torch.cat([model_input, model_input]), t, class_labels=torch.cat([labels, null])).sample
    cond, uncond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def sample(models: nn.ModuleDict, config: Config, conditions: Conditions, sampler: SamplerSpec,
           generator: torch.Generator) -> torch.Tensor:
    """Draw ``conditions.n`` images: ``(N, C, H, W)`` float32 in [-1, 1] on the CPU.

    Uses ``unet_ema`` when present. Conditions the config does not use (labels for an
    unconditional model, masks for a model without ``"mask"``) are ignored; inpainting
    context (``images`` + ``keep``) is always honoured: its known pixels are returned exactly.
    Deterministic for a given ``generator`` on CPU.

    Raises:
        ValueError: a needed condition is missing, a label is out of range, or a mask,
            keep or image tensor has the wrong shape.
    """
    _check_conditions(conditions, config, sampler)
    unet = models["unet_ema"] if "unet_ema" in models else models["unet"]
    device = next(unet.parameters()).device
    n, size = conditions.n, config.image_size
    forward = noise_scheduler(config)  # q(x_t | x_0) for the RePaint paste
    scheduler = sampling_scheduler(config, sampler)

    def randn(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=generator.device).to(device)

    labels = conditions.labels.to(device).long() if "class" in config.conditioning else None
    masks = conditions.masks.to(device).float() if "mask" in config.conditioning else None
    known = conditions.images.to(device).float() if conditions.images is not None else None
    keep = conditions.keep.to(device).float() if conditions.keep is not None else None
    extra = _conditioning_channels(config, masks, known, keep)
    step_kwargs: dict[str, Any] = {"generator": generator}
    if sampler.name == "ddim":
        step_kwargs["eta"] = sampler.eta

    # (1) Algorithm 2, line 1: x_T ~ N(0, I).
    x = randn((n, config.channels, size, size)) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        # (2) RePaint (Lugmayr et al. 2022, eqs. 8-10): the known region at the current noise level,
        #     x_t[keep] ~ q(x_t | x_0 = known), the unknown region from the model.
        if keep is not None:
            x_known = forward.add_noise(known, randn(tuple(known.shape)), t.reshape(1).to(device))
            x = torch.where(keep.bool(), x_known, x)
        # (3) The model's eps (Ho et al. eq. 11) or v, with classifier-free guidance.
        out = _predict(unet, scheduler.scale_model_input(x, t), t.to(device), extra, labels,
                       sampler.guidance_scale, config.num_classes)
        # (4) x_{t-1} from the scheduler: ancestral DDPM (Algorithm 2, line 4), DDIM (Song et al.
        #     2021, eq. 12) or DPM-Solver++ (Lu et al. 2022, Algorithm 2).
        x = scheduler.step(out.float(), t, x, **step_kwargs).prev_sample
    # (5) The known pixels exactly, then the data range.
    if keep is not None:
        x = torch.where(keep.bool(), known, x)
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"ddpm sampling with {sampler} produced non-finite values (diverged model?).")
    return x.clamp(-1.0, 1.0).float().cpu()


FAMILY = FamilySpec(
    name="ddpm",
    config_cls=Config,
    build=build,
    make_optimizers=make_optimizers,
    train_step=train_step,
    sample=sample,
    ema_modules=("unet",),
)
