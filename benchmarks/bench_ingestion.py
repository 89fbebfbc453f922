"""Ingestion + de-identification throughput against a plain pydicom loop and dicognito.

A folder of CT series is written from pydicom's ``CT_small.dcm`` (128 x 128, 16-bit,
explicit VR little endian, 39 KB): every series gets its own patient, study and series
UIDs, every instance its own SOP Instance UID, position and (shifted) pixels. On the same
files, interleaved ``--repeats`` times, it measures:

- ``synthmed``: the ingestion nodes (inventory, DICOM reader, combine), whose one pass per
  file reads, parses, decodes and de-identifies it, and saving what they return
  (``ArrayStoreDataset``: the ingested arrays; ``FileFolderDataset``: the de-identified
  candidate copies), then preprocessing's ``check_pixels`` and ``deidentify_sources`` nodes
  and saving the published copies (``FileFolderDataset``), with the base parameters, with 1
  and with 2 worker processes (``ingestion.workers``). Phases: ``one pass`` (ingestion with
  de-identification) and ``publication`` (pixel checks, copies promoted into the primary
  layer); and with ``SYNTHMED_DASK_SCHEDULER`` pointing at a local Dask cluster of 2
  single-threaded worker processes (``synthmed Dask 2 workers``; the cluster is started before
  the timings, its workers' CPU is read with psutil); the de-identification's share of the
  pass is measured alone (``deid in the pass``: ``deidentify`` + writing the copy, per file,
  on datasets parsed and decoded beforehand, one process);
- ``plain loop``: one process, per file ``dcmread`` + ``pixel_array`` + ``np.save`` (no
  de-identification, no checks, no series assembly);
- ``plain loop + copy``: the same, plus ``save_as`` of the dataset as read: the reading and
  writing that any pydicom pass producing pixels *and* a DICOM copy per file cannot avoid
  (no de-identification, no checks);
- ``dicognito``: one process, per file ``dcmread`` + ``Anonymizer.anonymize`` +
  ``save_as`` (de-identification only, no pixel decoding).

CPU time is user + system of the process and of its finished children (the pool's
workers); files/s and MB/s are over wall time. ``--rss`` runs synthmed alone in a fresh
process per folder size and reports its peak resident set size and its workers'.

    PYTHONPATH=src python benchmarks/bench_ingestion.py --files 400 --repeats 3
    PYTHONPATH=src python benchmarks/bench_ingestion.py --rss 100 1000
    PYTHONPATH=src python benchmarks/bench_ingestion.py --profile 300   # cProfile of synthmed, 1 worker
    PYTHONPATH=src python benchmarks/bench_ingestion.py --sizes 100 200 400 --repeats 2   # growth, 100,000 files

``--sizes`` compares the plain loop, synthmed with 1 and 2 processes and on a local Dask cluster
of 2 workers at each size, fits the growth exponent of wall and CPU time over the sizes and
extrapolates both to ``--extrapolate`` files (100,000). Kedro's ParallelRunner parallelises nodes,
and a folder's per-file work is one node, so it is measured apart, through ``kedro run`` (start-up
included) against the SequentialRunner with 1 and 2 ingestion workers:

    PYTHONPATH=src python benchmarks/bench_ingestion.py --runners 100 200 400 --mixed --repeats 2

dicognito (``dicognito==0.19.0``) is a benchmark-only dependency: ``pip install dicognito==0.19.0``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import yaml
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from synthmed.datasets.array_store import ArrayStoreDataset
from synthmed.datasets.file_folder import FileFolderDataset
from synthmed.imaging.readers import dicom_pixels
from synthmed.pipelines.ingestion import nodes as ingestion
from synthmed.pipelines.ingestion.dicom_pass import deidentify_copy
from synthmed.pipelines.preprocessing import nodes as preprocessing
from synthmed.pipelines.preprocessing.pixel_nodes import check_pixels
from synthmed.privacy.dicom_deid import DicomDeidConfig

ROOT = Path(__file__).resolve().parents[1]
SERIES_LENGTH = 50  # instances per series


def make_ct_folder(folder: Path, n_files: int, series_length: int = SERIES_LENGTH) -> None:
    """``n_files`` CT instances in series of ``series_length``, one patient per series."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = template.pixel_array
    z0 = float(template.ImagePositionPatient[2])
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_files):
        series, slice_index = divmod(index, series_length)
        if slice_index == 0:
            patient = f"BENCH{series:05d}"
            study_uid, series_uid = generate_uid(entropy_srcs=[patient, "study"]), generate_uid(
                entropy_srcs=[patient, "series"])
        ds = template.copy()
        ds.PatientID = patient
        ds.PatientName = f"BENCH^{series:05d}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[patient, str(slice_index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = slice_index + 1
        ds.ImagePositionPatient = [template.ImagePositionPatient[0], template.ImagePositionPatient[1],
                                   z0 + 5.0 * slice_index]
        ds.SliceLocation = z0 + 5.0 * slice_index
        ds.PixelData = np.roll(pixels, slice_index, axis=0).astype(pixels.dtype).tobytes()
        ds.save_as(_path(folder, series, slice_index), enforce_file_format=True)


