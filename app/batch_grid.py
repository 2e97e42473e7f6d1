"""A contact sheet of a batch: every picture a run made at one node, each with its seed;
click one to see it alone."""
from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QHelpEvent, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import QToolTip, QWidget

GAP = 8  # pixels between cells and around the sheet
LABEL_HEIGHT = 18


def grid_shape(count: int, width: float, height: float) -> tuple[int, int, float]:
    """(columns, rows, picture side) that make the pictures as large as the area allows."""
    best = (1, max(1, count), -1.0)
    for columns in range(1, max(1, count) + 1):
        rows = math.ceil(count / columns)
        side = min((width - GAP) / columns - GAP, (height - GAP) / rows - GAP - LABEL_HEIGHT)
        if side > best[2]:
            best = (columns, rows, side)
    return best[0], best[1], max(1.0, best[2])


class BatchGrid(QWidget):
    chosen = Signal(object)  # ResultEntry: the cell clicked

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.entries: list[Any] = []  # ResultEntry
        self.hovered: int | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(160, 120)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def set_entries(self, entries: list[Any]) -> None:
        self.entries = list(entries)
        self.hovered = None
        self.update()

    def cell_rect(self, index: int) -> QRectF:
        """The area of cell `index`: a square for its picture, its label below; the sheet is centred."""
        columns, rows, side = grid_shape(len(self.entries), self.width(), self.height())
        step_x, step_y = side + GAP, side + LABEL_HEIGHT + GAP
        left = (self.width() - columns * step_x + GAP) / 2
        top = (self.height() - rows * step_y + GAP) / 2
        row, column = divmod(index, columns)
        return QRectF(left + column * step_x, top + row * step_y, side, side + LABEL_HEIGHT)

    def cell_at(self, pos: QPointF) -> int | None:
        return next((i for i in range(len(self.entries)) if self.cell_rect(i).contains(pos)), None)

    def describe(self, index: int) -> str:
        """The cell's tooltip: which picture it is, its seed and size."""
        entry = self.entries[index]
        h, w = entry.pixels.shape[:2]
        seed = entry.info.get("seed")
        return (f"{entry.title}, picture {index + 1} of {len(self.entries)}  ·  {w}×{h}"
                + (f"  ·  seed {seed}" if seed is not None else "") + "\nClick to see it alone")

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#141517"))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        font = QFont(painter.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        painter.setFont(font)
        for index, entry in enumerate(self.entries):
            self._paint_cell(painter, index, entry)

    def _paint_cell(self, painter: QPainter, index: int, entry: Any) -> None:
        cell = self.cell_rect(index)
        area = cell.adjusted(0, 0, 0, -LABEL_HEIGHT)
        image = entry.image
        scale = min(area.width() / image.width(), area.height() / image.height())
        w, h = image.width() * scale, image.height() * scale
        target = QRectF(area.center().x() - w / 2, area.center().y() - h / 2, w, h)
        painter.drawImage(target, image)
        if index == self.hovered:
            painter.setPen(QPen(QColor("#ffb74d"), 2))
            painter.drawRect(target.adjusted(-1, -1, 1, 1))
        seed = entry.info.get("seed")
        label = f"{index + 1}" + (f"  ·  seed {seed}" if seed is not None else "")
        painter.setPen(QColor("#dfe2e6" if index == self.hovered else "#9aa1ab"))
        painter.drawText(QRectF(cell.left(), area.bottom(), cell.width(), LABEL_HEIGHT),
                         Qt.AlignmentFlag.AlignCenter, label)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        hovered = self.cell_at(event.position())
        if hovered != self.hovered:
            self.hovered = hovered
            self.update()

    def leaveEvent(self, event) -> None:
        self.hovered = None
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        index = self.cell_at(event.position())
        if event.button() == Qt.MouseButton.LeftButton and index is not None:
            self.chosen.emit(self.entries[index])

    def event(self, event: QEvent) -> bool:
        if isinstance(event, QHelpEvent) and event.type() == QEvent.Type.ToolTip:
            index = self.cell_at(QPointF(event.pos()))
            if index is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(event.globalPos(), self.describe(index), self)
            return True
        return super().event(event)
