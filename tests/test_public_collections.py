"""Ingestion + preprocessing on pydicom's bundled test files (material synthmed did not write).

About 176 files: every transfer syntax pydicom tests, broken files on purpose, structured
reports, RT objects, a DICOMDIR. The run must finish and account for every file.
"""

from __future__ import annotations

import pytest

from tests.conftest import public_collections_tool

pytestmark = pytest.mark.slow


def test_the_whole_pydicom_collection_runs_and_every_file_is_accounted_for(tmp_path):
    tool = public_collections_tool()
    result = tool.run_collection("pydicom", tmp_path)
    assert result["returncode"] == 0, result.get("error")
    metrics = result["metrics"]
    assert result["accounted"] and metrics["files_found"] == result["files"]
    assert metrics["files_read"] == metrics["files_accepted"] + metrics["files_rejected"]
    assert metrics["files_found"] == metrics["files_ignored"] + metrics["files_read"]
    assert metrics["files_accepted"] > 0
