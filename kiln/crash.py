"""An internal error (a bug in Kiln, not the user's doing): log its traceback, say where, exit 3.

The traceback goes to a file in the user's cache folder ($XDG_CACHE_HOME/kiln/logs,
else ~/.cache/kiln/logs) and one line on stderr names that file, so scripts can
tell a crash (3) from a node that failed (1) or a user mistake (2).
"""
from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from pathlib import Path

INTERNAL_ERROR = 3


def log_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kiln" / "logs"


def write_log(exc: BaseException, argv: list[str]) -> Path | None:
    """Write the traceback with the command line and versions; None when no log can be written."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = log_folder() / f"crash-{stamp}-{os.getpid()}.log"
    text = (f"kiln internal error at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            f"command: main.py {' '.join(argv)}\n"
            f"python {platform.python_version()} on {platform.platform()}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="replace")
    except OSError:
        return None
    return path


def report(exc: BaseException, argv: list[str]) -> int:
    """One line on stderr asking for a report with the log's path; returns the exit status 3."""
    path = write_log(exc, argv)
    where = f"the details are in {path}" if path else "no log could be written (traceback below)"
    print(f"kiln: internal error ({type(exc).__name__}), a bug in Kiln, not in your graph; "
          f"please report it with the log: {where}", file=sys.stderr)
    if path is None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return INTERNAL_ERROR
