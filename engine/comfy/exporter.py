"""A Kiln graph -> ComfyUI's API format (`prompt`) or UI format (`workflow`), by engine.comfy.tables.

Only graphs made of node types with a ComfyUI counterpart are written; any other node is refused,
named. Kiln's Seed/Integer/Float/Text nodes are written as the values of the widgets they feed.
Kiln params ComfyUI lacks are left out, and reported when they differ from Kiln's default. In the
UI format Kiln ids that are not numbers are renumbered and kept in each node's properties
(`kiln_id`), so that importing the file again gives the same ids; backdrops become groups. The API
format has no bypass: a disabled node is left out and the nodes it feeds take its input of the
same type.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.comfy import tables
from engine.comfy.convert import CONVERTERS, Context
from engine.comfy.special import id_order
from engine.errors import KilnError, clip, quote, quote_list
from engine.graph import Graph, Link, Node
from engine.spec import NodeRegistry

FORMATS = ("comfyui", "comfyui-workflow")  # API format, UI format
NODE_SIZE = [320.0, 120.0]
# Kiln inputs that ComfyUI's counterpart lacks and the importer puts back (no note needed).
_REBUILT_INPUTS = {("EmptyLatent", "autoencoder")}


class ExportRefused(KilnError):
    """The graph has nodes that ComfyUI has no counterpart for."""


@dataclass
class _Export:
    graph: Graph
    registry: NodeRegistry
    notes: list[str] = field(default_factory=list)
    entries: dict[str, tables.NodeMap] = field(default_factory=dict)
    ctx: Context = field(default_factory=Context)


def export(graph: Graph, registry: NodeRegistry, fmt: str) -> tuple[dict, list[str]]:
    """(the ComfyUI document, notes on what was left out). `fmt` is one of FORMATS."""
    job = _Export(graph, registry)
    refused = []
    for node in sorted(graph.nodes.values(), key=lambda n: id_order(n.id)):
        if node.type in tables.KILN_PRIMITIVES:
            continue
        entry = _entry_for(node)
        if entry is None:
            refused.append(f"{quote(node.id, 30)} ({clip(node.type, 40)})")
        else:
            job.entries[node.id] = entry
    if refused:
        raise ExportRefused(f"these nodes have no ComfyUI counterpart: {quote_list(refused, 12, str)}")
    job.ctx.size = _picture_size(graph, registry)
    return (_api(job) if fmt == "comfyui" else _ui(job)), job.notes


def _entry_for(node: Node) -> tables.NodeMap | None:
    entries = tables.BY_KILN.get(node.type, ())
    if node.type == "ImageScale" and len(entries) > 1:
        by_size = bool(node.params.get("width")) or bool(node.params.get("height"))
        return next(e for e in entries if e.comfy == ("ImageScale" if by_size else "ImageScaleBy"))
    return entries[0] if entries else None


def _picture_size(graph: Graph, registry: NodeRegistry) -> tuple[int, int]:
    sizes = {(_param(registry, n, "width"), _param(registry, n, "height"))
             for n in graph.nodes.values() if n.type == "EmptyLatent"}
    return next(iter(sizes)) if len(sizes) == 1 else (512, 512)


def _param(registry: NodeRegistry, node: Node, name: str) -> Any:
    if name in node.params:
        return node.params[name]
    spec = registry.get(node.type)
    declared = spec.param(name) if spec is not None else None
    return declared.default if declared is not None else None


def _note(job: _Export, node: Node, text: str) -> None:
    job.notes.append(f"node {quote(node.id, 30)} ({node.type}): {text}")


# --- values ---------------------------------------------------------------------------


def _widget_values(job: _Export, node: Node) -> dict[str, Any]:
    """{ComfyUI widget: value} for the node, with values from Kiln primitives fed to its params."""
    entry = job.entries[node.id]
    fed = _primitive_values(job, node)
    values: dict[str, Any] = {}
    for widget in entry.widgets:
        if widget.kiln is None:
            values[widget.comfy] = widget.default
            continue
        value = fed.get(widget.kiln, _param(job.registry, node, widget.kiln))
        values[widget.comfy] = CONVERTERS[widget.convert][1](value, job.ctx)
    _report_left_out(job, node, entry)
    return values


def _primitive_values(job: _Export, node: Node) -> dict[str, Any]:
    out = {}
    for link in job.graph.links:
        source = job.graph.nodes[link.src]
        if link.dst == node.id and source.type in tables.KILN_PRIMITIVES:
            out[link.dst_socket] = _param(job.registry, source, "value")
    return out


def _report_left_out(job: _Export, node: Node, entry: tables.NodeMap) -> None:
    used = {w.kiln for w in entry.widgets if w.kiln}
    fixed = dict(entry.fixed)
    spec = job.registry.get(node.type)
    for name, value in sorted(node.params.items()):
        if name in used:
            continue
        if name in fixed:
            if value != fixed[name]:
                _note(job, node, f"{name} {quote(value, 30)} has no ComfyUI counterpart (ComfyUI's is "
                                 f"{quote(fixed[name], 30)})")
            continue
        declared = spec.param(name) if spec is not None else None
        if declared is None or value != declared.default:
            _note(job, node, f"{name} {quote(value, 40)} has no ComfyUI counterpart; left out")


def _socket_links(job: _Export, node: Node) -> dict[str, tuple[str, int, str]]:
    """{ComfyUI input name: (source Kiln id, source slot, type)} for the node's links from mapped nodes."""
    entry = job.entries[node.id]
    out = {}
    for link in job.graph.links:
        if link.dst != node.id or job.graph.nodes[link.src].type in tables.KILN_PRIMITIVES:
            continue
        socket = next((s for s in entry.inputs if s.kiln == link.dst_socket), None)
        source = _source_slot(job, link)
        if socket is None or source is None:
            if (node.type, link.dst_socket) not in _REBUILT_INPUTS:
                _note(job, node, f"the link into {link.dst_socket!r} has no ComfyUI counterpart; left out")
            continue
        out[socket.comfy] = (link.src, source, socket.type)
    return out


