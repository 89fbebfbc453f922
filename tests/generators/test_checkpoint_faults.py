"""Checkpoints under faults: a full disk loses no finished work, a broken newest checkpoint
falls back to the older valid one, and leftovers of killed saves are cleaned at start."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from synthmed.generators import common
from synthmed.generators.common import CheckpointWriteError, verify_checksums, write_checksums, write_generator_files
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.training import (
    TRAINER_STATE,
    checkpoint_dirs,
    restore_latest,
    save_checkpoint,
)
from tests.generators.test_training import TINY, Stop, _dead_pid, _train, assert_same_weights, stop_at


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ------------------------------------------------------------------ full disk


def test_a_full_disk_during_a_save_raises_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    models, _ = _train(tmp_path, steps=4, checkpoint_every=0)
    (previous,) = checkpoint_dirs(tmp_path)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    monkeypatch.setattr(common, "save_file", _enospc)
    spec, config = get_family("dcgan"), config_from_params("dcgan", TINY["dcgan"])

    with pytest.raises(CheckpointWriteError) as caught:
        save_checkpoint(tmp_path, 8, spec, config, models, {"step": 8, "optimizers": {}, "generator": []}, keep=1)

    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    needed = common.state_nbytes(models)
    assert error.needed >= needed > 0 and error.free is not None and error.free > 0
    message = str(error)
    assert "step-000000008" in message and str(tmp_path) in message
    assert f"needs about {error.needed} bytes" in message and "free on that filesystem" in message
    assert not list(tmp_path.glob(".step-*"))  # the temporary folder is gone
    assert checkpoint_dirs(tmp_path) == [previous]
    verify_checksums(previous)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before


def test_too_little_free_space_fails_before_writing_anything(tmp_path, monkeypatch):
    models, _ = _train(tmp_path / "run", steps=2, checkpoint_every=0)
    monkeypatch.setattr("synthmed.generators.training.free_bytes", lambda path: 1000)
    monkeypatch.setattr(common, "free_bytes", lambda path: 1000)
    spec, config = get_family("dcgan"), config_from_params("dcgan", TINY["dcgan"])
    with pytest.raises(CheckpointWriteError, match="free on that filesystem: 1000 bytes") as caught:
        save_checkpoint(tmp_path / "ckpt", 2, spec, config, models, {"step": 2}, keep=1)
    assert caught.value.errno == errno.ENOSPC
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_torch_reporting_a_full_disk_as_a_runtime_error_is_a_write_error(tmp_path, monkeypatch):
    """torch's zip writer reports ENOSPC as ``RuntimeError: ... unexpected pos 76800``."""
    models, _ = _train(tmp_path / "run", steps=2, checkpoint_every=0)

    def unexpected_pos(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 76800 vs 76736")

    monkeypatch.setattr(common, "save_file", unexpected_pos)
    monkeypatch.setattr(common, "free_bytes", lambda path: 10)  # the disk is full
    with pytest.raises(CheckpointWriteError, match="unexpected pos 76800"):
        write_generator_files(tmp_path, "dcgan", config_from_params("dcgan", TINY["dcgan"]), models)
    monkeypatch.setattr(common, "free_bytes", lambda path: 10**12)  # plenty of space: a bug, not a full disk
    with pytest.raises(RuntimeError, match="unexpected pos") as caught:
        write_generator_files(tmp_path, "dcgan", config_from_params("dcgan", TINY["dcgan"]), models)
    assert not isinstance(caught.value, CheckpointWriteError)


def test_a_full_disk_at_the_final_checkpoint_still_returns_the_models_and_a_rerun_recovers(
        tmp_path, monkeypatch, caplog):
    straight, _ = _train(tmp_path / "straight", steps=8, checkpoint_every=4)
    root = tmp_path / "full"
    real_write_checksums = common.write_checksums
    calls = []

    def full_at_second_save(folder):
        calls.append(folder)
        if len(calls) == 2:  # the final checkpoint (step 8); step 4 was saved
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "checksums.json"))
        real_write_checksums(folder)

    monkeypatch.setattr("synthmed.generators.training.write_checksums", full_at_second_save)
    with caplog.at_level(logging.WARNING):
        models, history = _train(root, steps=8, checkpoint_every=4)
    assert_same_weights(straight, models)  # the finished work came back to the caller
    assert [r["step"] for r in history] == [5, 8]
    warning = next(r.getMessage() for r in caplog.records if "NOT saved" in r.getMessage())
    assert str(root / "step-000000008") in warning and "No space left on device" in warning
    assert [d.name for d in checkpoint_dirs(root)] == ["step-000000004"]
    assert not list(root.glob(".step-*"))

    monkeypatch.undo()  # space freed: the rerun resumes from step 4 and matches
    trained = []
    rerun, history = _train(root, steps=8, checkpoint_every=4, on_step=trained.append)
    assert trained[0] == 5
    assert_same_weights(straight, rerun)
    assert [d.name for d in checkpoint_dirs(root)] == ["step-000000008"]


