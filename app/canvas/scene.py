"""The canvas scene: mirrors the document's graph as items and turns gestures into edits."""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene, QGraphicsSceneMouseEvent, QToolTip

from app.canvas import style
from app.canvas.backdrop_item import BackdropItem, RerouteItem
from app.canvas.link_item import DragLinkItem, LinkItem
from app.canvas.node_item import NodeItem
from app.canvas.port_item import PortItem
from app.document import REROUTES_KEY, Document, link_key
from app.editing import Editor
from engine.graph import Link


@dataclass
class PendingLink:
    """A link being dragged from one port; the other end is still loose."""

    node_id: str
    socket: str
    is_output: bool  # the fixed end is an output
    type_name: str
    detached: Link | None = None  # an existing link picked up from its input


class GraphScene(QGraphicsScene):
    rename_requested = Signal(str)
    rename_backdrop_requested = Signal(str)
    editor_requested = Signal(str)  # double-click on a node's body: open its drawing editor, if any
    refused = Signal(str)  # a link the user tried was refused: why
    search_requested = Signal(QPointF, object)  # scene position, PendingLink | None

    def __init__(self, doc: Document, editor: Editor,
                 choices_provider: Callable[[str], list[str]] | None = None):
        super().__init__()
        self.doc = doc
        self.editor = editor
        self.choices_provider = choices_provider
        self.snap_to_grid = True
        self.last_refusal = ""
        self.nodes: dict[str, NodeItem] = {}
        self.links: dict[Link, LinkItem] = {}
        self.backdrops: dict[str, BackdropItem] = {}
        self.reroutes: dict[str, list[RerouteItem]] = {}
        self.pending: PendingLink | None = None
        self._drag_item: DragLinkItem | None = None
        self._drag_start: QPointF | None = None
        self._before_move: dict[str, Any] | None = None
        self._dragging = False
        self.setSceneRect(QRectF(-50000, -50000, 100000, 100000))
        self.setItemIndexMethod(QGraphicsScene.ItemIndexMethod.NoIndex)
        self._connect_document()
        self.rebuild()

    def _connect_document(self) -> None:
        d = self.doc
        d.node_added.connect(self._on_node_added)
        d.node_removed.connect(self._on_node_removed)
        d.node_changed.connect(self._on_node_changed)
        d.node_moved.connect(self._on_node_moved)
        d.link_added.connect(self._on_link_added)
        d.link_removed.connect(self._on_link_removed)
        d.backdrop_added.connect(self._on_backdrop_added)
        d.backdrop_removed.connect(self._on_backdrop_removed)
        d.backdrop_changed.connect(lambda b: self.backdrops[b].refresh(self.doc.graph.backdrops[b]))
        d.meta_changed.connect(self._on_meta_changed)
        d.graph_reset.connect(self.rebuild)

    # --- model -> items ----------------------------------------------------------
    def rebuild(self) -> None:
        self.pending = None
        self.clear()
        self.nodes.clear()
        self.links.clear()
        self.backdrops.clear()
        self.reroutes.clear()
        graph = self.doc.graph
        for backdrop_id in graph.backdrops:
            self._on_backdrop_added(backdrop_id)
        for node_id in graph.nodes:
            self._on_node_added(node_id)
        for link in graph.links:
            self._on_link_added(link)
        self._rebuild_reroutes()

    def _on_node_added(self, node_id: str) -> None:
        node = self.doc.graph.nodes[node_id]
        item = NodeItem(self, node, self.doc.registry.get(node.type))
        self.nodes[node_id] = item
        self.addItem(item)

    def _on_node_removed(self, node_id: str) -> None:
        item = self.nodes.pop(node_id)
        self.removeItem(item)

    def _on_node_changed(self, node_id: str) -> None:
        self.nodes[node_id].refresh(self.doc.graph.nodes[node_id])

    def _on_node_moved(self, node_id: str) -> None:
        pos = QPointF(*self.doc.graph.nodes[node_id].pos)
        item = self.nodes[node_id]
        if item.pos() != pos:
            item.setPos(pos)

    def _on_link_added(self, link: Link) -> None:
        src = self.nodes.get(link.src)
        port = src.outputs.get(link.src_socket) if src else None
        item = LinkItem(self, link, port.type_name if port else "")
        self.links[link] = item
        self.addItem(item)
        self._update_link(item)
        self._update_port_flags(link)

    def _on_link_removed(self, link: Link) -> None:
        item = self.links.pop(link, None)
        if item is not None:
            self.removeItem(item)
        self._update_port_flags(link)

    def _update_port_flags(self, link: Link) -> None:
        ends = ((link.src, link.src_socket, True), (link.dst, link.dst_socket, False))
        for node_id, name, is_output in ends:
            item = self.nodes.get(node_id)
            port = (item.outputs if is_output else item.inputs).get(name) if item else None
            if port is not None:
                links = self.doc.graph.links
                port.set_connected(any((lk.src, lk.src_socket) == (node_id, name) if is_output
                                       else (lk.dst, lk.dst_socket) == (node_id, name) for lk in links))
                item.update()

    def _on_backdrop_added(self, backdrop_id: str) -> None:
        item = BackdropItem(self, self.doc.graph.backdrops[backdrop_id])
        self.backdrops[backdrop_id] = item
        self.addItem(item)

    def _on_backdrop_removed(self, backdrop_id: str) -> None:
        self.removeItem(self.backdrops.pop(backdrop_id))

    def _on_meta_changed(self, key: str) -> None:
        if key == REROUTES_KEY:
            self._rebuild_reroutes()
        elif key == "seed_control":
            for node_id, item in self.nodes.items():
                item.refresh(self.doc.graph.nodes[node_id])

    def _rebuild_reroutes(self) -> None:
        for dots in self.reroutes.values():
            for dot in dots:
                self.removeItem(dot)
        self.reroutes.clear()
        by_key = {link_key(lk): item for lk, item in self.links.items()}
        for key, points in self.doc.reroutes().items():
            link_item = by_key.get(key)
            if link_item is None:
                continue
            self.reroutes[key] = [RerouteItem(self, key, i, QPointF(x, y), link_item.type_name)
                                  for i, (x, y) in enumerate(points)]
            for dot in self.reroutes[key]:
                self.addItem(dot)
        for item in self.links.values():
            self._update_link(item)

    def _update_link(self, item: LinkItem) -> None:
        link = item.link
        src, dst = self.nodes.get(link.src), self.nodes.get(link.dst)
        if src is None or dst is None:
            return
        dots = [d.pos() for d in self.reroutes.get(link_key(link), [])]
        item.set_points([src.port_scene_pos(link.src_socket, True), *dots,
                         dst.port_scene_pos(link.dst_socket, False)])

    def node_geometry_changed(self, item: NodeItem) -> None:
        if self.nodes.get(item.node_id) is not item:
            return  # still being built
        for link, link_item in self.links.items():
            if item.node_id in (link.src, link.dst):
                self._update_link(link_item)

    def reroute_moved(self, dot: RerouteItem) -> None:
        for link, item in self.links.items():
            if link_key(link) == dot.key:
                self._update_link(item)

    # --- run state -------------------------------------------------------------------
    def set_node_state(self, node_id: str, state: str, message: str = "",
                       seconds: float | None = None) -> None:
        if node_id in self.nodes:
            self.nodes[node_id].set_state(state, message, seconds)

    def set_node_progress(self, node_id: str, fraction: float) -> None:
        if node_id in self.nodes:
            self.nodes[node_id].set_progress(fraction)

    def set_thumbnail(self, node_id: str, image: QImage | None) -> None:
        if node_id in self.nodes:
            self.nodes[node_id].set_thumbnail(image)

    def clear_run_state(self) -> None:
        for item in self.nodes.values():
            item.set_state("")

    def set_issues(self, issues: dict[str, str]) -> None:
        for node_id, item in self.nodes.items():
            item.set_issue(issues.get(node_id, ""))

    # --- selection ---------------------------------------------------------------------
    def selected_node_ids(self) -> list[str]:
        return [i.node_id for i in self.selectedItems() if isinstance(i, NodeItem)]

    def selected_backdrop_ids(self) -> list[str]:
        return [i.backdrop_id for i in self.selectedItems() if isinstance(i, BackdropItem)]

    def selected_links(self) -> list[Link]:
        return [i.link for i in self.selectedItems() if isinstance(i, LinkItem)]

    def selected_reroutes(self) -> list[tuple[str, int]]:
        return [(i.key, i.index) for i in self.selectedItems() if isinstance(i, RerouteItem)]

    def select_nodes(self, node_ids: list[str]) -> None:
        self.clearSelection()
        for node_id in node_ids:
            if node_id in self.nodes:
                self.nodes[node_id].setSelected(True)

    def items_inside(self, backdrop: BackdropItem) -> list[QGraphicsItem]:
        area = backdrop.sceneBoundingRect()
        inside: list[QGraphicsItem] = [n for n in self.nodes.values() if area.contains(n.sceneBoundingRect())]
        inside += [d for dots in self.reroutes.values() for d in dots if area.contains(d.scenePos())]
        return inside

    # --- moving ------------------------------------------------------------------------
    def snapping_active(self) -> bool:
        return self.snap_to_grid and self._dragging

    def snap(self, value: QPointF) -> QPointF:
        g = style.GRID
        return QPointF(round(value.x() / g) * g, round(value.y() / g) * g)

    def _positions(self) -> dict[str, Any]:
        return {"nodes": {n: (i.pos().x(), i.pos().y()) for n, i in self.nodes.items()},
                "backdrops": {b: i.rect_tuple() for b, i in self.backdrops.items()},
                "reroutes": self._reroute_positions()}

    def _reroute_positions(self) -> dict[str, list[list[float]]]:
        return {key: [[round(d.pos().x(), 1), round(d.pos().y(), 1)] for d in dots]
                for key, dots in self.reroutes.items()}

    def mousePressEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._before_move = self._positions()
            self._dragging = True
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QGraphicsSceneMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        self._dragging = False
        if self._before_move is not None and event.button() == Qt.MouseButton.LeftButton:
            before, self._before_move = self._before_move, None
            moved = [n for n, p in before["nodes"].items() if n in self.nodes
                     and (self.nodes[n].pos().x(), self.nodes[n].pos().y()) != p]
            link = self._link_to_insert_into(moved[0]) if len(moved) == 1 else None
            if link is None:
                self.commit_moves(before)
                return
            self.doc.undo_stack.beginMacro(f"Insert {self.nodes[moved[0]].title()} into a link")
            self.commit_moves(before)
            self._insert_into(moved[0], link)
            self.doc.undo_stack.endMacro()

    def _link_to_insert_into(self, node_id: str) -> Link | None:
        """A link the dropped node lies on and can sit in (it is unconnected and has both ends' type)."""
        graph = self.doc.graph
        if graph.incoming(node_id) or graph.outgoing(node_id):
            return None
        item = self.nodes[node_id]
        for other in self.collidingItems(item):
            if isinstance(other, LinkItem) and self._insert_sockets(node_id, other.link) is not None:
                return other.link
        return None

    def _insert_sockets(self, node_id: str, link: Link) -> tuple[str, str] | None:
        spec = self.doc.registry.get(self.doc.graph.nodes[node_id].type)
        if spec is None:
            return None
        inp = next((i.name for i in spec.inputs if self._allowed(link.src, link.src_socket, node_id, i.name)),
                   None)
        out = next((o.name for o in spec.outputs if self._allowed(node_id, o.name, link.dst, link.dst_socket)),
                   None)
        return (inp, out) if inp and out else None

    def _allowed(self, src: str, out: str, dst: str, inp: str) -> bool:
        return self.editor.connection_problem(src, out, dst, inp) is None

    def _insert_into(self, node_id: str, link: Link) -> None:
        inp, out = self._insert_sockets(node_id, link)
        self.editor.connect(link.src, link.src_socket, node_id, inp)
        self.editor.connect(node_id, out, link.dst, link.dst_socket)  # replaces the old link

    def commit_moves(self, before: dict[str, Any]) -> None:
        """Record what a drag moved as one undo step."""
        after = self._positions()
        nodes = {n: (before["nodes"][n], p) for n, p in after["nodes"].items()
                 if n in before["nodes"] and before["nodes"][n] != p}
        backdrops = {b: (before["backdrops"][b], r) for b, r in after["backdrops"].items()
                     if b in before["backdrops"] and before["backdrops"][b][:2] != r[:2]}
        reroutes = None
        if after["reroutes"] != before["reroutes"]:
            reroutes = (copy.deepcopy(self.doc.graph.meta.get(REROUTES_KEY)), after["reroutes"])
        self.editor.move(nodes, backdrops, reroutes)

    # --- connecting ----------------------------------------------------------------------
    def begin_link_drag(self, port: PortItem, pos: QPointF) -> None:
        detached = None
        if not port.is_output:
            detached = self.doc.graph.incoming(port.node_id).get(port.name)
        if detached is not None:  # pick the link up by its input end
            self.pending = PendingLink(detached.src, detached.src_socket, True, port.type_name, detached)
        else:
            self.pending = PendingLink(port.node_id, port.name, port.is_output, port.type_name)
        self._drag_item = DragLinkItem(port.type_name)
        self.addItem(self._drag_item)
        self._dim_incompatible_ports()
        self.update_link_drag(pos)

    def _fixed_pos(self) -> QPointF:
        p = self.pending
        return self.nodes[p.node_id].port_scene_pos(p.socket, p.is_output)

    def update_link_drag(self, pos: QPointF) -> None:
        if self.pending is not None and self._drag_item is not None:
            self._drag_item.set_ends(self._fixed_pos(), pos, self.pending.is_output)

    def end_link_drag(self, pos: QPointF, screen_pos: QPoint | None = None) -> None:
        """Drop the loose end: the socket under the cursor (its dot or label row) takes the link,
        replacing the link it had; on a node's body away from every row, its first compatible free socket."""
        pending = self.pending
        if pending is None:
            return
        self._finish_drag_visuals()
        target = self.port_at(pos, pending)
        if target is None:
            node = self.node_at(pos)
            if node is not None and node.node_id != pending.node_id:
                target = self._first_compatible_port(node, pending)
                if target is None:
                    side = "input" if pending.is_output else "output"
                    self.refuse(f"{node.title()} has no free {side} of type {pending.type_name}; "
                                f"drop on a socket's name to replace its link", screen_pos)
                    return
        if target is not None:
            self._drop_on_port(pending, target, screen_pos)
        elif pending.detached is not None:
            self.editor.disconnect(pending.detached)
        else:
            self.search_requested.emit(pos, pending)

    def _finish_drag_visuals(self) -> None:
        if self._drag_item is not None:
            self.removeItem(self._drag_item)
            self._drag_item = None
        for item in self.nodes.values():
            for port in [*item.inputs.values(), *item.outputs.values()]:
                port.set_dimmed(False)
        self.pending = None

    def _drop_on_port(self, pending: PendingLink, target: PortItem, screen_pos: QPoint | None) -> None:
        if target.is_output == pending.is_output:
            both = "outputs" if target.is_output else "inputs"
            self.refuse(f"connect an output to an input, not two {both}", screen_pos)
            return
        src, out, dst, inp = self._ends(pending, target)
        if pending.detached is not None and pending.detached == Link(src, out, dst, inp):
            return  # dropped back where it was
        problem = self.editor.connection_problem(src, out, dst, inp)
        if problem is not None:
            self.refuse(problem, screen_pos)
            return
        if pending.detached is not None:
            self.doc.undo_stack.beginMacro("Move link")
            self.editor.disconnect(pending.detached)
            self.editor.connect(src, out, dst, inp)
            self.doc.undo_stack.endMacro()
        else:
            self.editor.connect(src, out, dst, inp)

    @staticmethod
    def _ends(pending: PendingLink, target: PortItem) -> tuple[str, str, str, str]:
        if pending.is_output:
            return pending.node_id, pending.socket, target.node_id, target.name
        return target.node_id, target.name, pending.node_id, pending.socket

    def refuse(self, message: str, screen_pos: QPoint | None = None) -> None:
        self.last_refusal = message
        if screen_pos is not None:
            QToolTip.showText(screen_pos, f"Cannot connect: {message}")
        self.refused.emit(message)

    def port_at(self, pos: QPointF, pending: PendingLink | None = None) -> PortItem | None:
        """The socket whose dot is nearest `pos`, else the one whose label row `pos` lies on.

        While a link is dragged, rows only count on the side that can take it (inputs for an output)."""
        best, best_d = None, PortItem.HIT * 1.6
        for port in self._all_ports():
            d = (port.scenePos() - pos).manhattanLength()
            if d < best_d and not self._same_end(port, pending):
                best, best_d = port, d
        if best is not None:
            return best
        return next((port for port in self._all_ports() if self._on_label_row(port, pos)
                     and not self._same_end(port, pending)
                     and (pending is None or port.is_output != pending.is_output)), None)

    def _all_ports(self) -> list[PortItem]:
        return [port for item in self.nodes.values() for port in [*item.inputs.values(), *item.outputs.values()]]

    @staticmethod
    def _same_end(port: PortItem, pending: PendingLink | None) -> bool:
        return pending is not None and port.node_id == pending.node_id and port.is_output == pending.is_output

    @staticmethod
    def _on_label_row(port: PortItem, pos: QPointF) -> bool:
        """`pos` is on the socket's row, on its half of the node: where its name is written."""
        node = port.node_item
        if node.node.collapsed or not port.isVisible():
            return False
        local = node.mapFromScene(pos)
        half = node.width / 2
        left, right = (half, node.width + PortItem.HIT) if port.is_output else (-PortItem.HIT, half)
        top = port.y() - style.ROW_HEIGHT / 2
        return left <= local.x() <= right and top <= local.y() < top + style.ROW_HEIGHT

    def node_at(self, pos: QPointF) -> NodeItem | None:
        for item in self.items(pos):
            while item is not None and not isinstance(item, NodeItem):
                item = item.parentItem()
            if isinstance(item, NodeItem):
                return item
        return None

    def _first_compatible_port(self, node: NodeItem, pending: PendingLink) -> PortItem | None:
        """For a drop on the body: the first socket of the right type that is free (outputs always are)."""
        ports = node.inputs.values() if pending.is_output else node.outputs.values()
        return next((p for p in ports if self._fits(p, pending)
                     and (p.is_output or not p.connected)), None)

    def _dim_incompatible_ports(self) -> None:
        p = self.pending
        for item in self.nodes.values():
            for port in [*item.inputs.values(), *item.outputs.values()]:
                port.set_dimmed(not self._fits(port, p))

    def _fits(self, port: PortItem, pending: PendingLink) -> bool:
        """Whether `port` can take the loose end of `pending`: a drop there would not be refused."""
        return port.is_output != pending.is_output and self._allowed(*self._ends(pending, port))

    def add_node_from_search(self, type_name: str, pos: QPointF, pending: PendingLink | None) -> str:
        """Add a node picked in the search popup and, after a link drop, connect it: one undo step."""
        spec = self.doc.registry[type_name]
        stack = self.doc.undo_stack
        stack.beginMacro(f"Add {spec.title}" + (" and connect" if pending else ""))
        try:
            pos = self.snap(pos) if self.snap_to_grid else pos
            node_id = self.editor.add_node(type_name, (pos.x(), pos.y()))
            if pending is not None:
                self._connect_new(node_id, pending)
        finally:
            stack.endMacro()
        self.select_nodes([node_id])
        return node_id

    def _connect_new(self, node_id: str, pending: PendingLink) -> None:
        """Connect the loose end to the new node's first socket that may take it."""
        spec = self.doc.registry[self.doc.graph.nodes[node_id].type]
        if pending.is_output:
            candidates = [(pending.node_id, pending.socket, node_id, i.name) for i in spec.inputs]
        else:
            candidates = [(node_id, o.name, pending.node_id, pending.socket) for o in spec.outputs]
        ends = next((ends for ends in candidates if self._allowed(*ends)), None)
        if ends is not None:
            self.editor.connect(*ends)
