"""Edits a user makes, each pushed as one undo command (or one macro)."""
from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterable
from typing import Any

from app import commands as cmd
from app.document import MISSING, REROUTES_KEY, SEED_CONTROL_KEY, Document, link_key
from engine.errors import KilnError
from engine.graph import Backdrop, Graph, Link, Node
from engine.link_rules import link_verdict
from engine.spec import ROLE_HOLDS_LAYOUT, SEED_MAX, SocketType

CLIPBOARD_MIME = "application/x-kiln-graph"
SEED_MODES = ("fixed", "increment", "randomize")


class Editor:
    def __init__(self, doc: Document):
        self.doc = doc

    @property
    def graph(self) -> Graph:
        return self.doc.graph

    def _push(self, command: Any) -> None:
        self.doc.undo_stack.push(command)

    # --- nodes ------------------------------------------------------------------
    def add_node(self, type_name: str, pos: tuple[float, float], params: dict | None = None) -> str:
        spec = self.doc.registry[type_name]
        node_id = self.graph.new_id(type_name)
        values = spec.default_params()
        values.update(params or {})
        node = Node(id=node_id, type=type_name, params=values, pos=(float(pos[0]), float(pos[1])))
        self._push(cmd.AddNodeCommand(self.doc, node))
        return node_id

    def delete(self, node_ids: Iterable[str], backdrop_ids: Iterable[str] = ()) -> None:
        command = cmd.RemoveCommand(self.doc, node_ids, backdrop_ids)
        if command.node_ids or command.backdrop_ids:
            self._push(command)

    def rename(self, node_id: str, title: str) -> None:
        title = title.strip()
        spec = self.doc.registry.get(self.graph.nodes[node_id].type)
        if spec is not None and title == spec.title:
            title = ""  # back to the type's own name
        if title != self.graph.nodes[node_id].title:
            text = f"Rename {self.doc.node_title(node_id)} to {title or 'default'}"
            self._push(cmd.SetNodeFieldCommand(self.doc, [node_id], "title", title, text))

    def set_color(self, node_ids: Iterable[str], color: str | None) -> None:
        ids = list(node_ids)
        if ids:
            self._push(cmd.SetNodeFieldCommand(self.doc, ids, "color", color,
                                               f"Colour {len(ids)} node{'s' if len(ids) > 1 else ''}"))

    def toggle_disabled(self, node_ids: Iterable[str]) -> None:
        ids = list(node_ids)
        if not ids:
            return
        value = not all(self.graph.nodes[n].disabled for n in ids)
        verb = "Disable" if value else "Enable"
        self._push(cmd.SetNodeFieldCommand(self.doc, ids, "disabled", value,
                                           f"{verb} {len(ids)} node{'s' if len(ids) > 1 else ''}"))

    def toggle_collapsed(self, node_ids: Iterable[str]) -> None:
        ids = list(node_ids)
        if ids:
            value = not all(self.graph.nodes[n].collapsed for n in ids)
            self._push(cmd.SetNodeFieldCommand(self.doc, ids, "collapsed", value,
                                               "Collapse nodes" if value else "Expand nodes"))

    def set_param(self, node_id: str, name: str, value: Any, merge: bool = False) -> None:
        node = self.graph.nodes[node_id]
        if name in node.params and node.params[name] == value and type(node.params[name]) is type(value):
            return
        self._push(cmd.SetParamCommand(self.doc, node_id, name, value, merge=merge))

    def reset_param(self, node_id: str, name: str) -> None:
        spec = self.doc.registry[self.graph.nodes[node_id].type]
        self.set_param(node_id, name, copy.deepcopy(spec.param(name).default))

    def move(self, nodes: dict[str, tuple], backdrops: dict[str, tuple] | None = None,
             reroutes: tuple | None = None) -> None:
        nodes = {k: v for k, v in nodes.items() if tuple(v[0]) != tuple(v[1])}
        backdrops = {k: v for k, v in (backdrops or {}).items() if tuple(v[0]) != tuple(v[1])}
        if reroutes is not None and reroutes[0] == reroutes[1]:
            reroutes = None
        if nodes or backdrops or reroutes is not None:
            self._push(cmd.MoveCommand(self.doc, nodes, backdrops, reroutes))

    # --- links ----------------------------------------------------------------
    def connection_problem(self, src: str, out: str, dst: str, inp: str) -> str | None:
        """Why this link cannot be made, in one line, or None when it can (engine.link_rules decides)."""
        return link_verdict(self.graph, self.doc.registry, Link(src, out, dst, inp)).reason

    def connect(self, src: str, out: str, dst: str, inp: str) -> str | None:
        """Make the link, or return why not (nothing changes then)."""
        link = Link(src, out, dst, inp)
        verdict = link_verdict(self.graph, self.doc.registry, link)
        if verdict.allowed and verdict.replaces != link:  # the same link again changes nothing
            self._push(cmd.ConnectCommand(self.doc, link))
        return verdict.reason

    def disconnect(self, link: Link) -> None:
        if link in self.graph.links:
            self._push(cmd.DisconnectCommand(self.doc, link))

    # --- reroutes ---------------------------------------------------------------
    def add_reroute(self, link: Link, pos: tuple[float, float]) -> None:
        reroutes = copy.deepcopy(self.graph.meta.get(REROUTES_KEY, {}))
        points = reroutes.setdefault(link_key(link), [])
        points.insert(self._reroute_index(link, points, pos), [round(pos[0], 1), round(pos[1], 1)])
        self._push(cmd.SetMetaCommand(self.doc, REROUTES_KEY, reroutes, "Add reroute dot"))

    def _reroute_index(self, link: Link, points: list, pos: tuple[float, float]) -> int:
        src_x = self.graph.nodes[link.src].pos[0]
        return sum(1 for p in points if abs(p[0] - src_x) < abs(pos[0] - src_x))

    def remove_reroutes(self, dots: Iterable[tuple[str, int]]) -> None:
        reroutes = copy.deepcopy(self.graph.meta.get(REROUTES_KEY, {}))
        for key, index in sorted(dots, key=lambda d: -d[1]):
            if key in reroutes and index < len(reroutes[key]):
                del reroutes[key][index]
        reroutes = {k: v for k, v in reroutes.items() if v}
        self._push(cmd.SetMetaCommand(self.doc, REROUTES_KEY, reroutes or MISSING, "Delete reroute dot"))

    # --- seeds -----------------------------------------------------------------
    def set_seed_mode(self, node_id: str, param: str, mode: str) -> None:
        modes = copy.deepcopy(self.graph.meta.get(SEED_CONTROL_KEY, {}))
        key = f"{node_id}.{param}"
        if mode == "fixed":
            modes.pop(key, None)
        else:
            modes[key] = mode
        if modes != self.graph.meta.get(SEED_CONTROL_KEY, {}):
            self._push(cmd.SetMetaCommand(self.doc, SEED_CONTROL_KEY, modes or MISSING,
                                          f"Seed of {self.doc.node_title(node_id)}: {mode}"))

    def advance_seeds(self, rng: random.Random | None = None) -> None:
        """After a run is queued: increment or randomise the seeds set to do so."""
        changes = []
        for key, mode in self.graph.meta.get(SEED_CONTROL_KEY, {}).items():
            node_id, param = key.rsplit(".", 1)
            if node_id not in self.graph.nodes or self._is_linked_param(node_id, param):
                continue  # a seed fed by a link follows its source (a Seed node advances itself)
            value = self.doc.param_value(node_id, param)
            new = (int(value) + 1) % (SEED_MAX + 1) if mode == "increment" else \
                (rng or random).randint(0, 2**32 - 1)
            changes.append((node_id, param, new))
        if not changes:
            return
        self.doc.undo_stack.beginMacro("Advance seeds after run")
        for node_id, param, value in changes:
            self._push(cmd.SetParamCommand(self.doc, node_id, param, value))
        self.doc.undo_stack.endMacro()

    def _is_linked_param(self, node_id: str, param: str) -> bool:
        return param in self.graph.nodes[node_id].param_inputs and param in self.graph.incoming(node_id)

    def edit_boxes_in_layout_editor(self, node_id: str, boxes: list[dict], pos: tuple[float, float]) -> str:
        """A new node holding `boxes` (the type with ROLE_HOLDS_LAYOUT), wired into the node's LAYOUT input:
        one undo step."""
        from app.editors.layout_editor import params_holding

        holder = self.doc.registry.first_with_role(ROLE_HOLDS_LAYOUT)
        target = self.doc.registry[self.graph.nodes[node_id].type].input_of_type(SocketType.LAYOUT)
        source = holder.output_of_type(SocketType.LAYOUT) if holder is not None else None
        if source is None or target is None:
            raise ValueError("no node type holds boxes for this node's layout input")
        self.doc.undo_stack.beginMacro(f"Edit boxes of {self.doc.node_title(node_id)} in a {holder.title}")
        try:
            editor = self.add_node(holder.type, pos, params_holding(boxes))
            problem = self.connect(editor, source.name, node_id, target.name)
        finally:
            self.doc.undo_stack.endMacro()
        if problem is not None:
            raise ValueError(problem)
        return editor

    # --- backdrops -------------------------------------------------------------
    def add_backdrop(self, rect: tuple[float, float, float, float], title: str = "Group",
                     color: str | None = None) -> str:
        backdrop_id = self.graph.new_id("backdrop")
        backdrop = Backdrop(id=backdrop_id, title=title, rect=tuple(float(v) for v in rect), color=color)
        self._push(cmd.AddBackdropCommand(self.doc, backdrop, f"Add backdrop {title!r}"))
        return backdrop_id

    def set_backdrop(self, backdrop_id: str, text: str, **fields: Any) -> None:
        old = self.graph.backdrops[backdrop_id]
        if any(getattr(old, k) != v for k, v in fields.items()):
            self._push(cmd.SetBackdropCommand(self.doc, backdrop_id, text, **fields))

    # --- clipboard -------------------------------------------------------------
    def copy_text(self, node_ids: Iterable[str], backdrop_ids: Iterable[str] = ()) -> str:
        from engine import graph_file

        return graph_file.dumps(self.subgraph(node_ids, backdrop_ids))

    def subgraph(self, node_ids: Iterable[str], backdrop_ids: Iterable[str] = ()) -> Graph:
        ids = set(node_ids)
        sub = Graph(nodes={n: copy.deepcopy(self.graph.nodes[n]) for n in ids},
                    links=[lk for lk in self.graph.links if lk.src in ids and lk.dst in ids],
                    backdrops={b: copy.deepcopy(self.graph.backdrops[b]) for b in backdrop_ids})
        reroutes = {link_key(lk): copy.deepcopy(self.graph.meta[REROUTES_KEY][link_key(lk)])
                    for lk in sub.links if link_key(lk) in self.graph.meta.get(REROUTES_KEY, {})}
        if reroutes:
            sub.meta[REROUTES_KEY] = reroutes
        return sub

    def paste(self, text: str, at: tuple[float, float] | None = None, keep_inputs: bool = False,
              label: str = "Paste") -> list[str]:
        """Insert a copied graph (JSON) as one undo step; returns the new node ids.

        Raises KilnError when the text is not a Kiln graph."""
        from engine import graph_file

        try:
            data = json.loads(text)
        except ValueError as exc:
            raise KilnError(f"the clipboard holds no Kiln graph ({exc.msg})") from None
        pasted = graph_file.graph_from_dict(data, "clipboard")
        if not pasted.nodes and not pasted.backdrops:
            return []
        dx, dy = self._paste_offset(pasted, at)
        count = len(pasted.nodes)
        self.doc.undo_stack.beginMacro(f"{label} {count} node{'s' if count != 1 else ''}")
        try:
            id_map = self._paste_items(pasted, dx, dy)
            if keep_inputs:
                self._copy_outside_inputs(id_map)
        finally:
            self.doc.undo_stack.endMacro()
        return list(id_map.values())

    def _paste_offset(self, pasted: Graph, at: tuple[float, float] | None) -> tuple[float, float]:
        xs = [n.pos[0] for n in pasted.nodes.values()] + [b.rect[0] for b in pasted.backdrops.values()]
        ys = [n.pos[1] for n in pasted.nodes.values()] + [b.rect[1] for b in pasted.backdrops.values()]
        if at is None:
            return 40.0, 40.0
        return at[0] - min(xs), at[1] - min(ys)

    def _paste_items(self, pasted: Graph, dx: float, dy: float) -> dict[str, str]:
        id_map: dict[str, str] = {}
        for old_id, node in pasted.nodes.items():
            new = copy.deepcopy(node)
            new.id = id_map[old_id] = self.graph.new_id(node.type)
            new.pos = (node.pos[0] + dx, node.pos[1] + dy)
            self._push(cmd.AddNodeCommand(self.doc, new))
        for backdrop in pasted.backdrops.values():
            x, y, w, h = backdrop.rect
            new_id = self.graph.new_id("backdrop")
            new_bd = Backdrop(new_id, backdrop.title, (x + dx, y + dy, w, h), backdrop.color)
            self._push(cmd.AddBackdropCommand(self.doc, new_bd))
        for link in pasted.links:
            if link.src in id_map and link.dst in id_map:
                self._push(cmd.ConnectCommand(self.doc, Link(id_map[link.src], link.src_socket,
                                                             id_map[link.dst], link.dst_socket)))
        self._paste_reroutes(pasted, id_map, dx, dy)
        return id_map

    def _paste_reroutes(self, pasted: Graph, id_map: dict[str, str], dx: float, dy: float) -> None:
        copied = pasted.meta.get(REROUTES_KEY, {})
        reroutes = copy.deepcopy(self.graph.meta.get(REROUTES_KEY, {}))
        for link in pasted.links:
            if link_key(link) in copied and link.src in id_map and link.dst in id_map:
                new_link = Link(id_map[link.src], link.src_socket, id_map[link.dst], link.dst_socket)
                reroutes[link_key(new_link)] = [[x + dx, y + dy] for x, y in copied[link_key(link)]]
        if reroutes != self.graph.meta.get(REROUTES_KEY, {}):
            self._push(cmd.SetMetaCommand(self.doc, REROUTES_KEY, reroutes, "Paste reroute dots"))

    def _copy_outside_inputs(self, id_map: dict[str, str]) -> None:
        for old_id, new_id in id_map.items():
            for link in self.graph.incoming(old_id).values() if old_id in self.graph.nodes else []:
                if link.src not in id_map:
                    new_link = Link(link.src, link.src_socket, new_id, link.dst_socket)
                    self._push(cmd.ConnectCommand(self.doc, new_link))

    def duplicate(self, node_ids: Iterable[str]) -> list[str]:
        ids = [n for n in node_ids if n in self.graph.nodes]
        if not ids:
            return []
        return self.paste(self.copy_text(ids), None, keep_inputs=True, label="Duplicate")

    def cut(self, node_ids: Iterable[str], backdrop_ids: Iterable[str] = ()) -> str:
        node_ids, backdrop_ids = list(node_ids), list(backdrop_ids)
        text = self.copy_text(node_ids, backdrop_ids)
        self.doc.undo_stack.beginMacro("Cut")
        self.delete(node_ids, backdrop_ids)
        self.doc.undo_stack.endMacro()
        return text

    def group(self, rects: list[tuple[float, float, float, float]], title: str = "Group") -> str | None:
        """A backdrop around the given item rects (Ctrl+G)."""
        if not rects:
            return None
        margin, title_h = 30.0, 40.0
        x0 = min(r[0] for r in rects) - margin
        y0 = min(r[1] for r in rects) - margin - title_h
        x1 = max(r[0] + r[2] for r in rects) + margin
        y1 = max(r[1] + r[3] for r in rects) + margin
        return self.add_backdrop((x0, y0, x1 - x0, y1 - y0), title)
