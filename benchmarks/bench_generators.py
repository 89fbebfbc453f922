"""Speed and memory of the generator families, and synthmed's trainer against a plain loop.

Prints, for each family at a configuration profile (``base`` = CPU sizes, ``gpu`` = full
sizes): training images/s through ``synthmed.generators.training.train`` (Accelerate, EMA,
checkpointing off), sampling images/s per sampler and step count, and peak memory. For the
DDPM U-Net it also times a plain reference loop written directly against diffusers and
PyTorch, as the diffusers training examples do it (same UNet2DModel, DataLoader,
DDPMScheduler, AdamW, clipping, diffusers EMAModel, batch) and prints synthmed / plain. For
the volume family ``pix2pix3d`` (training volumes/s on ``(N, C, D, H, W)`` volumes) the
reference is a plain PyTorch Pix2Pix loop over the same 3D U-Net and PatchGAN (DataLoader,
one-hot label maps, left-right flips, D step then G step with BCE + lambda * L1, two Adams).

    .venv/bin/python benchmarks/bench_generators.py --profile base
    .venv/bin/python benchmarks/bench_generators.py --profile gpu --families ddpm
    .venv/bin/python benchmarks/bench_generators.py --families pix2pix3d   # alone: peak memory is the process's
    make bench-gpu   # on a CUDA machine: gpu profile DDPM, with --mfu, appended to RESULTS.md

``--mfu`` adds model FLOPs utilisation for the DDPM: the FLOPs of one training step (forward
and backward of the U-Net at the training batch, counted by ``torch.utils.flop_counter``)
times the measured steps/s, over the device's peak (``--peak-tflops``, or a known peak for
the GPU's name: dense bf16 tensor-core figures from the vendors' data sheets).
``--append-results FILE`` appends the printed table to FILE as a Markdown section with the
command and the machine. Without CUDA the gpu profile is refused unless ``--allow-cpu``
(the test suite runs the whole command at the ``test`` profile's tiny sizes on CPU).

``--sampling-throughput`` prints, instead of the table above, the DDPM's sampling images/s
through ``synthmed.generators.sampling.generate_from_plan`` (the profile's ``ddpm.sampling.throughput``
options: bf16, channels-last on CUDA, ``--compile`` for torch.compile) for DDIM-50 and
DPM-Solver++-20, without (w=1) and with (w=2) classifier-free guidance, at each of
``--sampling-batches``; then the cost of one image-step at 32/64/128 px (same architecture)
and the extrapolation to ``--target-images`` (20,000) images at each size:

    .venv/bin/python benchmarks/bench_generators.py --sampling-throughput --sampling-batches 4,8,16
    .venv/bin/python benchmarks/bench_generators.py --profile gpu --sampling-throughput --sampling-batches 64,256,auto

``--steps-sweep-cost`` runs the profile's ``evaluation.steps_sweep`` (``synthmed.protocols.steps_sweep``)
on the profile's DDPM architecture, untrained (sampling costs the same whatever the weights), against
600 random reference images through an untrained domain encoder, and prints its table and its total
wall and CPU time: what the sweep adds to ``kedro run --pipelines evaluation`` (``make demo``).

Figures, not tests: record them with the machine and command in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kedro.config import OmegaConfigLoader

from synthmed.generators.base import Conditions, SamplerSpec
from synthmed.generators.registry import config_from_params, get_family
from synthmed.generators.sampling import ThroughputConfig, generate_from_plan
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


@contextmanager
def device_peak(device: torch.device, peaks: dict[str, float], key: str):
    """On CUDA, ``peaks[key]``: the most GPU memory (MB) allocated inside the block, over calls."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    yield
    if device.type == "cuda":
        peaks[key] = max(peaks[key], torch.cuda.max_memory_allocated() / 2**20)


def synthetic_store(family: str, config, n: int) -> dict[str, np.ndarray]:
    """Random images (or volumes) with labels and masks; label maps where the family takes them."""
    rng = np.random.default_rng(0)
    channels, *sides = get_family(family).sample_shape(config)
    store = {
        "images": rng.uniform(-1, 1, (n, channels, *sides)).astype(np.float32),
        "labels": (np.arange(n) % max(config.num_classes, 1)).astype(np.int64),
        "masks": (rng.uniform(size=(n, 1, *sides)) > 0.8).astype(np.uint8),
    }
    if "label_maps" in config.needed_conditions():
        store["label_maps"] = rng.integers(0, config.label_classes, (n, 1, *sides)).astype(np.uint8)
    return store


