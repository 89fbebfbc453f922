"""Ingestion + preprocessing on pydicom's bundled test files (material synthmed did not write).

About 176 files: every transfer syntax pydicom tests, broken files on purpose, structured
reports, RT objects, a DICOMDIR. The run must finish and account for every file.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _tool():
    spec = importlib.util.spec_from_file_location("public_collections", PROJECT_ROOT / "tools/public_collections.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_whole_pydicom_collection_runs_and_every_file_is_accounted_for(tmp_path):
    tool = _tool()
    result = tool.run_collection("pydicom", tmp_path)
    assert result["returncode"] == 0, result.get("error")
    metrics = result["metrics"]
    assert result["accounted"] and metrics["files_found"] == result["files"]
    assert metrics["files_read"] == metrics["files_accepted"] + metrics["files_rejected"]
    assert metrics["files_found"] == metrics["files_ignored"] + metrics["files_read"]
    assert metrics["files_accepted"] > 0
