"""Evaluation of generated volumes ``(N, 1, D, H, W)`` in [-1, 1] (issue 11, item 4; the study_3d pipeline).

1. **2.5D FID** (`fid_2_5d`). Every volume is cut into 2D slices along its three axes (the
   axial, coronal and sagittal planes of the RAS+ crops; only slices whose label map covers at
   least ``min_brain_fraction`` of the slice, so the empty border does not dominate); each
   plane's slices go through the same 2D feature network (``metrics.features``: the domain
   encoder, a ``ConvClassifier`` trained here to tell the three planes apart on the real
   training volumes' slices, as the ``slices`` source's encoder is); FID per plane is
   ``metrics.fidelity.frechet_distance`` and the 2.5D FID is the mean of the three planes.
   The floor is the same statistic between two disjoint halves of the real reference
   volumes, at the same number of volumes as the synthetic set (``fidelity.real_floor_split``
   on volume indices; with patient keys no patient is in both halves). Intervals:
   ``fidelity.bootstrap_interval`` over *patients* where the volumes carry patient keys (the crops
   of one patient, a brain crop and lesion crops, are resampled together), else over volumes (a
   volume's slices are always resampled together: they are not independent).
2. **Paired SSIM / PSNR** (`paired_volume_metrics`): each synthetic volume against the real
   volume whose label map it was drawn from; 3D SSIM (Gaussian window of 7 voxels, the
   images shifted to [0, 2] as in ``fidelity.paired_metrics``), PSNR over the volume.
3. **Lesion control** (`LesionSegmenter`, `fit_segmenter`, `measure_lesions`). The lesion in
   a synthetic volume is found by a small 3D segmenter (a two-level 3D U-Net, BCE + soft
   Dice) trained on the *real training* volumes and their lesion masks, thresholded at
   ``threshold``; the realised lesion is the connected component (26-neighbourhood) that
   contains the requested centre, else the one nearest to it. Its volume (mL) and centroid
   (mm) are compared with the lesion written into the label map. Weakness, stated in the
   report: the segmenter's own error (its Dice on real held-out volumes is reported beside
   it) is part of every figure, and lesions of a few voxels (at 6 mm, a 10 mm radius is 19
   voxels) are measured coarsely.
4. **Memorisation on volumes** (`volume_nearest`, `plant_volume_copies`): the normalised
   cross-correlation (Pearson over every voxel) of each synthetic volume with every training
   volume, also left-right mirrored (the generator's augmentation), keeping the best; the
   ideas of ``privacy.memorisation`` (NCC as one matrix product of centred unit rows, the
   threshold from held-out patients' nearest-neighbour similarity, planted perturbed copies
   as a self-test) carried to 3D; the threshold itself is ``privacy.memorisation.
   calibrate_threshold`` (called by the pipeline, the metrics layer does not import privacy).
5. **Figures** (`orthogonal_views`): axial, coronal and sagittal sections through a point
   (the lesion's centre), real and synthetic side by side, the lesion outlined.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from scipy import ndimage
from torch import Tensor, nn

from synthmed.core.progress import ProgressLog
from synthmed.core.seeding import seeded
from synthmed.core.validation import is_number
from synthmed.imaging.labels import CSF, EDEMA, GREY, LABEL_NAMES, LESION, WHITE
from synthmed.metrics import fidelity
from synthmed.metrics.features import ClassifierConfig, FitConfig, fit_classifier, predict_proba, resolve_device
from synthmed.metrics.resampling import Groups, n_groups, subset
from synthmed.metrics.volume_config import IntensityControlConfig, PlaneEncoderConfig, SegmenterConfig
from synthmed.metrics.volume_reader import orthogonal_sections as _sections

logger = logging.getLogger(__name__)

PLANES = ("axial", "coronal", "sagittal")
# The axis each plane's slices are cut along, for (D, H, W) = the RAS+ axes (x, y, z):
# axial slices are at fixed z (W), coronal at fixed y (H), sagittal at fixed x (D).
PLANE_AXES = {"axial": 2, "coronal": 1, "sagittal": 0}
SSIM_WINDOW_VOX = 7


def _volumes(name: str, array: np.ndarray | Tensor) -> Tensor:
    values = torch.as_tensor(np.asarray(array), dtype=torch.float32)
    if values.ndim != 5 or values.shape[1] != 1:
        raise ValueError(f"Expected {name} of shape (N, 1, D, H, W), got {tuple(values.shape)}.")
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} holds NaN or infinite values.")
    return values


# ----------------------------------------------------------------------------- 1. 2.5D FID


def plane_slices(volumes: np.ndarray | Tensor, label_maps: np.ndarray, plane: str,
                 min_brain_fraction: float) -> tuple[Tensor, np.ndarray]:
    """The 2D slices of ``volumes`` in ``plane`` that hold enough brain.

    Returns:
        ``(slices (M, 1, a, b), volume index of each slice (M,))``.
    """
    values = _volumes("volumes", volumes)
    labels = np.asarray(label_maps)
    if labels.shape != tuple(values.shape):
        raise ValueError(f"Label maps {labels.shape} must have the volumes' shape {tuple(values.shape)}.")
    axis = PLANE_AXES[plane] + 2
    brain = (labels > 0).mean(axis=tuple(a for a in (2, 3, 4) if a != axis))[:, 0]  # (N, S)
    volume_index, slice_index = np.nonzero(brain >= min_brain_fraction)
    moved = values.movedim(axis, 2)  # (N, 1, S, a, b)
    slices = moved[torch.as_tensor(volume_index), :, torch.as_tensor(slice_index)]
    return slices.contiguous(), volume_index


def plane_labelled_slices(volumes: np.ndarray, label_maps: np.ndarray,
                          min_brain_fraction: float) -> tuple[Tensor, Tensor]:
    """Slices of every plane with their plane as a class id (what the 2D encoder learns)."""
    parts, labels = [], []
    for k, plane in enumerate(PLANES):
        slices, _ = plane_slices(volumes, label_maps, plane, min_brain_fraction)
        parts.append(slices)
        labels.append(torch.full((len(slices),), k, dtype=torch.int64))
    return torch.cat(parts), torch.cat(labels)


def train_plane_encoder(volumes: np.ndarray, label_maps: np.ndarray, config: PlaneEncoderConfig):
    """A ``ConvClassifier`` telling axial, coronal and sagittal slices apart, trained on real volumes only.

    Returns:
        ``(model, facts)``: the encoder and its training accuracy (a sanity check of the feature space).
    """
    slices, labels = plane_labelled_slices(volumes, label_maps, config.min_brain_fraction)
    if len(slices) == 0:
        raise ValueError("No slice of the training volumes holds brain: nothing to train the 2.5D FID encoder on.")
    side = int(slices.shape[-1])
    if slices.shape[-2] != side:
        raise ValueError(f"The 2.5D FID needs cubic volumes (square slices), got slices of {tuple(slices.shape[-2:])}.")
    spec = ClassifierConfig(channels=1, num_classes=len(PLANES), image_px=side, width=config.width,
                            feature_dim=config.feature_dim)
    fit = FitConfig(steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                    device=config.device)
    model = fit_classifier(slices, labels, spec, fit, seed=config.seed, flips=False, description="2.5D FID encoder")
    accuracy = float((predict_proba(model, slices).argmax(1) == labels).float().mean())
    return model, {"encoder_train_slices": float(len(slices)), "encoder_train_accuracy": accuracy}


Embed = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PlaneFeatures:
    """Features of one set of volumes: per plane, ``(M, D)`` slice features and each slice's volume."""

    features: dict[str, Tensor]
    volume_of: dict[str, np.ndarray]
    n_volumes: int


def plane_features(embed: Embed, volumes: np.ndarray, label_maps: np.ndarray,
                   min_brain_fraction: float) -> PlaneFeatures:
    """Slice features of every plane (``embed``: 2D images ``(M, 1, a, b)`` -> ``(M, D)``)."""
    features, volume_of = {}, {}
    for plane in PLANES:
        slices, owner = plane_slices(volumes, label_maps, plane, min_brain_fraction)
        features[plane] = embed(slices).to(torch.float64)
        volume_of[plane] = owner
    return PlaneFeatures(features, volume_of, int(np.asarray(volumes).shape[0]))


def _rows_of(features: PlaneFeatures, plane: str, volumes: Sequence[int]) -> Tensor:
    """The slice features of ``volumes`` (with repeats, as a bootstrap draws them)."""
    owner = features.volume_of[plane]
    rows = np.concatenate([np.flatnonzero(owner == v) for v in volumes]) if len(volumes) else np.zeros(0, int)
    return features.features[plane][torch.as_tensor(rows, dtype=torch.int64)]


def fid_2_5d_of(real: PlaneFeatures, real_volumes: Sequence[int], fake: PlaneFeatures,
                fake_volumes: Sequence[int]) -> dict[str, float]:
    """FID per plane between the slices of two sets of volumes, and their mean (``fid_2_5d``)."""
    out = {plane: fidelity.frechet_distance(_rows_of(real, plane, real_volumes), _rows_of(fake, plane, fake_volumes))
           for plane in PLANES}
    out["fid_2_5d"] = float(np.mean([out[p] for p in PLANES]))
    return out


def _volume_statistic(real: PlaneFeatures, fake: PlaneFeatures) -> Callable[[Tensor, Tensor], float]:
    def statistic(real_rows: Tensor, fake_rows: Tensor) -> float:
        return fid_2_5d_of(real, real_rows.flatten().tolist(), fake, fake_rows.flatten().tolist())["fid_2_5d"]
    return statistic


def fid_2_5d(reference: PlaneFeatures, synthetic: PlaneFeatures, *, resamples: int = 200, level: float = 0.95,
             seed: int = 0, reference_groups: Groups = None, synthetic_groups: Groups = None) -> dict[str, float]:
    """2.5D FID of ``synthetic`` against half of ``reference``, beside the real-vs-real floor on the same N.

    The reference volumes are split into halves A and B of ``n = min(N_synthetic, N_reference // 2)``
    volumes (``fidelity.real_floor_split``); ``n`` synthetic volumes are drawn; FID(A, synthetic) and
    the floor FID(A, B), each per plane and averaged, with percentile-bootstrap intervals over volumes
    (over patients with groups). With ``reference_groups`` (the patient of each reference volume) A
    and B hold different patients and the intervals draw A's and B's patients whole;
    ``synthetic_groups`` (the patient whose label map each synthetic volume was drawn from) groups
    the synthetic side likewise.

    Returns:
        ``fid_2_5d`` (+ ``_low``, ``_high``), ``fid_<plane>``, ``fid_2_5d_floor`` (+ intervals),
        ``fid_<plane>_floor``, ``fid_2_5d_n`` (volumes per set) and the slice counts; with groups
        ``fid_2_5d_patients`` and ``fid_2_5d_floor_patients`` (real patients in A; in A and B) and
        ``fid_2_5d_halves_shared_patients`` (in both halves: 0 unless too few patients).
    """
    if synthetic.n_volumes < 2 or reference.n_volumes < 4:
        raise ValueError(f"The 2.5D FID needs at least 2 synthetic and 4 reference volumes, got "
                         f"{synthetic.n_volumes} and {reference.n_volumes}.")
    half_a, half_b = fidelity.real_floor_split(torch.arange(reference.n_volumes)[:, None], synthetic.n_volumes,
                                               seed=seed, groups=reference_groups)
    n = len(half_a)
    rng = np.random.default_rng(seed)
    fake_pick = torch.as_tensor(np.sort(rng.choice(synthetic.n_volumes, size=n, replace=False)))[:, None]
    out: dict[str, float] = {"fid_2_5d_n": float(n)}
    real_a, real_b = (subset(reference_groups, half.flatten().numpy()) for half in (half_a, half_b))
    for suffix, first, second, other, groups in (
            ("", half_a, fake_pick, synthetic, subset(synthetic_groups, fake_pick.flatten().numpy())),
            ("_floor", half_a, half_b, reference, real_b)):
        planes = fid_2_5d_of(reference, first.flatten().tolist(), other, second.flatten().tolist())
        interval = fidelity.bootstrap_interval(_volume_statistic(reference, other), first, second,
                                               resamples=resamples, level=level, seed=seed, real_groups=real_a,
                                               fake_groups=groups)
        out |= {f"fid_2_5d{suffix}": planes["fid_2_5d"], f"fid_2_5d{suffix}_low": interval.low,
                f"fid_2_5d{suffix}_high": interval.high}
        out |= {f"fid_{plane}{suffix}": planes[plane] for plane in PLANES}
    if real_a is not None:
        out["fid_2_5d_patients"] = float(n_groups(real_a))
        out["fid_2_5d_floor_patients"] = float(n_groups(np.r_[real_a, real_b]))
        # 0 unless the patients were too few or too uneven to fill two halves apart (a warning said so)
        out["fid_2_5d_halves_shared_patients"] = float(len(set(real_a) & set(real_b)))
    for plane in PLANES:
        out[f"slices_{plane}_synthetic"] = float(len(_rows_of(synthetic, plane, fake_pick.flatten().tolist())))
    logger.info("2.5D FID %.2f [%.2f, %.2f] vs floor %.2f [%.2f, %.2f] (n = %d volumes per set)", out["fid_2_5d"],
                out["fid_2_5d_low"], out["fid_2_5d_high"], out["fid_2_5d_floor"], out["fid_2_5d_floor_low"],
                out["fid_2_5d_floor_high"], n)
    return out


