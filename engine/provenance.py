"""The graph recorded with a picture: what SaveImage embeds, what the viewer's history keeps and
what Save Image… writes, all from `picture_graph`; `graph_of_picture` reads one back.

A picture outlives the folder of the graph that made it (it is saved elsewhere, or restored
after another graph was opened), so every file path in the recorded graph is absolute.
No Qt, no torch.
"""
from __future__ import annotations

import os

from engine import paths
from engine.graph import Graph
from engine.graph_file import graph_from_dict, graph_to_dict
from engine.spec import NodeRegistry


def picture_graph(graph: Graph, registry: NodeRegistry) -> dict:
    """The graph document to record with a picture: each file path names its file absolutely."""
    data = graph_to_dict(graph)
    for node_id, name, value in paths.path_params(graph, registry):
        data["nodes"][node_id]["params"][name] = os.path.abspath(paths.resolve(value, graph.base_dir))
    return data


def graph_of_picture(data: dict, source: str, base_dir: str | None) -> Graph:
    """A graph recorded by `picture_graph`, as it is to live in a document whose folder is `base_dir`.

    Raises GraphFileError (naming `source`) when the document is damaged."""
    graph = graph_from_dict(data, source)
    graph.base_dir = base_dir
    return graph
