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


def test_opening_the_window_imports_neither_torch_nor_numpy(tmp_path):
    """Start-up stays lean: torch comes with the first run, numpy with the first picture or drawing."""
    code = ("import os, sys\nos.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
            "from PySide6.QtCore import QSettings\nfrom app.main import make_application\n"
            "from app.settings import AppSettings\nfrom app.window import MainWindow\n"
            "app = make_application()\n"
            f"window = MainWindow(settings=AppSettings(QSettings({str(tmp_path / 'k.ini')!r}, "
            "QSettings.Format.IniFormat)))\nwindow.show(); app.processEvents()\n"
            "print(sorted(m for m in ('torch', 'numpy', 'networkx') if m in sys.modules))\n"
            "window.doc.undo_stack.setClean(); window.close()\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
