"""Project wiring: pipelines, catalog, dvc.yaml and secrets agree with each other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project

from synthmed.generators.names import FAMILY_NAMES
from tests.conftest import PROJECT_ROOT, load_parameters

PIPELINES = ("sample_cohort", "ingestion", "preprocessing", "extraction", "training", "sampling", "feature_encoders",
             "rebalancing", "evaluation", "release")
# Catalog datasets that can hold identifiers or source paths: their DVC outs must not be pushed.
IDENTIFIABLE = {"raw_sources", "raw_sources@sample", "raw_sources@cohort",
                "source_inventory", "ingestion_manifest", "ingestion_rejected",
                "ingested_images", "ingested_masks", "deid_candidates", "deid_candidate_items"}


@pytest.fixture(scope="module")
def pipelines():
    configure_project("synthmed")
    from synthmed.pipeline_registry import register_pipelines

    return register_pipelines()


@pytest.fixture(scope="module")
def catalog_conf():
    return OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), base_env="base",
                             default_run_env="local")["catalog"]


@pytest.fixture(scope="module")
def dvc_stages():
    return yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def _path(entry: dict) -> str:
    return entry.get("path") or entry.get("filepath") or "<in memory>"


@pytest.fixture(scope="module")
def resolved_paths(catalog_conf):
    """Dataset name -> path for every persisted dataset, dataset factories resolved."""
    from kedro.io import DataCatalog

    catalog = DataCatalog.from_config(catalog_conf)

    def path_of(name: str) -> str | None:
        if name not in catalog and catalog.get(name) is None:
            return None
        described = catalog.get(name)._describe()
        value = described.get("path") or described.get("filepath")
        return str(value) if value is not None else None

    return path_of


def _out_paths(stage: dict) -> dict[str, dict]:
    result = {}
    for key in ("outs", "metrics", "plots"):
        for out in stage.get(key, []):
            name, options = (next(iter(out.items())) if isinstance(out, dict) else (out, {}))
            result[name] = options or {}
    return result


def test_registry_and_node_names(pipelines):
    assert set(PIPELINES) <= set(pipelines)
    # `kedro run` and kedro-viz's default view: every pipeline; `data`: up to the model inputs.
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    assert default_nodes == {n.name for p in PIPELINES for n in pipelines[p].nodes}
    data_nodes = {n.name for n in pipelines["data"].nodes}
    assert data_nodes == {n.name for p in ("ingestion", "preprocessing", "extraction") for n in pipelines[p].nodes}
    # One run of everything needs no input from outside: each pipeline's inputs are produced
    # by the ones before it (Kedro orders the nodes), or are parameters and configured sources.
    free = {d for d in pipelines["__default__"].inputs() if not d.startswith("params:")}
    # `{family}.model_files` is the folder training saves as `{family}.generator`, read as files by
    # release, which also reads `evaluation_metrics` and so runs after evaluation, hence after training.
    model_files = {f"{family}.model_files" for family in FAMILY_NAMES}
    assert free <= {"raw_sources@files", "pseudonymisation_key", "sample_readme", "build_info", *model_files}, free
    order = [n.name for n in pipelines["__default__"].nodes]  # topologically sorted
    for family in FAMILY_NAMES:
        assert order.index(f"release.{family}.release_model") > order.index("collect_metrics") > order.index(
            f"{family}.train_generator")
    for name in PIPELINES:
        for node in pipelines[name].nodes:
            # Namespaced nodes are "<family>.<function>".
            assert node.name.split(".")[-1] == node.func.__name__, f"node {node.name!r} runs {node.func.__name__}"


def test_every_namespace_is_a_contiguous_part_of_the_graph():
    """Kedro warns "Namespace ... is interrupted by nodes ... and thus invalid" when a namespace's
    nodes sit before and after nodes outside it (a family's release after the cross-family
    ``collect_metrics`` did): deployment plugins that group nodes by namespace need it contiguous."""
    import warnings

    from synthmed.pipeline_registry import register_pipelines

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        register_pipelines()
    interrupted = [str(w.message) for w in caught if "is interrupted by nodes" in str(w.message)]
    assert interrupted == []


def test_every_pipeline_package_has_its_readme():
    """The README says each pipeline's README lists its inputs, outputs, parameters and invariants."""
    packages = [p.parent for p in (PROJECT_ROOT / "src/synthmed/pipelines").glob("*/pipeline.py")]
    assert len(packages) >= 10
    missing = sorted(p.name for p in packages if not (p / "README.md").is_file())
    assert missing == []


def test_building_the_pipelines_warns_about_no_dotted_dataset_name():
    """Kedro warns once per process about dotted dataset names read outside their namespace; the
    registry silences exactly that warning (the names come from Kedro's own namespaces), no other."""
    code = ("import warnings; from synthmed.pipeline_registry import register_pipelines; register_pipelines(); "
            "warnings.warn('another UserWarning still shows')")
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")}, check=True)
    assert "dataset names contain '.'" not in result.stderr
    assert "another UserWarning still shows" in result.stderr


