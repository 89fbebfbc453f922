"""Nodes of the ``release`` pipeline (one template, namespaced per generator family).

``data/06_models/<family>`` (training) is copied byte for byte, after checking every file
against its ``checksums.json``, to ``data/09_release/models/<family>`` with the model card
extended by the evaluation headline and the memorisation gate's figures
(``synthmed.protocols.release``). The MLflow registry entry is made by a hook when the
folder is saved (``synthmed.hooks.ModelRegistryHook``). The published dataset
(``data/07_model_output/rebalanced``) is released the same way to ``data/09_release/dataset``,
its card with the evaluation headline (the rebalancing stage publishes before the evaluation
runs, so only the release can carry it).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pandas as pd

from synthmed.datasets.file_folder import SourceFolder
from synthmed.protocols.release import (
    DATASET_CARD,
    ReleaseError,
    dataset_card_with_headline,
    release_folder,
    verified_files,
)


def release_model(model_files: SourceFolder, family: str, metrics: dict[str, float],
                  memorisation_table: pd.DataFrame) -> dict[str, bytes]:
    """The released folder: the generator's files, the card with its evaluation and gate figures, checksums.

    ``family`` is the family's ``family`` parameter, the prefix of its numbers in ``metrics.json``
    (as the evaluation pipeline names them).
    """
    files = verified_files(model_files.root, lambda: list(model_files.files), model_files.read_bytes)
    return release_folder(files, family, metrics, memorisation_table)


def release_dataset(rebalanced: SourceFolder, headline: dict[str, float]) -> dict[str, Any]:
    """The released dataset: the published folder's files as they are (verified when it was loaded), its card
    (``README.md``) with the evaluation headline of the same run.

    Files are handed over as loaders, read one at a time when the folder is saved.
    """
    files: dict[str, Any] = {rel: partial(rebalanced.read_bytes, rel) for rel in rebalanced.files
                             if rel != DATASET_CARD}
    if DATASET_CARD not in rebalanced.files:
        raise ReleaseError(f"{rebalanced.root} has no {DATASET_CARD} (its dataset card): re-run rebalancing "
                           "(`dvc repro rebalancing`), then release again.")
    files[DATASET_CARD] = dataset_card_with_headline(rebalanced.read_text(DATASET_CARD), headline)
    return files
