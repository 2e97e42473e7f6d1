"""Randomly broken graph files give a Graph or a clean one-line error, never a crash."""
from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import graph_file
from engine.errors import GraphFileError, Issue, ValidationError
from engine.graph import Backdrop, Graph, Link, Node
from engine.spec import Input, NodeRegistry, NodeSpec, Output, Param, ParamType, SocketType
from engine.validate import check, validate


def _never_run(ctx, inputs, params):
    raise AssertionError("validation must not run nodes")


REGISTRY = NodeRegistry()
REGISTRY.register_all([
    NodeSpec("Number", "Number", "toy", "", _never_run, outputs=(Output("value", SocketType.INT),),
             params=(Param("value", ParamType.INT, 0, min=-100, max=100),)),
    NodeSpec("Add", "Add", "toy", "", _never_run,
             inputs=(Input("a", SocketType.INT), Input("b", SocketType.INT, optional=True)),
             outputs=(Output("sum", SocketType.INT),),
             params=(Param("scale", ParamType.FLOAT, 1.0, min=0.0, max=10.0),
                     Param("mode", ParamType.CHOICE, "sum", choices=("sum", "max")))),
    NodeSpec("Blur", "Blur", "toy", "", _never_run, inputs=(Input("image", SocketType.IMAGE),),
             outputs=(Output("image", SocketType.IMAGE),), params=(Param("seed", ParamType.SEED, 0),)),
])


def _valid_document() -> dict:
    graph = Graph(meta={"title": "toy", "tags": ["a", "b"]})
    graph.add_node(Node("n", "Number", title="Seven", params={"value": 7}, pos=(0.0, 0.0), color="#ff8800"))
    graph.add_node(Node("add", "Add", params={"scale": 2.0, "mode": "max"}, pos=(200.0, 0.0), collapsed=True))
    graph.add_node(Node("blur", "Blur", params={"seed": 5}, pos=(400.0, 0.0), disabled=True))
    graph.connect(Link("n", "value", "add", "a"))
    graph.connect(Link("n", "value", "add", "b"))
    graph.backdrops["bd"] = Backdrop("bd", "group", (0.0, 0.0, 300.0, 100.0), "#112233")
    return graph_file.graph_to_dict(graph)


VALID = _valid_document()

SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.sampled_from([2**63, -(2**64), 10**400, 2**5000, math.nan, math.inf, -math.inf, 1e308, -0.0])
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=8)
           | st.sampled_from(["", "n", "add", "blur", "ghost", "value", "sum", "a", "#fff", "日本語", "\x00", "kiln.graph"]))
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
NODE_IDS = st.sampled_from(["n", "add", "blur", "ghost", ""])
SOCKETS = st.sampled_from(["value", "sum", "a", "b", "image", "nope"])


def _places(value, places=None):
    """Every (container, key) in a JSON tree."""
    places = [] if places is None else places
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        places.append((value, key))
        _places(item, places)
    return places


def _nested(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _mutate(doc: dict, data) -> None:
    """One random change: mostly plausible edits (params, types, links), sometimes raw junk."""
    op = data.draw(st.sampled_from(["param", "param", "param", "retype", "link", "link", "cycle", "unlink",
                                    "delete", "replace", "add_key", "rename", "deep"]))
    nodes = doc.get("nodes") if isinstance(doc.get("nodes"), dict) else {}
    links = doc.get("links") if isinstance(doc.get("links"), list) else None
    node = nodes.get(data.draw(st.sampled_from(sorted(nodes)))) if nodes and op in ("param", "retype") else None
    if op == "param" and isinstance(node, dict) and isinstance(node.get("params"), dict):
        name = data.draw(st.sampled_from(["value", "scale", "mode", "seed", "unknown"]))
        node["params"][name] = data.draw(JUNK | st.sampled_from([-101, 101, 10.5, -1, 2**63, "max", "median"]))
    elif op == "retype" and isinstance(node, dict):
        node["type"] = data.draw(st.sampled_from(["Number", "Add", "Blur", "Ad", "Teleport"]))
    elif op == "link" and links is not None:
        links.append({"from": [data.draw(NODE_IDS), data.draw(SOCKETS)], "to": [data.draw(NODE_IDS), data.draw(SOCKETS)]})
    elif op == "cycle" and links is not None:
        name, output, input_ = data.draw(st.sampled_from([("add", "sum", "b"), ("blur", "image", "image")]))
        links[:] = [lk for lk in links if not (isinstance(lk, dict) and lk.get("to") == [name, input_])]
        links.append({"from": [name, output], "to": [name, input_]})
    elif op == "unlink" and links:
        links.pop(data.draw(st.integers(0, len(links) - 1)))
    elif op == "rename" and nodes:
        nodes[data.draw(st.text(max_size=6))] = nodes.pop(data.draw(st.sampled_from(sorted(nodes))))
    else:
        _mutate_anywhere(doc, op, data)


def _mutate_anywhere(doc: dict, op: str, data) -> None:
    places = _places(doc)
    if not places:
        return
    container, key = data.draw(st.sampled_from(places))
    if op == "delete":
        del container[key]
    elif op == "add_key" and isinstance(container, dict):
        container[data.draw(st.text(max_size=6))] = data.draw(JUNK)
    else:
        container[key] = _nested(100) if op == "deep" else data.draw(JUNK)


def _as_input(doc: dict, data, tmp_dir) -> tuple[str, object]:
    """The document as a dict, JSON text, cut or damaged text, or a file on disk."""
    form = data.draw(st.sampled_from(["dict", "dict", "text", "text", "text", "cut", "bytes", "duplicate"]))
    if form == "dict":
        return "dict", doc
    text = json.dumps(doc, indent=data.draw(st.sampled_from([None, 2])))
    if form == "cut":
        text = text[: data.draw(st.integers(0, len(text)))]
    if form == "duplicate":
        text = text.replace('"nodes": {', '"nodes": {"n": {"type": "Number"}, ', 1)
    if form != "bytes":
        return "text", text
    raw = bytearray(text.encode("utf-8"))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_dir / "broken.json"
    path.write_bytes(bytes(raw))
    return "file", path


def _read(form: str, value) -> Graph:
    if form == "dict":
        return graph_file.graph_from_dict(value, source="mutated.json")
    if form == "text":
        return graph_file.loads(value, source="mutated.json")
    return graph_file.load(value)


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("malformed")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_malformed_graphs_load_cleanly_or_fail_cleanly(tmp_dir, data):
    doc = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(doc, data)
    form, value = _as_input(doc, data, tmp_dir)
    try:
        graph = _read(form, value)
    except GraphFileError as exc:
        event("clean GraphFileError")
        message = str(exc)
        assert message.startswith(str(value) + ": " if form == "file" else "mutated.json: ")
        assert "\n" not in message and len(message) < 600
        return
    event("loaded")
    _check_usable(graph, data)


def _check_usable(graph: Graph, data) -> None:
    """A graph that loaded validates without crashing and writes back byte-stably."""
    targets = data.draw(st.none() | st.lists(st.sampled_from(sorted(graph.nodes) + ["ghost"]), max_size=2))
    issues = validate(graph, REGISTRY, targets)
    assert all(isinstance(issue, Issue) and issue.message for issue in issues)
    try:
        check(graph, REGISTRY, targets)
        assert issues == []
    except ValidationError as exc:
        event("loaded, then ValidationError")
        assert exc.issues == issues
    text = graph_file.dumps(graph)
    again = graph_file.loads(text)
    assert again == graph
    assert graph_file.dumps(again) == text


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=60) | st.builds(lambda d: json.dumps(d), JUNK))
def test_random_text_is_never_a_crash(text):
    try:
        graph = graph_file.loads(text, source="random.json")
    except GraphFileError as exc:
        assert str(exc).startswith("random.json: ")
        return
    assert isinstance(graph, Graph)


def test_the_unmutated_document_is_valid():
    graph = graph_file.graph_from_dict(copy.deepcopy(VALID))
    assert validate(graph, REGISTRY) == []
