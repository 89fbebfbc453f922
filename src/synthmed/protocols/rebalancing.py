"""Rebalancing: fill the minority classes of a split with gated synthetic images.

1. ``plan_rebalancing``: per class of the train split, how many synthetic images to add;
2. ``generate_rebalancing``: candidates for the deficits, from a class-conditional generator;
3. ``gate_rebalancing``: the memorisation gate (docs/privacy.md, "Memorisation gate"): every synthetic image
   against the training images, threshold calibrated on held-out images, self-test with
   planted copies; it fails the run or drops flagged images (``gate_action``);
   ``rebalance_in_rounds`` repeats 2 and 3 (over-generation) until every class reaches its
   target after the gate or a limit of rounds or candidates is reached, and reports the
   shortfall per class (``on_shortfall``: warn or fail);
4. ``publish_rebalanced``: real + the gate's kept synthetic images in a folder that
   ``torchvision``'s ``ImageFolder``, HuggingFace's ``imagefolder`` and pandas read directly
   (8-bit PNG view, float array beside it), with ``metadata.csv`` / ``labels.csv``
   (``is_synthetic`` and provenance with the gate's scores) and a dataset card.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthmed import __version__
from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.core.manifest import class_names_of
from synthmed.core.templates import render
from synthmed.generators.base import SamplerSpec, TrainedGenerator
from synthmed.generators.export import SyntheticOrigin, to_dicom, to_nifti, to_png_pixels
from synthmed.generators.sampling import PLAN_COLUMNS, checkpoint_id, generate_from_plan
from synthmed.metrics.features import TrainedClassifier, at_size
from synthmed.privacy.memorisation import enforce, prepare_gate
from synthmed.protocols.encoders import patient_keys, source_config, split_images
from synthmed.protocols.evaluation import (
    EvaluationConfig,
    finite,
    gate_config,
    gate_embedding,
    scored_provenance,
    source_network,
)

# Heavy libraries are imported on first use: the parameter check imports this module for its
# configuration without them (synthmed.core.lazy.lazy_import).
pd = lazy_import("pandas")
torch = lazy_import("torch")

logger = logging.getLogger(__name__)

STRATEGIES = ("match_majority", "target_counts", "ratio")
GATE_ACTIONS = ("fail", "drop")
SHORTFALL_ACTIONS = ("warn", "fail")
# Round r (from 0) samples with ``seed + r * ROUND_SEED_STRIDE``, and batch b of a round draws from
# that + b (generate_from_plan): rounds never reuse a seed while a round has fewer batches than this.
ROUND_SEED_STRIDE = 1_000_003


class RebalancingShortfall(ValueError):
    """Over-generation ended with classes below their targets and ``on_shortfall`` is ``fail``."""


EXPORT_FORMATS = {"dicom": ".dcm", "nifti": ".nii.gz"}


@dataclass(frozen=True)
class OverGeneration:
    """The limits of over-generation (`rebalance_in_rounds`): sample, gate, and sample again what the gate dropped.

    Args:
        seed: round r (from 1) samples with ``seed + (r - 1) * ROUND_SEED_STRIDE``.
        max_rounds: at most this many rounds.
        max_candidates_factor: a class samples at most this times its target in all.
        pass_rate_margin: a round asks for what its class misses over the observed pass rate, times this.
        on_shortfall: ``warn`` (go on short, named in the log) or ``fail`` (`RebalancingShortfall`).
        where: the parameter block that holds these keys, named in errors.
        on_shortfall_configurable: whether ``where`` has an ``on_shortfall`` key (the error then offers it).
    """

    seed: int = 0
    max_rounds: int = 5
    max_candidates_factor: float = 4.0
    pass_rate_margin: float = 1.2
    on_shortfall: str = "warn"
    where: str = "rebalancing"
    on_shortfall_configurable: bool = True

    def __post_init__(self) -> None:
        if self.on_shortfall not in SHORTFALL_ACTIONS:
            raise ValueError(f"{self.where}.on_shortfall must be one of {list(SHORTFALL_ACTIONS)}, "
                             f"got {self.on_shortfall!r}.")
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int) or self.max_rounds < 1:
            raise ValueError(f"{self.where}.max_rounds must be an integer >= 1, got {self.max_rounds!r}.")
        for name in ("max_candidates_factor", "pass_rate_margin"):
            if not float(getattr(self, name)) >= 1.0:
                raise ValueError(f"{self.where}.{name} must be a number >= 1, got {getattr(self, name)!r}.")

    @property
    def block(self) -> str:
        """The top-level parameter block of ``where`` (its file: ``conf/base/parameters_<block>.yml``)."""
        return self.where.split(".")[0]


@dataclass(frozen=True)
class RebalancingConfig:
    """``params:rebalancing``."""

    strategy: str = "match_majority"
    target_counts: Mapping[str, int] = field(default_factory=dict)
    ratio: float = 1.0
    split: str = "train"
    generator: str = "ddpm"
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "ddim", "steps": 50, "guidance_scale": 2.0})
    seed: int = 0
    batch_size: int = 32
    dataset_name: str = "synthmed-rebalanced"
    gate_action: str = "fail"
    max_rounds: int = 5
    max_candidates_factor: float = 4.0
    pass_rate_margin: float = 1.2
    on_shortfall: str = "warn"
    # The dataset card: its licence (a HuggingFace licence id; "other" when the real data has its
    # own terms), what the real images are, and their licence and notices (travel with copies).
    license: str = "other"
    source_description: str = ""
    source_notice: str = ""
    # The published synthetic images also as DICOM (Secondary Capture, Conversion Type SYN) and/or NIfTI.
    export_formats: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.gate_action not in GATE_ACTIONS:
            raise ValueError(f"rebalancing.gate_action must be one of {list(GATE_ACTIONS)}, got {self.gate_action!r}.")
        _ = self.rounds  # building it checks the over-generation keys
        if self.strategy not in STRATEGIES:
            raise ValueError(f"rebalancing.strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}.")
        if unknown := sorted(set(self.export_formats) - set(EXPORT_FORMATS)):
            raise ValueError(f"rebalancing.export_formats: unknown format(s) {unknown}; expected some of "
                             f"{sorted(EXPORT_FORMATS)}.")
        if not 0.0 < float(self.ratio) <= 1.0:
            raise ValueError(f"rebalancing.ratio must be in (0, 1], got {self.ratio}.")
        for name, count in self.target_counts.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"rebalancing.target_counts.{name} must be a positive integer, got {count!r}.")

    @property
    def rounds(self) -> OverGeneration:
        """The over-generation keys of ``params:rebalancing``."""
        return OverGeneration(seed=self.seed, max_rounds=self.max_rounds,
                              max_candidates_factor=self.max_candidates_factor,
                              pass_rate_margin=self.pass_rate_margin, on_shortfall=self.on_shortfall)


def rebalancing_config(params: Mapping[str, Any]) -> RebalancingConfig:
    return from_params(RebalancingConfig, params, "rebalancing")


def plan_rebalancing(slice_manifest: pd.DataFrame, config: RebalancingConfig) -> pd.DataFrame:
    """Synthetic images to add per class, from the real counts of ``split``.

    - ``match_majority``: every class up to the largest class's count;
    - ``ratio``: every class up to ``ratio`` x the largest count;
    - ``target_counts``: each listed class up to its target (real + synthetic).

    Returns:
        A sampling plan (``condition, label, count, case``) plus ``real`` and ``target``
        columns; classes already at or above their target get no row.
    """
    names = class_names_of(slice_manifest)
    real = slice_manifest[slice_manifest["split"] == config.split]["label"].value_counts().reindex(names, fill_value=0)
    if real.sum() == 0:
        raise ValueError(f"rebalancing: the {config.split!r} split has no images.")
    if config.strategy == "target_counts":
        unknown = sorted(set(config.target_counts) - set(names))
        if unknown or not config.target_counts:
            raise ValueError(
                f"rebalancing.target_counts names unknown class(es) {unknown}; expected some of {names}."
                if unknown else "rebalancing.strategy target_counts needs rebalancing.target_counts."
            )
        targets = {name: int(config.target_counts.get(name, real[name])) for name in names}
    else:
        factor = 1.0 if config.strategy == "match_majority" else float(config.ratio)
        top = int(real.max())
        targets = {name: max(int(real[name]), int(np.ceil(factor * top))) for name in names}
    rows = [{"condition": "class", "label": name, "count": targets[name] - int(real[name]), "case": "",
             "real": int(real[name]), "target": targets[name]} for name in names if targets[name] > real[name]]
    plan = pd.DataFrame(rows, columns=[*PLAN_COLUMNS, "real", "target"])
    logger.info("Rebalancing plan (%s): %s", config.strategy,
                {r["label"]: f"{r['real']} + {r['count']}" for r in rows} or "already balanced")
    return plan


def generate_rebalancing(
    generator: TrainedGenerator,
    rebalancing_plan: pd.DataFrame,
    slice_manifest: pd.DataFrame,
    config: RebalancingConfig,
    *,
    seed: int | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """The synthetic images of the plan, from a class-conditional generator.

    Whether a generator is class-conditional is read from its configuration
    (``num_classes > 0``), not from its family's name. ``seed`` (default
    ``config.seed``): the first batch's seed (one round's seed in ``rebalance_in_rounds``).
    """
    from synthmed.generators.registry import get_family  # here: it imports every family (torch)

    if not getattr(generator.config, "num_classes", 0):
        raise ValueError(
            f"rebalancing.generator {config.generator!r} is not class-conditional (its model has num_classes=0): "
            "choose a generator trained with num_classes set, in parameters_rebalancing.yml."
        )
    sampler = from_params(SamplerSpec, config.sampler, "rebalancing.sampler")
    names = class_names_of(slice_manifest)
    if generator.config.num_classes != len(names):
        raise ValueError(
            f"The {config.generator} generator has {generator.config.num_classes} classes, the slices have "
            f"{len(names)} {names}: retrain it (kedro run --pipelines training)."
        )
    result = generate_from_plan(get_family(generator.family), generator.config, generator.models,
                                rebalancing_plan[PLAN_COLUMNS], names, sampler,
                                seed=config.seed if seed is None else seed,
                                batch_size=config.batch_size, checkpoint=checkpoint_id(generator))
    return {"images": result.images, "labels": result.labels}, result.provenance


@dataclass(frozen=True)
class GateDecision:
    """What ``publish_rebalanced`` needs from the gate: which samples to keep, their scores, the numbers."""

    keep: np.ndarray  # (N,) bool, one per synthetic image
    provenance: pd.DataFrame  # the sampling provenance plus the gate's columns
    numbers: dict[str, float]
    flag_on_features: bool = False


def rebalancing_gate(
    slices: Mapping[str, np.ndarray],
    slice_manifest: pd.DataFrame,
    slice_encoder: TrainedClassifier,
    config: RebalancingConfig,
    evaluation: EvaluationConfig,
) -> Gate:
    """The memorisation gate over each round's candidates, before anything is published.

    The reference side (training split, thresholds calibrated on the held-out split, the
    self-test) is prepared here, once, and shared by every round (`prepare_gate`). Compared at
    ``evaluation.sources.slices.image_px``; ``evaluation.memorisation`` holds the settings.

    The returned callable raises `MemorisationError` when the self-test recall is below its
    minimum (always), or any image is flagged and ``gate_action`` is ``fail``: nothing is
    published then. It returns the decision, the gate's numbers (DVC metrics / MLflow) and the
    planted self-test table (which disguised training copies were caught).
    """
    gate = gate_config(evaluation.memorisation, action=config.gate_action)
    source = source_config(evaluation.sources["slices"], "evaluation.sources.slices")
    train, _, train_ids = split_images(slices, slice_manifest, source.reference_split, source.image_px)
    held_out, _, _ = split_images(slices, slice_manifest, source.held_out_split, source.image_px)
    network = source_network(evaluation, slice_encoder)
    prepared = prepare_gate(train, held_out, config=gate, embed=gate_embedding(network, network(train)),
                            train_groups=patient_keys(slice_manifest, train_ids))

    def score(synthetic: Mapping[str, np.ndarray], provenance: pd.DataFrame):
        candidates = at_size(np.asarray(synthetic["images"], dtype=np.float32), source.image_px)
        report = prepared.score(candidates)
        keep = enforce(report, gate)  # raises for a failed self-test, or flagged images with action "fail"
        table = scored_provenance(provenance, report.candidates, train_ids)
        numbers = {f"gate.{k}": v for k, v in report.summary().items()} | _count_numbers(table, keep)
        return GateDecision(keep, table, numbers, gate.flag_on_features), finite(numbers), report.planted

    return score


def gate_rebalancing(
    synthetic: Mapping[str, np.ndarray],
    provenance: pd.DataFrame,
    slices: Mapping[str, np.ndarray],
    slice_manifest: pd.DataFrame,
    slice_encoder: TrainedClassifier,
    config: RebalancingConfig,
    evaluation: EvaluationConfig,
) -> tuple[GateDecision, dict[str, float], pd.DataFrame]:
    """The memorisation gate over one batch of synthetic images (`rebalancing_gate`, prepared for it alone)."""
    return rebalancing_gate(slices, slice_manifest, slice_encoder, config, evaluation)(synthetic, provenance)


def _count_numbers(table: pd.DataFrame, keep: np.ndarray) -> dict[str, float]:
    """The gate's counts over the scored candidates ``table``; ``keep``: the published ones."""
    numbers = {"gate.candidate_count": float(len(table)),
               "gate.flagged_count": float(table["memorisation_flagged"].sum()),
               "gate.dropped_count": float(table["memorisation_flagged"].sum()),
               "published_synthetic": float(np.asarray(keep).sum()),
               "gate.flagged_fraction": float(table["memorisation_flagged"].mean()) if len(table) else 0.0}
    for checkpoint, flagged in table.groupby("checkpoint")["memorisation_flagged"]:
        numbers[f"gate.flagged_fraction.checkpoint_{checkpoint}"] = float(flagged.mean())
    return numbers



