"""Loading the project (settings, hooks, pipeline registry, every pipeline's wiring) imports no
heavy library: the nodes' modules are imported when a node runs (``synthmed.core.lazy``)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.framework.project import configure_project
from kedro.pipeline import Node

from synthmed.core.lazy import LazyFunction, lazy_module

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "mlflow", "matplotlib", "skimage", "scipy", "torchmetrics")
# What the parameter check (every run, before the first node) must not import.
CHECK_HEAVY = ("torch", "diffusers", "torchmetrics", "pandas", "scipy", "skimage", "matplotlib", "nibabel", "pydicom",
               "highdicom", "dicomanonymizer")

LOAD_PROJECT = f"""
import json, sys
from kedro.framework.project import configure_project
configure_project("synthmed")
import synthmed.settings, synthmed.hooks
from synthmed.pipeline_registry import register_pipelines
pipelines = register_pipelines()
print(json.dumps({{"pipelines": sorted(pipelines), "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


@pytest.fixture(scope="module")
def pipelines():
    configure_project("synthmed")
    from synthmed.pipeline_registry import register_pipelines

    return register_pipelines()


def test_loading_the_project_imports_no_heavy_library() -> None:
    # A fresh interpreter: the test process itself has imported torch long ago.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", LOAD_PROJECT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ingestion", "training", "evaluation", "__default__"} <= set(loaded["pipelines"])
    assert loaded["heavy"] == [], f"imported when Kedro loads the project: {loaded['heavy']}"


CHECK_PARAMETERS = f"""
import json, sys
from kedro.config import OmegaConfigLoader
from synthmed.parameters import parameter_schema, validate_parameters
loader = OmegaConfigLoader("conf", base_env="base", default_run_env="local", merge_strategy={{"parameters": "soft"}})
params = loader["parameters"]
validate_parameters(params)
print(json.dumps({{"blocks": len(params), "schema": sorted(parameter_schema()),
                  "heavy": [m for m in {CHECK_HEAVY!r} if m in sys.modules]}}))
"""


def test_the_parameter_check_imports_no_heavy_library() -> None:
    # ConfigCheckHook checks the whole tree before every run, so it imports every module that
    # defines a configuration dataclass: those import torch, pandas, ... on first use only
    # (synthmed.core.lazy.lazy_import), and the families' Config live in torch-free modules.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", CHECK_PARAMETERS], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    checked = json.loads(result.stdout.strip().splitlines()[-1])
    assert checked["blocks"] > 10 and {"ddpm.model", "pix2pix3d.model", "evaluation.fidelity"} <= set(checked["schema"])
    assert checked["heavy"] == [], f"imported by the parameter check: {checked['heavy']}"


def test_family_configs_are_the_registry_families_config_classes() -> None:
    from synthmed.generators.configs import FAMILY_CONFIGS
    from synthmed.generators.registry import ALL_FAMILIES

    assert FAMILY_CONFIGS == {name: spec.config_cls for name, spec in ALL_FAMILIES.items()}


def test_a_lazy_import_imports_on_first_attribute_use() -> None:
    code = ("import sys; from synthmed.core.lazy import lazy_import; m = lazy_import('wave'); "
            "before = 'wave' in sys.modules; m.open; print(before, 'wave' in sys.modules, repr(m))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False True <lazy import of wave (imported)>"


def test_every_node_function_exists_and_takes_its_inputs(pipelines) -> None:
    # The lazy stand-ins accept any arguments; build each node again with the real function so
    # that Kedro checks the inputs against its signature, as it did before the stand-ins.
    for pipeline in pipelines.values():
        for node in pipeline.nodes:
            func = node.func.resolve() if isinstance(node.func, LazyFunction) else node.func
            assert func.__name__ == node.func.__name__, node.name
            Node(func, node._inputs, node._outputs, name=node.name)  # raises TypeError on a mismatch


def test_every_lazy_node_lives_in_its_pipeline_package(pipelines) -> None:
    # tools/dvc_deps.py finds a stage's code from its pipeline package (every module in it, and
    # what they import): a stand-in naming a module outside the package would hide that module.
    for name, pipeline in pipelines.items():
        if name in ("__default__", "data"):  # sums of the pipeline packages' own pipelines
            continue
        for node in pipeline.nodes:
            assert isinstance(node.func, LazyFunction), f"{name}: {node.name} imports its function at load time"
            assert node.func.__module__.startswith(f"synthmed.pipelines.{name}."), (name, node.func)


def test_a_lazy_function_imports_on_call_pickles_and_names_a_missing_function() -> None:
    lazy = lazy_module("json").dumps
    assert (lazy.__name__, lazy.__module__) == ("dumps", "json")
    assert lazy([1]) == "[1]"
    again = pickle.loads(pickle.dumps(lazy))
    assert again({"a": 1}) == '{"a": 1}'
    with pytest.raises(AttributeError, match=r"'no_such_node' not found in json .*fix the name"):
        lazy_module("json").no_such_node()


def test_family_names_are_the_registry_families() -> None:
    from synthmed.generators.names import FAMILY_NAMES
    from synthmed.generators.registry import FAMILIES

    assert tuple(FAMILIES) == FAMILY_NAMES


READS_FOR_A_RUN = """
import json, sys
from pathlib import Path
from kedro.config import OmegaConfigLoader
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
reads = []
original = OmegaConfigLoader._read_raw_config
def counted(self, key):
    reads.append(key)
    return original(self, key)
OmegaConfigLoader._read_raw_config = counted
bootstrap_project(Path.cwd())
with KedroSession.create(project_path=Path.cwd(), env="test", runtime_params={"rebalancing": {"seed": 7}}) as session:
    context = session.load_context()  # the hooks' after_context_created: ConfigCheckHook checks the parameters
    context._pipelines_to_validate = ["ingestion"]  # as KedroSession.run scopes it before the catalog
    catalog = context.catalog
    seed = catalog.load("params:rebalancing.seed")
print(json.dumps({"reads": reads, "seed": seed}))
"""


def test_a_run_parses_the_parameter_files_once() -> None:
    # ConfigCheckHook checks the tree and sets it on the config loader: Kedro's catalog takes it
    # from there instead of parsing every parameters file again (about 0.4 CPU-s of each start-up).
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run([sys.executable, "-c", READS_FOR_A_RUN], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["reads"].count("parameters") == 1, found["reads"]
    assert found["seed"] == 7  # the --params overrides are in the tree the run uses
