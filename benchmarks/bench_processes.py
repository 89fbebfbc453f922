"""Sampling and the memorisation gate on 1 against N processes (issue 13, item 1's last sentence).

One plan of the `base` DDPM (untrained weights, seed 0: the cost does not depend on them) is
sampled, then one gate runs (held-out calibration, planted self-test, the samples as
candidates) against smooth random fields. Run it once alone and once under torchrun; each
prints, on the main process, the wall time of each phase (the slowest process) and its CPU
seconds summed over the processes (``time.process_time``, one torch thread per process), and
a digest of the samples and of the gate table (equal on 1 and N processes).

    PYTHONPATH=src python benchmarks/bench_processes.py
    PYTHONPATH=src python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/bench_processes.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from synthmed.core import collectives, distributed
from synthmed.generators.base import SamplerSpec
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.sampling import ThroughputConfig, generate_from_plan
from synthmed.privacy.memorisation import GateConfig, prepare_gate

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["axial", "coronal", "sagittal"]


def fields(count: int, seed: int, px: int) -> torch.Tensor:
    """Gaussian-filtered noise (sigma 2 px) scaled to std 0.4 and clipped to [-1, 1] (as bench_gate.py)."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).standard_normal((count, 1, px, px))
    smooth = ndimage.gaussian_filter(noise, (0, 0, 2.0, 2.0))
    return torch.from_numpy(np.clip(smooth / smooth.std(axis=(1, 2, 3), keepdims=True) * 0.4, -1, 1)
                            .astype(np.float32))


def _summed(cpu: float, wall: float) -> tuple[float, float]:
    """CPU seconds summed over the processes, wall seconds of the slowest (tensor all_reduce)."""
    if not collectives.active():
        return cpu, wall
    values = torch.tensor([cpu, wall], dtype=torch.float64)
    total, slowest = values[:1].clone(), values[1:].clone()
    torch.distributed.all_reduce(total)
    torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
    return float(total), float(slowest)


def _timed(step):
    cpu, wall = time.process_time(), time.perf_counter()
    result = step()
    return result, *_summed(time.process_time() - cpu, time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=32, help="images per class in the plan (default 32)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (default 10)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train", type=int, default=2000, help="training images of the gate (default 2000)")
    parser.add_argument("--chunk-size", type=int, default=32, help="gate queries per chunk (default 32)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())["ddpm"]["model"]
    spec, config = get_family("ddpm"), config_from_params("ddpm", params)
    models = spec.build(config, 0).eval()
    plan = pd.DataFrame([{"condition": "class", "label": c, "count": args.per_class, "case": ""} for c in CLASSES])
    sampler = SamplerSpec("ddim", steps=args.steps, guidance_scale=2.0)
    sampled, sample_cpu, sample_wall = _timed(lambda: generate_from_plan(
        spec, config, models, plan, CLASSES, sampler, seed=0, batch_size=args.batch_size, checkpoint="bench",
        throughput=ThroughputConfig(device="cpu")))
    px = config.image_size
    train, held_out = fields(args.train, 1, px), fields(200, 2, px)
    gate = GateConfig(plant={"count": 50}, use_features=False, device="cpu", min_self_test_recall=0.0)
    report, gate_cpu, gate_wall = _timed(lambda: prepare_gate(train, held_out, config=gate,
                                                              chunk_size=args.chunk_size).score(sampled.images))
    if distributed.is_main_process():
        digest = hashlib.sha256(sampled.images.tobytes()).hexdigest()[:16]
        table = hashlib.sha256(report.candidates.to_csv().encode() + report.planted.to_csv().encode()
                               + report.held_out.to_csv().encode()).hexdigest()[:16]
        print(f"processes {distributed.world_size()}, 1 torch thread each, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"sampling: {len(sampled.images)} images ddim-{args.steps} w=2 batch {args.batch_size} ({px} px): "
              f"wall {sample_wall:.1f} s, CPU {sample_cpu:.1f} s (all processes); images sha256 {digest}")
        print(f"gate: {args.train} training, 200 held-out, 50 planted, {len(sampled.images)} candidates, chunk "
              f"{args.chunk_size}: wall {gate_wall:.1f} s, CPU {gate_cpu:.1f} s; tables sha256 {table}")


if __name__ == "__main__":
    main()
