"""The canvas, driven like a user: search, connect, refuse, zoom, frame, backdrops, reroutes, keys."""
from __future__ import annotations

from pathlib import Path

import pytest
from gui_support import (
    click,
    close_window,
    demo_graph,
    drag,
    make_window,
)
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from app.canvas import style
from app.document import REROUTES_KEY


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


def _port(window, node_id, name, output):
    item = window.scene.nodes[node_id]
    return (item.outputs if output else item.inputs)[name].scenePos()


def _with_demo(window):
    window.doc.set_graph(demo_graph(), None)
    window.view.resetTransform()
    window.view.centerOn(QPointF(400, 60))
    return window


def test_tab_search_places_the_chosen_node_at_the_cursor(window, qtbot):
    view = window.view
    view.setFocus()
    view.viewport().cursor().setPos(view.viewport().mapToGlobal(view.viewport().rect().center()))
    qtbot.keyClick(view, Qt.Key.Key_Tab)
    assert window.search.isVisible()
    qtbot.keyClicks(window.search.query, "solid img")
    assert window.search.results.item(0).data(Qt.ItemDataRole.UserRole) == "SolidImage"
    qtbot.keyClick(window.search.query, Qt.Key.Key_Return)
    assert not window.search.isVisible()
    nodes = list(window.doc.graph.nodes.values())
    assert [n.type for n in nodes] == ["SolidImage"]
    assert window.scene.selected_node_ids() == [nodes[0].id]
    assert window.doc.undo_stack.undoText() == "Add Solid Image"


def test_fuzzy_search_ranks_by_name_and_finds_by_help():
    from gui_support import make_registry

    from app.search import search

    registry = make_registry()
    assert search(registry, "inv")[0].type == "ImageInvert"
    assert search(registry, "prvw")[0].type == "PreviewImage"
    assert "SolidImage" in [s.type for s in search(registry, "one colour")]
    assert search(registry, "zzzz") == []


def test_dragging_output_to_input_connects_them(window):
    _with_demo(window)
    window.editor.disconnect(window.doc.graph.incoming("preview")["image"])
    drag(window, _port(window, "invert", "image", True), _port(window, "preview", "image", False))
    assert window.doc.graph.incoming("preview")["image"].src == "invert"
    assert window.scene.nodes["preview"].inputs["image"].connected
    assert window.doc.undo_stack.undoText().startswith("Connect")


def test_a_link_between_different_types_is_refused_with_the_reason(window):
    _with_demo(window)
    number = window.editor.add_node("Integer", (0.0, 300.0))
    before = window.doc.dumps()
    drag(window, _port(window, number, "value", True), _port(window, "invert", "image", False))
    assert window.doc.dumps() == before
    assert window.scene.last_refusal == "INT output cannot feed the IMAGE input 'image'"
    assert "Cannot connect" in window.statusBar().currentMessage()


def test_a_link_that_would_make_a_cycle_is_refused(window):
    _with_demo(window)
    second = window.editor.add_node("ImageInvert", (320.0, 300.0))
    window.editor.connect("invert", "image", second, "image")
    before = window.doc.dumps()
    drag(window, _port(window, second, "image", True), _port(window, "invert", "image", False))
    assert window.scene.last_refusal == "this link would make a cycle"
    assert window.doc.dumps() == before


def test_dropping_a_link_on_empty_canvas_offers_compatible_nodes_and_connects(window, qtbot):
    _with_demo(window)
    start = _port(window, "solid", "image", True)
    drag(window, start, start + QPointF(60, 260))
    assert window.search.isVisible()
    types = [window.search.results.item(i).data(Qt.ItemDataRole.UserRole)
             for i in range(window.search.results.count())]
    assert "ImageInvert" in types and "SolidImage" not in types and "Integer" not in types
    qtbot.keyClicks(window.search.query, "scale")
    qtbot.keyClick(window.search.query, Qt.Key.Key_Return)
    new = window.scene.selected_node_ids()[0]
    assert window.doc.graph.incoming(new)["image"].src == "solid"
    window.actions["undo"].trigger()
    assert new not in window.doc.graph.nodes


