"""End to end, as a user runs it: `dvc repro` in a copy of the project, `dvc push`, a
teammate's clone with `dvc pull`; the sentinel DICOM through `kedro run`; a missing key.

These tests run Kedro and DVC as subprocesses in temporary copies of the working tree
(tracked and untracked, not ignored, files), with the tiny `test` configuration.
"""

from __future__ import annotations

import filecmp
import json
import secrets
import sqlite3
import string
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ct_instance, project_copy, sh
from tests.dicom_factory import dicom_bytes, make_sentinel_dicom

pytestmark = pytest.mark.slow
def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_dvc_repro_push_and_teammate_pull_are_byte_identical(tmp_path, reproduced_project):
    remote = tmp_path / "remote"
    first = reproduced_project  # `dvc repro` and a commit of its outputs (conftest)
    sh("dvc", "remote", "add", "--local", "-d", "test", str(remote), cwd=first)
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=first).stdout
    sh("dvc", "push", cwd=first)

    # The cohort's bad files are quarantined with their reasons, and the counts conserve.
    rejected = (first / "data/02_intermediate/ingestion/rejected.csv").read_text()
    assert "bad/truncated_dicom/IM0001.dcm,dicom,truncated," in rejected
    assert "bad/nifti_mask_mismatch/bad_T1w.nii.gz,nifti,mask_mismatch," in rejected
    assert ",dicom,inconsistent_series,uneven instances spacing" in rejected
    counts = yaml.safe_load((first / "data/08_reporting/ingestion_metrics.json").read_text())
    # Every file of the cohort but its own checksum list (.synthmed-checksums.json, not a source file).
    sample_files = sum(1 for path in (first / "data/01_raw/cohort").rglob("*")
                       if path.is_file() and not path.name.startswith("."))
    assert counts["files_found"] == sample_files
    assert (counts["files_read"] == counts["files_found"] - counts["files_ignored"] - counts["files_non_image"]
            == counts["files_accepted"] + counts["files_rejected"])
    assert counts["rejected_truncated"] == 1 and counts["rejected_mask_mismatch"] == 2  # the image and its mask
    assert counts["files_rejected"] == sum(v for k, v in counts.items() if k.startswith("rejected_")) > 3

    # Every Kedro run of the four stages reached MLflow with its parameters and counts, and ended.
    db = sqlite3.connect(first / "mlflow.db")
    runs = db.execute("select name, status from runs").fetchall()
    assert sorted(name for name, _ in runs) == ["evaluation", "extraction", "feature_encoders", "ingestion",
                                                 "preprocessing", "rebalancing", "release", "sample_cohort", "sampling",
                                                 "training"]
    assert {status for _, status in runs} == {"FINISHED"}
    # Each run carries the commit it was built from; the experiment opens on model development in
    # the MLflow UI; the reader study's answer key is no MLflow artifact.
    commits = {value for (value,) in db.execute("select value from tags where key = 'mlflow.source.git.commit'")}
    assert commits == {sh("git", "rev-parse", "HEAD~1", cwd=first).stdout.strip()}  # before "outputs"
    assert db.execute("select count(*) from tags where key = 'synthmed.dvc_lock_sha256'").fetchone()[0] == len(runs)
    kind = db.execute("select value from experiment_tags where key = 'mlflow.experimentKind'").fetchall()
    assert kind == [("custom_model_development",)]
    assert not [p for p in first.rglob("answer_key.csv") if "data" not in p.relative_to(first).parts]
    logged = dict(db.execute(
        "select r.name, count(p.key) from runs r join params p on p.run_uuid = r.run_uuid group by r.name").fetchall())
    assert all(logged.get(name, 0) > 0 for name in ("ingestion", "preprocessing", "extraction"))
    metric = db.execute("select value from metrics where key = 'ingestion.files_rejected'").fetchone()
    assert metric == (float(counts["files_rejected"]),)
    losses = db.execute("select count(*) from metrics where key like 'ddpm.loss'").fetchone()[0]
    assert losses >= 2  # the training loss history reached MLflow

    # dvc metrics (metrics.json) and the MLflow evaluation run hold the same numbers under the
    # same names, and the report reached MLflow as an artifact.
    evaluation = json.loads((first / "data/08_reporting/metrics.json").read_text())
    (run_id,) = db.execute("select run_uuid from runs where name = 'evaluation'").fetchone()
    in_mlflow = dict(db.execute("select key, value from latest_metrics where run_uuid = ?", (run_id,)).fetchall())
    assert len(evaluation) > 100 and {k: in_mlflow.get(k) for k in evaluation} == pytest.approx(evaluation)
    assert [p for p in first.rglob("report.html") if "data" not in p.relative_to(first).parts]

    # The published, rebalanced dataset is among the pulled outputs (checked below) and balanced;
    # its release carries the evaluation headline in its card, and every released generator is a
    # version of its registered model.
    labels = (first / "data/07_model_output/rebalanced/labels.csv").read_text().splitlines()
    assert labels[0].startswith("path,label,class_id,is_synthetic")
    assert "## Evaluation headline" in (first / "data/09_release/dataset/README.md").read_text()
    registered = {name for (name,) in db.execute("select name from model_versions")}
    assert registered == {"synthmed-ddpm", "synthmed-pix2pix", "synthmed-dcgan"}

    second = tmp_path / "second"
    sh("git", "clone", "-q", str(first), str(second), cwd=tmp_path)
    sh("dvc", "remote", "add", "--local", "-d", "test", str(remote), cwd=second)
    pull = sh("dvc", "pull", cwd=second, check=False)

    stages = yaml.safe_load((first / "dvc.yaml").read_text())["stages"]
    pushed, private = [], []
    for stage in stages.values():
        for out in stage.get("outs", []):
            name, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            (private if options.get("push") is False else pushed).append(name)
    assert pushed and private
    for out in pushed:
        a, b = first / out, second / out
        if a.is_file():  # a single-file out (the report, the comparison table)
            assert b.is_file() and a.read_bytes() == b.read_bytes(), out
            continue
        assert _files(a) == _files(b) and _files(a), out
        mismatch = filecmp.cmpfiles(a, b, [str(p) for p in _files(a)], shallow=False)[1:]
        assert mismatch == ([], []), f"{out}: {mismatch}"
    for out in private:
        # Identifiable outputs never reach the remote, so a teammate cannot pull them.
        assert not (second / out).exists() or not _files(second / out), out
    assert pull.returncode != 0 or "01_raw" not in pull.stdout


def test_sentinel_reaches_no_byte_written(tmp_path):
    """docs/privacy.md acceptance: a DICOM with a sentinel in every Table E.1-1 text attribute (top
    level, two sequence levels deep, private tags) goes through ingestion + preprocessing;
    the sentinel appears in no file written: data, tables, PNGs, MLflow store, logs."""
    sentinel = "QZ" + "".join(secrets.choice(string.ascii_uppercase) for _ in range(8))
    project = project_copy(tmp_path / "project")
    source = project / "data/01_raw/sentinel_case"
    source.mkdir(parents=True)
    (source / "case.dcm").write_bytes(
        dicom_bytes(make_sentinel_dicom(sentinel, patient_id=f"ID-{sentinel}", rows=16, cols=16)))
    series, study = "1.2.826.0.1.3680043.8.498.77", "1.2.826.0.1.3680043.8.498.78"
    for k in range(3):
        (source / f"series_{k}.dcm").write_bytes(dicom_bytes(ct_instance(2.0 * k, series_uid=series, study_uid=study,
                                                                         patient_id=f"ID-{sentinel}-2")))
    local = project / "conf/local"
    (local / "catalog.yml").write_text(
        "raw_sources:\n  type: synthmed.datasets.FileFolderDataset\n  path: data/01_raw/sentinel_case\n")
    (local / "parameters_ingestion.yml").write_text("ingestion:\n  labels_csv: null\n")
    (local / "credentials.yml").write_text("pseudonymisation:\n  key: a-secret-key-for-the-sentinel-test\n")

    run = sh("kedro", "run", "--pipelines", "ingestion,preprocessing", cwd=project, local_env=True)
    (project / "run.log").write_text(run.stdout + run.stderr)

    written = [p for p in project.rglob("*") if p.is_file()
               and not p.is_relative_to(source) and not p.is_relative_to(project / ".git")
               and (p.is_relative_to(project / "data") or p.suffix in (".db", ".log") or "mlruns" in p.parts
                    or "mlartifacts" in p.parts)]
    assert any(p.suffix == ".dcm" for p in written) and any(p.name == "mlflow.db" for p in written)
    needles = [sentinel.encode(), sentinel.lower().encode(), "".join(str(ord(c)) for c in sentinel).encode()]
    leaks = [str(p.relative_to(project)) for p in written for n in needles if n in p.read_bytes()]
    assert leaks == []