# ----------------------------------------------------------------------------- 2. paired scores


def paired_volume_metrics(fake: np.ndarray | Tensor, real: np.ndarray | Tensor, *,
                          data_range: float = 2.0) -> dict[str, Tensor]:
    """Per-volume 3D SSIM and PSNR of ``fake[i]`` against ``real[i]`` (same label map).

    Returns:
        ``{"ssim", "psnr"}``, each ``(N,)`` float64; PSNR is inf for identical volumes.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    fake_t, real_t = _volumes("fake", fake), _volumes("real", real)
    if fake_t.shape != real_t.shape:
        raise ValueError(f"Paired volumes must have one shape, got fake {tuple(fake_t.shape)}, "
                         f"real {tuple(real_t.shape)}.")
    window = min(SSIM_WINDOW_VOX, *[s if s % 2 else s - 1 for s in fake_t.shape[2:]])
    shift = data_range / 2.0  # to [0, data_range]: SSIM's luminance term assumes non-negative values
    ssim = structural_similarity_index_measure(
        fake_t + shift, real_t + shift, gaussian_kernel=True, kernel_size=window,
        sigma=fidelity.WANG_SIGMA_PX * window / fidelity.WANG_WINDOW_PX, reduction="none", data_range=data_range)
    mse = ((fake_t.double() - real_t.double()) ** 2).flatten(1).mean(1)
    psnr = 10.0 * torch.log10(data_range**2 / mse)
    return {"ssim": ssim.reshape(-1).double(), "psnr": psnr}


# ----------------------------------------------------------------------------- 3. lesion control


def _block(c_in: int, c_out: int, **conv: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, **conv), nn.GroupNorm(min(4, c_out), c_out), nn.SiLU())


class LesionSegmenter(nn.Module):
    """A two-level 3D U-Net: full-resolution features, then half resolution with dilations 2 and 4 (a
    receptive field of about 30 voxels), upsampled and joined to the full-resolution features -> a
    lesion logit per voxel. Dilated convolutions run only at half resolution: they are slow on CPUs."""

    def __init__(self, width: int):
        super().__init__()
        self.full = _block(1, width, padding=1)
        self.coarse = nn.Sequential(_block(width, 2 * width, padding=1, stride=2),
                                  _block(2 * width, 2 * width, padding=2, dilation=2),
                                  _block(2 * width, 2 * width, padding=4, dilation=4))
        self.out = nn.Sequential(_block(3 * width, width, padding=1), nn.Conv3d(width, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        full = self.full(x)
        coarse = F.interpolate(self.coarse(full), size=full.shape[2:], mode="nearest")
        return self.out(torch.cat([full, coarse], dim=1))


def _soft_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Soft Dice over the whole batch: a lesion-free volume in it does not pull every voxel towards 0
    (as a Dice per volume does, where the empty target's best score is an empty prediction)."""
    probs = torch.sigmoid(logits)
    return 1.0 - (2.0 * (probs * target).sum() + 1.0) / (probs.sum() + target.sum() + 1.0)


def fit_segmenter(images: np.ndarray, masks: np.ndarray, config: SegmenterConfig) -> LesionSegmenter:
    """Train a `LesionSegmenter` on ``images`` ``(N, 1, D, H, W)`` and their 0/1 lesion ``masks``.

    BCE (lesion voxels weighted ``pos_weight``) + soft Dice over the batch, AdamW, random left-right
    flips; deterministic for a seed on the CPU.
    """
    x_all, y_all = _volumes("images", images), (torch.as_tensor(np.asarray(masks)) > 0).float()
    if y_all.shape != x_all.shape:
        raise ValueError(f"Lesion masks {tuple(y_all.shape)} must have the images' shape {tuple(x_all.shape)}.")
    if len(x_all) == 0:
        raise ValueError("No training volumes for the lesion segmenter (the train split holds none).")
    with seeded(config.seed):
        model = LesionSegmenter(config.width)
    device = resolve_device(config.device)
    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    rng = torch.Generator().manual_seed(config.seed)
    log = ProgressLog(logger, "lesion segmenter training", config.steps, "steps")
    model.train()
    for step in range(config.steps):
        index = torch.randint(len(x_all), (min(config.batch_size, len(x_all)),), generator=rng)
        x, y = x_all[index], y_all[index]
        flip = (torch.rand(len(x), generator=rng) < 0.5).view(-1, 1, 1, 1, 1)
        x, y = torch.where(flip, x.flip(-1), x).to(device), torch.where(flip, y.flip(-1), y).to(device)
        logits = model(x)
        loss = (F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(config.pos_weight, device=device))
                + _soft_dice_loss(logits, y))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        log.update(step + 1)
    return model.cpu().eval()


@torch.no_grad()
def segment(model: LesionSegmenter, images: np.ndarray | Tensor, threshold: float, *,
            batch_size: int = 8) -> np.ndarray:
    """``(N, 1, D, H, W)`` uint8 lesion masks (probability >= ``threshold``), on the model's device."""
    values = _volumes("images", images)
    device = next(model.parameters()).device
    out = [(torch.sigmoid(model(values[i:i + batch_size].to(device))) >= threshold).cpu()
           for i in range(0, len(values), batch_size)]
    return (torch.cat(out) if out else torch.zeros_like(values, dtype=torch.bool)).numpy().astype(np.uint8)