def bench_training(family: str, config, batch: int, steps: int, device: str) -> float:
    spec = get_family(family)
    store = synthetic_store(family, config, max(batch * 4, 64))
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
    store = synthetic_store("ddpm", config, max(batch * 4, 64))
    data = TensorDataset(torch.from_numpy(store["images"]), torch.from_numpy(store["labels"]))
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    batches = (b for _ in range(10**9) for b in loader)

    def one_step() -> None:
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

    return examples_per_s(one_step, steps, batch, device)


def examples_per_s(one_step, steps: int, batch: int, device: torch.device) -> float:
    """Call ``one_step`` ``steps`` times; examples/s over the second half (the first half warms up)."""
    tic = None
    for step in range(steps):
        if step == steps // 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * (steps - steps // 2) / (time.perf_counter() - tic)


def bench_plain_pix2pix3d(config, batch: int, steps: int, device: torch.device) -> float:
    """The same 3D U-Net and PatchGAN trained by a Pix2Pix loop written directly in PyTorch.

    What a Pix2Pix training script does: a shuffled DataLoader over in-memory tensors, the
    condition built from the one-hot label map and the lesion mask, a random left-right flip
    of each pair, one D step (halved BCE on real and fake) and one G step (BCE against 1 plus
    lambda * L1), two Adams. Returns volumes/s over the second half of the steps.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from synthmed.generators.pix2pix3d import build

    models = build(config, 0).to(device).train()
    generator, discriminator = models["generator"], models["discriminator"]
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.learning_rate, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.learning_rate, betas=betas)
    store = synthetic_store("pix2pix3d", config, max(batch * 4, 64))
    data = TensorDataset(*(torch.from_numpy(store[k]) for k in ("images", "label_maps", "masks")))
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    bce = torch.nn.BCEWithLogitsLoss()
    batches = (b for _ in range(10**9) for b in loader)

    def one_step() -> None:
        images, label_maps, masks = (t.to(device) for t in next(batches))
        one_hot = F.one_hot(label_maps[:, 0].long(), config.label_classes).movedim(-1, 1).float()
        x = torch.cat([one_hot, masks.float()], dim=1) * 2 - 1
        y = images
        if config.augment:
            flip = (torch.rand(batch, device=device) < 0.5).view(-1, 1, 1, 1, 1)
            x, y = torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)
        with autocast:
            fake = generator(x)
            real_logits, fake_logits = discriminator(x, y).float(), discriminator(x, fake.detach()).float()
            loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits))
                            + bce(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with autocast:
            fake_logits = discriminator(x, fake).float()
            loss_g = bce(fake_logits, torch.ones_like(fake_logits)) + config.lambda_l1 * F.l1_loss(fake.float(), y)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    return examples_per_s(one_step, steps, batch, device)


# Plain reference loops by family, and what they are called in the table.
PLAIN_LOOPS = {"ddpm": (bench_plain_ddpm, "plain diffusers loop images/s"),
               "pix2pix3d": (bench_plain_pix2pix3d, "plain PyTorch loop volumes/s")}


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
    store = synthetic_store(family, config, n)
    needed = config.needed_conditions()
    conditions = Conditions(
        n=n,
        labels=torch.from_numpy(store["labels"]) if "labels" in needed else None,
        masks=torch.from_numpy(store["masks"].astype(np.float32)) if "masks" in needed else None,
        label_maps=torch.from_numpy(store["label_maps"].astype(np.int64)) if "label_maps" in needed else None,
    )
    tic = time.perf_counter()
    spec.sample(models, config, conditions, sampler, torch.Generator().manual_seed(0))
    return n / (time.perf_counter() - tic)


def plan_images_per_s(family: str, config, sampler: SamplerSpec, batch: int | str, throughput: ThroughputConfig,
                      batches: int) -> tuple[float, float, int, str]:
    """Images/s of ``generate_from_plan`` over ``batches`` batches (class rows; a 2-step warm-up first).

    Returns ``(images/s, CPU seconds per image, batch size used, precision used)`` (``batch`` may be
    ``auto``). CPU seconds (the process's, all threads) hold on a shared machine where wall time does not.
    """
    import pandas as pd

    spec = get_family(family)
    models = spec.build(config, 0).eval()
    names = [f"class{i}" for i in range(max(config.num_classes, 1))]
    condition = "class" if "labels" in config.needed_conditions() else "unconditional"

    def plan(n: int) -> pd.DataFrame:
        return pd.DataFrame([(condition, names[i % len(names)], 1, "") for i in range(n)],
                            columns=["condition", "label", "count", "case"])

    warm = generate_from_plan(spec, config, models, plan(batch if batch != "auto" else 8), names,
                              SamplerSpec(sampler.name, 2, sampler.guidance_scale), seed=0, batch_size=batch,
                              checkpoint="bench", throughput=throughput)
    size = int(warm.provenance["batch_size"].iloc[0])  # with auto: the probe's choice, reused below
    n = size * batches
    tic, cpu = time.perf_counter(), time.process_time()
    result = generate_from_plan(spec, config, models, plan(n), names, sampler, seed=0, batch_size=size,
                                checkpoint="bench", throughput=throughput)
    elapsed, cpu = time.perf_counter() - tic, time.process_time() - cpu
    return n / elapsed, cpu / n, size, str(result.provenance["precision"].iloc[0])


def image_step_seconds(family: str, params: dict, px: int, batch: int, guidance: float, device: torch.device) -> float:
    """Seconds per image per denoising step at ``px`` (the profile's architecture at that size; 3 steps timed):
    on the CPU, the process's CPU seconds (load-independent), on CUDA wall seconds (synchronised)."""
    config = config_from_params(family, {**params[family]["model"], "image_size": px})
    spec = get_family(family)
    models = spec.build(config, 0).eval().to(device)
    labels = torch.arange(batch) % max(config.num_classes, 1)
    conditions = Conditions(n=batch, labels=labels if "labels" in config.needed_conditions() else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    with autocast:
        spec.sample(models, config, conditions, SamplerSpec("ddim", 1, guidance), torch.Generator().manual_seed(0))
        tic = clock()
        spec.sample(models, config, conditions, SamplerSpec("ddim", 3, guidance), torch.Generator().manual_seed(0))
    return (clock() - tic) / (3 * batch)  # sample() returns CPU tensors: the device is synchronised


def sampling_throughput(args, params, device: torch.device, say) -> None:
    """The ``--sampling-throughput`` table (see the module docstring)."""
    family = "ddpm"
    config = config_from_params(family, params[family]["model"])
    options = dict(params[family]["sampling"].get("throughput", {}))
    options |= {"device": str(device)} | ({"compile": True} if args.compile else {})
    throughput = ThroughputConfig(**options)
    batches = [b if b == "auto" else int(b) for b in args.sampling_batches.split(",")]
    samplers = [("ddim", 50), ("dpmsolver++", 20)]
    measured: dict[tuple[str, float], float] = {}
    cpu_per_image: dict[tuple[str, float], float] = {}
    say(f"{'sampler':16} {'w':>4} {'batch':>6} {'precision':>9} {'images/s':>10} {'s/image':>9} {'CPU s/image':>12}")
    for name, steps in samplers:
        for guidance in (1.0, 2.0):
            for batch in batches:
                rate, cpu, size, precision = plan_images_per_s(family, config, SamplerSpec(name, steps, guidance),
                                                               batch, throughput, args.sampling_repeats)
                label = f"{size}" + (" (auto)" if batch == "auto" else "")
                say(f"{f'{name}-{steps}':16} {guidance:>4g} {label:>6} {precision:>9} {rate:>10.2f} {1 / rate:>9.4f} "
                    f"{cpu:>12.4f}")
                cpu_per_image[(name, guidance)] = min(cpu_per_image.get((name, guidance), math.inf), cpu)
                measured[(name, guidance)] = max(measured.get((name, guidance), 0.0), rate)
    for name, _ in samplers:
        say(f"{name:16} guidance cost w=2 / w=1 (best batch): {measured[(name, 1.0)] / measured[(name, 2.0)]:.2f}x "
            f"wall, {cpu_per_image[(name, 2.0)] / cpu_per_image[(name, 1.0)]:.2f}x CPU")
    say(f"{'DPM-Solver++-20 vs DDIM-50 (w=2, best batch): ':48}"
        f"{measured[('dpmsolver++', 2.0)] / measured[('ddim', 2.0)]:.2f}x faster wall, "
        f"{cpu_per_image[('ddim', 2.0)] / cpu_per_image[('dpmsolver++', 2.0)]:.2f}x less CPU")
    # One image-step at each size (same architecture), relative to the profile's own size.
    base_px = int(config.image_size)
    small_batch = max(int(b) for b in batches if b != "auto") if any(b != "auto" for b in batches) else 8
    costs = {px: image_step_seconds(family, params, px, small_batch, 2.0, device) for px in args.extrapolate_px}
    say(f"{'CPU ' if device.type == 'cpu' else ''}seconds per image-step, w=2, batch {small_batch}: "
        + ", ".join(f"{px} px {cost:.4g}" for px, cost in costs.items()))
    say(f"extrapolation to {args.target_images:,} images (the measured best batch at {base_px} px, scaled by "
        "the image-step cost of each size):")
    say(f"{'sampler':16} {'w':>4} " + " ".join(f"{f'{px} px h':>10}" for px in costs)
        + "   " + " ".join(f"{f'{px} px CPU-h':>12}" for px in costs))
    for name, steps in samplers:
        for guidance in (1.0, 2.0):
            scale = [costs[px] / costs[base_px] if base_px in costs else float("nan") for px in costs]
            hours = [args.target_images / measured[(name, guidance)] * k / 3600 for k in scale]
            cpu_hours = [args.target_images * cpu_per_image[(name, guidance)] * k / 3600 for k in scale]
            say(f"{f'{name}-{steps}':16} {guidance:>4g} " + " ".join(f"{h:>10.2f}" for h in hours)
                + "   " + " ".join(f"{h:>12.2f}" for h in cpu_hours))


def steps_sweep_cost(params, say) -> None:
    """The ``--steps-sweep-cost`` table (see the module docstring)."""
    import pandas as pd

    from synthmed.core.config import from_params
    from synthmed.generators.base import TrainedGenerator
    from synthmed.generators.sampling import SamplingConfig
    from synthmed.metrics.features import ClassifierConfig, ConvClassifier, FeatureNetworkConfig, feature_network
    from synthmed.protocols.evaluation import EvaluationSet, FidelityConfig, Split
    from synthmed.protocols.steps_sweep import StepsSweepConfig, steps_sweep

    config = config_from_params("ddpm", params["ddpm"]["model"])
    names = tuple(f"class{i}" for i in range(max(config.num_classes, 1)))
    plan = [{"condition": "class", "label": name, "count": 32} for name in names]
    generator = TrainedGenerator("ddpm", config, get_family("ddpm").build(config, 0).eval(), names)
    evaluation_params = params["evaluation"]
    px = int(evaluation_params["sources"]["slices"]["image_px"])
    encoder = ConvClassifier(ClassifierConfig(channels=config.channels, num_classes=max(len(names), 2), image_px=px,
                                              width=evaluation_params["encoder"]["width"],
                                              feature_dim=evaluation_params["encoder"]["feature_dim"]))
    network = feature_network(from_params(FeatureNetworkConfig, evaluation_params["feature_network"], "fn"), encoder)
    images = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (600, config.channels, px, px)).astype(np.float32))
    reference = Split(images, torch.arange(600) % len(names), np.arange(600), network(images))
    evaluation = EvaluationSet("ddpm", "slices", names, network, reference, reference, reference, reference,
                               pd.DataFrame({"index": range(600)}), None, None)
    sampling = from_params(SamplingConfig, {**params["ddpm"]["sampling"], "plan": plan}, "ddpm.sampling")
    sweep = from_params(StepsSweepConfig, evaluation_params["steps_sweep"], "evaluation.steps_sweep")
    fidelity = from_params(FidelityConfig, evaluation_params["fidelity"], "evaluation.fidelity")
    wall, cpu = time.perf_counter(), time.process_time()
    table = steps_sweep(generator, evaluation, sampling, sweep, fidelity)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for line in table[["sampler", "steps", "guidance", "images", "seconds_per_image", "cpu_seconds_per_image",
                       "batch_size", "precision"]].to_string(index=False).splitlines():
        say(line)
    say(f"steps sweep total ({len(table)} points, {int(table['images'].sum())} images, untrained model): "
        f"wall {wall:.1f} s, CPU {cpu:.1f} s")


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
    parser.add_argument("--sampling-throughput", action="store_true",
                        help="DDPM sampling images/s with and without guidance, DDIM-50 vs DPM-Solver++-20, at "
                             "--sampling-batches, and the extrapolation to --target-images (instead of the table)")
    parser.add_argument("--sampling-batches", default="4,8,16", help="comma-separated batch sizes (or auto)")
    parser.add_argument("--sampling-repeats", type=int, default=1, help="batches timed per measurement")
    parser.add_argument("--extrapolate-px", type=lambda v: [int(x) for x in v.split(",")], default=[32, 64, 128])
    parser.add_argument("--target-images", type=int, default=20000)
    parser.add_argument("--compile", action="store_true", help="--sampling-throughput with torch.compile")
    parser.add_argument("--steps-sweep-cost", action="store_true",
                        help="time the profile's evaluation.steps_sweep (instead of the table)")
    parser.add_argument("--loader", action="store_true",
                        help="images/s of the training loader (one read per image / per batch / from memory)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared machine: several processes "
                                                    "spinning 2 OpenMP threads each on 2 cores slow down ~40x)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
    if args.loader:
        say(f"training loader over a memory-mapped store, batch 64, 2,048 images, 0 workers; load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        loader_throughput(args, say)
    elif args.steps_sweep_cost:
        say(f"profile: {args.profile}; evaluation.steps_sweep cost; load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        steps_sweep_cost(params, say)
    elif args.sampling_throughput:
        say(f"profile: {args.profile}; DDPM sampling throughput, {args.sampling_repeats} batch(es) timed per row; "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        sampling_throughput(args, params, device, say)
    else:
        say(f"profile: {args.profile}; training steps {args.steps} (last half timed); samples {args.samples}")
        say(f"{'family':9} {'measure':38} {'value':>12}")
        _measure(args, params, device, say)
    if args.append_results:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/bench_generators.py " + shlex.join(sys.argv[1:])
        with args.append_results.open("a", encoding="utf-8") as out:
            what = ("Training loader" if args.loader else "Steps sweep cost" if args.steps_sweep_cost else
                    "DDPM sampling throughput" if args.sampling_throughput else "Generators")
            out.write(f"\n## {what}, `{args.profile}` profile on {device.type} ({stamp})\n\n"
                      f"```\n{command}\n```\n\n```\n" + "\n".join(lines) + "\n```\n")
        print(f"appended to {args.append_results}")


def loader_throughput(args, say, sizes: tuple[tuple[int, int], ...] = ((64, 32), (128, 128)),
                      images: int = 2048, batch: int = 64) -> None:
    """Images/s of the training loader (``ArrayBatches`` in a ``DataLoader``) over a memory-mapped
    store on disk: one item at a time (``__getitem__``, as before), a whole batch per read
    (``__getitems__``), and the same images from memory (a ``TensorDataset``, the ceiling)."""
    import tempfile

    from torch.utils.data import DataLoader, Dataset, TensorDataset

    from synthmed.generators.training import ArrayBatches

    class OneByOne(Dataset):  # the loader as it was: the DataLoader reads item by item
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            return self.inner[i]

    say(f"{'stored px':>9} {'trained px':>10} {'loader':32} {'images/s':>10} {'ms/image':>9} "
        f"{'CPU ms/image':>12}")
    for stored, size in sizes:
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            arrays = {"images": rng.uniform(-1, 1, (images, 1, stored, stored)).astype(np.float32),
                      "labels": (np.arange(images) % 3).astype(np.int64),
                      "masks": (rng.uniform(size=(images, 1, stored, stored)) > 0.5).astype(np.uint8)}
            for name, array in arrays.items():
                np.save(Path(tmp) / f"{name}.npy", array)
            store = {name: np.load(Path(tmp) / f"{name}.npy", mmap_mode="r") for name in arrays}
            batches = ArrayBatches(store, np.arange(images), size=size)
            memory = TensorDataset(torch.from_numpy(np.asarray(batches.__getitems__(range(images))[0]["images"][None])
                                                    .repeat(images, 0)))
            for name, dataset in (("one image per read (before)", OneByOne(batches)),
                                  ("one batch per read (__getitems__)", batches),
                                  ("from memory (TensorDataset)", memory)):
                loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                    generator=torch.Generator().manual_seed(0))
                start, cpu = time.perf_counter(), time.process_time()
                count = sum(len(next(iter(b.values())) if isinstance(b, dict) else b[0]) for b in loader)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                say(f"{stored:9d} {size:10d} {name:32} {count / wall:10.0f} {1000 * wall / count:9.3f} "
                    f"{1000 * cpu / count:12.3f}")


def _measure(args, params, device: torch.device, say) -> None:
    """Every line of the table goes through ``say`` (printed, and kept for --append-results)."""
    for family in args.families.split(","):
        spec = get_family(family)
        config = config_from_params(family, params[family]["model"])
        batch = int(params[family]["training"]["batch_size"])
        n_params = sum(p.numel() for p in spec.build(config, 0).parameters())
        say(f"{family:9} {'parameters (all modules)':38} {n_params:>12,}")
        unit = "volumes" if spec.spatial_dims == 3 else "images"
        size = f"{config.image_size}^3" if spec.spatial_dims == 3 else f"{config.image_size} px"
        training_label = f"training {unit}/s (batch {batch}, {size})"
        digits = 2 if spec.spatial_dims == 3 else 1  # a few volumes/s: two decimals
        if family in PLAIN_LOOPS:
            plain_loop, plain_label = PLAIN_LOOPS[family]
            # Interleaved, so machine drift hits both loops alike; the median is reported.
            pairs, peaks = [], {"synthmed": 0.0, "plain": 0.0}
            for _ in range(args.repeats):
                with device_peak(device, peaks, "synthmed"):
                    ours = bench_training(family, config, batch, args.steps, args.device)
                with device_peak(device, peaks, "plain"):
                    plain = plain_loop(config, batch, args.steps, device)
                pairs.append((ours, plain))
            ours = float(np.median([a for a, _ in pairs]))
            plain = float(np.median([b for _, b in pairs]))
            ratios = [a / b for a, b in pairs]
            say(f"{family:9} {training_label:38} {ours:>12.{digits}f}")
            say(f"{family:9} {plain_label:38} {plain:>12.{digits}f}")
            say(f"{family:9} {f'ratio synthmed / plain (median of {len(ratios)})':38} "
                  f"{float(np.median(ratios)):>12.2f}")
            say(f"{family:9} {'ratio range':38} {min(ratios):>6.2f}..{max(ratios):.2f}")
            if device.type == "cuda":
                for who, peak in peaks.items():
                    say(f"{family:9} {f'peak GPU memory MB, {who} training':38} {peak:>12.0f}")
        else:
            ours = bench_training(family, config, batch, args.steps, args.device)
            say(f"{family:9} {training_label:38} {ours:>12.{digits}f}")
        if family == "ddpm":
            if args.mfu:
                flops = ddpm_step_flops(config, batch, device)
                achieved = flops * ours / batch  # FLOP/s: steps/s x FLOPs per step
                peak = device_peak_tflops(device, args.peak_tflops)
                say(f"{family:9} {'GFLOPs per training step':38} {flops / 1e9:>12.2f}")
                say(f"{family:9} {'achieved TFLOP/s (model FLOPs)':38} {achieved / 1e12:>12.3f}")
                mfu = f"{100 * achieved / (peak * 1e12):>11.1f}%" if peak else f"{'n/a':>12}"
                say(f"{family:9} {f'MFU (peak {peak or 0:g} TFLOP/s)':38} {mfu}")
        if family == "ddpm":
            ddpm_steps = min(1000, int(config.train_timesteps))  # ancestral DDPM: at most the training steps
            samplers = [SamplerSpec("ddim", 50), SamplerSpec("dpmsolver++", 20), SamplerSpec("ddpm", ddpm_steps),
                        SamplerSpec("ddim", 50, guidance_scale=2.0)]
        else:
            samplers = [SamplerSpec("ddim", 1)]
        for sampler in samplers:
            label = f"sampling {unit}/s {sampler.name} {sampler.steps} steps" + (
                f" w={sampler.guidance_scale:g}" if sampler.guidance_scale != 1.0 else "")
            n = args.samples if sampler.steps <= 100 else max(args.samples // 4, 1)
            say(f"{family:9} {label:38} {bench_sampling(family, config, sampler, n):>12.1f}")
        say(f"{family:9} {'peak memory MB (process, so far)':38} {peak_memory_mb(device):>12.0f}")


if __name__ == "__main__":
    main()
