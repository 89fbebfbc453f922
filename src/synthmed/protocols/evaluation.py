"""The evaluation protocol (docs/evaluation.md), one function per step.

Per family (the evaluation pipeline runs these once per registered family):

0. ``synthmed.protocols.encoders.train_encoder`` (the ``feature_encoders`` pipeline): the
   domain feature network of a source, trained on its real training split;
1. ``prepare_evaluation``: the family's samples and the real splits of its source at one
   size, and their features in the configured feature space;
2. ``fidelity_scores``: FID/KID with bootstrap intervals beside real-vs-real floors on the
   same N, PRDC, MS-SSIM diversity, paired MSE/SSIM/PSNR for mask-conditional samples;
3. ``memorisation_scores``: the memorisation gate over the samples (nearest training image,
   calibrated threshold, self-test);
4. ``utility_scores``: the downstream classifier under every training mode;
5. ``family_figures``: real vs synthetic, nearest-neighbour pairs, t-SNE per class.

Then, across families: ``compare_families`` (one table), ``collect_metrics``
(``data/08_reporting/metrics.json``), ``build_report`` (HTML) and ``build_reader_kit``.
Every function takes parsed configuration (``from_params`` at the node boundary) and the
families as a sequence: nothing here names a family.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import class_names_of
from synthmed.core.validation import is_int
from synthmed.generators.base import label_map_array
from synthmed.metrics.detectability import DetectabilityConfig, detectability_scores
from synthmed.metrics.features import (
    FeatureNetwork,
    FeatureNetworkConfig,
    TrainedClassifier,
    at_size,
    feature_network,
)
from synthmed.metrics.lesion_signal import LesionSignalConfig, paired_lesion_contrast
from synthmed.metrics.lesion_signal import lesion_signal as _lesion_signal
from synthmed.metrics.reader_study import build_reader_kit as _reader_kit
from synthmed.metrics.report import number, render_report
from synthmed.metrics.resampling import disjoint_halves, n_groups, subset
from synthmed.metrics.steps_sweep import SWEEP_COLUMNS, sweep_metrics
from synthmed.metrics.utility import FitConfig, UtilityConfig, evaluate_utility
from synthmed.privacy.memorisation import GateConfig, MemorisationError, held_out_maxima, run_gate
from synthmed.protocols.encoders import patient_keys, source_config, split_images

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from synthmed.metrics import fidelity

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
torch = lazy_import("torch")

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class FidelityConfig:
    """``params:evaluation.fidelity``."""

    resamples: int = 200
    level: float = 0.95
    kid_subset_size: int = 100
    kid_subsets: int = 50
    prdc_k: int = 5
    diversity_pairs: int = 200
    seed: int = 0
    # Random splits of the reference into halves A and B (``fid_splits``): FID, KID and PRDC are
    # averaged over them and the FID intervals pool their bootstraps; which patients and slices
    # land in a half moves them as much as the sampling noise does.
    splits: int = 5

    def __post_init__(self) -> None:
        if not is_int(self.splits) or self.splits < 1:
            raise ValueError(f"evaluation.fidelity.splits must be an integer >= 1 (random splits of the reference "
                             f"into halves), got {self.splits!r}.")


@dataclass(frozen=True)
class FigureConfig:
    """``params:evaluation.figures``."""

    per_class: int = 6
    nearest_pairs: int = 8
    tsne_perplexity: float = 20.0
    seed: int = 0


@dataclass(frozen=True)
class ReaderKitConfig:
    """``params:evaluation.reader_kit``: which samples go to the clinicians."""

    family: str = "ddpm"
    real_split: str = "test"
    per_source: int = 20
    display_px: int = 256
    seed: int = 0
    title: str = "synthmed reader study"


@dataclass(frozen=True)
class EvaluationConfig:
    """``params:evaluation`` (the blocks each node needs are built from it)."""

    sources: Mapping[str, Any]
    encoder: Mapping[str, Any]
    feature_network: Mapping[str, Any] = field(default_factory=dict)
    fidelity: Mapping[str, Any] = field(default_factory=dict)
    utility: Mapping[str, Any] = field(default_factory=dict)
    detectability: Mapping[str, Any] = field(default_factory=dict)
    lesion_signal: Mapping[str, Any] = field(default_factory=dict)
    memorisation: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, Any] = field(default_factory=dict)
    reader_kit: Mapping[str, Any] = field(default_factory=dict)
    steps_sweep: Mapping[str, Any] = field(default_factory=dict)


def evaluation_config(params: Mapping[str, Any]) -> EvaluationConfig:
    return from_params(EvaluationConfig, params, "evaluation")


def source_network(config: EvaluationConfig, encoder: TrainedClassifier) -> FeatureNetwork:
    """The configured feature network (``evaluation.feature_network``) for a source's encoder."""
    return feature_network(from_params(FeatureNetworkConfig, config.feature_network, "evaluation.feature_network"),
                           encoder.model)


def gate_config(params: Mapping[str, Any], **overrides: Any) -> GateConfig:
    """``params:evaluation.memorisation`` as a ``GateConfig`` (``overrides`` e.g. ``action``)."""
    return from_params(GateConfig, {**params, **overrides}, "evaluation.memorisation")


def _with_fit(cls: type, params: Mapping[str, Any], path: str) -> Any:
    """``cls`` from a parameter block whose ``fit`` sub-block is a ``FitConfig``."""
    fit = from_params(FitConfig, params.get("fit", {}), f"{path}.fit")
    return from_params(cls, {**params, "fit": fit}, path)


def utility_config(params: Mapping[str, Any]) -> UtilityConfig:
    return _with_fit(UtilityConfig, params, "evaluation.utility")


def detectability_config(params: Mapping[str, Any]) -> DetectabilityConfig:
    return _with_fit(DetectabilityConfig, params, "evaluation.detectability")


def lesion_signal_config(params: Mapping[str, Any]) -> LesionSignalConfig:
    return from_params(LesionSignalConfig, params, "evaluation.lesion_signal")


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """The finite entries of ``metrics`` (undefined values, e.g. AUROC without a class, are left out)."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def mode_key(mode: str) -> str:
    """A utility mode as a metric-name part (MLflow names allow no ``+``)."""
    return mode.replace("+", "_")



# ------------------------------------------------------------------ the evaluation set


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, C, S, S) float32 in [-1, 1]
    labels: torch.Tensor  # (N,) int64
    ids: np.ndarray  # manifest indices
    features: torch.Tensor  # (N, D)
    patients: np.ndarray | None = None  # (N,) patient keys, where the manifest has them


@dataclass(frozen=True)
class GridImages:
    """What the report's real-vs-synthetic grid shows, at the samples' own size (not the
    evaluation size, which can be smaller: a 3 px lesion of a 64 px slice is 1 px at 32).

    ``outlines`` mark the ``outline_labels`` of the real rows' masks and, for samples conditioned
    on a real label map (``condition: mask``), of that map; ``groups`` (patient keys) let the
    grid take its examples from different patients, so neighbouring slices of one patient do
    not sit side by side. None where the source has no masks or patients.
    """

    real: np.ndarray  # (N, C, S, S) float32 in [-1, 1]: the reference split
    real_labels: np.ndarray
    synthetic: np.ndarray  # (M, C, S, S)
    synthetic_labels: np.ndarray
    real_outlines: np.ndarray | None = None  # (N, 1, S, S) bool
    synthetic_outlines: np.ndarray | None = None  # (M, 1, S, S) bool
    real_groups: np.ndarray | None = None  # (N,)
    synthetic_groups: np.ndarray | None = None  # (M,); None-valued rows have no patient
    outline_labels: tuple[int, ...] = ()


def label_maps_at(store: Mapping[str, np.ndarray], rows: np.ndarray, size: int) -> np.ndarray:
    """The label maps of ``rows`` ``(N, 1, size, size)`` int64, resized by nearest neighbour as sampling
    resized the maps it conditioned on."""
    values = torch.as_tensor(np.asarray(label_map_array(store)[rows], dtype=np.float32))
    values = torch.nn.functional.interpolate(values, size=size, mode="nearest").numpy()
    return np.rint(values).astype(np.int64)


@dataclass(frozen=True)
class PairedMaps:
    """Samples drawn from real label maps at their own size, with the real image and the map of each
    (the lesion contrast: ``synthmed.metrics.lesion_signal``)."""

    synthetic: np.ndarray  # (N, C, S, S) float32 in [-1, 1]
    real: np.ndarray  # (N, C, S, S): the real image of each sample's map
    label_maps: np.ndarray  # (N, 1, S, S) int64


def grid_images(samples: Mapping[str, np.ndarray], synthetic_labels: np.ndarray, provenance: pd.DataFrame,
                store: Mapping[str, np.ndarray], manifest: pd.DataFrame, reference: Split,
                outline_labels: Sequence[int]) -> GridImages:
    """The grid's real (the ``reference`` split) and synthetic images at the samples' size, with outlines and patients.

    The reference's images are used as they are when the samples have the evaluation size, else
    read again from ``store`` and area-averaged (``at_size``); masks are resized by nearest
    neighbour, as sampling resized the label maps it conditioned on.
    """
    synthetic = np.asarray(samples["images"], dtype=np.float32)
    size = synthetic.shape[-1]
    real = reference.images if reference.images.shape[-1] == size else \
        at_size(np.asarray(store["images"][reference.ids], dtype=np.float32), size)
    source = provenance.get("source_index", pd.Series(-1, index=provenance.index)).to_numpy()
    conditioned = (provenance.get("condition", pd.Series("", index=provenance.index)) == "mask").to_numpy() \
        & (source >= 0)
    synthetic_groups = None
    if reference.patients is not None and conditioned.any():
        synthetic_groups = np.full(len(synthetic), None, dtype=object)
        synthetic_groups[conditioned] = patient_keys(manifest, source[conditioned])
    real_outlines = synthetic_outlines = None
    if outline_labels and ("masks" in store or "label_maps" in store):

        def outlined(rows: np.ndarray) -> np.ndarray:
            return np.isin(label_maps_at(store, rows, size), list(outline_labels))

        real_outlines = outlined(reference.ids)
        if conditioned.any():
            synthetic_outlines = np.zeros((len(synthetic), 1, size, size), dtype=bool)
            synthetic_outlines[conditioned] = outlined(source[conditioned])
    return GridImages(real.numpy(), reference.labels.numpy(), synthetic, np.asarray(synthetic_labels, dtype=np.int64),
                      real_outlines, synthetic_outlines, reference.patients, synthetic_groups, tuple(outline_labels))


@dataclass(frozen=True)
class EvaluationSet:
    """Everything the per-family nodes score, at the source's evaluation size.

    ``paired`` holds, for mask-conditional samples, the real image whose mask conditioned
    each sample (None otherwise), and ``synthetic.patients`` then the patient of that image, so
    the paired metrics' intervals draw patients. ``neighbours`` holds adjacent-slice pairs of the
    reference split (volumes only) for the neighbouring-slice floor, ``neighbour_patients`` the
    patient of each pair.
    """

    family: str
    source: str
    class_names: tuple[str, ...]
    network: FeatureNetwork
    reference: Split
    held_out: Split
    test: Split
    synthetic: Split
    provenance: pd.DataFrame
    paired: torch.Tensor | None
    neighbours: tuple[torch.Tensor, torch.Tensor] | None
    # samples of the earlier training checkpoints (sampling.retained_checkpoints), at the same
    # size; only the memorisation gate sees them (its fraction flagged per checkpoint)
    checkpoint_images: torch.Tensor | None = None
    checkpoint_provenance: pd.DataFrame | None = None
    grid: GridImages | None = None  # the report grid's images (None: drawn from the evaluation-size splits)
    paired_maps: PairedMaps | None = None  # mask-conditional samples at their own size with their maps
    neighbour_patients: np.ndarray | None = None  # (P,) the patient of each pair of ``neighbours``


def _neighbour_pairs(manifest: pd.DataFrame, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Manifest indices of neighbouring extracted slices (same volume and plane, consecutive
    ``slice_index`` among the extracted ones) in ``split``; empty for 2D sources."""
    needed = {"item_id", "plane", "slice_index"}
    if not needed <= set(manifest.columns):
        return np.zeros(0, int), np.zeros(0, int)
    rows = manifest[manifest["split"] == split].sort_values(["item_id", "plane", "slice_index"])
    following = rows.groupby(["item_id", "plane"])["index"].shift(-1)
    keep = following.notna().to_numpy()
    return rows["index"].to_numpy()[keep], following.to_numpy()[keep].astype(int)


def prepare_evaluation(
    family: str,
    samples: Mapping[str, np.ndarray],
    provenance: pd.DataFrame,
    source_name: str,
    store: Mapping[str, np.ndarray],
    manifest: pd.DataFrame,
    encoder: TrainedClassifier,
    config: EvaluationConfig,
    checkpoint_samples: Mapping[str, np.ndarray] | None = None,
    checkpoint_provenance: pd.DataFrame | None = None,
) -> EvaluationSet:
    """The family's samples and its source's real splits at one size, with their features.

    Args:
        family: the generator family (a name for tables and logs).
        samples: the family's sampled arrays (``images (N, C, H, W)`` float32 in [-1, 1], ``labels``).
        provenance: one row per sample (``index``, ``condition``, ``source_index``).
        source_name, store, manifest, encoder: the extraction output the family learnt from
            (``slices``, ``patches`` or ``lesion_patches``) and that source's domain encoder.
        config: ``params:evaluation``.
        checkpoint_samples, checkpoint_provenance: samples of earlier checkpoints (may be empty),
            for the memorisation gate only.
    """
    if source_name not in config.sources:
        raise ValueError(f"evaluation.sources has no block for source {source_name!r}; "
                         f"it has {sorted(config.sources)}.")
    source = source_config(config.sources[source_name], f"evaluation.sources.{source_name}")
    network = source_network(config, encoder)
    names = tuple(class_names_of(manifest))

    def split(name: str) -> Split:
        images, labels, ids = split_images(store, manifest, name, source.image_px)
        patients = patient_keys(manifest, ids) if "patient_key" in manifest else None
        return Split(images, labels, ids, network(images) if len(images) else torch.zeros(0, 0), patients)

    images = at_size(np.asarray(samples["images"], dtype=np.float32), source.image_px)
    if len(images) == 0:
        raise ValueError(f"{family}: no samples to evaluate; check {family}.sampling.plan.")
    source_index = provenance["source_index"].to_numpy() if "source_index" in provenance else np.full(len(images), -1)
    by_index = manifest.set_index("index")["class_id"]
    labels = np.asarray(samples["labels"], dtype=np.int64).copy()
    conditioned = source_index >= 0
    labels[conditioned] = by_index.loc[source_index[conditioned]].to_numpy()
    paired = sources = synthetic_patients = None
    if conditioned.all() and (provenance["condition"].isin(["mask", "inpaint"])).all():
        sources = np.asarray(store["images"][source_index], dtype=np.float32)  # the real image of each sample
        paired = at_size(sources, source.image_px)
        if "patient_key" in manifest:
            synthetic_patients = patient_keys(manifest, source_index)
    synthetic = Split(images, torch.as_tensor(labels), provenance["index"].to_numpy(), network(images),
                      synthetic_patients)
    first, second = _neighbour_pairs(manifest, source.reference_split)
    neighbours = neighbour_patients = None
    if len(first):
        neighbours = tuple(at_size(np.asarray(store["images"][ids], dtype=np.float32), source.image_px)
                           for ids in (first, second))
        if "patient_key" in manifest:
            neighbour_patients = patient_keys(manifest, first)
    logger.info("%s: %d samples vs the %s split of %s at %d px, features: %s", family, len(images),
                source.reference_split, source_name, source.image_px, network.name)
    earlier = None
    if checkpoint_samples is not None and checkpoint_provenance is not None and len(checkpoint_provenance):
        earlier = at_size(np.asarray(checkpoint_samples["images"], dtype=np.float32), source.image_px)
    reference = split(source.reference_split)
    grid = grid_images(samples, labels, provenance, store, manifest, reference, source.outline_labels)
    paired_maps = None
    if sources is not None and ("masks" in store or "label_maps" in store):
        native = np.asarray(samples["images"], dtype=np.float32)
        size = native.shape[-1]
        paired_maps = PairedMaps(native, at_size(sources, size).numpy(), label_maps_at(store, source_index, size))
    return EvaluationSet(family, source_name, names, network, reference,
                         split(source.held_out_split), split(source.test_split), synthetic,
                         provenance.reset_index(drop=True), paired,
                         (network(neighbours[0]), network(neighbours[1])) if neighbours else None,
                         earlier, None if earlier is None else checkpoint_provenance.reset_index(drop=True), grid,
                         paired_maps, neighbour_patients)


# ------------------------------------------------------------------ fidelity


def _interval(prefix: str, interval: fidelity.Interval, *, patients: int | None = None) -> dict[str, float]:
    """An interval's keys; with ``patients``, also ``<prefix>_patients``: the real patients its resamples drew."""
    out = {prefix: interval.estimate, f"{prefix}_low": interval.low, f"{prefix}_high": interval.high,
           f"{prefix}_n": float(min(interval.n_real, interval.n_fake))}
    if patients is not None:
        out[f"{prefix}_patients"] = float(patients)
    return out


class FidSets(NamedTuple):
    """The sets FID compares "on the same N" (``fid_sets``)."""

    half_a: torch.Tensor
    half_b: torch.Tensor
    synthetic: torch.Tensor
    rng: np.random.Generator
    groups_a: np.ndarray | None = None
    groups_b: np.ndarray | None = None
    groups_synthetic: np.ndarray | None = None


def fid_sets(reference: torch.Tensor, synthetic: torch.Tensor, *, seed: int,
             groups: Sequence[object] | np.ndarray | None = None,
             synthetic_groups: Sequence[object] | np.ndarray | None = None) -> FidSets:
    """The sets FID compares "on the same N": two disjoint real halves A and B of
    ``n = min(N_synthetic, N_reference // 2)`` rows, with no patient in both when ``groups``
    gives the reference's patient keys (then ``n`` can be smaller: patients do not divide
    evenly), ``n`` synthetic rows (features), the halves' patient keys, the drawn synthetic rows'
    (``synthetic_groups``: the patients of the label maps that conditioned mask-conditional
    samples), and the random generator that drew them (``fidelity_scores`` draws on from it)."""
    from synthmed.metrics import fidelity  # here: torch and torchmetrics load with it

    rows_a, rows_b = disjoint_halves(len(reference), len(synthetic), np.random.default_rng(seed), groups)
    if len(rows_a) < fidelity.MIN_FLOOR_POOL // 2:
        patients = "" if groups is None else f" of {n_groups(groups)} patients"
        raise ValueError(f"FID: {len(reference)} reference rows{patients} and {len(synthetic)} synthetic give "
                         f"halves of {len(rows_a)} rows; expected at "
                         "least 2 per half. More reference images or patients, or more samples, are needed.")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(synthetic), size=len(rows_a), replace=False))
    return FidSets(reference[torch.as_tensor(rows_a)], reference[torch.as_tensor(rows_b)],
                   synthetic[torch.as_tensor(picked)], rng, subset(groups, rows_a), subset(groups, rows_b),
                   subset(synthetic_groups, picked))


def fid_splits(reference: torch.Tensor, synthetic: torch.Tensor, *, seed: int, splits: int,
               groups: Sequence[object] | np.ndarray | None = None,
               synthetic_groups: Sequence[object] | np.ndarray | None = None) -> list[FidSets]:
    """``splits`` independent draws of ``fid_sets``, split ``i`` seeded ``seed + i`` (the first is
    ``fid_sets(..., seed=seed)``; runs seeded 0 and 1 share all but one split): ``fid_intervals``
    and ``fidelity_scores`` average over them."""
    if not is_int(splits) or splits < 1:
        raise ValueError(f"FID: expected splits to be an integer >= 1, got {splits!r}.")
    return [fid_sets(reference, synthetic, seed=seed + i, groups=groups, synthetic_groups=synthetic_groups)
            for i in range(splits)]


def fid_intervals(sets: FidSets | Sequence[FidSets], config: FidelityConfig, *, floor: bool = True) -> dict[str, float]:
    """``fid`` (synthetic vs A) and, with ``floor``, ``fid_floor_halves`` (B vs A), each with its
    bootstrap interval and N (``fid_low``, ``fid_high``, ``fid_n``, ...): the evaluation's FID.
    Given several splits (``fid_splits``), each estimate is the mean over the splits and each
    interval pools their bootstraps (``fidelity.frechet_split_interval``); ``fid_splits`` says how
    many. With patient keys (``sets.groups_a``), the bootstrap draws the real halves' patients
    whole and the keys ``fid_patients`` (half A's) / ``fid_floor_halves_patients`` (A's and B's)
    say how many, the fewest over the splits; samples drawn from real label maps
    (``sets.groups_synthetic``) are drawn by those maps' patients likewise (each sample without
    one, its own unit), and ``fid_synthetic_patients`` says how many."""
    from synthmed.metrics import fidelity  # here: torch and torchmetrics load with it

    splits = [sets] if isinstance(sets, FidSets) else list(sets)
    if not splits:
        raise ValueError("FID: expected at least one split into halves (fid_splits), got none.")
    boot = {"resamples": config.resamples, "level": config.level, "seed": config.seed}
    grouped = splits[0].groups_a is not None

    def fewest(counts: Callable[[FidSets], int]) -> int | None:
        return min(counts(split) for split in splits) if grouped else None

    out = _interval("fid", fidelity.frechet_split_interval(
        [fidelity.SplitSets(s.half_a, s.synthetic, s.groups_a, s.groups_synthetic) for s in splits], **boot,
        what="FID bootstrap"),
        patients=fewest(lambda s: n_groups(s.groups_a)))
    if floor:
        out |= _interval("fid_floor_halves", fidelity.frechet_split_interval(
            [fidelity.SplitSets(s.half_a, s.half_b, s.groups_a, s.groups_b) for s in splits], **boot,
            what="FID floor bootstrap"),
            patients=fewest(lambda s: n_groups(s.groups_a) + (n_groups(s.groups_b) or 0)))
    if splits[0].groups_synthetic is not None:  # samples drawn from real label maps: the maps' patients
        out["fid_synthetic_patients"] = float(min(n_groups(s.groups_synthetic) or 0 for s in splits))
    out["fid_splits"] = float(len(splits))
    return out


def _kernel_over_splits(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                        config: FidelityConfig) -> tuple[float, float]:
    """KID's mean over the splits' ``(A, other)`` pairs, and the std of all their subsets'
    estimates together (total variance: the subsets' within-split variance plus the spread of
    the splits' means)."""
    from synthmed.metrics import fidelity  # here: torch and torchmetrics load with it

    stats = np.array([fidelity.kernel_distance(a, other, subset_size=config.kid_subset_size,
                                               subsets=config.kid_subsets, seed=config.seed)
                      for a, other in pairs])
    means, stds = stats[:, 0], stats[:, 1]
    return float(means.mean()), float(math.sqrt(np.mean(stds**2) + means.var()))


def fidelity_scores(evaluation: EvaluationSet, config: FidelityConfig) -> dict[str, float]:
    """FID and KID against the reference split beside their real-vs-real floors, PRDC, diversity, paired metrics.

    Same N everywhere: the reference is split into two disjoint real halves A and B of
    ``n = min(N_synthetic, N_reference // 2)``; synthetic (n drawn) is compared with A, and
    the floor is B against A. PRDC too: its k-nearest-neighbour balls depend on how many real
    images there are, so synthetic against the whole reference (a perfect generator's coverage
    about 0.2 at 64 against 1,386) cannot be read beside a floor of n against n (about 0.95).
    The split is drawn ``config.splits`` times and FID, KID and PRDC are averaged over the
    draws (``fid_intervals``, ``_kernel_over_splits``): one draw moves them as much as the
    sampling noise does. For volumes, the neighbouring-slice floor compares n slices with the
    slice next to each.
    """
    from synthmed.metrics import fidelity  # here: torch and torchmetrics load with it

    ref, syn = evaluation.reference.features, evaluation.synthetic.features
    splits = fid_splits(ref, syn, seed=config.seed, splits=config.splits, groups=evaluation.reference.patients,
                        synthetic_groups=evaluation.synthetic.patients)
    rng = splits[0].rng
    n = min(len(split.half_a) for split in splits)
    boot = {"resamples": config.resamples, "level": config.level, "seed": config.seed}
    out: dict[str, float] = {"n_synthetic": float(len(syn)), "n_reference": float(len(ref))}
    out |= fid_intervals(splits, config)
    if evaluation.neighbours is not None:
        a, b = evaluation.neighbours
        pick = np.sort(rng.choice(len(a), size=min(n, len(a)), replace=False))
        groups = subset(evaluation.neighbour_patients, pick)
        out |= _interval("fid_floor_neighbour_slices",
                         fidelity.bootstrap_interval(fidelity.frechet_distance, a[pick], b[pick], real_groups=groups,
                                                     paired=True, **boot), patients=n_groups(groups))
    out["kid"], out["kid_std"] = _kernel_over_splits([(s.half_a, s.synthetic) for s in splits], config)
    out["kid_floor_halves"], out["kid_floor_halves_std"] = _kernel_over_splits([(s.half_a, s.half_b) for s in splits],
                                                                               config)
    prdc_k = min(config.prdc_k, n - 1)
    for suffix, other in (("", lambda s: s.synthetic), ("_floor_halves", lambda s: s.half_b)):
        scores = [fidelity.precision_recall_density_coverage(s.half_a, other(s), k=prdc_k) for s in splits]
        out |= {f"{name}{suffix}": float(np.mean([score[name] for score in scores])) for name in scores[0]}
    pick_real = torch.as_tensor(np.sort(rng.choice(len(evaluation.reference.images), size=len(syn), replace=False))) \
        if len(evaluation.reference.images) >= len(syn) else torch.arange(len(evaluation.reference.images))
    out["diversity_ms_ssim"] = fidelity.ms_ssim_diversity(evaluation.synthetic.images,
                                                          max_pairs=config.diversity_pairs, seed=config.seed)
    out["diversity_ms_ssim_real"] = fidelity.ms_ssim_diversity(evaluation.reference.images[pick_real],
                                                               max_pairs=config.diversity_pairs, seed=config.seed)
    if evaluation.paired is not None:
        out |= fidelity.summarise_paired(fidelity.paired_metrics(evaluation.synthetic.images, evaluation.paired),
                                         resamples=config.resamples, level=config.level, seed=config.seed,
                                         groups=evaluation.synthetic.patients)
    logger.info("%s fidelity: FID %.2f [%.2f, %.2f] (n=%d, mean of %d splits) vs floor %.2f; by split: FID %s, "
                "floor %s", evaluation.family, out["fid"], out["fid_low"], out["fid_high"], n, len(splits),
                out["fid_floor_halves"],
                " ".join(f"{fidelity.frechet_distance(s.half_a, s.synthetic):.3g}" for s in splits),
                " ".join(f"{fidelity.frechet_distance(s.half_a, s.half_b):.3g}" for s in splits))
    return finite(out)


# ------------------------------------------------------------------ memorisation


def detectability(evaluation: EvaluationSet, config: DetectabilityConfig) -> dict[str, float]:
    """The detectability AUC of the family's samples against its reference split (what it learnt
    from), with the real-vs-real floor (`synthmed.metrics.detectability`); empty when disabled, and
    with a warning when either side has fewer images than the folds need."""
    sizes = (len(evaluation.reference.images), len(evaluation.synthetic.images))
    if config.enabled and min(sizes) < 2 * config.folds:
        logger.warning("%s: detectability not measured: %d reference and %d synthetic images, %d of each needed "
                       "for %d folds (evaluation.detectability.folds).", evaluation.family, *sizes, 2 * config.folds,
                       config.folds)
        return {}
    return finite(detectability_scores(evaluation.reference.images, evaluation.synthetic.images, config,
                                       what=f"{evaluation.family} samples", real_groups=evaluation.reference.patients))


def lesion_signal(evaluation: EvaluationSet, config: LesionSignalConfig) -> dict[str, float]:
    """The lesion signal (``synthmed.metrics.lesion_signal``) of the family's samples by the class they
    were drawn for, beside the same on real images: the real split the family learnt from (what a
    generator that drew its training images exactly would reach), or, for samples drawn from real
    label maps or contexts, the real images of those same maps, each with its class
    (``lesion_signal_real_paired`` 1: a held-out split's lesions can be far plainer than the training
    split's); empty when disabled or when the source has no such classes. For samples drawn from real
    label maps, with ``mask_label`` set, also the lesion contrast inside the lesion mask beside the
    real image's of the same map."""
    reference, synthetic = evaluation.reference, evaluation.synthetic
    paired = evaluation.paired is not None
    real = ((evaluation.paired.numpy(), synthetic.labels.numpy()) if paired else
            (reference.images.numpy(), reference.labels.numpy()))
    out = _lesion_signal(real, (synthetic.images.numpy(), synthetic.labels.numpy()), evaluation.class_names, config,
                         real_groups=synthetic.patients if paired else reference.patients,
                         synthetic_groups=synthetic.patients)
    if out:
        out["lesion_signal_real_paired"] = float(paired)
    if evaluation.paired_maps is not None:
        pairs = evaluation.paired_maps
        out |= paired_lesion_contrast(pairs.synthetic, pairs.real, pairs.label_maps, config,
                                      groups=synthetic.patients)
    return finite(out)


def gate_embedding(network: Callable[[torch.Tensor], torch.Tensor],
                   train_features: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``network`` centred on the training images' mean feature, for the gate's cosine similarity.

    Features after a ReLU/SiLU network share a large common component, so the cosine of raw
    features is ~1 for any pair (measured 0.9998..1.0 on the sample slices) and cannot tell
    a copy from a stranger; centred, it measures the direction in which images differ.
    """
    mean = train_features.mean(dim=0, keepdim=True)
    return lambda images: network(images) - mean


def memorisation_scores(evaluation: EvaluationSet,
                        gate: GateConfig) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame]:
    """The memorisation gate over the family's samples (reported, not enforced: nothing is published here).

    The samples of earlier checkpoints (``evaluation.checkpoint_images``), when there are any,
    are scored in the same gate run (same threshold) and appear only in the third table.

    Returns:
        The sample provenance with the gate's columns (nearest training image in pixel and
        feature space, its manifest index, the transform found, ``flagged``); the gate's
        numbers over the family's samples (thresholds, self-test recall, fraction flagged, and
        the fraction flagged per sampled checkpoint); and the scored provenance of every
        checkpoint's samples, the family's own first (``checkpoint_step`` empty for them).
    """
    n = len(evaluation.synthetic.images)
    candidates = evaluation.synthetic.images
    if evaluation.checkpoint_images is not None:
        candidates = torch.cat([candidates, evaluation.checkpoint_images])
    every = pd.concat([evaluation.provenance] + ([] if evaluation.checkpoint_provenance is None
                                                 else [evaluation.checkpoint_provenance]), ignore_index=True)
    try:
        report = run_gate(candidates, evaluation.reference.images, evaluation.held_out.images,
                          config=gate, embed=gate_embedding(evaluation.network, evaluation.reference.features),
                          train_groups=evaluation.reference.patients)
    except MemorisationError as exc:
        # The evaluation reports; only publishing refuses (rebalancing). An uncalibratable gate
        # is a finding about the splits, shown as such in the report.
        logger.warning("%s memorisation: the gate cannot run on this data: %s", evaluation.family, exc)
        return (scored_provenance(evaluation.provenance, None, evaluation.reference.ids), {"calibrated": 0.0},
                scored_provenance(every, None, evaluation.reference.ids))
    scored = scored_provenance(every, report.candidates, evaluation.reference.ids)
    table, own = scored.iloc[:n].reset_index(drop=True), report.candidates.iloc[:n]
    numbers = report.summary() | {
        "candidate_count": float(n),
        "flagged_count": float(own["flagged"].sum()),
        "calibrated": 1.0,
        "flagged_fraction": float(own["flagged"].mean()),
        "max_pixel_similarity": float(own["pixel_similarity"].max()),
        "median_pixel_similarity": float(own["pixel_similarity"].median()),
    } | held_out_maxima(report.held_out)
    for row in flagged_by_checkpoint(evaluation.family, scored).itertuples():
        numbers[f"flagged_fraction.checkpoint_{row.checkpoint}"] = row.flagged_fraction
    logger.info("%s memorisation: %d of %d flagged, threshold %.4f, self-test recall %.3f", evaluation.family,
                int(own["flagged"].sum()), n, report.pixel_threshold, report.self_test_recall)
    return table, finite(numbers), scored


def scored_provenance(provenance: pd.DataFrame, candidates: pd.DataFrame | None,
                      reference_ids: np.ndarray) -> pd.DataFrame:
    """``provenance`` plus the gate's columns; neighbours as manifest indices (``-1`` when none).

    ``candidates`` None (the gate could not run): the columns are there, empty (NaN, -1, and
    ``memorisation_flagged`` missing, not False: nothing was checked, so nothing was cleared).
    """
    table = provenance.reset_index(drop=True).copy()
    if candidates is None:
        n = len(table)
        candidates = pd.DataFrame({"pixel_similarity": np.full(n, np.nan), "pixel_distance": np.full(n, np.nan),
                                   "pixel_transform": [""] * n, "feature_similarity": np.full(n, np.nan),
                                   "relative_distance": np.full(n, np.nan),
                                   "flagged": pd.array([pd.NA] * n, dtype="boolean"),
                                   "pixel_neighbour": np.full(n, -1),
                                   "feature_neighbour": np.full(n, -1)})
    for column in ("pixel_similarity", "pixel_distance", "pixel_transform", "feature_similarity",
                   "relative_distance", "flagged"):
        # .array keeps a nullable boolean flagged column nullable (to_numpy would make it object)
        table[f"nn_{column}" if column != "flagged" else "memorisation_flagged"] = candidates[column].array
    for column in ("pixel_neighbour", "feature_neighbour"):
        position = candidates[column].to_numpy()
        table[f"nn_{column}_index"] = np.where(position >= 0, reference_ids[np.clip(position, 0, None)], -1)
    return table


CHECKPOINT_COLUMNS = ["family", "checkpoint", "samples", "flagged", "flagged_fraction"]


def flagged_by_checkpoint(family: str, memorisation_table: pd.DataFrame,
                          final_step: int | None = None) -> pd.DataFrame:
    """The fraction of samples the gate flagged, per checkpoint that was sampled (``CHECKPOINT_COLUMNS``).

    A checkpoint is the hash of the weights that drew the sample (provenance ``checkpoint``);
    where the provenance records ``checkpoint_step``, rows carry it as ``step`` and are sorted by
    it, so the last checkpoint before memorisation starts can be read off; rows without a step
    (the family's final generator) get ``final_step`` when given. The count flagged and the
    fraction are NaN where the gate could not run (no similarity scored).
    """
    if "checkpoint" not in memorisation_table or memorisation_table.empty:
        return pd.DataFrame(columns=CHECKPOINT_COLUMNS)
    keys = ["checkpoint", "checkpoint_step"] if "checkpoint_step" in memorisation_table else ["checkpoint"]
    scored = memorisation_table.assign(scored=memorisation_table["nn_pixel_similarity"].notna())
    rows = []
    for key, group in scored.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        scored_all = bool(group["scored"].all())
        flagged = int(group["memorisation_flagged"].sum()) if scored_all else math.nan
        rows.append({"family": family, "checkpoint": str(key[0]), **({"step": key[1]} if len(key) > 1 else {}),
                     "samples": len(group), "flagged": flagged,
                     "flagged_fraction": flagged / len(group) if scored_all else math.nan})
    table = pd.DataFrame(rows)
    if final_step is not None:  # the family's own samples: the final generator, trained to final_step
        table["step"] = table["step"].fillna(final_step) if "step" in table else final_step
    if "step" not in table:
        return table
    table = table.sort_values("step", kind="stable", na_position="last").reset_index(drop=True)
    return table.astype({"step": "Int64"}) if table["step"].notna().all() else table


def checkpoint_table(results: Sequence[FamilyResult]) -> pd.DataFrame:
    """Every family's ``flagged_by_checkpoint`` rows in one table (``memorisation_by_checkpoint.csv``)."""
    tables = [r.checkpoints for r in results if len(r.checkpoints)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=CHECKPOINT_COLUMNS)


# ------------------------------------------------------------------ utility


def utility_scores(evaluation: EvaluationSet, config: UtilityConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train-on-X, test-on-real: every mode x seed, scored on the real test split."""
    as_pair = lambda s: (s.images, s.labels)  # noqa: E731 - a view, not a node
    result = evaluate_utility(as_pair(evaluation.reference), as_pair(evaluation.synthetic), as_pair(evaluation.test),
                              evaluation.class_names, config, test_groups=evaluation.test.patients)
    summary = result.summary.assign(family=evaluation.family, minority_class=result.minority)
    runs = result.runs.assign(family=evaluation.family)
    return runs, summary


# ------------------------------------------------------------------ figures


def family_figures(evaluation: EvaluationSet, memorisation_table: pd.DataFrame,
                   config: FigureConfig) -> tuple[Figure, Figure, Figure, pd.DataFrame, list[tuple[str, bytes]]]:
    """Real vs synthetic per class, the most similar sample/training pairs, t-SNE per class and, for
    samples drawn from real label maps with outlined regions (Pix2Pix, lesions), the real slice of
    each map above its sample (``report_figures.paired_outlines``; in the report only).

    Returns:
        Three figures, the t-SNE coordinates (``x, y, class, kind``) and the figures as
        ``(caption, PNG bytes)`` for the report.
    """
    from synthmed.metrics import report_figures  # here: matplotlib loads with it

    rng = np.random.default_rng(config.seed)
    title = f"{evaluation.family} ({evaluation.source}, {evaluation.reference.images.shape[-1]} px)"
    grid = evaluation.grid or GridImages(evaluation.reference.images.numpy(), evaluation.reference.labels.numpy(),
                                         evaluation.synthetic.images.numpy(), evaluation.synthetic.labels.numpy())
    side = report_figures.real_vs_synthetic(
        grid.real, grid.real_labels, grid.synthetic, grid.synthetic_labels, evaluation.class_names,
        per_class=config.per_class, rng=rng,
        title=f"{evaluation.family} ({evaluation.source}, {grid.synthetic.shape[-1]} px)"
        + (f": mask label {', '.join(map(str, grid.outline_labels))} outlined 2 px outside"
           if grid.real_outlines is not None else ""),
        real_outlines=grid.real_outlines, synthetic_outlines=grid.synthetic_outlines,
        real_groups=grid.real_groups, synthetic_groups=grid.synthetic_groups)
    position = {int(i): p for p, i in enumerate(evaluation.reference.ids)}
    scored = memorisation_table[memorisation_table["nn_pixel_neighbour_index"] >= 0]
    nearest = report_figures.nearest_pairs(
        evaluation.synthetic.images.numpy()[scored.index.to_numpy()], evaluation.reference.images.numpy(),
        scored["nn_pixel_neighbour_index"].map(position).to_numpy(),
        scored["nn_pixel_similarity"].to_numpy(), scored["memorisation_flagged"].to_numpy(),
        count=config.nearest_pairs, title=f"{title}: most similar training image per sample"
        + ("" if len(scored) else " (the gate could not run: see the memorisation table)"))
    coordinates = report_figures.tsne_coordinates(
        evaluation.reference.features.numpy(), evaluation.reference.labels.numpy(),
        evaluation.synthetic.features.numpy(), evaluation.synthetic.labels.numpy(),
        evaluation.class_names, perplexity=config.tsne_perplexity, seed=config.seed)
    tsne = report_figures.tsne_figure(coordinates, evaluation.class_names,
                                      title=f"{title}: t-SNE of {evaluation.network.name} features")
    pngs = [(f"{evaluation.family}: real (left) and synthetic (right) images per class", figure_png(side)),
            (f"{evaluation.family}: samples most similar to a training image (pixel NCC above each pair)",
             figure_png(nearest)),
            (f"{evaluation.family}: t-SNE of real and synthetic features per class", figure_png(tsne))]
    if evaluation.paired_maps is not None and grid.synthetic_outlines is not None and grid.synthetic_outlines.any():
        labels = ", ".join(map(str, grid.outline_labels))
        paired = report_figures.paired_outlines(
            evaluation.paired_maps.real, evaluation.paired_maps.synthetic, grid.synthetic_outlines,
            count=2 * config.per_class, rng=rng, groups=grid.synthetic_groups,
            title=f"{evaluation.family}: held-out label maps with label {labels} (ringed), the real slice above the "
                  "sample drawn from its map")
        pngs.append((f"{evaluation.family}: samples drawn from held-out label maps under the real slice of the same "
                     f"map, mask label {labels} ringed", figure_png(paired)))
    return side, nearest, tsne, coordinates, pngs


# Position of the real-vs-synthetic grid in the figures ``family_figures`` returns (the report opens with it).
GRID_FIGURE = 0


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes (for the self-contained HTML report)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


# ------------------------------------------------------------------ across families


@dataclass(frozen=True)
class FamilyResult:
    """One family's numbers for the comparison and the report."""

    family: str
    source: str
    feature_space: str
    fidelity: dict[str, float]
    memorisation: dict[str, float]
    utility: pd.DataFrame
    figures: list[tuple[str, bytes]]
    history: pd.DataFrame
    checkpoints: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CHECKPOINT_COLUMNS))
    # FID against solver steps (synthmed.protocols.steps_sweep); empty when not swept
    steps_sweep: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SWEEP_COLUMNS))


def family_result(evaluation: EvaluationSet, fidelity_metrics: dict[str, float], memorisation_metrics: dict[str, float],
                  utility_summary: pd.DataFrame, figures: list[tuple[str, bytes]],
                  training_history: pd.DataFrame, memorisation_table: pd.DataFrame | None = None,
                  steps_sweep: pd.DataFrame | None = None) -> FamilyResult:
    """Bundle one family's outputs (a node so the cross-family nodes take one input per family).

    ``memorisation_table``: every sampled checkpoint's scored samples (``memorisation_scores``);
    the final generator's step is the last step of ``training_history``. ``steps_sweep``: the
    family's FID-versus-steps table (``synthmed.protocols.steps_sweep``), if swept.
    """
    final_step = int(training_history["step"].max()) if "step" in training_history and len(training_history) else None
    checkpoints = (flagged_by_checkpoint(evaluation.family, memorisation_table, final_step)
                   if memorisation_table is not None else pd.DataFrame(columns=CHECKPOINT_COLUMNS))
    sweep = steps_sweep if steps_sweep is not None else pd.DataFrame(columns=SWEEP_COLUMNS)
    return FamilyResult(evaluation.family, evaluation.source, evaluation.network.name, dict(fidelity_metrics),
                        dict(memorisation_metrics), utility_summary, list(figures), training_history, checkpoints,
                        sweep)


def _utility_value(summary: pd.DataFrame, mode: str, score: str, column: str = "mean") -> float:
    row = summary[(summary["mode"] == mode) & (summary["score"] == score)]
    return float(row[column].iloc[0]) if len(row) else float("nan")


def compare_families(results: Sequence[FamilyResult]) -> tuple[pd.DataFrame, Figure]:
    """One row per family: fidelity with floors, PRDC, paired metrics, detectability, utility, memorisation.

    Families of different sources (slices vs patches) are each compared with their own
    source's real data; compare rows of the same source with each other.
    """
    from synthmed.metrics import report_figures  # here: matplotlib loads with it

    rows = []
    for r in results:
        f, m, u = r.fidelity, r.memorisation, r.utility
        minority = str(u["minority_class"].iloc[0]) if len(u) else ""
        rows.append({
            "family": r.family, "source": r.source, "feature_space": r.feature_space,
            "n_synthetic": f.get("n_synthetic"), "fid_n": f.get("fid_n"),
            "fid": f.get("fid"), "fid_low": f.get("fid_low"), "fid_high": f.get("fid_high"),
            "fid_floor_halves": f.get("fid_floor_halves"),
            "fid_floor_neighbour_slices": f.get("fid_floor_neighbour_slices"),
            "kid": f.get("kid"), "kid_floor_halves": f.get("kid_floor_halves"),
            "precision": f.get("precision"), "recall": f.get("recall"), "density": f.get("density"),
            "coverage": f.get("coverage"), "diversity_ms_ssim": f.get("diversity_ms_ssim"),
            "diversity_ms_ssim_real": f.get("diversity_ms_ssim_real"),
            "paired_ssim": f.get("paired_ssim"), "paired_psnr": f.get("paired_psnr"), "paired_mse": f.get("paired_mse"),
            "detectability_auc": f.get("detectability_auc"),
            "detectability_auc_floor": f.get("detectability_auc_floor"),
            "lesion_signal_auc": f.get("lesion_signal_auc"), "lesion_signal_auc_real": f.get("lesion_signal_auc_real"),
            "lesion_contrast": f.get("lesion_contrast"), "lesion_contrast_real": f.get("lesion_contrast_real"),
            "utility_real_balanced_accuracy": _utility_value(u, "real", "balanced_accuracy"),
            "utility_synthetic_balanced_accuracy": _utility_value(u, "synthetic", "balanced_accuracy"),
            "utility_real_synthetic_delta": _utility_value(u, "real+synthetic", "balanced_accuracy", "delta_vs_real"),
            "utility_real_synthetic_delta_low": _utility_value(u, "real+synthetic", "balanced_accuracy", "delta_low"),
            "utility_real_synthetic_delta_high": _utility_value(u, "real+synthetic", "balanced_accuracy", "delta_high"),
            "minority_class": minority,
            "utility_minority_f1_real": _utility_value(u, "real", f"f1.{minority}"),
            "utility_minority_f1_real_synthetic": _utility_value(u, "real+synthetic", f"f1.{minority}"),
            "memorisation_flagged_fraction": m.get("flagged_fraction"),
            "memorisation_max_pixel_similarity": m.get("max_pixel_similarity"),
            "memorisation_pixel_threshold": m.get("pixel_threshold"),
            "memorisation_self_test_recall": m.get("self_test_recall"),
        })
    table = pd.DataFrame(rows)
    figure = report_figures.utility_bars(pd.concat([r.utility for r in results], ignore_index=True))
    return table, figure


def collect_metrics(results: Sequence[FamilyResult], rebalancing_gate: Mapping[str, float]) -> dict[str, float]:
    """Every number of the report, flat, for ``metrics.json`` (DVC) and MLflow (same names)."""
    metrics: dict[str, float] = {}
    for r in results:
        metrics |= {f"{r.family}.fidelity.{k}": v for k, v in r.fidelity.items()}
        metrics |= {f"{r.family}.memorisation.{k}": v for k, v in r.memorisation.items()}
        metrics |= {f"{r.family}.{k}": v for k, v in sweep_metrics(r.steps_sweep).items()}
        for row in r.utility.itertuples():
            base = f"{r.family}.utility.{mode_key(row.mode)}.{row.score}"
            metrics |= {base: row.mean, f"{base}_std": row.std}
            if not math.isnan(row.low):
                metrics |= {f"{base}_low": row.low, f"{base}_high": row.high}
            if row.mode != "real" and not math.isnan(row.delta_low):
                metrics |= {f"{base}_delta": row.delta_vs_real, f"{base}_delta_low": row.delta_low,
                            f"{base}_delta_high": row.delta_high}
    metrics |= {f"rebalanced.{k}": v for k, v in rebalancing_gate.items()}
    return finite(metrics)


# headline name -> the name of its value in ``collect_metrics`` (under ``<family>.``). The
# published generator's rows come in full; the other families' only with FID and its floor.
HEADLINE_FAMILY = {
    "fid": "fidelity.fid", "fid_low": "fidelity.fid_low", "fid_high": "fidelity.fid_high", "fid_n": "fidelity.fid_n",
    "fid_floor": "fidelity.fid_floor_halves", "fid_floor_low": "fidelity.fid_floor_halves_low",
    "fid_floor_high": "fidelity.fid_floor_halves_high", "kid": "fidelity.kid", "kid_std": "fidelity.kid_std",
    "precision": "fidelity.precision", "recall": "fidelity.recall",
    "utility_delta": "utility.real_synthetic.balanced_accuracy_delta",
    "utility_delta_low": "utility.real_synthetic.balanced_accuracy_delta_low",
    "utility_delta_high": "utility.real_synthetic.balanced_accuracy_delta_high",
    "flagged_fraction": "memorisation.flagged_fraction",
}
HEADLINE_OTHER_FAMILIES = ("fid", "fid_floor")
# The published dataset's gate (rebalancing), from the ``rebalanced.`` part of ``collect_metrics``.
HEADLINE_GATE = {
    "gate.pixel_threshold": "rebalanced.gate.pixel_threshold",
    "gate.relative_threshold": "rebalanced.gate.relative_threshold",
    "gate.self_test_recall": "rebalanced.gate.self_test_recall",
    "gate.flagged_fraction": "rebalanced.gate.flagged_fraction",
    "published.synthetic": "rebalanced.published_synthetic",
}


