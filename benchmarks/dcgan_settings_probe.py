"""Probe (not wired into any pipeline): one DCGAN training run on make demo's slices with overridden settings.

Trains the ``dcgan`` family of an environment (``conf/base`` by default) on the train split of
``make demo``'s slices with the model and training settings given on the command line, then
draws 32 images per class and prints:

- the training time;
- per class, how alike the 32 generated images are (mean and largest Pearson correlation over
  all pairs, pairs above 0.95; ``class_balance_probe.pair_correlations``) beside the first 32
  real validation images of that class (neighbouring slices: their pairs are alike too).

It saves a PNG of the first 10 images of each class under ``--out``, to look at: pair figures
say whether images repeat, not whether they show anatomy. The settings of conf/base's DCGAN
(TTUR, no DiffAugment; 2000 steps, 3000 since the 30-subject FLAIR cohort) were chosen with it
(benchmarks/RESULTS.md, "DCGAN settings").

    PYTHONPATH=src:benchmarks python benchmarks/dcgan_settings_probe.py --name base
    PYTHONPATH=src:benchmarks python benchmarks/dcgan_settings_probe.py --name radford --steps 1000 \\
        --model '{"learning_rate": 0.0002, "discriminator_learning_rate": null, "diff_augment": true}'
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

from class_balance_probe import N, pair_correlations  # noqa: E402
from gate_diagnose import SLICES, parameters  # noqa: E402
from synthmed.core.config import from_params  # noqa: E402
from synthmed.datasets.array_store import ArrayStoreDataset  # noqa: E402
from synthmed.generators.base import Conditions, SamplerSpec  # noqa: E402
from synthmed.generators.registry import config_from_params, get_family  # noqa: E402
from synthmed.generators.training import ArrayBatches, TrainingConfig, train  # noqa: E402

SHOWN = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="a name for the printed line and the PNG")
    parser.add_argument("--env", default="local", help="Kedro environment over conf/base (default: local)")
    parser.add_argument("--model", default="{}", help="JSON overrides of dcgan.model (dcgan.Config fields)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the profile's)")
    parser.add_argument("--class-balance", action="store_true", help="class-balanced epochs (training.class_balance)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "dcgan_settings_probe")
    args = parser.parse_args()

    params = parameters(args.env)["dcgan"]
    model_config = config_from_params("dcgan", {**params["model"], **json.loads(args.model)})
    training = from_params(TrainingConfig, params["training"], "dcgan.training")
    training = dataclasses.replace(training, checkpoint_every=0, sample_every=0, class_balance=args.class_balance,
                                   steps=args.steps or training.steps,
                                   seed=training.seed if args.seed is None else args.seed)
    store = ArrayStoreDataset(path=str(SLICES / "arrays")).load()
    manifest = pd.read_csv(SLICES / "manifest.csv", dtype={"patient_key": str, "item_id": str})
    train_rows = np.sort(manifest.loc[manifest["split"] == "train", "index"].to_numpy())
    held_out = np.sort(manifest.loc[manifest["split"] == "validation", "index"].to_numpy())
    spec = get_family("dcgan")
    with tempfile.TemporaryDirectory() as checkpoints:
        tic = time.perf_counter()
        models, _ = train(spec, model_config, training, ArrayBatches(store, train_rows, size=model_config.image_size),
                          Path(checkpoints))
        seconds = time.perf_counter() - tic
    figures, shown = {}, []
    for label in range(model_config.num_classes or 1):
        labels = torch.full((N,), label, dtype=torch.int64) if model_config.conditional else None
        generated = spec.sample(models, model_config, Conditions(n=N, labels=labels), SamplerSpec(),
                                torch.Generator().manual_seed(0)).float()
        real_rows = held_out[np.asarray(store["labels"][held_out]) == label][:N]
        real = torch.from_numpy(np.array(store["images"][real_rows], dtype=np.float32))
        figures[f"class {label}"] = {"generated": pair_correlations(generated), "real": pair_correlations(real)}
        shown.append(generated[:SHOWN])
    print(f"{args.name}: {training.steps} steps in {seconds:.0f} s; {json.dumps(figures)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(len(shown), SHOWN, figsize=(1.5 * SHOWN, 1.6 * len(shown)), squeeze=False)
    for row, images in enumerate(shown):
        for k in range(SHOWN):
            axes[row, k].axis("off")
            if k < len(images):
                axes[row, k].imshow(images[k, 0], cmap="gray", vmin=-1, vmax=1)
    figure.suptitle(args.name)
    figure.savefig(args.out / f"{args.name}.png", dpi=70)
    plt.close(figure)


if __name__ == "__main__":
    main()
