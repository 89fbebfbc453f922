"""The ``synthmed`` command (also ``python -m synthmed``).

``synthmed verify [--data DIR] [--json]`` checks every store under ``data/`` against the
checksums its writer recorded (see ``synthmed.datasets.integrity``).
``synthmed add-raw DIR`` tracks a raw folder under ``data/01_raw`` with ``dvc add`` and marks it
``push: false``; ``synthmed push [DVC PUSH OPTIONS]`` runs ``dvc push`` only if no raw or
identifiable output would be pushed (``synthmed.core.dvc_outputs``); ``synthmed pull
[DVC PULL OPTIONS]`` pulls exactly the outputs that push sends; ``synthmed generate --model DIR
--n N [--label NAME] --out DIR`` samples a saved generator folder. ``synthmed headline
[--file FILE]`` prints the evaluation's headline numbers, rounded to their intervals;
``synthmed plots [DVC PLOTS SHOW OPTIONS]`` runs ``dvc plots show`` with Vega inlined (the page
opens offline); ``synthmed mlflow-url`` prints the link to the runs in MLflow's model-training
view. ``synthmed train --processes N [KEDRO RUN OPTIONS]`` runs the training pipeline on N
processes (torchrun; ``synthmed.core.distributed``); ``synthmed launch --processes N --pipelines
sampling[,rebalancing]`` runs sampling and rebalancing so, their sampling and memorisation gate
split over the processes (``synthmed.core.collectives``). Anything else is
Kedro's ``run`` command, as before: ``synthmed --pipelines ingestion``.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def verify(argv: list[str]) -> int:
    """``synthmed verify``: one line per store; exit status 1 if any store is corrupt."""
    from synthmed.datasets.integrity import find_dvc_yaml, verify_tree

    parser = argparse.ArgumentParser(
        prog="synthmed verify",
        description="Verify every store under DIR (array stores, generator and classifier "
                    "folders, file folders with a checksum listing) against the sha256 and "
                    "size recorded by its writer. Outputs listed in dvc.yaml but absent are "
                    "reported as missing. Exit status: 0 if nothing is corrupt, 1 otherwise.")
    parser.add_argument("--data", type=Path, default=Path("data"), metavar="DIR",
                        help="the data folder (default: data)")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of lines")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"{args.data} is not a folder; run from the project root or pass --data DIR")
    dvc_yaml = find_dvc_yaml(args.data)
    reports = verify_tree(args.data, dvc_yaml)
    counts = {status: sum(r.status == status for r in reports) for status in ("intact", "missing", "corrupt")}
    if args.json:
        payload = {"data": str(args.data), "counts": counts,
                   "stores": [{"path": r.path, "kind": r.kind, "status": r.status, "files": r.files,
                               "problems": r.problems} for r in reports]}
        sys.stdout.write(json.dumps(payload, indent=1) + "\n")
    else:
        for report in reports:
            sys.stdout.write(report.line() + "\n")
        sys.stdout.write(f"{counts['intact']} intact, {counts['missing']} missing, "
                         f"{counts['corrupt']} corrupt ({len(reports)} stores under {args.data})\n")
    return 1 if counts["corrupt"] else 0


def add_raw(argv: list[str]) -> int:
    """``synthmed add-raw DIR``: ``dvc add DIR``, then ``push: false`` on its output."""
    from synthmed.core.dvc_outputs import RAW_PREFIX, mark_no_push

    parser = argparse.ArgumentParser(
        prog="synthmed add-raw",
        description=f"Track a folder of raw data under {RAW_PREFIX}/ with DVC (`dvc add`) and mark it "
                    "`push: false` in its .dvc file, so that `dvc push` / `synthmed push` never send it "
                    "to a remote. Run it again after the folder changes. Run from the project root.")
    parser.add_argument("folder", type=Path, metavar="DIR", help=f"the folder, under {RAW_PREFIX}/")
    args = parser.parse_args(argv)
    root = Path.cwd().resolve()
    folder = args.folder if args.folder.is_absolute() else root / args.folder
    if not folder.is_dir():
        parser.error(f"{args.folder} is not a folder; expected a folder of raw data under {RAW_PREFIX}/")
    # Not resolved: DVC tracks the path as given, and a link out of data/01_raw is refused.
    if folder.is_symlink() or not folder.resolve().is_relative_to(root / RAW_PREFIX) \
            or folder.resolve() == root / RAW_PREFIX:
        parser.error(f"{args.folder} is not a folder inside {root / RAW_PREFIX}; move or copy the data there "
                     "(every DVC stage from ingestion on depends on that folder).")
    rel = folder.resolve().relative_to(root)
    result = subprocess.run([_dvc(), "add", str(rel)], cwd=root)
    if result.returncode != 0:
        return result.returncode
    dvc_file = root / f"{rel}.dvc"
    mark_no_push(dvc_file)
    sys.stdout.write(f"{rel} is tracked by DVC and marked push: false in {dvc_file.relative_to(root)}; "
                     f"commit {dvc_file.relative_to(root)} and {rel.parent / '.gitignore'} with git.\n")
    return 0


def push(argv: list[str]) -> int:
    """``synthmed push``: refuse (exit 1, naming them) if a raw/identifiable output would be pushed."""
    from synthmed.core.dvc_outputs import PUSHABLE_PREFIXES, pushable_problems

    root = _project_root("push", argv, (
        "usage: synthmed push [DVC PUSH OPTIONS]\n\nRuns `dvc push` after checking dvc.yaml and every .dvc "
        "file: each cached output that is not `push: false` must be under one of "
        f"{', '.join(PUSHABLE_PREFIXES)}. Otherwise nothing is pushed, the outputs are named and the "
        "exit status is 1.\n"))
    if not isinstance(root, Path):
        return root
    problems = pushable_problems(root)
    if problems:
        sys.stderr.write(f"synthmed push: refusing to push; {len(problems)} output(s) could hold raw or "
                         "identifiable data:\n" + "".join(f"  {line}\n" for line in problems))
        return 1
    return subprocess.run([_dvc(), "push", *argv], cwd=root).returncode


def pull(argv: list[str]) -> int:
    """``synthmed pull``: ``dvc pull`` of the shareable outputs only (what ``synthmed push`` sends)."""
    from synthmed.core.dvc_outputs import PUSHABLE_PREFIXES, shareable_outputs

    root = _project_root("pull", argv, (
        "usage: synthmed pull [DVC PULL OPTIONS]\n\nRuns `dvc pull` of every cached output under "
        f"{', '.join(PUSHABLE_PREFIXES)} that dvc.yaml and the .dvc files do not mark `push: false`: the "
        "de-identified and derived data a teammate pushed with `synthmed push`. Raw data and the tables "
        "of source paths are never on a remote; a bare `dvc pull` asks for them too and fails.\n"))
    if not isinstance(root, Path):
        return root
    targets = shareable_outputs(root)
    if not targets:
        sys.stderr.write(f"synthmed pull: no shareable output is declared in {root}/dvc.yaml or a .dvc file.\n")
        return 1
    return subprocess.run([_dvc(), "pull", *argv, *targets], cwd=root).returncode


def generate(argv: list[str]) -> int:
    """``synthmed generate``: sample a saved generator folder, without Kedro or the project."""
    parser = argparse.ArgumentParser(
        prog="synthmed generate",
        description="Draw images from a trained generator folder (data/06_models/<family>, or one fetched with "
                    "`dvc get`): PNG files per class, images.npy, provenance.csv. The folder's checksums are "
                    "verified first. The images are NOT checked by the memorisation gate (see MODEL_CARD.md).")
    parser.add_argument("--model", type=Path, required=True, metavar="DIR", help="the generator folder")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--label", help="the class to draw (class-conditional models; default: every class in turn)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty output folder")
    parser.add_argument("--sampler", default="ddim", help="diffusion sampler: ddpm, ddim or dpmsolver++ (default ddim)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="batch b draws from seed + b (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    args = parser.parse_args(argv)
    from synthmed.generators.base import SamplerSpec
    from synthmed.generators.common import CheckpointError
    from synthmed.generators.export import generate_to_folder

    try:
        sampler = SamplerSpec(name=args.sampler, steps=args.steps, guidance_scale=args.guidance)
        table = generate_to_folder(args.model, args.out, args.n, label=args.label, sampler=sampler, seed=args.seed,
                                   batch_size=args.batch_size)
    except (ValueError, CheckpointError) as exc:
        sys.stderr.write(f"synthmed generate: {exc}\n")
        return 2
    counts = table["label"].replace("", "samples").value_counts().sort_index()
    sys.stdout.write(f"{len(table)} images in {args.out} ({', '.join(f'{k}: {v}' for k, v in counts.items())}); "
                     "not checked by the memorisation gate (README.md there)\n")
    return 0


def headline(argv: list[str]) -> int:
    """``synthmed headline``: the evaluation's headline numbers, rounded to their intervals, flags in words."""
    from synthmed.metrics.report import headline_text, load_headline

    parser = argparse.ArgumentParser(
        prog="synthmed headline",
        description="Print the headline of the last evaluation (data/08_reporting/headline.json, what "
                    "`dvc metrics show` shows): each value with its interval rounded to the digits the interval "
                    "supports, and a flag in words where an estimate is degenerate, lies outside its interval or "
                    "rests on too few images. Every number: `make metrics-all`.")
    parser.add_argument("--file", type=Path, default=Path("data/08_reporting/headline.json"), metavar="FILE",
                        help="the headline file (default: data/08_reporting/headline.json)")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        sys.stderr.write(f"synthmed headline: {args.file} does not exist; run `make demo` (or `dvc repro "
                         "evaluation`) from the project root first.\n")
        return 2
    try:
        numbers = load_headline(str(args.file))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        sys.stderr.write(f"synthmed headline: {args.file}: {exc}\n")
        return 2
    sys.stdout.write(f"{args.file} (every number: make metrics-all; the report: data/08_reporting/report.html)\n"
                     f"{headline_text(numbers)}\n")
    return 0


