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
    assert {"data/01_raw/sample", "data/02_intermediate/ingestion"} <= private


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
