"""The canvas view as a person sees it: legible framing on open, New, the wheel over inline boxes,
panning, and a minimap that follows the graph without covering it."""
from __future__ import annotations

from pathlib import Path

import pytest
from gui_support import Answers, close_window, demo_graph, make_window, view_point
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QFontInfo, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

from app.canvas import style
from app.canvas.view import PAN_HINT
from engine import graph_file
from engine.graph import Graph, Link, Node

DEFAULT_GRAPH = Path(__file__).resolve().parents[1] / "resources" / "graphs" / "default.json"


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


def _readable(window) -> float:
    return style.readable_zoom(window.view.viewport().font())


def _visible(window) -> QRectF:
    view = window.view
    return view.mapToScene(view.viewport().rect()).boundingRect()


def _nodes_under_minimap(window) -> list[str]:
    view, minimap = window.view, window.view.minimap
    if not minimap.isVisible():
        return []
    area = minimap.geometry().translated(-view.viewport().pos())
    return [n for n, item in view.graph_scene.nodes.items()
            if view.mapFromScene(item.sceneBoundingRect()).boundingRect().intersects(area)]


def _chain(count: int, per_row: int, dx: float = 320.0, dy: float = 260.0) -> Graph:
    graph = Graph()
    for i in range(count):
        kind = "SolidImage" if i == 0 else "ImageInvert"
        graph.add_node(Node(f"n{i}", kind, pos=((i % per_row) * dx, (i // per_row) * dy)))
        if i % per_row:
            graph.connect(Link(f"n{i - 1}", "image", f"n{i}", "image"))
    return graph


def _open(window, qtbot, graph: Graph, tmp_path) -> None:
    path = tmp_path / "graph.json"
    graph_file.save(graph, path)
    zoom_before = window.view.zoom()
    window.view.scale(0.5, 0.5)  # so that the framing has something to change
    assert window.open_file(str(path))
    qtbot.waitUntil(lambda: window.view.zoom() != zoom_before * 0.5)


def _wheel(window, scene_pos: QPointF, delta: int = 120) -> None:
    viewport = window.view.viewport()
    at = QPointF(view_point(window, scene_pos))
    event = QWheelEvent(at, QPointF(viewport.mapToGlobal(at.toPoint())), QPoint(0, 0), QPoint(0, delta),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
                        False)
    QApplication.sendEvent(viewport, event)


def test_a_wide_graph_opens_legible_at_its_top_left_and_says_how_to_pan(window, qtbot, tmp_path):
    _open(window, qtbot, _chain(60, 20), tmp_path)
    view = window.view
    title_px = QFontInfo(view.viewport().font()).pixelSize() * view.zoom()
    assert title_px >= style.READABLE_TITLE_PX - 1e-6 and view.zoom() == pytest.approx(_readable(window))
    visible = _visible(window)
    assert visible.contains(window.scene.nodes["n0"].sceneBoundingRect())
    assert not visible.contains(window.scene.nodes["n59"].sceneBoundingRect())
    assert window.statusBar().currentMessage() == PAN_HINT
    assert _nodes_under_minimap(window) == []


@pytest.mark.parametrize("size", [(1400, 900), (1600, 1000)])
def test_the_default_graph_opens_legible_with_no_node_under_the_minimap(window, qtbot, size):
    window.resize(*size)
    qtbot.waitUntil(lambda: window.width() == size[0])
    assert window.open_file(str(DEFAULT_GRAPH))
    qtbot.waitUntil(lambda: window.view.zoom() != 1.0)
    assert window.view.zoom() >= _readable(window) - 1e-6
    leftmost = min(window.scene.nodes.values(), key=lambda n: (n.pos().x(), n.pos().y()))
    assert _visible(window).contains(leftmost.sceneBoundingRect())
    assert _nodes_under_minimap(window) == []


def test_framing_a_graph_that_fits_leaves_room_for_the_minimap(window, qtbot, tmp_path):
    _open(window, qtbot, _chain(9, 3, dx=300.0, dy=200.0), tmp_path)
    view, minimap = window.view, window.view.minimap
    assert minimap.isVisible() and minimap.corner == (True, True)
    assert _nodes_under_minimap(window) == []
    graph = QRectF()
    for item in window.scene.nodes.values():
        graph = graph.united(item.sceneBoundingRect())
    assert _visible(window).contains(graph) and view.zoom() >= _readable(window)
    assert window.statusBar().currentMessage() != PAN_HINT


def test_new_resets_the_view_and_the_minimap_shows_the_empty_scene(window, qtbot):
    window.doc.set_graph(demo_graph(), None)
    window.view.zoom_by(0.3)
    window.view.centerOn(QPointF(3000, 2000))
    window.ask = Answers(unsaved="discard")
    window.actions["new"].trigger()
    view = window.view
    assert view.zoom() == pytest.approx(1.0)
    assert view.mapToScene(view.viewport().rect().center()).manhattanLength() <= 3
    minimap = view.minimap
    qtbot.waitUntil(lambda: minimap.drawn_nodes == 0 and minimap.drawn_world == _visible(window))


def test_the_minimap_follows_added_moved_and_undone_nodes(window, qtbot):
    window.doc.set_graph(demo_graph(), None)
    minimap = window.view.minimap
    qtbot.waitUntil(lambda: minimap.drawn_nodes == 3)
    added = window.scene.add_node_from_search("ImageInvert", QPointF(6000, 4000), None)
    item = window.scene.nodes[added]
    qtbot.waitUntil(lambda: minimap.drawn_nodes == 4 and minimap.drawn_world.contains(item.sceneBoundingRect()))
    window.editor.move({"solid": ((0.0, 0.0), (-5000.0, -3000.0))})
    solid = window.scene.nodes["solid"]
    qtbot.waitUntil(lambda: minimap.drawn_world.contains(solid.sceneBoundingRect()))
    window.actions["undo"].trigger()
    window.actions["undo"].trigger()
    qtbot.waitUntil(lambda: minimap.drawn_nodes == 3 and minimap.drawn_world.right() < 3000)


def test_the_wheel_over_an_unfocused_box_zooms_and_over_the_focused_box_changes_it(window, qtbot):
    window.doc.set_graph(Graph(), None)
    node_id = window.editor.add_node("SlowSampler", (0.0, 0.0))
    view = window.view
    view.resetTransform()
    view.centerOn(QPointF(120, 60))
    item = window.scene.nodes[node_id]
    spin = item.editors["steps"].spin
    panel = item.proxy.widget()
    on_box = item.proxy.mapToScene(QPointF(spin.mapTo(panel, spin.rect().center())))
    _wheel(window, on_box)
    assert view.zoom() == pytest.approx(1.15)
    assert spin.value() == 5 and window.doc.graph.nodes[node_id].params["steps"] == 5
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=view_point(window, on_box))
    qtbot.waitUntil(lambda: spin.lineEdit().hasFocus())
    zoom = view.zoom()
    _wheel(window, item.proxy.mapToScene(QPointF(spin.mapTo(panel, spin.rect().center()))))
    assert view.zoom() == pytest.approx(zoom)
    assert spin.value() == 6 and window.doc.graph.nodes[node_id].params["steps"] == 6


def test_alt_drag_pans_like_middle_drag(window):
    view = window.view
    viewport = view.viewport()
    before = view.mapToScene(viewport.rect().center())
    start = viewport.rect().center()
    alt, left = Qt.KeyboardModifier.AltModifier, Qt.MouseButton.LeftButton
    for kind, pos, button, buttons in ((QMouseEvent.Type.MouseButtonPress, start, left, left),
                                       (QMouseEvent.Type.MouseMove, start + QPoint(60, 30), Qt.MouseButton.NoButton,
                                        left),
                                       (QMouseEvent.Type.MouseButtonRelease, start + QPoint(60, 30), left,
                                        Qt.MouseButton.NoButton)):
        event = QMouseEvent(kind, QPointF(pos), QPointF(viewport.mapToGlobal(pos)), button, buttons, alt)
        QApplication.sendEvent(viewport, event)
    after = view.mapToScene(viewport.rect().center())
    assert (after.x(), after.y()) == (pytest.approx(before.x() - 60, abs=2), pytest.approx(before.y() - 30, abs=2))
    assert window.scene.selected_node_ids() == []
