"""A failed command ends with synthmed's own error message first; other errors keep their traceback."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from synthmed.core import console
from synthmed.core.config import from_params
from synthmed.core.splits import SplitLeakageError


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError("nothing was raised")


def test_synthmed_error_classes_and_synthmed_value_errors_are_own_errors() -> None:
    assert console.is_own_error(SplitLeakageError("x"))  # defined in synthmed
    assert console.is_own_error(_raised(lambda: from_params(_dataclass(), {"sise": 2}, "block")))  # raised by synthmed
    assert not console.is_own_error(_raised(lambda: int("not a number")))  # a ValueError raised here, not by synthmed
    assert not console.is_own_error(_raised(lambda: {}["missing"]))  # a KeyError is a bug, not a check


def test_own_errors_print_their_message_and_log_the_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv(console.TRACEBACK_ENV, raising=False)
    handler = logging.FileHandler(tmp_path / "run.log")
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])  # the log file of conf/logging.yml
    try:
        exc = _raised(lambda: from_params(_dataclass(), {"sise": 2}, "ddpm.training"))
        console._excepthook(type(exc), exc, exc.__traceback__)
    finally:
        handler.close()
    err = capsys.readouterr().err
    assert err.startswith("synthmed: ValueError: ") and "sise" in err and "ddpm.training" in err
    assert "Traceback (most recent call last)" not in err and "run.log" in err and console.TRACEBACK_ENV in err
    assert "Traceback (most recent call last)" in (tmp_path / "run.log").read_text()


def test_other_errors_and_the_environment_switch_keep_the_full_traceback(capsys, monkeypatch) -> None:
    shown = []
    monkeypatch.setattr(sys, "__excepthook__", lambda *args: shown.append(args[0]))
    bug = _raised(lambda: {}["missing"])
    console._excepthook(type(bug), bug, bug.__traceback__)
    monkeypatch.setenv(console.TRACEBACK_ENV, "1")
    own = SplitLeakageError("patient p1 is in two splits")
    console._excepthook(type(own), own, None)
    assert shown == [KeyError, SplitLeakageError] and capsys.readouterr().err == ""


def _dataclass() -> type:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Training:
        steps: int = 1

    return Training


@pytest.fixture(autouse=True)
def _keep_hook(monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
