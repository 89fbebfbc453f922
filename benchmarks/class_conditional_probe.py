"""Probe (not wired into any pipeline): one training run of a class-conditional family on make demo's slices.

Trains the ``dcgan`` or ``ddpm`` family of an environment (``conf/base`` by default) on the
train split of ``make demo``'s slices with the model and training settings given on the command
line, then draws 32 images per class (for the DDPM once per ``--guidance`` scale, with the
profile's sampler otherwise) and prints:

- the training time;
- per class, how alike the 32 generated images are (mean and largest Pearson correlation over
  all pairs, pairs above 0.95; ``class_balance_probe.pair_correlations``) beside the first 32
  real validation images of that class (neighbouring slices: their pairs are alike too);
- per class, the largest Pearson correlation of each generated image with any training image
  (median and max over the 32; near 1: a copy);
- the bright-spot score of each image, ``(99.5th percentile of the brain - its median) / its
  std`` (brain: pixels above -0.9; the evaluation's lesion signal, ``synthmed.metrics.lesion_signal``),
  at the model's size: FLAIR lesions are the brightest tissue, so on the validation slices the
  score tells lesion from normal slices with an AUC of about 0.9. The probe prints the same AUC
  between the generated lesion and normal images: near 0.5, the lesion class draws no more
  bright spots than the normal one.

It saves a PNG of the first 10 images of each class under ``--out``, to look at: the figures
say whether images repeat and whether bright spots come with the class, not whether they show
anatomy. The settings of conf/base's DCGAN (TTUR, no DiffAugment, 3000 steps) and DDPM
(class-balanced epochs) were chosen with it (benchmarks/RESULTS.md, "DCGAN settings" and
"The lesion class of the class-conditional families"). Since 2026-12-06 conf/base's DCGAN learns
the lesion patches (``dcgan.run.source: lesion_patches``, 32 px, DiffAugment): to repeat the
slice runs, give the slice settings (conf/template's) with ``--model``, as in the second example.

    PYTHONPATH=src:benchmarks python benchmarks/class_conditional_probe.py --family ddpm --name base
    PYTHONPATH=src:benchmarks python benchmarks/class_conditional_probe.py --name slices --steps 3000 --batch-size 16 \
        --model '{"image_size": 64, "base_channels": 32, "learning_rate": 0.0001, "discriminator_learning_rate": 0.0004,
                  "diff_augment": false}'
    PYTHONPATH=src:benchmarks python benchmarks/class_conditional_probe.py --name radford --steps 1000 \\
        --model '{"learning_rate": 0.0002, "discriminator_learning_rate": null, "diff_augment": true}'
    PYTHONPATH=src:benchmarks python benchmarks/class_conditional_probe.py --family ddpm --name balanced \\
        --class-balance --guidance 2 4
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
from sklearn.metrics import roc_auc_score  # noqa: E402

from class_balance_probe import N, pair_correlations  # noqa: E402
from gate_diagnose import SLICES, parameters  # noqa: E402
from synthmed.core.config import from_params  # noqa: E402
from synthmed.datasets.array_store import ArrayStoreDataset  # noqa: E402
from synthmed.generators.base import Conditions, SamplerSpec  # noqa: E402
from synthmed.generators.registry import config_from_params, get_family  # noqa: E402
from synthmed.generators.training import ArrayBatches, TrainingConfig, train  # noqa: E402
from synthmed.metrics.lesion_signal import LesionSignalConfig, spot_scores  # noqa: E402

SHOWN = 10
SPOT = LesionSignalConfig()  # bright, 99.5th percentile, foreground above -0.9: as conf/base's evaluation


def bright_spot(images: torch.Tensor) -> np.ndarray:
    """The evaluation's spot score (``synthmed.metrics.lesion_signal.spot_scores``, conf/base settings)."""
    return spot_scores(images.numpy(), SPOT)


def nearest_correlation(generated: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Largest Pearson correlation of each generated image with any reference image: median and max."""
    def unit(images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(len(images), -1).double()
        flat = flat - flat.mean(dim=1, keepdim=True)
        return flat / (flat.norm(dim=1, keepdim=True) + 1e-12)

    best = (unit(generated) @ unit(reference).T).max(dim=1).values.numpy()
    return {"median": round(float(np.median(best)), 3), "max": round(float(best.max()), 4)}


def resized(store, rows: np.ndarray, size: int) -> torch.Tensor:
    images = torch.from_numpy(np.array(store["images"][rows], dtype=np.float32))
    return images if images.shape[-1] == size else torch.nn.functional.interpolate(images, size=size, mode="area")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="a name for the printed line and the PNG")
    parser.add_argument("--family", choices=["dcgan", "ddpm"], default="dcgan")
    parser.add_argument("--env", default="local", help="Kedro environment over conf/base (default: local)")
    parser.add_argument("--model", default="{}", help="JSON overrides of <family>.model (the family's Config fields)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the profile's)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the profile's)")
    parser.add_argument("--mixed-precision", choices=["auto", "no", "bf16"], default=None,
                        help="training.mixed_precision (default: the profile's; bf16 on CPU: autocast, fast with AMX)")
    parser.add_argument("--min-lesion-px", type=int, default=0,
                        help="leave out training lesion slices with fewer lesion pixels (label 4) at 64 px "
                             "(default: keep all)")
    parser.add_argument("--class-balance", action="store_true", help="class-balanced epochs (training.class_balance)")
    parser.add_argument("--guidance", type=float, nargs="*", default=None,
                        help="DDPM: classifier-free guidance scales to sample at (default: the profile's)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "class_conditional_probe")
    args = parser.parse_args()

    params = parameters(args.env)[args.family]
    model_config = config_from_params(args.family, {**params["model"], **json.loads(args.model)})
    training = from_params(TrainingConfig, params["training"], f"{args.family}.training")
    training = dataclasses.replace(training, checkpoint_every=0, sample_every=0, class_balance=args.class_balance,
                                   steps=args.steps or training.steps,
                                   batch_size=args.batch_size or training.batch_size,
                                   seed=training.seed if args.seed is None else args.seed,
                                   mixed_precision=args.mixed_precision or training.mixed_precision)
    sampler = from_params(SamplerSpec, params["sampling"]["sampler"], f"{args.family}.sampling.sampler")
    store = ArrayStoreDataset(path=str(SLICES / "arrays")).load()
    manifest = pd.read_csv(SLICES / "manifest.csv", dtype={"patient_key": str, "item_id": str})
    train_rows = np.sort(manifest.loc[manifest["split"] == "train", "index"].to_numpy())
    if args.min_lesion_px:
        lesion_px = (np.asarray(store["masks"][train_rows]) == 4).reshape(len(train_rows), -1).sum(axis=1)
        faint = (np.asarray(store["labels"][train_rows]) == 1) & (lesion_px < args.min_lesion_px)
        print(f"{args.name}: {int(faint.sum())} training lesion slices with < {args.min_lesion_px} lesion px left out")
        train_rows = train_rows[~faint]
    held_out = np.sort(manifest.loc[manifest["split"] == "validation", "index"].to_numpy())
    held_out_labels = np.asarray(store["labels"][held_out])
    size = model_config.image_size
    training_images = resized(store, train_rows, size)
    real_scores = bright_spot(resized(store, held_out, size))
    print(f"{args.name}: real validation bright-spot AUC lesion vs normal "
          f"{roc_auc_score(held_out_labels == 1, real_scores):.3f} ({len(held_out)} slices at {size} px)", flush=True)
    spec = get_family(args.family)
    with tempfile.TemporaryDirectory() as checkpoints:
        tic = time.perf_counter()
        models, _ = train(spec, model_config, training, ArrayBatches(store, train_rows, size=size), Path(checkpoints))
        seconds = time.perf_counter() - tic
    scales = args.guidance if args.family == "ddpm" and args.guidance else [sampler.guidance_scale]
    args.out.mkdir(parents=True, exist_ok=True)
    for scale in scales:
        figures, shown, scores = {}, [], []
        for label in range(model_config.num_classes or 1):
            labels = torch.full((N,), label, dtype=torch.int64) if model_config.num_classes else None
            generated = spec.sample(models, model_config, Conditions(n=N, labels=labels),
                                    dataclasses.replace(sampler, guidance_scale=scale),
                                    torch.Generator().manual_seed(0)).float()
            real = resized(store, held_out[held_out_labels == label][:N], size)
            scores.append(bright_spot(generated))
            figures[f"class {label}"] = {"generated": pair_correlations(generated), "real": pair_correlations(real),
                                         "nearest training": nearest_correlation(generated, training_images),
                                         "bright-spot median": round(float(np.median(scores[-1])), 2)}
            shown.append(generated[:SHOWN])
        if len(scores) == 2:
            figures["bright-spot AUC lesion vs normal"] = round(float(roc_auc_score(
                np.r_[np.zeros(len(scores[0])), np.ones(len(scores[1]))], np.r_[scores[0], scores[1]])), 3)
        name = f"{args.name}_w{scale:g}" if len(scales) > 1 else args.name
        print(f"{name}: {training.steps} steps in {seconds:.0f} s; {json.dumps(figures)}", flush=True)
        figure, axes = plt.subplots(len(shown), SHOWN, figsize=(1.5 * SHOWN, 1.6 * len(shown)), squeeze=False)
        for row, images in enumerate(shown):
            for k in range(SHOWN):
                axes[row, k].axis("off")
                if k < len(images):
                    axes[row, k].imshow(images[k, 0], cmap="gray", vmin=-1, vmax=1)
        figure.suptitle(name)
        figure.savefig(args.out / f"{name}.png", dpi=70)
        plt.close(figure)


if __name__ == "__main__":
    main()