def headline_metrics(metrics: Mapping[str, float], generator: str, *, every_family: bool = False) -> dict[str, float]:
    """The few numbers to read first (``headline.json``; ``dvc metrics show``), from ``collect_metrics``'s.

    The published ``generator`` (``rebalancing.generator``) first and in full (FID with its
    interval, N and floor, KID, precision, recall, utility difference with its interval, fraction
    flagged), the other families with FID and floor only (``every_family``: all in full, for the
    report's table), then the published dataset's gate: threshold, self-test recall, fraction
    flagged, synthetic images published and the shortfall per class. Missing numbers are left out.
    """
    families = [k[: -len(".fidelity.fid")] for k in metrics if k.endswith(".fidelity.fid")]
    families.sort(key=lambda f: f != generator)  # stable: the published generator first
    headline: dict[str, float] = {}
    for family in families:
        names = HEADLINE_FAMILY if every_family or family == generator else HEADLINE_OTHER_FAMILIES
        headline |= {f"{family}.{name}": metrics[f"{family}.{HEADLINE_FAMILY[name]}"] for name in names
                     if f"{family}.{HEADLINE_FAMILY[name]}" in metrics}
    headline |= {name: metrics[key] for name, key in HEADLINE_GATE.items() if key in metrics}
    headline |= {f"published.shortfall.{k[len('rebalanced.shortfall.'):]}": v for k, v in metrics.items()
                 if k.startswith("rebalanced.shortfall.")}
    return headline


def build_reader_kit(evaluation_sets: Sequence[EvaluationSet],
                     config: ReaderKitConfig) -> tuple[dict[str, Any], pd.DataFrame]:
    """A blinded sheet of real (``real_split``) and synthetic images of one family, and its answer key."""
    sets = {e.family: e for e in evaluation_sets}
    if config.family not in sets:
        raise ValueError(f"evaluation.reader_kit.family must be one of {list(sets)}, got {config.family!r}.")
    chosen = sets[config.family]
    real = {"test": chosen.test, "validation": chosen.held_out, "train": chosen.reference}.get(config.real_split)
    if real is None:
        raise ValueError("evaluation.reader_kit.real_split must be test, validation or train, "
                         f"got {config.real_split!r}.")
    names = chosen.class_names
    kit, key = _reader_kit(real.images.numpy(), chosen.synthetic.images.numpy(),
                           real_labels=[names[i] for i in real.labels.tolist()],
                           synthetic_labels=[names[i] for i in chosen.synthetic.labels.tolist()],
                           per_source=config.per_source, display_px=config.display_px, seed=config.seed,
                           title=f"{config.title}: {chosen.source}")
    key = key.assign(family=np.where(key["truth"] == "synthetic", config.family, ""),
                     manifest_index=[int(real.ids[i]) if t == "real" else int(chosen.synthetic.ids[i])
                                     for t, i in zip(key["truth"], key["source_index"])])
    return kit, key


def _sweep_view(result: FamilyResult) -> dict[str, Any] | None:
    """The family's steps sweep for the report: its table and figure (None when not swept)."""
    table = getattr(result, "steps_sweep", None)
    if table is None or not len(table):
        return None
    from synthmed.metrics import report_figures  # here: matplotlib loads with it

    figure = report_figures.steps_sweep_figure(
        table, title=f"{result.family}: FID against solver steps (same plan and seed per point)")
    return {"table": table, "figure": figure_png(figure)}


def build_report(comparison: pd.DataFrame, results: Sequence[FamilyResult], rebalancing_gate: Mapping[str, float],
                 reader_key: pd.DataFrame, *, level: float, gate: GateConfig, gate_action: str,
                 generator: str = "") -> str:
    """The self-contained HTML report of this run: image grids, the headline, then every number with its N and
    floor and every figure.

    Args:
        generator: the published generator (``rebalancing.generator``), first in the headline.
        level: the confidence level of the fidelity intervals.
        gate: the memorisation gate's settings (its minimum self-test recall is reported).
        gate_action: what the rebalancing gate does with flagged images (``rebalancing.gate_action``).
    """
    from synthmed.imaging.figures import loss_curves
    from synthmed.metrics import report_figures

    shared = [("Utility per training mode (balanced accuracy on the real test split)",
               figure_png(report_figures.utility_bars(pd.concat([r.utility for r in results], ignore_index=True)))),
              ("Training losses", figure_png(loss_curves({r.family: r.history for r in results})))]
    section = None
    if rebalancing_gate:
        minimum = gate.min_self_test_recall
        g = rebalancing_gate
        section = {"percentile": number(g.get("gate.percentile")),
                "held_out_count": number(g.get("gate.held_out_count")),
                "pixel_threshold": number(g.get("gate.pixel_threshold")),
                "feature_threshold": number(g["gate.feature_threshold"]) if "gate.feature_threshold" in g else None,
                "relative_threshold": number(g["gate.relative_threshold"]) if "gate.relative_threshold" in g else None,
                "self_test_recall": number(g.get("gate.self_test_recall")),
                "self_test_passed": g.get("gate.self_test_recall", 0.0) >= minimum, "min_recall": number(minimum),
                "planted_count": number(g.get("gate.planted_count")),
                "planted_missed": number(g.get("gate.planted_missed")),
                "candidate_count": number(g.get("gate.candidate_count")),
                "flagged_count": number(g.get("gate.flagged_count")),
                "dropped_count": number(g.get("gate.dropped_count")),
                "published_synthetic": number(g.get("published_synthetic")),
                "action": gate_action}
    # family_figures puts the real-vs-synthetic grid first: it opens the report, the rest go to the details
    families = [{"family": r.family, "source": r.source, "feature_space": r.feature_space, "fidelity": r.fidelity,
                 "utility": r.utility, "memorisation": r.memorisation,
                 "figures": [fig for i, fig in enumerate(r.figures) if i != GRID_FIGURE],
                 "steps_sweep": _sweep_view(r)} for r in results]
    grids = [(f"{r.family} ({r.source}): {r.figures[GRID_FIGURE][0].split(': ', 1)[-1]}", r.figures[GRID_FIGURE][1])
             for r in results if r.figures]
    headline = headline_metrics(collect_metrics(results, rebalancing_gate), generator, every_family=True)
    return render_report(title="synthmed evaluation report", comparison=comparison, families=families,
                         shared_figures=shared, gate=section, reader_images=len(reader_key), level=level,
                         checkpoints=checkpoint_table(results), grids=grids, headline=headline)
