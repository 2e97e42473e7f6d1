"""Reading and writing graph files (JSON), with migration of older versions.

Version 1 (current), written with sorted keys and a trailing newline so files
diff well::

    {"format": "kiln.graph", "version": 1,
     "nodes": {id: {"type", "title", "params", "pos": [x, y],
                    "color"?, "collapsed"?, "disabled"?, "param_inputs"?: [param, ...]}},
     "links": [{"from": [node_id, output], "to": [node_id, input]}, ...],  # sorted
     "backdrops": {id: {"title", "rect": [x, y, w, h], "color"?}},
     "meta": {...}}

Optional fields are omitted when false, null or empty. Unknown keys are ignored, so a
file from a slightly newer Kiln with extra fields still loads.

"param_inputs" (added within version 1, so files without it keep their bytes)
names the params a node shows as input sockets (engine.param_links); a link's
"to" may then name such a param instead of an input. A Kiln older than that
loads the file and reports each such link as one to an input the node lacks.

Version 0 (the first preview releases) had no "format" key::

    {"kiln_version": 0,
     "nodes": [{"id", "type", "name"?, "params"?, "x"?, "y"?,
                "color"?, "collapsed"?, "bypass"?}, ...],
     "links": [[src_id, output, dst_id, input], ...],
     "groups": [{"id", "title"?, "x", "y", "w", "h", "color"?}, ...],
     "meta"?: {...}}

`migrate_v0_to_v1` turns it into version 1 ("name" became "title", "bypass"
became "disabled", groups became backdrops). Each future format change adds one
`migrate_vN_to_vN+1` to `_MIGRATIONS`.

`load` also accepts a PNG written by Kiln (the graph is embedded, see
engine.pngmeta), and converts ComfyUI workflows, API prompts and PNGs (engine.comfy). Every problem raises GraphFileError naming the file and, for a
structural problem, the node. Only JSON is read: nothing is unpickled.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine import atomic, sniff
from engine.comfy import formats as comfy_format
from engine.errors import GraphFileError, clip, quote
from engine.graph import Backdrop, Graph, Link, Node

if TYPE_CHECKING:
    from engine.comfy.importer import ComfyReport

FORMAT_NAME = "kiln.graph"
FORMAT_VERSION = 1

_MAX_DEPTH = 64  # nesting deeper than this is junk, not a graph
_MAX_INT_BITS = 1024  # larger integers cannot be a sensible param
_COLOR_RE = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_PNG_SIGNATURE = sniff.PNG_SIGNATURE
MAX_GRAPH_BYTES = 16 * 1024 * 1024  # a graph file larger than this is not one (the examples are < 100 kB)


class _Malformed(Exception):
    """A problem found while reading; turned into GraphFileError with the source name."""


# --- writing ---------------------------------------------------------------


def graph_to_dict(graph: Graph) -> dict:
    """The version-1 JSON document of `graph` (a fresh dict; the graph is not shared)."""
    nodes = {node.id: _node_to_dict(node) for node in graph.nodes.values()}
    backdrops = {b.id: _backdrop_to_dict(b) for b in graph.backdrops.values()}
    links = [{"from": [lk.src, lk.src_socket], "to": [lk.dst, lk.dst_socket]} for lk in sorted(graph.links)]
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "nodes": nodes,
        "links": links,
        "backdrops": backdrops,
        "meta": copy.deepcopy(graph.meta),
    }


def _node_to_dict(node: Node) -> dict:
    out: dict[str, Any] = {
        "type": node.type,
        "title": node.title,
        "params": copy.deepcopy(node.params),
        "pos": [float(node.pos[0]), float(node.pos[1])],
    }
    if node.color:
        out["color"] = node.color
    if node.collapsed:
        out["collapsed"] = True
    if node.disabled:
        out["disabled"] = True
    if node.param_inputs:
        out["param_inputs"] = list(node.param_inputs)
    return out


def _backdrop_to_dict(backdrop: Backdrop) -> dict:
    out: dict[str, Any] = {"title": backdrop.title, "rect": [float(v) for v in backdrop.rect]}
    if backdrop.color:
        out["color"] = backdrop.color
    return out


def dumps(graph: Graph, source: str = "<memory>") -> str:
    """The file text of `graph`: sorted keys, indent 2, trailing newline, byte-stable."""
    try:
        text = json.dumps(graph_to_dict(graph), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise GraphFileError(source, f"cannot be written as JSON: {exc}") from None
    return text + "\n"


def save(graph: Graph, path: str | os.PathLike) -> None:
    """Write `graph` to a .json file atomically."""
    path = os.fspath(path)
    data = dumps(graph, source=path).encode("utf-8")
    try:
        atomic.write_bytes(path, data, fsync=True)
    except OSError as exc:
        raise GraphFileError(path, f"cannot be written: {exc.strerror or exc}") from None


# --- reading ---------------------------------------------------------------


def load(path: str | os.PathLike, comfy: ComfyReport | None = None, lenient: bool = False) -> Graph:
    """Read a graph file (.json) or a PNG written by Kiln (its embedded graph).

    A ComfyUI workflow, API prompt or PNG is converted (engine.comfy): `comfy`, when given, is
    filled with what the conversion did; `lenient` keeps node types Kiln lacks as placeholders
    instead of refusing the file (the editor). Only regular files are opened; the kind is told from
    the first bytes, and a text file over MAX_GRAPH_BYTES is refused before it is read (engine.sniff)."""
    path = os.fspath(path)
    head, size = sniff.read_capped(path, MAX_GRAPH_BYTES)
    if head.startswith(_PNG_SIGNATURE):
        graph = graph_from_dict(_png_document(path), source=path, comfy=comfy, lenient=lenient)
    else:
        kind = sniff.binary_kind(head, size)
        if kind:
            raise GraphFileError(path, f"is {kind}, not a Kiln graph")
        graph = loads(_decode(sniff.read_whole(path, MAX_GRAPH_BYTES), path), source=path, comfy=comfy,
                      lenient=lenient)
    graph.base_dir = os.path.dirname(os.path.abspath(path))
    return graph


def _decode(raw: bytes, source: str) -> str:
    if not raw.strip():
        raise GraphFileError(source, "is empty, not a Kiln graph")
    kind = sniff.binary_kind(raw[:sniff.HEAD_BYTES], len(raw))
    if kind:
        raise GraphFileError(source, f"is {kind}, not a Kiln graph")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GraphFileError(source, f"is not UTF-8 text (bad byte at offset {exc.start}), not a Kiln graph") from None


def _png_document(path: str) -> Any:
    """The Kiln graph document in a PNG, else the ComfyUI one it carries."""
    from engine import pngmeta  # Pillow is only needed for images
    from engine.comfy import workflow as comfy

    texts = pngmeta.read_png_text(path)
    if comfy.is_comfy_png(texts):
        return comfy.png_document(texts, path)
    return pngmeta.read_png_graph(path)


def loads(text: str, source: str = "<memory>", comfy: ComfyReport | None = None, lenient: bool = False) -> Graph:
    """Parse graph file text; `source` names the file in error messages."""
    if not text.strip():
        raise GraphFileError(source, "is empty, not a Kiln graph")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant,
                          parse_float=_finite_float, parse_int=_bounded_int)
    except _Malformed as exc:
        raise GraphFileError(source, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise GraphFileError(source, f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise GraphFileError(source, f"is JSON nested too deeply at line {_deep_line(text)}") from None
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise GraphFileError(source, f"is not usable JSON ({_first_line(exc)})") from None
    return graph_from_dict(data, source, comfy=comfy, lenient=lenient)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Malformed(f"the key {quote(key)} appears twice in one object (ids and names must be unique)")
        out[key] = value
    return out


def _reject_constant(name: str) -> float:
    """NaN / Infinity parse, so that _check_json_tree refuses them naming the node and param."""
    return float(name)


def _finite_float(text: str) -> float:
    """A number too large for a float becomes inf, refused by _check_json_tree with its place."""
    return float(text)


def _bounded_int(text: str) -> int:
    """The integer; one too long for int() becomes a stand-in that _check_json_tree refuses
    with its place ("holds an integer too large to be useful")."""
    return int(text) if len(text) <= 1000 else _TOO_LONG


_TOO_LONG = 1 << (2 * _MAX_INT_BITS)


def _deep_line(text: str) -> int:
    """The line where brackets (outside strings) first open more than _MAX_DEPTH deep."""
    depth = 0
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        token = match.group()
        depth += 1 if token in "[{" else -1 if token in "]}" else 0
        if depth > _MAX_DEPTH:
            return text.count("\n", 0, match.start()) + 1
    return text.count("\n") + 1


def _first_line(exc: BaseException) -> str:
    return (str(exc).split(":")[0].splitlines() or [type(exc).__name__])[0][:100]


def graph_from_dict(data: Any, source: str = "<memory>", comfy: ComfyReport | None = None,
                    lenient: bool = False) -> Graph:
    """Build a Graph from a parsed file document of any supported version, or a ComfyUI one."""
    try:
        _check_json_tree(data, (), 0)
        if comfy_format.detect(data):
            from engine.comfy.workflow import convert

            return convert(data, source, comfy, lenient)
        document = _upgrade(data)
        return _parse_v1(document)
    except _Malformed as exc:
        raise GraphFileError(source, str(exc)) from None


def _check_json_tree(value: Any, path: tuple, depth: int) -> None:
    """Everything must be plain JSON data that can be written back unchanged."""
    if depth > _MAX_DEPTH:
        raise _Malformed(f"{_where(path[:5])} is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Malformed(f"{_where(path)} has a key that is not text: {_short(key)}")
            _check_text(key, path)
            _check_json_tree(item, path + (key,), depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_tree(item, path + (index,), depth + 1)
    elif isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise _Malformed(f"{_where(path)} holds an integer too large to be useful")
    elif isinstance(value, float):
        if not math.isfinite(value):
            name = "NaN" if math.isnan(value) else "Infinity (or a number too large)"
            raise _Malformed(f"{_where(path)} holds {name}, which is not a finite number JSON allows")
    else:
        raise _Malformed(f"{_where(path)} holds a value of type {type(value).__name__}, which is not JSON data")


def _where(path: tuple) -> str:
    """Words for a place in the document: "node 'a', param 'seed'", "backdrop 'b'", ..."""
    if len(path) >= 2 and path[0] in ("nodes", "backdrops", "groups"):
        owner = {"nodes": "node", "backdrops": "backdrop", "groups": "group"}[path[0]]
        name = f"#{path[1] + 1}" if isinstance(path[1], int) else quote(path[1])
        rest = path[2:]
        if owner == "node" and len(rest) >= 2 and rest[0] == "params":
            return f"{owner} {name}, param {quote(rest[1])}" + clip("".join(f"[{quote(p, 20)}]" for p in rest[2:]))
        return f"{owner} {name}" + (": " + _dotted(rest) if rest else "")
    return "the file" + (" at " + _dotted(path) if path else "")


def _dotted(parts: tuple) -> str:
    return clip(".".join(str(p) if isinstance(p, int) or p.isidentifier() else quote(p, 30) for p in parts))


def _check_text(text: str, path: tuple) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Malformed(f"{_where(path)} holds text with an invalid character (a lone surrogate)") from None


def _short(value: Any) -> str:
    return quote(value, 40)


# --- versions and migration --------------------------------------------------


def _upgrade(data: Any) -> dict:
    """Recognise the file and migrate it to the current version."""
    if not isinstance(data, dict):
        raise _Malformed(f"is JSON ({_json_kind(data)}) but not a Kiln graph")
    version = _file_version(data)
    if version > FORMAT_VERSION:
        raise _Malformed(f"made by a newer Kiln (graph version {version}; this Kiln reads up to {FORMAT_VERSION})")
    for migrate in _MIGRATIONS[version:]:
        data = migrate(data)
    return data


def _file_version(data: dict) -> int:
    if "format" in data:
        if data["format"] != FORMAT_NAME:
            if not isinstance(data["format"], str) or not data["format"].strip():
                raise _Malformed("is not a Kiln graph (no format name)")
            raise _Malformed(f"is a {_short(data['format'])} file, not a Kiln graph ({FORMAT_NAME!r})")
        version = data.get("version")
    elif "kiln_version" in data:
        version = data["kiln_version"]
    else:
        raise _Malformed(_foreign_description(data))
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise _Malformed(f"is a Kiln graph with no valid version number (got {_short(version)})")
    return version


def _foreign_description(data: dict) -> str:
    if isinstance(data.get("nodes"), list) and ("last_node_id" in data or "last_link_id" in data):
        return "is a ComfyUI workflow, not a Kiln graph"
    if data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return "is a ComfyUI API prompt, not a Kiln graph"
    return 'is JSON but not a Kiln graph (it has no "format": "kiln.graph")'


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return "a number"


def migrate_v0_to_v1(data: dict) -> dict:
    """Version 0 (node list, 4-element links, groups) to version 1."""
    nodes: dict[str, Any] = {}
    for index, raw in enumerate(_field(data, "nodes", list, "the node list")):
        node_id = _v0_id(raw, f"node #{index + 1}")
        if node_id in nodes:
            raise _Malformed(f"node {quote(node_id)} appears twice (node ids must be unique)")
        nodes[node_id] = _v0_node(raw)
    links = []
    for index, raw in enumerate(_field(data, "links", list, "the link list", default=[])):
        if not isinstance(raw, list) or len(raw) != 4:
            raise _Malformed(f"link #{index + 1} is not [from node, output, to node, input]")
        links.append({"from": raw[:2], "to": raw[2:]})
    backdrops: dict[str, Any] = {}
    for index, raw in enumerate(_field(data, "groups", list, "the group list", default=[])):
        group_id = _v0_id(raw, f"group #{index + 1}")
        rect = [raw.get(key, 0.0) for key in ("x", "y", "w", "h")]
        backdrops[group_id] = {"title": raw.get("title", ""), "rect": rect, "color": raw.get("color")}
    meta = _field(data, "meta", dict, '"meta"', default={})
    return {"format": FORMAT_NAME, "version": 1, "nodes": nodes, "links": links,
            "backdrops": backdrops, "meta": meta}


def _v0_id(raw: Any, where: str) -> str:
    if not isinstance(raw, dict):
        raise _Malformed(f"{where} is not an object")
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise _Malformed(f"{where} has no text \"id\"")
    return node_id


def _v0_node(raw: dict) -> dict:
    return {
        "type": raw.get("type"),
        "title": raw.get("name", ""),
        "params": raw.get("params", {}),
        "pos": [raw.get("x", 0.0), raw.get("y", 0.0)],
        "color": raw.get("color"),
        "collapsed": raw.get("collapsed", False),
        "disabled": raw.get("bypass", False),
    }


_MIGRATIONS: tuple[Callable[[dict], dict], ...] = (migrate_v0_to_v1,)  # index N migrates vN to vN+1
assert len(_MIGRATIONS) == FORMAT_VERSION


# --- version 1 structure -------------------------------------------------------


_MISSING = object()


def _field(obj: dict, key: str, kind: type, what: str, default: Any = _MISSING) -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise _Malformed(f"has no {key!r}")
        return default
    if not isinstance(value, kind):
        raise _Malformed(f"{what} is not {_KIND_NAMES[kind]} (got {_short(value)})")
    return value


_KIND_NAMES = {dict: "an object", list: "a list", str: "text", bool: "true or false"}


def _parse_v1(data: dict) -> Graph:
    graph = Graph()
    for node_id, raw in _field(data, "nodes", dict, '"nodes"').items():
        graph.nodes[node_id] = _parse_node(node_id, raw)
    for backdrop_id, raw in _field(data, "backdrops", dict, '"backdrops"', default={}).items():
        if backdrop_id in graph.nodes:
            raise _Malformed(f"backdrop {quote(backdrop_id)} has the id of a node (ids must be unique)")
        graph.backdrops[backdrop_id] = _parse_backdrop(backdrop_id, raw)
    links = [_parse_link(index, raw) for index, raw in enumerate(_field(data, "links", list, '"links"', default=[]))]
    graph.links = sorted(_checked_links(links, graph))
    graph.meta = copy.deepcopy(_field(data, "meta", dict, '"meta"', default={}))
    return graph


def _parse_node(node_id: str, raw: Any) -> Node:
    where = f"node {quote(node_id)}"
    if not node_id:
        raise _Malformed("a node has an empty id")
    if not isinstance(raw, dict):
        raise _Malformed(f"{where} is not an object (got {_short(raw)})")
    node_type = raw.get("type")
    if not isinstance(node_type, str) or not node_type:
        raise _Malformed(f'{where} has no "type"' if node_type is None else f'{where}: "type" is not text')
    return Node(
        id=node_id,
        type=node_type,
        title=_optional(raw, "title", str, where, ""),
        params=copy.deepcopy(_optional(raw, "params", dict, where, {})),
        pos=_numbers(raw.get("pos", [0.0, 0.0]), 2, f'{where}: "pos"'),
        color=_color(raw.get("color"), where),
        collapsed=_optional(raw, "collapsed", bool, where, False),
        disabled=_optional(raw, "disabled", bool, where, False),
        param_inputs=_param_inputs(raw.get("param_inputs"), where),
    )


def _param_inputs(value: Any, where: str) -> list[str]:
    """The names of the params a node shows as inputs: a list of distinct non-empty names."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise _Malformed(f'{where}: "param_inputs" is not a list of param names (got {_short(value)})')
    if len(set(value)) != len(value):
        raise _Malformed(f'{where}: "param_inputs" names a param twice')
    return list(value)