def test_write_generator_files_names_the_folder_on_a_full_disk(tmp_path, monkeypatch):
    """The Kedro GeneratorDataset saves the model through write_generator_files."""
    models = get_family("dcgan").build(config_from_params("dcgan", TINY["dcgan"]), 0)
    monkeypatch.setattr(common, "save_file", _enospc)
    with pytest.raises(CheckpointWriteError, match=str(tmp_path)) as caught:
        write_generator_files(tmp_path, "dcgan", config_from_params("dcgan", TINY["dcgan"]), models)
    assert caught.value.errno == errno.ENOSPC and caught.value.needed == common.state_nbytes(models)



@pytest.mark.parametrize("preflight", ["free-space-check", "write-fails-midway"])
def test_a_real_full_disk(small_disk, tmp_path, caplog, monkeypatch, preflight):
    small_tmpfs = small_disk("300k")
    """A checkpoint of this model is ~206 KB on a 300 KiB filesystem: step 4 fits, step 8
    does not (step 4 is only removed after step 8 verifies). Either the free-space check
    refuses it, or (check disabled) the write itself hits ENOSPC. Then the disk grows and a
    rerun finishes from step 4."""
    if preflight == "write-fails-midway":
        monkeypatch.setattr("synthmed.generators.training.free_bytes", lambda path: None)
    straight, _ = _train(tmp_path / "straight", steps=8, checkpoint_every=4)
    with caplog.at_level(logging.WARNING):
        models, _ = _train(small_tmpfs, steps=8, checkpoint_every=4)
    assert_same_weights(straight, models)
    (warning,) = [r.getMessage() for r in caplog.records if "NOT saved" in r.getMessage()]
    assert "step-000000008" in warning and "needs about" in warning and "free on that filesystem" in warning
    assert not list(small_tmpfs.glob(".step-*"))
    assert [d.name for d in checkpoint_dirs(small_tmpfs)] == ["step-000000004"]
    verify_checksums(small_tmpfs / "step-000000004")

    subprocess.run(["mount", "-o", "remount,size=2m", str(small_tmpfs)], check=True)
    trained = []
    rerun, history = _train(small_tmpfs, steps=8, checkpoint_every=4, on_step=trained.append)
    assert trained[0] == 5
    assert_same_weights(straight, rerun)
    assert [d.name for d in checkpoint_dirs(small_tmpfs)] == ["step-000000008"]


# ------------------------------------------------------------------ fallback


def _reseal(folder: Path) -> None:
    """Rewrite checksums.json so that only the loader, not the checksums, can catch the fault."""
    (folder / "checksums.json").unlink()
    write_checksums(folder)


def _bad_weights_checksum(folder: Path) -> None:
    (folder / "generator.safetensors").write_bytes(b"corrupt")


def _weights_not_safetensors(folder: Path) -> None:
    (folder / "generator.safetensors").write_bytes(b"not a safetensors file at all")
    _reseal(folder)


def _weights_of_another_shape(folder: Path) -> None:
    save_file({"embed.weight": torch.zeros(3, 3)}, folder / "generator.safetensors")
    _reseal(folder)


def _trainer_state_garbage(folder: Path) -> None:
    (folder / TRAINER_STATE).write_bytes(b"\x80\x04garbage")
    _reseal(folder)


def _optimizer_state_of_another_shape(folder: Path) -> None:
    state = torch.load(folder / TRAINER_STATE, weights_only=True)
    moments = state["optimizers"]["generator"]["state"][0]
    moments["exp_avg"] = torch.zeros(2, 2)
    torch.save(state, folder / TRAINER_STATE)
    _reseal(folder)


def _optimizer_missing(folder: Path) -> None:
    state = torch.load(folder / TRAINER_STATE, weights_only=True)
    del state["optimizers"]["discriminator"]
    torch.save(state, folder / TRAINER_STATE)
    _reseal(folder)


