"""Sampling and the memorisation gate split over two CPU processes (gloo, torchrun) give what one
process gives: the same images bit for bit, the same provenance, the same gate tables.

One torchrun launch (module fixture, hard timeout, every rank killed at the end) runs every case
on 2 processes and writes each rank's results; the tests compute the same cases here, on one
process, and compare. The fast tests check the block split and the gather's arguments.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthmed.core import collectives
from tests.generators.test_training import run_launched

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT_S = 300
WORLD = 2

# Both sides run `cases(out, rank)`: the launched ranks with WORLD_SIZE=2, the test with none.
CASES = textwrap.dedent(
    """
    import json
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from synthmed.core import collectives
    from synthmed.generators.base import SamplerSpec
    from synthmed.generators.common import weights_digest, write_checksums, write_generator_files
    from synthmed.generators.registry import config_from_params, get_family
    from synthmed.generators.sampling import ThroughputConfig, generate_from_plan, sample_checkpoints
    from synthmed.privacy.memorisation import GateConfig, prepare_gate
    from tests.generators.test_contract import TINY
    from tests.generators.test_sampling import CLASSES, _plan, _real
    from tests.privacy.test_memorisation import smooth_fields

    SAMPLING = {
        # 9 images in batches of 2: 5 batches on 2 processes (3 and 2)
        "uneven": ([("mask", "axial", 3, ""), ("inpaint", "sagittal", 2, "inside_mask"),
                    ("inpaint", "coronal", 2, "outside_box"), ("mask", "coronal", 1, ""),
                    ("inpaint", "axial", 1, "new_lesion")], 2),
        "smaller_than_world": ([("mask", "axial", 1, "")], 4),  # 1 batch: process 1 draws nothing
        "auto": ([("mask", "sagittal", 5, "")], "auto"),  # batch_size auto: cpu_batch_size 2, agreed
    }


    def _save(out: Path, name: str, rank: int, images=None, table: pd.DataFrame | None = None) -> None:
        if images is not None:
            np.save(out / f"{name}-{rank}.npy", np.asarray(images), allow_pickle=False)
        if table is not None:
            table.reset_index(drop=True).to_parquet(out / f"{name}-{rank}.parquet")


    def cases(out: Path, rank: int) -> None:
        torch.set_num_threads(1)
        # what `batch_size: auto` and the out-of-memory retry agree on: each process offers its own
        agreed = [collectives.all_min(rank + 3), collectives.all_max(rank + 3)]
        (out / f"agree-{rank}.json").write_text(json.dumps(agreed))
        spec, config = get_family("ddpm"), config_from_params("ddpm", TINY["ddpm"])
        models = spec.build(config, 0).eval()
        sampler = SamplerSpec("ddim", steps=2)
        throughput = ThroughputConfig(device="cpu", cpu_batch_size=2)
        for name, (rows, batch_size) in SAMPLING.items():
            result = generate_from_plan(spec, config, models, _plan(rows), CLASSES, sampler, seed=7,
                                        batch_size=batch_size, checkpoint="c", real=_real(), throughput=throughput,
                                        real_indices=np.arange(4))
            _save(out, name, rank, result.images, result.provenance)
            np.save(out / f"{name}-labels-masks-{rank}.npy",
                    np.concatenate([result.labels, result.masks.reshape(len(result.masks), -1).sum(1)]))
        # retained checkpoints: two earlier checkpoints (other weights) and the final one (skipped)
        folders = []
        for step, weights_seed in ((1, 1), (2, 2), (3, 0)):
            folder = out / "checkpoints" / f"step-{step:09d}"
            if rank == 0 and not folder.is_dir():
                folder.mkdir(parents=True)
                write_generator_files(folder, "ddpm", config, spec.build(config, weights_seed).eval())
                write_checksums(folder)
            folders.append(folder)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # rank 0 wrote the folders
        empty = generate_from_plan(spec, config, models, _plan([("mask", "axial", 1, "")]), CLASSES, sampler,
                                   seed=0, batch_size=1, checkpoint="c", real=_real(), real_indices=np.arange(4))
        retained = sample_checkpoints(folders, weights_digest(models),
                                      _plan(SAMPLING["uneven"][0]), CLASSES, sampler, seed=7, batch_size=2,
                                      empty=empty, real=_real(), real_indices=np.arange(4), throughput=throughput)
        _save(out, "checkpoints", rank, retained.images, retained.provenance)

        # the gate: 40 training images, 15 held out, 9 candidates of which 2 are disguised copies
        train, held_out = smooth_fields(40, 1), smooth_fields(15, 2)
        candidates = torch.cat([smooth_fields(7, 3), train[[5]].flip(-1), torch.roll(train[[23]], 1, dims=-1)])
        embed = lambda images: F.avg_pool2d(images, 4).flatten(1)  # noqa: E731
        plant = {"count": 6}
        for name, search in (("exact", {}), ("two_stage", {"two_stage_above": 0, "shortlist": 4})):
            gate = GateConfig(plant=plant, search=search, device="cpu", min_self_test_recall=0.0)
            # four "patients" of 10 images: the search for each image's nearest other patient is split too
            prepared = prepare_gate(train, held_out, config=gate, embed=embed, chunk_size=4,
                                    train_groups=np.repeat(["a", "b", "c", "d"], 10))
            report = prepared.score(candidates)
            _save(out, f"gate-{name}-held_out", rank, table=report.held_out)
            _save(out, f"gate-{name}-planted", rank, table=report.planted)
            _save(out, f"gate-{name}-candidates", rank, table=report.candidates)
            (out / f"gate-{name}-numbers-{rank}.json").write_text(json.dumps(report.summary()))
    """
)

LAUNCHED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path[:0] = [{root!r}, {cases!r}]
    from distributed_cases import cases
    from synthmed.core import distributed
    cases(Path(sys.argv[1]), distributed.rank())
    """
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(two, one)``: the folders of the 2-process launch's results and of this process's."""
    base = tmp_path_factory.mktemp("split")
    (base / "distributed_cases.py").write_text(CASES)
    script = base / "launched.py"
    script.write_text(LAUNCHED.format(root=str(ROOT), cases=str(base)))
    two, one = base / "two", base / "one"
    two.mkdir()
    one.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    code, log = run_launched([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                              str(WORLD), str(script), str(two)], timeout=LAUNCH_TIMEOUT_S,
                             env={**env, "OMP_NUM_THREADS": "1"})
    assert code == 0, log[-4000:]
    sys.path.insert(0, str(base))
    threads = torch.get_num_threads()
    try:
        from distributed_cases import cases

        cases(one, 0)
    finally:
        sys.path.remove(str(base))
        torch.set_num_threads(threads)
    return two, one


def _images(folder: Path, name: str, rank: int = 0) -> np.ndarray:
    return np.load(folder / f"{name}-{rank}.npy", allow_pickle=False)


def _table(folder: Path, name: str, rank: int = 0) -> pd.DataFrame:
    return pd.read_parquet(folder / f"{name}-{rank}.parquet")


# ---------------------------------------------------------------- fast: the split itself


def test_blocks_cover_the_items_once_in_order_and_differ_by_at_most_one():
    for count in (0, 1, 2, 5, 9, 10):
        for parts in (1, 2, 3, 4):
            blocks = [collectives.block(count, parts, p) for p in range(parts)]
            assert [i for a, b in blocks for i in range(a, b)] == list(range(count))
            sizes = [b - a for a, b in blocks]
            assert max(sizes) - min(sizes) <= 1
    assert collectives.block(5, 2, 0) == (0, 3) and collectives.block(5, 2, 1) == (3, 5)
    assert collectives.block(1, 2, 1) == (1, 1)  # fewer items than processes: an empty block
    with pytest.raises(ValueError, match="0 <= part < parts, got count=3, part=2, parts=2"):
        collectives.block(3, 2, 2)


def test_chunk_blocks_split_rows_by_whole_chunks_only():
    for count in (0, 1, 7, 8, 9, 25):
        for chunk in (1, 3, 8):
            for parts in (1, 2, 3):
                rows = collectives.chunk_blocks(count, chunk, parts)
                assert len(rows) == parts
                assert [i for a, b in rows for i in range(a, b)] == list(range(count))
                # every boundary between processes falls on a chunk boundary (or the end)
                assert all(a % chunk == 0 or a == count for a, _ in rows)
    # 9 rows in chunks of 4 (4, 4, 1): 2 chunks to the first process, 1 to the second
    assert collectives.chunk_blocks(9, 4, 2) == [(0, 8), (8, 9)]
    assert collectives.chunk_blocks(3, 4, 2) == [(0, 3), (3, 3)]  # one chunk: the second process has none
    with pytest.raises(ValueError, match="chunk >= 1, got 0"):
        collectives.chunk_blocks(3, 0, 2)


def test_one_process_gathers_nothing_and_agrees_with_itself(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    local = torch.arange(6.0).reshape(3, 2)
    assert collectives.gather_rows(local, [3]) is local
    assert collectives.all_min(4) == 4 and collectives.all_max(0) == 0
    assert collectives.local_device(torch.device("cuda")) == torch.device("cuda")  # no launcher: as asked


def test_under_a_launcher_cuda_means_this_process_gpu(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert collectives.local_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert collectives.local_device(torch.device("cuda", 0)) == torch.device("cuda", 0)  # an explicit GPU stays
    assert collectives.local_device(torch.device("cpu")) == torch.device("cpu")


# ---------------------------------------------------------------- 2 processes (torchrun, gloo) vs 1


@pytest.mark.parametrize("name", ["uneven", "smaller_than_world", "auto", "checkpoints"])
def test_sampling_on_two_processes_equals_one_process_bit_for_bit(results, name):
    two, one = results
    expected = _images(one, name)
    assert len(expected) > 0
    for rank in range(WORLD):  # every process holds the whole plan's images
        assert np.array_equal(_images(two, name, rank), expected), f"{name}: rank {rank} differs"
        pd.testing.assert_frame_equal(_table(two, name, rank), _table(one, name), check_exact=True)
    if name != "checkpoints":
        assert np.array_equal(_images(two, f"{name}-labels-masks"), _images(one, f"{name}-labels-masks"))


def test_the_processes_agree_on_the_smallest_and_largest_value(results):
    two, one = results
    assert [json.loads((two / f"agree-{rank}.json").read_text()) for rank in range(WORLD)] == [[3, 4], [3, 4]]
    assert json.loads((one / "agree-0.json").read_text()) == [3, 3]


def test_the_split_cases_are_what_they_claim(results):
    _, one = results
    assert _table(one, "uneven")["seed"].nunique() == 5  # 5 batches on 2 processes
    assert len(_table(one, "smaller_than_world")) == 1
    assert _table(one, "auto")["batch_size"].unique().tolist() == [2]
    checkpoints = _table(one, "checkpoints")
    assert checkpoints["checkpoint_step"].unique().tolist() == [1, 2]  # the final weights' folder skipped
    assert checkpoints["index"].tolist() == list(range(18))


@pytest.mark.parametrize("search", ["exact", "two_stage"])
def test_the_gate_on_two_processes_gives_the_tables_of_one(results, search):
    two, one = results
    for part in ("held_out", "planted", "candidates"):
        expected = _table(one, f"gate-{search}-{part}")
        for rank in range(WORLD):
            pd.testing.assert_frame_equal(_table(two, f"gate-{search}-{part}", rank), expected, check_exact=True)
    numbers = [(folder / f"gate-{search}-numbers-0.json").read_text() for folder in (one, two)]
    assert numbers[0] == numbers[1]
    candidates = _table(two, f"gate-{search}-candidates")
    # the planted copies (last two candidates: training images 5 mirrored and 23 shifted) are found
    assert candidates["pixel_neighbour"].tolist()[-2:] == [5, 23]
    assert candidates["flagged"].tolist()[-2:] == [True, True] and not candidates["flagged"][:7].any()
    relative = candidates["relative_distance"].to_numpy()
    assert np.isfinite(relative).all() and (relative[-2:] < 1e-3).all()
