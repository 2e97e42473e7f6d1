"""Params shown as inputs, in the window: the node's context menu converts them, a Seed node's link
drives them, their widgets follow, one undo step each, and one Seed node seeds two samplers."""
from __future__ import annotations

import pytest
from gui_support import close_window, drag, make_window, view_point, wait_idle
from PySide6.QtCore import QPointF, QTimer
from PySide6.QtGui import QContextMenuEvent
from PySide6.QtWidgets import QApplication, QLabel, QMenu

from app.param_widgets import SeedEditor
from engine.graph import Graph, Link, Node


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


def _seed_and_two_samplers() -> Graph:
    graph = Graph()
    graph.add_node(Node("seed", "Seed", params={"value": 40}, pos=(0.0, 0.0)))
    graph.add_node(Node("a", "SlowSampler", params={"steps": 1, "seed": 7}, pos=(360.0, 0.0)))
    graph.add_node(Node("b", "SlowSampler", params={"steps": 2, "seed": 8}, pos=(360.0, 260.0)))
    return graph


def _open(window, graph: Graph) -> None:
    window.doc.set_graph(graph, None)
    window.view.resetTransform()
    window.view.centerOn(QPointF(300, 150))


def _context_menu_pick(window, qtbot, scene_pos: QPointF, *path: str) -> list[str]:
    """Right-click the canvas at `scene_pos` and choose `path` in the menu (submenu titles, then an entry);
    returns the entries the menu offered at its last level."""
    offered: list[str] = []

    def choose() -> None:
        menu = QApplication.activePopupWidget()
        if not isinstance(menu, QMenu):
            QTimer.singleShot(10, choose)
            return
        for title in path[:-1]:
            menu = next(a for a in menu.actions() if a.text() == title).menu()
        offered.extend(a.text() for a in menu.actions() if a.text())
        action = next((a for a in menu.actions() if a.text() == path[-1]), None)
        QApplication.activePopupWidget().close()
        if action is not None:
            action.trigger()

    QTimer.singleShot(0, choose)
    viewport = window.view.viewport()
    at = view_point(window, scene_pos)
    QApplication.sendEvent(viewport, QContextMenuEvent(QContextMenuEvent.Reason.Mouse, at, viewport.mapToGlobal(at)))
    qtbot.waitUntil(lambda: bool(offered))
    return offered


def _title_of(window, node_id: str) -> QPointF:
    return window.scene.nodes[node_id].scenePos() + QPointF(60, 12)


def _convert_to_input(window, qtbot, node_id: str, param: str) -> list[str]:
    return _context_menu_pick(window, qtbot, _title_of(window, node_id), "Convert Widget to Input",
                              f"Convert {param} to Input")


def _port(window, node_id: str, name: str, output: bool) -> QPointF:
    item = window.scene.nodes[node_id]
    return (item.outputs if output else item.inputs)[name].scenePos()


def test_the_context_menu_converts_a_param_to_an_input_in_one_undo_step(window, qtbot):
    _open(window, _seed_and_two_samplers())
    count = window.doc.undo_stack.count()
    offered = _convert_to_input(window, qtbot, "a", "seed")
    assert {"Convert steps to Input", "Convert delay to Input", "Convert seed to Input"} <= set(offered)
    assert window.doc.graph.nodes["a"].param_inputs == ["seed"]
    port = window.scene.nodes["a"].inputs["seed"]
    assert port.is_param and "unlinked, it uses its own value" in port.toolTip()
    assert window.doc.undo_stack.count() == count + 1
    assert window.doc.undo_stack.undoText() == "Convert seed of Slow Sampler to input"
    window.actions["undo"].trigger()
    assert window.doc.graph.nodes["a"].param_inputs == [] and "seed" not in window.scene.nodes["a"].inputs
    window.actions["redo"].trigger()
    assert "seed" in window.scene.nodes["a"].inputs
    offered = _context_menu_pick(window, qtbot, _title_of(window, "a"), "Convert seed to Widget")
    assert "Convert seed to Widget" in offered and "Convert Widget to Input" in offered
    assert window.doc.graph.nodes["a"].param_inputs == []