def dice(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-volume Dice of 0/1 masks ``(N, ...)``; 1 where both are empty."""
    p, t = np.asarray(predicted).reshape(len(predicted), -1) > 0, np.asarray(target).reshape(len(target), -1) > 0
    overlap, total = (p & t).sum(1), p.sum(1) + t.sum(1)
    return np.where(total > 0, 2.0 * overlap / np.maximum(total, 1), 1.0)


def lesion_component(mask: np.ndarray, centre_voxel: Sequence[float], spacing_mm: Sequence[float]) -> np.ndarray:
    """The component (26-neighbourhood) of a 0/1 ``(D, H, W)`` mask that contains ``centre_voxel``, else the
    one whose nearest voxel is closest to it (mm); all False when the mask is empty."""
    binary = np.asarray(mask).reshape(np.asarray(mask).shape[-3:]) > 0
    if not binary.any():
        return binary
    components, _ = ndimage.label(binary, structure=np.ones((3, 3, 3)))
    centre = np.asarray(centre_voxel, dtype=np.float64)
    inside = tuple(np.clip(np.round(centre).astype(int), 0, np.array(binary.shape) - 1))
    chosen = int(components[inside])
    if chosen == 0:
        voxels = np.argwhere(components > 0)
        spacing = np.asarray(spacing_mm, dtype=np.float64)
        chosen = int(components[tuple(voxels[np.argmin((((voxels - centre) * spacing) ** 2).sum(1))])])
    return components == chosen


def measure_lesion(mask: np.ndarray, centre_voxel: Sequence[float], spacing_mm: Sequence[float]) -> dict[str, float]:
    """The segmented lesion nearest a requested centre: its volume (mL) and centroid (voxel and mm).

    The component (26-neighbourhood) containing ``centre_voxel``; if none does, the one whose
    nearest voxel is closest to it (`lesion_component`); NaN with ``found = 0`` when the mask is empty.
    """
    component = lesion_component(mask, centre_voxel, spacing_mm)
    if not component.any():
        return {"found": 0.0, "voxels": 0.0, "volume_ml": 0.0, **{f"centroid_{a}": math.nan for a in "dhw"}}
    voxels = np.argwhere(component)
    centroid = voxels.mean(axis=0)
    return {"found": 1.0, "voxels": float(len(voxels)),
            "volume_ml": len(voxels) * float(np.prod(np.asarray(spacing_mm, dtype=np.float64))) / 1000.0,
            **{f"centroid_{a}": float(v) for a, v in zip("dhw", centroid)}}


def lesion_control_table(plan: pd.DataFrame, masks: np.ndarray, spacing_mm: Sequence[float]) -> pd.DataFrame:
    """Requested (written into the label map) against realised (segmented in the synthetic volume) lesions.

    Args:
        plan: one row per lesion-control volume, in the order of ``masks``, with
            ``placed_voxels``, ``placed_volume_ml`` and ``placed_centre_{d,h,w}`` (voxels).
        masks: ``(N, 1, D, H, W)`` segmented lesion masks of the synthetic volumes.

    Returns:
        ``plan`` with ``realised_*`` columns, ``volume_error_ml`` (realised - requested),
        ``abs_volume_error_ml``, ``centre_error_mm`` (Euclidean, NaN when nothing was found).
    """
    if len(plan) != len(masks):
        raise ValueError(f"The lesion plan has {len(plan)} rows for {len(masks)} segmented volumes.")
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    rows = []
    for row, mask in zip(plan.to_dict("records"), masks):
        centre = [row[f"placed_centre_{a}"] for a in "dhw"]
        found = measure_lesion(mask, centre, spacing)
        offset = (np.array([found[f"centroid_{a}"] for a in "dhw"]) - np.asarray(centre, dtype=float)) * spacing
        rows.append({**row, "realised_found": int(found["found"]), "realised_voxels": int(found["voxels"]),
                     "realised_volume_ml": found["volume_ml"],
                     **{f"realised_centroid_{a}": found[f"centroid_{a}"] for a in "dhw"},
                     "volume_error_ml": found["volume_ml"] - float(row["placed_volume_ml"]),
                     "abs_volume_error_ml": abs(found["volume_ml"] - float(row["placed_volume_ml"])),
                     "centre_error_mm": float(np.sqrt((offset**2).sum()))})
    return pd.DataFrame(rows)


def control_summary(table: pd.DataFrame, *, resamples: int = 200, level: float = 0.95,
                    seed: int = 0, groups: Groups = None) -> dict[str, float]:
    """Detection rate, mean absolute volume error (mL) and mean centre error (mm, found lesions) with intervals.

    ``groups``: the patient of each row (whose label map the volume was drawn from; for real lesions,
    whose volume holds it): the intervals then draw patients whole, and ``control_patients`` counts them.
    """
    out = {"control_n": float(len(table)), "control_detected": float(table["realised_found"].mean())
           if len(table) else math.nan}
    if groups is not None:
        out["control_patients"] = float(n_groups(groups))
    for column, name in (("abs_volume_error_ml", "control_abs_volume_error_ml"),
                         ("volume_error_ml", "control_volume_error_ml"),
                         ("centre_error_mm", "control_centre_error_mm")):
        known = table[column].notna().to_numpy()
        if known.any():
            values = np.asarray(table[column].to_numpy()[known], dtype=np.float64)
            stats = fidelity.summarise(torch.as_tensor(values), resamples=resamples, level=level, seed=seed,
                                       groups=subset(groups, known))
            out |= {name: stats["mean"], f"{name}_low": stats["low"], f"{name}_high": stats["high"]}
    return out


# ----------------------------------------------------------------------------- 3b. lesion control by intensity


def tissue_residual(image: np.ndarray, label_map: np.ndarray, sigma_vox: float = 0.0) -> np.ndarray:
    """How much brighter each voxel is than its tissue, in units of the white matter - CSF contrast.

    ``(x - m(t)) / (m(white) - m(csf))`` with ``m`` the median over the volume's voxels of a tissue
    of its label map and ``t`` the voxel's tissue: grey matter for grey-matter voxels, white matter
    for every other voxel (a lesion written into a label map replaces white matter, the plan's
    ``clear_label``). Dividing by the contrast makes one threshold fit volumes whose intensity
    scales differ (bias, gamma).

    Args:
        image: ``(D, H, W)`` or ``(1, D, H, W)``.
        label_map: integer labels of the same shape (the cohort's: CSF 1, grey 2, white 3, lesion 4, edema 5).
        sigma_vox: Gaussian smoothing of the image first (0 = none).
    """
    shape = np.asarray(image).shape[-3:]
    values = np.asarray(image, dtype=np.float64).reshape(shape)
    labels = np.asarray(label_map).reshape(shape)
    if sigma_vox > 0:
        values = ndimage.gaussian_filter(values, sigma_vox)
    medians = {}
    for label in (CSF, GREY, WHITE):
        inside = values[labels == label]
        if not inside.size:
            raise ValueError(f"The label map has no voxel of label {label} ({LABEL_NAMES[label]}): the lesion "
                             "measurement compares intensities with csf, grey and white matter.")
        medians[label] = float(np.median(inside))
    contrast = medians[WHITE] - medians[CSF]
    if abs(contrast) < 1e-6:
        raise ValueError("White matter and CSF have the same median intensity: no contrast to measure a lesion by.")
    return (values - np.where(labels == GREY, medians[GREY], medians[WHITE])) / abs(contrast)


def intensity_candidates(residual: np.ndarray, label_map: np.ndarray, centre_voxel: Sequence[float],
                         volume_ml: float, spacing_mm: Sequence[float], threshold: float,
                         config: IntensityControlConfig) -> np.ndarray:
    """Lesion candidates around a requested lesion: parenchyma or lesion voxels of the label map whose
    `tissue_residual` passes ``threshold`` (above it, or below ``-threshold`` for dark lesions), within
    the requested volume's equivalent-sphere radius plus ``margin_mm`` of the requested centre.

    Returns:
        ``(D, H, W)`` bool; `measure_lesion` then keeps the component at (or nearest) the centre.
    """
    labels = np.asarray(label_map).reshape(np.asarray(residual).shape)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    radius = (3.0 * float(volume_ml) * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0) + float(config.margin_mm)
    grids = np.ogrid[tuple(slice(0, n) for n in labels.shape)]
    distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre_voxel, spacing))
    signed = residual if config.lesion_brighter else -residual
    return (signed > threshold) & np.isin(labels, (GREY, WHITE, LESION)) & (distance2 <= radius**2)


def real_lesions(lesion_masks: np.ndarray, spacing_mm: Sequence[float]) -> pd.DataFrame:
    """Every connected lesion (26-neighbourhood) of real volumes as a request: ``volume`` (row of the
    masks), ``lesion`` (component number), ``placed_centre_{d,h,w}`` (its centroid, voxels),
    ``placed_voxels`` and ``placed_volume_ml``."""
    voxel_ml = float(np.prod(np.asarray(spacing_mm, dtype=np.float64))) / 1000.0
    rows = []
    for v, mask in enumerate(np.asarray(lesion_masks)):
        components, n = ndimage.label(mask.reshape(mask.shape[-3:]) > 0, structure=np.ones((3, 3, 3)))
        for k in range(1, n + 1):
            voxels = np.argwhere(components == k)
            rows.append({"volume": v, "lesion": k, **{f"placed_centre_{a}": float(c)
                                                      for a, c in zip("dhw", voxels.mean(axis=0))},
                         "placed_voxels": len(voxels), "placed_volume_ml": len(voxels) * voxel_ml})
    return pd.DataFrame(rows, columns=["volume", "lesion", "placed_centre_d", "placed_centre_h", "placed_centre_w",
                                       "placed_voxels", "placed_volume_ml"])


def _centre(row: Mapping[str, float]) -> tuple[float, float, float]:
    return tuple(float(row[f"placed_centre_{a}"]) for a in "dhw")


def intensity_masks(images: np.ndarray, label_maps: np.ndarray, plan: pd.DataFrame, spacing_mm: Sequence[float],
                    threshold: float, config: IntensityControlConfig, *,
                    residuals: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """``(N, 1, D, H, W)`` uint8 candidate masks of each plan row's volume (`intensity_candidates`), for
    `lesion_control_table`. ``plan`` rows are in the order of ``images`` (a ``volume`` column, when
    present, names the row of ``images`` instead); ``residuals`` reuses `tissue_residual`s already computed."""
    values, labels = _volumes("images", images).numpy(), np.asarray(label_maps)
    out = np.zeros((len(plan), *values.shape[1:]), np.uint8)
    for k, row in enumerate(plan.to_dict("records")):
        v = int(row.get("volume", k))
        residual = residuals[v] if residuals is not None else tissue_residual(values[v], labels[v], config.sigma_vox)
        out[k, 0] = intensity_candidates(residual, labels[v], _centre(row), float(row["placed_volume_ml"]),
                                         spacing_mm, threshold, config)
    return out


def _lesion_dice(plan: pd.DataFrame, candidates: np.ndarray, lesion_masks: np.ndarray,
                 spacing_mm: Sequence[float]) -> np.ndarray:
    """Per real lesion: Dice of the measured component with that lesion's own component of the mask."""
    scores = []
    for row, candidate in zip(plan.to_dict("records"), candidates):
        truth = lesion_component(lesion_masks[int(row["volume"])], _centre(row), spacing_mm)
        found = lesion_component(candidate, _centre(row), spacing_mm)
        scores.append(2.0 * (found & truth).sum() / max(found.sum() + truth.sum(), 1))
    return np.asarray(scores, dtype=np.float64)


def calibrate_intensity_threshold(images: np.ndarray, label_maps: np.ndarray, lesion_masks: np.ndarray,
                                  spacing_mm: Sequence[float], config: IntensityControlConfig) -> tuple[float, float]:
    """The threshold of ``config.thresholds`` with the best mean per-lesion Dice on real (training) volumes
    (the middle one of several equally good).

    Returns:
        ``(threshold, mean Dice there)``; ``config.threshold`` when it is set (Dice NaN).

    Raises:
        ValueError: no lesion in ``lesion_masks`` to calibrate on.
    """
    if config.threshold is not None:
        return float(config.threshold), math.nan
    plan = real_lesions(lesion_masks, spacing_mm)
    if plan.empty:
        raise ValueError("No lesion in the training volumes to calibrate study_3d.evaluation.control.threshold on; "
                         "set it explicitly.")
    values, labels = _volumes("images", images).numpy(), np.asarray(label_maps)
    residuals = [tissue_residual(values[v], labels[v], config.sigma_vox) for v in range(len(values))]
    start, stop, step = (float(v) for v in config.thresholds)
    grid = np.round(np.arange(start, stop + step / 2, step), 6)
    scores = np.array([_lesion_dice(plan, intensity_masks(values, labels, plan, spacing_mm, float(t), config,
                                                          residuals=residuals), lesion_masks, spacing_mm).mean()
                       for t in grid])
    # The middle of the best thresholds: where lesion and tissue separate cleanly, every threshold
    # between them is best, and the lowest would find noise.
    best = grid[scores >= scores.max() - 1e-9]
    threshold = float(best[(len(best) - 1) // 2])
    logger.info("lesion control: intensity threshold %.3f (mean Dice %.3f over %d training lesions)", threshold,
                scores.max(), len(plan))
    return threshold, float(scores.max())


def intensity_floor(images: np.ndarray, label_maps: np.ndarray, lesion_masks: np.ndarray,
                    spacing_mm: Sequence[float], threshold: float, config: IntensityControlConfig, *,
                    sites_per_volume: int = 5, min_distance_mm: float = 30.0, resamples: int = 200,
                    level: float = 0.95, seed: int = 0, groups: Groups = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """The intensity method's own error on real (held-out) volumes: the floor of the control table.

    Every real lesion is measured as if it had been requested (its centroid and volume); and, at
    ``sites_per_volume`` parenchyma voxels per volume at least ``min_distance_mm`` from any lesion,
    a request of the real lesions' median volume tells how often the method finds a lesion where
    there is none. ``groups`` (the patient of each volume): the intervals draw patients whole.

    Returns:
        ``(table, summary)``: one row per real lesion (`lesion_control_table` columns, ``dice``);
        ``floor_dice``, ``floor_detected``, ``floor_abs_volume_error_ml`` (+ max), ``floor_volume_error_ml``,
        ``floor_centre_error_mm`` (+ max), ``floor_false_detection`` and the counts; the lesion
        contrast, per lesion (``lesion_contrast_sd``, `lesion_contrast_sd`) and as means
        (``floor_lesion_contrast``, ``floor_lesion_contrast_sd``).
    """
    values, labels = _volumes("images", images).numpy(), np.asarray(label_maps)
    residuals = [tissue_residual(values[v], labels[v], config.sigma_vox) for v in range(len(values))]
    plan = real_lesions(lesion_masks, spacing_mm)
    if plan.empty:
        raise ValueError("No lesion in the held-out volumes: the lesion-control floor has nothing to measure.")
    masks = intensity_masks(values, labels, plan, spacing_mm, threshold, config, residuals=residuals)
    table = lesion_control_table(plan, masks, spacing_mm).assign(dice=_lesion_dice(plan, masks, lesion_masks,
                                                                                    spacing_mm))
    summary = {f"floor_{k.removeprefix('control_')}": v
               for k, v in control_summary(table, resamples=resamples, level=level, seed=seed,
                                           groups=subset(groups, table["volume"].to_numpy(dtype=np.int64))).items()}
    summary |= {"floor_dice": float(table["dice"].mean()), "floor_threshold": float(threshold),
                "floor_abs_volume_error_ml_max": float(table["abs_volume_error_ml"].max()),
                "floor_centre_error_mm_max": float(table["centre_error_mm"].max())}
    summary |= false_detection(values, labels, lesion_masks, float(plan["placed_volume_ml"].median()), spacing_mm,
                               threshold, config, residuals=residuals, sites_per_volume=sites_per_volume,
                               min_distance_mm=min_distance_mm, seed=seed, prefix="floor")
    summary["floor_lesion_contrast"] = float(np.nanmean(lesion_contrast(residuals, lesion_masks)))
    contrast = {v: component_contrast_sd(residuals[v], labels[v], lesion_masks[v], spacing_mm,
                                         config.contrast_shell_mm) for v in sorted(set(table["volume"]))}
    table["lesion_contrast_sd"] = [contrast[int(v)][int(k) - 1] for v, k in zip(table["volume"], table["lesion"])]
    summary["floor_lesion_contrast_sd"] = float(np.nanmean(table["lesion_contrast_sd"]))
    return table, summary


def lesion_contrast(residuals: Sequence[np.ndarray], lesion_masks: np.ndarray) -> np.ndarray:
    """Per volume, the mean `tissue_residual` over its lesion voxels (NaN without any): how much brighter
    than its tissue the lesion is, without a threshold (real lesions: ``floor_lesion_contrast``)."""
    return np.array([float(r[np.asarray(m).reshape(r.shape) > 0].mean()) if np.asarray(m).any() else math.nan
                     for r, m in zip(residuals, lesion_masks)])


def lesion_contrast_sd(residual: np.ndarray, label_map: np.ndarray, lesion_mask: np.ndarray,
                       spacing_mm: Sequence[float], shell_mm: float, *,
                       tissue_labels: Sequence[int] = (GREY, WHITE), edema_label: int | None = EDEMA) -> float:
    """How far one lesion stands out of the tissue around it, in units of that tissue's spread.

    ``(mean r inside - mean r around) / std r around`` with ``r`` the `tissue_residual` (each voxel
    relative to its own tissue's median, so grey and white matter around a lesion share a scale) and
    "around" the tissue voxels (``tissue_labels``: grey and white matter) of ``label_map`` within
    ``shell_mm`` of the lesion or of the edema labelled around it (``edema_label`` voxels connected to
    the lesion): the normal-appearing
    tissue beyond the edema, a shell as wide as around a lesion without edema (measured from the
    lesion alone, a wide edema would leave a few voxels of tissue, or none, and their spread would
    make the ratio explode).
    A contrast-to-noise ratio, the quantity that decides whether an eye sees the lesion in a
    noisy texture (0: not at all; a real FLAIR lesion of the cohort: see ``floor_lesion_contrast_sd``).

    Args:
        residual: ``(D, H, W)`` `tissue_residual` of the volume (or one slice ``(H, W)``, with
            ``spacing_mm`` of two: ``synthmed.metrics.lesion_signal`` passes a 2D sample's intensities).
        label_map: its integer labels (the cohort's: CSF 1, grey 2, white 3, lesion 4, edema 5), same shape.
        lesion_mask: 0/1 mask of the lesion, same shape.
        spacing_mm: voxel size (D, H, W), or (H, W).
        shell_mm: width of the ring of surrounding tissue (> 0).
        tissue_labels: the label values of the tissue the ring takes (the cohort's grey and white matter).
        edema_label: the label value of perilesional edema; None: the map marks none.

    Returns:
        The ratio; NaN when the mask is empty, fewer than 2 tissue voxels surround it or they do not vary.
    """
    if not (is_number(shell_mm) and shell_mm > 0):
        raise ValueError(f"lesion_contrast_sd: shell_mm must be a number > 0, got {shell_mm!r}.")
    values = np.asarray(residual, dtype=np.float64)
    shape = values.shape[-3:]
    values = values.reshape(shape)
    labels = np.asarray(label_map).reshape(shape)
    lesion = np.asarray(lesion_mask).reshape(shape) > 0
    if not lesion.any():
        return math.nan
    # The lesion and the edema connected to it (another lesion's edema does not widen this one's shell).
    if edema_label is None:
        affected = lesion
    else:
        parts, _ = ndimage.label(lesion | (labels == edema_label))
        affected = np.isin(parts, np.unique(parts[lesion]))
    distance = ndimage.distance_transform_edt(~affected, sampling=np.asarray(spacing_mm, dtype=np.float64))
    around = values[(~affected) & (distance <= shell_mm) & np.isin(labels, tuple(tissue_labels))]
    spread = float(around.std()) if around.size >= 2 else 0.0
    if spread <= 1e-12:
        return math.nan
    return (float(values[lesion].mean()) - float(around.mean())) / spread


def component_contrast_sd(residual: np.ndarray, label_map: np.ndarray, lesion_mask: np.ndarray,
                          spacing_mm: Sequence[float], shell_mm: float) -> list[float]:
    """`lesion_contrast_sd` of each connected lesion (26-neighbourhood) of one volume, in the order of
    `real_lesions`' ``lesion`` column (component 1, 2, ...)."""
    shape = np.asarray(residual).shape[-3:]
    components, n = ndimage.label(np.asarray(lesion_mask).reshape(shape) > 0, structure=np.ones((3, 3, 3)))
    return [lesion_contrast_sd(residual, label_map, components == k, spacing_mm, shell_mm) for k in range(1, n + 1)]


def visibility_by_size(control_table: pd.DataFrame, visible_contrast_sd: float) -> pd.DataFrame:
    """The lesion contrast (`lesion_contrast_sd`) per plan row (one size and place asked for).

    Args:
        control_table: the lesion-control table with ``plan_row``, ``requested_radius_mm``,
            ``requested_volume_ml``, ``placed_volume_ml``, ``lesion_contrast_sd`` and, optionally,
            ``real_contrast_sd`` (the real held-out lesions' mean contrast, the reference).
        visible_contrast_sd: contrast from which a lesion counts as visible.

    Returns:
        One row per plan row: ``plan_row``, ``requested`` (as asked: "4 mL" or "radius 9 mm"), ``n``,
        ``placed_volume_ml`` (mean), ``contrast_sd`` (mean; NaN-free lesions), ``contrast_sd_min``,
        ``visible`` (share of the row's lesions at or above ``visible_contrast_sd``; NaN counts as not
        visible) and ``real_contrast_sd``.
    """
    columns = ["plan_row", "requested", "n", "placed_volume_ml", "contrast_sd", "contrast_sd_min", "visible",
               "real_contrast_sd"]
    if control_table.empty:
        return pd.DataFrame(columns=columns)
    missing = [c for c in ("plan_row", "placed_volume_ml", "lesion_contrast_sd") if c not in control_table]
    if missing:
        raise ValueError(f"visibility_by_size: the lesion-control table lacks columns {missing} (it needs the "
                         "plan rows and each lesion's lesion_contrast_sd).")
    rows = []
    for plan_row, group in control_table.groupby("plan_row", sort=True):
        first = group.iloc[0]
        volume = pd.to_numeric(pd.Series([first.get("requested_volume_ml")]), errors="coerce").iloc[0]
        radius = pd.to_numeric(pd.Series([first.get("requested_radius_mm")]), errors="coerce").iloc[0]
        requested = f"{volume:g} mL" if np.isfinite(volume) else f"radius {radius:g} mm"
        contrasts = group["lesion_contrast_sd"].to_numpy(dtype=np.float64)
        finite = contrasts[np.isfinite(contrasts)]
        reference = (group["real_contrast_sd"].to_numpy(dtype=np.float64) if "real_contrast_sd" in group
                     else np.array([math.nan]))
        rows.append({"plan_row": int(plan_row), "requested": requested, "n": len(group),
                     "placed_volume_ml": float(group["placed_volume_ml"].astype(float).mean()),
                     "contrast_sd": float(finite.mean()) if finite.size else math.nan,
                     "contrast_sd_min": float(finite.min()) if finite.size else math.nan,
                     "visible": float(np.mean(np.nan_to_num(contrasts, nan=-np.inf) >= visible_contrast_sd)),
                     "real_contrast_sd": float(reference[0])})
    return pd.DataFrame(rows, columns=columns)


def false_detection(images: np.ndarray, label_maps: np.ndarray, lesion_masks: np.ndarray, volume_ml: float,
                    spacing_mm: Sequence[float], threshold: float, config: IntensityControlConfig, *,
                    residuals: Sequence[np.ndarray] | None = None, sites_per_volume: int = 5,
                    min_distance_mm: float = 30.0, seed: int = 0, prefix: str = "control") -> dict[str, float]:
    """How often the intensity method finds a lesion where there is none: requests of ``volume_ml`` at
    ``sites_per_volume`` grey / white matter voxels per volume, at least ``min_distance_mm`` from any
    voxel of ``lesion_masks``. Returns ``<prefix>_false_detection`` and ``<prefix>_false_detection_sites``."""
    values, labels = _volumes("images", images).numpy(), np.asarray(label_maps)
    if residuals is None:
        residuals = [tissue_residual(values[v], labels[v], config.sigma_vox) for v in range(len(values))]
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    sites = []
    for v in range(len(values)):
        shape = labels[v].shape[-3:]
        far = ndimage.distance_transform_edt(np.asarray(lesion_masks[v]).reshape(shape) == 0,
                                             sampling=spacing) >= min_distance_mm
        options = np.argwhere(np.isin(labels[v].reshape(shape), (GREY, WHITE)) & far)
        for voxel in options[rng.choice(len(options), size=min(sites_per_volume, len(options)), replace=False)]:
            sites.append({"volume": v, **{f"placed_centre_{a}": float(c) for a, c in zip("dhw", voxel)},
                          "placed_volume_ml": float(volume_ml)})
    if not sites:
        return {}
    found = intensity_masks(values, labels, pd.DataFrame(sites), spacing_mm, threshold, config, residuals=residuals)
    hits = [measure_lesion(mask, _centre(row), spacing)["found"] for row, mask in zip(sites, found)]
    return {f"{prefix}_false_detection": float(np.mean(hits)), f"{prefix}_false_detection_sites": float(len(sites))}


def segmentation_utility(real: tuple[np.ndarray, np.ndarray], synthetic: tuple[np.ndarray, np.ndarray],
                         test: tuple[np.ndarray, np.ndarray], config: SegmenterConfig, seeds: Sequence[int], *,
                         resamples: int = 200, level: float = 0.95, trained: Mapping[int, nn.Module] | None = None,
                         test_groups: Groups = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Lesion segmenters trained on real volumes and on real + synthetic volumes, scored on real test volumes.

    Args:
        real, synthetic, test: ``(images, lesion masks)``, each ``(N, 1, D, H, W)``; the synthetic
            volumes' masks are the lesions of the label maps they were drawn from.
        seeds: one segmenter per mode and seed (``config.seed`` is replaced).
        trained: real-only segmenters already trained with this config, by seed (not trained again).
        test_groups: the patient of each test volume: the intervals draw patients whole.

    Returns:
        ``(runs, summary)``: one row per mode and seed with the mean Dice over test volumes with a
        lesion; ``utility_dice_real``, ``utility_dice_real_synthetic`` and their difference
        (real + synthetic minus real), each a mean over seeds with a percentile-bootstrap interval
        over the test volumes, or their patients with ``test_groups`` (per-volume Dice averaged over
        seeds, the difference paired by volume); with groups ``utility_test_patients``.
    """
    has_lesion = np.asarray(test[1]).reshape(len(test[1]), -1).any(1)
    if not has_lesion.any():
        raise ValueError("No test volume holds a lesion: the segmentation utility has nothing to score.")
    images, masks = np.asarray(test[0])[has_lesion], np.asarray(test[1])[has_lesion]
    modes = {"real": real, "real_synthetic": (np.concatenate([real[0], synthetic[0]]),
                                              np.concatenate([real[1], synthetic[1]]))}
    runs, per_volume = [], {}
    for mode, (train_images, train_masks) in modes.items():
        scores = []
        for seed in seeds:
            model = (trained[int(seed)] if mode == "real" and trained and int(seed) in trained
                     else fit_segmenter(train_images, train_masks, dataclasses.replace(config, seed=int(seed))))
            score = dice(segment(model, images, config.threshold), masks)
            runs.append({"mode": mode, "seed": int(seed), "train_volumes": len(train_images),
                         "test_volumes": len(images), "dice": float(score.mean())})
            scores.append(score)
        per_volume[mode] = np.mean(scores, axis=0)
    summary: dict[str, float] = {}
    per_volume["difference"] = per_volume["real_synthetic"] - per_volume["real"]
    for name, values in (("utility_dice_real", per_volume["real"]),
                         ("utility_dice_real_synthetic", per_volume["real_synthetic"]),
                         ("utility_dice_difference", per_volume["difference"])):
        stats = fidelity.summarise(torch.as_tensor(values), resamples=resamples, level=level,
                                   groups=subset(test_groups, has_lesion))
        summary |= {name: stats["mean"], f"{name}_low": stats["low"], f"{name}_high": stats["high"]}
    summary |= {"utility_test_volumes": float(len(images)), "utility_seeds": float(len(seeds))}
    if test_groups is not None:
        summary["utility_test_patients"] = float(n_groups(subset(test_groups, has_lesion)))
    return pd.DataFrame(runs), summary


# ----------------------------------------------------------------------------- 4. memorisation


def _unit_centred(volumes: Tensor) -> Tensor:
    """Each volume flattened, centred and scaled to unit L2 norm (float64); constant volumes stay zero."""
    rows = volumes.flatten(1).to(torch.float64)
    rows = rows - rows.mean(dim=1, keepdim=True)
    norms = rows.norm(dim=1, keepdim=True)
    return torch.where(norms > 1e-12, rows / norms.clamp_min(1e-12), torch.zeros_like(rows))


def volume_nearest(queries: np.ndarray | Tensor, references: np.ndarray | Tensor, *,
                   mirror: bool = True) -> pd.DataFrame:
    """The most similar reference volume of each query: NCC over all voxels, also left-right mirrored.

    Returns:
        One row per query: ``similarity`` (Pearson correlation in [-1, 1]), ``neighbour`` (reference
        row) and ``mirrored`` (1 when the best match was the mirrored query).
    """
    q, r = _volumes("queries", queries), _volumes("references", references)
    if q.shape[1:] != r.shape[1:]:
        raise ValueError(f"Queries {tuple(q.shape[1:])} and references {tuple(r.shape[1:])} differ in shape.")
    if len(r) == 0:
        raise ValueError("volume_nearest needs at least one reference volume.")
    ref = _unit_centred(r)
    scores = [_unit_centred(q) @ ref.T]
    if mirror:
        scores.append(_unit_centred(q.flip(-1)) @ ref.T)
    stacked = torch.stack(scores)  # (transforms, Q, R)
    best_per_transform, neighbour = stacked.max(dim=2)
    best, transform = best_per_transform.max(dim=0)
    return pd.DataFrame({"similarity": best.numpy(),
                         "neighbour": neighbour.gather(0, transform[None])[0].numpy().astype(np.int64),
                         "mirrored": transform.numpy().astype(np.int64)})


def plant_volume_copies(references: np.ndarray | Tensor, n: int, *, noise_std: float = 0.05,
                        gain: tuple[float, float] = (0.9, 1.1), offset: tuple[float, float] = (-0.05, 0.05),
                        seed: int = 0) -> tuple[Tensor, np.ndarray]:
    """``n`` perturbed copies of reference volumes (Gaussian noise, gain and offset, a mirror every other one).

    Returns:
        ``(copies (n, 1, D, H, W) clipped to [-1, 1], the reference row of each)``.
    """
    r = _volumes("references", references)
    if len(r) == 0 or n < 1:
        raise ValueError(f"Planting copies needs references and n >= 1, got {len(r)} references and n={n}.")
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(r), size=n, replace=n > len(r))
    copies = r[torch.as_tensor(rows)].clone()
    for k in range(n):
        copies[k] = copies[k] * float(rng.uniform(*gain)) + float(rng.uniform(*offset))
        copies[k] += torch.as_tensor(rng.normal(0.0, noise_std, size=tuple(copies[k].shape)), dtype=torch.float32)
        if k % 2:
            copies[k] = copies[k].flip(-1)
    return copies.clamp(-1.0, 1.0), rows


# ----------------------------------------------------------------------------- 5. figures


def _margin_ticks(ax, region: np.ndarray) -> None:
    """Red ticks outside the image at the row and column of ``region``'s centre (``imshow`` with origin lower)."""
    rows, columns = np.nonzero(region)
    y, x = float(rows.mean()), float(columns.mean())
    height, width = region.shape
    style = {"color": "red", "linewidth": 1.2, "clip_on": False}
    ax.plot([-0.5 - 0.12 * width, -0.5 - 0.02 * width], [y, y], **style)
    ax.plot([x, x], [-0.5 - 0.12 * height, -0.5 - 0.02 * height], **style)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(-0.5, height - 0.5)


def orthogonal_views(rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, Sequence[int]]], *,
                     title: str) -> Figure:
    """One row per pair: the real volume's three sections, then the synthetic one's, through one voxel.

    The lesion mask of the synthetic's label map is outlined in red on the real sections only; on
    the synthetic ones red ticks in the margins mark the centre's row and column, so that what the
    generator drew there is not hidden under the outline (a lesion of a few voxels is narrower
    than the line around it).

    Args:
        rows: ``(caption, real (D, H, W) or (1, D, H, W), synthetic (same shape), lesion mask of the
            synthetic's label map or None, centre voxel (d, h, w))``.
    """
    figure = Figure(figsize=(11.0, 1.9 * max(len(rows), 1) + 0.4), layout="constrained")
    axes = figure.subplots(max(len(rows), 1), 6, squeeze=False)
    for r, (caption, real, synthetic, mask, centre) in enumerate(rows):
        shape = np.asarray(real).shape[-3:]
        outline = None if mask is None else _sections(np.asarray(mask).reshape(shape) > 0, centre)
        for half, (name, volume) in enumerate((("real", real), ("synthetic", synthetic))):
            sections = _sections(np.asarray(volume).reshape(shape), centre)
            for k, plane in enumerate(PLANES):
                ax = axes[r][3 * half + k]
                ax.imshow(sections[plane], cmap="gray", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
                if outline is not None and outline[plane].any():
                    if half == 0:
                        ax.contour(outline[plane].astype(float), levels=[0.5], colors="red", linewidths=0.7)
                    else:
                        _margin_ticks(ax, outline[plane])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{name} {plane}", fontsize=8)
        axes[r][0].set_ylabel(caption, fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure
