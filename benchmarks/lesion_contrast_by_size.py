"""Probe (not wired into any pipeline): a mask-conditioned family's lesion contrast by lesion size, after ``make demo``.

The evaluation reports one lesion contrast per family (``<family>.fidelity.lesion_contrast`` and
``..._real``, a mean over the label maps with a lesion). Small lesions behave differently from
large ones (at 64 px a lesion under 20 px is a few pixels wide), so this prints the contrast of
the samples and of the real slices of the same maps separately for lesions under and over
``--small-px`` pixels, and the correlation between the two over the maps
(``class_balance_probe.contrast_by_size``). It reads the family's samples
(``data/07_model_output/<family>``, whose provenance names each sample's source slice) and
the slice store, and measures with the evaluation's own function and settings
(``synthmed.metrics.lesion_signal.lesion_contrast``, ``evaluation.lesion_signal`` of the
environment), at the samples' size.

    PYTHONPATH=src:benchmarks python benchmarks/lesion_contrast_by_size.py            # pix2pix, conf/base
    PYTHONPATH=src:benchmarks python benchmarks/lesion_contrast_by_size.py --small-px 30
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from class_balance_probe import contrast_by_size
from gate_diagnose import ROOT, SLICES, parameters
from synthmed.core.config import from_params
from synthmed.datasets.array_store import ArrayStoreDataset
from synthmed.metrics.features import at_size
from synthmed.metrics.lesion_signal import LesionSignalConfig
from synthmed.protocols.evaluation import label_maps_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="pix2pix", help="a mask-conditioned family of the demo (default: pix2pix)")
    parser.add_argument("--env", default="local", help="Kedro environment over conf/base (default: local)")
    parser.add_argument("--small-px", type=int, default=20, help="lesions under this many pixels are small")
    args = parser.parse_args()

    config = from_params(LesionSignalConfig, parameters(args.env)["evaluation"]["lesion_signal"],
                         "evaluation.lesion_signal")
    if config.mask_label is None:
        raise SystemExit("evaluation.lesion_signal.mask_label is null: there is no lesion contrast to measure.")
    output = ROOT / "data" / "07_model_output" / args.family
    provenance = output / "provenance.csv"
    if not provenance.is_file():
        raise SystemExit(f"{provenance} is missing: run make demo first (the {args.family!r} family's samples).")
    sources = pd.read_csv(provenance)["source_index"].to_numpy()
    samples = np.asarray(ArrayStoreDataset(path=str(output / "arrays")).load()["images"], dtype=np.float32)
    store = ArrayStoreDataset(path=str(SLICES / "arrays")).load()
    size = samples.shape[-1]
    # As the evaluation resizes them: images area-averaged, label maps by nearest neighbour.
    real = at_size(store["images"][sources], size).numpy()
    maps = label_maps_at(store, sources, size)
    out: dict[str, object] = {"family": args.family, "size_px": size, "small_px": args.small_px,
                              **contrast_by_size(samples, real, maps, config, args.small_px)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
