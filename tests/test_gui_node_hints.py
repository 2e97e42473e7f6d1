"""The GUI goes by what node types declare (NodeSpec.editor, paints_over, roles, Param.drawing),
never by their names: renamed copies of the built-in nodes behave as the originals do."""
from __future__ import annotations

from dataclasses import replace

import pytest
from gui_support import Answers, close_window, make_settings
from PIL import Image as PILImage
from PySide6.QtCore import QPointF

from engine.graph import Link
from engine.spec import ROLE_HOLDS_LAYOUT, ROLE_OPENS_PICTURES, Input, NodeRegistry, NodeSpec, SocketType
from nodes import build_registry
from nodes.image_io import LOAD_IMAGE
from nodes.layout_nodes import LAYOUT_EDITOR
from nodes.mask_nodes import MASK_PAINTER


def renamed_registry() -> NodeRegistry:
    """A picture loader, a mask painter, a box holder and a box taker under names the GUI never heard of."""
    registry = NodeRegistry()
    registry.register(replace(LOAD_IMAGE, type="OpenPicture", title="Open Picture"))
    registry.register(replace(MASK_PAINTER, type="Stencil", title="Stencil"))
    registry.register(replace(LAYOUT_EDITOR, type="Boxes", title="Boxes"))
    registry.register(NodeSpec(type="Planner", title="Planner", category="test", help="Takes boxes.",
                               compute=lambda ctx, inputs, params: {},
                               inputs=(Input("wanted_boxes", SocketType.LAYOUT, optional=True),)))
    return registry


@pytest.fixture
def window(qtbot, tmp_path):
    from app.window import MainWindow

    window = MainWindow(renamed_registry(), make_settings(tmp_path))
    window.ask = Answers()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    yield window
    close_window(window)


def test_the_built_in_nodes_declare_their_roles():
    registry = build_registry()
    assert registry.first_with_role(ROLE_OPENS_PICTURES).type == "LoadImage"
    assert registry.first_with_role(ROLE_HOLDS_LAYOUT).type == "LayoutEditor"
    assert {s.type: s.editor for s in registry if s.editor} == {
        "MaskPainter": "mask", "LayoutEditor": "layout", "SemanticPainter": "semantic"}
    drawings = {(s.type, p.name): p.drawing for s in registry for p in s.params if p.drawing}
    assert drawings == {("MaskPainter", "mask"): "mask", ("SemanticPainter", "labels"): "labels"}


def test_a_dropped_picture_becomes_the_node_that_opens_pictures(window, tmp_path):
    photo = tmp_path / "photo.png"
    PILImage.new("RGB", (8, 6), (10, 200, 30)).save(photo)
    window.files.open_dropped([str(photo)], QPointF(0.0, 0.0))
    (node,) = window.doc.graph.nodes.values()
    assert node.type == "OpenPicture" and node.params["path"] == str(photo)
    assert "Open Picture" in window.doc.undo_stack.undoText()


def test_a_renamed_painter_opens_the_mask_painter_over_its_picture(window, qtbot, tmp_path):
    from app.drawing_param import DrawingParamView

    photo = tmp_path / "photo.png"
    PILImage.new("RGB", (40, 24), (200, 30, 30)).save(photo)
    picture = window.editor.add_node("OpenPicture", (0.0, 0.0), {"path": str(photo)})
    stencil = window.editor.add_node("Stencil", (300.0, 0.0))
    window.editor.connect(picture, "image", stencil, "image")
    window.scene.select_nodes([stencil])
    view = window.properties.editors["mask"]
    assert isinstance(view, DrawingParamView) and view.open_button is not None  # never the base64 text
    assert window.edits.node_editors.picture_source(stencil) == picture
    dialog = window.open_node_editor(stencil)
    try:
        assert dialog.windowTitle() == "Mask Painter"
        qtbot.waitUntil(lambda: dialog.mask.shape == (24, 40), timeout=20000)  # the picture arrived
    finally:
        dialog.reject()
    assert window.open_node_editor(picture) is None  # declares no editor


def test_boxes_go_into_the_node_that_holds_layouts_wired_to_the_layout_input(window):
    boxes = [{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]
    planner = window.editor.add_node("Planner", (600.0, 0.0))
    holder = window.editor.edit_boxes_in_layout_editor(planner, boxes, (0.0, 0.0))
    assert window.doc.graph.nodes[holder].type == "Boxes"
    assert window.doc.graph.nodes[holder].params == {"boxes": boxes, "labels": "shapes world"}
    assert window.doc.graph.incoming(planner)["wanted_boxes"] == Link(holder, "layout", planner, "wanted_boxes")
