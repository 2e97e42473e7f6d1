"""The MaskPainter editor: paint the region to regenerate over the node's image.

Tools: brush and eraser (size, hardness), rectangle and lasso fill (hold Alt to clear
instead). Whole-mask actions: invert, clear, fill, grow/shrink, feather. Every change
is one step on the editor's own undo stack. Keys: [ and ] brush size, X brush/eraser,
B/E/R/L pick a tool, Ctrl+Z undo.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainterPath, QPen
from PySide6.QtWidgets import (
    QButtonGroup,
    QGraphicsEllipseItem,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QGridLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)

from app.editors.canvas import ArrayImageItem, EditorDialog, brush_step, form_row
from engine import drawing
from engine.errors import KilnError

TOOLS = ("brush", "eraser", "rectangle", "lasso")
TOOL_KEYS = {"brush": "B", "eraser": "E", "rectangle": "R", "lasso": "L"}
OVERLAY_RGB = (40, 220, 255)  # cyan: apart from every shapes-world colour
MAX_BRUSH = 512


class MaskPainterDialog(EditorDialog):
    def __init__(self, params: dict, image: np.ndarray | None = None, parent: QWidget | None = None):
        super().__init__("Mask Painter", params, parent)
        size = image.shape[:2] if image is not None else (self.params["height"], self.params["width"])
        height, width = size
        self.mask = self._initial_mask(width, height)  # uint8 (H, W), 255 = regenerate
        self.tool = "brush"
        self.brush_size = max(2, min(width, height) // 12)
        self.hardness = 0.8
        self.opacity = 0.55 if image is not None else 0.8
        self.add_background(image, width, height)
        self.overlay = ArrayImageItem(width, height)
        self.overlay.rgba[..., :3] = OVERLAY_RGB
        self.scene.addItem(self.overlay)
        self._add_guides()
        self._stroke: dict[str, Any] | None = None
        self._build_panel()
        self._refresh()
        self.select_tool("brush")

    # --- state -------------------------------------------------------------------
    def _initial_mask(self, width: int, height: int) -> np.ndarray:
        """The painting in the params (or the file at `path`), fitted to the canvas."""
        empty = np.zeros((height, width), dtype=np.uint8)
        try:
            if self.params.get("path"):
                mask = drawing.read_mask_file(self.params["path"])
                self.status.setText(f"Started from {self.params['path']}; OK saves it as the painting.")
            elif self.params.get("mask"):
                mask = drawing.decode_png_b64(self.params["mask"], "painted mask")
            else:
                return empty
        except KilnError as exc:
            self.status.setText(f"{exc} - starting from an empty mask.")
            return empty
        if mask.shape == empty.shape:
            return mask
        if drawing.same_aspect((mask.shape[1], mask.shape[0]), (width, height)):
            return drawing.resize_mask(mask, width, height)
        self.status.setText(f"The saved mask is {mask.shape[1]}x{mask.shape[0]}, another shape than the "
                            f"{width}x{height} image: starting from an empty mask.")
        return empty

    def resize_canvas(self, width: int, height: int) -> bool:
        """The picture arrived in another size: the painting follows it (same shape) or starts again."""
        old = self.mask
        if old.any() and drawing.same_aspect((old.shape[1], old.shape[0]), (width, height)):
            self.mask = drawing.resize_mask(old, width, height)
        else:
            self.mask = self._initial_mask(width, height)
        self.scene.removeItem(self.overlay)
        self.overlay = ArrayImageItem(width, height)
        self.overlay.rgba[..., :3] = OVERLAY_RGB
        self.scene.addItem(self.overlay)
        self.undo_stack.clear()  # its snapshots have the old size
        self._refresh()
        return True

    def picture_arrived(self) -> None:
        self.opacity_slider.setValue(55)

    def set_mask(self, mask: np.ndarray) -> None:
        self.mask[...] = mask
        self._refresh()

    def _refresh(self, box: tuple[int, int, int, int] | None = None) -> None:
        """Redraw the overlay (all of it, or the (x0, y0, x1, y1) part)."""
        h, w = self.mask.shape
        x0, y0, x1, y1 = box or (0, 0, w, h)
        alpha = round(self.opacity * 255)
        region = self.mask[y0:y1, x0:x1].astype(np.uint16)
        self.overlay.rgba[y0:y1, x0:x1, 3] = (region * alpha // 255).astype(np.uint8)
        self.overlay.changed(x0, y0, x1, y1)

    def result_params(self) -> dict:
        params = dict(self.params)
        params["mask"] = drawing.encode_png_b64(self.mask) if self.mask.any() else ""
        params["path"] = ""  # the painting now holds what came from the file
        return params

    def painted_pixels(self) -> int:
        return int(np.count_nonzero(self.mask))

    # --- tools -------------------------------------------------------------------
    def select_tool(self, tool: str) -> None:
        self.tool = tool
        self.tool_buttons[tool].setChecked(True)
        self._update_cursor_outline(None)

    def swap_brush_eraser(self) -> None:
        self.select_tool("brush" if self.tool == "eraser" else "eraser")

    def set_brush_size(self, size: int) -> None:
        self.brush_size = int(min(max(size, 1), MAX_BRUSH))
        if self.size_spin.value() != self.brush_size:
            self.size_spin.setValue(self.brush_size)

    def _pixel(self, pos: QPointF) -> tuple[int, int]:
        return math.floor(pos.x()), math.floor(pos.y())

    def press(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        x, y = self._pixel(pos)
        self._stroke = {"before": self.mask.copy(), "last": (x, y), "start": (x, y), "points": [(x, y)],
                        "clear": bool(modifiers & Qt.KeyboardModifier.AltModifier)}
        self.drag(pos, modifiers)  # a brush paints its first dab here

    def drag(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        self._update_cursor_outline(pos)
        if self._stroke is None:
            return
        x, y = self._pixel(pos)
        if self.tool in ("brush", "eraser"):
            self._paint_segment(self._stroke["last"], (x, y))
        elif self.tool == "rectangle":
            (sx, sy) = self._stroke["start"]
            self.rubber_rect.setRect(QRectF(min(sx, x), min(sy, y), abs(x - sx) + 1, abs(y - sy) + 1))
            self.rubber_rect.show()
        elif self.tool == "lasso" and (x, y) != self._stroke["points"][-1]:
            self._stroke["points"].append((x, y))
            path = QPainterPath(QPointF(*self._stroke["points"][0]) + QPointF(0.5, 0.5))
            for px, py in self._stroke["points"][1:]:
                path.lineTo(px + 0.5, py + 0.5)
            path.closeSubpath()
            self.lasso_path.setPath(path)
            self.lasso_path.show()
        self._stroke["last"] = (x, y)

    def release(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        if self._stroke is None:
            return
        self.drag(pos, modifiers)
        stroke, self._stroke = self._stroke, None
        value = 0 if stroke["clear"] else 255
        if self.tool == "rectangle":
            drawing.fill_rect(self.mask, stroke["start"], stroke["last"], value)
        elif self.tool == "lasso":
            drawing.fill_polygon(self.mask, stroke["points"], value)
        self.rubber_rect.hide()
        self.lasso_path.hide()
        self._refresh()
        self._push_if_changed(f"{self.tool.capitalize()} stroke", stroke["before"])

    def _paint_segment(self, p0: tuple[int, int], p1: tuple[int, int]) -> None:
        centre0, centre1 = (p0[0] + 0.5, p0[1] + 0.5), (p1[0] + 0.5, p1[1] + 0.5)
        box = drawing.paint_mask_stroke(self.mask, centre0, centre1, self.brush_size / 2.0, self.hardness,
                                        erase=self.tool == "eraser")
        if box is not None:
            self._refresh(box)

    def hover(self, pos: QPointF) -> None:
        self._update_cursor_outline(pos)

    def _update_cursor_outline(self, pos: QPointF | None) -> None:
        if pos is None or self.tool not in ("brush", "eraser"):
            self.cursor_outline.hide()
            return
        x, y = self._pixel(pos)
        r = self.brush_size / 2.0
        self.cursor_outline.setRect(QRectF(x + 0.5 - r, y + 0.5 - r, 2 * r, 2 * r))
        self.cursor_outline.show()

    # --- whole-mask actions ---------------------------------------------------------
    def apply(self, text: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replace the mask by change(mask) as one undo step."""
        before = self.mask.copy()
        self.set_mask(change(before.copy()))
        self._push_if_changed(text, before)

    def invert(self) -> None:
        self.apply("Invert", lambda m: 255 - m)

    def clear(self) -> None:
        self.apply("Clear", np.zeros_like)

    def fill_all(self) -> None:
        self.apply("Fill", lambda m: np.full_like(m, 255))

    def grow(self, pixels: int) -> None:
        self.apply("Grow" if pixels > 0 else "Shrink", lambda m: drawing.grow(m, pixels))

    def feather(self, pixels: int) -> None:
        self.apply("Feather", lambda m: drawing.feather(m, pixels))

    def set_opacity(self, opacity: float) -> None:
        self.opacity = min(max(opacity, 0.0), 1.0)
        self._refresh()

    def _push_if_changed(self, text: str, before: np.ndarray) -> None:
        if not np.array_equal(before, self.mask):
            self.push(text, self.set_mask, before, self.mask.copy())

    # --- widgets -------------------------------------------------------------------
    def _add_guides(self) -> None:
        cosmetic = QPen(QColor("#ffffff"), 1.0, Qt.PenStyle.DashLine)
        cosmetic.setCosmetic(True)
        self.cursor_outline = QGraphicsEllipseItem()
        self.cursor_outline.setPen(cosmetic)
        self.cursor_outline.setBrush(QBrush(QColor(0, 0, 0, 40)))  # readable on white pictures too
        dashed = QPen(QColor("#ffb74d"), 1.5, Qt.PenStyle.DashLine)
        dashed.setCosmetic(True)
        self.rubber_rect = QGraphicsRectItem()
        self.lasso_path = QGraphicsPathItem()
        for item in (self.cursor_outline, self.rubber_rect, self.lasso_path):
            if item is not self.cursor_outline:
                item.setPen(dashed)
                item.setBrush(QBrush(QColor(255, 183, 77, 50)))
            item.setZValue(10)
            item.hide()
            self.scene.addItem(item)

    def _build_panel(self) -> None:
        self.section("Tool")
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QToolButton] = {}
        grid = QGridLayout()
        grid.setSpacing(4)
        for i, tool in enumerate(TOOLS):
            button = QToolButton()
            button.setText(f"{tool.capitalize()}  ({TOOL_KEYS[tool]})")
            button.setCheckable(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setSizePolicy(button.sizePolicy().Policy.Expanding, button.sizePolicy().Policy.Fixed)
            button.clicked.connect(lambda _=False, t=tool: self.select_tool(t))
            self.tool_group.addButton(button)
            self.tool_buttons[tool] = button
            grid.addWidget(button, i // 2, i % 2)
            self.shortcut(TOOL_KEYS[tool], lambda t=tool: self.select_tool(t))
        self.panel.addLayout(grid)
        hint = QLabel("Rectangle and lasso fill; hold Alt to clear.")
        hint.setObjectName("helpText")
        hint.setWordWrap(True)
        self.panel.addWidget(hint)
        self._build_brush_controls()
        self._build_mask_actions()
        self._build_view_controls()
        self.panel.addStretch(1)
        self.shortcut("[", lambda: self.set_brush_size(brush_step(self.brush_size, bigger=False)))
        self.shortcut("]", lambda: self.set_brush_size(brush_step(self.brush_size, bigger=True)))
        self.shortcut("X", self.swap_brush_eraser)

    def _build_brush_controls(self) -> None:
        self.section("Brush")
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(self.brush_size)
        self.size_spin.setToolTip("Brush diameter ([ and ] change it)")
        self.size_spin.valueChanged.connect(self.set_brush_size)
        self.hardness_slider = QSlider(Qt.Orientation.Horizontal)
        self.hardness_slider.setRange(0, 100)
        self.hardness_slider.setValue(round(self.hardness * 100))
        self.hardness_slider.setToolTip("Hardness: 100 % gives a sharp edge, less a soft one")
        self.hardness_slider.valueChanged.connect(lambda v: setattr(self, "hardness", v / 100.0))
        self.panel.addLayout(form_row("Size", self.size_spin))
        self.panel.addLayout(form_row("Hardness", self.hardness_slider))

    def _build_mask_actions(self) -> None:
        self.section("Mask")
        self.edge_spin = QSpinBox()
        self.edge_spin.setRange(1, 256)
        self.edge_spin.setValue(4)
        self.edge_spin.setSuffix(" px")
        self.edge_spin.setToolTip("How far Grow, Shrink and Feather reach")
        actions = (("Invert", self.invert), ("Clear", self.clear), ("Fill all", self.fill_all),
                   ("Grow", lambda: self.grow(self.edge_spin.value())),
                   ("Shrink", lambda: self.grow(-self.edge_spin.value())),
                   ("Feather", lambda: self.feather(self.edge_spin.value())))
        grid = QGridLayout()
        grid.setSpacing(4)
        for i, (text, slot) in enumerate(actions):
            button = QPushButton(text)
            button.clicked.connect(slot)
            grid.addWidget(button, i // 3, i % 3)
        self.panel.addLayout(grid)
        self.panel.addLayout(form_row("Edges", self.edge_spin))
        self.panel.addLayout(self.undo_buttons())

    def _build_view_controls(self) -> None:
        self.section("View")
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(round(self.opacity * 100))
        self.opacity_slider.setToolTip("How strongly the mask covers the picture")
        self.opacity_slider.valueChanged.connect(lambda v: self.set_opacity(v / 100.0))
        self.panel.addLayout(form_row("Overlay", self.opacity_slider))
        help_text = QLabel("Wheel zooms; middle button or Space+drag pans. [ and ] change the brush size, "
                           "X swaps brush and eraser.")
        help_text.setObjectName("helpText")
        help_text.setWordWrap(True)
        self.panel.addWidget(help_text)

