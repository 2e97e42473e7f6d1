"""The properties panel, the viewer and the help overlay."""
from __future__ import annotations

import numpy as np
import pytest
from gui_support import close_window, make_window
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
)

from app.param_widgets import (
    BigIntEditor,
    ChoiceEditor,
    JsonEditor,
    NumberEditor,
    PathEditor,
    SeedEditor,
    TextEditor,
)
from app.viewer import ResultEntry


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


@pytest.fixture
def every(window):
    node_id = window.editor.add_node("EveryParam", (0.0, 0.0))
    window.scene.select_nodes([node_id])
    return node_id


def test_each_param_kind_gets_its_own_widget_and_the_help_is_shown(window, every):
    eds = window.properties.editors
    assert isinstance(eds["count"], NumberEditor) and isinstance(eds["count"].spin, QSpinBox)
    assert eds["count"].slider is not None  # bounded: slider plus typed entry
    assert isinstance(eds["strength"].spin, QDoubleSpinBox)
    assert isinstance(eds["enabled"].box, QCheckBox)
    assert isinstance(eds["name"].edit, QLineEdit)
    assert isinstance(eds["prompt"], TextEditor) and isinstance(eds["prompt"].edit, QPlainTextEdit)
    assert isinstance(eds["sampler"], ChoiceEditor)
    assert [eds["sampler"].combo.itemText(i) for i in range(3)] == ["euler", "heun", "ddim"]
    assert isinstance(eds["file"], PathEditor)
    assert isinstance(eds["seed"], SeedEditor) and eds["seed"].edit.text() == str(2**40)
    assert isinstance(eds["boxes"], JsonEditor)
    assert window.properties.findChild(QComboBox) is not None
    labels = [w.text() for w in window.properties.widget().findChildren(QLabel)]
    assert "One param of each kind." in labels


def test_a_checkpoint_list_that_does_not_have_the_value_still_shows_it(window, every):
    combo = window.properties.editors["checkpoint"].combo
    assert combo.currentText() == "model.safetensors"


def test_slider_and_typed_entry_edit_the_same_param(window, every, qtbot):
    strength = window.properties.editors["strength"]
    strength.slider.sliderPressed.emit()
    strength.slider.setValue(800)
    assert window.doc.graph.nodes[every].params["strength"] == pytest.approx(0.8)
    assert strength.spin.value() == pytest.approx(0.8)
    strength.spin.setValue(0.25)
    assert window.doc.graph.nodes[every].params["strength"] == pytest.approx(0.25)
    assert strength.slider.value() == 250


def test_choice_bool_and_seed_edits_reach_the_graph(window, every, qtbot):
    eds = window.properties.editors
    eds["sampler"].combo.activated.emit(2)
    eds["enabled"].box.setChecked(False)
    eds["seed"].edit.setText("42")
    eds["seed"].edit.editingFinished.emit()
    params = window.doc.graph.nodes[every].params
    assert (params["sampler"], params["enabled"], params["seed"]) == ("ddim", False, 42)
    eds["seed"].dice.click()
    assert params["seed"] != 42 and 0 <= params["seed"] < 2**32
    eds["seed"].mode.setCurrentIndex(1)
    assert window.doc.seed_mode(every, "seed") == "increment"


def test_invalid_json_is_marked_and_not_committed(window, every, qtbot):
    editor = window.properties.editors["boxes"]
    editor.edit.setPlainText('[{"label": "dog"')
    assert editor.error.startswith("not valid JSON")
    assert window.doc.graph.nodes[every].params["boxes"][0]["label"] == "cat"
    editor.edit.setPlainText('[{"label": "dog", "box": [0, 0, 0.5, 0.5]}]')
    assert editor.error == ""
    assert window.doc.graph.nodes[every].params["boxes"][0]["label"] == "dog"


def test_int_params_wider_than_a_spin_box_get_a_text_entry():
    from app.param_widgets import make_editor
    from engine.spec import Param, ParamType

    wide = make_editor(Param("big", ParamType.INT, 0, min=0, max=2**40), compact=True)
    assert isinstance(wide, BigIntEditor)
    values = []
    wide.committed.connect(lambda v, merge: values.append(v))
    wide.edit.setText("500000000000")
    wide.edit.editingFinished.emit()
    wide.edit.setText("5000000000000")  # above the maximum: refused with the reason, the old value shown again
    wide.edit.editingFinished.emit()
    assert values == [500_000_000_000]
    assert wide.refusal == "big must be at most 1099511627776" and wide.edit.text() == "500000000000"


def _entry(pixels, title="x"):
    return ResultEntry(pixels, "n", title, {"format": "kiln.graph", "version": 1, "nodes": {}, "links": [],
                                             "backdrops": {}, "meta": {}})


