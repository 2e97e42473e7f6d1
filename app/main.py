"""Start the desktop application (`python main.py [GRAPH] [--screenshot PATH] [--run] [--size WxH]`)."""
from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

DEFAULT_GRAPH = Path(__file__).resolve().parents[1] / "resources" / "graphs" / "default.json"
DEFAULT_SIZE = (1600, 1000)
RUN_TIMEOUT_S = 600.0


def _needs_offscreen() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return False
    if sys.platform.startswith("linux"):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


NO_DISPLAY = ("kiln: no display to open the editor on (neither DISPLAY nor WAYLAND_DISPLAY is set); "
              "run a graph headless with `python3 main.py run GRAPH.json`, or picture the editor with "
              "`python3 main.py [GRAPH.json] --screenshot OUT.png`")


def make_application():
    """The QApplication (created once), themed."""
    if _needs_offscreen():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from app.theme import apply_theme

    # The engine thread runs Python between its torch calls; hand the interpreter back to
    # the UI thread more often than the default 5 ms so painting never waits long for it.
    sys.setswitchinterval(0.001)
    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(sys.argv[:1])
        app.setOrganizationName("Kiln")
        app.setApplicationName("Kiln")
        apply_theme(app)
    return app


def demo_graph():
    """A small model-free graph shown when there is no default graph file yet."""
    from engine.graph import Graph, Link, Node

    graph = Graph(meta={"note": "built-in demo: resources/graphs/default.json was not found"})
    graph.add_node(Node("solid", "SolidImage", params={"width": 256, "height": 256, "color": "#3c6ea8"},
                        pos=(0.0, 0.0)))
    graph.add_node(Node("invert", "ImageInvert", pos=(320.0, 0.0)))
    graph.add_node(Node("preview", "PreviewImage", pos=(620.0, 0.0)))
    graph.connect(Link("solid", "image", "invert", "image"))
    graph.connect(Link("invert", "image", "preview", "image"))
    return graph


def load_initial(window, graph_path: str | None) -> bool:
    """The file given, else resources/graphs/default.json, else the built-in demo (said clearly).

    False when the file given could not be opened (the window says why)."""
    if graph_path:
        return window.load_path(graph_path)
    if DEFAULT_GRAPH.exists() and window.load_path(str(DEFAULT_GRAPH)):
        return True  # an example: it opens as a template, so Ctrl+S never overwrites it
    graph = demo_graph()
    if all(n.type in window.registry for n in graph):
        window.doc.set_graph(graph, None)
        window.log.add("warn", "resources/graphs/default.json not found: showing a small built-in demo graph")
    else:
        window.log.add("warn", "resources/graphs/default.json not found: starting with an empty graph")
    from PySide6.QtCore import QTimer

    QTimer.singleShot(0, window.frame_on_open)
    return True


async def _wait_for_runs(window, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while window.runner.busy:
        if time.monotonic() > deadline:
            window.runner.cancel()
            return False
        await asyncio.sleep(0.05)
    return True


async def _screenshot_session(app, window, path: str, run: bool) -> int:
    await asyncio.sleep(0.1)
    code = 0
    if run:
        window.run_graph()
        await asyncio.sleep(0.05)
        finished = await _wait_for_runs(window, RUN_TIMEOUT_S)
        result = window.run_control.last_result
        code = 0 if finished and result is not None and result.ok else 1
        await asyncio.sleep(0.2)  # let the last thumbnails and viewer paint
    window.frame_on_open()
    await asyncio.sleep(0.05)
    window.grab().save(path)
    window.doc.undo_stack.setClean()  # a screenshot session never asks to save
    window.close()
    return code


def run_app(graph_path: str | None = None, screenshot: str | None = None, run: bool = False,
            size: tuple[int, int] | None = None) -> int:
    """Open the editor; with `screenshot`, save a PNG of the window and exit (after the run if `run`).

    2, with one line on stderr, when there is no display for the window (and no screenshot asked)."""
    if not screenshot and _needs_offscreen():
        print(NO_DISPLAY, file=sys.stderr)  # an invisible window would wait for ever
        return 2
    app = make_application()
    import qasync

    from app.window import MainWindow

    window = MainWindow()
    window.resize(*DEFAULT_SIZE)
    if size is None:
        window.restore_layout()
    else:
        window.resize(*size)
    window.show()
    loaded = load_initial(window, graph_path)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        if screenshot:
            code = loop.run_until_complete(_screenshot_session(app, window, screenshot, run and loaded))
            if not loaded:
                print(window.log.lines[-1][1], file=sys.stderr)
                return 2
            return code
        window.offer_recovery()
        if run:
            window.run_graph()
        closed = asyncio.Event()
        app.aboutToQuit.connect(closed.set)
        app.lastWindowClosed.connect(closed.set)
        loop.run_until_complete(closed.wait())
    return 0
