"""`kedro run --verbose`: synthmed's errors with their full traceback on the console.

Kedro loads a project's ``cli`` group from ``<package>.cli`` and lets its commands override the
built-in ones (Kedro's documented way to add or modify CLI commands). ``run`` here is Kedro's
own ``run`` command, unchanged, with one more flag: ``--verbose`` / ``-v`` sets
``SYNTHMED_TRACEBACK=1`` before the run starts, so an error from synthmed's own checks ends the
run with Python's traceback instead of its message alone (`synthmed.core.console`). Without the
flag, the traceback is in ``logs/synthmed.log``.
"""

from __future__ import annotations

import copy
import os

import click
from kedro.framework.cli.project import run as _kedro_run

from synthmed.core.console import TRACEBACK_ENV


def _show_tracebacks(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        os.environ[TRACEBACK_ENV] = "1"


run = copy.copy(_kedro_run)  # Kedro's command object stays as it is for other projects
run.params = [*_kedro_run.params, click.Option(
    ["--verbose", "-v"], is_flag=True, expose_value=False, is_eager=True, callback=_show_tracebacks,
    help=f"Show the full traceback of synthmed's own errors on the console (same as {TRACEBACK_ENV}=1); "
         "without it, the message comes first and the traceback is in logs/synthmed.log.")]


@click.group(name="synthmed")
def cli() -> None:
    """synthmed's change to the Kedro project commands (`kedro run --verbose`)."""


cli.add_command(run, "run")
