"""Links as curves from an output to an input, through any reroute dots."""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPainterPathStroker, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsSceneMouseEvent

from app.canvas import style
from engine.graph import Link

if TYPE_CHECKING:
    from app.canvas.scene import GraphScene


def curve_through(points: Sequence[QPointF]) -> QPainterPath:
    """A smooth path leaving and entering every point horizontally (left to right)."""
    path = QPainterPath(points[0])
    for a, b in pairwise(points):
        dx = max(40.0, abs(b.x() - a.x()) * 0.5)
        path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
    return path


class LinkItem(QGraphicsPathItem):
    def __init__(self, scene: GraphScene, link: Link, type_name: str):
        super().__init__()
        self.graph_scene = scene
        self.link = link
        self.type_name = type_name
        self.hovered = False
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable)
        self.setAcceptHoverEvents(True)
        self.setZValue(0)
        self.setToolTip(f"{link.src}.{link.src_socket} → {link.dst}.{link.dst_socket} ({type_name})\n"
                        "Double-click to add a reroute dot")
        self._restyle()

    def set_points(self, points: Sequence[QPointF]) -> None:
        self.setPath(curve_through(points))

    def _restyle(self) -> None:
        color = QColor(style.SELECTED) if self.isSelected() else style.socket_color(self.type_name)
        width = 3.5 if (self.hovered or self.isSelected()) else 2.2
        self.setPen(QPen(color, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))

    def shape(self) -> QPainterPath:
        stroker = QPainterPathStroker()
        stroker.setWidth(12)
        return stroker.createStroke(self.path())

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        self._restyle()
        painter.setPen(self.pen())
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self.path())

    def hoverEnterEvent(self, event) -> None:
        self.hovered = True
        self.update()

    def hoverLeaveEvent(self, event) -> None:
        self.hovered = False
        self.update()

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        pos = event.scenePos()
        self.graph_scene.editor.add_reroute(self.link, (pos.x(), pos.y()))
        event.accept()


class DragLinkItem(QGraphicsPathItem):
    """The loose link that follows the mouse while connecting."""

    def __init__(self, type_name: str):
        super().__init__()
        self.setPen(QPen(style.socket_color(type_name), 2.5, Qt.PenStyle.DashLine, Qt.PenCapStyle.RoundCap))
        self.setZValue(10)

    def set_ends(self, start: QPointF, end: QPointF, from_output: bool) -> None:
        self.setPath(curve_through([start, end] if from_output else [end, start]))
