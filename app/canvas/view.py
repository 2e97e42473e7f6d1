"""The canvas view: zoom around the cursor, middle-drag (or Alt+drag) pan, rubber band, framing, keys.

No scrollbars, as in Nuke's node graph: the canvas is boundless; the minimap and the pan gestures move it."""
from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QLineF, QPoint, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QMouseEvent, QPainter, QPen, QTransform, QWheelEvent
from PySide6.QtWidgets import QGraphicsProxyWidget, QGraphicsView, QWidget

from app.canvas import framing, style
from app.canvas.minimap import Minimap
from app.canvas.scene import GraphScene

TEXT_KEYS = {Qt.Key.Key_C, Qt.Key.Key_V, Qt.Key.Key_X, Qt.Key.Key_Z, Qt.Key.Key_A, Qt.Key.Key_Y}
PAN_HINT = ("The graph is larger than the view: middle-drag or Alt+drag to pan, "
            "click the minimap to jump, Home to see it all")


class GraphView(QGraphicsView):
    search_requested = Signal(QPointF)  # Tab / double-click on empty canvas, in scene coordinates
    files_dropped = Signal(list, QPointF)  # local paths, scene position of the drop
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
        scene.changed.connect(self.minimap.update)  # nodes added, moved, deleted, pasted, undone
        self.centerOn(0, 0)

    # --- zoom & pan --------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        current = self.zoom()
        target = min(style.ZOOM_MAX, max(style.ZOOM_MIN, current * factor))
        if not math.isclose(target, current):
            self.scale(target / current, target / current)
            self.minimap.show_again()
            self.minimap.update()

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self._focused_widget_under(event.position().toPoint()):
            super().wheelEvent(event)  # the box being edited scrolls its value or text
            return
        steps = event.angleDelta().y() / 120.0
        self.zoom_by(1.15 ** steps)
        event.accept()

    def _focused_widget_under(self, pos: QPoint) -> bool:
        """An inline box under `pos` that has keyboard focus: the wheel is for it, not for zooming."""
        for item in self.items(pos):
            if isinstance(item, QGraphicsProxyWidget) and item.widget() is not None:
                focus = item.widget().focusWidget() if item.hasFocus() else None
                under = item.widget().childAt(item.mapFromScene(self.mapToScene(pos)).toPoint())
                if focus is None or under is None:
                    return False
                return under is focus or under.isAncestorOf(focus) or focus.isAncestorOf(under)
        return False

    def _proxy_under(self, pos) -> bool:
        return any(isinstance(i, QGraphicsProxyWidget) for i in self.items(pos))

    def _starts_pan(self, event: QMouseEvent) -> bool:
        alt_left = event.button() == Qt.MouseButton.LeftButton \
            and event.modifiers() & Qt.KeyboardModifier.AltModifier
        return event.button() == Qt.MouseButton.MiddleButton or bool(alt_left)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._starts_pan(event):
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
        self.minimap.show_again()
        self.minimap.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
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

    def reset_view(self) -> None:
        """Zoom 1, centred on the origin, the minimap back in its corner: how a new graph starts."""
        self.resetTransform()
        self.centerOn(0, 0)
        self.minimap.reset()

    def frame_for_reading(self) -> bool:
        """Frame the whole graph on opening, never smaller than legible; False when only part fits."""
        return self.frame(False, min_zoom=style.readable_zoom(self.viewport().font()))

    def frame(self, selection_only: bool = True, min_zoom: float = style.ZOOM_MIN) -> bool:
        """F: fit the selection (or everything) in view, clear of the minimap, within the zoom limits.

        Below `min_zoom` it shows the top-left part at `min_zoom` instead and returns False."""
        rect = self._framing_rect(selection_only)
        if rect is None:
            self.reset_view()
            return True
        viewport = QRectF(self.viewport().rect())
        min_zoom = min(style.ZOOM_MAX, max(min_zoom, style.ZOOM_MIN))
        zoom = framing.fit_zoom(rect, viewport)
        whole = zoom >= min_zoom
        if whole:
            self._look(zoom, framing.centre_in_area(rect, viewport, viewport, zoom))
            self._leave_room_for_minimap(rect, min_zoom)
        else:  # too big to fit legibly: show its top-left part
            self._look(min_zoom, framing.centre_on_top_left(rect, viewport, min_zoom))
        self.minimap.settle(self.node_rects())
        return whole

    def _framing_rect(self, selection_only: bool) -> QRectF | None:
        scene = self.graph_scene
        items = scene.selectedItems() if selection_only else []
        items = items or [*scene.nodes.values(), *scene.backdrops.values()]
        if not items:
            return None
        rect = QRectF()
        for item in items:
            rect = rect.united(item.sceneBoundingRect())
        m = framing.MARGIN
        return rect.adjusted(-m, -m, m, m)

    def _leave_room_for_minimap(self, rect: QRectF, min_zoom: float) -> None:
        """Nodes under the minimap: refit beside it (the larger of the two ways) if that stays legible."""
        self.minimap.show_again()
        covered = self.minimap.area_in_viewport()
        if covered is None or not any(covered.intersects(n) for n in self.node_rects()):
            return
        viewport = QRectF(self.viewport().rect())
        fits = [(framing.fit_zoom(rect, area), area) for area in framing.areas_beside(viewport, covered)]
        zoom, area = max(fits, key=lambda fit: fit[0], default=(0.0, viewport))
        if zoom >= min_zoom:
            self._look(zoom, framing.centre_in_area(rect, area, viewport, zoom))

    def _look(self, zoom: float, centre: QPointF) -> None:
        self.setTransform(QTransform.fromScale(zoom, zoom))
        self.centerOn(centre)
        self.minimap.update()

    def node_rects(self) -> list[QRect]:
        """Where the nodes are on screen, in viewport pixels."""
        return [self.mapFromScene(item.sceneBoundingRect()).boundingRect()
                for item in self.graph_scene.nodes.values()]

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
            self.files_dropped.emit(urls, self.mapToScene(event.position().toPoint()))
            event.acceptProposedAction()
        else:
            super().dropEvent(event)
