"""The memorisation gate at scale: exact search against the two-stage search (issue 13, item 3).

For each training-set size R (smooth random fields, as in tests/privacy/test_memorisation.py,
the hard case for thumbnails), both searches run the whole gate once (held-out calibration,
planted self-test, candidates) with the project's default search (3 flips, shifts up to 3 px,
zooms 1.0 / 0.95 / 0.9 at ``--zoom-positions`` crop positions per axis; with ``--patients K`` the
training images belong to K patients and the relative distance is searched too). Printed per
size: CPU seconds (all threads) of preparing the gate and
of scoring the candidates, the self-test recall of each, and the two-stage search's recall
against the exact one (planted copies the exact search flags that the two-stage search also
flags, from the same training image). A growth exponent of the scoring time in R is fitted over
the sizes; the cost of 20,000 candidates against 100,000 training images is extrapolated from a
line ``a + b R`` fitted to the scoring times (both searches are linear in R: the exact search and
the two-stage first stage; the second stage does not depend on R) at ``--px``, and at 128 px
from the ratio measured at ``--px`` and twice ``--px`` at the smallest size. Extrapolations assume
the line holds beyond the sizes measured (memory, caches and the device are not modelled).

    PYTHONPATH=src python benchmarks/bench_gate.py                         # R = 1000 .. 8000, 32 px
    PYTHONPATH=src python benchmarks/bench_gate.py --sizes 1000 2000 4000 8000 --px 64 --device cuda
    PYTHONPATH=src python benchmarks/bench_gate.py --zoom-positions 1 --patients 0  # before 2026-12-04
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np
import torch
from scipy import ndimage

from synthmed.privacy.memorisation import GateConfig, SearchConfig, prepare_gate

SEARCH = {"flips": ["none", "horizontal", "vertical"], "max_shift_px": 3, "zooms": [1.0, 0.95, 0.9]}
TARGET_TRAIN, TARGET_CANDIDATES = 100_000, 20_000
OPTIONS = {"zoom_positions": SearchConfig().zoom_positions, "patients": 0}


def fields(count: int, seed: int, px: int) -> torch.Tensor:
    """Gaussian-filtered noise (sigma 2 px) scaled to std 0.4 and clipped to [-1, 1]."""
    noise = np.random.default_rng(seed).standard_normal((count, 1, px, px))
    smooth = ndimage.gaussian_filter(noise, (0, 0, 2.0, 2.0))
    smooth = smooth / smooth.std(axis=(1, 2, 3), keepdims=True) * 0.4
    return torch.from_numpy(np.clip(smooth, -1.0, 1.0).astype(np.float32))


def _cpu() -> float:
    return time.process_time()


def run(size: int, px: int, candidates: int, held_out: int, planted: int, two_stage: bool, device: str,
        shortlist: int) -> dict[str, object]:
    """One gate (prepare, then score the candidates); ``OPTIONS`` sets zoom positions and patients."""
    train = fields(size, 1, px)
    queries = torch.cat([fields(candidates - 10, 3, px), train[:10].flip(-1)])  # 10 mirrored copies
    config = GateConfig(percentile=99.0, use_features=False, device=device, plant={"count": planted},
                        search={**SEARCH, "zoom_positions": OPTIONS["zoom_positions"],
                                "two_stage_above": 0 if two_stage else 10**12, "shortlist": shortlist})
    patients = OPTIONS["patients"]
    start = _cpu()
    gate = prepare_gate(train, fields(held_out, 2, px), config=config,
                        train_groups=np.arange(size) % patients if patients else None)
    prepared = _cpu()
    report = gate.score(queries)
    scored = _cpu()
    return {"prepare_s": prepared - start, "score_s": scored - prepared, "report": report}


def _exponent(sizes: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    parser.add_argument("--px", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("--planted", type=int, default=100)
    parser.add_argument("--shortlist", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--zoom-positions", type=int, default=OPTIONS["zoom_positions"],
                        help="crop positions per axis per zoom (1: the central crop, the search before 2026-12-04)")
    parser.add_argument("--patients", type=int, default=0,
                        help="training images dealt round-robin to this many patients: the relative distance "
                             "is searched too (0: no patient keys)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: CPU seconds are not inflated by idle threads spinning)")
    args = parser.parse_args()
    OPTIONS.update(zoom_positions=args.zoom_positions, patients=args.patients)
    torch.set_num_threads(args.threads)
    logging.getLogger("synthmed").setLevel(logging.ERROR)  # the small-N calibration warnings, once per run
    print(f"gate benchmark: {args.px} px, {args.candidates} candidates, {args.held_out} held-out, "
          f"{args.planted} planted, shortlist {args.shortlist}, zoom positions {args.zoom_positions}, "
          f"patients {args.patients or 'none'}, device {args.device}, torch threads "
          f"{torch.get_num_threads()}; CPU seconds (all threads)")
    print(f"{'R':>7} {'exact prep':>10} {'exact score':>11} {'2-st prep':>9} {'2-st score':>10} "
          f"{'recall ex/2st':>13} {'2st vs exact':>12}")
    exact_scores, staged_scores = [], []
    for size in args.sizes:
        common = (size, args.px, args.candidates, args.held_out, args.planted)
        exact = run(*common, False, args.device, args.shortlist)
        staged = run(*common, True, args.device, args.shortlist)
        ex, st = exact["report"], staged["report"]
        found = ex.planted["flagged"].to_numpy()
        same = (st.planted["flagged"].to_numpy()[found]
                & (st.planted["pixel_neighbour"].to_numpy()[found] == ex.planted["pixel_neighbour"].to_numpy()[found]))
        against = float(same.mean()) if found.any() else math.nan
        exact_scores.append(exact["score_s"])
        staged_scores.append(staged["score_s"])
        print(f"{size:>7} {exact['prepare_s']:>10.2f} {exact['score_s']:>11.2f} {staged['prepare_s']:>9.2f} "
              f"{staged['score_s']:>10.2f} {ex.self_test_recall:>6.3f}/{st.self_test_recall:<6.3f} "
              f"{against:>12.4f}")
    e_exact, e_staged = _exponent(args.sizes, exact_scores), _exponent(args.sizes, staged_scores)
    print(f"growth exponent of the scoring time in R: exact {e_exact:.2f}, two-stage {e_staged:.2f}")
    # The pixel cost of one comparison grows with the pixels: measured at px and 2 px, smallest size.
    small = args.sizes[0]
    cost = {px: run(small, px, args.candidates, args.held_out, args.planted, False, args.device,
                    args.shortlist)["score_s"] for px in (args.px, 2 * args.px)}
    cost_staged = {px: run(small, px, args.candidates, args.held_out, args.planted, True, args.device,
                           args.shortlist)["score_s"] for px in (args.px, 2 * args.px)}
    for name, scores, per_px in (("exact", exact_scores, cost), ("two-stage", staged_scores, cost_staged)):
        # Both searches cost a + b * R per batch of candidates (the exact search and the
        # two-stage first stage are linear in R; the second stage does not depend on R): fit
        # that line rather than extrapolate the power law, whose exponent drifts towards 1.
        slope, intercept = np.polyfit(args.sizes, scores, 1)
        at_px = (intercept + slope * TARGET_TRAIN) / args.candidates * TARGET_CANDIDATES
        doubling = per_px[2 * args.px] / per_px[args.px]
        at_128 = at_px * doubling ** math.log2(128 / args.px)
        print(f"extrapolated (a + b R fit), {TARGET_CANDIDATES} candidates vs {TARGET_TRAIN} training images: "
              f"{name} {at_px / 3600:.2f} CPU h at {args.px} px; x{doubling:.2f} per doubling of the side "
              f"(measured at R = {small}) -> {at_128 / 3600:.2f} CPU h at 128 px")

if __name__ == "__main__":
    main()
