"""The "class multiplication" study (issue 10): a class-conditional DDPM multiplies the lesion class.

Data: the cohort's axial slices whose classes are findings (``normal`` 0, ``lesion`` 1; the
conf/base's ``extraction.slices.classes: finding``), area-downsampled to ``image_size``,
each in its patient's split (the split table is by patient; ``check_patient_splits``).

Protocol: the ``ddpm`` family with ``num_classes: 2`` learns the training patients' slices
with synthmed's trainer; the sampler draws ``max(factors) x R`` lesion slices, R the real
training lesion slices; a factor ``f`` adds the first ``round(f x R)`` of them. What the
synthetic lesion slices are then put through is the project's existing evaluation, not a
copy of it:

- first the memorisation gate (``synthmed.privacy.memorisation``: thresholds calibrated on the
  held-out patients' slices, a self-test on planted copies): flagged slices are dropped and sampled
  again in rounds (``synthmed.protocols.rebalancing.rebalance_in_rounds``), so no measurement and
  no reader sees them; the fraction of candidates flagged is reported;
- the downstream classifier (``synthmed.metrics.utility.evaluate_utility``, modes ``real`` and
  ``real+synthetic``) per factor over several seeds, tested on the held-out patients' real
  slices: lesion F1 with a bootstrap interval and the paired difference to ``real``; beside each
  factor the control, real + as many copies of the real training lesion slices (rebalancing alone);
- the detectability AUC (``synthmed.metrics.detectability``): real training lesion slices
  against the synthetic ones, with the real-vs-real floor;
- a blinded reader kit (``synthmed.metrics.reader_study.build_reader_kit``) of held-out real
  and synthetic lesion slices, scored later by ``python -m synthmed.metrics.reader_study score``.

The published figure (66% of the synthetic images judged anatomically correct by clinicians
after the first iteration) is a reader measurement: our table's row for it stays empty and
says where the kit is and how to score it; the machine measurements are separate rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthmed.core.lazy import lazy_import
from synthmed.core.validation import is_int, is_number
from synthmed.protocols.rebalancing import OverGeneration
from synthmed.protocols.studies import (
    PublishedRow,
    StudyRow,
    check_held_out_splits,
    check_level,
    clopper_pearson,
    study_table,
)

pd = lazy_import("pandas")
torch = lazy_import("torch")
logger = logging.getLogger(__name__)

WHERE = "study_class_multiplication"
OVER_GENERATION_KEYS = ("max_rounds", "max_candidates_factor", "pass_rate_margin")
CLASS_NAMES = ("normal", "lesion")  # class ids 0 and 1 (extraction.slices.classes: finding)
NORMAL, LESION = 0, 1
SPLITS = ("train", "validation", "test")
# Where the catalog (conf/base/catalog_study_class_multiplication.yml) writes the kit and its key; the
# table's reader row names them (tests check that the catalog agrees).
READER_KIT_DIR = "data/08_reporting/studies/class_multiplication/reader_kit"
READER_KEY_PATH = "data/08_reporting/studies/class_multiplication/reader_key/answer_key.csv"
SCORE_COMMAND = f"python -m synthmed.metrics.reader_study score --key {READER_KEY_PATH} answers/*.csv"
# The table's columns: the published figure's (anatomically_correct), then the machine measurements.
METRICS = ("anatomically_correct", "detectability_auc", "lesion_signal_auc", "f1_lesion", "f1_lesion_delta",
           "flagged_fraction")
METRIC_LABELS = {"anatomically_correct": "judged anatomically correct (readers)",
                 "detectability_auc": "detectability AUC", "lesion_signal_auc": "lesion signal AUC",
                 "f1_lesion": "lesion F1",
                 "f1_lesion_delta": "lesion F1 - real", "flagged_fraction": "fraction flagged (gate)"}
UTILITY_MODES = ("real", "real+synthetic")
# What the classifier's "real+synthetic" mode adds to the real training slices: the ddpm's lesion slices, or
# (the control) as many copies of the real training lesion slices, so that the rebalancing alone is measured.
ADDED_SYNTHETIC, ADDED_DUPLICATES = "synthetic", "duplicates"


@dataclass(frozen=True)
class Multiplication:
    """``params:study_class_multiplication.multiplication``.

    Args:
        factors: synthetic lesion slices per real training lesion slice, one classifier run each
            (e.g. ``[1, 2]``: the lesion class doubled, tripled); the largest is sampled once and a
            smaller factor uses the first of those images.
        sampler: ``synthmed.generators.base.SamplerSpec`` keys (classifier-free guidance included).
        sample_seed, batch_size: the sampler's seed (the first round's) and images per pass.
        over_generation: ``max_rounds``, ``max_candidates_factor``, ``pass_rate_margin`` of
            ``synthmed.protocols.rebalancing.OverGeneration``: slices the memorisation gate drops are sampled
            again in rounds, as rebalancing does; short after them, the study stops.
    """

    factors: tuple[float, ...] = (1.0, 2.0)
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 25,
                                                                 "guidance_scale": 2.0, "eta": 0.0})
    sample_seed: int = 0
    batch_size: int = 32
    over_generation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"{WHERE}.multiplication"
        if not self.factors or not all(is_number(f) and f > 0 for f in self.factors):
            raise ValueError(f"{where}.factors must be a non-empty list of numbers > 0 (synthetic lesion slices per "
                             f"real one), got {list(self.factors)!r}.")
        if len(set(self.factors)) != len(self.factors):
            raise ValueError(f"{where}.factors must differ from each other, got {list(self.factors)!r}.")
        if not is_int(self.sample_seed) or self.sample_seed < 0:
            raise ValueError(f"{where}.sample_seed must be an integer >= 0, got {self.sample_seed!r}.")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"{where}.batch_size must be an integer >= 1, got {self.batch_size!r}.")
        if not isinstance(self.over_generation, Mapping):
            raise ValueError(f"{where}.over_generation must be a mapping of {list(OVER_GENERATION_KEYS)}, got "
                             f"{self.over_generation!r}.")
        if unknown := sorted(set(self.over_generation) - set(OVER_GENERATION_KEYS)):
            raise ValueError(f"{where}.over_generation: unknown key(s) {unknown}; expected some of "
                             f"{list(OVER_GENERATION_KEYS)}.")
        _ = self.rounds  # building it checks their values

    @property
    def rounds(self) -> OverGeneration:
        """Over-generation with the study's seed; a shortfall stops the study (each factor needs its count)."""
        return OverGeneration(seed=self.sample_seed, on_shortfall="fail",
                              where=f"{WHERE}.multiplication.over_generation", on_shortfall_configurable=False,
                              **self.over_generation)