def _path(folder: Path, series: int, slice_index: int) -> Path:
    path = folder / f"s{series:04d}" / f"i{slice_index:04d}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _params() -> dict[str, Any]:
    ingestion = yaml.safe_load((ROOT / "conf/base/parameters_ingestion.yml").read_text())["ingestion"]
    preprocessing_params = yaml.safe_load((ROOT / "conf/base/parameters_preprocessing.yml").read_text())
    deid = preprocessing_params["preprocessing"]["deid"]
    deid["date_shift_days"] = tuple(deid["date_shift_days"])
    pixels = preprocessing_params["preprocessing"].get("pixels")
    return {"ingestion": ingestion, "deid": deid, "pixels": pixels}


KEY = b"benchmark-key-0123456789abcdef!!"


def run_synthmed(source: Path, out: Path, workers: int, phases: dict[str, list[float]] | None = None) -> None:
    """Ingestion (one pass per file, de-identification included) and publication, as ``kedro run`` calls them.

    ``phases`` receives ``{"one pass": [wall, cpu], "publication": [wall, cpu]}``.
    """
    params = _params()
    ingest = {**params["ingestion"], "labels_csv": None, "workers": workers}
    phases = {} if phases is None else phases
    cpu, wall = _cpu(), time.perf_counter()
    raw = FileFolderDataset(path=str(source)).load()
    inventory = ingestion.inventory_sources(raw, ingest)
    labels = ingestion.read_label_table(raw, ingest)
    empty = ingestion.read_raster_items(raw, inventory.iloc[0:0], labels, KEY, ingest)
    dicom = ingestion.read_dicom_items(raw, inventory, labels, KEY, ingest, params["deid"])
    manifest, rejected, images, masks = ingestion.combine_ingestion(
        inventory, empty[0], empty[0], dicom[0], empty[1], empty[1], dicom[1], {}, {}, dicom[2])[:4]
    ArrayStoreDataset(path=str(out / "images")).save(images)
    ArrayStoreDataset(path=str(out / "masks")).save(masks)
    FileFolderDataset(path=str(out / "candidates")).save(dicom[3])
    candidate_items = dicom[4]
    del images, masks, dicom
    phases["one pass"] = [time.perf_counter() - wall, _cpu() - cpu]
    cpu, wall = _cpu(), time.perf_counter()
    stored = ArrayStoreDataset(path=str(out / "images")).load()
    stored_masks = ArrayStoreDataset(path=str(out / "masks")).load()
    candidates = FileFolderDataset(path=str(out / "candidates")).load()
    pixel_checks = check_pixels(manifest, stored, candidate_items, params["pixels"], params["deid"])
    files, audit, quarantine = preprocessing.deidentify_sources(raw, manifest, stored, stored_masks, candidates,
                                                                candidate_items, params["deid"], pixel_checks)
    FileFolderDataset(path=str(out / "deidentified")).save(files)
    phases["publication"] = [time.perf_counter() - wall, _cpu() - cpu]
    manifest.to_csv(out / "manifest.csv", index=False)
    rejected.to_csv(out / "rejected.csv", index=False)
    audit.to_csv(out / "audit.csv", index=False)
    quarantine.to_csv(out / "quarantine.csv", index=False)


