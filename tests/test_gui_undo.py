"""Every kind of edit is one named undo step, and undoing them all gives back the file byte for byte."""
from __future__ import annotations

import numpy as np
import pytest
from gui_support import close_window, demo_graph, drag, make_window
from PySide6.QtCore import QPointF, Qt

from app.viewer import ResultEntry
from engine import graph_file
from engine.graph import Node


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


@pytest.fixture
def opened(window, tmp_path):
    graph = demo_graph()
    graph.add_node(Node("seed", "Seed", params={}, pos=(0.0, 300.0)))  # params left at their defaults
    graph.meta["note"] = "kept as is"
    path = tmp_path / "start.json"
    graph_file.save(graph, path)
    assert window.open_file(str(path))
    window.view.resetTransform()
    window.view.centerOn(QPointF(400, 150))
    return path.read_text(encoding="utf-8")


def _every_kind_of_edit(window, qtbot) -> list[str]:
    ed, scene = window.editor, window.scene
    added = ed.add_node("ImageScale", (0.0, 500.0))
    title = scene.nodes["preview"].scenePos() + QPointF(40, 10)
    drag(window, title, title + QPointF(60, 40))
    ed.connect("invert", "image", added, "image")
    ed.disconnect(window.doc.graph.incoming("preview")["image"])
    inline = scene.nodes["solid"].editors["color"]
    inline.edit.setFocus()
    inline.edit.selectAll()
    qtbot.keyClicks(inline.edit, "#102030")
    ed.set_param("seed", "value", 12345)
    window.scene.select_nodes(["solid", "invert"])
    window.actions["copy"].trigger()
    window.paste(QPointF(0, 800))
    window.scene.select_nodes(["solid", "invert"])
    window.actions["group"].trigger()
    backdrop = next(iter(window.doc.graph.backdrops))
    ed.set_backdrop(backdrop, "Rename backdrop", title="Inputs", color="#345678")
    ed.set_backdrop(backdrop, "Resize backdrop", rect=(-60.0, -100.0, 900.0, 420.0))
    ed.rename("invert", "Negative")
    ed.set_color(["solid"], "#8e3b3b")
    ed.toggle_disabled(["invert"])
    ed.toggle_collapsed(["seed"])
    link = window.doc.graph.incoming(added)["image"]
    ed.add_reroute(link, (200.0, 300.0))
    ed.set_seed_mode("seed", "value", "increment")
    window.scene.select_nodes([added])
    window.actions["duplicate"].trigger()
    window.scene.select_nodes(["preview"])
    window.actions["cut"].trigger()
    window.scene.select_nodes(["solid"])
    window.actions["delete"].trigger()
    old = graph_file.graph_to_dict(demo_graph())
    entry = ResultEntry(np.zeros((4, 4, 3), np.uint8), "x", "old result", old)
    window.restore_from_history(entry)
    ed.add_node("Integer", (900.0, 900.0))
    stack = window.doc.undo_stack
    return [stack.text(i) for i in range(stack.count())]


def test_undoing_every_kind_of_edit_restores_the_file_byte_for_byte(window, opened, qtbot):
    names = _every_kind_of_edit(window, qtbot)
    assert names == [
        "Add Scale Image", "Move 1 item", "Connect Invert Image → Scale Image.image",
        "Disconnect Preview Image.image",
        "Set Solid Image.color", "Set Seed.value", "Paste 2 nodes", "Add backdrop 'Group'", "Rename backdrop",
        "Resize backdrop", "Rename Invert Image to Negative", "Colour 1 node", "Disable 1 node",
        "Collapse nodes",
        "Add reroute dot", "Seed of Seed: increment", "Duplicate 1 node", "Cut", "Delete selection",
        "Restore graph of old result", "Add Integer"]
    edited = window.doc.dumps()
    assert edited != opened and window.doc.dirty
    while window.doc.undo_stack.canUndo():
        window.actions["undo"].trigger()
    assert window.doc.dumps() == opened
    assert not window.doc.dirty and not window.windowTitle().startswith("start.json*")
    while window.doc.undo_stack.canRedo():
        window.actions["redo"].trigger()
    assert window.doc.dumps() == edited


def test_the_canvas_follows_undo_and_redo(window, opened, qtbot):
    _every_kind_of_edit(window, qtbot)
    while window.doc.undo_stack.canUndo():
        window.actions["undo"].trigger()
    graph = window.doc.graph
    assert set(window.scene.nodes) == set(graph.nodes)
    assert set(window.scene.links) == set(graph.links)
    assert set(window.scene.backdrops) == set(graph.backdrops) == set()
    for node_id, item in window.scene.nodes.items():
        assert (item.pos().x(), item.pos().y()) == graph.nodes[node_id].pos
    assert window.scene.nodes["solid"].editors["color"].edit.text() == "#3c6ea8"


def test_a_bulk_paste_is_one_undo_step(window, opened):
    window.scene.select_nodes(["solid", "invert", "preview"])
    window.actions["copy"].trigger()
    count = window.doc.undo_stack.count()
    new = window.paste(QPointF(0, 600))
    assert len(new) == 3 and len(window.doc.graph.nodes) == 7
    assert sum(1 for lk in window.doc.graph.links if lk.dst in new) == 2
    assert window.doc.undo_stack.count() == count + 1
    window.actions["undo"].trigger()
    assert window.doc.dumps() == opened


def test_pasting_text_that_is_not_a_graph_says_so_and_changes_nothing(window, opened):
    from PySide6.QtGui import QGuiApplication

    QGuiApplication.clipboard().setText("hello there")
    assert window.paste(QPointF(0, 0)) == []
    assert window.doc.dumps() == opened
    assert "the clipboard holds no Kiln graph" in window.log.lines[-1][1]


def test_typing_in_the_properties_panel_coalesces_until_focus_leaves(window, opened, qtbot):
    window.scene.select_nodes(["solid"])
    color = window.properties.editors["color"].edit
    color.setFocus()
    color.selectAll()
    qtbot.keyClicks(color, "#abc")
    count = window.doc.undo_stack.count()
    qtbot.keyClicks(color, "def")
    assert window.doc.undo_stack.count() == count
    assert window.doc.graph.nodes["solid"].params["color"] == "#abcdef"
    window.properties.editors["width"].spin.setFocus()
    color.setFocus()
    qtbot.keyClick(color, Qt.Key.Key_Backspace)
    assert window.doc.undo_stack.count() == count + 1
    window.actions["undo"].trigger()
    window.actions["undo"].trigger()
    assert window.doc.dumps() == opened


def test_the_undo_history_panel_lists_the_steps_by_name(window, opened):
    window.editor.rename("solid", "Sky")
    view = window.undo_view
    model = view.model()
    texts = [model.index(i, 0).data() for i in range(model.rowCount())]
    assert texts == ["<file opened>", "Rename Solid Image to Sky"]
    view.setCurrentIndex(model.index(0, 0))  # clicking a row goes back to it
    assert window.doc.dumps() == opened


def test_reset_to_default_removes_the_change(window, opened):
    window.scene.select_nodes(["solid"])
    window.editor.set_param("solid", "width", 64)
    reset = window.properties.resets["width"]
    assert reset.isEnabled()
    window.editor.set_param("solid", "width", 128)  # the spec default
    assert not reset.isEnabled()
    window.editor.set_param("solid", "width", 64)
    reset.click()
    assert window.doc.graph.nodes["solid"].params["width"] == 128
    assert window.properties.editors["width"].spin.value() == 128
