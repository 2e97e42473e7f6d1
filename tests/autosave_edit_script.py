"""Run by tests/test_autosave_kill.py as a real process: open the window offscreen with its
settings (and recovery file) in the folder given, then change a param every 0.5 s forever,
printing "edit <index> <time>" after each edit, until killed."""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(folder: str) -> None:
    from gui_support import demo_graph, make_registry
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.settings import AppSettings
    from app.window import MainWindow

    app = QApplication([])
    settings = AppSettings(QSettings(os.path.join(folder, "kiln.ini"), QSettings.Format.IniFormat))
    window = MainWindow(make_registry(), settings)
    window.show()
    window.doc.set_graph(demo_graph(), None)
    count = [0]

    def edit() -> None:
        count[0] += 1
        window.editor.set_param("solid", "width", 100 + count[0])
        print(f"edit {count[0]} {time.time():.3f}", flush=True)

    timer = QTimer(interval=500)
    timer.timeout.connect(edit)
    timer.start()
    print(f"ready {settings.recovery_path()}", flush=True)
    app.exec()


if __name__ == "__main__":
    main(sys.argv[1])