def test_missing_key_stops_before_anything_is_written(tmp_path):
    project = project_copy(tmp_path / "project")
    mine = project / "data/01_raw/mine"
    mine.mkdir(parents=True)
    (mine / "a.dcm").write_bytes(dicom_bytes(ct_instance(0.0, series_uid="1.2.3.4", study_uid="1.2.3")))
    (project / "conf/local/catalog.yml").write_text(
        "raw_sources:\n  type: synthmed.datasets.FileFolderDataset\n  path: data/01_raw/mine\n")
    (project / "conf/local/parameters_ingestion.yml").write_text("ingestion:\n  labels_csv: null\n")
    before = _files(project / "data")

    run = sh("kedro", "run", "--pipelines", "ingestion", cwd=project, check=False, local_env=True)

    assert run.returncode != 0
    assert "No pseudonymisation key is configured" in run.stdout + run.stderr
    assert "conf/local/credentials.yml" in run.stdout + run.stderr
    assert _files(project / "data") == before
    if (project / "mlflow.db").exists():
        assert sqlite3.connect(project / "mlflow.db").execute("select count(*) from runs").fetchone() == (0,)


def test_a_fresh_clone_runs_the_data_pipelines_with_the_sample_in_one_command(tmp_path):
    """No key is needed for the public cohort: sample_cohort writes the folder ingestion reads, in order
    (the test profile's small cohort; conf/base's is the same code at 20 subjects)."""
    project = project_copy(tmp_path / "project")
    assert not (project / "conf/local/credentials.yml").exists()
    sh("kedro", "run", "--pipelines", "sample_cohort,ingestion,preprocessing,extraction", "--params",
       "sample_cohort.n_subjects=4", cwd=project)
    assert (project / "data/01_raw/cohort/SAMPLE_MANIFEST.json").is_file()
    assert (project / "data/05_model_input/slices/arrays/index.json").is_file()
    assert (project / "data/05_model_input/patches/arrays/index.json").is_file()


def test_the_sample_never_replaces_your_own_data(tmp_path):
    """With raw_sources pointed at your own folder, sample_cohort writes the cohort to its own folder only."""
    project = project_copy(tmp_path / "project")
    mine = project / "data/01_raw/mine"
    mine.mkdir(parents=True)
    (mine / "a.dcm").write_bytes(b"not the sample")
    (project / "conf/local/catalog.yml").write_text(
        "raw_sources:\n  type: synthmed.datasets.FileFolderDataset\n  path: data/01_raw/mine\n")
    sh("kedro", "run", "--pipelines", "sample_cohort", "--params",
       "sample_cohort.n_subjects=3,sample_cohort.spacing_mm=4", cwd=project, local_env=True)
    assert (project / "data/01_raw/cohort/SAMPLE_MANIFEST.json").is_file()
    assert _files(mine) == [Path("a.dcm")] and (mine / "a.dcm").read_bytes() == b"not the sample"