def deid_in_the_pass(source: Path, out: Path) -> float:
    """CPU seconds of the pass's de-identification alone: `deidentify_copy` on each file parsed and decoded first."""
    config = DicomDeidConfig.from_params(_params()["deid"])
    out.mkdir(parents=True, exist_ok=True)
    spent = 0.0
    for index, path in enumerate(sorted(source.rglob("*.dcm"))):
        ds = pydicom.dcmread(path)
        dicom_pixels(ds, max_pixels=10**9)  # as in the pass: the dataset was decoded before
        start = time.process_time()
        deidentify_copy(ds, KEY, config, out / f"{index:06d}.dcm")
        spent += time.process_time() - start
    return spent


def run_plain(source: Path, out: Path, workers: int = 1) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(sorted(source.rglob("*.dcm"))):
        ds = pydicom.dcmread(path)
        np.save(out / f"{index:06d}.npy", ds.pixel_array)


def run_plain_copy(source: Path, out: Path, workers: int = 1) -> None:
    """The plain loop that also writes each file again: what any pydicom pass that makes copies must do."""
    out.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(sorted(source.rglob("*.dcm"))):
        ds = pydicom.dcmread(path)
        np.save(out / f"{index:06d}.npy", ds.pixel_array)
        ds.save_as(out / f"{index:06d}.dcm")


def run_dicognito(source: Path, out: Path, workers: int = 1) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="benchmark")
    out.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(sorted(source.rglob("*.dcm"))):
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / f"{index:06d}.dcm")


# The Dask cluster's client while a Dask run is timed: its workers are not children of this process.
_DASK: dict[str, Any] = {}


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    if "client" in _DASK:
        total += sum(_DASK["client"].run(_process_cpu).values())
    return total


def _process_cpu() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


@contextlib.contextmanager
def _dask_cluster(workers: int):
    """A local Dask cluster for the whole benchmark (its start-up is not timed)."""
    from distributed import Client, LocalCluster

    from synthmed.core.parallel import DASK_SCHEDULER_ENV, close_dask_clients

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(cluster) as client:
            _DASK["address"], _DASK["cluster_client"] = cluster.scheduler_address, client
            _DASK["env"] = DASK_SCHEDULER_ENV
            yield
    finally:
        _DASK.clear()
        close_dask_clients()  # ordered_map's own client, before its scheduler goes
        cluster.close()


@contextlib.contextmanager
def _on_dask():
    """``ordered_map`` sends its batches to the benchmark's cluster while this block runs."""
    os.environ[_DASK["env"]] = _DASK["address"]
    _DASK["client"] = _DASK["cluster_client"]
    try:
        yield
    finally:
        del os.environ[_DASK["env"]], _DASK["client"]


def _timed(fn, source: Path, workers: int | str) -> dict[str, list[float]]:
    if workers == "dask":
        with _on_dask():
            return _timed(fn, source, 2)
    with tempfile.TemporaryDirectory() as tmp:
        phases: dict[str, list[float]] = {}
        cpu, wall, own = _cpu(), time.perf_counter(), _own_cpu()
        if fn is run_synthmed:
            fn(source, Path(tmp) / "out", workers, phases)
        elif fn is deid_in_the_pass:
            spent = fn(source, Path(tmp) / "out")
            return {"total": [float("nan"), spent], "parent": [0.0, spent]}
        else:
            fn(source, Path(tmp) / "out", workers)
        return {"total": [time.perf_counter() - wall, _cpu() - cpu], "parent": [0.0, _own_cpu() - own], **phases}


