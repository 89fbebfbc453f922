"""The versions a run is built from (``synthmed.core.build_info``), as a read-only dataset.

The catalog entry ``build_info`` gives the project folder; ``synthmed.hooks.BuildInfoHook``
replaces it in a Kedro session with one that knows the run environment (``--env``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from synthmed.core.build_info import build_info
from synthmed.datasets.preview import JSONPreview


class BuildInfoDataset(AbstractDataset[None, dict[str, str]]):
    """Loads ``{synthmed_version, git_commit, git_dirty, dvc_lock_sha256, kedro_env}``.

    Args:
        project_path: the project folder (git checkout holding ``dvc.lock``).
        env: the Kedro run environment; None outside a session.
    """

    def __init__(self, *, project_path: str = ".", env: str | None = None,
                 metadata: dict[str, Any] | None = None):
        self._project_path = Path(project_path)
        self._env = env
        self.metadata = metadata

    def load(self) -> dict[str, str]:
        return build_info(self._project_path, self._env)

    def save(self, data: None) -> None:
        raise DatasetError("build_info is read-only: it is what the run was built from.")

    def _exists(self) -> bool:
        return True

    def preview(self) -> JSONPreview:
        """kedro-viz: the versions, as ``load`` gives them."""
        return JSONPreview(json.dumps(self.load(), indent=2))

    def _describe(self) -> dict[str, Any]:
        return {"project_path": str(self._project_path), "env": self._env}
