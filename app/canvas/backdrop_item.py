"""Backdrops (coloured, titled frames that carry their nodes) and reroute dots."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsSceneMouseEvent

from app.canvas import style
from engine.graph import Backdrop

if TYPE_CHECKING:
    from app.canvas.scene import GraphScene

TITLE_H = 32.0
HANDLE = 16.0
MIN_W, MIN_H = 120.0, 80.0


class BackdropItem(QGraphicsItem):
    def __init__(self, scene: GraphScene, backdrop: Backdrop):
        super().__init__()
        self.graph_scene = scene
        self.backdrop_id = backdrop.id
        self.carried: list[QGraphicsItem] = []
        self._resizing: QRectF | None = None  # rect at the start of a resize
        self._last_pos = QPointF()
        self.setFlags(style.MOVABLE_FLAGS)
        self.setZValue(-10)
        self.refresh(backdrop)

    def refresh(self, backdrop: Backdrop) -> None:
        self.prepareGeometryChange()
        self.backdrop = backdrop
        x, y, w, h = backdrop.rect
        self.size = (w, h)
        self._last_pos = QPointF(x, y)
        self.setPos(x, y)
        self.setToolTip(f"{backdrop.title or 'Backdrop'} — drag the title to move it with its nodes, "
                        "the corner to resize; double-click the title to rename")
        self.update()

    def rect_tuple(self) -> tuple[float, float, float, float]:
        return (self.pos().x(), self.pos().y(), self.size[0], self.size[1])

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, *self.size)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        color = QColor(self.backdrop.color or style.BACKDROP_DEFAULT)
        rect = self.boundingRect()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fill = QColor(color)
        fill.setAlpha(70)
        painter.setBrush(QBrush(fill))
        painter.setPen(QPen(style.SELECTED if self.isSelected() else color.lighter(120), 1.5))
        painter.drawRoundedRect(rect, 8, 8)
        painter.setBrush(QBrush(color))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.drawRoundedRect(QRectF(0, 0, rect.width(), TITLE_H), 8, 8)
        font = QFont(painter.font())
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(style.TEXT)
        title_rect = QRectF(12, 0, rect.width() - 24, TITLE_H)
        painter.drawText(title_rect, Qt.AlignmentFlag.AlignVCenter, self.backdrop.title)
        painter.setPen(QPen(color.lighter(150), 1.5))
        for i in range(3):
            off = 4 + i * 4
            w, h = rect.width(), rect.height()
            painter.drawLine(QPointF(w - off, h - 3), QPointF(w - 3, h - off))

    def _in_handle(self, pos: QPointF) -> bool:
        return pos.x() > self.size[0] - HANDLE and pos.y() > self.size[1] - HANDLE

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._in_handle(event.pos()):
            self._resizing = QRectF(self.pos().x(), self.pos().y(), *self.size)
            event.accept()
            return
        left = event.button() == Qt.MouseButton.LeftButton
        if event.pos().y() > TITLE_H and left and not self.isSelected():
            event.ignore()  # the body is canvas: a rubber band starts there
            return
        self.carried = self.graph_scene.items_inside(self)
        self._last_pos = self.pos()
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._resizing is not None:
            w = max(MIN_W, event.pos().x())
            h = max(MIN_H, event.pos().y())
            self.prepareGeometryChange()
            self.size = (w, h)
            self.update()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if self._resizing is not None:
            start = self._resizing
            self._resizing = None
            self.graph_scene.editor.set_backdrop(self.backdrop_id, "Resize backdrop", rect=self.rect_tuple())
            if self.rect_tuple()[2:] == (start.width(), start.height()):
                self.update()
            return
        super().mouseReleaseEvent(event)
        self.carried = []

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.pos().y() <= TITLE_H:
            self.graph_scene.rename_backdrop_requested.emit(self.backdrop_id)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        moving = change == QGraphicsItem.GraphicsItemChange.ItemPositionChange
        if moving and self.graph_scene.snapping_active():
            return self.graph_scene.snap(value)
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            delta = self.pos() - self._last_pos
            self._last_pos = self.pos()
            for item in self.carried:
                if not item.isSelected():
                    item.setPos(item.pos() + delta)
        return super().itemChange(change, value)


class RerouteItem(QGraphicsItem):
    """A dot a link passes through, to tidy long links."""

    RADIUS = 6.0

    def __init__(self, scene: GraphScene, key: str, index: int, pos: QPointF, type_name: str):
        super().__init__()
        self.graph_scene = scene
        self.key = key
        self.index = index
        self.type_name = type_name
        self.setFlags(style.MOVABLE_FLAGS)
        self.setZValue(2)
        self.setToolTip("Reroute dot: drag to move, Delete to remove")
        self.setPos(pos)

    def boundingRect(self) -> QRectF:
        r = self.RADIUS + 3
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        color = style.socket_color(self.type_name)
        painter.setBrush(QBrush(color))
        painter.setPen(QPen(style.SELECTED if self.isSelected() else color.darker(160), 2))
        painter.drawEllipse(QPointF(0, 0), self.RADIUS, self.RADIUS)

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self.graph_scene.reroute_moved(self)
        return super().itemChange(change, value)