# ------------------------------------------------------------------ over-generation

Sample = Callable[["pd.DataFrame", int], tuple[dict[str, np.ndarray], "pd.DataFrame"]]  # strings: pandas loads on use
"""One round's candidates: ``(round plan, seed) -> (synthetic arrays, provenance)``."""
Gate = Callable[[Mapping[str, np.ndarray], "pd.DataFrame"], tuple[GateDecision, dict[str, float], "pd.DataFrame"]]
"""The memorisation gate over one round's candidates (``gate_rebalancing`` with its data bound)."""

ROUND_COLUMNS = ["round", "seed", "label", "target", "missing", "pass_rate", "requested", "flagged", "passed",
                 "published", "surplus"]


@dataclass(frozen=True)
class Rebalanced:
    """What ``rebalance_in_rounds`` returns: the candidates of every round and the gate's decision on them.

    ``decision.keep`` marks the published candidates: passed the gate and still needed by their
    class (candidates that passed once the class was full are ``surplus``, not published).
    ``numbers`` are the gate's numbers over all rounds plus ``rounds``, ``candidates_sampled``,
    ``surplus_count``, ``shortfall_total`` and per class ``needed.<class>``,
    ``sampled.<class>``, ``dropped.<class>``, ``published.<class>`` and ``shortfall.<class>``.
    ``rounds`` has one row per round and class (``ROUND_COLUMNS``).
    """

    synthetic: dict[str, np.ndarray]
    decision: GateDecision
    numbers: dict[str, float]
    self_test: pd.DataFrame
    rounds: pd.DataFrame