def _parse_backdrop(backdrop_id: str, raw: Any) -> Backdrop:
    where = f"backdrop {quote(backdrop_id)}"
    if not backdrop_id:
        raise _Malformed("a backdrop has an empty id")
    if not isinstance(raw, dict):
        raise _Malformed(f"{where} is not an object (got {_short(raw)})")
    rect = _numbers(raw.get("rect", [0.0, 0.0, 400.0, 300.0]), 4, f'{where}: "rect"')
    if rect[2] < 0 or rect[3] < 0:
        raise _Malformed(f'{where}: "rect" has a negative width or height')
    title = _optional(raw, "title", str, where, "")
    return Backdrop(id=backdrop_id, title=title, rect=rect, color=_color(raw.get("color"), where))


def _optional(raw: dict, key: str, kind: type, where: str, default: Any) -> Any:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise _Malformed(f"{where}: {key!r} is not {_KIND_NAMES[kind]} (got {_short(value)})")
    return value


def _numbers(value: Any, count: int, where: str) -> tuple:
    ok = isinstance(value, (list, tuple)) and len(value) == count
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if ok:
        try:
            floats = tuple(float(v) for v in value)
        except OverflowError:
            floats = (math.inf,)
        if all(math.isfinite(v) for v in floats):
            return floats
    raise _Malformed(f"{where} is not {count} numbers (got {_short(value)})")


