"""Feature networks for FID, KID, PRDC, t-SNE and the memorisation gate, and the small CNN
classifier that is both the default *domain encoder* and the downstream utility classifier.

Three kinds of feature network (``evaluation.feature_network.kind``):

- ``domain`` (default, offline): ``ConvClassifier`` trained in the pipeline on the real
  training split (plane or vessel labels); its penultimate layer is the feature space.
  FID in an ImageNet space says little about MR slices or fundus patches (Kynkäänniemi
  et al. 2023 show ImageNet features leak class information into FID), and a domain
  network needs no download.
- ``torchvision``: an ImageNet backbone (``inception_v3``, ``resnet50``, ...) with its
  classifier removed, weights from a local file the user names (``.safetensors`` or a
  ``.pth`` state dict, loaded with ``weights_only=True``). Needs the optional extra
  ``pip install synthmed[backbones]``.
- ``exported``: any network saved with ``torch.export.save`` (``.pt2``), which takes the
  ImageNet-style input below and returns ``(N, D)`` or ``(N, D, 1, 1)`` features.

Medical images reach an ImageNet network through one function, ``to_backbone_input``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from synthmed.core.lazy import lazy_import
from synthmed.core.progress import ProgressLog
from synthmed.core.seeding import seeded
from synthmed.core.validation import is_int, is_number

if TYPE_CHECKING:
    from synthmed.metrics.classifier_network import ConvClassifier

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")
nn = lazy_import("torch.nn")

logger = logging.getLogger(__name__)

FEATURE_KINDS = ("domain", "torchvision", "exported")
# torchvision's ImageNet normalisation (the statistics its pretrained weights expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(images: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``images`` is ``(N, C, H, W)`` with C in (1, 3) and finite."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"Expected {name} with shape (N, C, H, W), C in (1, 3), got {tuple(images.shape)}.")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or infinite values.")


def at_size(images: np.ndarray | torch.Tensor, image_px: int) -> torch.Tensor:
    """``(N, C, H, W)`` images as float32 at ``image_px`` x ``image_px``.

    Larger images are area-averaged (the same rule the generators' training data uses);
    smaller ones are upsampled bilinearly. Values keep their range ([-1, 1]).
    """
    if torch.is_tensor(images):
        tensor = images.float()
    else:
        array = np.asarray(images, dtype=np.float32)
        # A tensor must be writable: a read-only array (a memory-mapped store) is copied, not shared.
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    if tensor.ndim != 4:
        raise ValueError(f"Expected images with shape (N, C, H, W), got {tuple(tensor.shape)}.")
    if tensor.shape[-1] == image_px and tensor.shape[-2] == image_px:
        return tensor
    if tensor.shape[-1] > image_px:
        return F.interpolate(tensor, size=image_px, mode="area")
    return F.interpolate(tensor, size=image_px, mode="bilinear", align_corners=False)


def to_backbone_input(
    images: torch.Tensor,
    *,
    input_px: int,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """Adapt medical images to an ImageNet backbone: the only place this happens.

    1. Channels: a grey image ``(N, 1, H, W)`` is repeated to 3 identical channels, so every
       RGB filter sees the same intensities (no false colour); RGB images pass through.
    2. Value range: synthmed images are float in [-1, 1]; ImageNet networks expect [0, 1]
       scaled per channel by ``(x - mean) / std`` (torchvision's normalisation; the
       defaults are the ImageNet statistics its weights were trained with).
    3. Size: bilinear resize with antialiasing to ``input_px`` (299 for Inception-v3, 224
       for ResNets). Upsampling a 32 px slice does not add detail; it only matches the
       receptive fields the weights were trained for.

    Args:
        images: ``(N, 1 | 3, H, W)`` float in [-1, 1].
        input_px: side of the backbone's input.

    Returns:
        ``(N, 3, input_px, input_px)`` float32, ImageNet-normalised.
    """
    check_images(images, "images")
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = ((x.clamp(-1.0, 1.0) + 1.0) / 2.0)
    if x.shape[-1] != input_px or x.shape[-2] != input_px:
        x = F.interpolate(x, size=(input_px, input_px), mode="bilinear", align_corners=False, antialias=True)
    shape = (1, 3, 1, 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


# ---------------------------------------------------------------- the small CNN classifier


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of ``ConvClassifier``.

    Attributes:
        channels: image channels (1 grey, 3 RGB).
        num_classes: output classes.
        image_px: side of the (square) input; a power of two >= 8.
        width: channels of the first block; each of the log2(image_px / 4) blocks doubles it
            (capped at 8 x width).
        feature_dim: size of the feature layer (the domain feature space).
    """

    channels: int
    num_classes: int
    image_px: int
    width: int = 32
    feature_dim: int = 64

    def __post_init__(self) -> None:
        for name in ("channels", "num_classes", "image_px", "width", "feature_dim"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"classifier {name} must be a positive integer, got {value!r}.")
        if self.channels not in (1, 3):
            raise ValueError(f"classifier channels must be 1 or 3, got {self.channels}.")
        if self.num_classes < 2:
            raise ValueError(f"classifier num_classes must be at least 2, got {self.num_classes}.")
        if self.image_px < 8 or self.image_px & (self.image_px - 1):
            raise ValueError(f"classifier image_px must be a power of two >= 8, got {self.image_px}.")


@dataclass(frozen=True)
class TrainedClassifier:
    """A ``ConvClassifier``, the names of its classes and facts about its training."""

    model: ConvClassifier
    class_names: tuple[str, ...]
    facts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FitConfig:
    """How ``fit_classifier`` trains.

    Attributes:
        steps: optimiser steps (batches).
        batch_size: images per step.
        learning_rate: AdamW learning rate (cosine-decayed to 0).
        weight_decay: AdamW weight decay.
        device: "auto" (CUDA when present), "cpu" or "cuda".
    """

    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}.")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use 'auto' or 'cpu'.")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device):
    # bf16 autocast on CUDA (no loss scaling needed); full precision on CPU.
    return (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
            else torch.autocast("cpu", enabled=False))