def studies(argv: list[str]) -> int:
    """``synthmed studies``: one page with every 2D study's table beside its published figure."""
    from synthmed.protocols.studies import STUDIES, write_studies_index

    parser = argparse.ArgumentParser(
        prog="synthmed studies",
        description="Write one HTML page with the table of each 2D study that has run (its table.csv under "
                    "--root), printed beside the published figure it reproduces, and the command for each "
                    "study that has not run. `make studies` runs the four studies, then this.")
    parser.add_argument("--root", type=Path, default=Path("data/08_reporting/studies"), metavar="DIR",
                        help="the studies' folder (default: data/08_reporting/studies)")
    args = parser.parse_args(argv)
    try:
        index, found = write_studies_index(args.root)
    except ValueError as exc:
        sys.stderr.write(f"synthmed studies: {exc}\n")
        return 2
    for name in STUDIES:
        state = f"{args.root / name / 'table.csv'}" if found[name] else f"not run: kedro run --pipelines study_{name}"
        sys.stdout.write(f"  {name:22s} {state}\n")
    sys.stdout.write(f"{index} ({sum(found.values())} of {len(found)} studies)\n")
    return 0


def plots(argv: list[str]) -> int:
    """``synthmed plots``: ``dvc plots show`` whose page inlines Vega (opens offline); refused if it loads any."""
    import tempfile

    from synthmed.core.offline_plots import remote_scripts, write_offline_template

    root = _project_root("plots", argv, (
        "usage: synthmed plots [DVC PLOTS SHOW OPTIONS]\n\nRuns `dvc plots show` with an HTML template that "
        "inlines Vega, Vega-Lite and Vega-Embed from the installed vl-convert-python package, so that "
        "dvc_plots/index.html (or the folder given with -o) opens without a network. Exit status 1 if the page "
        "still loads a script from the network.\n"))
    if not isinstance(root, Path):
        return root
    out = Path(argv[argv.index("-o") + 1] if "-o" in argv[:-1] else
               argv[argv.index("--out") + 1] if "--out" in argv[:-1] else "dvc_plots")
    with tempfile.TemporaryDirectory() as folder:
        template = write_offline_template(Path(folder) / "offline.html")
        code = subprocess.run([_dvc(), "plots", "show", "--html-template", str(template), *argv], cwd=root).returncode
    page = (out if out.is_absolute() else root / out) / "index.html"
    if code != 0:
        return code
    if not page.is_file():
        sys.stderr.write(f"synthmed plots: dvc plots show wrote no {page}.\n")
        return 1
    remote = remote_scripts(page.read_text(encoding="utf-8"))
    if remote:
        sys.stderr.write(f"synthmed plots: {page} still loads {len(remote)} script(s) from the network: "
                         f"{remote[:3]}\n")
        return 1
    sys.stdout.write(f"{page}: every chart's libraries are inlined; open it in a browser (no network needed).\n")
    return 0


