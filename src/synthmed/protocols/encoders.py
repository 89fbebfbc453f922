"""The real splits of a source at its evaluation size, and the source's domain feature encoder.

The domain encoder is a small CNN trained to tell the classes of a source apart on the real
training split only; its feature layer is the default feature space of FID, KID, PRDC, the
t-SNE and the memorisation gate (docs/evaluation.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import class_names_of
from synthmed.metrics.features import (
    ClassifierConfig,
    FitConfig,
    TrainedClassifier,
    at_size,
    balanced_accuracy,
    fit_classifier,
    predict_proba,
)

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
torch = lazy_import("torch")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceConfig:
    """``params:evaluation.sources.<source>``: the size and the splits every family is judged on."""

    image_px: int
    reference_split: str = "train"
    held_out_split: str = "validation"
    test_split: str = "test"
    # Mask values outlined in the report's real-vs-synthetic grid (the cohort's lesion label 4):
    # on the real images, and on the synthetic ones a label map conditioned; () draws none.
    outline_labels: tuple[int, ...] = ()
    # The lesion signal (a bright-spot score of whole images, ``evaluation.lesion_signal``) for the
    # families of this source; false where it says nothing (lesion patches, normalised per patch,
    # clip at their 99th percentile, so every patch's spot percentile is 1).
    lesion_signal: bool = True


@dataclass(frozen=True)
class EncoderConfig:
    """``params:evaluation.encoder``: the domain feature network trained per source.

    ``class_balance``: each batch draws every class equally often (``fit_classifier(class_balanced=True)``).
    With plain batches the slices' encoder (lesion slices 22% of the cohort's training split) called
    every slice normal: its accuracy was the normal share (0.780 of the training slices, 0.839 of
    the held-out ones), balanced accuracy 0.50, and features that need not tell a lesion slice
    from a normal one are blind to a generator that never draws lesions.
    """

    width: int = 32
    feature_dim: int = 64
    flips: bool = True
    seed: int = 0
    fit: Mapping[str, Any] | None = None
    class_balance: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.class_balance, bool):
            raise ValueError(f"evaluation.encoder.class_balance must be true or false, got {self.class_balance!r}.")


def source_config(params: Mapping[str, Any], where: str) -> SourceConfig:
    return from_params(SourceConfig, params, where)


# ------------------------------------------------------------------ real splits and the encoder


def split_images(store: Mapping[str, np.ndarray], manifest: pd.DataFrame, split: str,
                 image_px: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The ``split`` rows of an extraction output at ``image_px``.

    Returns:
        ``(images (N, C, image_px, image_px) float32 in [-1, 1], class ids (N,) int64,
        manifest indices (N,))``.
    """
    rows = manifest[manifest["split"] == split]
    index = rows["index"].to_numpy()
    images = np.asarray(store["images"][index], dtype=np.float32)
    return at_size(images, image_px), torch.tensor(rows["class_id"].to_numpy(), dtype=torch.int64), index


def patient_keys(manifest: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """``(N,)`` the ``patient_key`` of each manifest index in ``ids`` (as `split_images` returns them)."""
    return manifest.set_index("index").loc[ids, "patient_key"].to_numpy()


def train_encoder(store: Mapping[str, np.ndarray], manifest: pd.DataFrame, source: SourceConfig,
                  config: EncoderConfig, fit: FitConfig) -> TrainedClassifier:
    """Train the domain encoder of one source on its real reference (training) split.

    Returns:
        The encoder with its facts: images trained on, and its accuracy and balanced accuracy
        (mean recall over the classes) on the reference and held-out splits: a sanity check of
        the feature space, not a result. A held-out balanced accuracy within 0.05 of chance is
        logged as a warning: the features then say little about the classes.
    """
    if len(manifest) == 0:
        # A dataset without this kind of image (the brain cohort has no 2D images with masks,
        # so no patches): the pipeline still needs one encoder per source. An untrained one is
        # saved and marked; a family whose source this is has no real images to be judged on.
        logger.warning("The source has no images at all (empty extraction output): its feature encoder is an "
                       "untrained placeholder (facts: untrained = 1); no generator family can be evaluated on it.")
        torch.manual_seed(config.seed)
        spec = ClassifierConfig(channels=1, num_classes=2, image_px=source.image_px, width=config.width,
                                feature_dim=config.feature_dim)
        from synthmed.metrics.classifier_network import ConvClassifier  # here: torch loads with it

        return TrainedClassifier(ConvClassifier(spec).eval(), (), {"train_images": 0.0, "untrained": 1.0})
    names = class_names_of(manifest)
    images, labels, _ = split_images(store, manifest, source.reference_split, source.image_px)
    if len(images) == 0:
        raise ValueError(f"The {source.reference_split!r} split is empty: nothing to train the feature encoder on.")
    spec = ClassifierConfig(channels=int(images.shape[1]), num_classes=len(names), image_px=source.image_px,
                            width=config.width, feature_dim=config.feature_dim)
    model = fit_classifier(images, labels, spec, fit, seed=config.seed, flips=config.flips,
                           class_balanced=config.class_balance, description="feature encoder")
    facts = {"train_images": float(len(images))} | _accuracies(model, images, labels, len(names), "reference")
    held_images, held_labels, _ = split_images(store, manifest, source.held_out_split, source.image_px)
    if len(held_images):
        facts |= _accuracies(model, held_images, held_labels, len(names), "held_out")
    logger.info("Feature encoder: %s", {k: round(v, 3) for k, v in facts.items()})
    chance = 1.0 / len(names)
    balanced = facts.get("held_out_balanced_accuracy", facts["reference_balanced_accuracy"])
    if len(names) > 1 and balanced < chance + 0.05:
        logger.warning("The feature encoder tells the classes %s apart no better than chance (balanced accuracy "
                       "%.3f, chance %.3f): FID, KID, PRDC and the t-SNE in its features say little about whether "
                       "a generator draws each class. More encoder steps (evaluation.encoder.fit.steps), or a "
                       "feature network of your own (evaluation.feature_network).", names, balanced, chance)
    return TrainedClassifier(model, tuple(names), facts)


def _accuracies(model: Any, images: torch.Tensor, labels: torch.Tensor, k: int, split: str) -> dict[str, float]:
    """``<split>_accuracy`` and ``<split>_balanced_accuracy`` of ``model`` on ``images``."""
    predicted = predict_proba(model, images).argmax(1)
    return {f"{split}_accuracy": float((predicted == labels).float().mean()),
            f"{split}_balanced_accuracy": balanced_accuracy(predicted.numpy(), labels.numpy(), k)}
