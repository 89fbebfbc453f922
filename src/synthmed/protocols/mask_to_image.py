"""The "mask to image" study: Pix2Pix from a vessel mask to the whole fundus image.

Data: the fundus photographs of ``synthmed.imaging.fundus_sample`` (sub-fields of one
photograph, augmented), resized whole to ``image_size``; the split is by source region
(``synthmed.core.splits.assign_group_splits`` with the region as the group), so no vessel of
a held-out image was seen in training. Model: the ``pix2pix`` family, trained and sampled
with synthmed's trainer and sampler. Metrics: paired MSE / SSIM / PSNR of each held-out
image against the image generated from its mask (``synthmed.metrics.fidelity.paired_metrics``,
images in [-1, 1], so MSE is on that scale and PSNR uses a data range of 2), each a mean with
a percentile-bootstrap interval (``summarise``), beside two baselines measured on the same
images and the published figure.

Baselines:

- floor, "mean training image": every held-out mask gets the pixel-wise mean of the
  training images; what a model that ignores the mask reaches;
- reference, "real image blurred": the held-out image itself, Gaussian-blurred; the
  scores of a smooth copy of the truth, which no mask-to-image model can exceed in detail
  (it shows how much of SSIM a smooth image earns).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.splits import SPLITS, SplitConfig, assign_group_splits, check_no_leakage
from synthmed.imaging.fundus_sample import FundusPhoto
from synthmed.protocols.studies import PublishedRow, StudyRow

pd = lazy_import("pandas")
torch = lazy_import("torch")
logger = logging.getLogger(__name__)

METRICS = ("mse", "ssim", "psnr")
METRIC_LABELS = {"mse": "MSE", "ssim": "SSIM", "psnr": "PSNR (dB)"}


@dataclass(frozen=True)
class PublishedFigure:
    """``study_mask_to_image.published``: the figure printed beside ours (a cited constant)."""

    label: str
    mse: float
    ssim: float
    psnr: float
    citation: str


@dataclass(frozen=True)
class MaskToImageEvaluation:
    """``study_mask_to_image.evaluation``.

    Args:
        resamples, level, seed: the bootstrap of each mean.
        blur_sigma_px: Gaussian sigma of the "real image blurred" reference, in pixels of
            the study's image size.
        grid_examples: held-out images shown as mask | real | synthetic.
        sample_seed: seed of the generator's test-time dropout.
        batch_size: images per generator pass.
    """

    resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    blur_sigma_px: float = 2.0
    grid_examples: int = 6
    sample_seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.resamples < 1 or not 0.0 < self.level < 1.0 or self.blur_sigma_px <= 0 or self.grid_examples < 1:
            raise ValueError(
                "study_mask_to_image.evaluation: resamples and grid_examples must be >= 1, level in (0, 1), "
                f"blur_sigma_px > 0; got {self}."
            )


@dataclass(frozen=True)
class MaskToImageConfig:
    """``params:study_mask_to_image`` (besides the ``pix2pix`` blocks ``model`` / ``training``).

    Args:
        photographs: overrides of ``sample_data.fundus`` for the study's photographs
            (typically a finer ``grid`` and more ``per_region`` copies than the demo's sample).
        image_size: side of the whole images the model maps masks to.
        mask_threshold: a pixel of the resized mask is vessel when at least this share of
            its source pixels was.
        aperture_channel: give the model the camera's aperture (field of view) as a second mask
            channel: a pixel is inside when at least half of its source pixels are brighter than
            ``photographs``' ``fov_threshold`` in red. A sub-field that crosses the aperture is
            black beyond it, which the vessel mask alone does not say. False: vessels only.
        split: ``fractions`` and ``seed`` of the split by region (validation may be 0).
        checkpoint_root: parent folder of the study's training checkpoints.
        evaluation: ``MaskToImageEvaluation`` keys.
        published: the published figure printed beside ours.
        model, training: the ``pix2pix`` family's ``Config`` and ``TrainingConfig`` keys.
    """

    photographs: Mapping[str, Any]
    image_size: int = 128
    mask_threshold: float = 0.5
    aperture_channel: bool = True
    split: Mapping[str, Any] = field(default_factory=lambda: {"fractions": {"train": 0.67, "validation": 0.0,
                                                                           "test": 0.33}, "seed": 0})
    checkpoint_root: str = "data/06_models/checkpoints"
    evaluation: MaskToImageEvaluation = field(default_factory=MaskToImageEvaluation)
    published: PublishedFigure | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size < 8 or not 0.0 < self.mask_threshold <= 1.0:
            raise ValueError(
                f"study_mask_to_image: image_size must be >= 8 and mask_threshold in (0, 1]; got {self.image_size} "
                f"and {self.mask_threshold}."
            )

    @property
    def mask_channels(self) -> int:
        """Channels of ``masks``: the vessel mask, and the aperture when ``aperture_channel``."""
        return 2 if self.aperture_channel else 1


def photo_arrays(photos: Sequence[FundusPhoto], size: int, mask_threshold: float,
                 aperture_threshold: float | None = None) -> dict[str, np.ndarray]:
    """Whole photographs resized to ``size``: ``images`` (N, 3, S, S) float32 in [-1, 1], ``masks`` (N, C, S, S)
    uint8: channel 0 the vessels, and with ``aperture_threshold`` (red, 0-255) channel 1 the camera's aperture."""
    from skimage.transform import resize

    def shrink(array: np.ndarray) -> np.ndarray:  # (H, W[, C]) -> (size, size[, C]) float64
        return resize(array.astype(np.float64), (size, size), order=1, anti_aliasing=True)

    images, masks = [], []
    for photo in photos:
        images.append(np.moveaxis(shrink(photo.rgb / 255.0), -1, 0) * 2.0 - 1.0)
        channels = [shrink(photo.mask) >= mask_threshold]
        if aperture_threshold is not None:
            channels.append(shrink(photo.rgb[..., 0] > aperture_threshold) >= 0.5)
        masks.append(np.stack(channels))
    return {"images": np.asarray(images, dtype=np.float32), "masks": np.asarray(masks, dtype=np.uint8),
            "labels": np.zeros(len(photos), dtype=np.int64)}


def region_split(photos: Sequence[FundusPhoto], split: Mapping[str, Any], size: int) -> pd.DataFrame:
    """One row per photograph (``name, region, split``): whole regions go to one split, checked for leakage."""
    config = SplitConfig(strategy="group", fractions=dict(split.get("fractions", {})),
                         seed=int(split.get("seed", 0)))
    manifest = pd.DataFrame({"item_id": [p.name for p in photos], "patient_key": [p.region for p in photos],
                             "kind": "image2d", "shape": f"3x{size}x{size}"})
    table = assign_group_splits(manifest, config)
    check_no_leakage(table)
    counts = table.groupby("split")["patient_key"].nunique().reindex(list(SPLITS), fill_value=0)
    for name in ("train", "test"):
        if counts[name] == 0:
            raise ValueError(
                f"The split by region gave the {name} split no region ({dict(counts)} regions per split from "
                f"{table['patient_key'].nunique()} regions): raise study_mask_to_image.photographs.grid or change "
                "split.fractions."
            )
    logger.info("Mask-to-image split by region: %s regions, %s photographs per split", dict(counts),
                dict(table["split"].value_counts()))
    return pd.DataFrame({"name": table["item_id"], "region": table["patient_key"], "split": table["split"]})


def _blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(image, sigma=(0.0, sigma, sigma), mode="nearest") for image in images])


