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


def test_the_encoder_learns_a_rare_class_from_balanced_batches_and_warns_at_chance(caplog) -> None:
    # 60 "normal" images (bright left half) and 3 "lesion" ones (bright right half), as the cohort's
    # slices hold fewer lesion than normal slices. Plain batches leave an encoder that calls every
    # image normal: its balanced accuracy is chance and the run says so. (No flips: a flip swaps the halves.)
    import logging

    import torch

    generator = torch.Generator().manual_seed(4)
    labels = np.r_[np.zeros(60, int), np.ones(3, int)]
    images = -0.5 + 0.1 * torch.randn(63, 1, 8, 8, generator=generator)
    images[labels == 0, :, :, :4] += 1.0
    images[labels == 1, :, :, 4:] += 1.0
    store = {"images": images.clamp(-1, 1).numpy()}
    manifest = pd.DataFrame({"index": np.arange(63), "split": "train", "class_id": labels,
                             "label": np.where(labels == 1, "lesion", "normal")})
    fit = FitConfig(steps=100, batch_size=8, learning_rate=0.01)
    balanced = {}
    for class_balance in (False, True):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="synthmed.protocols.encoders"):
            encoder = train_encoder(store, manifest, SOURCE, EncoderConfig(width=4, feature_dim=4, flips=False,
                                                                           class_balance=class_balance), fit)
        balanced[class_balance] = encoder.facts["reference_balanced_accuracy"]
        assert ("no better than chance" in caplog.text) == (not class_balance)
    assert balanced[False] == 0.5 and balanced[True] > 0.9, balanced
    with pytest.raises(ValueError, match="class_balance must be true or false"):
        EncoderConfig(class_balance="yes")
