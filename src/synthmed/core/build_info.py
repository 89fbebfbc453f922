"""What a run was built from: the synthmed version, the git commit, the ``dvc.lock`` hash and the
Kedro environment. Written into the dataset card and onto MLflow runs, so that a published
folder or a run can be traced back to its code and data versions.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from synthmed.core.checksums import sha256_file

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"
# Where Kedro takes the configuration from: conf/base, overridden by the run environment.
BASE_ENV = "base"


def _git(project_path: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=project_path, capture_output=True, text=True, timeout=30,
                                check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def build_info(project_path: Path | str, env: str | None) -> dict[str, str]:
    """The versions a run in ``project_path`` uses.

    Returns:
        ``synthmed_version``; ``git_commit`` (``unknown`` outside a git checkout) and
        ``git_dirty`` (``true`` when tracked files differ from the commit); ``dvc_lock_sha256``
        (of ``dvc.lock`` as the run found it: during ``dvc repro`` the lock of the stages run
        before; ``unknown`` when there is none); ``kedro_env`` (``base`` plus the run
        environment, e.g. ``base+local``; ``base`` alone when ``env`` is None).
    """
    from synthmed import __version__

    root = Path(project_path)
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
    lock = root / "dvc.lock"
    info = {
        "synthmed_version": __version__,
        "git_commit": commit or UNKNOWN,
        "git_dirty": UNKNOWN if status is None else str(bool(status)).lower(),
        "dvc_lock_sha256": sha256_file(lock) if lock.is_file() else UNKNOWN,
        "kedro_env": f"{BASE_ENV}+{env}" if env and env != BASE_ENV else BASE_ENV,
    }
    if commit is None:
        logger.info("%s is not a git checkout (or git is missing): the git commit is recorded as unknown.", root)
    return info