def _requests(needed: Mapping[str, int], budget: Mapping[str, int], sampled: Mapping[str, int],
              passed: Mapping[str, int], published: Mapping[str, int], margin: float) -> dict[str, tuple[int, float]]:
    """Per class still short: candidates to sample this round and the pass rate that sized it.

    A class never sampled asks for what it misses; after that, for what it misses divided by
    its observed pass rate, times ``margin`` (a class whose every candidate was flagged asks for
    all it has left). Never more than its candidate budget left.
    """
    requests = {}
    for name, need in needed.items():
        missing, left = need - published[name], budget[name] - sampled[name]
        if missing <= 0 or left <= 0:
            continue
        rate = passed[name] / sampled[name] if sampled[name] else 1.0
        want = missing if not sampled[name] else (math.ceil(missing * margin / rate) if rate > 0 else left)
        requests[name] = (min(want, left), rate)
    return requests


def rebalance_in_rounds(plan: pd.DataFrame, sample: Sample, gate: Gate, config: OverGeneration) -> Rebalanced:
    """Sample and gate in rounds until every class of ``plan`` has its ``count`` of images that passed the gate.

    Round ``r`` (from 1) samples, for each class still short, what it misses (sized by its
    observed pass rate, see ``_requests``) with seed ``config.seed + (r - 1) * ROUND_SEED_STRIDE``,
    and gates those candidates. It stops when no class is short, after ``config.max_rounds``
    rounds, or when every short class has sampled ``max_candidates_factor`` x its deficit.
    Round 1 always runs (with an empty plan the gate still calibrates and self-tests).

    Raises:
        MemorisationError: from the gate (failed self-test; a flagged image with ``gate_action: fail``).
        RebalancingShortfall: classes ended short and ``config.on_shortfall`` is ``fail``.
    """
    needed = {str(label): int(count) for label, count in zip(plan["label"], plan["count"])}
    budget = {name: math.ceil(float(config.max_candidates_factor) * need) for name, need in needed.items()}
    sampled, passed, published = ({name: 0 for name in needed} for _ in range(3))
    arrays, decisions, keeps, rows, first = [], [], [], [], None
    offset = 0
    for r in range(config.max_rounds):
        requests = _requests(needed, budget, sampled, passed, published, float(config.pass_rate_margin))
        if r and not requests:
            break
        seed = int(config.seed) + r * ROUND_SEED_STRIDE
        round_plan = pd.DataFrame([{"condition": "class", "label": name, "count": count, "case": ""}
                                   for name, (count, _) in requests.items()], columns=PLAN_COLUMNS)
        synthetic, provenance = sample(round_plan, seed)
        provenance = provenance.assign(index=provenance["index"].to_numpy() + offset, round=r + 1)
        decision, _, self_test = gate(synthetic, provenance)
        first = first or (decision, self_test)
        labels = decision.provenance["label"].astype(str).to_numpy()
        flagged = decision.provenance["memorisation_flagged"].to_numpy(bool)
        keep = np.zeros(len(labels), bool)
        for i, name in enumerate(labels):  # in sampling order, up to what the class still misses
            if decision.keep[i] and published[name] < needed[name]:
                keep[i], published[name] = True, published[name] + 1
        for name, (count, rate) in requests.items():
            mine = labels == name
            sampled[name] += int(mine.sum())
            passed[name] += int((mine & decision.keep).sum())
            rows.append({"round": r + 1, "seed": seed, "label": name, "target": needed[name],
                         "missing": needed[name] - published[name] + int((keep & mine).sum()), "pass_rate": rate,
                         "requested": count, "flagged": int((mine & flagged).sum()),
                         "passed": int((mine & decision.keep).sum()), "published": int((keep & mine).sum()),
                         "surplus": int((mine & decision.keep & ~keep).sum())})
        arrays.append(synthetic)
        decisions.append(decision)
        keeps.append(keep)
        offset += len(labels)
        logger.info("%s: over-generation round %d (seed %d): %s", config.block, r + 1, seed,
                    {row["label"]: f"{row['published']}/{row['requested']} kept, {row['flagged']} flagged"
                     for row in rows if row["round"] == r + 1} or "nothing to sample")
    keep = np.concatenate(keeps)
    table = pd.concat([d.provenance for d in decisions], ignore_index=True)
    synthetic = {key: np.concatenate([np.asarray(a[key]) for a in arrays]) for key in arrays[0]}
    gate_numbers = {k: v for k, v in first[0].numbers.items() if not k.startswith("gate.flagged_fraction.")}
    numbers = gate_numbers | _count_numbers(table, keep) | _round_numbers(table, keep, needed, len(decisions))
    decision = GateDecision(keep, table, numbers, first[0].flag_on_features)
    _report_shortfall(numbers, needed, budget, config)
    return Rebalanced(synthetic, decision, numbers, first[1], pd.DataFrame(rows, columns=ROUND_COLUMNS))


