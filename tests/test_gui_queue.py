"""The queue panel (one cancel button per job) and batches shown as a grid in the viewer."""
from __future__ import annotations

import pytest
from gui_support import close_window, make_window, wait_idle
from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtGui import QHelpEvent
from PySide6.QtWidgets import QApplication, QToolTip

from engine.graph import Graph, Link, Node


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    w.queue_dock.raise_()  # the Queue tab, in front of the Log
    yield w
    close_window(w)


def _slow_graph(steps: int, delay: float, batch: int = 1) -> Graph:
    graph = Graph()
    graph.add_node(Node("sampler", "SlowSampler", params={"steps": steps, "delay": delay, "seed": 7,
                                                           "batch": batch}))
    graph.add_node(Node("preview", "PreviewImage", pos=(320.0, 0.0)))
    graph.connect(Link("sampler", "image", "preview", "image"))
    return graph


def _queue_runs(window, qtbot, count: int) -> None:
    window.view.setFocus()
    for _ in range(count):
        qtbot.keyClick(window.view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def _log_says(window, text: str) -> bool:
    return any(text in line for _, line in window.log.lines)


def test_cancelling_a_waiting_run_in_the_queue_panel_leaves_the_others_alone(window, qtbot):
    panel = window.queue_panel
    window.doc.set_graph(_slow_graph(steps=25, delay=0.02), None)
    window.editor.set_seed_mode("sampler", "seed", "increment")  # each run its own seed: 7, 8, 9
    _queue_runs(window, qtbot, 3)
    assert list(panel.rows) == [1, 2, 3]
    qtbot.waitUntil(lambda: "Slow Sampler" in panel.rows[1].state.text(), timeout=20000)
    states = dict(panel.row_states())
    assert states[1].startswith("running · Slow Sampler")  # the node running now, and how far
    assert (states[2], states[3]) == ("waiting (next)", "waiting (2nd in line)")
    qtbot.mouseClick(panel.rows[2].cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: list(panel.rows) == [1, 3], timeout=5000)
    assert panel.rows[1].state.text().startswith("running")  # the running one goes on
    assert panel.rows[3].state.text() == "waiting (next)"
    assert _log_says(window, "Run #2 cancelled")
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=20000)
    assert _log_says(window, "Run #1 done") and _log_says(window, "Run #3 done")
    assert [e.info["seed"] for e in window.viewer.entries()] == [9, 7]  # run 2 (seed 8) made nothing
    assert panel.rows == {} and panel.empty.isVisible()


def test_cancelling_the_running_run_in_the_queue_panel_goes_on_to_the_next(window, qtbot):
    panel = window.queue_panel
    window.doc.set_graph(_slow_graph(steps=400, delay=0.02), None)
    _queue_runs(window, qtbot, 1)
    window.editor.set_param("sampler", "steps", 2)
    _queue_runs(window, qtbot, 1)
    qtbot.waitUntil(lambda: panel.rows[1].state.text().startswith("running · Slow Sampler"), timeout=20000)
    qtbot.mouseClick(panel.rows[1].cancel_button, Qt.MouseButton.LeftButton)
    assert panel.rows[1].state.text() == "cancelling…"
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=10000)
    assert _log_says(window, "Run #1 cancelled") and _log_says(window, "Run #2 done")
    assert window.run_control.last_result.ok and panel.rows == {}


def test_a_batch_of_four_is_shown_as_a_grid_and_a_click_shows_one_alone(window, qtbot):
    viewer = window.viewer
    window.doc.set_graph(_slow_graph(steps=1, delay=0.0, batch=4), None)
    _queue_runs(window, qtbot, 1)
    wait_idle(qtbot, window)
    assert viewer.showing_grid() and len(viewer.grid.entries) == 4
    assert [e.info["seed"] for e in viewer.grid.entries] == [7, 8, 9, 10]
    assert "batch of 4" in viewer.caption.text() and "seeds 7–10" in viewer.caption.text()
    assert len(viewer.entries()) == 4  # and each one in the history strip
    cells = [viewer.grid.cell_rect(i) for i in range(4)]
    area = viewer.grid.rect().toRectF()
    assert all(area.contains(c) and c.width() > 40 for c in cells)  # four cells side by side, none hidden
    assert not any(a.intersects(b) for i, a in enumerate(cells) for b in cells[i + 1:])
    third = cells[2].center().toPoint()
    QApplication.sendEvent(viewer.grid, QHelpEvent(QEvent.Type.ToolTip, third, viewer.grid.mapToGlobal(third)))
    assert "seed 9" in QToolTip.text()
    qtbot.mouseClick(viewer.grid, Qt.MouseButton.LeftButton, pos=third)
    assert not viewer.showing_grid() and viewer.current.info["seed"] == 9
    assert viewer.canvas.image.pixelColor(QPoint(4, 4)).red() == viewer.current.pixels[4, 4, 0]
    assert "seed 9" in viewer.caption.text()
    qtbot.mouseClick(viewer.grid_button, Qt.MouseButton.LeftButton)  # back to the whole batch
    assert viewer.showing_grid()