def _summaries(fake: np.ndarray, real: np.ndarray, evaluation: MaskToImageEvaluation,
               groups: np.ndarray | None) -> dict[str, dict[str, float]]:
    from synthmed.metrics.fidelity import paired_metrics, summarise  # here: torch and torchmetrics load with it

    scores = paired_metrics(torch.from_numpy(np.clip(fake, -1.0, 1.0)), torch.from_numpy(real), data_range=2.0)
    return {m: summarise(scores[m], resamples=evaluation.resamples, level=evaluation.level, seed=evaluation.seed,
                         groups=groups)
            for m in METRICS}


def study_rows(generated: np.ndarray, real: np.ndarray, train_images: np.ndarray,
               evaluation: MaskToImageEvaluation, *, model_label: str, model_source: str,
               groups: np.ndarray | None = None) -> list[StudyRow]:
    """Our row, the mean-image floor and the blurred-real reference, on the same held-out images.

    ``groups``: the source region of each held-out image; the intervals then draw regions whole
    (copies of one region are not independent images)."""
    mean_image = np.broadcast_to(train_images.mean(axis=0, keepdims=True), real.shape).astype(np.float32)
    return [
        StudyRow(model_label, "ours", _summaries(generated, real, evaluation, groups), model_source),
        StudyRow("mean training image", "floor", _summaries(mean_image, real, evaluation, groups),
                 "every held-out mask gets the pixel-wise mean of the training images (ignores the mask)"),
        StudyRow(f"real image blurred (sigma {evaluation.blur_sigma_px:g} px)", "reference",
                 _summaries(_blurred(real, evaluation.blur_sigma_px).astype(np.float32), real, evaluation, groups),
                 "the held-out image itself, Gaussian-blurred: a smooth copy of the truth"),
    ]


def published_rows(figure: PublishedFigure | None) -> list[PublishedRow]:
    if figure is None:
        return []
    return [PublishedRow(figure.label, {"mse": figure.mse, "ssim": figure.ssim, "psnr": figure.psnr},
                         figure.citation)]


def comparison_grid(masks: np.ndarray, real: np.ndarray, fake: np.ndarray, names: Sequence[str], count: int):
    """A figure of ``count`` held-out images, one row each: mask | real | synthetic.

    The mask panel shows the vessels (channel 0) and, where ``masks`` has an aperture channel
    (channel 1), the aperture's edge as an orange line: every input the model was given.
    """
    import matplotlib.pyplot as plt

    count = min(count, len(real))
    aperture = masks.shape[1] > 1
    figure, axes = plt.subplots(count, 3, figsize=(6.0, 2.0 * count), squeeze=False)
    titles = ("vessels" + (", aperture (orange)" if aperture else ""), "real (held out)", "synthetic")
    for i in range(count):
        panels = (masks[i, 0].astype(np.float32), np.moveaxis((real[i] + 1.0) / 2.0, 0, -1),
                  np.moveaxis((np.clip(fake[i], -1.0, 1.0) + 1.0) / 2.0, 0, -1))
        if aperture and 0 < masks[i, 1].mean() < 1:
            axes[i, 0].contour(masks[i, 1].astype(np.float32), levels=[0.5], colors="tab:orange", linewidths=1.0)
        for j, (panel, title) in enumerate(zip(panels, titles)):
            axes[i, j].imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0.0, vmax=1.0)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(title, fontsize=9)
        axes[i, 0].set_ylabel(names[i], fontsize=7)
    figure.tight_layout()
    return figure