@dataclass(frozen=True)
class ReaderKit:
    """``params:study_class_multiplication.evaluation.reader_kit``: synthetic lesion slices and real lesion
    slices of the held-out patients (``test_splits``), ``per_source`` of each (all of a source that has fewer)."""

    per_source: int = 20
    display_px: int = 256
    seed: int = 0
    title: str = "synthmed reader study: lesion slices"

    def __post_init__(self) -> None:
        where = f"{WHERE}.evaluation.reader_kit"
        if not is_int(self.per_source) or self.per_source < 1:
            raise ValueError(f"{where}.per_source must be an integer >= 1, got {self.per_source!r}.")
        if not is_int(self.display_px) or self.display_px < 1:
            raise ValueError(f"{where}.display_px must be an integer >= 1, got {self.display_px!r}.")


@dataclass(frozen=True)
class StudyEvaluation:
    """``params:study_class_multiplication.evaluation``.

    Args:
        test_splits: the held-out patients: the classifier's test set and the reader kit's real slices.
        gate_splits: the held-out patients whose slices calibrate the memorisation gate. Validation, as
            for the rebalancing gate (``evaluation.memorisation``), so that the study's thresholds are
            those of the published dataset's; ``[validation, test]`` calibrates on more patients (on conf/base's
            cohort its self-test recall was 0.98, below the minimum, and the study would stop).
        utility: ``synthmed.metrics.utility.UtilityConfig`` keys (modes: real, real+synthetic).
        detectability: ``synthmed.metrics.detectability.DetectabilityConfig`` keys.
        lesion_signal: ``synthmed.metrics.lesion_signal.LesionSignalConfig`` keys.
        memorisation: ``synthmed.privacy.memorisation.GateConfig`` keys (``use_features`` false and ``action``
            drop by default: flagged slices are sampled again).
        reader_kit: ``ReaderKit`` keys.
        level: confidence level of the fraction flagged (Clopper-Pearson).
        seed: the utility bootstrap.
        grid_examples: slices per row of the sample grid.
    """

    test_splits: tuple[str, ...] = ("validation", "test")
    gate_splits: tuple[str, ...] = ("validation",)
    utility: Mapping[str, Any] = field(default_factory=dict)
    detectability: Mapping[str, Any] = field(default_factory=dict)
    lesion_signal: Mapping[str, Any] = field(default_factory=dict)
    memorisation: Mapping[str, Any] = field(default_factory=dict)
    reader_kit: ReaderKit = field(default_factory=ReaderKit)
    level: float = 0.95
    seed: int = 0
    grid_examples: int = 8

    def __post_init__(self) -> None:
        where = f"{WHERE}.evaluation"
        check_held_out_splits(f"{where}.test_splits", self.test_splits)
        check_held_out_splits(f"{where}.gate_splits", self.gate_splits)
        check_level(f"{where}.level", self.level)
        if not is_int(self.grid_examples) or self.grid_examples < 1:
            raise ValueError(f"{where}.grid_examples must be an integer >= 1, got {self.grid_examples!r}.")