def _round_numbers(table: pd.DataFrame, keep: np.ndarray, needed: Mapping[str, int], rounds: int) -> dict[str, float]:
    labels = table["label"].astype(str).to_numpy()
    flagged = table["memorisation_flagged"].to_numpy(bool)
    numbers = {"rounds": float(rounds), "candidates_sampled": float(len(table)),
               "surplus_count": float((~keep & ~flagged).sum())}
    for name, need in needed.items():
        mine = labels == name
        numbers |= {f"needed.{name}": float(need), f"sampled.{name}": float(mine.sum()),
                    f"dropped.{name}": float((mine & flagged).sum()), f"published.{name}": float((mine & keep).sum()),
                    f"shortfall.{name}": float(need - (mine & keep).sum())}
    numbers["shortfall_total"] = float(sum(numbers[f"shortfall.{name}"] for name in needed))
    return numbers


def _report_shortfall(numbers: Mapping[str, float], needed: Mapping[str, int], budget: Mapping[str, int],
                      config: OverGeneration) -> None:
    """Warn, or raise ``RebalancingShortfall`` (``on_shortfall: fail``), naming every class below its target."""
    short = [name for name in needed if numbers[f"shortfall.{name}"] > 0]
    if not short:
        return
    where = config.where
    described = "; ".join(
        f"{name} short by {int(numbers[f'shortfall.{name}'])} of {needed[name]} synthetic images "
        f"({int(numbers[f'sampled.{name}'])} candidates sampled of at most {budget[name]}, "
        f"{int(numbers[f'dropped.{name}'])} dropped by the memorisation gate)" for name in short)
    message = (f"Over-generation ({where}) fell short of its targets after {int(numbers['rounds'])} round(s) "
               f"(max_rounds {config.max_rounds}, max_candidates_factor {config.max_candidates_factor}): {described}.")
    setting = f"{where}.on_shortfall"
    if config.on_shortfall == "fail":
        raise RebalancingShortfall(
            f"{message} Nothing is published"
            + (f" ({setting}: fail)" if config.on_shortfall_configurable else "")
            + f". Raise {where}.max_rounds or {where}.max_candidates_factor in "
            f"conf/base/parameters_{config.block}.yml, or sample a checkpoint that memorises less (the "
            "evaluation report gives the fraction flagged per checkpoint)"
            + (f", or set {setting}: warn to publish the classes short." if config.on_shortfall_configurable else "."))
    logger.warning("%s Published short (%s: warn); the dataset card lists the shortfall.", message, setting)


