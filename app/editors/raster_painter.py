"""What the brush painters share (mask_painter, semantic_painter): a uint8 (H, W) raster painted
over the node's picture, shown as a coloured overlay, with a brush, an eraser and a rectangle.

A subclass says how the raster is read, drawn and painted (the hooks below); the press, drag and
release of a stroke, the outline under the cursor, the size and opacity controls and one undo step
per stroke are here.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPen
from PySide6.QtWidgets import (
    QButtonGroup,
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsRectItem,
    QGridLayout,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)

from app.editors.canvas import ArrayImageItem, EditorDialog, brush_step
from engine import drawing
from engine.errors import KilnError

MAX_BRUSH = 512
BRUSHES = ("brush", "eraser")


class RasterPainterDialog(EditorDialog):
    TITLE = ""
    DRAWING_PARAM = ""  # the param that keeps the painting as a base64 PNG
    NOUN = ""  # what the raster is called in messages ("mask", "map")
    DECODE_SOURCE = ""  # the painting, in decoding errors
    MISMATCH = ""  # str.format(w, h, width, height): a saved raster of another shape than the canvas
    STROKE_TEXT = "{}"  # str.format(tool): the undo step of a stroke
    TOOLS: tuple[str, ...] = ()
    TOOL_KEYS: ClassVar[dict[str, str]] = {}
    OVERLAY_RGB: tuple[int, int, int] | None = None  # one colour for the whole overlay, else per pixel
    BRUSH_DIVISOR = 12  # the first brush size: the canvas' short side over this
    PICTURE_OPACITY = 0.55  # the overlay over a picture, and over a blank canvas:
    BLANK_OPACITY = 0.8

    def __init__(self, params: dict, image: np.ndarray | None = None, parent: QWidget | None = None):
        super().__init__(self.TITLE, params, parent)
        self.setup()
        height, width = image.shape[:2] if image is not None else (self.params["height"], self.params["width"])
        self.raster = self.initial_raster(width, height)  # uint8 (H, W)
        self.tool = BRUSHES[0]
        self.brush_size = max(2, min(width, height) // self.BRUSH_DIVISOR)
        self.opacity = self.PICTURE_OPACITY if image is not None else self.BLANK_OPACITY
        self.add_background(image, width, height)
        self.overlay = self._new_overlay(width, height)
        self._stroke: dict[str, Any] | None = None
        self._add_guides()
        self._build_panel()
        self._refresh()
        self.select_tool(BRUSHES[0])

    # --- hooks ---------------------------------------------------------------------
    def setup(self) -> None:
        """Set what the subclass needs before the raster is read."""

    def read_file(self, path: str) -> np.ndarray:
        raise NotImplementedError("abstract: the mask and semantic painters each supply it (an ABC metaclass conflicts with Qt's)")

    def resized(self, raster: np.ndarray, width: int, height: int) -> np.ndarray:
        raise NotImplementedError("abstract: the mask and semantic painters each supply it (an ABC metaclass conflicts with Qt's)")

    def _refresh(self, box: tuple[int, int, int, int] | None = None) -> None:
        """Redraw the overlay (all of it, or the (x0, y0, x1, y1) part)."""
        raise NotImplementedError("abstract: the mask and semantic painters each supply it (an ABC metaclass conflicts with Qt's)")

    def paint_stroke(self, c0: tuple[float, float], c1: tuple[float, float], radius: float) -> Any:
        """Paint a brush segment; the box it changed, or None."""
        raise NotImplementedError("abstract: the mask and semantic painters each supply it (an ABC metaclass conflicts with Qt's)")

    def fill_value(self, stroke: dict[str, Any]) -> int:
        """What a rectangle fills with."""
        raise NotImplementedError("abstract: the mask and semantic painters each supply it (an ABC metaclass conflicts with Qt's)")

    def _build_panel(self) -> None:
        raise NotImplementedError("abstract: the mask and semantic painters each supply it (an ABC metaclass conflicts with Qt's)")

    def drag_tool(self, x: int, y: int) -> None:
        """A drag with a tool other than brush, eraser and rectangle."""

    def finish_stroke(self, stroke: dict[str, Any]) -> None:
        if self.tool == "rectangle":
            drawing.fill_rect(self.raster, stroke["start"], stroke["last"], self.fill_value(stroke))
        self.rubber_rect.hide()
        self._refresh()

    # --- state -----------------------------------------------------------------------
    def initial_raster(self, width: int, height: int) -> np.ndarray:
        """The painting in the params (or the file at `path`), fitted to the canvas."""
        empty = np.zeros((height, width), dtype=np.uint8)
        try:
            if self.params.get("path"):
                raster = self.read_file(self.params["path"])
            elif self.params.get(self.DRAWING_PARAM):
                raster = drawing.decode_png_b64(self.params[self.DRAWING_PARAM], self.DECODE_SOURCE)
            else:
                return empty
        except KilnError as exc:
            self.status.setText(f"{exc} - starting from an empty {self.NOUN}.")
            return empty
        return self.fitted(raster, width, height, empty)

    def fitted(self, raster: np.ndarray, width: int, height: int, fallback: np.ndarray) -> np.ndarray:
        """The raster on a width x height canvas: scaled when of the same shape, else `fallback`."""
        if raster.shape == (height, width):
            return raster
        if drawing.same_aspect((raster.shape[1], raster.shape[0]), (width, height)):
            return self.resized(raster, width, height)
        self.status.setText(self.MISMATCH.format(raster.shape[1], raster.shape[0], width, height))
        return fallback

    def _new_overlay(self, width: int, height: int) -> ArrayImageItem:
        overlay = ArrayImageItem(width, height)
        if self.OVERLAY_RGB is not None:
            overlay.rgba[..., :3] = self.OVERLAY_RGB
        self.scene.addItem(overlay)
        return overlay

    def resize_canvas(self, width: int, height: int) -> bool:
        """The picture arrived in another size: the painting follows it (same shape) or starts again."""
        old = self.raster
        if old.any() and drawing.same_aspect((old.shape[1], old.shape[0]), (width, height)):
            self.raster = self.resized(old, width, height)
        else:
            self.raster = self.initial_raster(width, height)
        self.scene.removeItem(self.overlay)
        self.overlay = self._new_overlay(width, height)
        self.undo_stack.clear()  # its snapshots have the old size
        self._refresh()
        return True

    def picture_arrived(self) -> None:
        self.opacity_slider.setValue(round(self.PICTURE_OPACITY * 100))

    def set_raster(self, raster: np.ndarray) -> None:
        self.raster[...] = raster
        self._refresh()

    def result_params(self) -> dict:
        params = dict(self.params)
        params[self.DRAWING_PARAM] = drawing.encode_png_b64(self.raster) if self.raster.any() else ""
        params["path"] = ""  # the painting now holds what came from the file
        return params

    def _push_if_changed(self, text: str, before: np.ndarray) -> None:
        if not np.array_equal(before, self.raster):
            self.push(text, self.set_raster, before, self.raster.copy())

    # --- strokes ---------------------------------------------------------------------
    def select_tool(self, tool: str) -> None:
        self.tool = tool
        self.tool_buttons[tool].setChecked(True)
        self.cursor_outline.hide()

    def set_brush_size(self, size: int) -> None:
        self.brush_size = int(min(max(size, 1), MAX_BRUSH))
        if self.size_spin.value() != self.brush_size:
            self.size_spin.setValue(self.brush_size)

    def set_opacity(self, opacity: float) -> None:
        self.opacity = min(max(opacity, 0.0), 1.0)
        self._refresh()

    def press(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        x, y = math.floor(pos.x()), math.floor(pos.y())
        self._stroke = {"before": self.raster.copy(), "start": (x, y), "last": (x, y), "points": [(x, y)],
                        "clear": bool(modifiers & Qt.KeyboardModifier.AltModifier)}
        self.start_stroke(x, y)
        self.drag(pos, modifiers)  # a brush paints its first dab here

    def start_stroke(self, x: int, y: int) -> None:
        """The press of a stroke, before its first drag."""

    def drag(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        self.hover(pos)
        if self._stroke is None:
            return
        x, y = math.floor(pos.x()), math.floor(pos.y())
        if self.tool in BRUSHES:
            last = self._stroke["last"]
            box = self.paint_stroke((last[0] + 0.5, last[1] + 0.5), (x + 0.5, y + 0.5), self.brush_size / 2.0)
            if box is not None:
                self._refresh(box)
        elif self.tool == "rectangle":
            sx, sy = self._stroke["start"]
            self.rubber_rect.setRect(QRectF(min(sx, x), min(sy, y), abs(x - sx) + 1, abs(y - sy) + 1))
            self.rubber_rect.show()
        else:
            self.drag_tool(x, y)
        self._stroke["last"] = (x, y)

    def release(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        if self._stroke is None:
            return
        self.drag(pos, modifiers)
        stroke, self._stroke = self._stroke, None
        self.finish_stroke(stroke)
        self._push_if_changed(self.STROKE_TEXT.format(self.tool.capitalize()), stroke["before"])

    def hover(self, pos: QPointF) -> None:
        """The brush's outline under the cursor."""
        if self.tool not in BRUSHES:
            self.cursor_outline.hide()
            return
        r = self.brush_size / 2.0
        x, y = math.floor(pos.x()) + 0.5, math.floor(pos.y()) + 0.5
        self.cursor_outline.setRect(QRectF(x - r, y - r, 2 * r, 2 * r))
        self.cursor_outline.show()

    # --- widgets ---------------------------------------------------------------------
    def _add_guides(self) -> None:
        outline = QPen(QColor("#ffffff"), 1.0, Qt.PenStyle.DashLine)
        outline.setCosmetic(True)
        self.cursor_outline = self.add_guide(QGraphicsEllipseItem(), outline)
        self.cursor_outline.setBrush(QBrush(QColor(0, 0, 0, 40)))  # readable on white pictures too
        self.rubber_rect = self.add_guide(QGraphicsRectItem(), self.selection_pen())

    def selection_pen(self) -> QPen:
        dashed = QPen(QColor("#ffb74d"), 1.5, Qt.PenStyle.DashLine)
        dashed.setCosmetic(True)
        return dashed

    def add_guide(self, item: QGraphicsItem, pen: QPen) -> Any:
        """A hidden item drawn over the painting (outlines, rubber bands)."""
        item.setPen(pen)
        item.setZValue(10)
        item.hide()
        self.scene.addItem(item)
        return item

    def _build_tool_buttons(self) -> None:
        """The tools, two a row, each with its key; [ and ] change the brush size."""
        self.section("Tool")
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QToolButton] = {}
        grid = QGridLayout()
        grid.setSpacing(4)
        for i, tool in enumerate(self.TOOLS):
            button = QToolButton()
            button.setText(f"{tool.capitalize()}  ({self.TOOL_KEYS[tool]})")
            button.setCheckable(True)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setSizePolicy(button.sizePolicy().Policy.Expanding, button.sizePolicy().Policy.Fixed)
            button.clicked.connect(lambda _=False, t=tool: self.select_tool(t))
            self.tool_group.addButton(button)
            self.tool_buttons[tool] = button
            grid.addWidget(button, i // 2, i % 2)
            self.shortcut(self.TOOL_KEYS[tool], lambda t=tool: self.select_tool(t))
        self.panel.addLayout(grid)
        self.shortcut("[", lambda: self.set_brush_size(brush_step(self.brush_size, bigger=False)))
        self.shortcut("]", lambda: self.set_brush_size(brush_step(self.brush_size, bigger=True)))

    def _make_size_spin(self) -> QSpinBox:
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(self.brush_size)
        self.size_spin.setToolTip("Brush diameter ([ and ] change it)")
        self.size_spin.valueChanged.connect(self.set_brush_size)
        return self.size_spin

    def _make_opacity_slider(self, tip: str) -> QSlider:
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(round(self.opacity * 100))
        self.opacity_slider.setToolTip(tip)
        self.opacity_slider.valueChanged.connect(lambda v: self.set_opacity(v / 100.0))
        return self.opacity_slider