def test_picking_up_a_link_by_its_input_and_dropping_it_on_the_canvas_disconnects(window):
    _with_demo(window)
    end = _port(window, "preview", "image", False)
    drag(window, end, end + QPointF(0, 250))
    assert "image" not in window.doc.graph.incoming("preview")
    assert window.doc.undo_stack.undoText().startswith("Disconnect")


DEFAULT_GRAPH = Path(__file__).resolve().parents[1] / "resources" / "graphs" / "default.json"


def _with_default_graph(window):
    window.doc.open(str(DEFAULT_GRAPH))
    window.view.resetTransform()
    window.view.centerOn(window.scene.nodes["sampler"].sceneBoundingRect().center())
    return window


def _on_name(window, node_id, name):
    """A point on an input's name, well clear of its socket dot."""
    return _port(window, node_id, name, False) + QPointF(40, 2)


def test_a_link_dropped_on_a_taken_input_s_name_goes_there_and_replaces_its_link(window):
    _with_default_graph(window)
    stack = window.doc.undo_stack
    drag(window, _port(window, "negative", "conditioning", True), _on_name(window, "sampler", "negative"))
    assert window.doc.graph.incoming("sampler")["positive"].src == "plan"  # already linked there: no change
    assert stack.count() == 0
    drag(window, _port(window, "prompt", "conditioning", True), _on_name(window, "sampler", "negative"))
    incoming = window.doc.graph.incoming("sampler")
    assert (incoming["positive"].src, incoming["negative"].src) == ("plan", "prompt")
    assert stack.count() == 1 and stack.undoText() == "Connect Text Encode → Sampler.negative"
    window.actions["undo"].trigger()
    incoming = window.doc.graph.incoming("sampler")
    assert (incoming["positive"].src, incoming["negative"].src) == ("plan", "negative")


def test_a_link_dropped_on_a_free_input_s_name_goes_there_and_the_body_takes_the_first_free(window):
    _with_default_graph(window)
    for socket in ("positive", "negative"):
        window.editor.disconnect(window.doc.graph.incoming("sampler")[socket])
    count = window.doc.undo_stack.count()
    drag(window, _port(window, "negative", "conditioning", True), _on_name(window, "sampler", "negative"))
    incoming = window.doc.graph.incoming("sampler")
    assert incoming["negative"].src == "negative" and "positive" not in incoming
    assert window.doc.undo_stack.count() == count + 1
    title = window.scene.nodes["sampler"].scenePos() + QPointF(120, 12)
    drag(window, _port(window, "plan", "conditioning", True), title)
    assert window.doc.graph.incoming("sampler")["positive"].src == "plan"
    drag(window, _port(window, "prompt", "conditioning", True), title)  # no free one left: refused
    incoming = window.doc.graph.incoming("sampler")
    assert (incoming["positive"].src, incoming["negative"].src) == ("plan", "negative")
    assert "no free input of type CONDITIONING" in window.scene.last_refusal


def test_wheel_zoom_stays_within_limits_and_f_frames(window, qtbot):
    _with_demo(window)
    view = window.view
    centre = QPointF(view.viewport().rect().center())
    for delta in (120,) * 40 + (-120,) * 80:
        global_pos = QPointF(view.viewport().mapToGlobal(centre.toPoint()))
        event = QWheelEvent(centre, global_pos, QPoint(0, 0), QPoint(0, delta), Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(view.viewport(), event)
        assert style.ZOOM_MIN - 1e-9 <= view.zoom() <= style.ZOOM_MAX + 1e-9
    assert view.zoom() == pytest.approx(style.ZOOM_MIN)
    window.scene.select_nodes(["invert"])
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_F)
    visible = view.mapToScene(view.viewport().rect()).boundingRect()
    assert visible.contains(window.scene.nodes["invert"].sceneBoundingRect())
    assert view.zoom() > 0.5


