"""PRDC memory, FID bootstrap cost and project start-up (issue 13, items 4, 5 and 7).

- PRDC peak memory: ``precision_recall_density_coverage`` on N real and N fake 64-d features,
  each size in a fresh process; "dense" is the same code with one block holding everything
  (what the function did before: the N x N and N x M float64 matrices), "chunked" the default
  blocks. The figure is the peak resident memory above the resident memory before the call. A
  growth exponent is fitted over the sizes (log memory against log N).
- FID bootstrap: CPU seconds (all threads) per resample of ``frechet_interval`` against a
  torchmetrics ``FrechetInceptionDistance`` per resample (what ``bootstrap_interval`` did), on
  N = 500 random features of 2048 and 64 dimensions.
- Start-up: seconds to load the project in a fresh interpreter (settings, hooks, every
  pipeline), the heavy libraries that loading imported, and the seconds from starting
  ``kedro run --pipelines ingestion`` to its first node's log line (median of ``--kedro-runs``;
  the run itself may fail later, e.g. with no raw data, which does not matter here).

    PYTHONPATH=src python benchmarks/bench_metrics.py                    # all three
    PYTHONPATH=src python benchmarks/bench_metrics.py --only prdc --sizes 1000 2000 4000 8000
    PYTHONPATH=src python benchmarks/bench_metrics.py --only startup --kedro-runs 3
    PYTHONPATH=src python benchmarks/bench_metrics.py --only startup --before ../other-checkout

  ``--before`` runs every start-up measurement alternately in another checkout (its sources,
  conf and data; interleaved, so both see the same load); the parameter check is timed on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "mlflow", "matplotlib", "skimage", "scipy", "torchmetrics")

PRDC_CHILD = """
import json, resource, sys, torch
from synthmed.metrics.fidelity import precision_recall_density_coverage
n, block_bytes = int(sys.argv[1]), int(sys.argv[2])
options = {"block_bytes": block_bytes} if block_bytes else {}  # 0: the default blocks
gen = torch.Generator().manual_seed(0)
real, fake = torch.randn(n, 64, generator=gen), torch.randn(n, 64, generator=gen) + 0.1
def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
before = rss_kib()
scores = precision_recall_density_coverage(real, fake, k=5, **options)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra_mib": (peak - before) / 1024, "scores": scores}))
"""


def _env(src: Path | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src or ROOT / "src"), "KEDRO_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}


def _exponent(sizes: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def bench_prdc(sizes: list[int]) -> None:
    print("PRDC peak memory above the inputs (MiB), N real = N fake, D = 64, k = 5")
    print(f"{'N':>7} {'dense':>10} {'chunked':>10} {'dense/chunked':>14}  same scores")
    dense, chunked = [], []
    for n in sizes:
        runs = {}
        for label, block in (("dense", 2**62), ("chunked", 0)):
            out = subprocess.run([sys.executable, "-c", PRDC_CHILD, str(n), str(block)], env=_env(), check=True,
                                 capture_output=True, text=True, timeout=1200).stdout
            runs[label] = json.loads(out.strip().splitlines()[-1])
        dense.append(runs["dense"]["extra_mib"])
        chunked.append(runs["chunked"]["extra_mib"])
        same = runs["dense"]["scores"] == runs["chunked"]["scores"]
        print(f"{n:>7} {dense[-1]:>10.0f} {chunked[-1]:>10.0f} {dense[-1] / chunked[-1]:>14.1f}  {same}")
    if len(sizes) >= 3:
        print(f"growth exponent (memory ~ N^e): dense {_exponent(sizes, dense):.2f}, "
              f"chunked {_exponent(sizes, chunked):.2f}")


def _torchmetrics_fid(real, fake) -> float:
    """What ``frechet_distance`` computed per resample before: a new torchmetrics object."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    from synthmed.metrics.fidelity import PrecomputedFeatures

    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]), normalize=False)
    metric.update(real.to(torch.float64), real=True)
    metric.update(fake.to(torch.float64), real=False)
    return float(metric.compute())


def bench_bootstrap(n: int, dims: list[int], old_resamples: int, new_resamples: int) -> None:
    import torch

    from synthmed.metrics.fidelity import bootstrap_interval, frechet_interval

    print(f"FID bootstrap, CPU s per resample (N real = N fake = {n}; torch threads {torch.get_num_threads()})")
    print(f"{'D':>6} {'torchmetrics/resample':>22} {'sufficient stats':>17} {'speed-up':>9}  max rel. diff of low/high")
    for dim in dims:
        gen = torch.Generator().manual_seed(dim)
        real, fake = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen) * 1.1 + 0.05
        start = time.process_time()
        old = bootstrap_interval(_torchmetrics_fid, real, fake, resamples=old_resamples, seed=1)
        old_s = (time.process_time() - start) / (old_resamples + 1)  # + the estimate
        start = time.process_time()
        frechet_interval(real, fake, resamples=new_resamples, seed=1)
        new_s = (time.process_time() - start) / (new_resamples + 1)
        same = frechet_interval(real, fake, resamples=old_resamples, seed=1)
        diff = max(abs(same.low - old.low) / abs(old.low), abs(same.high - old.high) / abs(old.high))
        print(f"{dim:>6} {old_s:>22.3f} {new_s:>17.4f} {old_s / new_s:>8.0f}x  {diff:.1e}")


