"""An overview of the whole graph in a corner of the canvas; click or drag to navigate."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from app.canvas import style

if TYPE_CHECKING:
    from app.canvas.view import GraphView

SIZE = (168, 108)
MARGIN = 12
ROOMY = (560, 420)  # the smallest canvas that shows the minimap without it covering the graph


class Minimap(QWidget):
    def __init__(self, view: GraphView):
        super().__init__(view)
        self.view = view
        self.setFixedSize(*SIZE)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Minimap: click or drag to move the view")
        self.wanted = True  # View > Minimap
        self.place()

    def set_wanted(self, on: bool) -> None:
        self.wanted = on
        self.place()

    def place(self) -> None:
        """Bottom-right of the canvas; hidden while the canvas is too small to spare the corner."""
        parent = self.view.viewport().geometry()
        self.move(parent.right() - SIZE[0] - MARGIN, parent.bottom() - SIZE[1] - MARGIN)
        roomy = parent.width() >= ROOMY[0] and parent.height() >= ROOMY[1]
        self.setVisible(self.wanted and roomy)

    def _world(self) -> QRectF:
        scene = self.view.graph_scene
        rect = QRectF()
        for item in [*scene.nodes.values(), *scene.backdrops.values()]:
            rect = rect.united(item.sceneBoundingRect())
        visible = self.view.mapToScene(self.view.viewport().rect()).boundingRect()
        return rect.united(visible).adjusted(-40, -40, 40, 40) if not rect.isNull() else visible

    def _mapping(self) -> tuple[QRectF, float, QPointF]:
        world = self._world()
        scale = min((SIZE[0] - 8) / max(1.0, world.width()), (SIZE[1] - 8) / max(1.0, world.height()))
        offset = QPointF((SIZE[0] - world.width() * scale) / 2, (SIZE[1] - world.height() * scale) / 2)
        return world, scale, offset

    def _to_map(self, rect: QRectF, world: QRectF, scale: float, offset: QPointF) -> QRectF:
        return QRectF((rect.x() - world.x()) * scale + offset.x(),
                      (rect.y() - world.y()) * scale + offset.y(),
                      rect.width() * scale, rect.height() * scale)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setBrush(QColor(20, 22, 25, 220))
        painter.setPen(QPen(QColor("#3a3f46"), 1))
        painter.drawRoundedRect(QRectF(0.5, 0.5, SIZE[0] - 1, SIZE[1] - 1), 6, 6)
        world, scale, offset = self._mapping()
        scene = self.view.graph_scene
        for item in scene.backdrops.values():
            color = QColor(item.backdrop.color or style.BACKDROP_DEFAULT)
            color.setAlpha(110)
            painter.fillRect(self._to_map(item.sceneBoundingRect(), world, scale, offset), color)
        for item in scene.nodes.values():
            color = QColor(item.node.color) if item.node.color else QColor("#7b8594")
            if item.state == "failed":
                color = style.FAILED
            elif item.isSelected():
                color = style.SELECTED
            painter.fillRect(self._to_map(item.sceneBoundingRect(), world, scale, offset), color)
        visible = self.view.mapToScene(self.view.viewport().rect()).boundingRect()
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor("#e0e0e0"), 1))
        painter.drawRect(self._to_map(visible, world, scale, offset))

    def _navigate(self, pos: QPointF) -> None:
        world, scale, offset = self._mapping()
        target = QPointF((pos.x() - offset.x()) / scale + world.x(),
                         (pos.y() - offset.y()) / scale + world.y())
        self.view.centerOn(target)
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._navigate(event.position())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._navigate(event.position())
