"""An overview of the whole graph in a corner of the canvas; click or drag to navigate.

It sits bottom-right. When the view is framed and nodes would lie under it, the framing leaves room
for it if it can; else the minimap moves to a corner with no node under it, and when no corner is free
it steps out of sight until the user pans or zooms (the framing's view shows every node uncovered)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from app.canvas import style

if TYPE_CHECKING:
    from app.canvas.view import GraphView

SIZE = (168, 108)
MARGIN = 12
ROOMY = (560, 420)  # the smallest canvas that shows the minimap without it covering the graph
CORNERS = ((True, True), (True, False), (False, True), (False, False))  # (right, bottom), in order of preference


class Minimap(QWidget):
    def __init__(self, view: GraphView):
        super().__init__(view)
        self.view = view
        self.setFixedSize(*SIZE)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Minimap: click or drag to move the view")
        self.wanted = True  # View > Minimap
        self.corner = CORNERS[0]
        self.tucked = False  # out of sight because every corner had nodes under it after framing
        self.drawn_world = QRectF()  # the scene rectangle the last paint showed, and how many nodes
        self.drawn_nodes = 0
        self.place()

    def set_wanted(self, on: bool) -> None:
        self.wanted, self.tucked = on, False
        self.place()

    def place(self) -> None:
        """In its corner of the canvas; hidden while the canvas is too small to spare a corner."""
        parent = self.view.viewport().geometry()
        self.move(self._rect_at(self.corner).topLeft())
        roomy = parent.width() >= ROOMY[0] and parent.height() >= ROOMY[1]
        self.setVisible(self.wanted and roomy and not self.tucked)

    def _rect_at(self, corner: tuple[bool, bool]) -> QRect:
        """Where the minimap goes in a corner, in the view's coordinates."""
        parent = self.view.viewport().geometry()
        right, bottom = corner
        x = parent.right() - SIZE[0] - MARGIN if right else parent.left() + MARGIN
        y = parent.bottom() - SIZE[1] - MARGIN if bottom else parent.top() + MARGIN
        return QRect(x, y, *SIZE)

    def area_in_viewport(self) -> QRect | None:
        """The part of the viewport the minimap covers (with its margin), or None when it is not shown."""
        if not self.isVisible():
            return None
        at = self._rect_at(self.corner).translated(-self.view.viewport().pos())
        return at.adjusted(-MARGIN, -MARGIN, MARGIN, MARGIN)

    def settle(self, nodes: list[QRect]) -> None:
        """After framing: the first corner with none of `nodes` (viewport rectangles) under it, else out of sight."""
        self.tucked = False
        self.place()
        if not self.isVisible():
            return
        offset = self.view.viewport().pos()
        free = [c for c in CORNERS if not any(n.translated(offset).intersects(self._rect_at(c)) for n in nodes)]
        self.corner = free[0] if free else CORNERS[0]
        self.tucked = not free
        self.place()

    def show_again(self) -> None:
        """The user moved the view: the minimap is wanted back, where it was."""
        if self.tucked:
            self.tucked = False
            self.place()

    def reset(self) -> None:
        self.corner, self.tucked = CORNERS[0], False
        self.place()
        self.update()

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
        self.drawn_world, self.drawn_nodes = world, len(scene.nodes)
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
