"""Probe (not wired into any pipeline): can a small copy-detection network trained on the training
slices alone separate held-out patients from the gate's planted copies, where pixel NCC cannot?

Trains a small CNN by instance discrimination (SimCLR NT-Xent, Chen et al. 2020) on the
reference split of an environment's slices (the slices the rebalancing gate uses): two views of
every training slice, each disguised by the plant's family of augmentations (a crop of a random
fraction resized back, flips, a shift, gain/offset, noise), drawn wider than the plant's
settings. Then runs `prepare_gate` with the network as ``embed`` and ``flag_on_features: true``
(threshold calibrated on the held-out split like the pixel one) and prints both thresholds, the
self-test recall in each space and together, and the time taken. Nothing is saved.

Random batches hold few hard negatives: most pairs are slices of different levels of the head,
which a pooled feature tells apart without looking at the patient. ``--hard-negatives K`` builds
each batch from anchors and, for each, K of its ``--pool`` nearest training slices of *other*
patients (plain correlation), so the network must tell patients apart at the same level;
``--encoder spatial`` keeps an 8x8 feature map (flattened) instead of pooling it away.

    PYTHONPATH=src python benchmarks/copy_detector_probe.py --steps 600
    PYTHONPATH=src python benchmarks/copy_detector_probe.py --steps 1500 --batch 32 \
        --hard-negatives 3 --encoder spatial
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gate_diagnose import SLICES, parameters
from synthmed.datasets.array_store import ArrayStoreDataset
from synthmed.privacy.memorisation import prepare_gate
from synthmed.protocols.encoders import patient_keys, split_images
from synthmed.protocols.evaluation import gate_config


def disguise(images: torch.Tensor, generator: torch.Generator, *, min_crop: float, max_shift_px: int,
             max_noise: float) -> torch.Tensor:
    """A random view of each image: crop-resize (scale in [min_crop, 1], random position), a flip
    with probability 1/2 (left-right or up-down), a shift, gain/offset, noise; clipped to [-1, 1]."""
    n, _, h, w = images.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    scale = uniform(min_crop, 1.0)
    tx, ty = (1 - scale) * uniform(-1, 1), (1 - scale) * uniform(-1, 1)
    shifts = torch.randint(-max_shift_px, max_shift_px + 1, (n, 2), generator=generator).float()
    tx, ty = tx - 2 * shifts[:, 0] / w, ty - 2 * shifts[:, 1] / h
    flip = torch.rand(n, generator=generator) < 0.5
    axis = torch.rand(n, generator=generator) < 0.5
    sx = torch.where(flip & axis, -scale, scale)
    sy = torch.where(flip & ~axis, -scale, scale)
    zeros = torch.zeros(n)
    theta = torch.stack([torch.stack([sx, zeros, tx], 1), torch.stack([zeros, sy, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out * uniform(0.85, 1.15).view(n, 1, 1, 1) + uniform(-0.1, 0.1).view(n, 1, 1, 1)
    out = out + torch.randn(out.shape, generator=generator) * uniform(0.0, max_noise).view(n, 1, 1, 1)
    return out.clamp(-1.0, 1.0)


class Encoder(nn.Module):
    def __init__(self, width: int, dim: int):
        super().__init__()
        layers, channels = [], 1
        for i, out in enumerate((width, width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(channels, out, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            channels = out
        self.backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


class SpatialEncoder(nn.Module):
    """Keeps where things are: an 8x8 map of 16 channels at 32 px, flattened, then a linear layer."""

    def __init__(self, width: int, dim: int, image_px: int):
        super().__init__()
        side = image_px // 4
        self.backbone = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 16, 1), nn.Flatten(), nn.Linear(16 * side * side, dim))
        self.head = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def other_patient_neighbours(train: torch.Tensor, patients: np.ndarray, pool: int) -> torch.Tensor:
    """``(N, pool)``: each training slice's most correlated slices of other patients (no search)."""
    flat = train.flatten(1)
    flat = F.normalize(flat - flat.mean(dim=1, keepdim=True), dim=1)
    similarity = flat @ flat.T
    codes = torch.as_tensor(pd.factorize(patients)[0])
    similarity[codes[:, None] == codes[None, :]] = -2.0
    return similarity.topk(pool, dim=1).indices


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([a, b]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(-1e9)
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="local",
                        help="Kedro configuration environment (local: conf/base, the make demo cohort)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", choices=("pooled", "spatial"), default="pooled")
    parser.add_argument("--dim", type=int, default=64, help="feature size (spatial encoder)")
    parser.add_argument("--hard-negatives", type=int, default=0, metavar="K",
                        help="per anchor, K other patients' nearest slices in the batch (0: random batches; "
                             "with K, --batch is the number of anchors)")
    parser.add_argument("--pool", type=int, default=8, help="the nearest slices K is drawn from")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)

    params = parameters(args.env)["evaluation"]
    source = params["sources"]["slices"]
    gate = gate_config(params["memorisation"], action="drop")
    store = ArrayStoreDataset(path=str(SLICES / "arrays")).load()
    manifest = pd.read_csv(SLICES / "manifest.csv", dtype={"patient_key": str, "item_id": str})
    train, _, train_ids = split_images(store, manifest, source["reference_split"], source["image_px"])
    held_out, _, _ = split_images(store, manifest, source["held_out_split"], source["image_px"])

    if args.encoder == "spatial":
        model: nn.Module = SpatialEncoder(args.width, args.dim, source["image_px"])
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    else:
        model = Encoder(args.width, 64)
        optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    if args.hard_negatives:
        patients = patient_keys(manifest, train_ids)
        neighbours = other_patient_neighbours(train, patients, args.pool)
        anchors_from = torch.nonzero(train.std(dim=(1, 2, 3)) > gate.plant.min_source_std).flatten()
    generator = torch.Generator().manual_seed(args.seed)
    plant = gate.plant
    kwargs = {"min_crop": plant.crop_fraction - 0.05, "max_shift_px": plant.max_shift_px + 1,
              "max_noise": plant.noise_std * 1.5}
    start = time.perf_counter()
    model.train()
    for step in range(args.steps):
        if args.hard_negatives:
            anchors = anchors_from[torch.randint(0, len(anchors_from), (args.batch,), generator=generator)]
            chosen = torch.randperm(args.pool, generator=generator)[:args.hard_negatives]
            batch = train[torch.unique(torch.cat([anchors, neighbours[anchors][:, chosen].flatten()]))]
        else:
            batch = train[torch.randint(0, len(train), (args.batch,), generator=generator)]
        views = disguise(torch.cat([batch, batch]), generator, **kwargs)
        projected = model.head(model(views))
        loss = nt_xent(projected[:len(batch)], projected[len(batch):], args.temperature)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    trained = time.perf_counter() - start
    model.eval()

    def embed(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model(images[i:i + 512]) for i in range(0, len(images), 512)])

    mean = embed(train).mean(dim=0, keepdim=True)
    config = dataclasses.replace(gate, use_features=True, flag_on_features=True)
    start = time.perf_counter()
    prepared = prepare_gate(train, held_out, config=config, embed=lambda x: embed(x) - mean)
    planted = prepared.planted
    pixel = planted["pixel_similarity"] >= prepared.pixel_threshold
    feature = planted["feature_similarity"] >= prepared.feature_threshold
    held = prepared.held_out["feature_similarity"]
    print(f"\ntrained {args.steps} steps in {trained:.0f} s; prepare_gate {time.perf_counter() - start:.0f} s")
    print(f"pixel threshold {prepared.pixel_threshold:.4f}: recall {pixel.mean():.3f}")
    print(f"feature threshold {prepared.feature_threshold:.4f}: recall {feature.mean():.3f}; held-out feature "
          f"similarity q0.5 {held.quantile(0.5):.4f} q0.99 {held.quantile(0.99):.4f} max {held.max():.4f}")
    print(f"either (the gate's self-test recall): {prepared.self_test_recall:.3f}; found source in feature space "
          f"{(planted['feature_neighbour'] == planted['source_index']).mean():.3f}")
    print("planted feature similarity quantiles:",
          ", ".join(f"q{q:g}={planted['feature_similarity'].quantile(q):.4f}" for q in (0.0, 0.01, 0.05, 0.5)))
    # The gate calibrates on every held-out image; blank ones (std <= min_source_std, never
    # planted) share one feature vector with the blank training slices (cosine 1). Without them:
    structured = (held_out.std(dim=(1, 2, 3)) > plant.min_source_std).numpy()
    kept = prepared.held_out["feature_similarity"].to_numpy()[structured]
    threshold = float(np.percentile(kept, gate.percentile))
    alone = planted["feature_similarity"] >= threshold
    print(f"without the {int((~structured).sum())} held-out images with std <= min_source_std "
          f"{plant.min_source_std}: feature threshold {threshold:.4f} (held-out max {kept.max():.4f}), feature "
          f"recall {alone.mean():.3f}, either {(alone | pixel).mean():.3f}")
    missed = planted[~(pixel | feature)]
    print(missed[["source_index", "pixel_similarity", "feature_similarity", "transform"]].to_string(max_colwidth=60))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