def _own_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def throughput(n_files: int, repeats: int) -> None:
    import dicognito.anonymizer  # noqa: F401 - imported before any timing, like synthmed's modules

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "ct"
        make_ct_folder(source, n_files)
        megabytes = sum(p.stat().st_size for p in source.rglob("*.dcm")) / 1e6
        runs = {"plain loop": (run_plain, 1), "plain loop + copy": (run_plain_copy, 1), "dicognito": (run_dicognito, 1),
                "synthmed 1 process": (run_synthmed, 1), "synthmed 2 processes": (run_synthmed, 2),
                "synthmed Dask 2 workers": (run_synthmed, "dask"), "deid in the pass": (deid_in_the_pass, 1)}
        results: dict[str, list[dict[str, list[float]]]] = {name: [] for name in runs}
        with _dask_cluster(2):
            for _ in range(repeats):  # interleaved, so that load from other processes hits all alike
                for name, (fn, workers) in runs.items():
                    results[name].append(_timed(fn, source, workers))
    print(f"{n_files} CT files in series of {SERIES_LENGTH}, {megabytes:.1f} MB; median of {repeats} interleaved runs; "
          f"CPU = user + system of the process and its pool's workers")
    print(f"{'run':44s} {'wall s':>7s} {'files/s':>8s} {'MB/s':>6s} {'CPU ms/file':>11s}")
    for name, runs_of in results.items():
        for phase in (p for p in runs_of[0] if p != "parent"):
            wall = statistics.median(r[phase][0] for r in runs_of)
            cpu = statistics.median(r[phase][1] for r in runs_of)
            label = name if phase == "total" else f"{name}: {phase}"
            print(f"{label:44s} {wall:7.2f} {n_files / wall:8.1f} {megabytes / wall:6.2f} {cpu / n_files * 1e3:11.2f}")

    def ratio(a: tuple[str, str], b: tuple[str, str], index: int = 1) -> str:
        values = [x[a[1]][index] / y[b[1]][index] for x, y in zip(results[a[0]], results[b[0]])]
        return f"{statistics.median(values):5.2f} (runs {min(values):.2f}..{max(values):.2f})"

    one, two = ("synthmed 1 process", "total"), ("synthmed 2 processes", "total")
    one_pass, deid = ("synthmed 1 process", "one pass"), ("deid in the pass", "total")
    reading = [x[one_pass[1]][1] - y["total"][1] for x, y in zip(results[one_pass[0]], results[deid[0]])]
    print(f"{'synthmed 1 process: one pass less deid in the pass':44s} {'':7s} {'':8s} {'':6s} "
          f"{statistics.median(reading) / n_files * 1e3:11.2f}")
    print("ratios of CPU time per file (median of the per-repeat ratios):")
    print(f"  synthmed 1 process / plain loop                    {ratio(one, ('plain loop', 'total'))}")
    print(f"  synthmed 1 process / plain loop + copy             {ratio(one, ('plain loop + copy', 'total'))}")
    print(f"  one pass (ingestion + deid), 1 process / plain loop + copy "
          f"{ratio(one_pass, ('plain loop + copy', 'total'))}")
    print(f"  one pass (ingestion + deid), 1 process / plain loop "
          f"{ratio(one_pass, ('plain loop', 'total'))}")
    print(f"  deid in the pass / dicognito                       {ratio(deid, ('dicognito', 'total'))}")
    print(f"  synthmed 1 process / dicognito                     {ratio(one, ('dicognito', 'total'))}")
    print(f"  synthmed 2 processes / 1 process                   {ratio(two, one)}")
    print(f"  synthmed Dask 2 workers / 2 processes              {ratio(('synthmed Dask 2 workers', 'total'), two)}")
    print(f"speed-up 1 -> 2 processes (wall time 1 / wall time 2)  {ratio(one, two, 0)}")
    print(f"speed-up 1 process -> Dask 2 workers (wall time)       "
          f"{ratio(one, ('synthmed Dask 2 workers', 'total'), 0)}")
    # What the parent does alone (listing, grouping, bookkeeping, saving) bounds the speed-up
    # (Amdahl) whatever else runs on the machine; the wall-time speed-up needs idle cores.
    serial = statistics.median(r["parent"][1] / r["total"][1] for r in results["synthmed 2 processes"])
    extra = statistics.median(x["total"][1] / y["total"][1] for x, y in zip(results[two[0]], results[one[0]]))
    print(f"2 processes: parent's share s of the CPU time {serial:.3f}; speed-up on 2 idle cores if the "
          f"parent's work were all serial: (CPU 1 / CPU 2) / (s + (1 - s) / 2) = "
          f"{1 / extra / (serial + (1 - serial) / 2):.2f}")