def test_a_seed_node_linked_by_mouse_drives_the_param_and_its_widget_shows_where_from(window, qtbot):
    _open(window, _seed_and_two_samplers())
    _convert_to_input(window, qtbot, "a", "seed")
    drag(window, _port(window, "seed", "seed", True), _port(window, "a", "seed", False))
    assert window.doc.graph.incoming("a")["seed"] == Link("seed", "seed", "a", "seed")
    inline = window.scene.nodes["a"].editors["seed"]
    assert isinstance(inline, SeedEditor) and not inline.isEnabled()
    assert "from Seed (seed.seed)" in inline.toolTip()
    window.scene.select_nodes(["a"])
    label = window.properties.linked_labels["seed"]
    assert isinstance(label, QLabel) and label.text() == "from Seed (seed.seed)"
    assert "seed" not in window.properties.editors and "steps" in window.properties.editors
    window.editor.disconnect(window.doc.graph.incoming("a")["seed"])
    assert window.scene.nodes["a"].editors["seed"].isEnabled() and "seed" in window.properties.editors


def test_an_int_output_cannot_feed_a_text_param_and_the_refusal_says_why(window, qtbot):
    graph = Graph()
    graph.add_node(Node("n", "Integer", params={"value": 3}))
    graph.add_node(Node("t", "TextEncode", pos=(360.0, 0.0)))
    _open(window, graph)
    _convert_to_input(window, qtbot, "t", "text")
    drag(window, _port(window, "n", "value", True), _port(window, "t", "text", False))
    assert "text" not in window.doc.graph.incoming("t")
    assert window.scene.last_refusal == "INT output cannot feed the text param 'text' (it takes STRING)"


def test_converting_back_to_a_widget_takes_the_link_away_in_the_same_undo_step(window, qtbot):
    _open(window, _seed_and_two_samplers())
    _convert_to_input(window, qtbot, "a", "seed")
    window.editor.connect("seed", "seed", "a", "seed")
    before = window.doc.dumps()
    count = window.doc.undo_stack.count()
    _context_menu_pick(window, qtbot, _title_of(window, "a"), "Convert seed to Widget")
    assert window.doc.graph.nodes["a"].param_inputs == [] and "seed" not in window.doc.graph.incoming("a")
    assert "seed" not in window.scene.nodes["a"].inputs and not window.scene.links
    assert window.scene.nodes["a"].editors["seed"].isEnabled()
    assert window.doc.undo_stack.count() == count + 1
    assert window.doc.undo_stack.undoText() == "Convert seed of Slow Sampler to widget"
    window.actions["undo"].trigger()
    assert window.doc.dumps() == before
    assert window.scene.nodes["a"].inputs["seed"].connected and len(window.scene.links) == 1
    assert not window.scene.nodes["a"].editors["seed"].isEnabled()
    window.actions["redo"].trigger()
    assert "seed" not in window.doc.graph.incoming("a") and not window.scene.links


def _seeds_shown(window) -> tuple[int, int]:
    """The seed each sampler's picture was made with, as the viewer shows it."""
    return tuple(window.run_control.node_images[n].info["seed"] for n in ("a", "b"))


def test_one_seed_node_seeds_two_samplers_and_advances_itself_after_a_run(window, qtbot):
    _open(window, _seed_and_two_samplers())
    for sampler in ("a", "b"):
        _convert_to_input(window, qtbot, sampler, "seed")
        drag(window, _port(window, "seed", "seed", True), _port(window, sampler, "seed", False))
    window.editor.set_seed_mode("seed", "value", "increment")
    window.editor.set_seed_mode("a", "seed", "randomize")  # set before converting: the link wins
    window.run_graph()
    wait_idle(qtbot, window)
    assert window.run_control.last_result.ok
    assert _seeds_shown(window) == (40, 40)  # both got the Seed node's value, not their own 7 and 8
    assert window.doc.graph.nodes["seed"].params["value"] == 41  # advanced for the next run
    assert window.doc.graph.nodes["a"].params["seed"] == 7  # the driven param is left alone
    window.run_control.last_result = None
    window.run_graph()
    wait_idle(qtbot, window)
    assert _seeds_shown(window) == (41, 41)
    statuses = window.run_control.last_result.statuses
    assert (statuses["a"][0], statuses["b"][0]) == ("ran", "ran")