@dataclass(frozen=True)
class PublishedFigure:
    """``study_class_multiplication.published``: the figure printed beside ours (a cited constant)."""

    label: str
    anatomically_correct: float
    citation: str

    def __post_init__(self) -> None:
        if not is_number(self.anatomically_correct) or not 0.0 <= self.anatomically_correct <= 1.0:
            raise ValueError(f"{WHERE}.published.anatomically_correct must be a fraction in [0, 1] (66% is 0.66), "
                             f"got {self.anatomically_correct!r}.")


@dataclass(frozen=True)
class ClassMultiplicationConfig:
    """``params:study_class_multiplication``.

    Args:
        image_size: slices area-downsampled from extraction's size to this (it must divide it).
        train_split: the patients the DDPM (and the classifier's real mode) learn from.
        checkpoint_root: parent folder of the DDPM's training checkpoints.
        model, training: the ``ddpm`` family's ``Config`` (``num_classes: 2``, ``conditioning: [class]``)
            and ``TrainingConfig`` keys.
        pretrained: a saved ``ddpm`` folder to sample instead of training one (``data/06_models/ddpm``:
            the class-conditional DDPM of ``make demo``, trained on the same training patients' slices
            at the same size). Its ``Config`` must equal ``model`` and its classes be normal / lesion,
            so that the study's setup is the one it was trained in; null trains the study's own with
            ``training``.
        multiplication: ``Multiplication`` keys.
        evaluation: ``StudyEvaluation`` keys.
        published: the published figure printed beside ours.
    """

    image_size: int = 32
    train_split: str = "train"
    checkpoint_root: str = "data/06_models/checkpoints"
    model: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    multiplication: Multiplication = field(default_factory=Multiplication)
    evaluation: StudyEvaluation = field(default_factory=StudyEvaluation)
    published: PublishedFigure | None = None

    def __post_init__(self) -> None:
        if not is_int(self.image_size) or self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"{WHERE}.image_size must be a power of two >= 8 (the ddpm and classifier sizes), "
                             f"got {self.image_size!r}.")
        if self.train_split not in SPLITS:
            raise ValueError(f"{WHERE}.train_split must be one of {list(SPLITS)}, got {self.train_split!r}.")
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained.strip()):
            raise ValueError(f"{WHERE}.pretrained must be a folder path or null, got {self.pretrained!r}.")
        if self.train_split in self.evaluation.test_splits:
            raise ValueError(f"{WHERE}.train_split {self.train_split!r} is also in evaluation.test_splits "
                             f"{list(self.evaluation.test_splits)}; the classifier must be tested on other patients.")


