"""File paths inside graphs: relative paths belong to the graph file's folder.

A graph shared as a folder (graph.json beside sample.png) must run from any
current folder, so a relative PATH param is looked up beside the graph file
first. Old graphs whose paths were written relative to where they were run
still work: when the file is not beside the graph but exists from the current
folder, that one is used. No Qt, no torch.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from typing import Any

from engine.graph import Graph
from engine.spec import NodeRegistry, NodeSpec, ParamType


def refusal(value: str) -> str | None:
    """Why the operating system cannot use `value` as a file path (a NUL byte, a name too long),
    in the user's words; None when it can (whether or not the file exists)."""
    if "\0" in value:
        return "holds a NUL byte, which no file name can contain"
    try:
        os.stat(os.path.expanduser(value))
    except ValueError:
        return "is not a file path the system can use"
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return "is too long for a file path"
    return None


def resolve(value: str, base_dir: str | None) -> str:
    """The file a PATH param names; `base_dir` is the graph file's folder (None: unsaved)."""
    path = os.path.expanduser(value)
    if not path or os.path.isabs(path) or base_dir is None:
        return path
    beside = os.path.join(base_dir, path)
    if os.path.exists(beside) or not os.path.exists(path):
        return beside  # a missing file is reported where the graph says it is
    return path


def resolve_params(spec: NodeSpec, params: dict[str, Any], base_dir: str | None) -> dict[str, Any]:
    """`params` with each non-empty PATH param naming its file (`resolve`); a new dict."""
    return _map_paths(spec, params, lambda value: resolve(value, base_dir))


def _map_paths(spec: NodeSpec, params: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """A copy of `params` with `change` applied to each non-empty PATH param."""
    out = dict(params)
    for param in spec.params:
        value = out.get(param.name)
        if param.type is ParamType.PATH and isinstance(value, str) and value:
            out[param.name] = change(value)
    return out


def reword(value: str, written_for: str | None, base_dir: str | None) -> str:
    """A PATH value written in a graph whose folder was `written_for`, in the words of a graph in
    `base_dir`: the same file. Absolute paths stay as they are; relative ones stay relative."""
    if not value or os.path.isabs(os.path.expanduser(value)) or written_for == base_dir:
        return value
    target = os.path.abspath(resolve(value, written_for))
    if base_dir is None:
        return target
    try:
        return os.path.relpath(target, base_dir)
    except ValueError:  # another drive (Windows)
        return target


def reword_params(spec: NodeSpec, params: dict[str, Any], written_for: str | None, base_dir: str | None
                  ) -> dict[str, Any]:
    """`params` (a new dict) with each PATH param `reword`ed: for undo across a Save As into another folder."""
    return _map_paths(spec, params, lambda value: reword(value, written_for, base_dir))


def path_params(graph: Graph, registry: NodeRegistry) -> Iterator[tuple[str, str, str]]:
    """(node id, param name, value) of every non-empty PATH param of known node types."""
    for node in graph.nodes.values():
        spec = registry.get(node.type)
        if spec is None:
            continue
        for param in spec.params:
            value = node.params.get(param.name)
            if param.type is ParamType.PATH and isinstance(value, str) and value:
                yield node.id, param.name, value


def rebase(graph: Graph, registry: NodeRegistry, new_dir: str) -> list[tuple[str, str]]:
    """Rewrite PATH params for a graph saved into `new_dir`: the same files, in portable words.

    Relative paths are rewritten against the new folder (they stay relative), and
    absolute paths to files inside the new folder become relative, so the folder
    can be sent as it is. Absolute paths elsewhere are kept. Returns the (node id,
    param name) pairs that changed.
    """
    new_dir = os.path.abspath(new_dir)
    changed = []
    for node_id, name, value in list(path_params(graph, registry)):
        target = os.path.abspath(resolve(value, graph.base_dir))
        if os.path.isabs(os.path.expanduser(value)) and not _inside(target, new_dir):
            continue
        try:
            moved = os.path.relpath(target, new_dir)
        except ValueError:  # another drive (Windows)
            moved = target
        if moved != value:
            graph.nodes[node_id].params[name] = moved
            changed.append((node_id, name))
    graph.base_dir = new_dir
    return changed


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # another drive (Windows)
        return False