def test_viewer_at_100_percent_is_pixel_exact(window, qtbot):
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[::2, ::2] = 255  # a checkerboard of single pixels
    viewer = window.viewer
    viewer.add_result(_entry(pixels))
    viewer.actual_button.click()
    canvas = viewer.canvas
    shot = canvas.grab().toImage()
    dpr = canvas.devicePixelRatioF()
    target = canvas._target_rect(canvas.rect().toRectF())
    x0, y0 = round(target.left() * dpr), round(target.top() * dpr)
    for y in range(8):
        for x in range(8):
            assert shot.pixelColor(x0 + x, y0 + y).red() == pixels[y, x, 0]


def test_compare_shows_the_previous_result_beside_or_under_a_swipe(window):
    viewer = window.viewer
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((10, 10, 3), np.uint8)
    blue[..., 2] = 255
    viewer.add_result(_entry(red, "first"))
    viewer.add_result(_entry(blue, "second"))
    viewer.compare.setCurrentIndex(2)  # swipe
    canvas = viewer.canvas
    canvas.swipe = 0.5
    shot = canvas.grab().toImage()
    target = canvas._target_rect(canvas.rect().toRectF())
    dpr = canvas.devicePixelRatioF()
    y = round(target.center().y() * dpr)
    left = shot.pixelColor(round((target.left() + target.width() * 0.25) * dpr), y)
    right = shot.pixelColor(round((target.left() + target.width() * 0.75) * dpr), y)
    assert (left.red(), left.blue()) == (255, 0) and (right.red(), right.blue()) == (0, 255)
    viewer.compare.setCurrentIndex(1)  # side by side: previous on the left
    shot = canvas.grab().toImage()
    w, h = shot.width(), shot.height()
    assert shot.pixelColor(w // 4, h // 2).red() == 255 and shot.pixelColor(3 * w // 4, h // 2).blue() == 255
    assert len(viewer.entries()) == 2


def test_copy_puts_the_picture_on_the_clipboard(window):
    pixels = np.full((6, 5, 3), 77, np.uint8)
    window.viewer.add_result(_entry(pixels))
    window.viewer.copy_button.click()
    image = QApplication.clipboard().image()
    assert (image.width(), image.height()) == (5, 6) and image.pixelColor(2, 2).green() == 77


def test_question_mark_shows_the_shortcut_overlay(window, qtbot):
    window.view.setFocus()
    qtbot.keyClick(window.view, Qt.Key.Key_Question, Qt.KeyboardModifier.ShiftModifier)
    assert window.overlay.isVisible()
    texts = " ".join(label.text() for label in window.overlay.findChildren(QLabel))
    assert "Ctrl+Enter" in texts and "Tab" in texts
    qtbot.keyClick(window.overlay, Qt.Key.Key_Escape)
    assert not window.overlay.isVisible()


def test_selecting_a_node_with_a_picture_shows_it_in_the_viewer(window, qtbot):
    from gui_support import demo_graph, wait_idle

    window.doc.set_graph(demo_graph(), None)
    window.run_graph()
    wait_idle(qtbot, window)
    window.scene.select_nodes(["solid"])
    assert window.viewer.current.node_id == "solid"
    assert window.viewer.current.pixels[0, 0].tolist() == [0x3c, 0x6e, 0xa8]
    window.scene.select_nodes(["preview"])
    assert window.viewer.current.node_id == "preview"
    point = window.scene.nodes["solid"].scenePos() + QPointF(5, 5)
    assert window.scene.node_at(point).node_id == "solid"


def test_double_clicking_a_mask_node_opens_its_editor_and_ok_is_one_undo_step(window, qtbot):
    from gui_support import click, demo_graph, wait_idle

    from engine.graph import Link

    window.doc.set_graph(demo_graph(), None)
    window.run_graph()
    wait_idle(qtbot, window)
    mask = window.editor.add_node("MaskPainter", (0.0, 700.0))
    window.editor.connect("solid", "image", mask, "image")
    assert Link("solid", "image", mask, "image") in window.doc.graph.links
    before, count = window.doc.dumps(), window.doc.undo_stack.count()
    item = window.scene.nodes[mask]
    window.view.centerOn(item)
    click(window, item.scenePos() + QPointF(item.width / 2, 38), double=True)
    dialog = window.edits.active_editor
    assert dialog is not None and dialog.isVisible()
    assert dialog.result_params()["mask"] == "" and dialog.painted_pixels() == 0
    dialog.fill_all()
    dialog.accept()
    assert window.doc.graph.nodes[mask].params["mask"] != ""
    assert window.doc.undo_stack.count() == count + 1
    assert window.doc.undo_stack.undoText() == "Edit Mask Painter"
    window.actions["undo"].trigger()
    assert window.doc.dumps() == before
