"""Tests for the ``synthmed`` command: ``synthmed verify`` and the DVC remote's verify setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthmed.__main__ import main, verify
from synthmed.core import checksums
from synthmed.datasets import ArrayStoreDataset, ClassifierDataset, FileFolderDataset
from synthmed.metrics.features import TrainedClassifier

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with an array store, a classifier folder, a file folder and a dvc.yaml."""
    from synthmed.metrics.features import ClassifierConfig, ConvClassifier

    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  extraction:\n    cmd: kedro run --pipelines extraction\n"
        "    outs:\n      - data/05_model_input/slices\n"
        "  rebalancing:\n    cmd: kedro run --pipelines rebalancing\n"
        "    outs:\n      - data/07_model_output/rebalanced\n      - data/07_model_output/rebalancing\n"
    )
    data = tmp_path / "data"
    ArrayStoreDataset(path=str(data / "05_model_input/slices/arrays")).save(
        {"images": np.ones((4, 1, 8, 8), np.float32), "labels": np.arange(4)})
    model = ConvClassifier(ClassifierConfig(channels=1, num_classes=2, image_px=8, width=2, feature_dim=4))
    ClassifierDataset(path=str(data / "06_models/feature_encoders/slices")).save(TrainedClassifier(model, ("a", "b")))
    FileFolderDataset(path=str(data / "07_model_output/rebalanced")).save({"README.md": "card", "a/1.txt": "one"})
    (data / "08_reporting").mkdir()
    (data / "08_reporting/metrics.json").write_text("{}")  # not a store: not listed
    return tmp_path


def _run(project: Path, capsys, *args: str) -> tuple[int, str]:
    code = verify(["--data", str(project / "data"), *args])
    return code, capsys.readouterr().out


def _lines(out: str) -> dict[str, str]:
    """path -> status for each store line."""
    return {parts[2]: parts[0] for line in out.splitlines()
            if len(parts := line.split()) >= 3 and parts[0] in ("intact", "missing", "corrupt")}


def test_an_intact_tree_exits_0_with_one_line_per_store(project: Path, capsys) -> None:
    code, out = _run(project, capsys)
    assert code == 0
    data = "data"
    assert _lines(out) == {
        f"{data}/05_model_input/slices/arrays": "intact",
        f"{data}/06_models/feature_encoders/slices": "intact",
        f"{data}/07_model_output/rebalanced": "intact",
        f"{data}/07_model_output/rebalancing": "missing",  # in dvc.yaml, never produced
    }
    assert "3 intact, 1 missing, 0 corrupt" in out


def test_a_corrupted_byte_is_reported_with_file_and_checksums_and_exits_1(project: Path, capsys) -> None:
    images = project / "data/05_model_input/slices/arrays/images.npy"
    raw = bytearray(images.read_bytes())
    raw[-3] ^= 0x10
    images.write_bytes(bytes(raw))
    code, out = _run(project, capsys)
    assert code == 1
    assert _lines(out)["data/05_model_input/slices/arrays"] == "corrupt"
    assert f"{images} is corrupt (does not match its checksum): expected sha256 " in out and ", found " in out
    assert "`kedro run --pipelines extraction` / `dvc repro`" in out
    assert _lines(out)["data/07_model_output/rebalanced"] == "intact"