MLFLOW_UI = "http://127.0.0.1:5000"


def runs_url(project: Path, base: str = MLFLOW_UI) -> str | None:
    """The MLflow UI link to the ``synthmed`` experiment's runs in the model-training view, or None before any run.

    MLflow 3.17's UI opens an experiment in its GenAI view unless the link asks otherwise: its
    GenAI / Model training toggle overrides the experiment's ``mlflow.experimentKind`` tag.
    """
    import sqlite3

    database = project / "mlflow.db"
    if not database.is_file():
        return None
    with sqlite3.connect(database) as connection:
        row = connection.execute("select experiment_id from experiments where name = 'synthmed'").fetchone()
    return None if row is None else f"{base}/#/experiments/{row[0]}?workflowType=machine_learning"


def mlflow_url(argv: list[str]) -> int:
    """``synthmed mlflow-url [PROJECT]``: print the link `runs_url` gives (what `make mlflow-ui` shows)."""
    url = runs_url(Path(argv[0]) if argv else Path.cwd())
    sys.stdout.write(f"synthmed runs (model-training view): {url or 'none yet: run make demo first'}\n")
    return 0


def train(argv: list[str]) -> int:
    """``synthmed train --processes N [KEDRO RUN OPTIONS]``: the training pipeline on N processes."""
    from synthmed.core.distributed import TRAINING_PIPELINE

    return _launch(
        argv, "train", (TRAINING_PIPELINE,), TRAINING_PIPELINE,
        usage="synthmed train [--processes N] [KEDRO RUN OPTIONS]",
        description=f"Run the {TRAINING_PIPELINE!r} pipeline through `kedro run` on N processes: with N > 1 under "
                    "torchrun (`python -m torch.distributed.run --standalone --nproc-per-node N -m kedro run "
                    f"--pipelines {TRAINING_PIPELINE} ...`), one node, data-parallel (DDP over gloo on CPU, NCCL on "
                    "CUDA; Accelerate picks). Only the main process saves the outputs and checkpoints and opens the "
                    "MLflow run. Every other option goes to `kedro run` (--namespaces, --params, --env, ...). "
                    "Several nodes: run torchrun yourself (README, Generators).")


