"""The mask painter: paint the region to regenerate over the node's image.

Tools: brush and eraser (size, hardness), rectangle and lasso fill (hold Alt to clear
instead). Whole-mask actions: invert, clear, fill, grow/shrink, feather. Every change
is one step on the editor's own undo stack. Keys: [ and ] brush size, X brush/eraser,
B/E/R/L pick a tool, Ctrl+Z undo.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QBrush, QColor, QPainterPath
from PySide6.QtWidgets import QGraphicsPathItem, QGridLayout, QLabel, QPushButton, QSlider, QSpinBox

from app.editors.canvas import form_row
from app.editors.raster_painter import RasterPainterDialog
from engine import drawing

TOOLS = ("brush", "eraser", "rectangle", "lasso")
TOOL_KEYS = {"brush": "B", "eraser": "E", "rectangle": "R", "lasso": "L"}
OVERLAY_RGB = (40, 220, 255)  # cyan: apart from every shapes-world colour
SELECTION_FILL = QColor(255, 183, 77, 50)


class MaskPainterDialog(RasterPainterDialog):
    TITLE = "Mask Painter"
    DRAWING_PARAM = "mask"
    NOUN = "mask"
    DECODE_SOURCE = "painted mask"
    MISMATCH = ("The saved mask is {}x{}, another shape than the {}x{} image: "
                "starting from an empty mask.")
    STROKE_TEXT = "{} stroke"
    TOOLS, TOOL_KEYS, OVERLAY_RGB = TOOLS, TOOL_KEYS, OVERLAY_RGB
    BRUSH_DIVISOR, PICTURE_OPACITY, BLANK_OPACITY = 12, 0.55, 0.8

    def setup(self) -> None:
        self.hardness = 0.8

    @property
    def mask(self) -> np.ndarray:
        """uint8 (H, W), 255 = regenerate."""
        return self.raster

    def read_file(self, path: str) -> np.ndarray:
        mask = drawing.read_mask_file(path)
        self.status.setText(f"Started from {path}; OK saves it as the painting.")
        return mask

    def resized(self, raster: np.ndarray, width: int, height: int) -> np.ndarray:
        return drawing.resize_mask(raster, width, height)

    def _refresh(self, box: tuple[int, int, int, int] | None = None) -> None:
        h, w = self.mask.shape
        x0, y0, x1, y1 = box or (0, 0, w, h)
        alpha = round(self.opacity * 255)
        region = self.mask[y0:y1, x0:x1].astype(np.uint16)
        self.overlay.rgba[y0:y1, x0:x1, 3] = (region * alpha // 255).astype(np.uint8)
        self.overlay.changed(x0, y0, x1, y1)

    def painted_pixels(self) -> int:
        return int(np.count_nonzero(self.mask))

    # --- tools -------------------------------------------------------------------
    def swap_brush_eraser(self) -> None:
        self.select_tool("brush" if self.tool == "eraser" else "eraser")

    def paint_stroke(self, c0: tuple[float, float], c1: tuple[float, float], radius: float) -> Any:
        return drawing.paint_mask_stroke(self.mask, c0, c1, radius, self.hardness, erase=self.tool == "eraser")

    def fill_value(self, stroke: dict[str, Any]) -> int:
        return 0 if stroke["clear"] else 255

    def drag_tool(self, x: int, y: int) -> None:
        points = self._stroke["points"]
        if self.tool != "lasso" or (x, y) == points[-1]:
            return
        points.append((x, y))
        path = QPainterPath(QPointF(*points[0]) + QPointF(0.5, 0.5))
        for px, py in points[1:]:
            path.lineTo(px + 0.5, py + 0.5)
        path.closeSubpath()
        self.lasso_path.setPath(path)
        self.lasso_path.show()

    def finish_stroke(self, stroke: dict[str, Any]) -> None:
        if self.tool == "lasso":
            drawing.fill_polygon(self.mask, stroke["points"], self.fill_value(stroke))
        self.lasso_path.hide()
        super().finish_stroke(stroke)

    # --- whole-mask actions ---------------------------------------------------------
    def apply(self, text: str, change: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replace the mask by change(mask) as one undo step."""
        before = self.mask.copy()
        self.set_raster(change(before.copy()))
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

    # --- widgets -------------------------------------------------------------------
    def _add_guides(self) -> None:
        super()._add_guides()
        self.lasso_path = self.add_guide(QGraphicsPathItem(), self.selection_pen())
        for item in (self.rubber_rect, self.lasso_path):
            item.setBrush(QBrush(SELECTION_FILL))

    def _build_panel(self) -> None:
        self._build_tool_buttons()
        hint = QLabel("Rectangle and lasso fill; hold Alt to clear.")
        hint.setObjectName("helpText")
        hint.setWordWrap(True)
        self.panel.addWidget(hint)
        self._build_brush_controls()
        self._build_mask_actions()
        self._build_view_controls()
        self.panel.addStretch(1)
        self.shortcut("X", self.swap_brush_eraser)

    def _build_brush_controls(self) -> None:
        self.section("Brush")
        self.hardness_slider = QSlider(Qt.Orientation.Horizontal)
        self.hardness_slider.setRange(0, 100)
        self.hardness_slider.setValue(round(self.hardness * 100))
        self.hardness_slider.setToolTip("Hardness: 100 % gives a sharp edge, less a soft one")
        self.hardness_slider.valueChanged.connect(lambda v: setattr(self, "hardness", v / 100.0))
        self.panel.addLayout(form_row("Size", self._make_size_spin()))
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
        slider = self._make_opacity_slider("How strongly the mask covers the picture")
        self.panel.addLayout(form_row("Overlay", slider))
        help_text = QLabel("Wheel zooms; middle button or Space+drag pans. [ and ] change the brush size, "
                           "X swaps brush and eraser.")
        help_text.setObjectName("helpText")
        help_text.setWordWrap(True)
        self.panel.addWidget(help_text)
