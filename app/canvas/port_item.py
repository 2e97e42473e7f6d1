"""A socket on a node: the end of a link, coloured by what travels on it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsSceneHoverEvent, QGraphicsSceneMouseEvent

from app.canvas import style

if TYPE_CHECKING:
    from app.canvas.node_item import NodeItem


class PortItem(QGraphicsItem):
    HIT = 10.0  # grab radius, larger than the drawn dot

    def __init__(self, node_item: NodeItem, name: str, type_name: str, is_output: bool,
                 optional: bool = False, help_text: str = "", accepts: tuple[str, ...] = (),
                 is_param: bool = False):
        super().__init__(node_item)
        self.node_item = node_item
        self.name = name
        self.type_name = type_name
        self.is_output = is_output
        self.optional = optional
        self.accepts = accepts or (type_name,)  # the link types it takes (an input) or gives (an output)
        self.is_param = is_param  # a param shown as an input (engine.param_links)
        self.connected = False
        self.hovered = False
        self.dimmed = False  # while dragging a link this port cannot take
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.CrossCursor)
        kind = "output" if is_output else ("optional input" if optional else "input")
        tip = f"{name}: {type_name} {kind}"
        if is_param:
            tip = (f"{name}: param shown as an input, takes {' or '.join(self.accepts)}; "
                   "unlinked, it uses its own value")
        self.setToolTip(tip + (f"\n{help_text}" if help_text else ""))
        self.setZValue(2)

    @property
    def node_id(self) -> str:
        return self.node_item.node_id

    def boundingRect(self) -> QRectF:
        return QRectF(-self.HIT, -self.HIT, 2 * self.HIT, 2 * self.HIT)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        color = style.socket_color(self.type_name)
        if self.dimmed:
            color = QColor(color.red(), color.green(), color.blue(), 60)
        radius = style.PORT_RADIUS * (1.35 if self.hovered else 1.0)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(color.darker(170), 1.5))
        fill = color if (self.connected or self.hovered) else style.NODE_BODY
        painter.setBrush(QBrush(fill))
        painter.drawEllipse(QPointF(0, 0), radius, radius)
        if not self.connected and not self.hovered:
            painter.setBrush(QBrush(color))
            painter.setPen(Qt.PenStyle.NoPen)
            painter.drawEllipse(QPointF(0, 0), radius * 0.45, radius * 0.45)

    def set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self.update()
            if self.is_param:
                self.node_item.param_link_changed(self.name)

    def set_dimmed(self, dimmed: bool) -> None:
        if dimmed != self.dimmed:
            self.dimmed = dimmed
            self.update()

    def hoverEnterEvent(self, event: QGraphicsSceneHoverEvent) -> None:
        self.hovered = True
        self.update()

    def hoverLeaveEvent(self, event: QGraphicsSceneHoverEvent) -> None:
        self.hovered = False
        self.update()

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.scene().begin_link_drag(self, event.scenePos())
            event.accept()
        else:
            event.ignore()

    def mouseMoveEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        self.scene().update_link_drag(event.scenePos())

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        self.scene().end_link_drag(event.scenePos(), event.screenPos())
