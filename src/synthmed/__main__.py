"""The ``synthmed`` command (also ``python -m synthmed``).

``synthmed verify [--data DIR] [--json]`` checks every store under ``data/`` against the
checksums its writer recorded (see ``synthmed.datasets.integrity``). Anything else is
Kedro's ``run`` command, as before: ``synthmed --pipelines ingestion``.
"""
import argparse
import json
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


def main(*args, **kwargs) -> Any:
    argv = list(args[0]) if args and isinstance(args[0], (list, tuple)) else sys.argv[1:]
    if argv[:1] == ["verify"]:
        code = verify(argv[1:])
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