def balanced_accuracy(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``target`` (NaN if none)."""
    recalls = [np.mean(predicted[target == c] == c) for c in range(num_classes) if np.any(target == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def fit_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: ClassifierConfig,
    fit: FitConfig,
    *,
    seed: int,
    flips: bool = False,
    class_balanced: bool = False,
    description: str = "classifier",
) -> ConvClassifier:
    """Train a ``ConvClassifier`` with cross-entropy; deterministic for a seed on CPU.

    Args:
        images: ``(N, C, image_px, image_px)`` float in [-1, 1].
        labels: ``(N,)`` int64 class ids in ``[0, num_classes)``.
        seed: initial weights, batch order and flips.
        flips: random horizontal and vertical flips (p = 0.5 each) of every batch image.
        class_balanced: draw each batch's images with probability 1 / (their class's count), so
            every class is seen equally often (with replacement); otherwise uniformly.

    Returns:
        The trained model on the CPU, in eval mode.
    """
    check_images(images, "images")
    expected = (config.channels, config.image_px, config.image_px)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"Expected images of shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}.")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if labels.shape != (len(images),):
        raise ValueError(f"Expected labels of shape ({len(images)},), got {tuple(labels.shape)}.")
    if len(images) == 0:
        raise ValueError(f"Cannot train the {description} on 0 images.")
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise ValueError(f"labels must be in [0, {config.num_classes}), got values {labels.min()}..{labels.max()}.")
    device = resolve_device(fit.device)
    with seeded(seed):
        from synthmed.metrics.classifier_network import ConvClassifier

        model = ConvClassifier(config)
    model.to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=fit.learning_rate, weight_decay=fit.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=fit.steps)
    rng = torch.Generator().manual_seed(seed)
    x_all, y_all = images.float(), labels
    weights = (1.0 / torch.bincount(labels, minlength=config.num_classes).clamp(min=1).double())[labels] \
        if class_balanced else None
    log = ProgressLog(logger, f"{description} training", fit.steps, "steps")
    for step in tqdm(range(fit.steps), desc=description, unit="step", leave=False, mininterval=2.0):
        size = min(fit.batch_size, len(x_all))
        index = (torch.multinomial(weights, size, replacement=True, generator=rng) if class_balanced
                 else torch.randint(len(x_all), (size,), generator=rng))
        x, y = x_all[index], y_all[index]
        if flips:
            x = torch.where(torch.rand(len(x), 1, 1, 1, generator=rng) < 0.5, x.flip(-1), x)
            x = torch.where(torch.rand(len(x), 1, 1, 1, generator=rng) < 0.5, x.flip(-2), x)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device):
            loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        # A line every 30 s; the end line only after one of them: the utility loop fits dozens of
        # short classifiers and logs each one's completion itself.
        if step + 1 < fit.steps or log.last > log.began:
            log.update(step + 1)
    return model.cpu().eval()


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int,
             device: torch.device, what: str | None = None) -> torch.Tensor:
    """``fn`` over batches of ``images``; with ``what``, progress lines (every 30 s and at the end)."""
    with torch.no_grad():  # not a decorator: that would import torch with this module
        return _batches(fn, images, batch_size, device, what)


def _batches(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int,
             device: torch.device, what: str | None) -> torch.Tensor:
    outputs = []
    log = ProgressLog(logger, what, len(images), "images") if what else None
    for start in range(0, len(images), batch_size):
        with _autocast(device):
            out = fn(images[start:start + batch_size].to(device))
        outputs.append(out.float().flatten(1).cpu())
        if log is not None:
            log.update(min(start + batch_size, len(images)))
    return torch.cat(outputs) if outputs else torch.zeros(0, 0)


def predict_proba(model: ConvClassifier, images: torch.Tensor, *, batch_size: int = 256,
                  device: str = "auto") -> torch.Tensor:
    """``(N, num_classes)`` softmax probabilities of ``images`` ``(N, C, H, W)`` in [-1, 1]."""
    check_images(images, "images")
    target = resolve_device(device)
    model = model.to(target).eval()
    logits = _batched(model, images.float(), batch_size, target)
    model.cpu()
    return logits.softmax(dim=1)


# ---------------------------------------------------------------- pluggable feature networks


@dataclass(frozen=True)
class FeatureNetworkConfig:
    """``params:evaluation.feature_network``.

    Attributes:
        kind: "domain" (the encoder trained in the pipeline), "torchvision" or "exported".
        name: torchvision model constructor for kind torchvision (``inception_v3``,
            ``resnet50``, ``densenet121``, ...).
        weights: local weights file for torchvision / exported (never downloaded).
        input_px: input side for backbones (299 for Inception-v3, 224 for ResNets).
        batch_size: images per forward pass.
        device: "auto", "cpu" or "cuda".
    """

    kind: str = "domain"
    name: str = "inception_v3"
    weights: str | None = None
    input_px: int = 299
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"evaluation.feature_network.kind must be one of {list(FEATURE_KINDS)}, "
                             f"got {self.kind!r}.")
        if self.kind != "domain" and not self.weights:
            raise ValueError(
                f"evaluation.feature_network.kind {self.kind!r} needs `weights`: the path of a local weights file "
                "(synthmed never downloads weights)."
            )
        if not is_int(self.input_px) or self.input_px < 32:
            raise ValueError(f"evaluation.feature_network.input_px must be an integer >= 32, got {self.input_px!r}.")


class FeatureNetwork:
    """A callable ``(N, C, H, W)`` images in [-1, 1] -> ``(N, D)`` float32 features, batched, no grad.

    Attributes:
        name: what the features are, for reports ("domain encoder (64-d)", "torchvision resnet50").
        image_px: the side images are brought to (``at_size``) before the network sees them.
    """

    def __init__(self, name: str, module: nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor], *,
                 image_px: int, batch_size: int, device: str):
        self.name = name
        self.image_px = image_px
        self._module = module
        try:
            module.eval()
        except NotImplementedError:  # torch.export modules have no train/eval switch (already inference graphs)
            pass
        self._prepare = prepare
        self._batch_size = batch_size
        self._device = resolve_device(device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, "images")
        self._module.to(self._device)
        try:
            return _batched(lambda x: self._module(self._prepare(x)), at_size(images, self.image_px),
                            self._batch_size, self._device, what=f"{self.name} features")
        finally:
            self._module.cpu()


def domain_network(encoder: ConvClassifier, *, batch_size: int = 256, device: str = "auto") -> FeatureNetwork:
    """The domain encoder's feature layer as a ``FeatureNetwork`` (no adaptation: it was trained
    on synthmed images as they are)."""
    from synthmed.metrics.classifier_network import _Features

    return FeatureNetwork(f"domain encoder ({encoder.config.feature_dim}-d)", _Features(encoder), lambda x: x,
                          image_px=encoder.config.image_px, batch_size=batch_size, device=device)


def _existing(path: str | None) -> Path:
    file = Path(path or "")
    if not file.is_file():
        raise FileNotFoundError(
            f"evaluation.feature_network.weights: no file at {str(file)!r}. synthmed never downloads weights: "
            "save them once on a machine with network access and name the local file here."
        )
    return file


def _state_dict(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(file)
    state = torch.load(file, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{file}: expected a state dict of tensors, got {type(state).__name__}.")
    return state


def torchvision_backbone(name: str, weights: str | None) -> nn.Module:
    """An ImageNet torchvision model with its classifier replaced by the identity.

    Raises:
        FileNotFoundError: ``weights`` is not an existing file (checked before anything else).
        ImportError: torchvision is not installed or does not load (with the install command).
        ValueError: unknown model name, or weights that do not fit the model.
    """
    file = _existing(weights)
    try:
        import torchvision.models as models
    except Exception as exc:  # ImportError, or a torchvision built for another torch (RuntimeError)
        raise ImportError(
            "evaluation.feature_network.kind 'torchvision' needs torchvision matching torch 2.13: "
            "`pip install synthmed[backbones]` (on a CPU-only torch: pip install torchvision==0.28.0 "
            f"--index-url https://download.pytorch.org/whl/cpu). Import failed with: {exc}"
        ) from exc
    constructor = getattr(models, name, None)
    if constructor is None or not callable(constructor):
        raise ValueError(f"evaluation.feature_network.name {name!r} is not a torchvision model constructor.")
    # Inception-v3's ImageNet weights include the auxiliary classifier: build it to load them.
    model = constructor(weights=None, **({"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}))
    try:
        model.load_state_dict(_state_dict(file), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{file}: the weights do not fit torchvision's {name}: {exc}") from exc
    if hasattr(model, "AuxLogits"):
        model.AuxLogits = None
    for head in ("fc", "classifier", "heads", "head"):
        if hasattr(model, head):
            setattr(model, head, nn.Identity())
            return model
    raise ValueError(f"torchvision model {name!r}: no classifier attribute (fc, classifier, heads, head) to remove.")


def exported_network(weights: str | None) -> nn.Module:
    """A network saved with ``torch.export.save`` (``.pt2``: a graph and tensors, no pickle)."""
    file = _existing(weights)
    try:
        program = torch.export.load(str(file))
    except Exception as exc:
        raise ValueError(f"{file}: not a torch.export program (.pt2): {exc}") from exc
    return program.module()


def feature_network(config: FeatureNetworkConfig, encoder: ConvClassifier) -> FeatureNetwork:
    """The configured feature network; ``encoder`` is the domain encoder of this source."""
    if config.kind == "domain":
        return domain_network(encoder, batch_size=config.batch_size, device=config.device)
    module = torchvision_backbone(config.name, config.weights) if config.kind == "torchvision" \
        else exported_network(config.weights)
    label = f"torchvision {config.name}" if config.kind == "torchvision" else f"exported {Path(config.weights).name}"
    return FeatureNetwork(label, module, lambda x: to_backbone_input(x, input_px=config.input_px),
                          image_px=encoder.config.image_px, batch_size=config.batch_size, device=config.device)


def __getattr__(name: str) -> Any:
    # ConvClassifier (an nn.Module, so torch at import) lives in classifier_network; this module
    # holds the configurations that the parameter check imports before every run.
    if name in ("ConvClassifier", "_Features"):
        from synthmed.metrics import classifier_network

        return getattr(classifier_network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
