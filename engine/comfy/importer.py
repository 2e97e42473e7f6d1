"""A ComfyUI workflow (UI or API format) -> a Kiln Graph, by the table in engine.comfy.tables.

ComfyUI node ids are kept as Kiln node ids, so `--set 6.text=...` addresses node 6. Bypassed
nodes (mode 4) become disabled Kiln nodes, which pass their inputs through; muted nodes (mode 2)
become disabled too, the closest Kiln has (a muted output node writes nothing; a muted node in the
middle passes its input on rather than stopping the nodes after it), and are reported.
Everything that could not be placed is reported in the ComfyReport, never dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.choices import find_model_file, model_folders
from engine.comfy import tables
from engine.comfy.convert import CONVERTERS, SEED_CONTROLS, Context, Unplaceable
from engine.comfy.formats import API, CNode, Document, FormatError
from engine.comfy.special import (
    Origin,
    Resolver,
    add_gligen,
    gligen_chains,
    group_backdrops,
    id_order,
    lay_out,
    note_backdrop,
)
from engine.errors import Issue, clip, quote
from engine.graph import Graph, Link, Node

MISSING_PREFIX = "comfyui:"  # a lenient import keeps a node Kiln lacks as this unknown type
DEFAULT_SIZE = (512, 512)
_UNPLACED = object()


@dataclass
class ComfyReport:
    """What converting a ComfyUI file did: filled by the importer, read by the CLI and the editor."""

    kind: str = ""  # "workflow" or "prompt"; empty when the file was not a ComfyUI one
    notes: list[str] = field(default_factory=list)  # values changed or left out, nodes dropped
    issues: list[Issue] = field(default_factory=list)  # problems at nodes (a checkpoint Kiln lacks)
    missing: dict[str, list[str]] = field(default_factory=dict)  # ComfyUI type -> ids, types Kiln lacks

    @property
    def converted(self) -> bool:
        return bool(self.kind)

    def summary(self, source: str, graph: Graph) -> str:
        what = "workflow" if self.kind == "workflow" else "API prompt"
        return (f"{source}: converted from a ComfyUI {what} ({len(graph.nodes)} nodes, "
                f"{len(graph.links)} link{'' if len(graph.links) == 1 else 's'})")


class ImportRefused(Exception):
    """The workflow uses node types Kiln lacks; str() names each with its nodes."""


def missing_text(missing: dict[str, list[str]]) -> str:
    """'ControlNetLoader (node 12), ControlNetApply (nodes 14, 15)'."""
    parts = []
    for comfy_type, ids in missing.items():
        ids = sorted(ids, key=id_order)
        label = "node" if len(ids) == 1 else "nodes"
        parts.append(f"{clip(comfy_type, 60)} ({label} {', '.join(clip(i, 20) for i in ids[:8])}"
                     f"{', …' if len(ids) > 8 else ''})")
    return ", ".join(parts[:20]) + (f", … ({len(parts) - 20} more types)" if len(parts) > 20 else "")


def import_document(doc: Document, report: ComfyReport, lenient: bool = False) -> Graph:
    report.kind, report.notes, report.issues = doc.kind, [], []
    report.missing = _missing_types(doc)
    if report.missing and not lenient:
        raise ImportRefused(f"uses node types Kiln lacks: {missing_text(report.missing)}")
    return _Importer(doc, report).run()


def _missing_types(doc: Document) -> dict[str, list[str]]:
    missing: dict[str, list[str]] = {}
    for node in doc.nodes.values():
        if not tables.known(node.type):
            missing.setdefault(node.type, []).append(node.id)
    return missing


class _Importer:
    def __init__(self, doc: Document, report: ComfyReport):
        self.doc, self.report = doc, report
        self.resolver = Resolver(doc)
        self.graph = Graph()
        self.ids = _kiln_ids(doc)
        self.values: dict[str, dict[str, Any]] = {}  # ComfyUI id -> {widget: value}
        self.ctx = Context()

    def note(self, node: CNode, text: str) -> None:
        self.report.notes.append(f"node {clip(node.id, 30)} ({clip(node.type, 40)}): {text}")

    def run(self) -> Graph:
        for node in self._nodes(tables.BY_COMFY):
            self.values[node.id] = self._widget_values(node, tables.BY_COMFY[node.type])
        self.ctx.size = self._picture_size()
        for node in self.doc.nodes.values():
            self._add(node)
        for chain in gligen_chains(self.doc, self.resolver, self.ctx.size):
            add_gligen(self.graph, chain, self.ids.__getitem__, self._link_from)
        for node in self._nodes(tables.BY_COMFY):
            self._link_inputs(node, tables.BY_COMFY[node.type])
        self._link_latent_sizes()
        group_backdrops(self.doc.groups, self.graph)
        if self.doc.kind == API:
            lay_out(self.graph)
        meta = self.doc.extra.get("kiln_meta")
        self.graph.meta = dict(meta) if isinstance(meta, dict) else {}
        self.graph.links.sort()
        return self.graph

    def _nodes(self, types: Any) -> list[CNode]:
        return [n for n in sorted(self.doc.nodes.values(), key=lambda n: id_order(n.id)) if n.type in types]

    # --- widgets -> params ----------------------------------------------------------
    def _widget_values(self, node: CNode, entry: tables.NodeMap) -> dict[str, Any]:
        """{ComfyUI widget name: value} from widgets_values (UI) or the literal inputs (API)."""
        if node.widgets is None or isinstance(node.widgets, dict):
            values = dict(node.widgets or {}) | node.values
            unknown = [k for k in values if entry.widget(k) is None and entry.input(k) is None]
            if unknown:
                self.note(node, f"{', '.join(quote(k, 30) for k in unknown[:6])} not known to Kiln; ignored")
            return {k: v for k, v in values.items() if entry.widget(k) is not None}
        return self._positional(node, entry, list(node.widgets))

    def _positional(self, node: CNode, entry: tables.NodeMap, items: list[Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for widget in entry.widgets:
            if not items:
                break
            values[widget.comfy] = items.pop(0)
            if widget.seed and items and isinstance(items[0], str) and items[0] in SEED_CONTROLS:
                items.pop(0)  # control_after_generate, written by newer ComfyUI only
        if items:
            self.note(node, f"{len(items)} value(s) after its known widgets ignored: {quote(items, 60)}")
        return values

    def _params(self, node: CNode, entry: tables.NodeMap) -> dict[str, Any]:
        params: dict[str, Any] = dict(entry.fixed)
        for name, value in self.values[node.id].items():
            widget = entry.widget(name)
            if widget is None:
                continue
            if widget.kiln is None:
                if not widget.quiet and value != widget.default:
                    self.note(node, f"{name} {quote(value, 40)} has no Kiln counterpart; ignored")
                continue
            converted = self._convert(node, widget, value)
            if converted is not _UNPLACED:
                params[widget.kiln] = converted
            if widget.convert == "checkpoint":
                self._check_model_file(node, widget.kiln, params.get(widget.kiln))
        return params

    def _convert(self, node: CNode, widget: tables.Widget, value: Any) -> Any:
        self.ctx.notes = []
        try:
            converted = CONVERTERS[widget.convert][0](value, self.ctx)
        except Unplaceable as exc:
            self.note(node, f"{widget.comfy} cannot be placed ({exc}); the Kiln default is used")
            converted = _UNPLACED
        for text in self.ctx.notes:
            self.note(node, f"{widget.comfy}: {text}")
        return converted

    def _check_model_file(self, node: CNode, param: str, value: Any) -> None:
        if isinstance(value, str) and value and find_model_file(value, None) is None:
            folders = ", ".join(str(f) for f in model_folders(None))
            self.report.issues.append(Issue(
                "missing_file", f"{quote(value)} (from the ComfyUI workflow) is not in Kiln's model folders "
                f"({folders}); put the file there or choose another", node_id=self.ids[node.id], param=param))

    def _picture_size(self) -> tuple[int, int]:
        """The picture size areas are fractions of: the workflow's one EmptyLatentImage size, else 512."""
        sizes = [(v.get("width"), v.get("height")) for n, v in self.values.items()
                 if self.doc.nodes[n].type == "EmptyLatentImage"]
        if sizes and all(size == sizes[0] for size in sizes):
            w, h = sizes[0]
            if isinstance(w, int) and isinstance(h, int) and not isinstance(w, bool) and not isinstance(h, bool) \
                    and w > 0 and h > 0:
                return w, h
        uses_area = any(n.type in ("ConditioningSetArea", tables.GLIGEN_APPLY) for n in self.doc.nodes.values())
        if uses_area:
            self.report.notes.append("areas and text boxes are taken as fractions of 512x512 (the workflow "
                                     "has no single Empty Latent Image size)")
        return DEFAULT_SIZE

    # --- nodes ----------------------------------------------------------------------
    def _add(self, node: CNode) -> None:
        entry = tables.BY_COMFY.get(node.type)
        if entry is not None:
            self._add_mapped(node, entry)
        elif node.type in tables.NOTE_TYPES:
            backdrop_id = self.graph.new_id(f"note_{node.id}")
            self.graph.backdrops[backdrop_id] = note_backdrop(node, backdrop_id)
        elif node.type == tables.GLIGEN_LOADER:
            self.note(node, "dropped: Kiln applies GLIGEN text boxes through its training-free regional "
                            "prompts (Regional Prompts), which need no GLIGEN model")
        elif not tables.known(node.type):
            self._add_placeholder(node)

    def _add_mapped(self, node: CNode, entry: tables.NodeMap) -> None:
        kiln = Node(self.ids[node.id], entry.kiln, title=self._title(node, entry), params=self._params(node, entry),
                    pos=node.pos, color=node.color, collapsed=node.collapsed, disabled=node.mode in (2, 4))
        if node.mode == 2:
            self.note(node, "is muted in ComfyUI; Kiln has no mute, so it is disabled (it passes its input "
                            "on instead of stopping the nodes after it)")
        self.graph.add_node(kiln)

    def _title(self, node: CNode, entry: tables.NodeMap) -> str:
        return "" if node.title in ("", entry.display, entry.comfy) else node.title

    def _add_placeholder(self, node: CNode) -> None:
        """A node Kiln lacks (lenient import): kept, disabled and unlinked, as an unknown type the
        editor marks, holding its ComfyUI values."""
        values = node.widgets if node.widgets is not None else node.values
        self.graph.add_node(Node(self.ids[node.id], MISSING_PREFIX + node.type, title=f"Missing: {node.type}",
                                 params={"comfyui_widgets": values}, pos=node.pos, disabled=True,
                                 color="#7a2a2a"))

    # --- links ----------------------------------------------------------------------
    def _link_inputs(self, node: CNode, entry: tables.NodeMap) -> None:
        kiln_id = self.ids[node.id]
        for name, (src, slot) in node.links.items():
            origin = self.resolver.origin(src, slot)
            socket = entry.input(name)
            widget = entry.widget(node.widget_inputs.get(name, name))
            if socket is not None:
                link = self._link_from(origin, kiln_id, socket.kiln)
                if link is not None:
                    self.graph.links.append(link)
            elif widget is not None and origin is not None and origin.has_value:
                self._primitive_value(node, entry, widget, origin.value)
            elif widget is not None and origin is not None:
                self.note(node, f"input {quote(name, 30)} is fed by node {origin.node.id if origin.node else '?'}; "
                                "Kiln keeps the widget's own value")
            elif socket is None and widget is None:
                self.note(node, f"input {quote(name, 30)} is not known to Kiln; its link is left out")

    def _primitive_value(self, node: CNode, entry: tables.NodeMap, widget: tables.Widget, value: Any) -> None:
        """A PrimitiveNode's value, written into the param of the widget it feeds."""
        if widget.kiln is None:
            return
        converted = self._convert(node, widget, value)
        if converted is not _UNPLACED:
            self.graph.nodes[self.ids[node.id]].params[widget.kiln] = converted

    def _link_from(self, origin: Origin | None, dst: str, dst_socket: str) -> Link | None:
        if origin is None or origin.node is None:
            return None
        src = origin.node
        if src.type == tables.GLIGEN_APPLY:
            return Link(self.ids[src.id], "conditioning", dst, dst_socket)
        entry = tables.BY_COMFY.get(src.type)
        if entry is None:
            if not tables.known(src.type):
                self.report.notes.append(f"node {clip(dst, 30)}: input {dst_socket!r} came from node {src.id} "
                                         f"({clip(src.type, 40)}), which Kiln lacks; left unconnected")
            return None
        if origin.slot >= len(entry.outputs):
            raise FormatError(f"node {dst}: an input is linked to output slot {origin.slot} of node {src.id} "
                              f"({src.type}), which has {len(entry.outputs)}")
        return Link(self.ids[src.id], entry.outputs[origin.slot].kiln, dst, dst_socket)

    def _link_latent_sizes(self) -> None:
        """Empty Latent gets the autoencoder of the workflow's only checkpoint, so that its latent has
        that model's channels and size (ComfyUI's is always SD's 4 channels at 1/8)."""
        loaders = [n for n in self.graph.nodes.values() if n.type == "CheckpointLoader"]
        if len(loaders) != 1:
            return
        fed = {(lk.dst, lk.dst_socket) for lk in self.graph.links}
        for node in self.graph.nodes.values():
            if node.type == "EmptyLatent" and (node.id, "autoencoder") not in fed:
                self.graph.links.append(Link(loaders[0].id, "autoencoder", node.id, "autoencoder"))


def _kiln_ids(doc: Document) -> dict[str, str]:
    """ComfyUI id -> Kiln id: the same, unless the node records the Kiln id it was exported from."""
    ids = {node.id: node.id for node in doc.nodes.values()}
    wanted = {node.id: node.properties.get("kiln_id") for node in doc.nodes.values()}
    chosen = [v for v in wanted.values() if isinstance(v, str) and v]
    if len(chosen) == len(set(chosen)) and not (set(chosen) & (set(ids) - {k for k, v in wanted.items() if v})):
        ids.update({k: v for k, v in wanted.items() if isinstance(v, str) and v})
    return ids
