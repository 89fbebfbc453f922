"""Project hooks: configuration checked before a run starts, the pseudonymisation key checked
when the data it guards exists."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from synthmed.core.config import ConfigFileError
from synthmed.datasets.file_folder import FileFolderDataset
from synthmed.datasets.secrets import PUBLIC_SAMPLE_MANIFEST
from synthmed.hooks import ConfigCheckHook, PseudonymisationKeyHook
from synthmed.parameters import ParameterError
from synthmed.privacy.pseudonyms import PUBLIC_SAMPLE_KEY
from tests.conftest import PROJECT_ROOT, load_parameters


def _context(project: Path, params: dict, env: str = "local") -> SimpleNamespace:
    return SimpleNamespace(project_path=project, env=env, config_loader={"parameters": params})


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("credentials.yml"))
    return tmp_path


def test_a_broken_credentials_file_is_named_with_its_line(project) -> None:
    (project / "conf/local/credentials.yml").write_text("pseudonymisation:\n  key: 'abc\n  other: 1\n")
    expected = r"^conf/local/credentials\.yml line 4, column 1: .*quoted scalar started at line 2, column 8\)"
    with pytest.raises(ConfigFileError, match=expected):
        ConfigCheckHook().after_context_created(_context(project, load_parameters("local")))
    # The key hook reads conf/local/credentials.yml whatever the run environment.
    with pytest.raises(ConfigFileError, match=r"^conf/local/credentials\.yml line 4"):
        ConfigCheckHook().after_context_created(_context(project, load_parameters("test"), env="test"))


def test_a_broken_parameters_file_is_named_with_its_line(project) -> None:
    path = project / "conf/test/parameters_extraction.yml"
    path.write_text(path.read_text() + "  broken: [1, 2\n")
    with pytest.raises(ConfigFileError, match=r"conf/test/parameters_extraction\.yml line \d+"):
        ConfigCheckHook().after_context_created(_context(project, load_parameters("test"), env="test"))
    # Files of environments the run does not use are not read.
    ConfigCheckHook().after_context_created(_context(project, load_parameters("local")))


def test_the_context_parameters_are_validated(project) -> None:
    params = load_parameters("local")
    params["ddpm"]["trainng"] = params["ddpm"].pop("training")
    with pytest.raises(ParameterError, match="did you mean 'training'"):
        ConfigCheckHook().after_context_created(_context(project, params))


def test_the_key_hook_reads_a_broken_credentials_file_naming_it(project) -> None:
    (project / "conf/local/credentials.yml").write_text("pseudonymisation: {key: [\n")
    hook = PseudonymisationKeyHook()
    hook.after_context_created(_context(project, {}))
    with pytest.raises(ConfigFileError, match=r"^conf/local/credentials\.yml line 2"):
        hook.after_catalog_created(DataCatalog(), {})


# ----------------------------------------------------------------- the key check's timing


def _write_public_sample(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"public")
    digest = hashlib.sha256(b"public").hexdigest()
    (folder / PUBLIC_SAMPLE_MANIFEST).write_text(json.dumps({"sha256": {"a.txt": digest}}))


def _write_private(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "patient.txt").write_bytes(b"identifiable")


def _produce(*_: object) -> int:
    return 1


def _consume(*_: object) -> int:
    return 2


def _setup(project: Path):
    source = project / "data/01_raw/sample"
    catalog = DataCatalog({"raw_sources": FileFolderDataset(path=str(source))})
    hook = PseudonymisationKeyHook()
    hook.after_context_created(_context(project, {}))
    hook.after_catalog_created(catalog, {})  # no key configured anywhere
    writer = Node(_produce, None, "sample_written", name="assemble_sample_folder")
    reader = Node(_consume, ["raw_sources@files", "pseudonymisation_key", "sample_written"], "inventory",
                  name="inventory")
    return source, catalog, hook, writer, reader, Pipeline([writer, reader])


def test_without_a_source_folder_yet_the_key_is_checked_before_the_first_reader(project) -> None:
    source, catalog, hook, writer, reader, pipeline = _setup(project)
    hook.before_pipeline_run({}, pipeline, catalog)  # the sample does not exist yet: no error
    hook.before_node_run(writer, catalog)  # sample_data's node does not read the source
    _write_public_sample(source)
    hook.before_node_run(reader, catalog)  # the public sample needs no key
    assert catalog.load("pseudonymisation_key") == PUBLIC_SAMPLE_KEY


def test_a_missing_key_for_private_data_written_during_the_run_stops_the_reader(project) -> None:
    source, catalog, hook, writer, reader, pipeline = _setup(project)
    hook.before_pipeline_run({}, pipeline, catalog)
    hook.before_node_run(writer, catalog)
    _write_private(source)
    with pytest.raises(Exception, match="No pseudonymisation key is configured"):
        hook.before_node_run(reader, catalog)


def test_a_missing_key_for_existing_private_data_stops_the_run_up_front(project) -> None:
    source, catalog, hook, _, _, pipeline = _setup(project)
    _write_private(source)
    with pytest.raises(Exception, match="No pseudonymisation key is configured"):
        hook.before_pipeline_run({}, pipeline, catalog)


def test_a_configured_key_passes_and_pipelines_without_the_key_are_not_checked(project) -> None:
    source, catalog, hook, writer, _, pipeline = _setup(project)
    _write_private(source)
    hook.before_pipeline_run({}, Pipeline([writer]), catalog)  # does not need the key
    catalog["pseudonymisation_key"] = MemoryDataset(b"k" * 32)
    hook.before_pipeline_run({}, pipeline, catalog)


OPEN_A_RUN = """
import json, sys
import mlflow
from synthmed.hooks import MlflowRunGuard, NotebookProbeHook
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("synthmed")
blocked = sys.argv[2] == "blocked"
if blocked:
    NotebookProbeHook().before_pipeline_run({}, None, {})
run = mlflow.start_run(run_name="probe")  # what kedro-mlflow's before_pipeline_run does
imported = sys.modules.get("IPython") is not None
if blocked:
    MlflowRunGuard().before_pipeline_run({}, None, {})
still_blocked = "IPython" in sys.modules and sys.modules["IPython"] is None
tags = sorted(t for t in mlflow.get_run(run.info.run_id).data.tags if not t.startswith("synthmed."))  # the guard's
mlflow.end_run()
import IPython  # importable again once the run is open
print(json.dumps({"imported": imported, "still_blocked": still_blocked, "tags": tags}))
"""


def _open_a_run(tmp_path: Path, how: str) -> dict:
    import subprocess
    import sys

    from tests.conftest import _env

    result = subprocess.run([sys.executable, "-c", OPEN_A_RUN, f"sqlite:///{tmp_path}/mlflow-{how}.db", how],
                            cwd=tmp_path, env=_env(PYTHONPATH=str(PROJECT_ROOT / "src")), capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_opening_the_mlflow_run_does_not_import_ipython_and_tags_it_the_same(tmp_path) -> None:
    plain, blocked = _open_a_run(tmp_path, "plain"), _open_a_run(tmp_path, "blocked")
    assert plain["imported"]  # MLflow's notebook probes import IPython when let (0.4-0.5 CPU-s)
    assert not blocked["imported"] and not blocked["still_blocked"]
    assert blocked["tags"] == plain["tags"]  # MLflow found the same context: no notebook
