"""Drawing editors for the artist input nodes, opened from the node (double-click).

    open_editor(node_type, params, image, parent) -> new params, or None when cancelled
    has_editor(node_type) -> bool

`image` is the node's input picture as uint8 (H, W, 3), or None for a blank canvas of
the node's width/height. The returned params hold the drawing (saved in the graph).
"""
from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDialog, QWidget

from app.editors.canvas import EditorDialog

EDITOR_TYPES = ("MaskPainter", "LayoutEditor", "SemanticPainter")


def has_editor(node_type: str) -> bool:
    return node_type in EDITOR_TYPES


def create_editor(node_type: str, params: dict, image: Any = None,
                  parent: QWidget | None = None) -> EditorDialog:
    """The (not yet shown) editor dialog of a node type that has one."""
    if node_type == "MaskPainter":
        from app.editors.mask_painter import MaskPainterDialog

        return MaskPainterDialog(params, image, parent)
    if node_type == "LayoutEditor":
        from app.editors.layout_editor import LayoutEditorDialog

        return LayoutEditorDialog(params, image, parent)
    if node_type == "SemanticPainter":
        from app.editors.semantic_painter import SemanticPainterDialog

        return SemanticPainterDialog(params, image, parent)
    raise ValueError(f"node type {node_type!r} has no editor")


def open_editor(node_type: str, params: dict, image: Any = None,
                parent: QWidget | None = None) -> dict | None:
    """Show the node's editor modally; the new params when the user presses OK, else None."""
    dialog = create_editor(node_type, params, image, parent)
    try:
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return dialog.result_params()
    finally:
        dialog.deleteLater()
