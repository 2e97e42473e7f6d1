"""The ComfyUI nodes that are not one Kiln node each: Reroute and PrimitiveNode (dissolved into
the links and values they pass on), Note/MarkdownNote (backdrops), GLIGEN text-box chains (a
LayoutEditor feeding RegionalPrompts), groups (backdrops), and positions for API files.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.comfy import tables
from engine.comfy.formats import CGroup, CNode, Document, FormatError
from engine.graph import Backdrop, Graph, Link, Node

NOTE_COLOR = "#5a5a3a"


@dataclass(frozen=True)
class Origin:
    """Where an input's value comes from once reroutes are followed: a node's output, or a value."""

    node: CNode | None = None
    slot: int = 0
    value: Any = None
    has_value: bool = False


class Resolver:
    """Follows links through Reroutes and into PrimitiveNodes."""

    def __init__(self, doc: Document):
        self.doc = doc

    def origin(self, src_id: str, slot: int, depth: int = 0) -> Origin | None:
        node = self.doc.nodes[src_id]
        if depth > len(self.doc.nodes):
            raise FormatError(f"node {src_id} (Reroute) is part of a loop of reroutes")
        if node.type == tables.REROUTE:
            source = node.links.get("") or next(iter(node.links.values()), None)
            return self.origin(*source, depth=depth + 1) if source else None
        if node.type == tables.PRIMITIVE:
            values = node.widgets if isinstance(node.widgets, list) else []
            return Origin(value=values[0], has_value=True) if values else None
        return Origin(node, slot)


# --- GLIGEN text boxes ------------------------------------------------------------


@dataclass
class GligenChain:
    head: CNode  # the last GLIGENTextBoxApply: the one other nodes read
    boxes: list[dict]
    conditioning: Origin | None  # the chain's first conditioning
    clip: Origin | None


def gligen_chains(doc: Document, resolver: Resolver, size: tuple[int, int]) -> list[GligenChain]:
    """One chain per GLIGENTextBoxApply whose output some other kind of node reads (or none does)."""
    applies = {n.id: n for n in doc.nodes.values() if n.type == tables.GLIGEN_APPLY}
    read_by_apply = {_source_id(resolver, n, "conditioning_to") for n in applies.values()}
    chains = []
    for head in applies.values():
        if head.id in read_by_apply and not _read_elsewhere(doc, resolver, head.id):
            continue
        members = [head]
        while (earlier := _source_id(resolver, members[-1], "conditioning_to")) in applies:
            if len(members) > len(applies):
                raise FormatError(f"node {head.id} (GLIGENTextBoxApply) is part of a loop")
            members.append(applies[earlier])
        members.reverse()
        boxes = [_box(member, size) for member in members]
        first, clip = members[0].links.get("conditioning_to"), members[0].links.get("clip")
        chains.append(GligenChain(head, boxes, resolver.origin(*first) if first else None,
                                  resolver.origin(*clip) if clip else None))
    return chains


def _source_id(resolver: Resolver, node: CNode, name: str) -> str | None:
    link = node.links.get(name)
    found = resolver.origin(*link) if link else None
    return found.node.id if found and found.node else None


def _read_elsewhere(doc: Document, resolver: Resolver, node_id: str) -> bool:
    for node in doc.nodes.values():
        if node.type in (tables.GLIGEN_APPLY, tables.REROUTE):
            continue
        for link in node.links.values():
            found = resolver.origin(*link)
            if found and found.node and found.node.id == node_id:
                return True
    return False


def _box(node: CNode, size: tuple[int, int]) -> dict:
    names = ("text", "width", "height", "x", "y")
    if isinstance(node.widgets, list):
        values = dict(zip(names, node.widgets, strict=False))
    else:
        values = dict(node.widgets or {}) | node.values
    text = values.get("text")
    numbers: list[float] = []
    for key in names[1:]:
        value = values.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(text, str):
            raise FormatError(f"node {node.id} (GLIGENTextBoxApply) has no text, width, height, x and y")
        numbers.append(float(value))
    w, h, x, y = numbers
    W, H = size
    corners = [x / W, y / H, (x + w) / W, (y + h) / H]
    return {"label": text, "box": [round(min(max(c, 0.0), 1.0), 6) for c in corners]}


def add_gligen(graph: Graph, chain: GligenChain, kiln_id: Callable[[str], str],
               link_from: Callable[[Origin | None, str, str], Link | None]) -> None:
    """The chain as a LayoutEditor (its boxes) feeding a RegionalPrompts node with the chain's id."""
    head_id = kiln_id(chain.head.id)
    layout_id = graph.new_id(f"{head_id}_layout")
    x, y = chain.head.pos
    graph.add_node(Node(layout_id, tables.LAYOUT_TYPE, pos=(x - 260.0, y + 160.0),
                        params={"labels": "free text", "boxes": chain.boxes}))
    graph.add_node(Node(head_id, tables.REGIONAL_TYPE, title=chain.head.title, pos=(x, y),
                        params={"strength": 1.0}, color=chain.head.color, collapsed=chain.head.collapsed))
    graph.links.append(Link(layout_id, "layout", head_id, "layout"))
    for origin, name in ((chain.clip, "conditioner"), (chain.conditioning, "conditioning")):
        link = link_from(origin, head_id, name)
        if link is not None:
            graph.links.append(link)


# --- notes, groups, positions ----------------------------------------------------------


def note_backdrop(node: CNode, backdrop_id: str) -> Backdrop:
    values = node.widgets if isinstance(node.widgets, list) else list((node.widgets or {}).values())
    text = next((v for v in values if isinstance(v, str)), "")
    title = text.strip() or node.title or node.type
    w, h = node.size
    return Backdrop(backdrop_id, title, (node.pos[0], node.pos[1], max(w, 40.0), max(h, 40.0)),
                    node.color or NOTE_COLOR)


def group_backdrops(groups: list[CGroup], graph: Graph) -> None:
    for index, group in enumerate(groups, start=1):
        backdrop_id = f"group_{index}"
        if backdrop_id in graph.nodes or backdrop_id in graph.backdrops:
            backdrop_id = graph.new_id(backdrop_id)
        graph.backdrops[backdrop_id] = Backdrop(backdrop_id, group.title, group.rect, group.color)


def lay_out(graph: Graph) -> None:
    """Columns by longest path from the sources, rows in id order: for API files, which have no positions."""
    depth: dict[str, int] = {}
    feeders = {nid: [lk.src for lk in graph.links if lk.dst == nid] for nid in graph.nodes}

    def level(nid: str, seen: frozenset[str]) -> int:
        if nid not in depth:
            above = [level(src, seen | {nid}) for src in feeders[nid] if src not in seen]
            depth[nid] = 1 + max(above, default=-1)
        return depth[nid]

    rows: dict[int, int] = {}
    for nid in sorted(graph.nodes, key=id_order):
        column = level(nid, frozenset())
        graph.nodes[nid].pos = (column * 320.0, rows.get(column, 0) * 220.0)
        rows[column] = rows.get(column, 0) + 1


def id_order(node_id: str) -> tuple[int, int, str]:
    """ComfyUI's numeric ids in number order, then any others."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)