def _color(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _COLOR_RE.fullmatch(value):
        raise _Malformed(f'{where}: "color" is not a colour like "#3a7bd5" (got {_short(value)})')
    return value


def _parse_link(index: int, raw: Any) -> Link:
    where = f"link #{index + 1}"
    if not isinstance(raw, dict):
        raise _Malformed(f"{where} is not an object (got {_short(raw)})")
    ends = []
    for key in ("from", "to"):
        end = raw.get(key)
        if not (isinstance(end, list) and len(end) == 2 and all(isinstance(s, str) and s for s in end)):
            raise _Malformed(f'{where}: "{key}" is not [node id, socket name] (got {_short(end)})')
        ends.extend(end)
    return Link(*ends)


def _checked_links(links: list[Link], graph: Graph) -> list[Link]:
    feeding: dict[tuple[str, str], Link] = {}
    for link in links:
        for end in (link.src, link.dst):
            if end not in graph.nodes:
                raise _Malformed(f"a link {_describe(link)} refers to node {quote(end)}, which is not in the graph")
        earlier = feeding.get((link.dst, link.dst_socket))
        if earlier is not None:
            raise _Malformed(f"node {quote(link.dst)}: input {quote(link.dst_socket)} has two links "
                             f"({_describe(earlier)} and {_describe(link)})")
        feeding[(link.dst, link.dst_socket)] = link
    return links


def _describe(link: Link) -> str:
    return f"{clip(f'{link.src}.{link.src_socket}', 40)} -> {clip(f'{link.dst}.{link.dst_socket}', 40)}"
