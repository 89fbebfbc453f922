"""Teammates share through a real remote: a WebDAV server on the loopback interface.

One clone runs the stages and pushes with ``synthmed push``; a second clone, with another
home directory (no cache, no default local remote), pulls with ``synthmed pull`` and gets
the shareable outputs byte for byte, while the ``push: false`` raw output stays on the
first machine. ``dvc get`` of the published folder from the repository works the same way.
The server is WsgiDAV (a test dependency), started here and stopped at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthmed.core.dvc_outputs import shareable_outputs

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

DVC_YAML = """\
stages:
  ingest:
    cmd: mkdir -p data/01_raw/study && printf 'PATIENT SNTLQZ header' > data/01_raw/study/a.dcm
    outs:
      - data/01_raw/study:
          push: false
  publish:
    cmd: >-
      mkdir -p data/07_model_output/published/lesion &&
      python -c "import os; open('data/07_model_output/published/lesion/0001.png', 'wb').write(os.urandom(4096))"
    deps:
      - data/01_raw/study
    outs:
      - data/07_model_output/published
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webdav(tmp_path: Path) -> Iterator[str]:
    """A WsgiDAV server on 127.0.0.1 serving an empty folder; its ``webdav://`` URL."""
    served = tmp_path / "served"
    (served / "dvc-store").mkdir(parents=True)  # the remote's folder, made by whoever runs the server
    port = _free_port()
    server = subprocess.Popen([str(BIN / "wsgidav"), "--host", "127.0.0.1", "--port", str(port), "--root",
                               str(served), "--auth", "anonymous", "--no-config", "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # the server answers (any status): it is up
            except OSError as exc:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"wsgidav did not start: {server.stderr.read().decode(errors='replace')}") from exc
                time.sleep(0.2)
        yield f"webdav://127.0.0.1:{port}/dvc-store"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT / "src"), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def _run(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, env=_env(home), capture_output=True, text=True, timeout=300)


def _ok(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    done = _run(*args, cwd=cwd, home=home)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_push_from_one_clone_pull_into_another_home_and_dvc_get(tmp_path: Path, webdav: str) -> None:
    dvc, synthmed = str(BIN / "dvc"), [sys.executable, "-m", "synthmed"]
    first, home_a = tmp_path / "first", tmp_path / "home-a"
    first.mkdir()
    _ok("git", "init", "-q", cwd=first, home=home_a)
    _ok(dvc, "init", "-q", cwd=first, home=home_a)
    _ok(dvc, "remote", "add", "-d", "shared", webdav, cwd=first, home=home_a)
    (first / "dvc.yaml").write_text(DVC_YAML)
    _ok(dvc, "repro", "-q", cwd=first, home=home_a)
    _ok("git", "add", "-A", cwd=first, home=home_a)
    _ok("git", "commit", "-qm", "stages", cwd=first, home=home_a)
    _ok(*synthmed, "push", cwd=first, home=home_a)
    assert shareable_outputs(first) == ["data/07_model_output/published"]

    second, home_b = tmp_path / "second", tmp_path / "home-b"
    _ok("git", "clone", "-q", str(first), str(second), cwd=tmp_path, home=home_b)
    bare = _run(dvc, "pull", cwd=second, home=home_b)
    assert bare.returncode != 0  # asks for the push: false raw folder, which no remote holds
    pulled = _ok(*synthmed, "pull", cwd=second, home=home_b)
    published = "data/07_model_output/published"
    assert _files(second / published) == _files(first / published) and _files(first / published)
    assert not (second / "data/01_raw/study").exists(), pulled.stdout  # raw data stays on the first machine
    status = _ok(dvc, "status", published, cwd=second, home=home_b).stdout
    assert "changed outs" not in status and "data/01_raw/study" in status  # only the raw input is absent

    got = tmp_path / "got"
    _ok(dvc, "get", str(first), published, "-o", str(got), cwd=tmp_path, home=tmp_path / "home-c")
    assert _files(got) == _files(first / published)


def test_pull_help_and_refusal_outside_a_project(tmp_path: Path) -> None:
    synthmed = [sys.executable, "-m", "synthmed"]
    shown = _run(*synthmed, "pull", "--help", cwd=tmp_path, home=tmp_path / "home")
    assert shown.returncode == 0 and "push: false" in shown.stdout
    refused = _run(*synthmed, "pull", cwd=tmp_path, home=tmp_path / "home")
    assert refused.returncode == 2 and "no dvc.yaml" in refused.stderr
