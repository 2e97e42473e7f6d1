"""The canvas view: zoom around the cursor, middle-drag pan, rubber band, framing, keys."""
from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QLineF, QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QGraphicsProxyWidget, QGraphicsView, QWidget

from app.canvas import style
from app.canvas.minimap import Minimap
from app.canvas.scene import GraphScene

TEXT_KEYS = {Qt.Key.Key_C, Qt.Key.Key_V, Qt.Key.Key_X, Qt.Key.Key_Z, Qt.Key.Key_A, Qt.Key.Key_Y}


class GraphView(QGraphicsView):
    search_requested = Signal(QPointF)  # Tab / double-click on empty canvas, in scene coordinates
    files_dropped = Signal(list)
    key_action = Signal(str)  # "delete", "disable", "rename", "frame", "help", "collapse"
    context_menu = Signal(QPointF, QPoint)  # scene position, global position

    def __init__(self, scene: GraphScene, parent: QWidget | None = None):
        super().__init__(scene, parent)
        self.graph_scene = scene
        self._pan_from: QPointF | None = None
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing
                            | QPainter.RenderHint.SmoothPixmapTransform)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.BoundingRectViewportUpdate)
        self.setDragMode(QGraphicsView.DragMode.RubberBandDrag)
        self.setRubberBandSelectionMode(Qt.ItemSelectionMode.IntersectsItemShape)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(True)
        self.setObjectName("graphView")
        self.minimap = Minimap(self)
        self.centerOn(0, 0)

    # --- zoom & pan --------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        current = self.zoom()
        target = min(style.ZOOM_MAX, max(style.ZOOM_MIN, current * factor))
        if not math.isclose(target, current):
            self.scale(target / current, target / current)
            self.minimap.update()

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self._proxy_under(event.position().toPoint()):
            super().wheelEvent(event)  # let spin boxes and text boxes scroll
            return
        steps = event.angleDelta().y() / 120.0
        self.zoom_by(1.15 ** steps)
        event.accept()

    def _proxy_under(self, pos) -> bool:
        return any(isinstance(i, QGraphicsProxyWidget) for i in self.items(pos))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton:
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.pan_by(-delta.x(), -delta.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def pan_by(self, dx: float, dy: float) -> None:
        """Scroll by dx, dy view pixels."""
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + round(dx))
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + round(dy))
        self.minimap.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.MiddleButton and self._pan_from is not None:
            self._pan_from = None
            self.viewport().unsetCursor()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and not self.items(event.position().toPoint()):
            self.search_requested.emit(self.mapToScene(event.position().toPoint()))
            return
        super().mouseDoubleClickEvent(event)

    def frame(self, selection_only: bool = True, min_zoom: float = style.ZOOM_MIN) -> None:
        """F: fit the selection (or everything) in view, within the zoom limits.

        `min_zoom` keeps text legible when a big graph is framed on opening."""
        scene = self.graph_scene
        items = scene.selectedItems() if selection_only else []
        items = items or [*scene.nodes.values(), *scene.backdrops.values()]
        if not items:
            self.resetTransform()
            self.centerOn(0, 0)
            return
        rect = QRectF()
        for item in items:
            rect = rect.united(item.sceneBoundingRect())
        rect.adjust(-60, -60, 60, 60)
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        zoom = self.zoom()
        clamped = min(style.ZOOM_MAX, max(min_zoom, style.ZOOM_MIN, min(zoom, 1.25)))
        if not math.isclose(zoom, clamped):
            self.scale(clamped / zoom, clamped / zoom)
        if clamped > zoom + 1e-9:  # too big to fit legibly: show its top-left part
            visible = self.mapToScene(self.viewport().rect()).boundingRect()
            self.centerOn(rect.left() + visible.width() / 2, rect.top() + visible.height() / 2)
        else:
            self.centerOn(rect.center())
        self.minimap.update()

    def cursor_scene_pos(self) -> QPointF:
        pos = self.mapFromGlobal(self.cursor().pos())
        if not self.viewport().rect().contains(pos):
            pos = self.viewport().rect().center()
        return self.mapToScene(pos)

    # --- keys ----------------------------------------------------------------------------
    def _editing_text(self) -> bool:
        focus = self.graph_scene.focusItem()
        return isinstance(focus, QGraphicsProxyWidget)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and self._editing_text():
            key_event: QKeyEvent = event  # typing in an inline box: keys belong to the box
            if key_event.text().isprintable() and key_event.text() or key_event.key() in TEXT_KEYS \
                    or key_event.matches(QKeySequence.StandardKey.Delete):
                event.accept()
                return True
        is_tab = event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Tab
        if is_tab and not self._editing_text():
            self.search_requested.emit(self.cursor_scene_pos())
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self._editing_text():
            super().keyPressEvent(event)
            return
        actions = {Qt.Key.Key_Delete: "delete", Qt.Key.Key_Backspace: "delete", Qt.Key.Key_D: "disable",
                   Qt.Key.Key_F2: "rename", Qt.Key.Key_F: "frame", Qt.Key.Key_Question: "help",
                   Qt.Key.Key_H: "collapse"}
        plain = event.modifiers() in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.ShiftModifier,
                                      Qt.KeyboardModifier.KeypadModifier)
        if plain and event.key() in actions:
            self.key_action.emit(actions[event.key()])
            event.accept()
            return
        super().keyPressEvent(event)

    # --- drawing -------------------------------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:
        painter.fillRect(rect, style.BACKGROUND)
        if self.zoom() < 0.25:
            return
        g = style.GRID
        minor: list[QLineF] = []
        major: list[QLineF] = []
        x = math.floor(rect.left() / g) * g
        while x < rect.right():
            (major if round(x / g) % 5 == 0 else minor).append(QLineF(x, rect.top(), x, rect.bottom()))
            x += g
        y = math.floor(rect.top() / g) * g
        while y < rect.bottom():
            (major if round(y / g) % 5 == 0 else minor).append(QLineF(rect.left(), y, rect.right(), y))
            y += g
        painter.setPen(QPen(style.GRID_MINOR, 0))
        painter.drawLines(minor)  # one call per colour: a Python call per line is what costs
        painter.setPen(QPen(style.GRID_MAJOR, 0))
        painter.drawLines(major)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.minimap.place()

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self.minimap.update()

    def contextMenuEvent(self, event) -> None:
        if self._proxy_under(event.pos()):
            super().contextMenuEvent(event)
            return
        self.context_menu.emit(self.mapToScene(event.pos()), event.globalPos())
        event.accept()

    # --- file drops ----------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event) -> None:
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.files_dropped.emit(urls)
            event.acceptProposedAction()
        else:
            super().dropEvent(event)
