"""A node on the canvas: title bar, typed ports, inline knobs, run state and thumbnail."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsProxyWidget,
    QGraphicsSceneMouseEvent,
    QGridLayout,
    QLabel,
    QStyleOptionGraphicsItem,
    QWidget,
)

from app.canvas import style
from app.canvas.port_item import PortItem
from app.param_inputs import link_source_text, param_link
from app.param_widgets import ParamEditor, SeedEditor, make_editor
from engine import param_links
from engine.graph import Node
from engine.spec import NodeSpec, Param, ParamType

if TYPE_CHECKING:
    from app.canvas.scene import GraphScene



class NodeItem(QGraphicsItem):
    def __init__(self, scene: GraphScene, node: Node, spec: NodeSpec | None):
        super().__init__()
        self.graph_scene = scene
        self.node_id = node.id
        self.spec = spec
        self.width = style.NODE_WIDTH
        self.state = ""  # "" | queued | running | cached | done | failed
        self.progress = 0.0
        self.message = ""  # the failure, shown on hover and in the log
        self.seconds: float | None = None
        self.issue = ""  # a validation problem shown before running
        self.thumbnail: QImage | None = None
        self.editors: dict[str, ParamEditor] = {}
        self.proxy: QGraphicsProxyWidget | None = None
        self.inputs: dict[str, PortItem] = {}
        self.outputs: dict[str, PortItem] = {}
        self.setFlags(style.MOVABLE_FLAGS)
        self.setAcceptHoverEvents(True)
        self.setZValue(1)
        self._make_ports()
        self._make_inline_editors()
        self.refresh(node)
        self.setPos(QPointF(*node.pos))

    # --- construction ----------------------------------------------------------
    def _make_ports(self) -> None:
        if self.spec is None:
            return
        for inp in self.spec.inputs:
            self.inputs[inp.name] = PortItem(self, inp.name, inp.type.value, False, inp.optional, inp.help)
        for out in self.spec.outputs:
            self.outputs[out.name] = PortItem(self, out.name, out.type.value, True, False, out.help)

    def _sync_param_ports(self, node: Node) -> None:
        """Sockets for the params shown as inputs, after the node's own inputs; follows `param_inputs`."""
        spec = self.spec
        wanted = [p for name in node.param_inputs if spec is not None and (p := spec.param(name)) is not None
                  and param_links.convertible(spec, p)]
        if [n for n, port in self.inputs.items() if port.is_param] == [p.name for p in wanted]:
            return
        kept = {n: port for n, port in self.inputs.items() if port.is_param and n in {p.name for p in wanted}}
        for name, port in self.inputs.items():
            if port.is_param and name not in kept:
                if port.scene() is not None:
                    port.scene().removeItem(port)
                port.setParentItem(None)
        ports = {n: port for n, port in self.inputs.items() if not port.is_param}
        for param in wanted:
            ports[param.name] = kept.get(param.name) or self._param_port(param)
        self.inputs = ports

    def _param_port(self, param: Param) -> PortItem:
        accepts = tuple(t.value for t in param_links.accepted_types(param))
        port = PortItem(self, param.name, accepts[0], False, True, param.help, accepts=accepts, is_param=True)
        port.connected = param.name in self.graph_scene.doc.graph.incoming(self.node_id)
        return port

    def param_link_changed(self, name: str) -> None:
        """A param shown as an input got or lost its link: its widget follows."""
        editor = self.editors.get(name)
        if editor is None:
            return
        doc = self.graph_scene.doc
        link = param_link(doc, self.node_id, name) if self.node_id in doc.graph.nodes else None
        editor.setEnabled(link is None)
        linked = f"takes its value {link_source_text(doc, link)}" if link else ""
        editor.setToolTip("\n".join(t for t in (editor.param.help, linked) if t))

    def _inline_params(self) -> list:
        return [p for p in self.spec.params if p.inline] if self.spec else []

    def _make_inline_editors(self) -> None:
        params = self._inline_params()
        if not params:
            return
        if any(p.type in (ParamType.TEXT, ParamType.JSON) for p in params):
            self.width = 300.0
        panel = QWidget()
        panel.setObjectName("inlinePanel")
        panel.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        grid = QGridLayout(panel)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(3)
        for row, param in enumerate(params):
            self._add_inline_row(grid, row, param)
        panel.setFixedWidth(int(self.width - 2 * style.PADDING))
        self.proxy = QGraphicsProxyWidget(self)
        self.proxy.setWidget(panel)
        self.proxy.setZValue(3)

    def _add_inline_row(self, grid: QGridLayout, row: int, param: Any) -> None:
        label = QLabel(param.name.replace("_", " "))
        label.setObjectName("inlineLabel")
        label.setToolTip(param.help)
        editor = make_editor(param, compact=True, choices_provider=self.graph_scene.choices_provider,
                             graph_folder=lambda: self.graph_scene.doc.graph.base_dir)
        editor.setToolTip(param.help)
        editor.committed.connect(lambda value, merge, name=param.name:
                                 self.graph_scene.editor.set_param(self.node_id, name, value, merge))
        if isinstance(editor, SeedEditor):
            editor.mode_changed.connect(lambda mode, name=param.name:
                                        self.graph_scene.editor.set_seed_mode(self.node_id, name, mode))
        self.editors[param.name] = editor
        if param.type in (ParamType.TEXT, ParamType.JSON):
            grid.addWidget(label, 2 * row, 0, 1, 2)
            grid.addWidget(editor, 2 * row + 1, 0, 1, 2)
        else:
            grid.addWidget(label, 2 * row, 0)
            grid.addWidget(editor, 2 * row, 1)

    # --- model -> view ----------------------------------------------------------
    def refresh(self, node: Node) -> None:
        """Follow the model: title, colour, flags and param values."""
        self.node = node
        self.setOpacity(0.45 if node.disabled else 1.0)
        doc = self.graph_scene.doc
        self._sync_param_ports(node)
        for name, editor in self.editors.items():
            editor.set_value(doc.param_value(self.node_id, name))
            if isinstance(editor, SeedEditor):
                editor.set_mode(doc.seed_mode(self.node_id, name))
            self.param_link_changed(name)
        self._layout()
        self.update()

    def title(self) -> str:
        if self.node.title:
            return self.node.title
        return self.spec.title if self.spec else f"{self.node.type} (unknown type)"

    def _rows(self) -> int:
        return max(len(self.inputs), len(self.outputs))

    def _ports_bottom(self) -> float:
        rows = self._rows()
        return style.TITLE_HEIGHT + (rows * style.ROW_HEIGHT + style.PADDING / 2 if rows else 0)

    def _thumb_rect(self) -> QRectF | None:
        if self.thumbnail is None or self.node.collapsed:
            return None
        top = self._inline_bottom() + style.PADDING
        avail_w = self.width - 2 * style.PADDING
        tw, th = max(1, self.thumbnail.width()), max(1, self.thumbnail.height())
        scale = min(avail_w / tw, style.THUMB_MAX_HEIGHT / th)
        w, h = self.thumbnail.width() * scale, self.thumbnail.height() * scale
        return QRectF((self.width - w) / 2, top, w, h)

    def _inline_bottom(self) -> float:
        if self.proxy is None or self.node.collapsed:
            return self._ports_bottom()
        return self._ports_bottom() + 4 + self.proxy.size().height()

    def height(self) -> float:
        if self.node.collapsed:
            return style.TITLE_HEIGHT
        thumb = self._thumb_rect()
        bottom = thumb.bottom() if thumb is not None else self._inline_bottom()
        return max(bottom + style.PADDING, style.TITLE_HEIGHT + style.PADDING)

    def _layout(self) -> None:
        self.prepareGeometryChange()
        collapsed = self.node.collapsed
        for i, port in enumerate(self.inputs.values()):
            y = style.TITLE_HEIGHT / 2 if collapsed else style.TITLE_HEIGHT + style.ROW_HEIGHT * (i + 0.5) + 2
            port.setPos(0, y)
        for i, port in enumerate(self.outputs.values()):
            y = style.TITLE_HEIGHT / 2 if collapsed else style.TITLE_HEIGHT + style.ROW_HEIGHT * (i + 0.5) + 2
            port.setPos(self.width, y)
        if self.proxy is not None:
            self.proxy.setVisible(not collapsed)
            self.proxy.setPos(style.PADDING, self._ports_bottom() + 4)
        self.graph_scene.node_geometry_changed(self)

    # --- run state ---------------------------------------------------------------
    def set_state(self, state: str, message: str = "", seconds: float | None = None) -> None:
        self.state, self.message, self.seconds = state, message, seconds
        if state != "running":
            self.progress = 0.0
        self.setToolTip(f"{self.title()} failed: {message}" if state == "failed" else self._tooltip())
        self.update()

    def set_progress(self, fraction: float) -> None:
        self.state, self.progress = "running", max(0.0, min(1.0, fraction))
        self.update()

    def set_thumbnail(self, image: QImage | None) -> None:
        self.thumbnail = image
        self._layout()
        self.update()

    def set_issue(self, text: str) -> None:
        if text != self.issue:
            self.issue = text
            self.setToolTip(self._tooltip())
            self.update()

    def _tooltip(self) -> str:
        lines = [f"{self.title()}  ({self.node.type}, id {self.node_id})"]
        if self.spec is not None and self.spec.help:
            lines.append(self.spec.help)
        if self.issue:
            lines.append(f"⚠ {self.issue}")
        return "\n".join(lines)

    # --- geometry & painting ------------------------------------------------------
    def boundingRect(self) -> QRectF:
        return QRectF(-3, -3, self.width + 6, self.height() + 6)

    def shape(self) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(QRectF(0, 0, self.width, self.height()), style.CORNER, style.CORNER)
        return path

    def port_scene_pos(self, name: str, is_output: bool) -> QPointF:
        port = (self.outputs if is_output else self.inputs).get(name)
        if port is not None:
            return port.scenePos()
        x = self.width if is_output else 0.0
        return self.mapToScene(QPointF(x, style.TITLE_HEIGHT / 2))

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(0, 0, self.width, self.height())
        self._paint_body(painter, rect)
        self._paint_title(painter)
        if not self.node.collapsed:
            self._paint_port_labels(painter)
            self._paint_thumbnail(painter)
        self._paint_outline(painter, rect)

    def _paint_body(self, painter: QPainter, rect: QRectF) -> None:
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(style.NODE_BODY))
        painter.drawRoundedRect(rect, style.CORNER, style.CORNER)
        title = QPainterPath()
        title.addRoundedRect(QRectF(0, 0, self.width, style.TITLE_HEIGHT), style.CORNER, style.CORNER)
        if not self.node.collapsed:
            title.addRect(QRectF(0, style.TITLE_HEIGHT - style.CORNER, self.width, style.CORNER))
        color = QColor(self.node.color) if self.node.color else style.NODE_TITLE
        if self.spec is None:
            color = QColor("#6b2b2b")
        painter.setBrush(QBrush(color))
        painter.drawPath(title.simplified())
        if self.state == "running":
            bar = QRectF(0, style.TITLE_HEIGHT - 3, self.width * self.progress, 3)
            painter.setBrush(QBrush(style.RUNNING))
            painter.drawRect(bar)

    def _paint_title(self, painter: QPainter) -> None:
        font = QFont(painter.font())
        font.setBold(True)
        font.setStrikeOut(self.node.disabled)
        painter.setFont(font)
        badge, badge_color = self._badge()
        metrics = QFontMetricsF(font)
        badge_w = metrics.horizontalAdvance(badge) + 10 if badge else 0
        text_rect = QRectF(10, 0, self.width - 20 - badge_w, style.TITLE_HEIGHT)
        painter.setPen(style.TEXT)
        title = metrics.elidedText(self.title(), Qt.TextElideMode.ElideRight, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, title)
        if badge:
            font.setBold(False)
            font.setStrikeOut(False)
            painter.setFont(font)
            painter.setPen(badge_color)
            painter.drawText(QRectF(self.width - badge_w - 8, 0, badge_w, style.TITLE_HEIGHT),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, badge)

    def _badge(self) -> tuple[str, QColor]:
        if self.state == "running":
            return f"{int(self.progress * 100)}%", style.RUNNING
        if self.state == "failed":
            return "failed", style.FAILED
        if self.state == "done" and self.seconds is not None:
            return f"{self.seconds:.2f}s", style.DONE
        if self.state in ("queued", "cached"):
            return self.state, style.QUEUED if self.state == "queued" else style.CACHED
        if self.issue:
            return "⚠", style.SELECTED
        return "", style.TEXT

    def _paint_port_labels(self, painter: QPainter) -> None:
        font = QFont(painter.font())
        font.setBold(False)
        font.setStrikeOut(False)
        font.setPointSizeF(max(7.0, font.pointSizeF() - 0.5))
        painter.setFont(font)
        half = self.width / 2 - 14
        for port in self.inputs.values():
            painter.setPen(style.TEXT if port.connected or not port.optional else style.TEXT_DIM)
            painter.drawText(QRectF(14, port.y() - style.ROW_HEIGHT / 2, half, style.ROW_HEIGHT),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, port.name)
        for port in self.outputs.values():
            painter.setPen(style.TEXT)
            painter.drawText(QRectF(self.width / 2, port.y() - style.ROW_HEIGHT / 2, half, style.ROW_HEIGHT),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, port.name)

    def _paint_thumbnail(self, painter: QPainter) -> None:
        rect = self._thumb_rect()
        if rect is not None:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawImage(rect, self.thumbnail)

    def _paint_outline(self, painter: QPainter, rect: QRectF) -> None:
        painter.setBrush(Qt.BrushStyle.NoBrush)
        if self.state == "failed":
            pen = QPen(style.FAILED, 2.5)
        elif self.isSelected():
            pen = QPen(style.SELECTED, 2.0)
        elif self.state == "running":
            pen = QPen(style.RUNNING, 1.5)
        else:
            pen = QPen(style.NODE_BORDER, 1.0)
        painter.setPen(pen)
        painter.drawRoundedRect(rect, style.CORNER, style.CORNER)

    # --- interaction ----------------------------------------------------------------
    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: Any) -> Any:
        moving = change == QGraphicsItem.GraphicsItemChange.ItemPositionChange
        if moving and self.graph_scene.snapping_active():
            return self.graph_scene.snap(value)
        if change == QGraphicsItem.GraphicsItemChange.ItemPositionHasChanged:
            self.graph_scene.node_geometry_changed(self)
        return super().itemChange(change, value)

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.pos().y() <= style.TITLE_HEIGHT:
            self.graph_scene.rename_requested.emit(self.node_id)
        else:
            self.graph_scene.editor_requested.emit(self.node_id)
