"""Graph files: round trips, stable bytes, migration of version 0, and clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import graph_file
from engine.errors import GraphFileError
from engine.graph import Backdrop, Graph, Link, Node

FIXTURES = Path(__file__).parent / "fixtures"


def full_graph() -> Graph:
    """A graph that uses every field a file can hold."""
    graph = Graph(meta={"author": "Ada", "notes": ["first", {"nested": True}]})
    graph.add_node(Node("seed", "Number", title="Seed ✨ 種", params={"value": 7}, pos=(-12.5, 40.0),
                        color="#3a7bd5", collapsed=True))
    graph.add_node(Node("add", "Add", params={"scale": 2.5, "future_param": [1, None, "x"]}, pos=(200, 40)))
    graph.add_node(Node("show", "Show", title="Result", pos=(400.0, 40.0), disabled=True))
    graph.connect(Link("seed", "value", "add", "b"))
    graph.connect(Link("seed", "value", "add", "a"))
    graph.connect(Link("add", "sum", "show", "value"))
    graph.backdrops["bd"] = Backdrop("bd", title="Numbers", rect=(-40.0, 0.0, 500.0, 200.0), color="#224466")
    graph.backdrops["plain"] = Backdrop("plain")
    return graph


def test_save_and_load_keep_every_field(tmp_path):
    graph = full_graph()
    path = tmp_path / "numbers.json"
    graph_file.save(graph, path)
    loaded = graph_file.load(path)
    graph.links.sort()  # files keep links sorted
    assert loaded == graph
    assert loaded.nodes["seed"].title == "Seed ✨ 種"
    assert loaded.nodes["add"].params["future_param"] == [1, None, "x"]
    assert loaded.backdrops["bd"].rect == (-40.0, 0.0, 500.0, 200.0)
    assert "種" in path.read_text(encoding="utf-8")  # readable, not \\u-escaped


def test_dumps_is_byte_stable_sorted_and_ends_with_newline():
    text = graph_file.dumps(full_graph())
    assert graph_file.dumps(graph_file.loads(text)) == text
    assert text.endswith("}\n") and not text.endswith("\n\n")
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert list(data["nodes"]["seed"]) == sorted(data["nodes"]["seed"])
    assert data["format"] == "kiln.graph" and data["version"] == 1


def test_links_are_written_sorted_whatever_order_they_were_made_in():
    first, second = full_graph(), full_graph()
    second.links.reverse()
    assert graph_file.dumps(first) == graph_file.dumps(second)
    links = json.loads(graph_file.dumps(first))["links"]
    assert links[0] == {"from": ["add", "sum"], "to": ["show", "value"]}
    assert [lk["from"] + lk["to"] for lk in links] == sorted(lk["from"] + lk["to"] for lk in links)


def test_false_and_null_optional_fields_are_left_out():
    data = graph_file.graph_to_dict(full_graph())
    assert set(data["nodes"]["add"]) == {"type", "title", "params", "pos"}
    assert data["nodes"]["seed"]["collapsed"] is True and "disabled" not in data["nodes"]["seed"]
    assert data["nodes"]["show"]["disabled"] is True
    assert set(data["backdrops"]["plain"]) == {"title", "rect"}


def test_graph_to_dict_does_not_share_params_with_the_graph():
    graph = full_graph()
    data = graph_file.graph_to_dict(graph)
    data["nodes"]["add"]["params"]["future_param"].append("changed")
    assert graph.nodes["add"].params["future_param"] == [1, None, "x"]


def test_save_replaces_the_file_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "g.json"
    graph = full_graph()
    graph_file.save(graph, path)
    graph.nodes["seed"].params["value"] = 8
    graph_file.save(graph, path)
    assert graph_file.load(path).nodes["seed"].params["value"] == 8
    assert os.listdir(tmp_path) == ["g.json"]


def test_a_graph_that_cannot_be_written_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "g.json"
    graph_file.save(full_graph(), path)
    before = path.read_bytes()
    broken = full_graph()
    broken.nodes["add"].params["scale"] = float("nan")
    with pytest.raises(GraphFileError, match="g.json: cannot be written as JSON"):
        graph_file.save(broken, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["g.json"]


def test_save_into_a_missing_folder_names_the_file(tmp_path):
    with pytest.raises(GraphFileError, match="nowhere.*g.json: cannot be written"):
        graph_file.save(full_graph(), tmp_path / "nowhere" / "g.json")


def test_version_0_fixture_is_migrated():
    graph = graph_file.load(FIXTURES / "graph_v0.json")
    assert sorted(graph.nodes) == ["decode", "load", "prompt", "sampler", "save"]
    assert graph.nodes["load"].title == "Model"  # "name" became "title"
    assert graph.nodes["decode"].disabled and not graph.nodes["save"].disabled  # "bypass"
    assert graph.nodes["sampler"].collapsed and graph.nodes["sampler"].pos == (360.0, 120.0)
    assert graph.nodes["prompt"].color == "#3a7bd5"
    assert graph.nodes["decode"].params == {}
    assert Link("prompt", "conditioning", "sampler", "positive") in graph.links and len(graph.links) == 5
    assert graph.backdrops["inputs"] == Backdrop("inputs", "Inputs", (20.0, 20.0, 300.0, 320.0), "#224466")
    assert graph.meta["description"].startswith("txt2img")
    expected = (FIXTURES / "graph_v0_migrated.json").read_text(encoding="utf-8")
    assert graph_file.dumps(graph) == expected


def test_migrate_v0_to_v1_gives_a_current_document():
    data = json.loads((FIXTURES / "graph_v0.json").read_text(encoding="utf-8"))
    migrated = graph_file.migrate_v0_to_v1(data)
    assert migrated["format"] == "kiln.graph" and migrated["version"] == 1
    assert migrated["links"][0] == {"from": ["load", "model"], "to": ["sampler", "model"]}
    assert migrated["nodes"]["sampler"]["title"] == "Sampler"


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["nodes"].append(dict(d["nodes"][0])), "node 'load' appears twice"),
    (lambda d: d["nodes"][1].pop("id"), "node #2 has no text \"id\""),
    (lambda d: d["links"].append(["load", "model", "decode"]), "link #6 is not"),
    (lambda d: d["links"].append(["load", "model", "ghost", "x"]), "node 'ghost', which is not in the graph"),
    (lambda d: d.update(nodes={"load": {}}), "the node list is not a list"),
    (lambda d: d["nodes"][2].update(x="left"), "node 'sampler': \"pos\" is not 2 numbers"),
])
def test_broken_version_0_files_are_reported(tmp_path, change, expected):
    data = json.loads((FIXTURES / "graph_v0.json").read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(GraphFileError) as caught:
        graph_file.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_a_newer_version_says_so_plainly():
    path = FIXTURES / "graph_v3.json"
    with pytest.raises(GraphFileError) as caught:
        graph_file.load(path)
    assert str(caught.value) == f"{path}: made by a newer Kiln (graph version 3; this Kiln reads up to 1)"


@pytest.mark.parametrize("name, content, expected", [
    ("comfy.json", b'{"nodes": [{"id": 1, "type": "ControlNetLoader"}], "links": []}',
     "is a ComfyUI workflow that uses node types Kiln lacks: ControlNetLoader (node 1)"),
    ("api.json", b'{"3": {"class_type": "ControlNetApply", "inputs": {}}}',
     "is a ComfyUI API prompt that uses node types Kiln lacks: ControlNetApply (node 3)"),
    ("random.json", b'{"name": "shopping", "items": [1, 2]}', 'not a Kiln graph (it has no "format"'),
    ("list.json", b"[1, 2, 3]", "is JSON (a list) but not a Kiln graph"),
    ("other.json", b'{"format": "blender.nodes", "version": 1}', "is a 'blender.nodes' file, not a Kiln graph"),
    ("noversion.json", b'{"format": "kiln.graph", "nodes": {}}', "no valid version number"),
    ("junk.bin", bytes(range(256)) * 4, "is binary data, not a Kiln graph"),
    ("latin1.json", '{"title": "café"}'.encode("latin-1"), "is not UTF-8 text"),
    ("empty.json", b"", "is empty"),
    ("blank.json", b"  \n\t\n", "is empty"),
    ("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(50), "is a JPEG image, not a Kiln graph"),
    ("pickle.pkl", b"\x80\x04\x95\x10\x00\x00\x00", "is a Python pickle, not a Kiln graph"),
    ("model.json", len(b'{"w": {}}').to_bytes(8, "little") + b'{"w": {}}' + bytes(16), "is a safetensors model file"),
    ("model.ckpt", b"PK\x03\x04" + bytes(30), "is a zip archive (a PyTorch checkpoint, perhaps)"),
    ("cut.json", b'{"format": "kiln.graph", "version": 1, "nodes": {', "is not valid JSON (line 1, column"),
    ("nan.json", b'{"format": "kiln.graph", "version": 1, "nodes": {}, "meta": {"x": NaN}}', "NaN"),
])
def test_foreign_files_say_what_they_are_not(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(GraphFileError) as caught:
        graph_file.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value)


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(GraphFileError, match="absent.json: no such file"):
        graph_file.load(tmp_path / "absent.json")
    with pytest.raises(GraphFileError, match="is a folder"):
        graph_file.load(tmp_path)


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _v1(**changes) -> dict:
    data = graph_file.graph_to_dict(full_graph())
    data.update(changes)
    return data


def _with_node(node_id: str, **fields) -> dict:
    data = _v1()
    data["nodes"][node_id].update(fields)
    return data


@pytest.mark.parametrize("data, expected", [
    (_with_node("add", type=None), "node 'add' has no \"type\""),
    (_with_node("add", type=3), "node 'add': \"type\" is not text"),
    (_with_node("add", params=[1, 2]), "node 'add': 'params' is not an object"),
    (_with_node("add", pos=[1.0]), "node 'add': \"pos\" is not 2 numbers"),
    (_with_node("add", pos=["1", 2]), "node 'add': \"pos\" is not 2 numbers"),
    (_with_node("add", pos=[True, 2]), "node 'add': \"pos\" is not 2 numbers"),
    (_with_node("add", pos=[10**400, 0]), "node 'add': pos.0 holds an integer too large"),
    (_with_node("add", title=["x"]), "node 'add': 'title' is not text"),
    (_with_node("add", collapsed="yes"), "node 'add': 'collapsed' is not true or false"),
    (_with_node("add", color="red"), "node 'add': \"color\" is not a colour"),
    (_v1(nodes={"a": "Number"}), "node 'a' is not an object"),
    (_v1(nodes={"": {"type": "Number"}}), "a node has an empty id"),
    (_v1(nodes=[]), '"nodes" is not an object'),
    (_v1(links={"a": 1}), '"links" is not a list'),
    (_v1(links=[{"from": ["seed", "value"], "to": ["ghost", "a"]}]), "refers to node 'ghost', which is not in the graph"),
    (_v1(links=[{"from": ["seed", "value"], "to": ["add"]}]), "link #1: \"to\" is not [node id, socket name]"),
    (_v1(links=[{"from": ["seed", "value"], "to": ["add", "a"]}] * 2), "node 'add': input 'a' has two links"),
    (_v1(backdrops={"seed": {"title": "x"}}), "backdrop 'seed' has the id of a node"),
    (_v1(backdrops={"b": {"rect": [0, 0, -5, 10]}}), "backdrop 'b': \"rect\" has a negative width"),
    (_v1(meta="notes"), '"meta" is not an object'),
    (_with_node("add", params={"deep": _nested(70)}), "node 'add', param 'deep'[0] is nested more than 64 levels deep"),
    (_with_node("add", params={"big": 2**2000}), "node 'add', param 'big' holds an integer too large"),
    (_with_node("add", params={"bad": ["\ud800"]}), "node 'add', param 'bad'[0] holds text with an invalid"),
    (_with_node("add", params={"obj": object()}), "node 'add', param 'obj' holds a value of type object, which is not JSON"),
])
def test_structural_problems_name_the_node_or_part(data, expected):
    with pytest.raises(GraphFileError) as caught:
        graph_file.graph_from_dict(data, source="shared.json")
    assert str(caught.value).startswith("shared.json: ")
    assert expected in str(caught.value)


def test_duplicate_node_ids_in_a_file_are_reported(tmp_path):
    text = graph_file.dumps(full_graph())
    duplicated = text.replace('"nodes": {', '"nodes": {\n    "show": {"type": "Show"},', 1)
    with pytest.raises(GraphFileError, match="shared.json: the key 'show' appears twice"):
        graph_file.loads(duplicated, source="shared.json")


def test_unknown_fields_from_a_newer_minor_release_are_ignored():
    data = _with_node("add", ports={"extra": 2})
    data["groups_v2"] = []
    graph = graph_file.graph_from_dict(data)
    assert graph.nodes["add"].params["scale"] == 2.5


def test_importing_the_file_modules_stays_light():
    code = ("import sys, engine.graph_file, engine.validate, engine.pngmeta;"
            "print(sorted(m for m in ('torch', 'PIL', 'PySide6') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parent.parent)
    assert result.stdout.strip() == "[]"
