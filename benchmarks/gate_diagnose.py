"""Why the rebalancing gate passes or fails its self-test on a configuration environment's slices.

Loads the slices and manifest that the rebalancing gate uses (``data/05_model_input/slices``,
built by ``kedro run --env <env> --pipelines data``), the gate settings of that environment
(``evaluation.memorisation``, ``evaluation.sources.slices``), and runs `prepare_gate` on the
reference split against the held-out split exactly as ``synthmed.protocols.rebalancing`` does
(same image size, same search, same planted copies, the training slices' patient keys), in pixel
space (the rebalancing gate flags on pixel similarity and on the relative distance to the other
patients, and in feature space only when ``flag_on_features`` is true). Printed: the threshold, the self-test
recall, every missed planted copy with its score, the held-out nearest-neighbour distribution
(and the image statistics of the held-out images that set the threshold), and with
``--components``, the planted copies' scores with one disguise at a time; with ``--strengths``, the
self-test recall with the whole disguise scaled (its detection limit on these slices).

    PYTHONPATH=src python benchmarks/gate_diagnose.py
    PYTHONPATH=src python benchmarks/gate_diagnose.py --components
    PYTHONPATH=src python benchmarks/gate_diagnose.py --strengths 0.25 0.5 0.75 1
    PYTHONPATH=src python benchmarks/gate_diagnose.py --env local        # the make demo sample
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from kedro.config import OmegaConfigLoader

from synthmed.datasets.array_store import ArrayStoreDataset
from synthmed.privacy.memorisation import PlantConfig, nearest_table, plant_copies, prepare_gate
from synthmed.protocols.encoders import patient_keys, split_images
from synthmed.protocols.evaluation import gate_config

ROOT = Path(__file__).resolve().parents[1]
SLICES = ROOT / "data/05_model_input/slices"

# --components: each disguise alone (the others switched off), then all of them.
COMPONENTS = {
    "crop only": {"noise_std": 0.0, "max_shift_px": 0, "flip_probability": 0.0, "intensity_gain": (1.0, 1.0),
                  "intensity_offset": (0.0, 0.0)},
    "noise only": {"crop_fraction": 1.0, "max_shift_px": 0, "flip_probability": 0.0,
                   "intensity_gain": (1.0, 1.0), "intensity_offset": (0.0, 0.0)},
    "shift only": {"crop_fraction": 1.0, "noise_std": 0.0, "flip_probability": 0.0,
                   "intensity_gain": (1.0, 1.0), "intensity_offset": (0.0, 0.0)},
    "flip only": {"crop_fraction": 1.0, "noise_std": 0.0, "max_shift_px": 0, "flip_probability": 1.0,
                  "intensity_gain": (1.0, 1.0), "intensity_offset": (0.0, 0.0)},
    "gain/offset only": {"crop_fraction": 1.0, "noise_std": 0.0, "max_shift_px": 0, "flip_probability": 0.0},
    "crop + noise": {"max_shift_px": 0, "flip_probability": 0.0, "intensity_gain": (1.0, 1.0),
                     "intensity_offset": (0.0, 0.0)},
    "crop + shift": {"noise_std": 0.0, "flip_probability": 0.0, "intensity_gain": (1.0, 1.0),
                     "intensity_offset": (0.0, 0.0)},
    "all (the configured plant)": {},
}


def scaled_plant(plant: PlantConfig, strength: float, zooms: tuple[float, ...]) -> PlantConfig:
    """The configured disguise at ``strength`` (0: an exact copy, 1: as configured): noise, shift and
    the gain's and offset's distance from (1, 0) scale with it; flips (which the search undoes
    exactly) stay. The crop fraction is the searched zoom nearest to the scaled one (at least the
    configured crop): a crop size the search has no zoom for measures the zoom grid, not the
    disguise (a 31 px crop of a 32 px slice against zooms 1.0 / 0.95 / 0.9 scores ~0.975)."""
    def around(pair: tuple[float, float], centre: float) -> tuple[float, float]:
        return (centre + strength * (pair[0] - centre), centre + strength * (pair[1] - centre))

    wanted = 1.0 - strength * (1.0 - plant.crop_fraction)
    crop = min((z for z in (*zooms, 1.0) if z >= plant.crop_fraction), key=lambda z: abs(z - wanted))
    return dataclasses.replace(
        plant, noise_std=plant.noise_std * strength, max_shift_px=round(plant.max_shift_px * strength),
        intensity_gain=around(plant.intensity_gain, 1.0), intensity_offset=around(plant.intensity_offset, 0.0),
        crop_fraction=crop)


def parameters(env: str) -> dict:
    return OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base", default_run_env=env,
                             merge_strategy={"parameters": "soft"})["parameters"]


def overridden(params: dict, assignments: list[str]) -> dict:
    """``params`` with dotted ``key=value`` assignments applied (values parsed as YAML)."""
    result = copy.deepcopy(dict(params))
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise ValueError(f"Expected --set KEY=VALUE, got {assignment!r}.")
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="local",
                        help="Kedro configuration environment (local: conf/base, the make demo cohort)")
    parser.add_argument("--components", action="store_true", help="score the planted copies one disguise at a time")
    parser.add_argument("--min-std", type=float, metavar="S",
                        help="plant.min_source_std: images with standard deviation <= S are neither planted nor "
                             "calibrated on (default: the environment's)")
    parser.add_argument("--strengths", type=float, nargs="*", default=[], metavar="S",
                        help="score planted copies with the disguise scaled by S (0: exact copy, 1: as configured)")
    parser.add_argument("--top", type=int, default=10, help="held-out images listed, most similar first")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML",
                        help="override evaluation.memorisation keys, e.g. search.max_shift_px=5")
    parser.add_argument("--image-px", type=int, help="compare at this size (default: evaluation.sources.slices)")
    parser.add_argument("--save", type=Path, help="write held_out.csv and planted.csv (the gate's tables) here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = parameters(args.env)["evaluation"]
    source = dict(params["sources"]["slices"])
    if args.image_px:
        source["image_px"] = args.image_px
    gate = gate_config(overridden(params["memorisation"], args.set), action="drop")
    store = ArrayStoreDataset(path=str(SLICES / "arrays")).load()
    manifest = pd.read_csv(SLICES / "manifest.csv", dtype={"patient_key": str, "item_id": str})
    train, _, train_ids = split_images(store, manifest, source["reference_split"], source["image_px"])
    held_out, _, held_ids = split_images(store, manifest, source["held_out_split"], source["image_px"])
    if args.min_std is not None:
        gate = dataclasses.replace(gate, plant=dataclasses.replace(gate.plant, min_source_std=args.min_std))
    held_rows = manifest.set_index("index").loc[held_ids]
    print(f"env {args.env}: {len(train)} {source['reference_split']} and {len(held_out)} "
          f"{source['held_out_split']} slices at {source['image_px']} px "
          f"({held_rows['patient_key'].nunique()} held-out patients); search {gate.search}")

    start = time.perf_counter()
    prepared = prepare_gate(train, held_out, config=dataclasses.replace(gate, use_features=False),
                            train_groups=patient_keys(manifest, train_ids))
    seconds = time.perf_counter() - start
    planted = prepared.planted
    relative = prepared.relative_threshold
    print(f"\nprepare_gate: {seconds:.1f} s; pixel threshold {prepared.pixel_threshold:.4f}"
          + ("" if relative is None else f", relative distance threshold {relative:.4f}")
          + " "
          f"(percentile {gate.percentile} of {prepared.held_out_count} held-out images); self-test recall "
          f"{prepared.self_test_recall:.4f} ({int(planted['flagged'].sum())} of {len(planted)} flagged, "
          f"minimum {gate.min_self_test_recall})")

    held = prepared.held_out.copy()
    held["std"] = held_out.std(dim=(1, 2, 3)).numpy()
    held["patient"] = held_rows["patient_key"].to_numpy()
    held["slice_index"] = held_rows["slice_index"].to_numpy()
    held["foreground_fraction"] = held_rows["foreground_fraction"].to_numpy()
    quantiles = [0.5, 0.9, 0.99, 0.999, 1.0]
    print("\nheld-out nearest-neighbour similarity quantiles:",
          ", ".join(f"q{q:g}={held['pixel_similarity'].quantile(q):.4f}" for q in quantiles))
    print("held-out relative distance quantiles:",
          ", ".join(f"q{q:g}={held['relative_distance'].quantile(q):.4f}" for q in (0.0, 0.001, 0.01, 0.1, 0.5)))
    print(f"held-out images with std <= min_source_std {gate.plant.min_source_std} (left out of the threshold): "
          f"{int(held['content_free'].sum())}")
    print(f"held-out images with foreground below min_calibration_foreground {gate.min_calibration_foreground} "
          f"(left out of the threshold): {int(held['low_foreground'].sum())}")
    columns = ["pixel_similarity", "relative_distance", "pixel_transform", "std", "foreground", "foreground_fraction",
               "patient", "slice_index"]
    print(f"\nthe {args.top} held-out images most similar to a training image:")
    print(held.sort_values("pixel_similarity", ascending=False)[columns].head(args.top).to_string())

    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        held.to_csv(args.save / "held_out.csv", index=False)
        frame = planted.copy()
        frame["source_std"] = train.std(dim=(1, 2, 3)).numpy()[frame["source_index"].to_numpy()]
        frame.to_csv(args.save / "planted.csv", index=False)
    missed = planted[~planted["flagged"]]
    print(f"\nmissed planted copies ({len(missed)}):")
    if len(missed):
        print(missed[["source_index", "pixel_similarity", "relative_distance", "found_source", "pixel_transform",
                      "transform"]]
              .to_string(max_colwidth=70))
    print("\nplanted similarity quantiles:",
          ", ".join(f"q{q:g}={planted['pixel_similarity'].quantile(q):.4f}" for q in (0.0, 0.1, 0.5)))
    print("planted relative distance quantiles:",
          ", ".join(f"q{q:g}={planted['relative_distance'].quantile(q):.4f}" for q in (0.5, 0.9, 1.0)))

    # Only the planted copies are searched again, against the prepared references (same
    # threshold, same sources: the planting RNG draws every number in the same order).
    variants: dict[str, PlantConfig] = {}
    if args.components:
        variants |= {name: dataclasses.replace(gate.plant, **change) for name, change in COMPONENTS.items()}
    for strength in args.strengths:
        if not 0.0 <= strength <= 1.0:
            parser.error(f"--strengths: each S must be in [0, 1], got {strength}")
        plant = scaled_plant(gate.plant, strength, gate.search.zooms)
        variants[f"strength {strength:g}: noise {plant.noise_std:.3g}, shift {plant.max_shift_px}, "
                 f"crop {plant.crop_fraction:.3g}, gain {plant.intensity_gain[1]:.3g}"] = plant
    if variants:
        print("\nplanted copies, other disguises (the same thresholds; min, q10 and median of the pixel similarity):")
        for name, plant in variants.items():
            images, table = plant_copies(train, plant, rng=np.random.default_rng(gate.seed))
            table = nearest_table(images, prepared.references, gate.search, None, prepared.chunk_size,
                                  prepared.reference_count)
            scores = table["pixel_similarity"]
            recall = float(prepared.flag(table).mean())
            print(f"  {name:44s} recall {recall:.3f}  min {scores.min():.4f}  q10 {scores.quantile(0.1):.4f}  "
                  f"median {scores.median():.4f}")

if __name__ == "__main__":
    main()
