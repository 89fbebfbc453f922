"""Raw data never reaches a DVC remote: ``synthmed add-raw`` and ``synthmed push``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthmed.core.dvc_outputs import dvc_outputs, mark_no_push, pushable_problems

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_project_dvc_yaml_pushes_only_deidentified_outputs():
    assert pushable_problems(ROOT) == []
    private = {o.path for o in dvc_outputs(ROOT) if not o.push}
    assert {"data/01_raw/cohort", "data/02_intermediate/ingestion"} <= private


def test_released_models_and_dataset_are_pushed_and_pulled():
    """The release stage's folders are what `dvc get` and a teammate's `synthmed pull` fetch."""
    from synthmed.core.dvc_outputs import shareable_outputs

    released = {o.path for o in dvc_outputs(ROOT) if o.path.startswith("data/09_release/")}
    assert released == {f"data/09_release/models/{family}" for family in ("ddpm", "pix2pix", "dcgan")} | {
        "data/09_release/dataset"}
    assert released <= set(shareable_outputs(ROOT))


def test_every_cached_output_outside_the_allow_list_must_be_push_false(tmp_path):
    _write(tmp_path / "dvc.yaml", (
        "stages:\n"
        "  a:\n    cmd: x\n    outs:\n      - data/01_raw/sample:\n          push: false\n"
        "      - data/02_intermediate/leak\n      - data/03_primary/deidentified\n"
        "    metrics:\n      - data/02_intermediate/m.json:\n          cache: false\n"
        "  b:\n    cmd: x\n    wdir: data\n    plots:\n      - 02_intermediate/plot.csv\n"))
    _write(tmp_path / "data/01_raw/mine.dvc", "outs:\n- md5: 1.dir\n  path: mine\n")
    _write(tmp_path / "data/01_raw/kept.dvc", "outs:\n- md5: 2.dir\n  path: kept\n  push: false\n")
    _write(tmp_path / "elsewhere/scans.dvc", "outs:\n- md5: 3.dir\n  path: scans\n")
    _write(tmp_path / "data/08_reporting/fine.dvc", "outs:\n- md5: 4\n  path: fine.csv\n")
    problems = pushable_problems(tmp_path)
    named = sorted(line.split(" ")[0] for line in problems)
    assert named == ["data/01_raw/mine", "data/02_intermediate/leak", "data/02_intermediate/plot.csv",
                     "elsewhere/scans"]
    assert any("synthmed add-raw data/01_raw/mine" in line for line in problems)
    assert any("in elsewhere/scans.dvc" in line for line in problems)


def test_mark_no_push_sets_push_false_on_every_output(tmp_path):
    dvc_file = tmp_path / "data/01_raw/mine.dvc"
    _write(dvc_file, "outs:\n- md5: 1.dir\n  size: 3\n  path: mine\n")
    mark_no_push(dvc_file)
    assert yaml.safe_load(dvc_file.read_text())["outs"] == [{"md5": "1.dir", "size": 3, "path": "mine",
                                                             "push": False}]
    assert pushable_problems(tmp_path) == []


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
            "PYTHONPATH": str(ROOT / "src")}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _remote_bytes(remote: Path) -> list[bytes]:
    return [p.read_bytes() for p in remote.rglob("*") if p.is_file()] if remote.exists() else []


@pytest.fixture
def dvc_project(tmp_path: Path) -> tuple[Path, Path]:
    project, remote = tmp_path / "project", tmp_path / "remote"
    project.mkdir()
    for args in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"],
                 [str(BIN / "dvc"), "remote", "add", "-d", "r", str(remote)]):
        assert _run(*args, cwd=project).returncode == 0
    _write(project / "dvc.yaml", "stages:\n  s:\n    cmd: x\n    outs:\n      - data/03_primary/out\n")
    _write(project / "data/01_raw/study/PATIENT-SNTLQZ.dcm", "header of SNTLQZ")
    return project, remote


def test_push_refuses_a_raw_folder_added_with_bare_dvc_add_and_add_raw_keeps_it_local(dvc_project):
    project, remote = dvc_project
    synthmed = [sys.executable, "-m", "synthmed"]
    assert _run(str(BIN / "dvc"), "add", "-q", "data/01_raw/study", cwd=project).returncode == 0
    refused = _run(*synthmed, "push", cwd=project)
    assert refused.returncode == 1 and "data/01_raw/study" in refused.stderr and "refusing" in refused.stderr
    assert _remote_bytes(remote) == []

    added = _run(*synthmed, "add-raw", "data/01_raw/study", cwd=project)
    assert added.returncode == 0, added.stderr
    assert yaml.safe_load((project / "data/01_raw/study.dvc").read_text())["outs"][0]["push"] is False
    pushed = _run(*synthmed, "push", cwd=project)
    assert pushed.returncode == 0, pushed.stderr
    assert not any(b"SNTLQZ" in blob for blob in _remote_bytes(remote))


def test_add_raw_refuses_a_folder_outside_data_01_raw(dvc_project, tmp_path):
    project, _ = dvc_project
    _write(project / "data/03_primary/x/a.txt", "a")
    result = _run(sys.executable, "-m", "synthmed", "add-raw", "data/03_primary/x", cwd=project)
    assert result.returncode == 2 and "not a folder inside" in result.stderr
    assert not (project / "data/03_primary/x.dvc").exists()


@pytest.mark.slow
def test_the_readme_own_data_steps_push_no_raw_byte(tmp_path):
    """README 'Your own data': key, catalog, parameters, `synthmed add-raw`, DVC stages, `synthmed push`.

    DICOM headers and file names carry a sentinel; the remote holds de-identified outputs only.
    """
    import secrets
    import string

    from tests.conftest import ct_instance, project_copy, sh
    from tests.dicom_factory import dicom_bytes, make_sentinel_dicom

    sentinel = "QZ" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(8))
    project = project_copy(tmp_path / "project")
    remote = tmp_path / "remote"
    sh("dvc", "remote", "add", "--local", "-d", "test", str(remote), cwd=project)
    study = project / "data/01_raw/my_study"
    patient = study / f"PAT_{sentinel}"
    patient.mkdir(parents=True)
    (patient / f"{sentinel}_case.dcm").write_bytes(
        dicom_bytes(make_sentinel_dicom(sentinel, patient_id=f"ID-{sentinel}", rows=16, cols=16)))
    series, study_uid = "1.2.826.0.1.3680043.8.498.77", "1.2.826.0.1.3680043.8.498.78"
    for k in range(3):
        (patient / f"{sentinel}_series_{k}.dcm").write_bytes(dicom_bytes(
            ct_instance(2.0 * k, series_uid=series, study_uid=study_uid, patient_id=f"ID-{sentinel}-2")))
    local = project / "conf/local"
    key = "3f9c1a7e5b2d48c6a0e4f7b19d3c2e8a5f6b7c1d2e3f4a5b6c7d8e9f0a1b2c3d"  # passes check_key_strength
    (local / "credentials.yml").write_text(f"pseudonymisation:\n  key: {key}\n")
    (local / "catalog.yml").write_text(
        "raw_sources:\n  type: synthmed.datasets.FileFolderDataset\n  path: data/01_raw/my_study\n")
    (local / "parameters_ingestion.yml").write_text("ingestion:\n  labels_csv: null\n")

    synthmed = (sys.executable, "-m", "synthmed")
    sh(*synthmed, "add-raw", "data/01_raw/my_study", cwd=project, local_env=True)
    # The stages that read the raw folder (sample_cohort writes only its own folder: README).
    for stage in ("ingestion", "preprocessing"):
        sh("dvc", "repro", "--single-item", stage, cwd=project, local_env=True)
    sh(*synthmed, "push", cwd=project, local_env=True)

    stored = [p for p in remote.rglob("*") if p.is_file()]
    assert len(stored) > 3  # the de-identified outputs did reach the remote
    needles = [sentinel.encode(), sentinel.lower().encode(), "".join(str(ord(c)) for c in sentinel).encode()]
    leaks = [str(p.relative_to(remote)) for p in stored for n in needles if n in p.read_bytes()]
    assert leaks == []


def test_make_demo_and_the_readme_push_only_through_the_check():
    makefile = (ROOT / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "synthmed push" in demo and "dvc push" not in demo.replace("synthmed push", "")
    own_data = (ROOT / "README.md").read_text().split("## Your own data", 1)[1].split("\n## ", 1)[0]
    assert "add-raw" in own_data and "`dvc add data/01_raw" not in own_data
