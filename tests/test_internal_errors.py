"""A crash (a bug in Kiln) exits 3, not 1 like a node that failed, with its traceback in a log file
under $XDG_CACHE_HOME/kiln/logs and one line on stderr naming that file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CRASH = """
import runpy, sys
import kiln.cli

def broken(argv, registry):
    raise ZeroDivisionError("a bug deep inside")

kiln.cli.COMMANDS["validate"] = broken
sys.argv = ["main.py", "validate", "graph.json"]
runpy.run_path("main.py", run_name="__main__")
"""


def run(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, *(["-c", code] if code else ["main.py"]), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_an_uncaught_exception_exits_3_with_a_logged_traceback(tmp_path):
    done = run(CRASH, tmp_path)
    assert done.returncode == 3
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and len(err[0]) < 300
    assert err[0].startswith("kiln: internal error (ZeroDivisionError), a bug in Kiln")
    assert "please report it" in err[0] and "Traceback" not in err[0]
    logs = list((tmp_path / "cache" / "kiln" / "logs").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err[0]
    text = logs[0].read_text()
    assert "Traceback" in text and "ZeroDivisionError: a bug deep inside" in text
    assert "command: main.py validate graph.json" in text


def test_a_user_mistake_still_exits_2(tmp_path):
    assert run("", tmp_path, "validate", str(tmp_path / "absent.json")).returncode == 2


def test_help_documents_the_exit_codes(tmp_path):
    done = run("", tmp_path, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "3 an internal error" in text and "kiln/logs" in text
    run_help = " ".join(run("", tmp_path, "run", "--help").stdout.split())
    assert "1 a node failed" in run_help and "3 an internal error" in run_help