# The engines compared at several folder sizes (``--sizes``). Kedro's ParallelRunner is not
# among them: it runs *nodes* in parallel, and the per-file work of a folder of DICOM files is
# one node (``read_dicom_items``); the other readers' nodes have nothing to do, so it would run
# that node in one process. The per-file parallelism is ``ingestion.workers`` (ordered_map's
# process pool), or a Dask cluster through ``SYNTHMED_DASK_SCHEDULER`` (the same batches).
SCALING_RUNS = {"plain pydicom loop": (run_plain, 1), "synthmed 1 process": (run_synthmed, 1),
                "synthmed 2 processes (ingestion.workers)": (run_synthmed, 2),
                "synthmed Dask 2 workers": (run_synthmed, "dask")}


def _fit(sizes: list[int], values: list[float]) -> tuple[float, float]:
    """``value = c * n ** e`` fitted in log-log: (e, c)."""
    e, log_c = np.polyfit(np.log(sizes), np.log(values), 1)
    return float(e), float(np.exp(log_c))


def scaling(sizes: list[int], repeats: int, extrapolate: int) -> None:
    """Files/s of each engine at each size (interleaved repeats, medians), the growth exponent of
    the time over the sizes, and the time extrapolated to ``extrapolate`` files with it."""
    table: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": [], "pass_wall": []} for name in SCALING_RUNS}
    with _dask_cluster(2):
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                source = Path(tmp) / "ct"
                make_ct_folder(source, n)
                runs: dict[str, list[dict[str, list[float]]]] = {name: [] for name in SCALING_RUNS}
                for _ in range(repeats):  # interleaved: load from other processes hits every engine alike
                    for name, (fn, workers) in SCALING_RUNS.items():
                        runs[name].append(_timed(fn, source, workers))
            for name, found in runs.items():
                table[name]["wall"].append(statistics.median(r["total"][0] for r in found))
                table[name]["cpu"].append(statistics.median(r["total"][1] for r in found))
                phase = "one pass" if "one pass" in found[0] else "total"
                table[name]["pass_wall"].append(statistics.median(r[phase][0] for r in found))
            print(f"  {n} files done (load average {os.getloadavg()[0]:.1f})", flush=True)
    print(f"CT files in series of {SERIES_LENGTH} (39 KB each); median of {repeats} interleaved runs per size; "
          "synthmed = the ingestion pass (inventory, read + decode + de-identify per file, combine, save) then "
          "publication (pixel checks, copies promoted); the plain loop = dcmread + pixel_array + np.save per file")
    header = " ".join(f"{n:>9d}" for n in sizes)
    # Two extrapolations: the power law fitted over all sizes, and the marginal cost per file
    # between the two largest sizes (fixed costs, e.g. process start-up, drop out of it).
    print(f"{'files/s (wall), whole run':44s} {header}   exp(wall) exp(CPU)  {extrapolate:,} files, hours: "
          "wall (power law, marginal), CPU (power law, marginal)")
    for name, row in table.items():
        e_wall, c_wall = _fit(sizes, row["wall"])
        e_cpu, c_cpu = _fit(sizes, row["cpu"])
        step = sizes[-1] - sizes[-2]
        marginal_wall = (row["wall"][-1] - row["wall"][-2]) / step * extrapolate
        marginal_cpu = (row["cpu"][-1] - row["cpu"][-2]) / step * extrapolate
        rates = " ".join(f"{n / w:9.1f}" for n, w in zip(sizes, row["wall"]))
        print(f"{name:44s} {rates}   {e_wall:9.2f} {e_cpu:8.2f}  "
              f"{c_wall * extrapolate ** e_wall / 3600:6.2f} {marginal_wall / 3600:6.2f}  "
              f"{c_cpu * extrapolate ** e_cpu / 3600:6.2f} {marginal_cpu / 3600:6.2f}")
    print(f"{'files/s (wall), ingestion pass only':44s} {header}   exp(wall)")
    for name, row in table.items():
        if name.startswith("synthmed"):
            rates = " ".join(f"{n / w:9.1f}" for n, w in zip(sizes, row["pass_wall"]))
            print(f"{name:44s} {rates}   {_fit(sizes, row['pass_wall'])[0]:9.2f}")


