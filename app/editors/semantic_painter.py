"""The semantic painter: paint a map of class ids with the palette's colours.

Tools: brush, flood fill, rectangle, and an eraser that paints the chosen background
class. The palette lists every class with its name and display colour. Import reads a
PNG of class indices or a colour-coded PNG; export writes either. Every change is one
step on the editor's undo stack. Keys: [ and ] brush size, B/F/R/E pick a tool.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QSize
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
)

from app.editors.canvas import form_row
from app.editors.raster_painter import RasterPainterDialog
from engine import drawing
from engine.errors import KilnError

TOOLS = ("brush", "fill", "rectangle", "eraser")
TOOL_KEYS = {"brush": "B", "fill": "F", "rectangle": "R", "eraser": "E"}


class SemanticPainterDialog(RasterPainterDialog):
    TITLE = "Semantic Painter"
    DRAWING_PARAM = "labels"
    NOUN = "map"
    DECODE_SOURCE = "painted label map"
    MISMATCH = "The map is {}x{}, another shape than the {}x{} canvas: not used."
    TOOLS, TOOL_KEYS = TOOLS, TOOL_KEYS
    BRUSH_DIVISOR, PICTURE_OPACITY, BLANK_OPACITY = 10, 0.6, 1.0

    def setup(self) -> None:
        self.num_classes = int(self.params.get("num_classes", drawing.NUM_SEMANTIC_CLASSES))
        self.colours = drawing.palette(self.num_classes)
        self.current_class = min(3, self.num_classes - 1)
        self.background_class = 0

    @property
    def labels(self) -> np.ndarray:
        """uint8 (H, W) class ids."""
        return self.raster

    def read_file(self, path: str) -> np.ndarray:
        return drawing.read_label_file(path, self.num_classes)

    def resized(self, raster: np.ndarray, width: int, height: int) -> np.ndarray:
        return drawing.resize_labels(raster, width, height)

    def fitted(self, raster: np.ndarray, width: int, height: int, fallback: np.ndarray) -> np.ndarray:
        unknown = drawing.first_unknown_class(raster, self.num_classes)
        if unknown is not None:
            self.status.setText(f"Class {unknown[0]} is not below num_classes {self.num_classes}: "
                                f"{unknown[3]} pixels set to class 0.")
            raster = np.where(raster >= self.num_classes, 0, raster).astype(np.uint8)
        return super().fitted(raster, width, height, fallback)

    def _refresh(self, box: tuple[int, int, int, int] | None = None) -> None:
        h, w = self.labels.shape
        x0, y0, x1, y1 = box or (0, 0, w, h)
        region = self.overlay.rgba[y0:y1, x0:x1]
        region[..., :3] = self.colours[self.labels[y0:y1, x0:x1]]
        region[..., 3] = round(self.opacity * 255)
        self.overlay.changed(x0, y0, x1, y1)

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
        fitted = self.fitted(labels, w, h, self.labels.copy())
        before = self.labels.copy()
        self.set_raster(fitted)
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
    def select_class(self, class_id: int) -> None:
        self.current_class = int(class_id)
        if self.class_list.currentRow() != class_id:
            self.class_list.setCurrentRow(class_id)

    def start_stroke(self, x: int, y: int) -> None:
        if self.tool == "fill" and drawing.flood_fill(self.labels, x, y, self.current_class):
            self._refresh()

    def paint_stroke(self, c0: tuple[float, float], c1: tuple[float, float], radius: float) -> Any:
        paint = self.background_class if self.tool == "eraser" else self.current_class
        return drawing.paint_label_stroke(self.labels, c0, c1, radius, paint)

    def fill_value(self, stroke: dict[str, Any]) -> int:
        return self.current_class

    # --- widgets -------------------------------------------------------------------
    def _build_panel(self) -> None:
        self._build_tool_buttons()
        self.panel.addLayout(form_row("Brush", self._make_size_spin()))
        self.eraser_combo = QComboBox()
        for class_id in range(min(3, self.num_classes)):
            self.eraser_combo.addItem(drawing.class_names(self.num_classes)[class_id], class_id)
        self.eraser_combo.setToolTip("The class the eraser paints")
        self.eraser_combo.currentIndexChanged.connect(
            lambda i: setattr(self, "background_class", int(self.eraser_combo.itemData(i))))
        self.panel.addLayout(form_row("Eraser", self.eraser_combo))
        self._build_palette()
        self._build_file_buttons()

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
        slider = self._make_opacity_slider("How strongly the map covers the picture")
        self.panel.addLayout(form_row("Opacity", slider))
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