def launch(argv: list[str]) -> int:
    """``synthmed launch --processes N --pipelines NAMES [KEDRO RUN OPTIONS]``: sampling, rebalancing
    (and training) on N processes."""
    from synthmed.core.distributed import MULTI_PROCESS_PIPELINES

    return _launch(
        argv, "launch", MULTI_PROCESS_PIPELINES, None,
        usage="synthmed launch [--processes N] --pipelines NAMES [KEDRO RUN OPTIONS]",
        description=f"Run pipelines of {', '.join(MULTI_PROCESS_PIPELINES)} through `kedro run` on N processes "
                    "(torchrun when N > 1, as `synthmed train`). Sampling and the memorisation gate split their "
                    "work: each process draws a contiguous block of the batches, and scores a block of the gate's "
                    "queries; the blocks are gathered, so the outputs are those of one process, bit for bit. Only "
                    "the main process saves and opens the MLflow run. --pipelines is required; every other option "
                    "goes to `kedro run`.")


def _launch(argv: list[str], name: str, allowed: tuple[str, ...], default: str | None, *, usage: str,
            description: str) -> int:
    """Parse ``--processes``, build the command (``launch_command``) and let it take this process's place."""
    import os

    from synthmed.core.distributed import launch_command

    parser = argparse.ArgumentParser(prog=f"synthmed {name}", usage=usage, description=description)
    parser.add_argument("--processes", "-n", type=int, default=1, metavar="N",
                        help="processes on this machine, one per GPU on CUDA (default: 1, no launcher)")
    args, kedro_args = parser.parse_known_args(argv)
    if not (Path.cwd() / "pyproject.toml").is_file():
        parser.error(f"no pyproject.toml in {Path.cwd()}; run it from the project root")
    try:
        command = launch_command(args.processes, kedro_args, allowed=allowed, default=default,
                                 command=f"synthmed {name}")
    except ValueError as exc:
        parser.error(str(exc))
    sys.stderr.write(f"synthmed {name}: {' '.join(command)}\n")
    sys.stderr.flush()
    os.execv(command[0], command)  # the launcher takes this process's place: Ctrl-C reaches it directly
    return 0  # not reached


def _project_root(command: str, argv: list[str], usage: str) -> Path | int:
    """The project root (the working directory, with a dvc.yaml), or the exit status to return.

    ``-h``/``--help`` prints ``usage`` (status 0); a folder without dvc.yaml is refused (2).
    """
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(usage)
        return 0
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        sys.stderr.write(f"synthmed {command}: no dvc.yaml in {root}; run it from the project root.\n")
        return 2
    return root


def _dvc() -> str:
    """The dvc next to this Python (the project's environment), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else "dvc"


_COMMANDS = {"verify": verify, "add-raw": add_raw, "push": push, "pull": pull, "generate": generate,
             "headline": headline, "studies": studies, "plots": plots, "mlflow-url": mlflow_url, "train": train,
             "launch": launch}


def main(*args, **kwargs) -> Any:
    argv = list(args[0]) if args and isinstance(args[0], (list, tuple)) else sys.argv[1:]
    if argv[:1] and argv[0] in _COMMANDS:
        code = _COMMANDS[argv[0]](argv[1:])
        if hasattr(sys, "ps1"):  # interactive: return the status instead of exiting
            return code
        sys.exit(code)

    # Imported here: kedro.framework.project configures logging on import, and
    # `synthmed verify` should start fast and print only its report.
    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    package_name = Path(__file__).parent.name
    configure_project(package_name)

    interactive = hasattr(sys, 'ps1')
    kwargs["standalone_mode"] = not interactive

    run = find_run_command(package_name)
    return run(*args, **kwargs)


if __name__ == "__main__":
    main()
