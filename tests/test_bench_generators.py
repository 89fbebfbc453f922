"""`make bench-gpu`'s command, run whole at the test profile's tiny sizes on CPU (the GPU run needs a GPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synthmed.generators.precision import auto_bf16

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks/bench_generators.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


def test_the_benchmark_prints_throughput_mfu_and_appends_its_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n")
    done = _run("--profile", "test", "--families", "ddpm", "--steps", "4", "--samples", "2", "--repeats", "1",
                "--mfu", "--peak-tflops", "0.5", "--append-results", str(results))
    assert done.returncode == 0, done.stderr[-2000:]
    def value(pattern: str) -> float:
        return float(re.search(pattern + r"\s+([\d.]+)", done.stdout).group(1))

    gflops, images_per_s = value("GFLOPs per training step"), value(r"training images/s \(batch 4, 16 px\)")
    mfu = value(r"MFU \(peak 0.5 TFLOP/s\)")
    # MFU = FLOPs per step x steps/s (images/s / batch) / peak, from the printed (rounded) figures
    expected = 100 * gflops * 1e9 * images_per_s / 4 / 0.5e12
    assert gflops > 0 and abs(mfu - expected) <= 0.06 * expected + 0.1, (mfu, expected)
    for measure in ("training images/s", "plain diffusers loop images/s", "ratio synthmed / plain",
                    "sampling images/s ddim 50 steps w=2", "peak memory MB"):
        assert measure in done.stdout, measure
    text = results.read_text()
    assert text.startswith("# Results\n") and "## Generators, `test` profile on cpu" in text
    assert "--append-results" in text and "MFU (peak 0.5 TFLOP/s)" in text


@pytest.mark.slow  # about 22 s on the loaded 2-core machine (16 timed sampling runs)
def test_sampling_throughput_prints_guidance_solvers_batches_and_the_extrapolation(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    done = _run("--profile", "test", "--sampling-throughput", "--sampling-batches", "2,3", "--extrapolate-px",
                "16,32", "--threads", "1", "--append-results", str(results))
    assert done.returncode == 0, done.stderr[-2000:]
    rates, cpu = {}, {}
    used = "bf16" if auto_bf16("cpu") else "fp32"  # the auto precision of this CPU
    for name in ("ddim-50", "dpmsolver++-20"):
        for w in ("1", "2"):
            for batch in ("2", "3"):
                found = re.search(rf"{re.escape(name)} +{w} +{batch} +{used} +([\d.]+) +([\d.]+) +([\d.]+)",
                                  done.stdout)
                assert found, (name, w, batch, done.stdout)
                rate, seconds = float(found.group(1)), float(found.group(2))
                assert rate > 0 and abs(seconds - 1 / rate) <= 0.01 * seconds + 1e-3
                rates[(name, w)] = max(rates.get((name, w), 0.0), rate)
                cpu[(name, w)] = min(cpu.get((name, w), float("inf")), float(found.group(3)))
    ratio = float(re.search(r"ddim +guidance cost w=2 / w=1 \(best batch\): ([\d.]+)x wall", done.stdout).group(1))
    assert ratio == pytest.approx(rates[("ddim-50", "1")] / rates[("ddim-50", "2")], rel=0.05)
    hours = re.search(r"ddim-50 +2 +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)\n", done.stdout)
    assert hours, done.stdout
    # 20,000 images at the profile's 16 px: 20,000 / the best measured rate (and x the least CPU s per image)
    assert float(hours.group(1)) == pytest.approx(20000 / rates[("ddim-50", "2")] / 3600, rel=0.05, abs=0.01)
    assert float(hours.group(3)) == pytest.approx(20000 * cpu[("ddim-50", "2")] / 3600, rel=0.05, abs=0.01)
    # 32 px: scaled by the printed ratio of image-step costs
    step = dict(re.findall(r"(\d+) px ([\d.e-]+)", done.stdout.split("CPU seconds per image-step")[1].split("\n")[0]))
    assert float(hours.group(2)) == pytest.approx(float(hours.group(1)) * float(step["32"]) / float(step["16"]),
                                                  rel=0.05, abs=0.01)
    assert "## DDPM sampling throughput, `test` profile on cpu" in results.read_text()


@pytest.mark.slow  # a subprocess import and 3 tiny sweep points: about 20 s on the loaded machine
def test_the_steps_sweep_cost_runs_the_profiles_sweep() -> None:
    done = _run("--profile", "test", "--steps-sweep-cost", "--threads", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    points = re.findall(r"^ *(ddim|dpmsolver\+\+) +(\d+) +2\.0 +6 ", done.stdout, flags=re.M)
    assert points == [("ddim", "2"), ("ddim", "3"), ("dpmsolver++", "2")], done.stdout  # conf/test's points
    assert re.search(r"steps sweep total \(3 points, 18 images, untrained model\): wall [\d.]+ s, CPU [\d.]+ s",
                     done.stdout)


@pytest.mark.slow  # about 45 s on the loaded 2-core machine (two subprocess imports, 8 training runs)
def test_the_volume_family_is_timed_against_a_plain_pytorch_loop() -> None:
    done = _run("--profile", "test", "--families", "pix2pix3d", "--steps", "4", "--samples", "2", "--repeats", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    values = {}
    for measure in (r"training volumes/s \(batch 2, 8\^3\)", "plain PyTorch loop volumes/s",
                    r"ratio synthmed / plain \(median of 1\)", "sampling volumes/s ddim 1 steps",
                    r"peak memory MB \(process, so far\)"):
        found = re.search(r"pix2pix3d +" + measure + r"\s+([\d.]+)", done.stdout)
        assert found, (measure, done.stdout)
        values[measure] = float(found.group(1))
    ours, plain, ratio = list(values.values())[:3]
    assert ours > 0 and plain > 0 and abs(ratio - ours / plain) <= 0.01 + 0.02 * ratio


def test_the_gpu_profile_is_refused_without_cuda() -> None:
    refused = _run("--profile", "gpu", "--families", "ddpm")
    assert refused.returncode != 0 and "needs a CUDA device" in refused.stderr
