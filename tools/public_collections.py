"""Ingestion + preprocessing on public DICOM collections that install from the package index.

    python tools/public_collections.py [--collection pydicom|pydicom-data|both] [--keep DIR]

For each collection, the files are copied into ``data/01_raw/<collection>`` of a temporary
copy of this project (tracked and untracked, not ignored, files) and
``kedro run --pipelines ingestion,preprocessing`` runs on them with a throw-away key and
``ingestion.max_rejection_rate: 1.0`` (these collections are test files: many are broken on
purpose). It prints, per collection, whether the run finished, the counts per role and
reason (every file found must be ignored, accepted or rejected, once), and the
de-identification's quarantine reasons, as a Markdown table.

Collections: ``pydicom`` is the test files bundled with pydicom (``pydicom/data/test_files``);
``pydicom-data`` is the larger set of the ``pydicom-data`` package (``pip install
pydicom-data==1.0.0``, about 34 MB; not a dependency of synthmed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def collection_files(name: str) -> list[Path]:
    """The files of one collection (``pydicom`` or ``pydicom-data``)."""
    if name == "pydicom":
        import pydicom

        folder = Path(pydicom.__file__).parent / "data" / "test_files"
    elif name == "pydicom-data":
        try:
            import data_store
        except ImportError as exc:
            raise SystemExit("The pydicom-data collection needs `pip install pydicom-data==1.0.0`.") from exc
        folder = Path(data_store.__file__).parent / "data"
    else:
        raise SystemExit(f"Unknown collection {name!r}; expected pydicom or pydicom-data.")
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix not in (".py", ".pyc"))


def project_copy(target: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, files):
        source = ROOT / rel.decode()
        if source.is_file():
            (target / rel.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel.decode())
    return target


def run_collection(name: str, workdir: Path) -> dict:
    project = project_copy(workdir / name / "project")
    source = project / "data/01_raw" / name
    files = collection_files(name)
    root = _common_root(files)
    for path in files:
        (source / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, source / path.relative_to(root))
    local = project / "conf/local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "catalog.yml").write_text(
        f"raw_sources:\n  type: synthmed.datasets.FileFolderDataset\n  path: data/01_raw/{name}\n")
    (local / "parameters_ingestion.yml").write_text(
        "ingestion:\n  labels_csv: null\n  max_rejection_rate: 1.0\n")
    (local / "credentials.yml").write_text(
        "pseudonymisation:\n  key: public-collections-run-" + os.urandom(16).hex() + "\n")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "COLUMNS": "200"}
    kedro = Path(sys.executable).with_name("kedro")
    start = time.perf_counter()
    run = subprocess.run([str(kedro), "run", "--pipelines", "ingestion,preprocessing"], cwd=project, env=env,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (workdir / name / "run.log").write_text(run.stdout + run.stderr)
    result = {"collection": name, "files": len(files), "returncode": run.returncode, "seconds": round(seconds, 1)}
    inventory_path = project / "data/02_intermediate/ingestion/inventory.csv"
    if run.returncode != 0 or not inventory_path.is_file():
        result["error"] = (run.stdout + run.stderr)[-2000:]
        return result
    inventory = pd.read_csv(inventory_path, keep_default_na=False)
    rejected = pd.read_csv(project / "data/02_intermediate/ingestion/rejected.csv", keep_default_na=False)
    metrics = json.loads((project / "data/08_reporting/ingestion_metrics.json").read_text())
    quarantined = pd.read_csv(project / "data/03_primary/preprocessed/quarantined.csv", keep_default_na=False)
    ignored = inventory[inventory["role"].isin(["ignored", "labels"])]
    result.update(
        metrics={k: v for k, v in metrics.items() if not k.startswith("rejected_")},
        ignored=dict(Counter(ignored["reason"].replace("", "pattern"))),
        rejected=dict(Counter(rejected["reason"])),
        quarantined=dict(Counter(quarantined["reason"])),
        accounted=len(files) == metrics["files_found"],
    )
    return result


def _common_root(files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in files]))


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(f"### {r['collection']}: {r['files']} files, exit {r['returncode']}, {r['seconds']} s")
        if "error" in r:
            lines += ["", "```", r["error"], "```", ""]
            continue
        m = r["metrics"]
        lines += [
            "",
            f"found {m['files_found']} = ignored {m['files_ignored']} + read {m['files_read']}; "
            f"read = accepted {m['files_accepted']} ({m['items_accepted']} items) + rejected {m['files_rejected']}; "
            f"rejection rate {m['rejection_rate']}; every file accounted for: {r['accounted']}",
            "",
            "| outcome | reason | files |", "|---|---|---|",
            *[f"| ignored | {k} | {v} |" for k, v in sorted(r["ignored"].items())],
            *[f"| rejected | {k} | {v} |" for k, v in sorted(r["rejected"].items())],
            *[f"| quarantined (items) | {k} | {v} |" for k, v in sorted(r["quarantined"].items())],
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", choices=["pydicom", "pydicom-data", "both"], default="both")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    names = ["pydicom", "pydicom-data"] if args.collection == "both" else [args.collection]
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="synthmed-collections-"))
    results = [run_collection(name, workdir) for name in names]
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True))
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r["returncode"] == 0 and r.get("accounted") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
