"""Nodes of the ``rebalancing`` pipeline: parse ``params:rebalancing``, call the library, return.

The steps (plan, generate and gate in rounds, publish) live in ``synthmed.protocols.rebalancing``;
nothing is published unless the gate passed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from synthmed.core import distributed
from synthmed.datasets.array_store import ArrayStore
from synthmed.generators.base import TrainedGenerator
from synthmed.metrics.features import TrainedClassifier
from synthmed.protocols import rebalancing
from synthmed.protocols.evaluation import evaluation_config, finite
from synthmed.protocols.rebalancing import GateDecision, rebalancing_config


def plan_rebalancing(slice_manifest: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Synthetic images to add per class of ``rebalancing.split`` (a sampling plan with ``real`` and ``target``)."""
    return rebalancing.plan_rebalancing(slice_manifest, rebalancing_config(params))


def rebalance(rebalancing_plan: pd.DataFrame, slices: ArrayStore, slice_manifest: pd.DataFrame,
              slice_encoder: TrainedClassifier, params: dict[str, Any], evaluation_params: dict[str, Any],
              *generators: TrainedGenerator
              ) -> tuple[dict[str, np.ndarray], GateDecision, dict[str, float], pd.DataFrame, pd.DataFrame]:
    """Sample ``rebalancing.generator`` and gate the candidates in rounds until the plan is met or a limit is hit.

    Returns:
        ``(samples, gate decision, gate metrics, self-test table, rounds table)``.
    """
    config = rebalancing_config(params)
    by_family = {generator.family: generator for generator in generators}
    if config.generator not in by_family:
        raise ValueError(f"rebalancing.generator must be one of {sorted(by_family)}, got {config.generator!r}.")
    chosen = by_family[config.generator]
    source = chosen.card.get("source", "slices")
    if source != "slices":
        raise ValueError(f"rebalancing.generator={config.generator!r}: rebalancing adds synthetic slices to the "
                         f"slices' {config.split!r} split, but {config.generator} was trained on {source!r} "
                         f"({config.generator}.run.source); pick a family trained on slices.")
    result = rebalancing.rebalance(chosen, rebalancing_plan, slices, slice_manifest,
                                   slice_encoder, config, evaluation_config(evaluation_params))
    return result.synthetic, result.decision, finite(result.numbers), result.self_test, result.rounds


def publish_rebalanced(slices: ArrayStore, slice_manifest: pd.DataFrame, synthetic: dict[str, np.ndarray],
                       decision: GateDecision, params: dict[str, Any],
                       build_info: dict[str, str]) -> dict[str, Any]:
    """The published folder (8-bit ImageFolder view, float array, metadata/labels/provenance CSVs, the card).

    Built on the main process only (``{}`` on the others of a ``synthmed launch``): it is saved
    there alone (``MainProcessCatalog``) and no node reads it in the same run.
    """
    if not distributed.is_main_process():
        return {}
    return rebalancing.publish_rebalanced(slices, slice_manifest, synthetic, decision, rebalancing_config(params),
                                          build_info)
