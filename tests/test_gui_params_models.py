"""Params and models in the editor: bad numbers refused at the field, sizes a model cannot take,
the checkpoint list, the Mask Painter's picture and drawings shown as pictures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gui_support import close_window, make_settings, make_window
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QLineEdit, QPlainTextEdit

from engine import graph_file

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "resources" / "graphs"


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


def _type_into(qtbot, editor, text: str) -> None:
    """Click into the field, replace its text by typing, press Enter: what a person does."""
    spin = editor.spin
    qtbot.mouseClick(spin.lineEdit(), Qt.MouseButton.LeftButton)
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), text)
    qtbot.keyClick(spin, Qt.Key.Key_Return)


# --- 1. refused numbers ---------------------------------------------------------------------


def test_steps_0_typed_in_the_properties_panel_is_refused_with_the_reason(window, qtbot):
    sampler = window.editor.add_node("Sampler", (0.0, 0.0))
    window.scene.select_nodes([sampler])
    steps = window.properties.editors["steps"]
    count = window.doc.undo_stack.count()
    _type_into(qtbot, steps, "0")
    assert window.doc.graph.nodes[sampler].params["steps"] == 25
    assert window.doc.undo_stack.count() == count  # nothing committed, no undo entry
    assert steps.refusal == "steps must be at least 1"
    assert steps.spin.toolTip() == "steps must be at least 1" and steps.spin.property("invalid") is True
    line = window.properties.refusal_lines["steps"]
    assert line.isVisible() and line.text() == "steps must be at least 1"
    assert steps.spin.value() == 25 and steps.spin.lineEdit().text() == "25"
    _type_into(qtbot, steps, "30")  # a good value clears the message and is one undo step
    assert window.doc.graph.nodes[sampler].params["steps"] == 30
    assert window.doc.undo_stack.count() == count + 1
    assert steps.refusal == "" and not line.isVisible() and not steps.spin.property("invalid")


def test_above_the_maximum_and_off_the_multiple_are_refused_too(window, qtbot):
    latent = window.editor.add_node("EmptyLatent", (0.0, 0.0))
    sampler = window.editor.add_node("Sampler", (0.0, 300.0))
    window.scene.select_nodes([latent])
    width = window.properties.editors["width"]
    _type_into(qtbot, width, "7")
    assert width.refusal == "width must be at least 8"
    _type_into(qtbot, width, "12")  # in range, but not a multiple of 8: the spin box alone would take it
    assert width.refusal == "width must be a multiple of 8"
    assert window.doc.graph.nodes[latent].params["width"] == 128
    window.scene.select_nodes([sampler])
    steps = window.properties.editors["steps"]
    _type_into(qtbot, steps, "5000")
    assert steps.refusal == "steps must be at most 1000"
    assert window.doc.graph.nodes[sampler].params["steps"] == 25


def test_the_inline_field_on_the_node_refuses_the_same_way(window, qtbot):
    latent = window.editor.add_node("EmptyLatent", (0.0, 0.0))
    count = window.doc.undo_stack.count()
    inline = window.scene.nodes[latent].editors["height"]
    spin = inline.spin
    spin.setFocus()
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "100")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert inline.refusal == "height must be a multiple of 8"
    assert spin.toolTip() == "height must be a multiple of 8"
    assert window.doc.graph.nodes[latent].params["height"] == 128 and window.doc.undo_stack.count() == count


# --- 2. sizes the model cannot take ----------------------------------------------------------


def test_the_sampler_refuses_a_size_its_model_cannot_take_before_sampling():
    from engine.cache import ResultCache
    from engine.executor import Executor
    from engine.spec import EngineSettings
    from nodes import build_registry

    settings = EngineSettings(device="cpu", precision="fp32")
    executor = Executor(build_registry(), settings, cache=ResultCache.from_settings(settings, disk=False))
    graph = graph_file.load(GRAPHS / "text_to_image.json")
    graph.nodes["latent"].params["width"] = 136  # a multiple of 8: Empty Latent takes it
    graph.nodes["sampler"].params["steps"] = 2
    result = executor.run(graph, targets=["sampler"])
    assert not result.ok and result.error.node_id == "sampler"
    assert result.error.message == ("width 136 of node 'latent' (EmptyLatent) is not a multiple of 32, which "
                                    "model 'kiln-shapes-base.safetensors' needs: use 128 or 160")
    assert result.nodes["latent"].status == "ran"


def test_the_editor_flags_the_size_on_empty_latent_before_any_run(window, qtbot):
    assert window.open_file(str(GRAPHS / "text_to_image.json"))
    window.editor.set_param("latent", "width", 136)
    item = window.scene.nodes["latent"]
    qtbot.waitUntil(lambda: "136" in item.issue, timeout=5000)
    assert item.issue == ("width 136 is not a multiple of 32, which model kiln-shapes-base.safetensors needs "
                          "(128 or 160 would do)")
    assert window.run_control.last_result is None  # nothing ran
    window.editor.set_param("latent", "width", 160)
    qtbot.waitUntil(lambda: item.issue == "", timeout=5000)


def test_the_size_rule_is_read_from_headers_of_other_checkpoints(tmp_path):
    import torch
    from safetensors.torch import save_file

    from engine.model_geometry import size_rule

    sd_like = {f"model.diffusion_model.input_blocks.{i}.0.op.weight": torch.zeros(1) for i in (3, 6, 9)}
    sd_like.update({f"first_stage_model.encoder.down.{i}.downsample.conv.weight": torch.zeros(1) for i in range(3)})
    save_file(sd_like, str(tmp_path / "sd.safetensors"))
    assert size_rule(str(tmp_path / "sd.safetensors")).multiple == 64
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(tmp_path / "odd.safetensors"))
    assert size_rule(str(tmp_path / "odd.safetensors")) is None  # unknown is not guessed


# --- 3. the checkpoint list ----------------------------------------------------------------


def _tiny_checkpoint(path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.out.weight": torch.zeros(2)}, str(path))


def test_a_new_load_checkpoint_starts_on_the_first_built_in_model(window, qtbot):
    from nodes.checkpoint_loader import list_checkpoints

    view = window.view
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Tab)
    qtbot.keyClicks(window.search.query, "load checkpoint")
    assert window.search.results.item(0).data(Qt.ItemDataRole.UserRole) == "CheckpointLoader"
    qtbot.keyClick(window.search.query, Qt.Key.Key_Return)
    (node,) = window.doc.graph.nodes.values()
    first = list_checkpoints()[0]
    assert first == "kiln-shapes-base.safetensors"
    assert node.params["checkpoint"] == first
    assert window.properties.editors["checkpoint"].combo.currentText() == first
    assert window.scene.nodes[node.id].editors["checkpoint"].combo.currentText() == first


def test_refresh_lists_a_checkpoint_dropped_into_a_model_folder(qtbot, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    settings = make_settings(tmp_path)
    settings.set_engine(model_dirs=[str(models)])
    window = make_window(qtbot, tmp_path, settings)
    try:
        loader = window.editor.add_node("CheckpointLoader", (0.0, 0.0))
        window.scene.select_nodes([loader])
        panel = window.properties.editors["checkpoint"]
        inline = window.scene.nodes[loader].editors["checkpoint"]
        assert "mine.safetensors" not in panel.choices()
        _tiny_checkpoint(models / "mine.safetensors")
        qtbot.mouseClick(panel.refresh_button, Qt.MouseButton.LeftButton)
        assert "mine.safetensors" in panel.choices()
        assert panel.combo.currentText() == "kiln-shapes-base.safetensors"  # the value stays
        inline.combo.showPopup()  # opening the list looks again too
        assert "mine.safetensors" in inline.choices()
        inline.combo.hidePopup()
    finally:
        close_window(window)


# --- 4. the Mask Painter's picture ----------------------------------------------------------


def test_the_mask_painter_shows_its_picture_before_any_run(window, qtbot):
    from PIL import Image as PILImage

    assert window.open_file(str(GRAPHS / "inpainting.json"))
    link = window.doc.graph.incoming("mask")["image"]
    assert window.doc.graph.nodes[link.src].params["path"] == "sample_scene.png"
    dialog = window.open_node_editor("mask")
    try:
        assert dialog.isVisible() and "Computing the picture" in dialog.status.text()
        scene = np.asarray(PILImage.open(GRAPHS / "sample_scene.png").convert("RGB"))

        def background() -> np.ndarray:
            image = dialog.background.pixmap().toImage()
            return np.array([[image.pixelColor(x, y).getRgb()[:3] for x in range(0, 128, 9)]
                             for y in range(0, 128, 9)])

        qtbot.waitUntil(lambda: np.array_equal(background(), scene[::9, ::9]), timeout=10000)
        assert "Painting over the picture" in dialog.status.text()
        assert dialog.mask.shape == (128, 128) and dialog.painted_pixels() > 0  # the graph's painting kept
    finally:
        dialog.reject()


# --- 5. drawings in the properties panel --------------------------------------------------------


def test_a_painted_mask_shows_as_a_picture_never_as_base64(window, qtbot):
    from app.drawing_param import DrawingParamView

    assert window.open_file(str(GRAPHS / "inpainting.json"))
    window.scene.select_nodes(["mask"])
    view = window.properties.editors["mask"]
    assert isinstance(view, DrawingParamView)
    assert view.summary.text() == "drawing, 128×128 (edit in the painter)"
    assert not view.thumbnail.pixmap().isNull()
    body = window.properties.widget()
    texts = [w.text() for w in body.findChildren(QLabel) + body.findChildren(QLineEdit)]
    texts += [w.toPlainText() for w in body.findChildren(QPlainTextEdit)]
    assert not any("iVBOR" in text for text in texts)
    qtbot.mouseClick(view.open_button, Qt.MouseButton.LeftButton)
    dialog = window.edits.active_editor
    try:
        assert dialog is not None and dialog.windowTitle() == "Mask Painter"
    finally:
        dialog.reject()


def test_a_new_mask_painter_says_nothing_is_drawn_yet(window):
    node = window.editor.add_node("MaskPainter", (0.0, 0.0))
    window.scene.select_nodes([node])
    assert window.properties.editors["mask"].summary.text() == "nothing drawn yet (paint it in the editor)"