# ----------------------------------------------------------------------------- slices


def class_slices(images: np.ndarray, manifest: pd.DataFrame, size: int) -> dict[str, np.ndarray]:
    """The extracted slices at ``size`` with their class, split and patient.

    Args:
        images: ``(N, 1, S, S)`` float in [-1, 1] (extraction's ``slices["images"]``).
        manifest: extraction's slice manifest (``index``, ``patient_key``, ``split``, ``label``,
            ``class_id``), one row per stored slice.

    Returns:
        ``{"images" (N, 1, size, size) float32 (area-averaged), "labels" (N,) int64,
        "split" (N,) str, "patient" (N,) str}`` in the stored order.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"{WHERE}: expected grey slices (N, 1, S, S), got {images.shape}.")
    stored = int(images.shape[-1])
    if size > stored or stored % size:
        raise ValueError(f"{WHERE}.image_size {size} must divide the slices' size {stored} (downsampling only): "
                         "set extraction.slices.size_px or image_size.")
    table = manifest.sort_values("index").reset_index(drop=True)
    if not np.array_equal(table["index"].to_numpy(), np.arange(len(images))):
        raise ValueError(f"The slice manifest's index column does not number the {len(images)} stored slices "
                         "0..N-1: re-run extraction.")
    names = dict(zip(table["class_id"].astype(int), table["label"].astype(str)))
    if any(names.get(i, name) != name for i, name in enumerate(CLASS_NAMES)) or not set(names) <= {NORMAL, LESION}:
        raise ValueError(f"{WHERE} needs slices classed by finding {dict(enumerate(CLASS_NAMES))}, got classes "
                         f"{dict(sorted(names.items()))}: run the data pipeline on the cohort "
                         "(conf/base: extraction.slices.classes: finding; not conf/template).")
    check_patient_splits(table)
    x = torch.from_numpy(np.ascontiguousarray(images))
    if size != stored:
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
    return {"images": x.numpy().astype(np.float32), "labels": table["class_id"].to_numpy(dtype=np.int64),
            "split": table["split"].astype(str).to_numpy(), "patient": table["patient_key"].astype(str).to_numpy()}


def check_patient_splits(manifest: pd.DataFrame) -> None:
    """Raise ``ValueError`` when a patient's slices lie in more than one split."""
    spread = manifest.groupby("patient_key")["split"].nunique()
    crossing = sorted(spread[spread > 1].index)
    if crossing:
        raise ValueError(f"{WHERE}: the slices of patient(s) {crossing[:5]} lie in several splits; the study needs "
                         "preprocessing's split by patient (preprocessing.split.strategy: group).")


def lesion_counts(labels: np.ndarray, factors: Sequence[float]) -> dict[float, int]:
    """Synthetic lesion slices per factor: ``round(f x R)``, R the real lesion slices in ``labels``."""
    real = int((np.asarray(labels) == LESION).sum())
    if real == 0:
        raise ValueError(f"{WHERE}: no lesion slice among the {len(labels)} training slices; nothing to multiply "
                         "(the cohort's lesion patients must include training patients).")
    return {float(f): max(1, int(round(f * real))) for f in factors}


def duplicate_rows(rows: np.ndarray, count: int) -> np.ndarray:
    """``count`` rows taken in turn from ``rows`` (each real lesion slice copied as evenly as possible)."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        raise ValueError("duplicate_rows: no real lesion slice to copy.")
    return rows[np.arange(int(count)) % len(rows)]


def factor_key(factor: float) -> str:
    """A factor as a metric-name part: ``x1``, ``x2``, ``x0_5``."""
    return "x" + f"{factor:g}".replace(".", "_")


def pairwise_similarity(images: np.ndarray) -> np.ndarray:
    """``(N, N)`` Pearson correlation over the pixels of every pair of images (diagonal NaN)."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    unit = np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, np.nan)
    return similarity


# ----------------------------------------------------------------------------- rows of the table


