"""Speed and memory of the generator families, and synthmed's trainer against a plain loop.

Prints, for each family at a configuration profile (``base`` = CPU sizes, ``gpu`` = full
sizes): training images/s through ``synthmed.generators.training.train`` (Accelerate, EMA,
checkpointing off), sampling images/s per sampler and step count, and peak memory. For the
DDPM U-Net it also times a plain reference loop written directly against diffusers and
PyTorch, as the diffusers training examples do it (same UNet2DModel, DataLoader,
DDPMScheduler, AdamW, clipping, diffusers EMAModel, batch) and prints synthmed / plain.

    .venv/bin/python benchmarks/bench_generators.py --profile base
    .venv/bin/python benchmarks/bench_generators.py --profile gpu --families ddpm
    make bench-gpu   # on a CUDA machine: gpu profile DDPM, with --mfu, appended to RESULTS.md

``--mfu`` adds model FLOPs utilisation for the DDPM: the FLOPs of one training step (forward
and backward of the U-Net at the training batch, counted by ``torch.utils.flop_counter``)
times the measured steps/s, over the device's peak (``--peak-tflops``, or a known peak for
the GPU's name: dense bf16 tensor-core figures from the vendors' data sheets).
``--append-results FILE`` appends the printed table to FILE as a Markdown section with the
command and the machine. Without CUDA the gpu profile is refused unless ``--allow-cpu``
(the test suite runs the whole command at the ``test`` profile's tiny sizes on CPU).

Figures, not tests: record them with the machine and command in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kedro.config import OmegaConfigLoader

from synthmed.generators.base import Conditions, SamplerSpec
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.training import ArrayBatches, TrainingConfig, train

ROOT = Path(__file__).resolve().parents[1]


def parameters(profile: str) -> dict:
    env = "local" if profile == "base" else profile
    return OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base", default_run_env=env,
                             merge_strategy={"parameters": "soft"})["parameters"]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def synthetic_store(config, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    size = config.image_size
    return {
        "images": rng.uniform(-1, 1, (n, config.channels, size, size)).astype(np.float32),
        "labels": (np.arange(n) % max(config.num_classes, 1)).astype(np.int64),
        "masks": (rng.uniform(size=(n, 1, size, size)) > 0.8).astype(np.uint8),
    }


def bench_training(family: str, config, batch: int, steps: int, device: str) -> float:
    spec = get_family(family)
    store = synthetic_store(config, max(batch * 4, 64))
    training = TrainingConfig(steps=steps, batch_size=batch, checkpoint_every=0, log_every=max(steps // 2, 1),
                              device=device)
    with tempfile.TemporaryDirectory() as tmp:
        _, history = train(spec, config, training, ArrayBatches(store, np.arange(len(store["labels"]))), Path(tmp))
    return float(history[-1]["images_per_s"])  # second half of the steps: warm


def bench_plain_ddpm(config, batch: int, steps: int, device: torch.device) -> float:
    """The same U-Net trained by a loop written directly against diffusers and PyTorch.

    What a diffusers training example does: a shuffled DataLoader over in-memory tensors,
    DDPMScheduler.add_noise, epsilon MSE, AdamW, gradient clipping and diffusers' EMAModel.
    """
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel
    from torch.utils.data import DataLoader, TensorDataset

    from synthmed.generators.ddpm import build

    unet = build(config, 0)["unet"].to(device).train()
    ema = EMAModel(unet.parameters(), decay=getattr(config, "ema_decay", 0.999))
    scheduler = DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    store = synthetic_store(config, max(batch * 4, 64))
    data = TensorDataset(torch.from_numpy(store["images"]), torch.from_numpy(store["labels"]))
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    tic = None
    batches = (b for _ in range(10**9) for b in loader)
    for step in range(steps):
        if step == steps // 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
        x0, labels = (t.to(device) for t in next(batches))
        noise = torch.randn_like(x0)
        t = torch.randint(0, config.train_timesteps, (batch,), device=device)
        with autocast:
            pred = unet(scheduler.add_noise(x0, noise, t), t,
                        class_labels=labels if "class" in config.conditioning else None).sample
            loss = F.mse_loss(pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), config.grad_clip_norm or 1e9)
        optimizer.step()
        ema.step(unet.parameters())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * (steps - steps // 2) / (time.perf_counter() - tic)


# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets; SXM variants), by a substring
# of torch.cuda.get_device_name(). Anything else: pass --peak-tflops.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}


def device_peak_tflops(device: torch.device, given: float | None) -> float | None:
    """The peak to divide by: ``given``, else the known peak of the CUDA device's name, else None."""
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def ddpm_step_flops(config, batch: int, device: torch.device) -> int:
    """FLOPs of one DDPM training step (forward + backward of the U-Net on one batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    from synthmed.generators.ddpm import build

    unet = build(config, 0)["unet"].to(device).train()
    x = torch.randn(batch, config.channels, config.image_size, config.image_size, device=device)
    t = torch.randint(0, config.train_timesteps, (batch,), device=device)
    labels = (torch.arange(batch, device=device) % max(config.num_classes, 1)
              if "class" in config.conditioning else None)
    with FlopCounterMode(display=False) as counter:
        unet(x, t, class_labels=labels).sample.float().pow(2).mean().backward()
    return int(counter.get_total_flops())


def bench_sampling(family: str, config, sampler: SamplerSpec, n: int) -> float:
    spec = get_family(family)
    models = spec.build(config, 0).eval()
    store = synthetic_store(config, n)
    needed = config.needed_conditions()
    conditions = Conditions(
        n=n,
        labels=torch.from_numpy(store["labels"]) if "labels" in needed else None,
        masks=torch.from_numpy(store["masks"].astype(np.float32)) if "masks" in needed else None,
    )
    tic = time.perf_counter()
    spec.sample(models, config, conditions, sampler, torch.Generator().manual_seed(0))
    return n / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="base", help="configuration environment: base (CPU sizes) or gpu")
    parser.add_argument("--families", default="ddpm,pix2pix,dcgan")
    parser.add_argument("--steps", type=int, default=40, help="training steps per measurement (second half timed)")
    parser.add_argument("--samples", type=int, default=16, help="images per sampling measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved synthmed/plain DDPM training measurements (median reported)")
    parser.add_argument("--mfu", action="store_true", help="DDPM model FLOPs utilisation (see above)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s for --mfu")
    parser.add_argument("--append-results", type=Path, metavar="FILE", help="append the table to FILE (Markdown)")
    parser.add_argument("--allow-cpu", action="store_true", help="run the gpu profile without CUDA (slow)")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if args.profile == "gpu" and device.type != "cuda" and not args.allow_cpu:
        sys.exit("bench_generators: the gpu profile needs a CUDA device (torch.cuda.is_available() is False); "
                 "run it on a GPU machine, or pass --allow-cpu to run it here anyway.")
    params = parameters(args.profile)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text)
        lines.append(text)

    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"device {device}{' ' + torch.cuda.get_device_name() if device.type == 'cuda' else ''}, "
               f"torch {torch.__version__}")
    say(f"machine: {machine}")
    say(f"profile: {args.profile}; training steps {args.steps} (last half timed); samples {args.samples}")
    say(f"{'family':8} {'measure':38} {'value':>12}")
    _measure(args, params, device, say)
    if args.append_results:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/bench_generators.py " + shlex.join(sys.argv[1:])
        with args.append_results.open("a", encoding="utf-8") as out:
            out.write(f"\n## Generators, `{args.profile}` profile on {device.type} ({stamp})\n\n"
                      f"```\n{command}\n```\n\n```\n" + "\n".join(lines) + "\n```\n")
        print(f"appended to {args.append_results}")


def _measure(args, params, device: torch.device, say) -> None:
    """Every line of the table goes through ``say`` (printed, and kept for --append-results)."""
    for family in args.families.split(","):
        config = config_from_params(family, params[family]["model"])
        batch = int(params[family]["training"]["batch_size"])
        n_params = sum(p.numel() for p in get_family(family).build(config, 0).parameters())
        say(f"{family:8} {'parameters (all modules)':38} {n_params:>12,}")
        if family == "ddpm":
            # Interleaved, so machine drift hits both loops alike; the median is reported.
            pairs = [(bench_training(family, config, batch, args.steps, args.device),
                      bench_plain_ddpm(config, batch, args.steps, device)) for _ in range(args.repeats)]
            ours = float(np.median([a for a, _ in pairs]))
            plain = float(np.median([b for _, b in pairs]))
            ratios = [a / b for a, b in pairs]
            say(f"{family:8} {f'training images/s (batch {batch}, {config.image_size} px)':38} {ours:>12.1f}")
            say(f"{family:8} {'plain diffusers loop images/s':38} {plain:>12.1f}")
            say(f"{family:8} {f'ratio synthmed / plain (median of {len(ratios)})':38} "
                  f"{float(np.median(ratios)):>12.2f}")
            say(f"{family:8} {'ratio range':38} {min(ratios):>6.2f}..{max(ratios):.2f}")
            if args.mfu:
                flops = ddpm_step_flops(config, batch, device)
                achieved = flops * ours / batch  # FLOP/s: steps/s x FLOPs per step
                peak = device_peak_tflops(device, args.peak_tflops)
                say(f"{family:8} {'GFLOPs per training step':38} {flops / 1e9:>12.2f}")
                say(f"{family:8} {'achieved TFLOP/s (model FLOPs)':38} {achieved / 1e12:>12.3f}")
                mfu = f"{100 * achieved / (peak * 1e12):>11.1f}%" if peak else f"{'n/a':>12}"
                say(f"{family:8} {f'MFU (peak {peak or 0:g} TFLOP/s)':38} {mfu}")
        else:
            ours = bench_training(family, config, batch, args.steps, args.device)
            say(f"{family:8} {f'training images/s (batch {batch}, {config.image_size} px)':38} {ours:>12.1f}")
        if family == "ddpm":
            ddpm_steps = min(1000, int(config.train_timesteps))  # ancestral DDPM: at most the training steps
            samplers = [SamplerSpec("ddim", 50), SamplerSpec("dpmsolver++", 20), SamplerSpec("ddpm", ddpm_steps),
                        SamplerSpec("ddim", 50, guidance_scale=2.0)]
        else:
            samplers = [SamplerSpec("ddim", 1)]
        for sampler in samplers:
            label = f"sampling images/s {sampler.name} {sampler.steps} steps" + (
                f" w={sampler.guidance_scale:g}" if sampler.guidance_scale != 1.0 else "")
            n = args.samples if sampler.steps <= 100 else max(args.samples // 4, 1)
            say(f"{family:8} {label:38} {bench_sampling(family, config, sampler, n):>12.1f}")
        say(f"{family:8} {'peak memory MB (process, so far)':38} {peak_memory_mb(device):>12.0f}")


if __name__ == "__main__":
    main()
