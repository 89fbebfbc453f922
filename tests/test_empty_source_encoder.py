"""A source without any image (the brain cohort has no 2D images, so no patches) still gets its
feature encoder, an untrained placeholder that says so; an empty training split of a source that
has images still fails."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthmed.datasets.classifier import ClassifierDataset
from synthmed.imaging.extraction import PATCH_COLUMNS
from synthmed.metrics.features import FitConfig
from synthmed.protocols.encoders import EncoderConfig, SourceConfig, train_encoder

SOURCE = SourceConfig(image_px=8)
ENCODER = EncoderConfig(width=4, feature_dim=8)
FIT = FitConfig(steps=1, batch_size=2)


def test_empty_source_gets_a_marked_untrained_encoder(tmp_path) -> None:
    store = {"images": np.zeros((0, 3, 16, 16), np.float32)}
    encoder = train_encoder(store, pd.DataFrame(columns=PATCH_COLUMNS), SOURCE, ENCODER, FIT)
    assert encoder.facts == {"train_images": 0.0, "untrained": 1.0}
    assert encoder.class_names == ()
    dataset = ClassifierDataset(path=str(tmp_path / "patches"))
    dataset.save(encoder)
    assert dataset.load().facts["untrained"] == 1.0


def test_source_with_images_but_no_training_rows_still_fails() -> None:
    manifest = pd.DataFrame([{"index": 0, "split": "test", "class_id": 0, "label": "vessel"}])
    store = {"images": np.zeros((1, 1, 16, 16), np.float32)}
    with pytest.raises(ValueError, match="'train' split is empty"):
        train_encoder(store, manifest, SOURCE, ENCODER, FIT)