def _summary(metric: str, mean: float, low: float, high: float, n: float) -> dict[str, dict[str, float]]:
    """Every ``METRICS`` column of a row: ``metric`` filled, the others empty (NaN), one N."""
    nan = float("nan")
    return {m: ({"mean": mean, "low": low, "high": high, "n": n} if m == metric
                else {"mean": nan, "low": nan, "high": nan, "n": n}) for m in METRICS}


def reader_row(n_synthetic: int, n_real: int) -> StudyRow:
    """The published measure's row: not measured here, it needs readers."""
    return StudyRow(
        "fraction of synthetic lesion slices judged anatomically correct (ours): needs readers, not measured",
        "ours", _summary("anatomically_correct", float("nan"), float("nan"), float("nan"), float(n_synthetic)),
        f"blinded reader kit {READER_KIT_DIR} ({n_synthetic} synthetic + {n_real} real held-out lesion slices); "
        f"score the returned sheets: {SCORE_COMMAND} (synthetic_judged_anatomically_correct)")


def detectability_rows(scores: Mapping[str, float]) -> list[StudyRow]:
    """The detectability AUC and, when measured, its real-vs-real floor (``detectability_scores``' keys)."""
    if "detectability_auc" not in scores:
        return []
    rows = [StudyRow(
        "machine: detectability AUC, real vs synthetic lesion slices", "ours",
        _summary("detectability_auc", scores["detectability_auc"], scores["detectability_auc_low"],
                 scores["detectability_auc_high"], scores["detectability_auc_n"]),
        "out-of-fold AUC of a CNN told real training lesion slices from synthetic ones (0.5: cannot tell)")]
    if "detectability_auc_floor" in scores:
        rows.append(StudyRow(
            "machine: detectability AUC floor, real vs real lesion slices", "floor",
            _summary("detectability_auc", scores["detectability_auc_floor"], scores["detectability_auc_floor_low"],
                     scores["detectability_auc_floor_high"], scores["detectability_auc_floor_n"]),
            "two disjoint halves of the real training lesion slices: what the test reaches by chance at this N"))
    return rows


def lesion_signal_rows(scores: Mapping[str, float]) -> list[StudyRow]:
    """The lesion signal of the synthetic lesion slices and of the real ones, each against the real training
    normal slices (``synthmed.metrics.lesion_signal.lesion_signal``'s keys); none when not measured."""
    rows = []
    for suffix, label, kind, source in (
            ("", "machine: lesion signal AUC, synthetic lesion vs real normal slices", "ours",
             "AUC of the bright-spot score (lesions are the brightest FLAIR tissue): 0.5 = no sign of lesions"),
            ("_real", "machine: lesion signal AUC, real lesion vs real normal slices", "reference",
             "the same score on the real training lesion slices: what it reaches where the lesions are real")):
        key = f"lesion_signal_auc{suffix}"
        if key in scores:
            rows.append(StudyRow(label, kind, _summary("lesion_signal_auc", scores[key], scores[f"{key}_low"],
                                                       scores[f"{key}_high"], scores[f"{key}_n"]), source))
    return rows


def utility_rows(summaries: Mapping[float, pd.DataFrame], *, n_train: Mapping[str, int]) -> list[StudyRow]:
    """Lesion F1 of the classifier trained on real (once), on real + each factor's synthetic slices and, as the
    control, on real + as many copies of the real lesion slices, each with the paired difference to real
    (``evaluate_utility``'s summary, ``f1.lesion`` rows; ``added`` says which addition a row is)."""
    rows: list[StudyRow] = []
    for k, (factor, summary) in enumerate(summaries.items()):
        f1 = summary[summary["score"] == f"f1.{CLASS_NAMES[LESION]}"]
        n_test = float(f1["n_test"].iloc[0])
        seeds = int(f1["seeds"].iloc[0])
        if k == 0:
            real = f1[f1["mode"] == "real"].iloc[0]
            rows.append(StudyRow("machine: lesion F1, classifier trained on real slices", "reference",
                                 _summary("f1_lesion", real["mean"], real["low"], real["high"], n_test),
                                 f"{n_train['real']} real training slices, {seeds} seeds, tested on held-out "
                                 "patients' real slices"))
        for added, label, kind, how in (
                (ADDED_SYNTHETIC, "real + synthetic lesion slices", "ours", "real + synthetic lesion"),
                (ADDED_DUPLICATES, "real + copies of the real lesion slices (rebalancing alone)", "reference",
                 "real + copied real lesion")):
            ours = f1[(f1["mode"] == "real+synthetic") & (f1["added"] == added)].iloc[0]
            summaries_ = _summary("f1_lesion", ours["mean"], ours["low"], ours["high"], n_test)
            summaries_["f1_lesion_delta"] = {"mean": ours["delta_vs_real"], "low": ours["delta_low"],
                                             "high": ours["delta_high"], "n": n_test}
            rows.append(StudyRow(f"machine: lesion F1, {label} x{factor:g}", kind, summaries_,
                                 f"{n_train[factor_key(factor)]} training slices ({how}), {seeds} seeds; "
                                 "difference to real: paired bootstrap"))
    return rows


