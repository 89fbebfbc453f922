"""The code dependencies of each DVC stage, derived from the imports of its Kedro pipeline.

A stage runs ``kedro run --pipelines NAME``: its outputs depend on the pipeline's package, on
every ``synthmed`` module that package imports (transitively, as grimp builds the graph:
``from a.b import c`` depends on ``a.b`` and ``a.b.c``, not on the parents' ``__init__``),
on the modules of the catalog datasets the pipeline reads and writes, and on the templates
when ``synthmed.core.templates`` is among them. Hooks, settings and the CLI do not change
outputs and are left out. A ``pipeline.py`` names its node functions by module path
(``synthmed.core.lazy``: imported when a node runs), not by import; the nodes' modules are in
the pipeline's package, so they count all the same (``tests/test_startup.py`` checks that).

Files under ``src/`` that a pipeline reads through the catalog (the sample's README) are
deps too. A folder is listed when every file below it (``__init__`` aside) is a dependency,
otherwise the files: a pipeline's README is documentation, and editing it reruns nothing.

    python tools/dvc_deps.py            # print the expected code deps of every stage
    python tools/dvc_deps.py --check    # exit 1 when dvc.yaml differs (tests do this too)
    python tools/dvc_deps.py --write    # rewrite the src/ deps of dvc.yaml in place
"""

from __future__ import annotations

import argparse
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "synthmed"
# Modules that read files of the package that are not Python (their folders become deps).
DATA_FOLDERS = {"synthmed.core.templates": "src/synthmed/templates"}
# Datasets a hook puts into the catalog (not in catalog.yml): name -> the dataset's module.
HOOK_DATASETS = {"pseudonymisation_key": "synthmed.datasets.secrets"}


@cache
def _graph():
    import grimp

    sys.path.insert(0, str(SRC))
    return grimp.build_graph(PACKAGE)


def _module_path(module: str) -> Path:
    base = SRC / Path(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _catalog_datasets(pipeline_name: str) -> tuple[set[str], set[str]]:
    """The modules of the catalog datasets the pipeline reads or writes, and the files under
    ``src/`` it reads through the catalog (e.g. the sample's README)."""
    from kedro.config import OmegaConfigLoader
    from kedro.framework.project import configure_project
    from kedro.io import DataCatalog

    configure_project(PACKAGE)
    from synthmed.pipeline_registry import register_pipelines

    pipeline = register_pipelines()[pipeline_name]
    conf = OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base", default_run_env="local")["catalog"]
    catalog = DataCatalog.from_config(conf)
    modules, files = set(), set()
    for name in pipeline.datasets():
        if name.startswith("params:") or name == "parameters":
            continue
        if name in HOOK_DATASETS:
            modules.add(HOOK_DATASETS[name])
            continue
        dataset = catalog.get(name)
        if dataset is None:
            continue
        module = type(dataset).__module__
        if module.startswith(PACKAGE + "."):
            modules.add(module)
        described = dataset._describe()
        path = str(described.get("filepath") or described.get("path") or "")
        if name in pipeline.inputs() and path.startswith("src/"):
            files.add(path)
    return modules, files


def stage_modules(pipeline_name: str) -> set[str]:
    """Every ``synthmed`` module the stage's outputs depend on."""
    graph = _graph()
    package = f"{PACKAGE}.pipelines.{pipeline_name}"
    roots = {package, *graph.find_descendants(package)} | _catalog_datasets(pipeline_name)[0]
    modules = set(roots)
    for module in roots:
        modules |= graph.find_upstream_modules(module)
    return {m for m in modules if m != PACKAGE}


def stage_code_deps(pipeline_name: str) -> list[str]:
    """The ``src/`` paths to list under the stage's ``deps`` (folders collapsed where complete)."""
    modules = stage_modules(pipeline_name)
    files = {_module_path(m).relative_to(ROOT).as_posix() for m in modules} | _catalog_datasets(pipeline_name)[1]
    folders = set()
    for module, folder in DATA_FOLDERS.items():
        if module in modules:
            folders.add(folder)
    # Collapse a folder when every file in it is a dependency (so a README edit reruns nothing).
    for folder in sorted({Path(f).parent for f in files}, key=lambda p: len(p.parts)):
        if folder == SRC.relative_to(ROOT) / PACKAGE:
            continue
        # Package __init__ files are not required: grimp does not count them as imported.
        present = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*")
                   if p.is_file() and p.name != "__init__.py" and "__pycache__" not in p.parts}
        if present and present <= files and not any(folder.as_posix().startswith(f + "/") for f in folders):
            folders.add(folder.as_posix())
    kept = {f for f in files if not any(f.startswith(folder + "/") for folder in folders)}
    folders = {f for f in folders if not any(f.startswith(other + "/") for other in folders if other != f)}
    return sorted(kept | folders)


def dvc_code_deps(stage: dict) -> list[str]:
    return sorted(d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith("src/"))


def main() -> int:
    from ruamel.yaml import YAML

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml's code deps differ")
    group.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    args = parser.parse_args()
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    dvc_file = ROOT / "dvc.yaml"
    document = yaml.load(dvc_file.read_text())
    differs = False
    for name, stage in document["stages"].items():
        expected = stage_code_deps(name)
        actual = dvc_code_deps(stage)
        if expected != actual:
            differs = True
            print(f"{name}: missing {sorted(set(expected) - set(actual))}, "
                  f"not used {sorted(set(actual) - set(expected))}")
        if args.write:
            data = [d for d in stage["deps"] if not (isinstance(d, str) and d.startswith("src/"))]
            stage["deps"].clear()
            stage["deps"].extend(data + expected)
        elif not args.check:
            print(f"{name}:\n" + "".join(f"  - {d}\n" for d in expected))
    if args.write:
        with open(dvc_file, "w") as handle:
            yaml.dump(document, handle)
        print("dvc.yaml: code deps rewritten")
        return 0
    return 1 if differs and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
