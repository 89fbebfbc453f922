"""Nodes of the ``release`` pipeline (one template, namespaced per generator family).

``data/06_models/<family>`` (training) is copied byte for byte, after checking every file
against its ``checksums.json``, to ``data/09_release/models/<family>`` with the model card
extended by the evaluation headline and the memorisation gate's figures
(``synthmed.protocols.release``). The MLflow registry entry is made by a hook when the
folder is saved (``synthmed.hooks.ModelRegistryHook``).
"""

from __future__ import annotations

import pandas as pd

from synthmed.datasets.file_folder import SourceFolder
from synthmed.protocols.release import release_folder, verified_files


def release_model(model_files: SourceFolder, family: str, metrics: dict[str, float],
                  memorisation_table: pd.DataFrame) -> dict[str, bytes]:
    """The released folder: the generator's files, the card with its evaluation and gate figures, checksums.

    ``family`` is the family's ``family`` parameter, the prefix of its numbers in ``metrics.json``
    (as the evaluation pipeline names them).
    """
    files = verified_files(model_files.root, lambda: list(model_files.files), model_files.read_bytes)
    return release_folder(files, family, metrics, memorisation_table)