def gate_row(numbers: Mapping[str, float], level: float) -> list[StudyRow]:
    """The fraction of candidate synthetic lesion slices the memorisation gate flags (and the study drops), with a
    Clopper-Pearson interval. The study only gets here when the gate's self-test passed."""
    n, k = int(numbers["candidate_count"]), int(numbers["flagged_count"])
    low, high = clopper_pearson(k, n, level)
    recall = f"self-test recall {numbers['self_test_recall']:.2f}"
    rule = (f"pixel NCC >= {numbers['pixel_threshold']:.4f} (the {numbers['percentile']:g}th percentile of held-out "
            "patients' nearest training slice)")
    if "relative_threshold" in numbers:
        rule += (f" or relative distance <= {numbers['relative_threshold']:.4f} (nearest training slice over the "
                 "nearest of another patient; the held-out patients' low tail at the same level)")
    return [StudyRow(
        "machine: fraction of candidate synthetic lesion slices flagged by the memorisation gate (dropped and "
        "sampled again before every other row)", "ours",
        _summary("flagged_fraction", k / n, low, high, float(n)),
        f"{rule}; {recall}; interval Clopper-Pearson")]


def published_rows(figure: PublishedFigure | None) -> list[PublishedRow]:
    if figure is None:
        return []
    return [PublishedRow(figure.label, {"anatomically_correct": figure.anatomically_correct}, figure.citation)]


def study_frame(rows: Sequence[StudyRow], published: Sequence[PublishedRow], *, level: float) -> pd.DataFrame:
    """The table: one ``study_table`` per measured row (their N differ: the kit, the detectability sets,
    the test patients, the gate's candidates), then the published rows."""
    parts = [study_table([row], [], METRICS, level=level) for row in rows]
    parts.append(study_table([], published, METRICS, level=level))
    return pd.concat([p for p in parts if len(p)], ignore_index=True)


def sample_grid(real: np.ndarray, fake: np.ndarray, count: int, rows_per_source: int = 2):
    """``rows_per_source`` rows of real lesion slices, then as many of synthetic ones, ``count`` per row
    (spread evenly over each set, so that neighbouring slices of one patient are not all shown)."""
    import matplotlib.pyplot as plt

    sources = [("real lesion", real), ("synthetic lesion", fake)]
    figure, axes = plt.subplots(2 * rows_per_source, count, figsize=(1.1 * count, 1.2 * 2 * rows_per_source),
                                squeeze=False)
    for s, (title, images) in enumerate(sources):
        wanted = min(len(images), count * rows_per_source)
        chosen = images[np.linspace(0, len(images) - 1, wanted).round().astype(int)] if wanted else images[:0]
        for r in range(rows_per_source):
            for j in range(count):
                axis, k = axes[s * rows_per_source + r, j], r * count + j
                axis.set_xticks([])
                axis.set_yticks([])
                if k < len(chosen):
                    axis.imshow((np.clip(chosen[k, 0], -1.0, 1.0) + 1.0) / 2.0, cmap="gray", vmin=0.0, vmax=1.0)
                else:
                    axis.axis("off")
            axes[s * rows_per_source + r, 0].set_ylabel(title, fontsize=7)
    figure.tight_layout()
    return figure