RUNNERS = {  # name: (kedro run arguments, ingestion.workers)
    "kedro run, SequentialRunner, 1 process": ([], 1),
    "kedro run, SequentialRunner, ingestion.workers 2": ([], 2),
    "kedro run, ParallelRunner (2 processes), workers 1": (["--runner", "ParallelRunner"], 1),
}


def _kedro_project(tmp: Path, n_files: int, mixed: bool) -> Path:
    """A copy of this project whose raw folder holds ``n_files`` CT files (and, with ``mixed``, the
    bundled sample's NIfTI volumes and raster images, so that ingestion's three reader nodes
    all have work), with a throw-away key."""
    sys.path.insert(0, str(ROOT / "tools"))
    from public_collections import project_copy

    project = project_copy(tmp / "project")
    source = project / "data/01_raw/bench"
    make_ct_folder(source / "ct", n_files)
    if mixed:
        sample = ROOT / "data/01_raw/sample"
        if not sample.is_dir():
            raise SystemExit("--runners with --mixed needs the bundled sample: kedro run --pipelines sample_data")
        for path in sample.rglob("*"):
            if path.is_file() and path.suffix.lower() in (".png", ".jpg", ".gz", ".nii") and "dicom" not in path.parts:
                target = source / "sample" / path.relative_to(sample)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    local = project / "conf/local"
    local.mkdir(parents=True, exist_ok=True)
    (local / "catalog.yml").write_text("raw_sources:\n  type: synthmed.datasets.FileFolderDataset\n"
                                       "  path: data/01_raw/bench\n")
    (local / "credentials.yml").write_text("pseudonymisation:\n  key: bench-" + os.urandom(16).hex() + "\n")
    (local / "parameters_ingestion.yml").write_text("ingestion:\n  labels_csv: null\n")  # the sample's table stays
    return project


