"""Quitting after real use ends the process cleanly: no crash in Qt's own clean-up after Python has gone."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[1]

SESSION = textwrap.dedent("""
    import sys
    sys.path.insert(0, "tests")
    from PySide6.QtWidgets import QApplication
    from gui_support import demo_graph, make_registry
    from app.window import MainWindow

    app = QApplication([])
    window = MainWindow(make_registry())
    window.doc.set_graph(demo_graph(), None)
    window.show()
    window.select_all()
    window.copy()  # the copied nodes stay on the clipboard after the window is gone
    window.paste()
    window.doc.undo_stack.setClean()
    window.close()
    app.processEvents()
    print("closed")
""")


def test_quitting_after_copying_nodes_exits_cleanly(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", SESSION], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert "closed" in done.stdout, done.stderr[-2000:]
    assert done.returncode == 0, f"the process crashed on quit (exit {done.returncode}): {done.stderr[-800:]}"