def _published_after_one_run(tmp_path: Path, ingestion_yml: str, key: str) -> tuple[Path, dict[Path, bytes]]:
    """A project copy reading 3 CT files of its own, after one ingestion + preprocessing run:
    the project and every file of its published primary layer."""
    project = project_copy(tmp_path / "project")
    mine = project / "data/01_raw/mine"
    mine.mkdir(parents=True)
    series, study = "1.2.826.0.1.3680043.8.498.91", "1.2.826.0.1.3680043.8.498.92"
    for k in range(3):
        (mine / f"s{k}.dcm").write_bytes(dicom_bytes(ct_instance(2.0 * k, series_uid=series, study_uid=study)))
    local = project / "conf/local"
    (local / "catalog.yml").write_text(
        "raw_sources:\n  type: synthmed.datasets.FileFolderDataset\n  path: data/01_raw/mine\n")
    (local / "parameters_ingestion.yml").write_text(ingestion_yml)
    (local / "credentials.yml").write_text(f"pseudonymisation:\n  key: {key}\n")
    sh("kedro", "run", "--pipelines", "ingestion,preprocessing", cwd=project, local_env=True)
    published = {p: p.read_bytes() for p in (project / "data/03_primary").rglob("*") if p.is_file()}
    assert any(p.suffix == ".dcm" for p in published)
    return project, published


def test_a_run_over_the_rejection_limit_leaves_the_published_primary_layer_intact(tmp_path):
    """Item 5 of issue 9: whatever order Kedro runs the nodes in, the de-identified copies and
    preprocessed arrays of a run that fails a check never replace the previous ones."""
    project, before = _published_after_one_run(
        tmp_path, "ingestion:\n  labels_csv: null\n  max_rejection_rate: 0.3\n", "a-secret-key-for-the-staging-test")
    primary, mine = project / "data/03_primary", project / "data/01_raw/mine"

    for k in range(3):  # 3 of 6 files rejected: rate 0.5 > 0.3
        (mine / f"broken{k}.dcm").write_bytes(b"DICM but not really" * 3)
    run = sh("kedro", "run", "--pipelines", "ingestion,preprocessing", cwd=project, check=False, local_env=True)

    assert run.returncode != 0 and "max_rejection_rate" in run.stdout + run.stderr
    # Issue 12 item 9: synthmed's own check ends the run as its message, the traceback is in the log file.
    assert run.stderr.startswith("synthmed: ") and "max_rejection_rate" in run.stderr, run.stderr
    assert "Traceback (most recent call last)" not in run.stdout + run.stderr
    assert "Traceback (most recent call last)" in (project / "logs/synthmed.log").read_text()
    assert {p: p.read_bytes() for p in primary.rglob("*") if p.is_file()} == before
    assert not [p for p in (project / "data/.staging").rglob("*") if p.is_file()]


def test_a_failure_after_the_copies_are_written_keeps_the_previous_copies(tmp_path):
    """The de-identified copies are saved before the split is assigned; when a later
    preprocessing node fails, the copies of that run (another key: other names) are discarded.

    The run is a Kedro session in a subprocess whose split node is replaced by one that fails
    (in this process, MLflow's and Kedro's global state would leak into later tests)."""
    project, before = _published_after_one_run(tmp_path, "ingestion:\n  labels_csv: null\n",
                                               "the-first-secret-key-of-this-test")
    primary, local = project / "data/03_primary", project / "conf/local"
    (local / "credentials.yml").write_text("pseudonymisation:\n  key: the-second-secret-key-of-this-test\n")
    script = (
        "from pathlib import Path\n"
        "from kedro.framework.session import KedroSession\n"
        "from kedro.framework.startup import bootstrap_project\n"
        "import synthmed.pipelines.preprocessing.nodes as preprocessing\n"  # nodes are looked up when they run
        "def failing_split(*args, **kwargs):\n"
        "    raise RuntimeError('the split failed after the copies were saved')\n"
        "preprocessing.assign_item_splits = failing_split\n"
        "bootstrap_project(Path.cwd())\n"
        "with KedroSession.create(project_path=Path.cwd()) as session:\n"
        "    session.run(pipeline_names=['ingestion', 'preprocessing'])\n"
    )
    run = sh(sys.executable, "-c", script, cwd=project, check=False, local_env=True)

    assert run.returncode != 0 and "the split failed" in run.stdout + run.stderr
    assert {p: p.read_bytes() for p in primary.rglob("*") if p.is_file()} == before
    assert not [p for p in (project / "data/.staging").rglob("*") if p.is_file()]
