"""FID against solver steps: how few denoising steps keep a diffusion family's FID.

For each point (sampler, steps) of ``evaluation.steps_sweep.points``, the family's trained
generator samples the same plan (the family's own plan scaled to ``images`` images, the same
seed, guidance and throughput settings as its sampling), the samples go through the
evaluation's feature network at the source's evaluation size, and FID is computed exactly as
the evaluation computes it (``protocols.evaluation.fid_splits`` / ``fid_intervals``: against
one half of the reference split, averaged over ``fidelity.splits`` random splits, bootstrap
interval, beside the real-vs-real floor on the same N). The time per image of each point is
measured around the sampling.

The recommended setting is the point with the fewest steps whose FID is within the tolerance
of the best point's: ``tolerance: null`` = at most the best point's interval upper end;
a number = at most the best FID plus that number. Ties in steps go to the faster point. The
best point's interval pools the bootstraps of every split into halves, so it also spans how
far the splits disagree, although every point is scored on the same splits: ``tolerance: null``
is that much more lenient than a paired comparison of two points would be.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from synthmed.core.config import from_params
from synthmed.core.lazy import lazy_import
from synthmed.generators.base import SAMPLERS, SamplerSpec, TrainedGenerator
from synthmed.generators.sampling import (
    SamplingConfig,
    ThroughputConfig,
    checkpoint_id,
    generate_from_plan,
    plan_table,
)
from synthmed.metrics.features import at_size
from synthmed.metrics.steps_sweep import SWEEP_COLUMNS, recommend
from synthmed.protocols.evaluation import EvaluationSet, FidelityConfig, fid_intervals, fid_splits

pd = lazy_import("pandas")
logger = logging.getLogger(__name__)

# Plan rows the sweep can scale without real images to condition on.
SWEEPABLE_CONDITIONS = ("class", "unconditional")


@dataclass(frozen=True)
class StepsSweepConfig:
    """``params:evaluation.steps_sweep``.

    Args:
        enabled: run the sweep (false: the node writes an empty table).
        families: the families swept (diffusion families: their samplers take steps).
        points: ``{name, steps: [..]}`` per sampler (``ddpm`` | ``ddim`` | ``dpmsolver++``).
        images: samples per point (the family's plan rows scaled to this total).
        tolerance: ``null``: FID at most the best point's interval upper end; a number: at most
            the best FID plus this.
        resamples: bootstrap resamples per interval; null: ``evaluation.fidelity.resamples``.
    """

    enabled: bool = True
    families: tuple[str, ...] = ("ddpm",)
    points: tuple[Mapping[str, Any], ...] = field(default_factory=lambda: (
        {"name": "ddim", "steps": [10, 25, 50]}, {"name": "dpmsolver++", "steps": [10, 20]}))
    images: int = 32
    tolerance: float | None = None
    resamples: int | None = None

    def __post_init__(self) -> None:
        if self.images < 4:
            raise ValueError(f"evaluation.steps_sweep.images must be >= 4 (FID needs 2 rows per set), "
                             f"got {self.images}.")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ValueError(f"evaluation.steps_sweep.tolerance must be >= 0 or null, got {self.tolerance}.")
        if self.resamples is not None and self.resamples < 1:
            raise ValueError(f"evaluation.steps_sweep.resamples must be >= 1 or null, got {self.resamples}.")
        for i, point in enumerate(self.points):
            where = f"evaluation.steps_sweep.points[{i}]"
            if set(point) != {"name", "steps"}:
                raise ValueError(f"{where} must have exactly the keys name and steps, got {sorted(point)}.")
            if point["name"] not in SAMPLERS:
                raise ValueError(f"{where}.name must be one of {list(SAMPLERS)}, got {point['name']!r}.")
            steps = point["steps"]
            if (isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps
                    or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps)):
                raise ValueError(f"{where}.steps must be a non-empty list of positive integers, got {steps!r}.")

    def samplers(self, base: SamplerSpec) -> list[SamplerSpec]:
        """Every point as a sampler with ``base``'s guidance and eta."""
        return [replace(base, name=p["name"], steps=int(s)) for p in self.points for s in p["steps"]]


def scaled_plan(plan: pd.DataFrame, images: int) -> pd.DataFrame:
    """The plan's rows with counts scaled to ``images`` in all (largest remainders; each row >= 1 where it fits).

    Only class and unconditional rows: mask and inpainting rows need real images, which the
    sweep does not take.
    """
    other = sorted(set(plan["condition"]) - set(SWEEPABLE_CONDITIONS))
    if other:
        raise ValueError(f"evaluation.steps_sweep samples the family's plan, whose conditions {other} need real "
                         f"images; the sweep takes {list(SWEEPABLE_CONDITIONS)} rows only. Remove the family from "
                         "evaluation.steps_sweep.families.")
    counts = plan["count"].to_numpy(dtype=float)
    share = counts / counts.sum() * images
    scaled = np.floor(share).astype(int)
    for i in np.argsort(-(share - scaled), kind="stable")[: images - scaled.sum()]:
        scaled[i] += 1
    out = plan.assign(count=scaled)
    return out[out["count"] > 0].reset_index(drop=True)


def steps_sweep(generator: TrainedGenerator, evaluation: EvaluationSet, sampling: SamplingConfig,
                config: StepsSweepConfig, fidelity_config: FidelityConfig) -> pd.DataFrame:
    """FID, its floor and the time per image at every point (``SWEEP_COLUMNS``); empty when off for the family."""
    family = evaluation.family
    if not config.enabled or family not in config.families:
        return pd.DataFrame(columns=SWEEP_COLUMNS)
    from synthmed.generators.registry import get_family  # here: the networks (torch) load with it

    spec = get_family(generator.family)
    base = from_params(SamplerSpec, sampling.sampler, f"{family}.sampling.sampler")
    throughput = from_params(ThroughputConfig, sampling.throughput, f"{family}.sampling.throughput")
    plan = scaled_plan(plan_table(sampling), config.images)
    fidelity_config = replace(fidelity_config, resamples=config.resamples or fidelity_config.resamples)
    px = int(evaluation.reference.images.shape[-1])
    digest = checkpoint_id(generator)
    rows, floor = [], None
    for sampler in config.samplers(base):
        wall, cpu = time.perf_counter(), time.process_time()
        result = generate_from_plan(spec, generator.config, generator.models, plan, evaluation.class_names,
                                    sampler, seed=sampling.seed, batch_size=sampling.batch_size,
                                    checkpoint=digest, throughput=throughput)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        features = evaluation.network(at_size(result.images, px))
        sets = fid_splits(evaluation.reference.features, features, seed=fidelity_config.seed,
                          splits=fidelity_config.splits, groups=evaluation.reference.patients)
        scores = fid_intervals(sets, fidelity_config, floor=floor is None)
        if floor is None:  # same N and seed at every point: one floor for the sweep
            floor = {k: scores[f"fid_floor_halves{k}"] for k in ("", "_low", "_high")}
        chosen = result.provenance.iloc[0] if len(result.provenance) else {}
        n = len(result.images)
        rows.append({"family": family, "sampler": sampler.name, "steps": sampler.steps,
                     "guidance": sampler.guidance_scale, "images": n, "seed": sampling.seed,
                     "fid": scores["fid"], "fid_low": scores["fid_low"], "fid_high": scores["fid_high"],
                     "fid_n": scores["fid_n"], "floor": floor[""], "floor_low": floor["_low"],
                     "floor_high": floor["_high"], "seconds_per_image": wall / n, "cpu_seconds_per_image": cpu / n,
                     "device": chosen.get("device", ""), "precision": chosen.get("precision", ""),
                     "batch_size": chosen.get("batch_size", 0)})
        logger.info("%s steps sweep: %s %d steps: FID %.2f [%.2f, %.2f] (n=%d, floor %.2f), %.3f s per image",
                    family, sampler.name, sampler.steps, scores["fid"], scores["fid_low"], scores["fid_high"],
                    scores["fid_n"], floor[""], wall / n)
    table = recommend(pd.DataFrame(rows), config.tolerance)
    return table[SWEEP_COLUMNS]
