"""The image viewer: zoom/pan (pixel exact at 100%), compare with the previous
result (side by side or swipe), save as PNG with the graph, copy, and a history
strip of recent results, each restorable with the graph that made it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QGuiApplication,
    QIcon,
    QImage,
    QMouseEvent,
    QPainter,
    QPen,
    QPixmap,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.batch_grid import BatchGrid
from app.theme import icon

HISTORY_SIZE = 40
COMPARE_MODES = ("off", "side by side", "swipe")


def to_qimage(pixels: Any) -> QImage:
    """A QImage (owning its pixels) from a uint8 (H, W, 3) numpy array."""
    import numpy as np

    array = np.ascontiguousarray(pixels, dtype=np.uint8)
    if array.ndim == 2:
        array = np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2))
    h, w = array.shape[:2]
    return QImage(array.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def wrap_rgb32(array: Any) -> QImage:
    """A QImage (owning its pixels) from a uint8 (H, W, 4) array already in Format_RGB32 byte
    order: a plain memory copy, no per-pixel conversion on the UI thread."""
    h, w = array.shape[:2]
    return QImage(array.data, w, h, 4 * w, QImage.Format.Format_RGB32).copy()


@dataclass(eq=False)  # entries are compared by identity: their fields hold numpy arrays
class ResultEntry:
    pixels: Any  # uint8 (H, W, 3)
    node_id: str
    title: str
    graph_dict: dict
    info: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    display: Any = None  # uint8 (H, W, 4) RGB32 order, prepared on the worker
    thumb: Any = None  # the same, small
    _qimage: QImage | None = None
    _thumb_image: QImage | None = None
    shared_graph: dict | None = None  # what a saved PNG records (private paths unless the user keeps absolute)

    @property
    def image(self) -> QImage:
        if self._qimage is None:
            self._qimage = wrap_rgb32(self.display) if self.display is not None else to_qimage(self.pixels)
        return self._qimage

    @property
    def thumbnail(self) -> QImage:
        if self._thumb_image is None:
            if self.thumb is not None:
                self._thumb_image = wrap_rgb32(self.thumb)
            else:
                self._thumb_image = self.image.scaled(256, 256, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation)
        return self._thumb_image


class ImageCanvas(QWidget):
    """Draws the current image, and the previous one when comparing."""

    zoom_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.image: QImage | None = None
        self.other: QImage | None = None  # the previous result, for comparing
        self.mode = "off"
        self.zoom = 1.0  # image pixels -> device pixels
        self.fit = True
        self.center = QPointF(0, 0)  # image coordinates at the widget centre
        self.swipe = 0.5
        self._drag_from: QPointF | None = None
        self._swiping = False
        self._scaled: dict[tuple[int, int, int], QImage] = {}  # (image key, w, h) -> smooth downscale
        self.setMinimumSize(160, 120)
        self.setMouseTracking(True)

    def set_images(self, image: QImage | None, other: QImage | None) -> None:
        first = self.image is None or image is None or image.size() != self.image.size()
        self.image, self.other = image, other
        if first and image is not None:
            self.center = QPointF(image.width() / 2, image.height() / 2)
        self.update()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.update()

    def _scale(self) -> float:
        """Widget (logical) pixels per image pixel."""
        if self.image is None:
            return 1.0
        if self.fit:
            panes = 2 if self.mode == "side by side" and self.other is not None else 1
            w = (self.width() - 16) / panes
            return max(0.01, min(w / self.image.width(), (self.height() - 16) / self.image.height()))
        return self.zoom / self.devicePixelRatioF()

    def actual_size(self) -> None:
        self.fit, self.zoom = False, 1.0
        self.zoom_changed.emit(self.zoom)
        self.update()

    def fit_view(self) -> None:
        self.fit = True
        if self.image is not None:
            self.center = QPointF(self.image.width() / 2, self.image.height() / 2)
        self.zoom_changed.emit(self._scale() * self.devicePixelRatioF())
        self.update()

    def _target_rect(self, pane: QRectF) -> QRectF:
        s = self._scale()
        w, h = self.image.width() * s, self.image.height() * s
        if self.fit:
            return QRectF(pane.center().x() - w / 2, pane.center().y() - h / 2, w, h)
        x = pane.center().x() - self.center.x() * s
        y = pane.center().y() - self.center.y() * s
        dpr = self.devicePixelRatioF()  # land on whole device pixels so 100% stays exact
        return QRectF(round(x * dpr) / dpr, round(y * dpr) / dpr, w, h)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#141517"))
        if self.image is None:
            painter.setPen(QColor("#7b828c"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                             "Run the graph (Ctrl+Enter) to see a picture here")
            return
        smooth = self._scale() * self.devicePixelRatioF() < 1.0  # nearest when magnifying: crisp pixels
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, smooth)
        if self.mode == "side by side" and self.other is not None:
            half = self.width() / 2
            self._draw(painter, self.other, QRectF(0, 0, half, self.height()), "previous")
            self._draw(painter, self.image, QRectF(half, 0, half, self.height()), "current")
        elif self.mode == "swipe" and self.other is not None:
            self._draw_swipe(painter)
        else:
            self._draw(painter, self.image, QRectF(self.rect()), "")

    def _draw(self, painter: QPainter, image: QImage, pane: QRectF, label: str) -> None:
        painter.save()
        painter.setClipRect(pane)
        target = self._target_rect(pane)
        painter.drawImage(target, self._for_size(image, target))
        if label:
            painter.setPen(QColor("#dfe2e6"))
            top_left = Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft
            painter.drawText(pane.adjusted(8, 6, -8, -6), top_left, label)
        painter.restore()

    def _for_size(self, image: QImage, target: QRectF) -> QImage:
        """When shrinking, a smooth downscale made once per size, so repaints stay cheap."""
        dpr = self.devicePixelRatioF()
        w, h = round(target.width() * dpr), round(target.height() * dpr)
        if w >= image.width() or h >= image.height() or w < 1 or h < 1:
            return image
        key = (image.cacheKey(), w, h)
        if key not in self._scaled:
            if len(self._scaled) > 8:
                self._scaled.clear()
            self._scaled[key] = image.scaled(w, h, Qt.AspectRatioMode.IgnoreAspectRatio,
                                             Qt.TransformationMode.SmoothTransformation)
        return self._scaled[key]

    def _draw_swipe(self, painter: QPainter) -> None:
        full = QRectF(self.rect())
        target = self._target_rect(full)
        split = target.left() + target.width() * self.swipe
        painter.save()
        painter.setClipRect(QRectF(full.left(), 0, split - full.left(), full.height()))
        painter.drawImage(target, self._for_size(self.other, target))
        painter.restore()
        painter.save()
        painter.setClipRect(QRectF(split, 0, full.right() - split, full.height()))
        painter.drawImage(target, self._for_size(self.image, target))
        painter.restore()
        painter.setPen(QPen(QColor("#ffb74d"), 2))
        painter.drawLine(QPointF(split, 0), QPointF(split, self.height()))

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self.image is None:
            return
        factor = 1.25 ** (event.angleDelta().y() / 120.0)
        zoom = self._scale() * self.devicePixelRatioF()
        self.fit = False
        self.zoom = min(64.0, max(0.05, zoom * factor))
        self.zoom_changed.emit(self.zoom)
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self.mode == "swipe" and self.other is not None and event.button() == Qt.MouseButton.LeftButton:
            self._swiping = True
            self._set_swipe(event.position())
        else:
            self._drag_from = event.position()

    def _set_swipe(self, pos: QPointF) -> None:
        target = self._target_rect(QRectF(self.rect()))
        self.swipe = min(1.0, max(0.0, (pos.x() - target.left()) / max(1.0, target.width())))
        self.update()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._swiping:
            self._set_swipe(event.position())
        elif self._drag_from is not None and self.image is not None:
            if self.fit:
                self.zoom, self.fit = self._scale() * self.devicePixelRatioF(), False
            delta = (event.position() - self._drag_from) / self._scale()
            self._drag_from = event.position()
            self.center -= delta
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag_from, self._swiping = None, False


class Viewer(QWidget):
    restore_requested = Signal(object)  # ResultEntry
    save_requested = Signal(object)  # ResultEntry
    message = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.current: ResultEntry | None = None
        self.previous: ResultEntry | None = None
        self.canvas = ImageCanvas()
        self.grid = BatchGrid()  # a batch's pictures side by side, instead of the canvas
        self.batch: list[ResultEntry] = []  # the last batch shown as a grid
        self.caption = QLabel("")
        self.caption.setObjectName("helpText")
        # a long title must not widen the dock: the caption takes the room there is (full text as tooltip)
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.history = QListWidget()
        self._build()

    def _build(self) -> None:
        bar = QHBoxLayout()
        bar.setContentsMargins(6, 4, 6, 0)
        self.fit_button = _tool("frame", "Fit the picture in the viewer", self.canvas.fit_view)
        self.actual_button = _tool(None, "100%: one picture pixel per screen pixel", self.canvas.actual_size,
                                   "1:1")
        self.compare = QComboBox()
        self.compare.addItems([f"compare: {m}" for m in COMPARE_MODES])
        self.compare.setToolTip("Compare with the previous result")
        self.compare.currentIndexChanged.connect(lambda i: self.canvas.set_mode(COMPARE_MODES[i]))
        self.save_button = _tool("save", "Save as PNG (the graph is embedded)", self._save)
        self.copy_button = _tool("copy", "Copy the picture to the clipboard", self.copy_to_clipboard)
        self.grid_button = _tool("grid", "Show the whole batch as a grid", self._on_grid_button)
        self.grid_button.setCheckable(True)
        self.grid_button.hide()
        self.grid.chosen.connect(self.show_entry)
        for w in (self.grid_button, self.fit_button, self.actual_button, self.compare):
            bar.addWidget(w)
        bar.addWidget(self.caption, 1)
        bar.addWidget(self.save_button)
        bar.addWidget(self.copy_button)
        self.history.setViewMode(QListWidget.ViewMode.IconMode)
        self.history.setFlow(QListWidget.Flow.LeftToRight)
        self.history.setWrapping(False)
        self.history.setIconSize(QSize(72, 72))
        self.history.setFixedHeight(96)
        self.history.setMovement(QListWidget.Movement.Static)
        self.history.setToolTip("Recent results: click to view; double-click or right-click to restore "
                                "the graph that made one")
        self.history.itemClicked.connect(lambda item: self.show_entry(item.data(Qt.ItemDataRole.UserRole)))
        self.history.itemDoubleClicked.connect(
            lambda item: self.restore_requested.emit(item.data(Qt.ItemDataRole.UserRole)))
        self.history.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.history.customContextMenuRequested.connect(self._history_menu)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.canvas)
        self.stack.addWidget(self.grid)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.history)

    def show_entry(self, entry: ResultEntry | None, as_new: bool = False) -> None:
        """Display `entry`; with as_new the one shown before becomes the comparison."""
        if entry is None:
            return
        if as_new and self.current is not None and self.current is not entry:
            self.previous = self.current
        self.current = entry
        other = self.previous.image if self.previous is not None else None
        self.canvas.set_images(entry.image, other)
        h, w = entry.pixels.shape[:2]
        seed = entry.info.get("seed")
        self.caption.setText(f"{entry.title}  ·  {w}×{h}" + (f"  ·  seed {seed}" if seed is not None else ""))
        self.caption.setToolTip(self.caption.text())
        self._show_grid(False)

    def show_batch(self, entries: list[ResultEntry], as_new: bool = True) -> None:
        """Show a batch as a grid; a click on a cell shows that picture alone."""
        if not entries:
            return
        self.show_entry(entries[0], as_new)
        self.batch = list(entries)
        self.grid.set_entries(self.batch)
        self._show_grid(True)

    def showing_grid(self) -> bool:
        return self.stack.currentWidget() is self.grid

    def _show_grid(self, on: bool) -> None:
        in_batch = any(e is self.current for e in self.batch)
        on = on and in_batch
        self.stack.setCurrentWidget(self.grid if on else self.canvas)
        self.grid_button.setVisible(in_batch and len(self.batch) > 1)
        self.grid_button.setChecked(on)
        for widget in (self.fit_button, self.actual_button, self.compare):  # they act on one picture
            widget.setVisible(not on)
        if on:
            self.caption.setText(_batch_caption(self.batch))
            self.caption.setToolTip(self.caption.text() + "\nClick a picture to see it alone")

    def _on_grid_button(self) -> None:
        if self.grid_button.isChecked():
            self._show_grid(True)
        else:
            self.show_entry(self.current)

    def clear(self) -> None:
        """Show no picture (another graph was opened); the history strip stays, to restore from."""
        self.current = self.previous = None
        self.batch = []
        self._show_grid(False)
        self.canvas.set_images(None, None)
        self.caption.setText("")
        self.caption.setToolTip("")
        self.history.clearSelection()

    def add_result(self, entry: ResultEntry) -> None:
        self.show_entry(entry, as_new=True)
        item = QListWidgetItem(QIcon(QPixmap.fromImage(entry.thumbnail.scaled(
            72, 72, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))), "")
        item.setData(Qt.ItemDataRole.UserRole, entry)
        item.setToolTip(f"{entry.title} · {time.strftime('%H:%M:%S', time.localtime(entry.created))}"
                        + (f" · seed {entry.info['seed']}" if "seed" in entry.info else ""))
        self.history.insertItem(0, item)
        while self.history.count() > HISTORY_SIZE:
            self.history.takeItem(self.history.count() - 1)

    def entries(self) -> list[ResultEntry]:
        return [self.history.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.history.count())]

    def _history_menu(self, pos) -> None:
        item = self.history.itemAt(pos)
        if item is None:
            return
        entry = item.data(Qt.ItemDataRole.UserRole)
        menu = QMenu(self)
        menu.addAction("Restore the graph that made this", lambda: self.restore_requested.emit(entry))
        menu.addAction("Show", lambda: self.show_entry(entry))
        menu.addAction("Save as PNG…", lambda: self.save_requested.emit(entry))
        menu.exec(self.history.mapToGlobal(pos))

    def _save(self) -> None:
        if self.current is not None:
            self.save_requested.emit(self.current)

    def copy_to_clipboard(self) -> None:
        if self.current is not None:
            QGuiApplication.clipboard().setImage(self.current.image)
            self.message.emit("Picture copied to the clipboard")


def _batch_caption(batch: list[ResultEntry]) -> str:
    seeds = [e.info["seed"] for e in batch if "seed" in e.info]
    if len(seeds) == len(batch) and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        seed_text = f"  ·  seeds {seeds[0]}–{seeds[-1]}"
    else:
        seed_text = f"  ·  seeds {', '.join(map(str, seeds))}" if seeds else ""
    return f"{batch[0].title}  ·  batch of {len(batch)}{seed_text}"


def _tool(icon_name: str | None, tip: str, slot, text: str = "") -> QToolButton:
    button = QToolButton()
    if icon_name:
        button.setIcon(icon(icon_name))
    if text:
        button.setText(text)
    button.setToolTip(tip)
    button.clicked.connect(slot)
    return button
