"""The graph recorded with a picture: what SaveImage embeds, what the viewer's history keeps and
what Save Image… writes, all from `picture_graph`; `graph_of_picture` reads one back.

Privacy: by default (EngineSettings.absolute_paths False) a recorded file path is relative to the
graph's folder (just the file name for an unsaved graph) and the document lists each such file
with its sha256 under "files", so a shared PNG does not reveal where its files lived yet a re-run
can find (and check) them wherever they sit beside the PNG. With absolute_paths on, every path is
absolute, as the viewer's history keeps them in memory. No Qt, no torch.
"""
from __future__ import annotations

import hashlib
import os

from engine import paths
from engine.graph import Graph
from engine.graph_file import graph_from_dict, graph_to_dict
from engine.spec import NodeRegistry

FILES_KEY = "files"  # [{"node", "param", "path", "sha256"}] of a private picture graph


def picture_graph(graph: Graph, registry: NodeRegistry, absolute_paths: bool = False) -> dict:
    """The graph document to record with a picture: each file path absolute, or (private, the
    default) relative to the graph's folder with the file's content hash listed under "files"."""
    data = graph_to_dict(graph)
    files = []
    for node_id, name, value in paths.path_params(graph, registry):
        full = os.path.abspath(paths.resolve(value, graph.base_dir))
        if absolute_paths:
            data["nodes"][node_id]["params"][name] = full
            continue
        shown = _relative(full, graph.base_dir)
        data["nodes"][node_id]["params"][name] = shown
        files.append({"node": node_id, "param": name, "path": shown, "sha256": file_sha256(full)})
    if files:
        data[FILES_KEY] = files
    return data


def _relative(full: str, base_dir: str | None) -> str:
    if base_dir is None:
        return os.path.basename(full)
    try:
        return os.path.relpath(full, base_dir)
    except ValueError:  # another drive (Windows)
        return os.path.basename(full)


def file_sha256(path: str) -> str | None:
    """Hex sha256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def missing_files(data: dict, base_dir: str | None) -> list[str]:
    """One line per file a private picture graph names that is not found from `base_dir` (or whose
    content differs from the recorded hash), naming it by path and hash."""
    problems = []
    for item in data.get(FILES_KEY) or []:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            continue
        where = paths.resolve(item["path"], base_dir)
        recorded = item.get("sha256")
        label = f"{item.get('node')}.{item.get('param')}: {item['path']} (sha256 {str(recorded)[:12]})"
        found = file_sha256(where) if os.path.isfile(where) else None
        if found is None:
            problems.append(f"{label} is missing: not found at {where}")
        elif recorded and found != recorded:
            problems.append(f"{label} differs from the file at {where} (sha256 {found[:12]})")
    return problems


def graph_of_picture(data: dict, source: str, base_dir: str | None) -> Graph:
    """A graph recorded by `picture_graph`, as it is to live in a document whose folder is `base_dir`
    (relative paths of a private picture resolve from there; see `missing_files`).

    Raises GraphFileError (naming `source`) when the document is damaged."""
    graph = graph_from_dict(data, source)
    graph.base_dir = base_dir
    return graph