LOAD_PROJECT = f"""
import json, sys, time
start = time.perf_counter()
from kedro.framework.project import configure_project
configure_project("synthmed")
import synthmed.settings, synthmed.hooks
from synthmed.pipeline_registry import register_pipelines
register_pipelines()
print(json.dumps({{"seconds": time.perf_counter() - start, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _first_node_seconds(pipeline: str, root: Path = ROOT) -> tuple[float, float] | None:
    """Wall and CPU seconds from starting ``kedro run`` in the project ``root`` to its first node's
    "Running node" line (CPU: robust on a busy machine). Earlier figures counted the first "Loading
    data from" line, which the pseudonymisation key's hook prints before the MLflow run opens."""
    start = time.perf_counter()
    kedro = Path(sys.executable).with_name("kedro")
    proc = subprocess.Popen([str(kedro), "run", "--pipelines", pipeline], cwd=root, env=_env(root / "src"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = None
    for line in proc.stdout:
        if first is None and "Running node" in line:
            first = (time.perf_counter() - start, _cpu_seconds(proc.pid))
    proc.wait()
    return first


CHECK_PARAMETERS = f"""
import json, sys, time
from kedro.config import OmegaConfigLoader
params = OmegaConfigLoader("conf", base_env="base", default_run_env="local",
                           merge_strategy={{"parameters": "soft"}})["parameters"]
start, cpu = time.perf_counter(), time.process_time()
from synthmed.parameters import validate_parameters
validate_parameters(params)
print(json.dumps({{"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                  "heavy": [m for m in {HEAVY + ("pandas", "nibabel")!r} if m in sys.modules]}}))
"""


def _child(code: str, root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=_env(root / "src"), check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_startup(kedro_runs: int, before: Path | None) -> None:
    """Each measurement alternates the project ``before`` (another checkout, with its own data and
    conf) and this one, so that both see the same load on a shared machine."""
    variants = [("before", before), ("after", ROOT)] if before else [("this checkout", ROOT)]
    for what, code in (("load the project (settings, hooks, register_pipelines)", LOAD_PROJECT),
                       ("parameter check (validate_parameters on conf/base + local)", CHECK_PARAMETERS)):
        runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
        for _ in range(3):
            for name, root in variants:
                runs[name].append(_child(code, root))
        for name, _ in variants:
            found = runs[name]
            cpu = f", {statistics.median(r['cpu'] for r in found):.2f} s CPU" if "cpu" in found[0] else ""
            print(f"{what}, {name}, median of 3: {statistics.median(r['seconds'] for r in found):.2f} s wall{cpu}; "
                  f"heavy libraries imported: {found[0]['heavy']}")
    if kedro_runs:
        runs = {name: [] for name, _ in variants}
        for _ in range(kedro_runs):
            for name, root in variants:
                found = _first_node_seconds("ingestion", root)
                if found is not None:
                    runs[name].append(found)
        for name, _ in variants:
            found = runs[name]
            if not found:
                print(f"kedro run --pipelines ingestion, {name}: no node started")
                continue
            wall, cpu = statistics.median(w for w, _ in found), statistics.median(c for _, c in found)
            print(f"kedro run --pipelines ingestion to the first node, {name}, median of {len(found)}: {wall:.1f} s "
                  f"wall, {cpu:.1f} s CPU (wall/CPU each: {', '.join(f'{w:.1f}/{c:.1f}' for w, c in found)}; "
                  f"load average {os.getloadavg()[0]:.1f} at the end)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("prdc", "bootstrap", "startup"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 64])
    parser.add_argument("--bootstrap-n", type=int, default=500)
    parser.add_argument("--old-resamples", type=int, default=3)
    parser.add_argument("--new-resamples", type=int, default=30)
    parser.add_argument("--kedro-runs", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout (project root) to compare start-up with, run interleaved")
    args = parser.parse_args()
    if args.only in (None, "prdc"):
        bench_prdc(args.sizes)
    if args.only in (None, "bootstrap"):
        bench_bootstrap(args.bootstrap_n, args.dims, args.old_resamples, args.new_resamples)
    if args.only in (None, "startup"):
        bench_startup(args.kedro_runs, args.before)


if __name__ == "__main__":
    main()
