"""Which process of a multi-process launch this is, and the command that launches one.

``torchrun`` (and ``accelerate launch``, which runs torchrun underneath) starts N copies of a
command and tells each its place through the environment: ``RANK`` (0 .. WORLD_SIZE-1 over
every node), ``LOCAL_RANK`` (on this node) and ``WORLD_SIZE``. MPI launchers use their own
names (``OMPI_COMM_WORLD_RANK``, ``PMI_RANK``). Reading them here needs no torch and no
process group, so Kedro's settings and hooks can ask "am I the main process?" before any
node has started: the main process (global rank 0) saves the catalog outputs, writes
checkpoints, holds the run lock and opens the MLflow run; the others train with it, or take
their share of the sampling and of the memorisation gate (``synthmed.core.collectives``).

``launch_command`` builds the ``synthmed train --processes N`` and ``synthmed launch
--processes N --pipelines NAMES`` command lines: pipelines of ``MULTI_PROCESS_PIPELINES``
through ``kedro run``, under torchrun when N > 1.
"""

from __future__ import annotations

import os
import sys

# Global rank and world size, launcher by launcher: torchrun / accelerate launch, Open MPI, MPICH/Intel MPI.
RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
TRAINING_PIPELINE = "training"
# The pipelines that run on several processes: training (data-parallel), sampling and
# rebalancing (their sampling and memorisation gate split the work, synthmed.core.collectives;
# their other nodes are cheap or do their file-only work on the main process).
MULTI_PROCESS_PIPELINES = (TRAINING_PIPELINE, "sampling", "rebalancing")


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is None or value.strip() == "":
            continue
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"Environment variable {name}={value!r} is not an integer; a launcher (torchrun, "
                             f"accelerate launch, mpirun) sets it to a whole number. Unset it to run as one "
                             f"process.") from None
        if number < 0:
            raise ValueError(f"Environment variable {name}={number} is negative; expected 0 or more.")
        return number
    return default


def rank() -> int:
    """This process's global rank (0 when no launcher set one)."""
    return _first_int(RANK_VARIABLES, 0)


def world_size() -> int:
    """How many processes the launcher started in all (1 when no launcher set it)."""
    return max(_first_int(WORLD_SIZE_VARIABLES, 1), 1)


def is_distributed() -> bool:
    """Whether this process is one of several started by a launcher."""
    return world_size() > 1


def is_main_process() -> bool:
    """Whether this process writes: the only process, or global rank 0 of a launch."""
    return rank() == 0


def describe() -> str:
    """``"process 2 of 4"`` (for log lines and errors)."""
    return f"process {rank()} of {world_size()}"


def _pipelines_requested(kedro_args: list[str]) -> list[str] | None:
    """The value of ``--pipelines`` / ``-p`` in ``kedro_args`` (comma-separated names), or None."""
    for i, arg in enumerate(kedro_args):
        for flag in ("--pipelines", "-p", "--pipeline"):
            if arg == flag and i + 1 < len(kedro_args):
                return [p.strip() for p in kedro_args[i + 1].split(",") if p.strip()]
            if arg.startswith(flag + "="):
                return [p.strip() for p in arg.split("=", 1)[1].split(",") if p.strip()]
    return None


def launch_command(processes: int, kedro_args: list[str], python: str = sys.executable, *,
                   allowed: tuple[str, ...] = (TRAINING_PIPELINE,), default: str | None = TRAINING_PIPELINE,
                   command: str = "synthmed train") -> list[str]:
    """The command that runs pipelines through ``kedro run`` on ``processes`` processes.

    One process: ``python -m kedro run --pipelines NAMES ARGS``. More: the same under
    ``python -m torch.distributed.run --standalone --nproc-per-node N`` (torchrun, of this
    Python: no other executable on PATH needed), one node, a free rendezvous port.
    ``--pipelines`` in ``kedro_args`` must name pipelines of ``allowed`` only; without it,
    ``default`` runs (None: ``--pipelines`` is required). ``command`` names the caller in errors.

    Raises:
        ValueError: ``processes`` < 1, ``--pipelines`` names a pipeline not in ``allowed``, or is
            missing when there is no ``default``.
    """
    if processes < 1:
        raise ValueError(f"--processes must be 1 or more, got {processes}.")
    requested = _pipelines_requested(kedro_args)
    which = f"the {allowed[0]!r} pipeline" if len(allowed) == 1 else f"the pipelines {', '.join(allowed)}"
    if requested is None and default is None:
        raise ValueError(f"{command} needs --pipelines: one or more of {', '.join(allowed)}.")
    if requested is not None and (not requested or set(requested) - set(allowed)):
        raise ValueError(f"{command} runs {which} only, got --pipelines {','.join(requested)!r}. Run the other "
                         f"pipelines with one process (`kedro run --pipelines ...`), or leave them out here.")
    run = ["-m", "kedro", "run", *([] if requested else ["--pipelines", default]), *kedro_args]
    if processes == 1:
        return [python, *run]
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *run]
