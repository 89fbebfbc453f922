"""Probe (not wired into any pipeline): what ``training.class_balance`` does to a family's rare class.

Trains one family (``dcgan`` or ``pix2pix``, the ``conf/base`` settings of an environment) on
the train split of ``make demo``'s slices, once with plain epochs and once with class-balanced
ones (the rare class's rows repeated up to the common class's count), and for each prints:

- the training time;
- how alike 32 generated images of the rare class are: the mean and largest Pearson
  correlation over all pairs and how many pairs exceed 0.95, beside the same figures for the
  32 real held-out (validation) images they are compared with; a family that collapses onto
  one image has pairs near 1;
- for label-map families (Pix2Pix): the lesion's contrast, ``(mean inside the lesion label -
  mean in a 3-pixel ring of tissue around it) / std of the brain``, on the same 32 validation
  label maps for generated and real images (negative: darker than the tissue around it).

conf/base's DCGAN learns the lesion patches since 2026-12-06 (32 px, DiffAugment); its slice runs
in RESULTS used the whole-slice settings now in conf/template (``--set image_size=64`` and so on).

Nothing is saved but a PNG per run (generated row above the real row) under ``--out``.

    PYTHONPATH=src python benchmarks/class_balance_probe.py --family dcgan
    PYTHONPATH=src python benchmarks/class_balance_probe.py --family pix2pix --steps 800
    PYTHONPATH=src python benchmarks/class_balance_probe.py --family pix2pix --balance on \
        --set lesion_l1_weight=1.0        # model settings over the profile's (repeatable)

For Pix2Pix the contrast is also given for small (under ``--small-px`` pixels at the model's
size) and large lesions apart, with the count of lesions at a contrast of 1 or more, and the
mean paired SSIM and PSNR of the generated images against the real ones of the same maps, and a
ring profile: the median intensity inside the lesion and in bands of grey and white matter at
0-1, 1-2, 2-3, 3-6 and over 10 px from it (a bright halo shows as bands above the far tissue).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from scipy import ndimage  # noqa: E402

from gate_diagnose import SLICES, parameters  # noqa: E402
from synthmed.core.config import from_params  # noqa: E402
from synthmed.datasets.array_store import ArrayStoreDataset  # noqa: E402
from synthmed.generators.base import Conditions, SamplerSpec  # noqa: E402
from synthmed.generators.registry import config_from_params, get_family  # noqa: E402
from synthmed.generators.training import ArrayBatches, TrainingConfig, train  # noqa: E402
from synthmed.imaging.labels import GREY, WHITE  # noqa: E402
from synthmed.metrics.fidelity import paired_metrics  # noqa: E402
from synthmed.metrics.lesion_signal import LesionSignalConfig  # noqa: E402
from synthmed.metrics.lesion_signal import lesion_contrast as contrast_of  # noqa: E402

N = 32


def pair_correlations(images: torch.Tensor) -> dict[str, float]:
    """Pearson correlation of every pair of images: mean, max and the count above 0.95."""
    flat = images.reshape(len(images), -1).double().numpy()
    flat = flat - flat.mean(axis=1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True) + 1e-12
    pairs = (flat @ flat.T)[np.triu_indices(len(flat), 1)]
    return {"mean": round(float(pairs.mean()), 3), "max": round(float(pairs.max()), 4),
            "pairs_above_0.95": int((pairs > 0.95).sum()), "pairs": len(pairs)}


def lesion_contrast(images: torch.Tensor, label_maps: torch.Tensor, lesion: int) -> dict[str, float]:
    """The evaluation's lesion contrast (``synthmed.metrics.lesion_signal``) per image with a lesion of
    >= 3 px: mean and median."""
    config = LesionSignalConfig(mask_label=lesion, ring_px=3, min_lesion_px=3)
    values = contrast_of(images.numpy(), label_maps.numpy(), config)
    values = values[np.isfinite(values)]
    return {"mean": round(float(np.mean(values)), 3), "median": round(float(np.median(values)), 3),
            "images": len(values)}


def contrast_by_size(generated: np.ndarray, real: np.ndarray, label_maps: np.ndarray, config: LesionSignalConfig,
                     small_px: int) -> dict[str, object]:
    """Median and mean lesion contrast (``synthmed.metrics.lesion_signal.lesion_contrast`` with ``config``) of
    generated and real images of the same label maps, for lesions under ``small_px`` pixels ("small") and
    the others ("large"), how many of each reach a contrast of 1, and the correlation of the generated
    and real contrasts over all the maps measured."""
    drawn, truth = (contrast_of(images, label_maps, config) for images in (generated, real))
    sizes = (label_maps == config.mask_label).sum(axis=(1, 2, 3))
    out = {}
    measured = np.isfinite(drawn) & np.isfinite(truth)
    if measured.sum() > 2:
        out["correlation"] = round(float(np.corrcoef(drawn[measured], truth[measured])[0, 1]), 2)
    for name, chosen in (("small", sizes < small_px), ("large", sizes >= small_px)):
        keep = chosen & measured
        if keep.any():
            out[name] = {"lesions": int(keep.sum()), "median": round(float(np.median(drawn[keep])), 2),
                         "real_median": round(float(np.median(truth[keep])), 2),
                         "mean": round(float(drawn[keep].mean()), 2), "real_mean": round(float(truth[keep].mean()), 2),
                         "at_least_1": int((drawn[keep] >= 1).sum()), "real_at_least_1": int((truth[keep] >= 1).sum())}
    return out


def ring_profile(images: torch.Tensor, label_maps: torch.Tensor, lesion: int) -> dict[str, float]:
    """Median over the images with a lesion of >= 3 px of the mean intensity inside the lesion and in
    bands of grey and white matter at 0-1, 1-2, 2-3, 3-6 and over 10 px from it: a halo around
    the lesion (perilesional edema, or the blur of downsampling) shows as bands brighter than the
    far tissue."""
    bands = {"0-1": (0, 1), "1-2": (1, 2), "2-3": (2, 3), "3-6": (3, 6), "far": (10, np.inf)}
    rows = []
    for image, labels in zip(images.numpy()[:, 0], label_maps.numpy()[:, 0]):
        inside = labels == lesion
        if inside.sum() < 3:
            continue
        distance = ndimage.distance_transform_edt(~inside)
        tissue = np.isin(labels, (GREY, WHITE))
        row = {"lesion": float(image[inside].mean())}
        for name, (low, high) in bands.items():
            band = tissue & (distance > low) & (distance <= high)
            row[name] = float(image[band].mean()) if band.sum() > 2 else np.nan
        rows.append(row)
    return {key: round(float(np.nanmedian([row[key] for row in rows])), 3) for key in rows[0]} if rows else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["dcgan", "pix2pix"], default="dcgan")
    parser.add_argument("--env", default="local", help="Kedro environment over conf/base (default: local)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's)")
    parser.add_argument("--rare-label", type=int, default=1, help="stored label of the rare class (lesion: 1)")
    parser.add_argument("--lesion-label", type=int, default=4, help="label-map value of a lesion")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "class_balance_probe")
    parser.add_argument("--balance", choices=["both", "off", "on"], default="both",
                        help="train with plain epochs, class-balanced ones or both (default: both)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a model setting over the profile's, its value read as YAML (repeatable)")
    parser.add_argument("--small-px", type=int, default=20, help="lesions under this many pixels are small")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the profile's)")
    args = parser.parse_args()

    params = parameters(args.env)[args.family]
    for setting in args.set:
        key, _, value = setting.partition("=")
        params["model"][key] = yaml.safe_load(value)
    store = ArrayStoreDataset(path=str(SLICES / "arrays")).load()
    manifest = pd.read_csv(SLICES / "manifest.csv", dtype={"patient_key": str, "item_id": str})
    model_config = config_from_params(args.family, params["model"])
    training = from_params(TrainingConfig, params["training"], f"{args.family}.training")
    training = dataclasses.replace(training, checkpoint_every=0, sample_every=0,
                                   steps=args.steps or training.steps,
                                   seed=training.seed if args.seed is None else args.seed)
    sampler = from_params(SamplerSpec, params["sampling"]["sampler"], f"{args.family}.sampling.sampler")
    spec = get_family(args.family)
    train_rows = np.sort(manifest.loc[manifest["split"] == "train", "index"].to_numpy())
    held_out = np.sort(manifest.loc[manifest["split"] == "validation", "index"].to_numpy())
    rare = held_out[np.asarray(store["labels"][held_out]) == args.rare_label]
    picks = np.sort(np.random.default_rng(0).choice(rare, min(N, len(rare)), replace=False))

    def resized(name: str, mode: str) -> torch.Tensor:
        values = torch.from_numpy(np.array(store[name][picks], dtype=np.float32))
        return torch.nn.functional.interpolate(values, size=model_config.image_size, mode=mode)

    real, label_maps = resized("images", "area"), resized("masks", "nearest").round()
    conditions = (Conditions(n=len(picks), label_maps=label_maps.to(torch.int64)) if args.family == "pix2pix" else
                  Conditions(n=len(picks), labels=torch.full((len(picks),), args.rare_label, dtype=torch.int64)))
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{args.family}: {len(train_rows)} training slices, {training.steps} steps; {len(picks)} held-out images "
          f"of label {args.rare_label}; real pairs: {json.dumps(pair_correlations(real))}")
    if args.family == "pix2pix":
        print(f"  real lesion contrast: {json.dumps(lesion_contrast(real, label_maps, args.lesion_label))}")
        print(f"  real ring profile: {json.dumps(ring_profile(real, label_maps, args.lesion_label))}")
    for balance in {"both": (False, True), "off": (False,), "on": (True,)}[args.balance]:
        with tempfile.TemporaryDirectory() as checkpoints:
            tic = time.perf_counter()
            models, _ = train(spec, model_config, dataclasses.replace(training, class_balance=balance),
                              ArrayBatches(store, train_rows, size=model_config.image_size), Path(checkpoints))
            seconds = time.perf_counter() - tic
        generated = spec.sample(models, model_config, conditions, sampler, torch.Generator().manual_seed(0)).float()
        line = (f"  class_balance={balance}: trained in {seconds:.0f} s; "
                f"pairs {json.dumps(pair_correlations(generated))}")
        if args.family == "pix2pix":
            line += f"; lesion contrast {json.dumps(lesion_contrast(generated, label_maps, args.lesion_label))}"
            config = LesionSignalConfig(mask_label=args.lesion_label, ring_px=3, min_lesion_px=3)
            by_size = contrast_by_size(generated.numpy(), real.numpy(), label_maps.numpy(), config, args.small_px)
            line += f"; by size {json.dumps(by_size)}"
            line += f"; ring profile {json.dumps(ring_profile(generated, label_maps, args.lesion_label))}"
            paired = paired_metrics(generated.clamp(-1, 1), real)
            line += f"; paired SSIM {paired['ssim'].mean().item():.3f}, PSNR {paired['psnr'].mean().item():.2f} dB"
        print(line, flush=True)
        figure, axes = plt.subplots(2, 8, figsize=(12, 3.2))
        for k in range(8):
            for row, images in enumerate((generated, real)):
                axes[row, k].imshow(images[k, 0], cmap="gray", vmin=-1, vmax=1)
                axes[row, k].axis("off")
        figure.savefig(args.out / f"{args.family}_balance_{balance}.png", dpi=80)
        plt.close(figure)


if __name__ == "__main__":
    main()
