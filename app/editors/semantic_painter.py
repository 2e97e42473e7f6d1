"""The SemanticPainter editor: paint a map of class ids with the palette's colours.

Tools: brush, flood fill, rectangle, and an eraser that paints the chosen background
class. The palette lists every class with its name and display colour. Import reads a
PNG of class indices or a colour-coded PNG; export writes either. Every change is one
step on the editor's undo stack. Keys: [ and ] brush size, B/F/R/E pick a tool.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPen, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QGraphicsEllipseItem,
    QGraphicsRectItem,
    QGridLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QWidget,
)

from app.editors.canvas import ArrayImageItem, EditorDialog, brush_step, form_row
from engine import drawing
from engine.errors import KilnError

TOOLS = ("brush", "fill", "rectangle", "eraser")
TOOL_KEYS = {"brush": "B", "fill": "F", "rectangle": "R", "eraser": "E"}
MAX_BRUSH = 512


class SemanticPainterDialog(EditorDialog):
    def __init__(self, params: dict, image: np.ndarray | None = None, parent: QWidget | None = None):
        super().__init__("Semantic Painter", params, parent)
        self.num_classes = int(self.params.get("num_classes", drawing.NUM_SEMANTIC_CLASSES))
        self.colours = drawing.palette(self.num_classes)
        size = image.shape[:2] if image is not None else (self.params["height"], self.params["width"])
        height, width = size
        self.labels = self._initial_labels(width, height)  # uint8 (H, W) class ids
        self.tool = "brush"
        self.current_class = min(3, self.num_classes - 1)
        self.background_class = 0
        self.brush_size = max(2, min(width, height) // 10)
        self.opacity = 0.6 if image is not None else 1.0
        self.add_background(image, width, height)
        self.overlay = ArrayImageItem(width, height)
        self.scene.addItem(self.overlay)
        self._stroke: dict[str, Any] | None = None
        self._add_guides()
        self._build_panel()
        self._refresh()
        self.select_tool("brush")

    # --- state -------------------------------------------------------------------
    def _initial_labels(self, width: int, height: int) -> np.ndarray:
        empty = np.zeros((height, width), dtype=np.uint8)
        try:
            if self.params.get("path"):
                labels = drawing.read_label_file(self.params["path"], self.num_classes)
            elif self.params.get("labels"):
                labels = drawing.decode_png_b64(self.params["labels"], "painted label map")
            else:
                return empty
        except KilnError as exc:
            self.status.setText(f"{exc} - starting from an empty map.")
            return empty
        return self._fitted(labels, width, height, empty)

    def _fitted(self, labels: np.ndarray, width: int, height: int, fallback: np.ndarray) -> np.ndarray:
        unknown = drawing.first_unknown_class(labels, self.num_classes)
        if unknown is not None:
            self.status.setText(f"Class {unknown[0]} is not below num_classes {self.num_classes}: "
                                f"{unknown[3]} pixels set to class 0.")
            labels = np.where(labels >= self.num_classes, 0, labels).astype(np.uint8)
        if labels.shape == (height, width):
            return labels
        if drawing.same_aspect((labels.shape[1], labels.shape[0]), (width, height)):
            return drawing.resize_labels(labels, width, height)
        self.status.setText(f"The map is {labels.shape[1]}x{labels.shape[0]}, another shape than the "
                            f"{width}x{height} canvas: not used.")
        return fallback

    def resize_canvas(self, width: int, height: int) -> bool:
        """The picture arrived in another size: the map follows it (same shape) or starts again."""
        old = self.labels
        if old.any() and drawing.same_aspect((old.shape[1], old.shape[0]), (width, height)):
            self.labels = drawing.resize_labels(old, width, height)
        else:
            self.labels = self._initial_labels(width, height)
        self.scene.removeItem(self.overlay)
        self.overlay = ArrayImageItem(width, height)
        self.scene.addItem(self.overlay)
        self.undo_stack.clear()  # its snapshots have the old size
        self._refresh()
        return True

    def picture_arrived(self) -> None:
        self.opacity_slider.setValue(60)

    def set_labels(self, labels: np.ndarray) -> None:
        self.labels[...] = labels
        self._refresh()

    def _refresh(self, box: tuple[int, int, int, int] | None = None) -> None:
        h, w = self.labels.shape
        x0, y0, x1, y1 = box or (0, 0, w, h)
        region = self.overlay.rgba[y0:y1, x0:x1]
        region[..., :3] = self.colours[self.labels[y0:y1, x0:x1]]
        region[..., 3] = round(self.opacity * 255)
        self.overlay.changed(x0, y0, x1, y1)

    def result_params(self) -> dict:
        params = dict(self.params)
        params["labels"] = drawing.encode_png_b64(self.labels) if self.labels.any() else ""
        params["path"] = ""  # the painting now holds what came from the file
        return params

    def class_counts(self) -> dict[int, int]:
        ids, counts = np.unique(self.labels, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    # --- import / export ---------------------------------------------------------------
    def import_file(self, path: str) -> bool:
        """Replace the map by a PNG of class indices or colours (one undo step)."""
        try:
            labels = drawing.read_label_file(path, self.num_classes)
        except KilnError as exc:
            self.status.setText(str(exc))
            return False
        h, w = self.labels.shape
        self.status.setText(f"Imported {path}.")
        fitted = self._fitted(labels, w, h, self.labels.copy())
        before = self.labels.copy()
        self.set_labels(fitted)
        self._push_if_changed("Import", before)
        return True

    def export_file(self, path: str, colour_coded: bool = False) -> bool:
        try:
            drawing.write_png(path, drawing.labels_to_rgb(self.labels, self.num_classes) if colour_coded
                              else self.labels)
        except KilnError as exc:
            self.status.setText(str(exc))
            return False
        self.status.setText(f"Exported {path}.")
        return True

    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import label map", "", "PNG images (*.png)")
        if path:
            self.import_file(path)

    def _ask_export(self, colour_coded: bool) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export label map", "labels.png", "PNG images (*.png)")
        if path:
            self.export_file(path, colour_coded)

    # --- tools -------------------------------------------------------------------
    def select_tool(self, tool: str) -> None:
        self.tool = tool
        self.tool_buttons[tool].setChecked(True)
        self.cursor_outline.hide()

    def select_class(self, class_id: int) -> None:
        self.current_class = int(class_id)
        if self.class_list.currentRow() != class_id:
            self.class_list.setCurrentRow(class_id)

    def set_brush_size(self, size: int) -> None:
        self.brush_size = int(min(max(size, 1), MAX_BRUSH))
        if self.size_spin.value() != self.brush_size:
            self.size_spin.setValue(self.brush_size)

    def _paint_class(self) -> int:
        return self.background_class if self.tool == "eraser" else self.current_class

    def press(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        x, y = math.floor(pos.x()), math.floor(pos.y())
        self._stroke = {"before": self.labels.copy(), "start": (x, y), "last": (x, y)}
        if self.tool == "fill" and drawing.flood_fill(self.labels, x, y, self.current_class):
            self._refresh()
        self.drag(pos, modifiers)  # a brush paints its first dab here

    def drag(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        self.hover(pos)
        if self._stroke is None:
            return
        x, y = math.floor(pos.x()), math.floor(pos.y())
        if self.tool in ("brush", "eraser"):
            self._paint_segment(self._stroke["last"], (x, y))
        elif self.tool == "rectangle":
            sx, sy = self._stroke["start"]
            self.rubber_rect.setRect(QRectF(min(sx, x), min(sy, y), abs(x - sx) + 1, abs(y - sy) + 1))
            self.rubber_rect.show()
        self._stroke["last"] = (x, y)

    def release(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None:
        if self._stroke is None:
            return
        self.drag(pos, modifiers)
        stroke, self._stroke = self._stroke, None
        if self.tool == "rectangle":
            drawing.fill_rect(self.labels, stroke["start"], stroke["last"], self.current_class)
            self.rubber_rect.hide()
            self._refresh()
        self._push_if_changed(f"{self.tool.capitalize()}", stroke["before"])

    def _paint_segment(self, p0: tuple[int, int], p1: tuple[int, int]) -> None:
        box = drawing.paint_label_stroke(self.labels, (p0[0] + 0.5, p0[1] + 0.5), (p1[0] + 0.5, p1[1] + 0.5),
                                         self.brush_size / 2.0, self._paint_class())
        if box is not None:
            self._refresh(box)

    def hover(self, pos: QPointF) -> None:
        if self.tool not in ("brush", "eraser"):
            self.cursor_outline.hide()
            return
        r = self.brush_size / 2.0
        x, y = math.floor(pos.x()) + 0.5, math.floor(pos.y()) + 0.5
        self.cursor_outline.setRect(QRectF(x - r, y - r, 2 * r, 2 * r))
        self.cursor_outline.show()

    def set_opacity(self, opacity: float) -> None:
        self.opacity = min(max(opacity, 0.0), 1.0)
        self._refresh()

    def _push_if_changed(self, text: str, before: np.ndarray) -> None:
        if not np.array_equal(before, self.labels):
            self.push(text, self.set_labels, before, self.labels.copy())

    # --- widgets -------------------------------------------------------------------
    def _add_guides(self) -> None:
        outline = QPen(QColor("#ffffff"), 1.0, Qt.PenStyle.DashLine)
        outline.setCosmetic(True)
        self.cursor_outline = QGraphicsEllipseItem()
        self.cursor_outline.setPen(outline)
        self.cursor_outline.setBrush(QBrush(QColor(0, 0, 0, 40)))
        dashed = QPen(QColor("#ffb74d"), 1.5, Qt.PenStyle.DashLine)
        dashed.setCosmetic(True)
        self.rubber_rect = QGraphicsRectItem()
        self.rubber_rect.setPen(dashed)
        for item in (self.cursor_outline, self.rubber_rect):
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
            button.setSizePolicy(button.sizePolicy().Policy.Expanding, button.sizePolicy().Policy.Fixed)
            button.clicked.connect(lambda _=False, t=tool: self.select_tool(t))
            self.tool_group.addButton(button)
            self.tool_buttons[tool] = button
            grid.addWidget(button, i // 2, i % 2)
            self.shortcut(TOOL_KEYS[tool], lambda t=tool: self.select_tool(t))
        self.panel.addLayout(grid)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(1, MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(self.brush_size)
        self.size_spin.valueChanged.connect(self.set_brush_size)
        self.panel.addLayout(form_row("Brush", self.size_spin))
        self.eraser_combo = QComboBox()
        for class_id in range(min(3, self.num_classes)):
            self.eraser_combo.addItem(drawing.class_names(self.num_classes)[class_id], class_id)
        self.eraser_combo.setToolTip("The class the eraser paints")
        self.eraser_combo.currentIndexChanged.connect(
            lambda i: setattr(self, "background_class", int(self.eraser_combo.itemData(i))))
        self.panel.addLayout(form_row("Eraser", self.eraser_combo))
        self._build_palette()
        self._build_file_buttons()
        self.shortcut("[", lambda: self.set_brush_size(brush_step(self.brush_size, bigger=False)))
        self.shortcut("]", lambda: self.set_brush_size(brush_step(self.brush_size, bigger=True)))

    def _build_palette(self) -> None:
        self.section("Classes")
        self.class_list = QListWidget()
        self.class_list.setIconSize(QSize(18, 18))
        for class_id, name in enumerate(drawing.class_names(self.num_classes)):
            swatch = QPixmap(18, 18)
            swatch.fill(QColor(*(int(v) for v in self.colours[class_id])))
            QListWidgetItem(QIcon(swatch), f"{class_id:>2}  {name}", self.class_list)
        self.class_list.setCurrentRow(self.current_class)
        self.class_list.currentRowChanged.connect(lambda row: row >= 0 and self.select_class(row))
        self.class_list.setMinimumHeight(260)
        self.panel.addWidget(self.class_list, 1)

    def _build_file_buttons(self) -> None:
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(round(self.opacity * 100))
        self.opacity_slider.valueChanged.connect(lambda v: self.set_opacity(v / 100.0))
        self.panel.addLayout(form_row("Opacity", self.opacity_slider))
        self.panel.addLayout(self.undo_buttons())
        self.section("File")
        grid = QGridLayout()
        grid.setSpacing(4)
        buttons = (("Import PNG...", self._ask_import),
                   ("Export indices...", lambda: self._ask_export(False)),
                   ("Export colours...", lambda: self._ask_export(True)))
        for i, (text, slot) in enumerate(buttons):
            button = QPushButton(text)
            button.clicked.connect(slot)
            grid.addWidget(button, i // 2, i % 2)
        self.panel.addLayout(grid)