def test_truncation_and_deletion(project: Path, capsys) -> None:
    weights = project / "data/06_models/feature_encoders/slices/weights.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as handle:
        handle.truncate(size // 2)
    (project / "data/07_model_output/rebalanced/a/1.txt").unlink()
    code, out = _run(project, capsys)
    assert code == 1
    lines = _lines(out)
    assert lines["data/06_models/feature_encoders/slices"] == "corrupt"
    assert (f"truncated (does not match its checksum record): size mismatch, expected {size} bytes, "
            f"found {size // 2}") in out
    assert lines["data/07_model_output/rebalanced"] == "missing"
    assert "a/1.txt is missing" in out


def test_json_report(project: Path, capsys) -> None:
    (project / "data/05_model_input/slices/arrays/index.json").write_text("{oops")
    code, out = _run(project, capsys, "--json")
    report = json.loads(out)
    assert code == 1 and report["counts"] == {"intact": 2, "missing": 1, "corrupt": 1}
    (broken,) = [s for s in report["stores"] if s["status"] == "corrupt"]
    assert broken["path"] == "data/05_model_input/slices/arrays"
    assert broken["problems"][0]["kind"] == "listing" and "not valid JSON" in broken["problems"][0]["message"]


def test_a_second_run_in_one_process_hashes_nothing(project: Path, capsys, monkeypatch) -> None:
    calls = []
    real = checksums.sha256_file
    monkeypatch.setattr(checksums, "sha256_file", lambda path: calls.append(path) or real(path))
    _run(project, capsys)
    first = len(calls)
    _run(project, capsys)
    assert first >= 6 and len(calls) == first


def test_a_missing_data_folder_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        verify(["--data", str(tmp_path / "nowhere")])
    assert info.value.code == 2 and "is not a folder" in capsys.readouterr().err


def test_the_console_entry_point_dispatches_verify_and_exits_with_its_status(project: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["verify", "--data", str(project / "data")])
    assert info.value.code == 0


def test_python_dash_m_synthmed_verify_in_a_subprocess(project: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    images = project / "data/05_model_input/slices/arrays/images.npy"
    images.write_bytes(images.read_bytes()[:-1] + b"\x7f")
    result = subprocess.run([sys.executable, "-m", "synthmed", "verify"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("corrupt") and result.stderr == ""


def test_the_default_dvc_remote_verifies_what_it_pulls() -> None:
    from configobj import ConfigObj

    config = ConfigObj(str(ROOT / ".dvc" / "config"))
    default = config["core"]["remote"]
    assert config[f'remote "{default}"'].get("verify") == "true"


@pytest.mark.slow
def test_dvc_pull_refuses_an_object_corrupted_in_the_default_remote(tmp_path: Path) -> None:
    """The project's own .dvc/config, pointed at a scratch remote: a tampered object fails the pull."""
    import shutil

    dvc = str(Path(sys.executable).with_name("dvc"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([dvc, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120)

    assert run("init", "--no-scm", "-q").returncode == 0
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    from configobj import ConfigObj

    default = ConfigObj(str(repo / ".dvc" / "config"))["core"]["remote"]
    assert run("remote", "modify", "--local", default, "url", str(remote)).returncode == 0
    assert run("config", "--local", "core.no_scm", "true").returncode == 0  # the copy replaced init's
    (repo / "d").mkdir()
    (repo / "d" / "a.txt").write_text("pixels\n")
    assert run("add", "-q", "d").returncode == 0
    assert run("push", "-q").returncode == 0
    (obj,) = [p for p in remote.rglob("*") if p.is_file() and not p.name.endswith(".dir")]
    obj.chmod(0o644)
    obj.write_text("tampered\n")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "d")
    result = run("pull")
    assert result.returncode != 0, result.stdout + result.stderr
    assert not (repo / "d" / "a.txt").exists()


@pytest.mark.slow
def test_kedro_run_verbose_shows_the_traceback_of_synthmed_s_own_errors(tmp_path: Path) -> None:
    from tests.conftest import project_copy, sh

    project = project_copy(tmp_path / "project")
    command = ("kedro", "run", "--pipelines", "ingestion", "--params", "ingestion.max_rejection_rate=2")
    quiet = sh(*command, cwd=project, check=False)
    loud = sh(*command, "--verbose", cwd=project, check=False)
    for result in (quiet, loud):
        assert result.returncode != 0 and "max_rejection_rate" in result.stderr, result.stderr[-2000:]
    assert quiet.stderr.startswith("synthmed: ") and "Traceback (most recent call last)" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr
