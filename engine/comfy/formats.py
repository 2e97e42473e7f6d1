"""ComfyUI's file formats, read into one shape (CNode, CGroup) for the importer.

- UI format (the editor's "workflow", litegraph's `version` 0.4): `nodes` as a list with
  `widgets_values`, `links` as arrays [id, from_node, from_slot, to_node, to_slot, type] or, in
  newer files, objects {id, origin_id, origin_slot, target_id, target_slot, type}; `groups`.
- API format (the "prompt" ComfyUI executes): {"3": {"class_type", "inputs": {name: value or
  [node_id, slot]}, "_meta"?: {"title"}}}.
- PNGs written by ComfyUI carry the UI format in a `workflow` text chunk and the API format in a
  `prompt` chunk; the workflow is preferred (it has positions, groups and notes).

Every problem raises FormatError with one line naming the node or link.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from engine.errors import quote

UI, API = "workflow", "prompt"
_COLOR_RE = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")


class FormatError(Exception):
    """A ComfyUI document that cannot be read; str() is one line."""


@dataclass
class CNode:
    id: str
    type: str
    title: str = ""
    pos: tuple[float, float] = (0.0, 0.0)
    size: tuple[float, float] = (300.0, 100.0)
    color: str | None = None
    collapsed: bool = False
    mode: int = 0  # 0 always, 2 never (muted), 4 bypass
    widgets: list[Any] | dict[str, Any] | None = None  # UI: widgets_values (positional, or by name)
    values: dict[str, Any] = field(default_factory=dict)  # API: inputs given as values
    links: dict[str, tuple[str, int]] = field(default_factory=dict)  # input name -> (source id, slot)
    widget_inputs: dict[str, str] = field(default_factory=dict)  # UI: input name -> the widget it stands for
    properties: dict[str, Any] = field(default_factory=dict)
    primitive_of: str | None = None  # UI PrimitiveNode: the widget name its output feeds


@dataclass
class CGroup:
    title: str
    rect: tuple[float, float, float, float]
    color: str | None = None


@dataclass
class Document:
    kind: str  # UI or API
    nodes: dict[str, CNode]
    groups: list[CGroup]
    extra: dict[str, Any] = field(default_factory=dict)


def detect(data: Any) -> str | None:
    """UI, API, or None when `data` is not a ComfyUI document."""
    if not isinstance(data, dict) or "format" in data or "kiln_version" in data:
        return None
    if isinstance(data.get("nodes"), list) and ("links" in data or "last_node_id" in data or "version" in data):
        return UI
    if data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return API
    return None


def read(data: Any) -> Document:
    kind = detect(data)
    if kind == UI:
        return _read_ui(data)
    if kind == API:
        return _read_api(data)
    raise FormatError("is not a ComfyUI workflow or API prompt")


def from_png_texts(texts: dict[str, str]) -> Any:
    """The ComfyUI document a PNG's text chunks carry: the workflow when it is usable, else the prompt."""
    problems = []
    for key in (UI, API):
        if key not in texts:
            continue
        try:
            data = json.loads(texts[key])
        except (ValueError, RecursionError):
            problems.append(f"its {key!r} chunk is not valid JSON")
            continue
        if detect(data) is not None:
            return data
        problems.append(f"its {key!r} chunk is not a ComfyUI {key}")
    raise FormatError("is a ComfyUI image whose graph cannot be read (" + "; ".join(problems) + ")")


# --- API format ------------------------------------------------------------------


def _read_api(data: dict) -> Document:
    nodes = {}
    for node_id, raw in data.items():
        where = f"node {quote(node_id, 30)}"
        node_type = raw.get("class_type")
        if not isinstance(node_type, str) or not node_type or not node_id:
            raise FormatError(f"{where} has no class_type text")
        inputs = raw.get("inputs", {})
        if not isinstance(inputs, dict):
            raise FormatError(f"{where} ({node_type}): 'inputs' is not an object")
        node = CNode(id=node_id, type=node_type, title=_meta_title(raw))
        for name, value in inputs.items():
            if _is_api_link(value):
                node.links[name] = (str(value[0]), value[1])
            else:
                node.values[name] = value
        nodes[node_id] = node
    for node in nodes.values():
        for name, (src, _slot) in node.links.items():
            if src not in nodes:
                raise FormatError(f"node {quote(node.id, 30)} ({node.type}): input {quote(name, 30)} "
                                  f"is linked to node {quote(src, 30)}, which is not in the prompt")
    return Document(API, nodes, [])


def _is_api_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool)
            and value[1] >= 0)


def _meta_title(raw: dict) -> str:
    meta = raw.get("_meta")
    title = meta.get("title") if isinstance(meta, dict) else None
    return title if isinstance(title, str) else ""


# --- UI format -------------------------------------------------------------------


def _read_ui(data: dict) -> Document:
    nodes: dict[str, CNode] = {}
    raws: dict[str, dict] = {}
    for index, raw in enumerate(data["nodes"]):
        node = _ui_node(index, raw)
        if node.id in nodes:
            raise FormatError(f"node {node.id} appears twice (node ids must be unique)")
        nodes[node.id], raws[node.id] = node, raw
    links = data.get("links") or []
    if not isinstance(links, list):
        raise FormatError(f"'links' is not a list (got {quote(links, 30)})")
    for index, raw in enumerate(links):
        _ui_link(index, raw, nodes, raws)
    groups = [_ui_group(i, g) for i, g in enumerate(_list(data.get("groups"), "'groups'"))]
    extra = data.get("extra")
    return Document(UI, nodes, groups, extra if isinstance(extra, dict) else {})


def _list(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FormatError(f"{what} is not a list (got {quote(value, 30)})")
    return value


def _ui_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise FormatError(f"{where} has no id (got {quote(value, 30)})")
    return str(value)


def _ui_node(index: int, raw: Any) -> CNode:
    if not isinstance(raw, dict):
        raise FormatError(f"node #{index + 1} is not an object (got {quote(raw, 30)})")
    node_id = _ui_id(raw.get("id"), f"node #{index + 1}")
    node_type = raw.get("type")
    if not isinstance(node_type, str) or not node_type:
        raise FormatError(f"node {node_id} has no type")
    where = f"node {node_id} ({node_type})"
    widgets = raw.get("widgets_values")
    if widgets is not None and not isinstance(widgets, (list, dict)):
        raise FormatError(f"{where}: widgets_values is not a list (got {quote(widgets, 30)})")
    flags = raw.get("flags")
    flags = flags if isinstance(flags, dict) else {}
    node = CNode(id=node_id, type=node_type, widgets=widgets,
                 title=raw["title"] if isinstance(raw.get("title"), str) else "",
                 pos=_pair(raw.get("pos"), (0.0, 0.0), f"{where}: pos"),
                 size=_pair(raw.get("size"), (300.0, 100.0), f"{where}: size"),
                 color=_ui_color(raw), collapsed=flags.get("collapsed") is True, mode=_mode(raw.get("mode"), where),
                 properties=raw["properties"] if isinstance(raw.get("properties"), dict) else {})
    for slot in _list(raw.get("inputs"), f"{where}: inputs"):
        if isinstance(slot, dict) and isinstance(slot.get("name"), str):
            widget = slot.get("widget")
            if isinstance(widget, dict) and isinstance(widget.get("name"), str):
                node.widget_inputs[slot["name"]] = widget["name"]
    outputs = _list(raw.get("outputs"), f"{where}: outputs")
    first = outputs[0] if outputs and isinstance(outputs[0], dict) else {}
    if isinstance(first.get("widget"), dict) and isinstance(first["widget"].get("name"), str):
        node.primitive_of = first["widget"]["name"]
    return node


def _pair(value: Any, default: tuple[float, float], where: str) -> tuple[float, float]:
    if value is None:
        return default
    if isinstance(value, dict) and "0" in value and "1" in value:  # some files store arrays as objects
        value = [value["0"], value["1"]]
    if (isinstance(value, (list, tuple)) and len(value) >= 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[:2])):
        return float(value[0]), float(value[1])
    raise FormatError(f"{where} is not two numbers (got {quote(value, 30)})")


def _mode(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{where}: mode is not a number (got {quote(value, 30)})")
    return value


def _ui_color(raw: dict) -> str | None:
    for key in ("bgcolor", "color"):
        value = raw.get(key)
        if isinstance(value, str) and _COLOR_RE.fullmatch(value):
            return value
    return None


def _ui_link(index: int, raw: Any, nodes: dict[str, CNode], raws: dict[str, dict]) -> None:
    where = f"link #{index + 1}"
    if isinstance(raw, list) and len(raw) >= 5:
        src, src_slot, dst, dst_slot = raw[1], raw[2], raw[3], raw[4]
    elif isinstance(raw, dict):
        src, src_slot, dst, dst_slot = (raw.get(k) for k in ("origin_id", "origin_slot", "target_id", "target_slot"))
    elif raw is None:
        return  # litegraph writes null for a deleted link
    else:
        raise FormatError(f"{where} is not [id, from node, from slot, to node, to slot, type] "
                          f"(got {quote(raw, 40)})")
    src_id, dst_id = _ui_id(src, f"{where} (its source)"), _ui_id(dst, f"{where} (its target)")
    for end in (src_id, dst_id):
        if end not in nodes:
            raise FormatError(f"{where} refers to node {quote(end, 30)}, which is not in the workflow")
    for slot in (src_slot, dst_slot):
        if isinstance(slot, bool) or not isinstance(slot, int) or slot < 0:
            raise FormatError(f"{where} has a slot that is not a number (got {quote(slot, 30)})")
    name = _input_name(raws[dst_id], dst_slot, f"{where}: node {dst_id} ({nodes[dst_id].type})")
    nodes[dst_id].links[name] = (src_id, src_slot)


def _input_name(raw: dict, slot: int, where: str) -> str:
    inputs = raw.get("inputs")
    if isinstance(inputs, list) and slot < len(inputs) and isinstance(inputs[slot], dict):
        name = inputs[slot].get("name")
        if isinstance(name, str):  # a Reroute's one input is named ""
            return name
    raise FormatError(f"{where} has no input slot {slot}")


def _ui_group(index: int, raw: Any) -> CGroup:
    if not isinstance(raw, dict):
        raise FormatError(f"group #{index + 1} is not an object")
    bounding = raw.get("bounding")
    if not (isinstance(bounding, list) and len(bounding) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounding)):
        raise FormatError(f"group #{index + 1} has no bounding [x, y, width, height] (got {quote(bounding, 40)})")
    x, y, w, h = (float(v) for v in bounding)
    title = raw.get("title")
    return CGroup(title if isinstance(title, str) else "", (x, y, max(w, 0.0), max(h, 0.0)), _ui_color(raw))
