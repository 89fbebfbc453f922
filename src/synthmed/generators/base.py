"""The contract every generator family implements.

A family is one self-contained module (``ddpm.py``, ``pix2pix.py``, ``dcgan.py``) that
defines a frozen ``Config`` dataclass and five functions, bundled in a module-level
``FAMILY = FamilySpec(...)``:

- ``build(config, seed) -> nn.ModuleDict``: the networks, initialised from ``seed``.
- ``make_optimizers(models, config) -> dict[str, Optimizer]``.
- ``train_step(models, optimizers, batch, config, step) -> dict[str, float]``: one
  optimisation step on one batch (zero grads, forward, ``step.backward``, clip, step);
  returns the losses for logging.
- ``sample(models, config, conditions, sampler, generator) -> Tensor``: ``(N, C, H, W)``
  float32 in [-1, 1] (volume families: ``(N, C, D, H, W)``), deterministic for a given
  ``generator`` on CPU.
- ``ema_modules``: names of modules whose parameters the trainer keeps an EMA copy of
  (``"<name>_ema"`` in the ModuleDict), used by ``sample`` when present.

Saving and loading are common to all families (``common.save_generator`` /
``common.load_generator``); ``registry.py`` is the only place that maps a family name to
its module.

Batches and conditions use one vocabulary. ``FamilySpec.spatial_dims`` says how many spatial
sides a family's tensors have: 2 for images ``(H, W)``, 3 for volumes ``(D, H, W)``, written
``*S`` below; every side is the config's ``image_size``.

- ``images``: ``(B, C, *S)`` float32 in [-1, 1];
- ``labels``: ``(B,)`` int64 class indices in ``[0, num_classes)``;
- ``masks``: ``(B, 1, *S)`` float32 in {0, 1}: the structure/lesion mask to condition on;
- ``keep``: ``(B, 1, *S)`` float32 in {0, 1}: inpainting, 1 where ``images`` is kept;
- ``label_maps``: ``(B, 1, *S)`` int64 tissue labels (volume families: the anatomy to draw).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from synthmed.core.lazy import lazy_import

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
torch = lazy_import("torch")
nn = lazy_import("torch.nn")

Batch = Mapping[str, "torch.Tensor"]  # a string: torch is imported on first use

SAMPLERS = ("ddpm", "ddim", "dpmsolver++")


def label_map_array(store: Mapping[str, Any]) -> Any:
    """The array of a store's label maps: its own ``label_maps`` (volumes: tissue labels beside the
    lesion masks), else its ``masks``, whose values are the label map on 2D slices. A family that
    reads label maps one-hot encodes them; one that reads masks takes ``masks > 0``."""
    return store["label_maps"] if "label_maps" in store else store["masks"]


@dataclass(frozen=True)
class SamplerSpec:
    """How to draw samples. GAN families ignore ``name`` and ``steps`` (one forward pass).

    Args:
        name: one of ``SAMPLERS``: ancestral DDPM (Ho et al. 2020), DDIM (Song et al. 2021),
            DPM-Solver++ (Lu et al. 2022), all as diffusers schedulers.
        steps: number of denoising steps (DDPM: at most the training timesteps).
        guidance_scale: classifier-free guidance weight w (Ho & Salimans 2022); 1.0 means
            no guidance; only used by class-conditional models.
        eta: DDIM stochasticity (0 = deterministic DDIM).
    """

    name: str = "ddim"
    steps: int = 50
    guidance_scale: float = 1.0
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {self.name!r}.")
        if self.steps < 1:
            raise ValueError(f"sampler steps must be >= 1, got {self.steps}.")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}.")


@dataclass(frozen=True)
class Conditions:
    """What to generate: ``n`` images, optionally per label, mask, label map and inpainting context.

    Every given tensor has ``n`` as its first dimension.
    """

    n: int
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    images: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    label_maps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Conditions.n must be >= 1, got {self.n}.")
        for name in ("labels", "masks", "images", "keep", "label_maps"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != self.n:
                raise ValueError(f"Conditions.{name} has {value.shape[0]} rows, expected n={self.n}.")
        if (self.images is None) != (self.keep is None):
            raise ValueError("Inpainting needs both Conditions.images and Conditions.keep.")


@dataclass
class StepContext:
    """What the trainer lends a family's ``train_step``.

    Attributes:
        backward: call instead of ``loss.backward()`` (Accelerate scales/syncs gradients).
        clip: call with a module's parameters to clip gradients to the configured norm.
        generator: the training random generator (noise, timesteps, label dropout).
        autocast: context manager for mixed precision forward passes.
        step: the global optimisation step (0-based).
    """

    backward: Callable[[torch.Tensor], None]
    clip: Callable[[Any], None]
    generator: torch.Generator
    autocast: Callable[[], Any]
    step: int


# The sampler a family that draws in one forward pass records (`FamilySpec.drawn_with`).
FORWARD_PASS = "forward"


@dataclass(frozen=True)
class FamilySpec:
    """One generator family: its config class and the contract functions.

    ``spatial_dims``: 2 for image families ``(N, C, H, W)``, 3 for volume families
    ``(N, C, D, H, W)``. ``iterative``: the family samples in denoising steps with the
    ``SamplerSpec``'s sampler; False for families that draw in one forward pass (the GANs), which
    ignore the sampler's name and steps.
    """

    name: str
    config_cls: type
    build: Callable[[Any, int], nn.ModuleDict]
    make_optimizers: Callable[[nn.ModuleDict, Any], dict[str, torch.optim.Optimizer]]
    train_step: Callable[[nn.ModuleDict, dict[str, torch.optim.Optimizer], Batch, Any, StepContext], dict[str, float]]
    sample: Callable[[nn.ModuleDict, Any, Conditions, SamplerSpec, torch.Generator], torch.Tensor]
    ema_modules: tuple[str, ...] = ()
    spatial_dims: int = 2
    iterative: bool = True

    def sample_shape(self, config: Any) -> tuple[int, ...]:
        """``(channels, *sides)`` of one generated sample under ``config``."""
        return (config.channels,) + (config.image_size,) * self.spatial_dims

    def drawn_with(self, sampler: SamplerSpec) -> tuple[str, int, float]:
        """``(sampler name, steps, guidance scale)`` as this family really draws when handed
        ``sampler``: its settings for a family that samples in steps, ``("forward", 1, 1.0)`` for one
        that draws in one unguided forward pass (``iterative`` false: the GANs), whatever was passed.
        The provenance rows record this."""
        if not self.iterative:
            return FORWARD_PASS, 1, 1.0
        return sampler.name, sampler.steps, sampler.guidance_scale

    def describe_sampler(self, sampler: SamplerSpec) -> str:
        """How this family draws with ``sampler``, for titles, logs and cards: "ddim, 50 steps" or
        "one forward pass"."""
        name, steps, _ = self.drawn_with(sampler)
        if name == FORWARD_PASS:
            return "one forward pass"
        return f"{name}, {steps} step{'' if steps == 1 else 's'}"


@dataclass(frozen=True)
class TrainedGenerator:
    """What training hands to sampling: the family name, its ``Config`` and the modules.

    ``class_names`` (by class id) and ``card`` (what it was trained on and how: the model
    card's facts, see ``synthmed.generators.common.write_generator_files``) travel with the
    saved folder, so that it can be used without the project (``synthmed generate``).
    """

    family: str
    config: Any
    models: nn.ModuleDict
    class_names: tuple[str, ...] = ()
    card: Mapping[str, Any] = field(default_factory=dict)
