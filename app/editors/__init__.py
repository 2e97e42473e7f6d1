"""Drawing editors for the artist input nodes, opened from the node (double-click).

    open_editor(kind, params, image, parent) -> new params, or None when cancelled
    has_editor(kind) -> bool

`kind` is what a node type declares in `NodeSpec.editor` ("mask", "layout", "semantic"); a node
type name is also taken, its spec found in `registry` (by default the built-in node types).
`image` is the node's input picture as uint8 (H, W, 3), or None for a blank canvas of the
node's width/height. The returned params hold the drawing (saved in the graph).
"""
from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QDialog, QWidget

from engine.spec import NodeRegistry, NodeSpec

if TYPE_CHECKING:  # the dialogs import numpy: only when one is first opened, not at start-up
    from app.editors.canvas import EditorDialog

# editor kind -> (module, dialog class), imported when first opened
EDITORS = {
    "mask": ("app.editors.mask_painter", "MaskPainterDialog"),
    "layout": ("app.editors.layout_editor", "LayoutEditorDialog"),
    "semantic": ("app.editors.semantic_painter", "SemanticPainterDialog"),
}


@cache
def _builtin_registry() -> NodeRegistry:
    from nodes import build_registry

    return build_registry()


def declared_editor(spec: NodeSpec | None) -> str | None:
    """The editor kind a node type declares, when there is such an editor."""
    return spec.editor if spec is not None and spec.editor in EDITORS else None


def editor_kind(name: str, registry: NodeRegistry | None = None) -> str | None:
    """The editor kind `name` stands for: a kind itself, or a node type whose spec declares one."""
    if name in EDITORS:
        return name
    return declared_editor((registry or _builtin_registry()).get(name))


def has_editor(name: str, registry: NodeRegistry | None = None) -> bool:
    return editor_kind(name, registry) is not None


def create_editor(name: str, params: dict, image: Any = None, parent: QWidget | None = None,
                  registry: NodeRegistry | None = None) -> EditorDialog:
    """The (not yet shown) editor dialog of an editor kind, or of a node type that has one."""
    kind = editor_kind(name, registry)
    if kind is None:
        raise ValueError(f"{name!r} has no editor")
    module, dialog_class = EDITORS[kind]
    return getattr(import_module(module), dialog_class)(params, image, parent)


def open_editor(name: str, params: dict, image: Any = None, parent: QWidget | None = None,
                registry: NodeRegistry | None = None) -> dict | None:
    """Show the editor modally; the new params when the user presses OK, else None."""
    dialog = create_editor(name, params, image, parent, registry)
    try:
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return dialog.result_params()
    finally:
        dialog.deleteLater()
