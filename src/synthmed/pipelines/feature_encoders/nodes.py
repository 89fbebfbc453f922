"""Nodes of the ``feature_encoders`` pipeline (one template, namespaced per source).

The domain encoder is a small CNN trained to tell the classes of a source apart on the real
training split only (``synthmed.protocols.evaluation.train_encoder``). Its feature layer is
the default feature space of FID, KID, PRDC, the t-SNE and the memorisation gate.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from synthmed.core.config import from_params
from synthmed.datasets.array_store import ArrayStore
from synthmed.metrics.features import FitConfig, TrainedClassifier
from synthmed.protocols.encoders import EncoderConfig, source_config, train_encoder


def train_feature_encoder(
    store: ArrayStore, manifest: pd.DataFrame, source_params: dict[str, Any], encoder_params: dict[str, Any]
) -> tuple[TrainedClassifier, dict[str, float]]:
    """Train the domain encoder of one source on its real reference (training) split.

    Returns:
        The encoder and its facts (images trained on, reference and held-out accuracy).
    """
    source = source_config(source_params, "evaluation.sources")
    config = from_params(EncoderConfig, encoder_params, "evaluation.encoder")
    fit = from_params(FitConfig, config.fit or {}, "evaluation.encoder.fit")
    encoder = train_encoder(store, manifest, source, config, fit)
    return encoder, encoder.facts
