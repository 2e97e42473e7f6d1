"""The drawing editors, driven by simulated mouse and keys on their canvas: what they paint
becomes exact node values, survives a graph-file round trip, and is undoable in the editor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PySide6.QtCore import QPoint, QPointF, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.editors import create_editor, has_editor, open_editor
from engine import drawing, graph_file
from engine.graph import Graph, Node
from engine.values import Image
from nodes import build_registry

REGISTRY = build_registry()
ZOOM = 2.0  # two screen pixels per image pixel: a pixel centre maps to a screen point without doubt


def compute(node_type: str, params: dict, inputs: dict | None = None) -> dict:
    spec = REGISTRY[node_type]
    return spec.compute(None, inputs or {}, {**spec.default_params(), **params})


def round_trip(node_type: str, node_id: str, params: dict) -> dict:
    graph = Graph()
    graph.add_node(Node(node_id, node_type, params=params))
    return graph_file.loads(graph_file.dumps(graph)).nodes[node_id].params


def open_dialog(qtbot, node_type: str, params: dict, image=None, zoom: float = ZOOM):
    dialog = create_editor(node_type, params, image)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.activateWindow()  # its shortcuts (Ctrl+Z, [, ], X) work in the active window
    qtbot.waitUntil(lambda: QApplication.activeWindow() is dialog, timeout=2000)
    dialog.view.set_zoom(zoom)
    dialog.view.centerOn(0, 0)
    return dialog


def screen(view, x: float, y: float) -> QPoint:
    point = view.viewportTransform().map(QPointF(x, y))
    return QPoint(round(point.x()), round(point.y()))


def drag(view, points, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    """Press at the first scene point, move through the others, release at the last."""
    viewport = view.viewport()
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, modifier, screen(view, *points[0]))
    for point in points[1:]:
        QTest.mouseMove(viewport, screen(view, *point))
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, modifier, screen(view, *points[-1]))


def centre(x: int, y: int) -> tuple[float, float]:
    return x + 0.5, y + 0.5


def press_keys(dialog, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    QTest.keyClick(dialog.view, key, modifier)


def disc_count(shape, p0, p1, radius) -> int:
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    best = np.full(shape, np.inf)
    for t in np.linspace(0.0, 1.0, 1001):
        cx, cy = p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])
        best = np.minimum(best, np.hypot(xs - cx, ys - cy))
    return int((best <= radius).sum())


# --- Mask painter ------------------------------------------------------------------------


@pytest.fixture
def picture():
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[..., 1] = np.linspace(0, 255, 64, dtype=np.uint8)[None]
    return rgb


def test_mask_brush_rectangle_and_lasso_make_the_exact_mask(qtbot, picture):
    params = REGISTRY["MaskPainter"].default_params()
    dialog = open_dialog(qtbot, "MaskPainter", params, picture)
    dialog.hardness_slider.setValue(100)
    dialog.size_spin.setValue(5)
    drag(dialog.view, [centre(10, 20), centre(25, 20), centre(40, 20)])
    stroke = disc_count((48, 64), centre(10, 20), centre(40, 20), 2.5)
    assert dialog.painted_pixels() == stroke and dialog.undo_stack.count() == 1

    dialog.select_tool("rectangle")
    drag(dialog.view, [centre(2, 30), centre(12, 36), centre(21, 39)])  # pixels 2..21 x 30..39
    assert dialog.painted_pixels() == stroke + 20 * 10

    dialog.select_tool("lasso")
    drag(dialog.view, [centre(50, 2), centre(60, 2), centre(60, 7), centre(50, 7)])
    assert dialog.painted_pixels() == stroke + 200 + 11 * 6 and dialog.undo_stack.count() == 3

    result = dialog.result_params()
    mask = compute("MaskPainter", result, {"image": Image(torch.zeros(1, 3, 48, 64))})["mask"]
    assert mask.shape == (1, 1, 48, 64) and int(mask.sum()) == stroke + 266
    saved = round_trip("MaskPainter", "mask", result)
    again = compute("MaskPainter", saved, {"image": Image(torch.zeros(1, 3, 48, 64))})["mask"]
    assert torch.equal(mask, again)


def test_mask_edits_are_undoable_with_ctrl_z(qtbot, picture):
    dialog = open_dialog(qtbot, "MaskPainter", REGISTRY["MaskPainter"].default_params(), picture)
    dialog.select_tool("rectangle")
    drag(dialog.view, [centre(0, 0), centre(9, 9)])
    dialog.invert()
    assert dialog.painted_pixels() == 64 * 48 - 100
    press_keys(dialog, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert dialog.painted_pixels() == 100
    press_keys(dialog, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert dialog.painted_pixels() == 0
    press_keys(dialog, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert dialog.painted_pixels() == 100
    assert compute("MaskPainter", dialog.result_params(), {"image": Image(torch.zeros(1, 3, 48, 64))})[
        "mask"].sum() == 100


def test_mask_eraser_alt_clear_and_whole_mask_actions(qtbot, picture):
    dialog = open_dialog(qtbot, "MaskPainter", REGISTRY["MaskPainter"].default_params(), picture)
    dialog.fill_all()
    assert dialog.painted_pixels() == 64 * 48
    dialog.select_tool("rectangle")
    drag(dialog.view, [centre(0, 0), centre(9, 4)], Qt.KeyboardModifier.AltModifier)  # Alt clears
    assert dialog.painted_pixels() == 64 * 48 - 50
    dialog.select_tool("eraser")
    dialog.hardness_slider.setValue(100)
    dialog.size_spin.setValue(3)
    drag(dialog.view, [centre(30, 30)])
    assert dialog.painted_pixels() == 64 * 48 - 50 - 9  # a 3 px disc is a 3x3 square of centres
    dialog.clear()
    assert dialog.painted_pixels() == 0 and dialog.result_params()["mask"] == ""
    dialog.select_tool("rectangle")
    drag(dialog.view, [centre(20, 20), centre(29, 29)])
    dialog.grow(2)
    grown = dialog.painted_pixels()
    assert grown > 100
    dialog.grow(-2)  # growing then shrinking a square gives the square back
    assert dialog.painted_pixels() == 100
    dialog.feather(2)
    assert 0 < int(dialog.mask[20, 19]) < 255
    dialog.undo_stack.undo()
    assert dialog.painted_pixels() == 100 and int(dialog.mask[20, 19]) == 0
    dialog.undo_stack.undo()
    assert dialog.painted_pixels() == grown
    dialog.undo_stack.undo()
    assert dialog.painted_pixels() == 100


def test_mask_shortcuts_change_brush_size_and_swap_eraser(qtbot, picture):
    dialog = open_dialog(qtbot, "MaskPainter", REGISTRY["MaskPainter"].default_params(), picture)
    dialog.size_spin.setValue(10)
    press_keys(dialog, Qt.Key.Key_BracketRight)
    assert dialog.brush_size == 12 and dialog.size_spin.value() == 12
    press_keys(dialog, Qt.Key.Key_BracketLeft)
    press_keys(dialog, Qt.Key.Key_BracketLeft)
    assert dialog.brush_size == 8
    assert dialog.tool == "brush"
    press_keys(dialog, Qt.Key.Key_X)
    assert dialog.tool == "eraser" and dialog.tool_buttons["eraser"].isChecked()
    press_keys(dialog, Qt.Key.Key_X)
    assert dialog.tool == "brush"


def test_mask_editor_starts_from_the_saved_painting_resized_to_the_image(qtbot, picture):
    small = np.zeros((24, 32), dtype=np.uint8)
    small[:, :16] = 255
    params = dict(REGISTRY["MaskPainter"].default_params(), mask=drawing.encode_png_b64(small))
    dialog = open_dialog(qtbot, "MaskPainter", params, picture)
    assert dialog.mask.shape == (48, 64)
    assert (dialog.mask[:, :31] == 255).all() and (dialog.mask[:, 33:] == 0).all()  # smooth at the edge only
    blank = open_dialog(qtbot, "MaskPainter", dict(params, width=40, height=16), None)
    assert blank.mask.shape == (16, 40) and blank.painted_pixels() == 0
    assert "another shape" in blank.status.text()


def test_open_editor_returns_params_on_ok_and_none_on_cancel(qtbot):
    params = REGISTRY["MaskPainter"].default_params()

    def finish(accept: bool) -> None:
        dialog = QApplication.activeModalWidget()
        dialog.fill_all()
        dialog.accept() if accept else dialog.reject()

    QTimer.singleShot(0, lambda: finish(True))
    result = open_editor("MaskPainter", params, None)
    assert result is not None and result["width"] == 128
    assert int(compute("MaskPainter", result)["mask"].sum()) == 128 * 128
    QTimer.singleShot(0, lambda: finish(False))
    assert open_editor("MaskPainter", params, None) is None
    assert params["mask"] == ""  # the caller's params are never changed in place
    assert has_editor("MaskPainter") and has_editor("LayoutEditor") and has_editor("SemanticPainter")
    assert not has_editor("SolidImage")


# --- Layout editor -----------------------------------------------------------------------


def layout_dialog(qtbot, boxes=(), **params):
    base = dict(REGISTRY["LayoutEditor"].default_params(), boxes=list(boxes), **params)
    return open_dialog(qtbot, "LayoutEditor", base, zoom=1.0)  # a 512 x 512 blank canvas


def test_layout_draw_move_resize_snap_to_the_grid(qtbot):
    dialog = layout_dialog(qtbot)
    dialog.label_combo.setCurrentText("blue square")
    drag(dialog.view, [(130, 127), (200, 300), (257, 386)])  # snaps to 16/64 .. 32/64, 48/64
    assert dialog.boxes == [{"label": "blue square", "box": [0.25, 0.25, 0.5, 0.75]}]
    drag(dialog.view, [(200, 200), (240, 210), (264, 200)])  # move right by 64 px = 8/64
    assert dialog.boxes[0]["box"] == [0.375, 0.25, 0.625, 0.75]
    drag(dialog.view, [(320, 384), (400, 420), (448, 450)])  # the bottom-right corner handle
    assert dialog.boxes[0]["box"] == [0.375, 0.25, 0.875, 0.875]
    cells = [dialog.table.item(0, c).text() for c in range(5)]
    assert cells == ["blue square", "0.375", "0.25", "0.875", "0.875"]
    assert dialog.undo_stack.count() == 3
    dialog.undo_stack.undo()
    dialog.undo_stack.undo()
    assert dialog.boxes[0]["box"] == [0.25, 0.25, 0.5, 0.75]
    dialog.undo_stack.undo()
    assert dialog.boxes == []
    dialog.undo_stack.redo()
    result = dialog.result_params()
    layout = compute("LayoutEditor", round_trip("LayoutEditor", "layout", result))["layout"]
    assert layout.to_json() == [{"label": "blue square", "box": [0.25, 0.25, 0.5, 0.75]}]


def test_layout_keyboard_nudge_delete_and_click_to_deselect(qtbot):
    dialog = layout_dialog(qtbot, [{"label": "red circle", "box": [0.25, 0.25, 0.5, 0.5]},
                                   {"label": "green triangle", "box": [0.0, 0.5, 0.25, 1.0]}])
    drag(dialog.view, [(192, 192)])  # a click selects the box under it
    assert dialog.selected == 0 and dialog.undo_stack.count() == 0
    press_keys(dialog, Qt.Key.Key_Right)
    press_keys(dialog, Qt.Key.Key_Right)
    press_keys(dialog, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    assert dialog.boxes[0]["box"] == [0.28125, 0.375, 0.53125, 0.625]
    assert dialog.undo_stack.count() == 1  # nudges of one box merge into one step
    press_keys(dialog, Qt.Key.Key_Up, Qt.KeyboardModifier.ShiftModifier)
    press_keys(dialog, Qt.Key.Key_Up, Qt.KeyboardModifier.ShiftModifier)
    press_keys(dialog, Qt.Key.Key_Up, Qt.KeyboardModifier.ShiftModifier)
    assert dialog.boxes[0]["box"][1] == 0.0  # stops at the edge
    press_keys(dialog, Qt.Key.Key_Delete)
    assert [b["label"] for b in dialog.boxes] == ["green triangle"] and dialog.selected is None
    dialog.undo_stack.undo()
    assert len(dialog.boxes) == 2
    drag(dialog.view, [(500, 20)])  # click on empty canvas: nothing drawn, selection cleared
    assert len(dialog.boxes) == 2 and dialog.selected is None


def test_layout_table_cells_edit_exact_coordinates_and_refuse_bad_ones(qtbot):
    dialog = layout_dialog(qtbot, [{"label": "red circle", "box": [0.25, 0.25, 0.5, 0.5]}])
    dialog.table.item(0, 3).setText("0.6")
    assert dialog.boxes[0]["box"] == [0.25, 0.25, 0.6, 0.5]
    dialog.table.item(0, 1).setText("0.7")  # x0 past x1
    assert dialog.boxes[0]["box"] == [0.25, 0.25, 0.6, 0.5]
    assert "Box 1" in dialog.status.text() and dialog.table.item(0, 1).text() == "0.25"
    dialog.table.item(0, 4).setText("1.5")
    assert dialog.boxes[0]["box"][3] == 0.5
    dialog.table.item(0, 0).setText("yellow  triangle")
    assert dialog.boxes[0]["label"] == "yellow triangle" and dialog.undo_stack.count() == 2
    dialog.undo_stack.undo()
    assert dialog.boxes[0]["label"] == "red circle"


def test_layout_editor_leaves_out_saved_boxes_the_layout_refuses_and_names_the_first(qtbot):
    dialog = layout_dialog(qtbot, [{"label": "red circle", "box": [0.25, 0.25, 0.5, 0.5]},
                                   {"label": "blue square", "box": [0.5, 0.5, 1.5, 0.9]},
                                   {"label": 7, "box": [0.1, 0.1, 0.2, 0.2]}])
    assert [b["label"] for b in dialog.boxes] == ["red circle"]
    assert "Left out 2 saved box(es)" in dialog.status.text()
    assert 'box 2, "box": [0.5, 0.5, 1.5, 0.9] is outside [0, 1]' in dialog.status.text()
    dialog.table.item(0, 1).setText("0.7")  # x0 past x1: the same validator's words
    assert dialog.status.text() == "Box 1: x0 = '0.7': the box [0.7, 0.25, 0.5, 0.5] needs x0 < x1 and y0 < y1"


def test_layout_free_text_labels_and_node_errors(qtbot):
    dialog = layout_dialog(qtbot, [{"label": "red circle", "box": [0.1, 0.1, 0.3, 0.3]}])
    assert not dialog.label_combo.isEditable()
    dialog.vocabulary_combo.setCurrentText("free text")
    assert dialog.label_combo.isEditable()
    drag(dialog.view, [(100, 100)])
    dialog.label_combo.setEditText("a sleepy cat")
    result = dialog.result_params()
    assert result["labels"] == "free text"
    assert compute("LayoutEditor", result)["layout"].boxes[0].label == "a sleepy cat"
    from engine.errors import UserInputError

    with pytest.raises(UserInputError, match="box 1, \"label\": 'a sleepy cat'"):
        compute("LayoutEditor", dict(result, labels="shapes world"))


# --- Semantic painter ------------------------------------------------------------------


def semantic_dialog(qtbot, **params):
    base = dict(REGISTRY["SemanticPainter"].default_params(), width=48, height=32, **params)
    return open_dialog(qtbot, "SemanticPainter", base)


def test_semantic_brush_fill_rectangle_eraser_make_exact_class_ids(qtbot):
    dialog = semantic_dialog(qtbot)
    dialog.select_tool("rectangle")
    dialog.select_class(9)  # blue circle
    drag(dialog.view, [centre(4, 4), centre(13, 11)])
    dialog.select_class(14)  # yellow triangle
    dialog.select_tool("fill")
    drag(dialog.view, [centre(40, 30)])  # the background around the rectangle
    assert dialog.class_counts() == {9: 80, 14: 48 * 32 - 80}
    dialog.select_tool("brush")
    dialog.size_spin.setValue(3)
    dialog.select_class(4)
    drag(dialog.view, [centre(30, 20), centre(35, 20)])
    assert dialog.class_counts()[4] == disc_count((32, 48), centre(30, 20), centre(35, 20), 1.5)
    dialog.select_tool("eraser")
    dialog.eraser_combo.setCurrentIndex(2)  # black background
    dialog.size_spin.setValue(1)
    drag(dialog.view, [centre(5, 5)])
    assert dialog.labels[5, 5] == 2 and dialog.class_counts()[9] == 79
    result = dialog.result_params()
    semantic = compute("SemanticPainter", round_trip("SemanticPainter", "semantic", result))["semantic"]
    assert semantic.labels.shape == (1, 32, 48)
    assert np.array_equal(semantic.labels[0].numpy(), dialog.labels.astype(np.int64))
    assert dialog.undo_stack.count() == 4
    for _ in range(3):
        dialog.undo_stack.undo()
    assert dialog.class_counts() == {0: 48 * 32 - 80, 9: 80}


def test_semantic_import_export_and_unknown_classes(qtbot, tmp_path):
    dialog = semantic_dialog(qtbot)
    dialog.select_tool("rectangle")
    dialog.select_class(20)
    drag(dialog.view, [centre(0, 0), centre(47, 15)])
    indices, colours = str(tmp_path / "i.png"), str(tmp_path / "c.png")
    assert dialog.export_file(indices) and dialog.export_file(colours, colour_coded=True)
    with PILImage.open(colours) as img:
        assert img.getpixel((0, 0)) == drawing.SEMANTIC_COLOURS[20]
        assert img.getpixel((0, 31)) == (245, 245, 245)
    other = semantic_dialog(qtbot)
    assert other.import_file(colours) and other.class_counts() == {0: 48 * 16, 20: 48 * 16}
    other.undo_stack.undo()
    assert other.class_counts() == {0: 48 * 32}
    assert other.import_file(indices) and other.class_counts() == {0: 48 * 16, 20: 48 * 16}
    bad = np.zeros((32, 48), dtype=np.uint8)
    bad[0, 0] = 40
    PILImage.fromarray(bad, mode="L").save(tmp_path / "bad.png")
    assert other.import_file(str(tmp_path / "bad.png"))
    assert "Class 40" in other.status.text() and other.labels[0, 0] == 0
    wrong = semantic_dialog(qtbot, labels=drawing.encode_png_b64(bad))
    assert wrong.labels.max() == 0 and "Class 40" in wrong.status.text()
    assert compute("SemanticPainter", wrong.result_params())["semantic"].labels.max() == 0