def test_middle_drag_pans_the_view(window):
    view = window.view
    before = view.mapToScene(view.viewport().rect().center())
    centre = view.mapToScene(view.viewport().rect().center())
    drag(window, centre, centre + QPointF(100, 50), Qt.MouseButton.MiddleButton)
    after = view.mapToScene(view.viewport().rect().center())
    assert after.x() == pytest.approx(before.x() - 100, abs=2)
    assert after.y() == pytest.approx(before.y() - 50, abs=2)


def test_rubber_band_selects_the_nodes_it_touches(window):
    _with_demo(window)
    solid = window.scene.nodes["solid"].sceneBoundingRect()
    drag(window, solid.topLeft() - QPointF(30, 30), solid.bottomRight() + QPointF(10, 10))
    assert window.scene.selected_node_ids() == ["solid"]


def test_moving_a_node_snaps_to_the_grid_and_undoes_in_one_step(window):
    _with_demo(window)
    before = window.doc.dumps()
    title = window.scene.nodes["invert"].scenePos() + QPointF(60, 10)
    drag(window, title, title + QPointF(93, 47))
    x, y = window.doc.graph.nodes["invert"].pos
    assert (x % style.GRID, y % style.GRID) == (0, 0) and (x, y) != (320.0, 0.0)
    assert window.doc.undo_stack.undoText() == "Move 1 item"
    window.actions["undo"].trigger()
    assert window.doc.dumps() == before


def test_backdrop_carries_its_nodes_and_undo_puts_all_back(window):
    _with_demo(window)
    window.scene.select_nodes(["solid", "invert"])
    window.actions["group"].trigger()
    backdrop_id = next(iter(window.doc.graph.backdrops))
    window.scene.clearSelection()
    before = window.doc.dumps()
    item = window.scene.backdrops[backdrop_id]
    title = item.scenePos() + QPointF(40, 12)
    drag(window, title, title + QPointF(200, 100))
    assert window.doc.graph.nodes["solid"].pos == (200.0, 100.0)
    assert window.doc.graph.nodes["invert"].pos == (520.0, 100.0)
    assert window.doc.graph.nodes["preview"].pos == (640.0, 0.0)
    assert window.doc.undo_stack.undoText() == "Move 3 items"
    window.actions["undo"].trigger()
    assert window.doc.dumps() == before


def test_double_click_on_a_link_adds_a_reroute_dot_the_link_passes_through(window):
    _with_demo(window)
    link_item = next(i for lk, i in window.scene.links.items() if lk.dst == "preview")
    point = link_item.path().pointAtPercent(0.5)
    click(window, point, double=True)
    reroutes = window.doc.graph.meta[REROUTES_KEY]
    assert len(reroutes) == 1 and len(next(iter(reroutes.values()))) == 1
    dot = next(iter(window.scene.reroutes.values()))[0]
    drag(window, dot.scenePos(), dot.scenePos() + QPointF(0, 120))
    assert link_item.path().boundingRect().bottom() > point.y() + 100
    window.actions["undo"].trigger()
    window.actions["undo"].trigger()
    assert REROUTES_KEY not in window.doc.graph.meta


def test_keys_disable_rename_collapse_and_delete_the_selection(window, qtbot):
    _with_demo(window)
    view = window.view
    window.scene.select_nodes(["invert"])
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_D)
    assert window.doc.graph.nodes["invert"].disabled
    assert window.scene.nodes["invert"].opacity() < 1
    qtbot.keyClick(view, Qt.Key.Key_F2)
    field = window.edits.rename_field
    assert field is not None and field.text() == "Invert Image"
    field.setText("Negative")
    qtbot.keyClick(field, Qt.Key.Key_Return)
    assert window.doc.graph.nodes["invert"].title == "Negative"
    assert window.doc.undo_stack.undoText() == "Rename Invert Image to Negative"
    window.scene.select_nodes(["invert"])
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_H)
    assert window.doc.graph.nodes["invert"].collapsed
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert "invert" not in window.doc.graph.nodes and window.doc.graph.links == []


