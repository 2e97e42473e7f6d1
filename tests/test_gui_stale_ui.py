"""Nothing on screen outlives what it describes: the viewer after another graph is opened or New,
failure marks after the edit that failed is undone, and the viewer's width after new results."""
from __future__ import annotations

import pytest
from gui_support import Answers, close_window, demo_graph, make_window, wait_idle
from PySide6.QtWidgets import QApplication

from engine import graph_file
from engine.graph import Link, Node


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


def _run(window, qtbot) -> None:
    window.run_control.last_result = None
    window.actions["run"].trigger()
    wait_idle(qtbot, window)


def test_opening_another_graph_or_new_clears_the_viewer_but_keeps_its_history(window, qtbot, tmp_path):
    window.doc.set_graph(demo_graph(), None)
    _run(window, qtbot)
    assert window.viewer.current is not None and window.viewer.canvas.image is not None
    path = tmp_path / "other.json"
    graph_file.save(demo_graph(), path)
    window.ask = Answers(unsaved="discard")
    assert window.open_file(str(path))
    assert window.viewer.current is None and window.viewer.canvas.image is None
    assert window.viewer.caption.text() == ""
    assert len(window.viewer.entries()) == 1  # still there to restore from
    _run(window, qtbot)
    assert window.viewer.current is not None
    window.actions["new"].trigger()
    assert window.viewer.current is None and window.viewer.canvas.image is None
    assert window.doc.graph.nodes == {}


def test_undoing_the_edit_that_failed_takes_the_failure_mark_away(window, qtbot):
    graph = demo_graph()
    graph.add_node(Node("boom", "Explode", pos=(320.0, 300.0), disabled=True))  # passes its input through
    graph.disconnect(graph.incoming("preview")["image"])
    graph.connect(Link("invert", "image", "boom", "image"))
    graph.connect(Link("boom", "image", "preview", "image"))
    window.doc.set_graph(graph, None)
    _run(window, qtbot)
    assert window.run_control.last_result.ok
    window.scene.select_nodes(["boom"])
    window.actions["disable"].trigger()  # enable it: the edit that will fail
    _run(window, qtbot)
    boom = window.scene.nodes["boom"]
    assert boom.state == "failed"
    window.actions["undo"].trigger()
    assert window.doc.graph.nodes["boom"].disabled
    assert window.scene.nodes["boom"].state != "failed"
    assert "failed" not in window.scene.nodes["boom"].toolTip()


def test_the_viewer_keeps_its_width_when_results_of_other_sizes_come_in(window, qtbot):
    window.doc.set_graph(demo_graph(), None)
    QApplication.processEvents()
    width = window.viewer_dock.width()
    _run(window, qtbot)
    QApplication.processEvents()
    assert window.viewer_dock.width() == width
    window.editor.set_param("solid", "width", 1024)
    window.editor.set_param("solid", "height", 96)
    window.editor.rename("preview", "a preview with a long title that once pushed the viewer wider and wider")
    _run(window, qtbot)
    QApplication.processEvents()
    assert window.viewer.current.pixels.shape[:2] == (96, 1024)
    assert window.viewer_dock.width() == width
