"""The graph document: nodes, links, backdrops and metadata. No Qt, no torch.

Reading and writing files lives in engine.graph_file; checking a graph against
the node registry lives in engine.validate.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    id: str  # stable string id, unique in the graph; never reused for another node
    type: str  # a node type name in the registry
    title: str = ""  # user-visible name; empty means the type's title
    params: dict[str, Any] = field(default_factory=dict)
    pos: tuple[float, float] = (0.0, 0.0)
    color: str | None = None  # "#rrggbb"
    collapsed: bool = False
    disabled: bool = False
    # Params shown as input sockets (engine.param_links): a link may end on such a param's name,
    # and its value then replaces the param's own for this node.
    param_inputs: list[str] = field(default_factory=list)


@dataclass(frozen=True, order=True)
class Link:
    src: str  # node id
    src_socket: str  # output name
    dst: str  # node id
    dst_socket: str  # input name, or the name of a param in the destination's param_inputs


@dataclass
class Backdrop:
    id: str
    title: str = ""
    rect: tuple[float, float, float, float] = (0.0, 0.0, 400.0, 300.0)  # x, y, w, h
    color: str | None = None


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    backdrops: dict[str, Backdrop] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # The folder relative file paths in params are read from: the graph file's
    # folder once loaded or saved (engine.paths); None for an unsaved graph. Not saved.
    base_dir: str | None = field(default=None, compare=False, repr=False)

    # --- queries -------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def incoming(self, node_id: str) -> dict[str, Link]:
        """{input name: link} for the links that feed node_id."""
        return {lk.dst_socket: lk for lk in self.links if lk.dst == node_id}

    def outgoing(self, node_id: str) -> list[Link]:
        return [lk for lk in self.links if lk.src == node_id]

    def find(self, id_or_title: str) -> Node | None:
        """A node by id, else the single node with that title (None if absent or ambiguous)."""
        if id_or_title in self.nodes:
            return self.nodes[id_or_title]
        matches = [n for n in self.nodes.values() if n.title == id_or_title]
        return matches[0] if len(matches) == 1 else None

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def new_id(self, prefix: str) -> str:
        """A fresh id built from prefix: "sampler", "sampler_2", ..."""
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in prefix.lower()) or "node"
        if base not in self.nodes and base not in self.backdrops:
            return base
        n = 2
        while f"{base}_{n}" in self.nodes or f"{base}_{n}" in self.backdrops:
            n += 1
        return f"{base}_{n}"

    # --- edits (the GUI wraps each in an undo command) -------------------------
    def add_node(self, node: Node) -> Node:
        if node.id in self.nodes:
            raise ValueError(f"node id {node.id!r} already exists")
        self.nodes[node.id] = node
        return node

    def remove_node(self, node_id: str) -> tuple[Node, list[Link]]:
        """Remove a node and its links; returns both so an undo can put them back."""
        node = self.nodes.pop(node_id)
        removed = [lk for lk in self.links if node_id in (lk.src, lk.dst)]
        self.links = [lk for lk in self.links if node_id not in (lk.src, lk.dst)]
        return node, removed

    def connect(self, link: Link) -> Link | None:
        """Add a link; an input takes one link, so the one it replaces is returned."""
        replaced = self.incoming(link.dst).get(link.dst_socket)
        if replaced is not None:
            self.links.remove(replaced)
        self.links.append(link)
        return replaced

    def disconnect(self, link: Link) -> None:
        self.links.remove(link)

    def copy(self) -> Graph:
        return copy.deepcopy(self)