def test_typing_in_an_inline_box_edits_the_param_and_is_one_undo_step(window, qtbot):
    _with_demo(window)
    editor = window.scene.nodes["solid"].editors["color"]
    count = window.doc.undo_stack.count()
    editor.edit.setFocus()
    editor.edit.selectAll()
    qtbot.keyClicks(editor.edit, "#ff0000")
    assert window.doc.graph.nodes["solid"].params["color"] == "#ff0000"
    assert window.doc.undo_stack.count() == count + 1
    window.actions["undo"].trigger()
    assert window.doc.graph.nodes["solid"].params["color"] == "#3c6ea8"
    assert editor.edit.text() == "#3c6ea8"


def test_minimap_click_moves_the_view_there(window, qtbot):
    _with_demo(window)
    window.view.centerOn(QPointF(5000, 5000))
    minimap = window.view.minimap
    world, scale, offset = minimap._mapping()
    target = QPointF(320, 40)
    at = QPointF((target.x() - world.x()) * scale + offset.x(), (target.y() - world.y()) * scale + offset.y())
    qtbot.mouseClick(minimap, Qt.MouseButton.LeftButton, pos=at.toPoint())
    centre = window.view.mapToScene(window.view.viewport().rect().center())
    assert abs(centre.x() - target.x()) < 40 / scale and abs(centre.y() - target.y()) < 40 / scale


def test_dropping_a_free_node_on_a_link_inserts_it_in_one_step(window):
    _with_demo(window)
    before = window.doc.dumps()
    new = window.editor.add_node("ImageInvert", (320.0, 400.0))
    link_item = next(i for lk, i in window.scene.links.items() if lk.dst == "preview")
    target = link_item.path().pointAtPercent(0.5)
    item = window.scene.nodes[new]
    grab = item.scenePos() + QPointF(60, 10)
    drag(window, grab, target + QPointF(60 - item.width / 2, 10 - style.TITLE_HEIGHT))
    graph = window.doc.graph
    assert graph.incoming(new)["image"].src == "invert"
    assert graph.incoming("preview")["image"].src == new
    assert window.doc.undo_stack.undoText() == "Insert Invert Image into a link"
    window.actions["undo"].trigger()
    window.actions["undo"].trigger()
    assert window.doc.dumps() == before


def test_the_colour_menu_recolours_selected_nodes_and_backdrops_in_one_step(window):
    _with_demo(window)
    window.scene.select_nodes(["solid"])
    window.actions["group"].trigger()
    backdrop_id = next(iter(window.doc.graph.backdrops))
    window.scene.select_nodes(["invert"])
    window.scene.backdrops[backdrop_id].setSelected(True)
    count = window.doc.undo_stack.count()
    menu = window.edits.color_menu(window)
    next(a for a in menu.actions() if a.text() == "Teal").trigger()
    assert window.doc.graph.nodes["invert"].color == style.NODE_COLORS["Teal"]
    assert window.doc.graph.backdrops[backdrop_id].color == style.NODE_COLORS["Teal"]
    assert window.doc.undo_stack.count() == count + 1
    window.actions["undo"].trigger()
    assert window.doc.graph.nodes["invert"].color is None
    assert window.doc.graph.backdrops[backdrop_id].color is None


def test_the_minimap_steps_aside_on_a_small_canvas_and_follows_the_view_menu(window, qtbot):
    minimap = window.view.minimap
    window.resize(1600, 1000)
    qtbot.waitUntil(lambda: minimap.isVisible())
    window.resize(700, 600)  # the docks leave the canvas too small to spare a corner
    qtbot.waitUntil(lambda: not minimap.isVisible())
    window.resize(1600, 1000)
    qtbot.waitUntil(lambda: minimap.isVisible())
    window.actions["minimap"].trigger()
    assert not minimap.isVisible()
    window.actions["minimap"].trigger()
    assert minimap.isVisible()
