"""The application entry point: `run_app` opens the window, runs the graph and saves a screenshot."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gui_support import demo_graph
from PIL import Image

from engine import graph_file

ROOT = Path(__file__).resolve().parents[1]


def test_run_app_screenshot_after_a_run_shows_the_result(tmp_path):
    graph = tmp_path / "g.json"
    graph_file.save(demo_graph(), graph)
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data")}
    code = ("import sys\nfrom app.main import run_app\n"
            f"sys.exit(run_app({str(graph)!r}, screenshot={str(shot)!r}, run=True, size=(900, 600)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (900, 600)
    expected = tuple(255 - v for v in (0x3c, 0x6e, 0xa8))  # the inverted solid colour, shown in the viewer
    colours = image.getcolors(maxcolors=900 * 600)
    assert any(tuple(c) == expected and n > 2000 for n, c in colours)