def _source_slot(job: _Export, link: Link) -> int | None:
    outputs = job.entries[link.src].outputs
    return next((i for i, s in enumerate(outputs) if s.kiln == link.src_socket), None)


# --- API format -------------------------------------------------------------------------


def _api(job: _Export) -> dict:
    prompt: dict[str, Any] = {}
    for node_id, entry in job.entries.items():
        node = job.graph.nodes[node_id]
        if node.disabled:
            _note(job, node, "is disabled: the API format has no bypass, so it is left out and the nodes "
                             "after it take its input")
            continue
        inputs: dict[str, Any] = _widget_values(job, node)
        for name, (src, slot, kind) in _socket_links(job, node).items():
            found = _through_disabled(job, src, slot, kind, set())
            if found is not None:
                inputs[name] = [found[0], found[1]]
        prompt[node_id] = {"class_type": entry.comfy, "inputs": inputs,
                           "_meta": {"title": node.title or entry.display}}
    return prompt


def _through_disabled(job: _Export, src: str, slot: int, kind: str, seen: set[str]) -> tuple[str, int] | None:
    """The output that reaches an input once disabled nodes pass their input of that type through."""
    node = job.graph.nodes[src]
    if not node.disabled:
        return src, slot
    if src in seen:
        return None
    seen.add(src)
    for source, source_slot, input_kind in _socket_links(job, node).values():
        if input_kind == kind:
            return _through_disabled(job, source, source_slot, kind, seen)
    return None


# --- UI format -------------------------------------------------------------------------


def _ui(job: _Export) -> dict:
    numbers = _ui_ids(list(job.entries))
    links: list[list[Any]] = []
    nodes = [_ui_node(job, node_id, numbers, links, order) for order, node_id in enumerate(job.entries)]
    for node in nodes:
        for link in links:
            if link[1] == node["id"]:
                node["outputs"][link[2]]["links"].append(link[0])
    groups = [{"title": b.title, "bounding": list(b.rect), **({"color": b.color} if b.color else {})}
              for b in sorted(job.graph.backdrops.values(), key=lambda b: _natural(b.id))]
    document: dict[str, Any] = {
        "last_node_id": max(numbers.values(), default=0), "last_link_id": len(links),
        "nodes": nodes, "links": links, "groups": groups, "config": {}, "extra": {}, "version": 0.4}
    if job.graph.meta:
        document["extra"]["kiln_meta"] = job.graph.meta
    return document


def _natural(text: str) -> tuple:
    head, _, tail = text.rpartition("_")
    return (head, int(tail), "") if tail.isdigit() else (text, 0, text)


def _ui_ids(ids: list[str]) -> dict[str, int]:
    """Kiln ids that are all plain numbers are kept; otherwise the nodes are numbered 1, 2, ..."""
    if all(i.isdigit() and str(int(i)) == i and int(i) > 0 for i in ids):
        return {i: int(i) for i in ids}
    return {node_id: n for n, node_id in enumerate(ids, start=1)}


def _ui_node(job: _Export, node_id: str, numbers: dict[str, int], links: list[list[Any]], order: int) -> dict:
    node, entry = job.graph.nodes[node_id], job.entries[node_id]
    values = _widget_values(job, node)
    widgets_values: list[Any] = []
    for widget in entry.widgets:
        widgets_values.append(values[widget.comfy])
        if widget.seed:
            widgets_values.append("fixed")  # control_after_generate, as current ComfyUI writes it
    fed = _socket_links(job, node)
    inputs = []
    for index, socket in enumerate(entry.inputs):
        link_id = None
        if socket.comfy in fed:
            src, slot, kind = fed[socket.comfy]
            link_id = len(links) + 1
            links.append([link_id, numbers[src], slot, numbers[node_id], index, kind])
        inputs.append({"name": socket.comfy, "type": socket.type, "link": link_id})
    out: dict[str, Any] = {
        "id": numbers[node_id], "type": entry.comfy, "pos": list(node.pos), "size": list(NODE_SIZE),
        "flags": {"collapsed": True} if node.collapsed else {}, "order": order, "mode": 4 if node.disabled else 0,
        "inputs": inputs, "outputs": [{"name": s.comfy, "type": s.type, "links": [], "slot_index": i}
                                      for i, s in enumerate(entry.outputs)],
        "properties": {"Node name for S&R": entry.comfy}, "widgets_values": widgets_values}
    if str(numbers[node_id]) != node_id:
        out["properties"]["kiln_id"] = node_id
    if node.title:
        out["title"] = node.title
    if node.color:
        out["color"] = out["bgcolor"] = node.color
    return out
