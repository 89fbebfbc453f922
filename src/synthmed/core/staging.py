"""Staged outputs: a layer that is pushed changes only when every check of the run has passed.

The primary layer (``data/03_primary``: the de-identified copies and the preprocessed
arrays) is what reaches the DVC remote first. A run writes its new version of each of these
outputs into ``data/.staging/<run>/`` (same relative layout) and later nodes of the same run
read them there; the staged outputs replace the published ones only when the nodes that
write them and the run's check nodes have all finished (``synthmed.hooks.StagingHook``
decides when). A run that fails before that leaves the previous primary layer byte for byte
as it was and removes its staging folder.

The de-identified DICOM copies come from ingestion's one pass through a local layer that is
not staged (``data/02_intermediate/deid_candidates``: never pushed, so it needs no staging):
preprocessing writes the copies of the items every check released into the staged primary
layer, and none of them is published before the run's checks pass.

Each output is replaced by renames (``synthmed.core.atomic.replace_path``), one output after
the other: a crash during those few renames can leave some outputs new and some old, never
one half-written. ``dvc repro`` deletes a stage's outputs before running it, so under DVC
the previous version is the one in the DVC cache (``dvc checkout`` restores it).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from synthmed.core.atomic import replace_path

logger = logging.getLogger(__name__)

# Layers (relative to the project) whose outputs are staged; see docs/privacy.md.
STAGED_LAYERS = ("data/03_primary",)
STAGING_DIR = Path("data/.staging")


def staged_layer(path: Path, project_path: Path) -> bool:
    """Whether ``path`` (absolute, or relative to ``project_path``) lies in a staged layer."""
    path = path if path.is_absolute() else project_path / path
    resolved = path.resolve()
    for layer in STAGED_LAYERS:
        if resolved.is_relative_to((project_path / layer).resolve()):
            return True
    return False


@dataclass
class StagingArea:
    """One run's staging folder and the outputs staged in it (``final path -> staged path``)."""

    project_path: Path
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    staged: dict[Path, Path] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.project_path / STAGING_DIR / self.token

    def stage(self, final: Path) -> Path:
        """The staged path of the output whose published path is ``final``."""
        final = (final if final.is_absolute() else self.project_path / final).resolve()
        staged = self.root / final.relative_to(self.project_path.resolve())
        staged.parent.mkdir(parents=True, exist_ok=True)
        self.staged[final] = staged
        return staged

    def commit(self) -> list[Path]:
        """Move every staged output that was written onto its published path; returns those paths.

        An output the run did not write (its node was skipped) keeps its published version.
        """
        moved = []
        for final, staged in self.staged.items():
            if staged.exists():
                replace_path(staged, final)
                moved.append(final)
        self.staged.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        if moved:
            logger.info("Published %d staged output(s) into %s", len(moved), ", ".join(STAGED_LAYERS))
        return moved

    def discard(self) -> None:
        """Remove the staging folder; the published outputs stay as they were."""
        if self.staged:
            logger.warning("The run failed: its %d staged output(s) were discarded; %s is unchanged.",
                           len(self.staged), ", ".join(STAGED_LAYERS))
        self.staged.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def remove_stale_staging(project_path: Path) -> int:
    """Remove staging folders left by killed runs (call under the project's run lock); returns how many."""
    folder = project_path / STAGING_DIR
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        logger.info("Removed %d staging folder(s) left by an interrupted run", len(stale))
    return len(stale)
