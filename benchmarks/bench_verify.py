"""What checksum verification costs when an array store is loaded.

For each size it saves a store with ``ArrayStoreDataset`` in a temporary folder, then times:

- ``load, no verification``: index + memory maps only (what loading cost before verification);
- ``load, cold``: the first verified load in the process (every array hashed);
- ``load, warm``: a second load of the unchanged store (the cache: one ``stat`` per array);
- ``read once``: touching every byte of the loaded arrays once (``np.sum`` over the memory map),
  the least a training run does with them.

The cold figures depend on whether the files are in the OS page cache; they are (just
written), which is also the usual case right after ``dvc checkout`` or a pipeline stage.

    PYTHONPATH=src python benchmarks/bench_verify.py  # 2,000 x 1 x 64 x 64 (41 MB) and 800 x 1 x 256 x 256 (262 MB)
    PYTHONPATH=src python benchmarks/bench_verify.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from synthmed.core import checksums
from synthmed.datasets.array_store import INDEX, ArrayStore, ArrayStoreDataset

SIZES = {"2000x1x64x64": (2000, 1, 64, 64), "800x1x256x256": (800, 1, 256, 256)}


def _unverified_load(folder: Path) -> ArrayStore:
    """The load as it was before verification: the index and nothing else."""
    index = json.loads((folder / INDEX).read_text())
    return ArrayStore(folder, index["arrays"])


def _open_all(store: ArrayStore) -> None:
    for name in store:
        np.load(store._root / f"{name}.npy", mmap_mode="r", allow_pickle=False)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    arrays = {"images": rng.standard_normal(shape, dtype=np.float32),
              "labels": rng.integers(0, 7, shape[0]), "masks": rng.random(shape, dtype=np.float32) > 0.5}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "arrays"
        dataset = ArrayStoreDataset(path=str(folder))
        dataset.save(arrays)
        megabytes = sum(p.stat().st_size for p in folder.glob("*.npy")) / 1e6

        plain = _best(lambda: _open_all(_unverified_load(folder)), repeats)

        def cold() -> None:
            checksums.clear_verified_cache()
            dataset.load()

        cold_s = _best(cold, repeats)
        dataset.load()
        warm_s = _best(lambda: _open_all(dataset.load()), repeats)
        store = dataset.load()
        read_s = _best(lambda: [float(np.sum(store[name], dtype=np.float64)) for name in store], repeats)
    return {"MB": megabytes, "load_plain": plain, "load_cold": cold_s, "load_warm": warm_s, "read_once": read_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args()
    header = (f"{'store':24s} {'MB':>7s} {'no verify':>10s} {'cold':>9s} {'warm':>9s} {'read once':>10s} "
              f"{'cold/read':>9s} {'MB/s cold':>9s}")
    print(header)
    for label, shape in SIZES.items():
        r = bench(shape, args.repeats)
        print(f"{label:24s} {r['MB']:7.1f} {r['load_plain'] * 1e3:8.2f}ms {r['load_cold'] * 1e3:7.1f}ms "
              f"{r['load_warm'] * 1e3:7.2f}ms {r['read_once'] * 1e3:8.1f}ms "
              f"{r['load_cold'] / r['read_once']:9.2f} {r['MB'] / r['load_cold']:9.0f}")


if __name__ == "__main__":
    main()
