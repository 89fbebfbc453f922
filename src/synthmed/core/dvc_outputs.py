"""Which DVC outputs may reach a remote: raw and identifiable data never does.

``dvc push`` sends every cached output that is not ``push: false``, from ``dvc.yaml`` stages
and from every ``.dvc`` file (``dvc add``). A raw folder added with a bare ``dvc add`` has
no ``push: false``, so a bare ``dvc push`` would send its files (DICOM headers and file
names included) to the remote. ``synthmed push`` checks first, with ``pushable_problems``:
an output may be pushed only if it is under one of ``PUSHABLE_PREFIXES`` (the de-identified
and derived layers); any other cached output must be ``push: false``. ``synthmed add-raw``
tracks a raw folder with ``dvc add`` and then marks it ``push: false`` (``mark_no_push``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

# De-identified or derived outputs (docs/privacy.md): the only ones allowed to reach a remote.
PUSHABLE_PREFIXES = (
    "data/03_primary",
    "data/05_model_input",
    "data/06_models",
    "data/07_model_output",
    "data/08_reporting",
    "data/09_release",  # released generator folders: weights of models trained on de-identified data, cards
)
RAW_PREFIX = "data/01_raw"
_SKIP_DIRS = {".git", ".dvc", ".venv", "node_modules", "__pycache__"}


@dataclass(frozen=True)
class DvcOutput:
    path: str  # relative to the project root, POSIX
    declared_in: str  # dvc.yaml or the .dvc file, relative to the project root
    push: bool
    cache: bool


def _outputs_of(entries: Any, base: PurePosixPath, declared_in: str) -> list[DvcOutput]:
    found = []
    for entry in entries or []:
        if isinstance(entry, dict) and "path" in entry:  # .dvc file: a mapping with path
            name, options = entry["path"], entry
        elif isinstance(entry, dict):  # dvc.yaml: {path: {options}}
            name, options = next(iter(entry.items()))
            options = options or {}
        else:
            name, options = entry, {}
        path = os.path.normpath((base / str(name)).as_posix()).replace(os.sep, "/")
        found.append(DvcOutput(path=path, declared_in=declared_in, push=options.get("push", True) is not False,
                               cache=options.get("cache", True) is not False))
    return found


def dvc_outputs(root: Path) -> list[DvcOutput]:
    """Every output declared under ``root``: stage outs/metrics/plots of each dvc.yaml, outs of each .dvc."""
    outputs: list[DvcOutput] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        here = Path(folder)
        for name in sorted(files):
            file = here / name
            rel_dir = PurePosixPath(here.relative_to(root).as_posix())
            declared_in = (rel_dir / name).as_posix()
            if name == "dvc.yaml":
                stages = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get("stages", {}) or {}
                for stage in stages.values():
                    base = rel_dir / stage.get("wdir", ".")
                    for key in ("outs", "metrics", "plots"):
                        outputs += _outputs_of(stage.get(key), base, declared_in)
            elif name.endswith(".dvc") and file.is_file():
                content = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
                base = rel_dir / content.get("wdir", ".")
                outputs += _outputs_of(content.get("outs"), base, declared_in)
    return outputs


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _in_pushable_layer(path: str) -> bool:
    return any(_under(path, prefix) for prefix in PUSHABLE_PREFIXES)


def pushable_problems(root: Path) -> list[str]:
    """One line per cached output that would be pushed although it is not de-identified."""
    problems = []
    for out in dvc_outputs(root):
        if not out.cache or not out.push:
            continue
        if not _in_pushable_layer(out.path):
            fix = (f"run `synthmed add-raw {out.path}` (it sets push: false)" if _under(out.path, RAW_PREFIX)
                   else f"add `push: false` to it in {out.declared_in}")
            problems.append(f"{out.path} (declared in {out.declared_in}) would be pushed: it is not under "
                            f"{', '.join(PUSHABLE_PREFIXES)}; {fix}.")
    return problems


def shareable_outputs(root: Path) -> list[str]:
    """The cached outputs a teammate pulls: pushed ones (not ``push: false``) under `PUSHABLE_PREFIXES`.

    A bare ``dvc pull`` also asks the remote for the ``push: false`` outputs (raw data and
    the tables of source paths), which are never there, and exits 1; ``synthmed pull``
    pulls these paths instead.
    """
    return sorted({out.path for out in dvc_outputs(root) if out.cache and out.push and _in_pushable_layer(out.path)})


def mark_no_push(dvc_file: Path) -> None:
    """Set ``push: false`` on every output of a ``.dvc`` file (kept by DVC, honoured by ``dvc push``)."""
    content = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    outs = content.get("outs") or []
    if not outs:
        raise ValueError(f"{dvc_file} declares no outputs; expected the file written by `dvc add`.")
    for out in outs:
        out["push"] = False
    dvc_file.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
