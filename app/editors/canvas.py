"""Shared parts of the drawing editors: a zoom/pan canvas view, an image item backed by a
numpy buffer, a snapshot undo command and the dialog frame (canvas, tool panel, OK/Cancel).

Mouse: the left button goes to the editor's tool; the middle button, or Space + left
button, pans; the wheel zooms around the pointer.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QColor,
    QImage,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QTransform,
    QUndoCommand,
    QUndoStack,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QGraphicsItem,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStyleOptionGraphicsItem,
    QVBoxLayout,
    QWidget,
)

ZOOM_LIMITS = (0.05, 64.0)
BLANK_CANVAS = "#5a5e66"  # a neutral mid grey: masks and boxes read on it
PANEL_WIDTH = 300


class Tool(Protocol):
    """What the canvas view tells its editor. Positions are scene (= image pixel) coordinates."""

    def press(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None: ...

    def drag(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None: ...

    def release(self, pos: QPointF, modifiers: Qt.KeyboardModifier) -> None: ...

    def hover(self, pos: QPointF) -> None: ...

    def key(self, event: QKeyEvent) -> bool: ...


def to_qimage(rgb: np.ndarray) -> QImage:
    """A QImage owning a copy of uint8 (H, W, 3) pixels (also accepts (H, W) or (H, W, 4))."""
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array[:, :, :3])
    h, w = array.shape[:2]
    return QImage(array.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class CanvasView(QGraphicsView):
    zoom_changed = Signal(float)

    def __init__(self, scene: QGraphicsScene, tool: Tool, parent: QWidget | None = None):
        super().__init__(scene, parent)
        self.tool = tool
        self.setMouseTracking(True)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setBackgroundBrush(QColor("#15171a"))
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self._dragging = False
        self._pan_from: QPointF | None = None
        self._space = False
        self._fitted = False

    # --- zoom -------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float) -> None:
        factor = min(max(factor, ZOOM_LIMITS[0]), ZOOM_LIMITS[1])
        self.setTransform(QTransform.fromScale(factor, factor))
        self._fitted = True
        self.zoom_changed.emit(factor)

    def fit(self) -> None:
        rect = self.sceneRect()
        if rect.isEmpty():
            return
        self.fitInView(rect.adjusted(-8, -8, 8, 8), Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True
        self.zoom_changed.emit(self.zoom())

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._fitted:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            factor = min(max(self.zoom() * 1.25 ** steps, ZOOM_LIMITS[0]), ZOOM_LIMITS[1])
            self.scale(factor / self.zoom(), factor / self.zoom())
            self.zoom_changed.emit(self.zoom())

    # --- mouse ------------------------------------------------------------
    def scene_pos(self, event: QMouseEvent) -> QPointF:
        """Sub-pixel scene position (mapToScene would round to whole view pixels first)."""
        inverse, _ = self.viewportTransform().inverted()
        return inverse.map(event.position())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._space):
            self._pan_from = event.position()
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        elif button == Qt.MouseButton.LeftButton:
            self._dragging = True
            self.tool.press(self.scene_pos(event), event.modifiers())
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - round(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - round(delta.y()))
        elif self._dragging:
            self.tool.drag(self.scene_pos(event), event.modifiers())
        else:
            self.tool.hover(self.scene_pos(event))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        pan_buttons = (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton)
        if self._pan_from is not None and event.button() in pan_buttons:
            self._pan_from = None
            self.viewport().unsetCursor()
        elif self._dragging and event.button() == Qt.MouseButton.LeftButton:
            self._dragging = False
            self.tool.release(self.scene_pos(event), event.modifiers())
        event.accept()

    # --- keys -------------------------------------------------------------
    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            event.accept()
        elif not self.tool.key(event):
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
        super().keyReleaseEvent(event)


class ArrayImageItem(QGraphicsItem):
    """An RGBA picture whose pixels are a numpy view (H, W, 4) onto its own QImage:
    write to `rgba`, then call changed(x0, y0, x1, y1) to repaint just that part."""

    def __init__(self, width: int, height: int, parent: QGraphicsItem | None = None):
        super().__init__(parent)
        self.image = QImage(width, height, QImage.Format.Format_RGBA8888)
        self.image.fill(Qt.GlobalColor.transparent)
        bits = self.image.bits()
        stride = self.image.bytesPerLine()
        self.rgba = np.frombuffer(bits, dtype=np.uint8).reshape(height, stride)[:, :4 * width].reshape(
            height, width, 4)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self.image.width(), self.image.height())

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        exposed = option.exposedRect.toAlignedRect().intersected(self.image.rect())
        if not exposed.isEmpty():
            painter.drawImage(exposed, self.image, exposed)

    def changed(self, x0: int, y0: int, x1: int, y1: int) -> None:
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))


class SnapshotCommand(QUndoCommand):
    """Undo/redo by swapping whole states (a mask array, a box list). `apply(state)` shows one.

    The change is already on screen when pushed, so the first redo does nothing.
    Commands with the same non-empty merge_key fold into one step (keyboard nudges).
    """

    def __init__(self, text: str, apply: Callable[[Any], None], before: Any, after: Any, merge_key: str = ""):
        super().__init__(text)
        self.apply = apply
        self.before = before
        self.after = after
        self.merge_key = merge_key
        self._pushed = False

    def redo(self) -> None:
        if self._pushed:
            self.apply(copy.deepcopy(self.after))
        self._pushed = True

    def undo(self) -> None:
        self.apply(copy.deepcopy(self.before))

    def id(self) -> int:
        return 0x4B494C4E if self.merge_key else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, SnapshotCommand) or other.merge_key != self.merge_key:
            return False
        self.after = other.after
        return True


class EditorDialog(QDialog):
    """The frame every editor shares: canvas on the left, tools on the right, status and
    OK/Cancel below, and its own undo stack (Ctrl+Z, Ctrl+Shift+Z / Ctrl+Y)."""

    def __init__(self, title: str, params: dict, parent: QWidget | None = None,
                 panel_width: int = PANEL_WIDTH):
        super().__init__(parent)
        self.panel_width = panel_width
        self.setWindowTitle(title)
        self.params = copy.deepcopy(dict(params))
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setUndoLimit(200)
        self.scene = QGraphicsScene(self)
        self.view = CanvasView(self.scene, self)  # the dialog is the view's Tool
        self.panel = QVBoxLayout()
        self.panel.setContentsMargins(12, 10, 12, 10)
        self.panel.setSpacing(6)
        self.status = QLabel()
        self.status.setObjectName("helpText")
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens
        self.zoom_label = QLabel()
        self.zoom_label.setObjectName("helpText")
        self.view.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f} %"))
        self._build_frame()
        self._add_undo_actions()
        self.resize(700 + panel_width, 720)

    def _build_frame(self) -> None:
        side = QWidget()
        side.setObjectName("editorPanel")
        side.setLayout(self.panel)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setFixedWidth(self.panel_width)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(0)
        body.addWidget(self.view, 1)
        body.addWidget(scroll)
        ok_cancel = QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        self.buttons = QDialogButtonBox(ok_cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        fit = QPushButton("Fit")
        fit.setToolTip("Fit the picture in the window")
        fit.clicked.connect(self.view.fit)
        actual = QPushButton("100 %")
        actual.clicked.connect(lambda: self.view.set_zoom(1.0))
        footer = QHBoxLayout()
        footer.setContentsMargins(12, 6, 12, 10)
        footer.addWidget(self.status, 1)
        footer.addWidget(self.zoom_label)
        footer.addWidget(fit)
        footer.addWidget(actual)
        footer.addSpacing(16)
        footer.addWidget(self.buttons)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addLayout(body, 1)
        outer.addLayout(footer)

    def _add_undo_actions(self) -> None:
        undo = self.undo_stack.createUndoAction(self, "Undo")
        undo.setShortcut(QKeySequence.StandardKey.Undo)
        redo = self.undo_stack.createRedoAction(self, "Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for action in (undo, redo):
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            self.addAction(action)
        self.undo_action, self.redo_action = undo, redo

    # --- helpers for subclasses ---------------------------------------------------
    def section(self, title: str) -> None:
        label = QLabel(title.upper())
        label.setObjectName("editorSection")
        label.setStyleSheet("color: #9aa1ab; font-size: 8pt; font-weight: bold; padding-top: 8px;")
        self.panel.addWidget(label)

    def shortcut(self, keys: str | list[str], slot: Callable[[], None]) -> QAction:
        action = QAction(self)
        action.setShortcuts([QKeySequence(k) for k in ([keys] if isinstance(keys, str) else keys)])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def undo_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(4)
        stack = self.undo_stack
        for text, slot, signal, enabled in (("Undo", stack.undo, stack.canUndoChanged, stack.canUndo()),
                                            ("Redo", stack.redo, stack.canRedoChanged, stack.canRedo())):
            button = QPushButton(text)
            button.setToolTip(f"{text} (Ctrl+Z)" if text == "Undo" else f"{text} (Ctrl+Shift+Z)")
            button.clicked.connect(slot)
            signal.connect(button.setEnabled)
            button.setEnabled(enabled)
            row.addWidget(button)
        return row

    def push(self, text: str, apply: Callable[[Any], None], before: Any, after: Any,
             merge_key: str = "") -> None:
        self.undo_stack.push(SnapshotCommand(text, apply, before, after, merge_key))

    def add_background(self, image: np.ndarray | None, width: int, height: int) -> None:
        """The picture to draw over, or a blank canvas of width x height."""
        if image is not None:
            pixmap = QPixmap.fromImage(to_qimage(image))
        else:
            pixmap = QPixmap(width, height)
            pixmap.fill(QColor(BLANK_CANVAS))
        self.background = QGraphicsPixmapItem(pixmap)
        self.background.setTransformationMode(Qt.TransformationMode.FastTransformation)  # crisp when zoomed
        self.scene.addItem(self.background)
        rect = QRectF(0, 0, pixmap.width(), pixmap.height())
        self.scene.setSceneRect(rect)
        edge = QPen(QColor("#4a5058"), 1.0)
        edge.setCosmetic(True)  # one screen pixel at any zoom: shows where a dark picture ends
        self.canvas_frame = self.scene.addRect(rect, edge)
        self.canvas_frame.setZValue(20)

    def canvas_size(self) -> tuple[int, int]:
        rect = self.scene.sceneRect()
        return round(rect.width()), round(rect.height())

    def set_picture(self, image: np.ndarray) -> None:
        """Put the picture to draw over under the drawing, when it arrives after the editor opened.

        A picture of another size resizes the canvas when the editor's drawing can follow
        (`resize_canvas`); otherwise it is scaled to the canvas."""
        height, width = image.shape[:2]
        if (width, height) != self.canvas_size() and self.resize_canvas(width, height):
            self.set_canvas_rect(width, height)
        pixmap = QPixmap.fromImage(to_qimage(image))
        size = self.canvas_size()
        if (pixmap.width(), pixmap.height()) != size:
            pixmap = pixmap.scaled(*size, Qt.AspectRatioMode.IgnoreAspectRatio,
                                   Qt.TransformationMode.SmoothTransformation)
        self.background.setPixmap(pixmap)
        self.picture_arrived()

    def set_canvas_rect(self, width: int, height: int) -> None:
        rect = QRectF(0, 0, width, height)
        self.scene.setSceneRect(rect)
        self.canvas_frame.setRect(rect)
        self.view.fit()

    def resize_canvas(self, width: int, height: int) -> bool:
        """Fit the drawing to a canvas of a new size; False when the editor keeps its size."""
        return False

    def picture_arrived(self) -> None:
        """The picture is now under the drawing (editors lighten their overlay)."""

    def result_params(self) -> dict:
        """The node's params with the drawing in them."""
        raise NotImplementedError("abstract: each editor (mask, layout, semantic) writes its own params")

    # --- Tool defaults ---------------------------------------------------------------
    def hover(self, pos: QPointF) -> None:
        return None

    def key(self, event: QKeyEvent) -> bool:
        return False


def form_row(label: str, widget: QWidget, label_width: int = 64) -> QHBoxLayout:
    """A caption of fixed width, then the widget stretched: the tool panel's rows line up."""
    row = QHBoxLayout()
    caption = QLabel(label)
    caption.setFixedWidth(label_width)
    row.addWidget(caption)
    row.addWidget(widget, 1)
    return row


def brush_step(size: int, bigger: bool) -> int:
    """The next brush size for ] (bigger) or [: about 25 % a step, at least one pixel."""
    return size + max(1, size // 4) if bigger else max(1, size - max(1, size // 5))