def runners(sizes: list[int], repeats: int, mixed: bool) -> None:
    """``kedro run --pipelines ingestion`` on one folder per size with each of ``RUNNERS`` (interleaved):
    wall time and the CPU of the run's processes (the kedro process and its children), and with
    three sizes or more the growth exponent of each over the sizes."""
    kedro = Path(sys.executable).with_name("kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT / "src")}
    table: dict[str, list[tuple[float, float]]] = {name: [] for name in RUNNERS}
    counts = []
    for n_files in sizes:
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in RUNNERS}
        with tempfile.TemporaryDirectory() as tmp:
            project = _kedro_project(Path(tmp), n_files, mixed)
            counts.append(sum(1 for p in (project / "data/01_raw/bench").rglob("*") if p.is_file()))
            for _ in range(repeats):
                for name, (extra, workers) in RUNNERS.items():
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    subprocess.run([str(kedro), "run", "--pipelines", "ingestion", "--params",
                                    f"ingestion.workers={workers}", *extra], cwd=project, env=env, check=True,
                                   capture_output=True, timeout=3600)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                    found[name].append((time.perf_counter() - start, cpu))
        print(f"kedro run --pipelines ingestion on {counts[-1]} files ({n_files} CT files in series of "
              f"{SERIES_LENGTH}{' + the sample NIfTI and raster files' if mixed else ''}), median of {repeats} "
              f"interleaved runs, start-up included; load average {os.getloadavg()[0]:.1f} at the end")
        print(f"{'runner':54s} {'wall s':>8s} {'files/s':>8s} {'CPU s':>7s}")
        for name, runs in found.items():
            wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
            table[name].append((wall, cpu))
            print(f"{name:54s} {wall:8.1f} {counts[-1] / wall:8.1f} {cpu:7.1f}   (wall/CPU each: "
                  f"{', '.join(f'{w:.1f}/{c:.1f}' for w, c in runs)})", flush=True)
    if len(sizes) >= 3:
        print(f"growth over {counts} files (time ~ files^e; start-up keeps e below 1 at small sizes)")
        for name, rows in table.items():
            print(f"{name:54s} e(wall) {_fit(counts, [w for w, _ in rows])[0]:5.2f}   "
                  f"e(CPU) {_fit(counts, [c for _, c in rows])[0]:5.2f}")


def peak_rss(n_files: int, workers: int) -> dict[str, float]:
    """Run synthmed on ``n_files`` in a fresh process: its peak RSS and its workers' (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "ct"
        make_ct_folder(source, n_files)
        code = ("import json, resource, sys, pathlib; sys.path.insert(0, sys.argv[1]); import bench_ingestion as b; "
                "b.run_synthmed(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])); "
                "print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
        done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(source),
                               str(Path(tmp) / "out"), str(workers)], capture_output=True, text=True, check=True)
        own, children = json.loads(done.stdout.strip().splitlines()[-1])
    return {"main_MB": own / 1024, "worker_MB": children / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400, help="CT files (default 400)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs, median shown (default 3)")
    parser.add_argument("--rss", type=int, nargs="*", help="peak RSS for these folder sizes instead")
    parser.add_argument("--workers", type=int, default=2, help="workers for --rss (default 2)")
    parser.add_argument("--profile", type=int, help="cProfile synthmed (1 process) on this many files instead")
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="files/s of the plain loop, 1 and 2 processes and Dask 2 workers at these folder sizes "
                             "(>= 3 for the growth exponent) instead")
    parser.add_argument("--extrapolate", type=int, default=100_000, help="files to extrapolate --sizes to")
    parser.add_argument("--runners", type=int, nargs="+", metavar="FILES",
                        help="kedro run --pipelines ingestion on FILES CT files (one folder per size) with "
                             "SequentialRunner (1 and 2 workers) and ParallelRunner, start-up included, instead")
    parser.add_argument("--mixed", action="store_true", help="--runners: add the sample's NIfTI and raster files")
    args = parser.parse_args()
    if args.runners:
        runners(args.runners, args.repeats, args.mixed)
        return
    if args.sizes:
        scaling(args.sizes, args.repeats, args.extrapolate)
        return
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "ct"
            make_ct_folder(source, args.profile)
            profiler = cProfile.Profile()
            profiler.runcall(run_synthmed, source, Path(tmp) / "out", 1)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
        return
    if args.rss:
        print(f"{'files':>6s} {'workers':>7s} {'main peak RSS MB':>17s} {'worker peak RSS MB':>19s}")
        for n in args.rss:
            r = peak_rss(n, args.workers)
            print(f"{n:6d} {args.workers:7d} {r['main_MB']:17.0f} {r['worker_MB']:19.0f}")
        return
    throughput(args.files, args.repeats)


if __name__ == "__main__":
    main()
