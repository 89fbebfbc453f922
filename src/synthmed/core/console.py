"""How a failed command ends on the console: synthmed's own errors as their message, first.

synthmed's checks (parameters, checksums, input files, rejection limits, keys) raise errors
whose message already names the file, the value and the fix. Python prints the traceback
first and that message last, 30 lines further down (200 with Kedro's rich handler).
`install_error_display` sets ``sys.excepthook`` so that such an error ends the command as::

    synthmed: ParameterError: 1 problem(s) in the parameters ...
    (traceback: logs/synthmed.log, or rerun with SYNTHMED_TRACEBACK=1)

and its traceback goes to the log file (the ``file`` handler of conf/logging.yml). An error
is synthmed's own when its class is defined in synthmed, or when it is a ``ValueError``
raised by synthmed's code (the innermost frame is in synthmed: a deliberate check, not a
library's complaint). Anything else is a bug or a library failure and keeps Python's full
traceback. It also routes warnings to logging, one line each, like Kedro's rich handler did.
"""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType

PACKAGE = "synthmed"
TRACEBACK_ENV = "SYNTHMED_TRACEBACK"


def _in_package(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def is_own_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of synthmed's checks, whose message is meant for the user."""
    if _in_package(type(exc).__module__ or ""):
        return True
    tb = exc.__traceback__
    if not isinstance(exc, ValueError) or tb is None:
        return False
    while tb.tb_next is not None:  # the innermost frame: where the error was raised
        tb = tb.tb_next
    return _in_package(tb.tb_frame.f_globals.get("__name__", ""))


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if os.environ.get(TRACEBACK_ENV) or not is_own_error(exc) or issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    record = logging.LogRecord(PACKAGE, logging.ERROR, __file__, 0, "Command failed", None, (kind, exc, tb))
    for handler in files:  # the traceback goes to the log file only
        handler.handle(record)
    where = f"{os.path.relpath(files[0].baseFilename)}, or rerun" if files else "rerun"
    sys.stderr.write(f"{PACKAGE}: {kind.__name__}: {exc}\n(traceback: {where} with {TRACEBACK_ENV}=1)\n")


def install_error_display() -> None:
    """Show synthmed's own errors as their message (see the module docstring); warnings go to logging."""
    logging.captureWarnings(True)
    sys.excepthook = _excepthook