def _manifest_not_json(folder: Path) -> None:
    (folder / "generator.json").write_text("{not json")
    _reseal(folder)


def _manifest_of_another_config(folder: Path) -> None:
    manifest = json.loads((folder / "generator.json").read_text())
    manifest["config"]["latent_dim"] = 99
    (folder / "generator.json").write_text(json.dumps(manifest))
    _reseal(folder)


def _history_not_json(folder: Path) -> None:
    (folder / "history.json").write_text("[{")
    _reseal(folder)


def _checksums_missing(folder: Path) -> None:
    (folder / "checksums.json").unlink()


def _checksums_empty(folder: Path) -> None:
    (folder / "checksums.json").write_text("")


def _checksums_not_json(folder: Path) -> None:
    (folder / "checksums.json").write_text("{\"generator.json\": ")


def _checksums_a_list(folder: Path) -> None:
    (folder / "checksums.json").write_text("[1, 2]")


FAULTS = {
    "weights-checksum-mismatch": (_bad_weights_checksum, "does not match its checksum"),
    "weights-not-safetensors": (_weights_not_safetensors, "SafetensorError"),
    "weights-other-shape": (_weights_of_another_shape, "size mismatch"),
    "trainer-state-garbage": (_trainer_state_garbage, "trainer_state.pt"),
    "optimizer-moment-shape": (_optimizer_state_of_another_shape, "exp_avg"),
    "optimizer-missing": (_optimizer_missing, "discriminator"),
    "manifest-not-json": (_manifest_not_json, "JSONDecodeError"),
    "manifest-other-config": (_manifest_of_another_config, "generator.json"),
    "history-not-json": (_history_not_json, "JSONDecodeError"),
    "checksums-missing": (_checksums_missing, "checksums.json"),
    "checksums-empty": (_checksums_empty, "checksums.json is unreadable: not valid JSON"),
    "checksums-not-json": (_checksums_not_json, "checksums.json is unreadable: not valid JSON"),
    "checksums-a-list": (_checksums_a_list, "checksums.json is unreadable: expected a JSON object, found list"),
}


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run killed after its step-8 checkpoint (step-4 kept too), and the uninterrupted run."""
    base = tmp_path_factory.mktemp("two")
    with pytest.raises(Stop):
        _train(base / "run", steps=12, checkpoint_every=4, keep=2, on_step=stop_at(9))
    straight, _ = _train(base / "straight", steps=12, checkpoint_every=4)
    return base / "run", straight


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_broken_newest_checkpoint_falls_back_to_the_older_valid_one(two_checkpoints, tmp_path, fault, caplog):
    source, straight = two_checkpoints
    root = tmp_path / "run"
    shutil.copytree(source, root)
    assert [d.name for d in checkpoint_dirs(root)] == ["step-000000008", "step-000000004"]
    breaker, what = FAULTS[fault]
    breaker(root / "step-000000008")
    spec, config = get_family("dcgan"), config_from_params("dcgan", TINY["dcgan"])

    with caplog.at_level(logging.WARNING):
        restored = restore_latest(root, spec, config, seed=3)
    assert restored is not None and restored.folder.name == "step-000000004"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(root / "step-000000008") in warning and what in warning

    # And the trainer itself resumes from step 4 and ends where an uninterrupted run does.
    trained = []
    models, history = _train(root, steps=12, checkpoint_every=4, keep=2, on_step=trained.append)
    assert trained[0] == 5
    assert_same_weights(straight, models)
    assert [r["step"] for r in history] == [5, 10, 12]


# ------------------------------------------------------------------ leftovers


def test_temporary_folders_of_dead_processes_are_removed_at_start(tmp_path):
    stale = [tmp_path / f".step-000000004.tmp-{_dead_pid()}", tmp_path / f".step-000000004.old-{_dead_pid()}"]
    live = tmp_path / ".step-000000004.tmp-1"  # pid 1 exists: another process may be saving
    for folder in (*stale, live):
        folder.mkdir()
        (folder / "generator.safetensors").write_bytes(b"half")
    seen = []

    def look(step: int) -> None:
        if step == 1:  # before any save of this run: only the start-up cleanup can have run
            seen.append(sorted(p.name for p in tmp_path.glob(".step-*")))

    _train(tmp_path, steps=2, checkpoint_every=0, on_step=look)
    assert seen == [[live.name]]