def test_dvc_outs_match_catalog_paths(pipelines, resolved_paths, dvc_stages):
    assert set(dvc_stages) == set(PIPELINES)
    for name in PIPELINES:
        stage = dvc_stages[name]
        assert stage["cmd"] == f"kedro run --pipelines {name}"
        outs = _out_paths(stage)
        persisted = {d: resolved_paths(d) for d in pipelines[name].all_outputs() if resolved_paths(d)}
        assert persisted, name
        for dataset, path in persisted.items():
            owners = [o for o in outs if path == o or path.startswith(o.rstrip("/") + "/")]
            assert len(owners) == 1, f"{dataset} ({path}) must be under exactly one out of stage {name}: {list(outs)}"
        for out in outs:
            assert any(p == out or p.startswith(out + "/") for p in persisted.values()), f"stale out {out} in {name}"
        # No two stages own the same path.
        for other in PIPELINES:
            if other != name:
                assert not set(outs) & set(_out_paths(dvc_stages[other]))


def test_dvc_params_and_deps_exist(dvc_stages):
    parameters = load_parameters("local")
    for name, stage in dvc_stages.items():
        for entry in stage.get("params", []):
            (file, keys), = entry.items()
            assert (PROJECT_ROOT / file).is_file()
            for key in keys:
                node = parameters
                for part in key.split("."):  # DVC reads dotted keys as nested
                    assert isinstance(node, dict) and part in node, f"{name}: param {key} not in {file}"
                    node = node[part]
        for dep in stage["deps"]:
            assert (PROJECT_ROOT / dep).exists() or dep.startswith("data/"), f"{name}: missing dep {dep}"


def test_only_deidentified_outputs_are_pushed(pipelines, catalog_conf, dvc_stages):
    for name in PIPELINES:
        for out, options in _out_paths(dvc_stages[name]).items():
            held = {d for d, e in catalog_conf.items() if _path(e) == out or _path(e).startswith(out + "/")}
            identifiable = bool(held & IDENTIFIABLE)
            if options.get("cache", True) is False:  # small metrics files kept in git
                assert not identifiable, f"{out} holds {sorted(held)} and would be committed to git"
                continue
            pushed = options.get("push", True)
            assert pushed != identifiable, f"{out} holds {sorted(held)}: push must be {not identifiable}"


def test_catalog_has_no_kedro_versioning(catalog_conf):
    assert not [name for name, entry in catalog_conf.items() if entry.get("versioned")]


def test_metric_prefixes_end_with_a_dot(catalog_conf):
    """MLflow names are prefix + name: `study_3d.fid`, never `study_3dfid`."""
    prefixes = {name: entry["prefix"] for name, entry in catalog_conf.items()
                if isinstance(entry, dict) and "prefix" in entry}
    assert prefixes  # the metric datasets are found
    assert {name: p for name, p in prefixes.items() if p and not p.endswith(".")} == {}


def test_no_secret_is_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [f for f in tracked if "credentials" in f and not f.endswith(".example")]
    assert not [f for f in tracked if f.startswith("conf/local/") and not f.endswith((".gitkeep", ".example"))]
    assert not [f for f in tracked if f.endswith(".dvc/config.local")]
    ignored = subprocess.run(["git", "check-ignore", "conf/local/credentials.yml", "data/01_raw/x.dcm", "mlflow.db"],
                             cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.split()
    assert ignored == ["conf/local/credentials.yml", "data/01_raw/x.dcm", "mlflow.db"]


@pytest.mark.slow
def test_kedro_viz_build_works_offline(tmp_path):
    """`kedro viz build` renders every pipeline to a static site without network."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("kedro")), "viz", "build", "--include-hooks"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    graph = (PROJECT_ROOT / "build/api/main").read_text()
    for node in ("inventory_sources", "deidentify_sources", "extract_slices"):
        assert node in graph
    assert "assemble_sample_folder" in (PROJECT_ROOT / "build/api/pipelines/sample_data").read_text()


def test_documents_the_code_cites_are_in_the_repository():
    """Every ``docs/<name>.md`` named by the code, configuration or README exists in docs/."""
    import re

    cited: dict[str, set[str]] = {}
    sources = [PROJECT_ROOT / "README.md", *(PROJECT_ROOT / "src").rglob("*.py"),
               *(PROJECT_ROOT / "conf").rglob("*.yml"), *(PROJECT_ROOT / "src").rglob("*.md")]
    for path in sources:
        for name in re.findall(r"docs/([a-z_]+\.md)", path.read_text()):
            cited.setdefault(name, set()).add(str(path.relative_to(PROJECT_ROOT)))
    assert cited, "expected the code to cite docs/"
    missing = {name: sorted(where) for name, where in cited.items() if not (PROJECT_ROOT / "docs" / name).is_file()}
    assert not missing, f"cited but not in docs/: {missing}"
    outside = [p for p in sources if "PRIVACY.md" in p.read_text()]
    assert not outside, f"cite docs/privacy.md, not a file outside the repository: {outside}"


@pytest.mark.parametrize("requested", [["data"], ["ingestion", "data"], ["study_3d"]])
def test_a_pipeline_named_on_the_command_line_is_found(requested: list[str]) -> None:
    # `kedro run --pipelines data` sets Kedro's requested-pipelines filter before the registry is
    # read; Kedro 1.7's find_pipelines raised ImportError for `data` (no package of that name).
    from kedro.framework.project import pipelines as project_pipelines

    configure_project("synthmed")
    try:
        project_pipelines.set_requested(requested)
        nodes = {node.name for name in requested for node in project_pipelines[name].nodes}
        stages = {node.name for name in ("ingestion", "preprocessing", "extraction")
                  for node in project_pipelines[name].nodes}
    finally:
        project_pipelines.set_requested(None)
    assert nodes, f"{requested}: no node"
    if "data" in requested:
        assert nodes == stages
