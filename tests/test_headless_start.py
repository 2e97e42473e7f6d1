"""`python3 main.py` where there is no display says so and how to work headless, instead of
opening an invisible window and waiting for ever."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY/WAYLAND_DISPLAY are Linux's")
def test_starting_the_editor_without_a_display_says_why_and_exits(tmp_path):
    scrubbed = ["env", "-u", "DISPLAY", "-u", "WAYLAND_DISPLAY", "-u", "QT_QPA_PLATFORM",
                f"XDG_CONFIG_HOME={tmp_path}"]  # even a run that wrongly starts never touches real settings
    done = subprocess.run([*scrubbed, sys.executable, str(REPO / "main.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no display" in lines[0] and "main.py run GRAPH.json" in lines[0] and "--screenshot" in lines[0]
    assert done.stdout == ""