def rebalance(
    generator: TrainedGenerator,
    rebalancing_plan: pd.DataFrame,
    slices: Mapping[str, np.ndarray],
    slice_manifest: pd.DataFrame,
    slice_encoder: TrainedClassifier,
    config: RebalancingConfig,
    evaluation: EvaluationConfig,
) -> Rebalanced:
    """``rebalance_in_rounds`` with ``generate_rebalancing`` as the sampler and ``rebalancing_gate`` as the gate
    (prepared once for every round)."""
    def sample(round_plan: pd.DataFrame, seed: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
        return generate_rebalancing(generator, round_plan, slice_manifest, config, seed=seed)

    gate = rebalancing_gate(slices, slice_manifest, slice_encoder, config, evaluation)
    return rebalance_in_rounds(rebalancing_plan, sample, gate, config.rounds)



# HuggingFace's size_categories buckets (upper bounds, exclusive).
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
UNKNOWN_VERSIONS = {"synthmed_version": "unknown", "git_commit": "unknown", "git_dirty": "unknown",
                    "dvc_lock_sha256": "unknown", "kedro_env": "unknown"}


def card_metadata(config: RebalancingConfig, counts: pd.DataFrame, versions: Mapping[str, str]) -> dict[str, Any]:
    """The YAML block of the card (HuggingFace dataset card metadata, plus ``synthetic: true``)."""
    total = int(counts["real"].sum() + counts["synthetic"].sum())
    size = next((name for bound, name in SIZE_CATEGORIES if total < bound), "n>1M")
    return {
        "pretty_name": config.dataset_name,
        "license": config.license,
        **({"license_name": f"{config.dataset_name}-source-notice", "license_link": "README.md#source-data-and-licence"}
           if config.license == "other" else {}),
        "task_categories": ["image-classification"],
        "size_categories": [size],
        "tags": ["medical-imaging", "synthetic", "rebalanced", config.generator],
        "synthetic": True,
        "synthetic_generator": config.generator,
        "synthmed_version": versions["synthmed_version"],
        "git_commit": versions["git_commit"],
        "dvc_lock_sha256": versions["dvc_lock_sha256"],
        "kedro_env": versions["kedro_env"],
    }


def sampler_text(config: RebalancingConfig) -> str:
    """The card's "Sampler" line: the settings for a family that samples in steps, "one forward pass" for a GAN."""
    from synthmed.generators.registry import get_family  # here: it imports every family (torch)

    settings = ", ".join(f"{k}={v}" for k, v in config.sampler.items())
    if get_family(config.generator).iterative:
        return settings
    return f"none: `{config.generator}` draws each image in one forward pass (`sampler` unused: {settings})"


def dataset_card(config: RebalancingConfig, counts: pd.DataFrame, provenance: pd.DataFrame, size: int,
                 decision: GateDecision, versions: Mapping[str, str] | None = None) -> str:
    """The published folder's README (``synthmed/templates/dataset_card.md.j2``), a HuggingFace-style card.

    ``versions``: what built it (``synthmed.core.build_info``); unknown when not given.
    """
    import yaml

    versions = {**UNKNOWN_VERSIONS, **(versions or {})}
    n = decision.numbers
    per_checkpoint = decision.provenance.groupby("checkpoint")["memorisation_flagged"].agg(["size", "mean"])
    feature = n.get("gate.feature_threshold", float("nan"))
    feature_text = "" if feature != feature else (
        f"; feature space (cosine of centred features): {feature:.4f}"
        + (" (flags too)" if decision.flag_on_features else " (recorded, does not flag: see parameters)"))
    relative = n.get("gate.relative_threshold", float("nan"))
    if relative == relative:
        feature_text += (f"; relative distance to the other training patients (nearest training image over the "
                         f"nearest of another patient; flags at or below, the same level's low tail): {relative:.4f}")
    return render(
        "dataset_card.md.j2", config=config, counts=list(counts.itertuples()), size=size,
        front_matter=yaml.safe_dump(card_metadata(config, counts, versions), sort_keys=False, allow_unicode=True),
        versions=versions, checkpoint=provenance["checkpoint"].iloc[0] if len(provenance) else "-",
        sampler=sampler_text(config), gate=n, feature_text=feature_text,
        per_checkpoint=[{"checkpoint": c, "size": int(r["size"]), "fraction": float(r["mean"])}
                        for c, r in per_checkpoint.iterrows()],
    )


# The published folder (docs: README "The published dataset"). ``images/`` is the ImageFolder view,
# 8-bit because torchvision's default loader converts to RGB and clips 16-bit grey to white;
# ``data/images.npy`` keeps every image as float, losslessly, in the generator's [-1, 1] scale.
IMAGE_VIEW = "images"
ARRAY_FILE = "data/images.npy"
METADATA_COLUMNS = ("file_name", "label", "class_id", "is_synthetic", "generator", "checkpoint", "gate_score",
                    "array_index")


def publish_rebalanced(
    slices: Mapping[str, np.ndarray],
    slice_manifest: pd.DataFrame,
    synthetic: Mapping[str, np.ndarray],
    decision: GateDecision,
    config: RebalancingConfig,
    versions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The published folder.

    - ``images/<class>/<file>.png``: 8-bit grey PNGs ([-1, 1] mapped linearly onto 0..255), the
      layout of ``torchvision.datasets.ImageFolder`` and HuggingFace's ``imagefolder``;
    - ``data/images.npy``: the same images, float32 ``(N, C, H, W)`` in [-1, 1], lossless; row
      ``array_index`` of ``labels.csv`` / ``metadata.csv``;
    - ``metadata.csv``: HuggingFace ``imagefolder`` metadata (``file_name``, label, ``is_synthetic``,
      generator, checkpoint, the gate's pixel similarity as ``gate_score``);
    - ``labels.csv`` (every file with its provenance), ``provenance.csv`` (every generated
      image with its gate scores and whether it was published), ``README.md`` (the card).

    Only the synthetic images the memorisation gate kept are published. ``versions``: what
    built it, for the card (``synthmed.core.build_info``).
    """
    if len(decision.keep) != len(synthetic["images"]):
        raise ValueError(f"The gate decided on {len(decision.keep)} images but "
                         f"{len(synthetic['images'])} were generated.")
    provenance = decision.provenance.assign(published=decision.keep)
    names = class_names_of(slice_manifest)
    images = np.asarray(synthetic["images"])
    size = images.shape[-1] if len(images) else int(slices["images"].shape[-1])
    files: dict[str, Any] = {}
    rows, arrays = [], []

    def add(image: np.ndarray, path: str, row: dict[str, Any]) -> None:
        files[path] = to_png_pixels(image, bits=8)
        rows.append({"path": path, **row, "array_index": len(arrays)})
        arrays.append(image.astype(np.float32, copy=False))

    real_rows = slice_manifest[slice_manifest["split"] == config.split]
    for row in real_rows.itertuples():
        image = torch.from_numpy(np.array(slices["images"][row.index], dtype=np.float32))
        if image.shape[-1] != size:
            image = torch.nn.functional.interpolate(image[None], size=size, mode="area")[0]
        add(image.numpy(), f"{IMAGE_VIEW}/{row.label}/real_{row.index:06d}.png",
            {"label": row.label, "class_id": row.class_id, "is_synthetic": False})
    for row in provenance[provenance["published"]].itertuples():
        origin = SyntheticOrigin(generator=str(row.family), checkpoint=str(row.checkpoint), label=str(row.label),
                                 seed=int(row.seed), index=int(row.index), software_version=__version__)
        for name in config.export_formats:
            export = to_dicom if name == "dicom" else to_nifti
            files[f"{name}/{row.label}/synthetic_{row.index:06d}{EXPORT_FORMATS[name]}"] = export(images[row.index],
                                                                                                   origin)
        add(images[row.index], f"{IMAGE_VIEW}/{row.label}/synthetic_{row.index:06d}.png",
            {"label": row.label, "class_id": names.index(row.label), "is_synthetic": True,
             "family": row.family, "checkpoint": row.checkpoint, "sampler": row.sampler, "steps": row.steps,
             "guidance": row.guidance, "seed": row.seed, "batch_position": row.batch_position,
             "nn_pixel_similarity": row.nn_pixel_similarity,
             "nn_pixel_neighbour_index": row.nn_pixel_neighbour_index})
    labels = pd.DataFrame(rows)
    for column in ("family", "checkpoint", "nn_pixel_similarity"):  # no synthetic image published: still there
        if column not in labels:
            labels[column] = np.nan
    counts = (labels.groupby(["label", "is_synthetic"]).size().unstack(fill_value=0)
              .reindex(index=names, columns=[False, True], fill_value=0)
              .rename(columns={False: "real", True: "synthetic"}).reset_index())
    files[ARRAY_FILE] = np.stack(arrays) if arrays else np.zeros((0, 1, size, size), np.float32)
    files["labels.csv"] = labels
    files["metadata.csv"] = labels.rename(columns={"path": "file_name", "family": "generator",
                                                   "nn_pixel_similarity": "gate_score"})[list(METADATA_COLUMNS)]
    files["provenance.csv"] = provenance
    files["README.md"] = dataset_card(config, counts, provenance, size, decision, versions)
    logger.info("Published %d real + %d synthetic images", int(counts["real"].sum()), int(counts["synthetic"].sum()))
    return files
