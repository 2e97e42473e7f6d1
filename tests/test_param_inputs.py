"""Params shown as input sockets: the graph file, the link rules, the executor and its cache,
and the one Seed node that drives the planner and the sampler of text_to_image.json."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from toy_nodes import build_graph, make_toy_kit

from engine import graph_file
from engine.cache import ResultCache
from engine.errors import GraphFileError
from engine.executor import Executor
from engine.graph import Link
from engine.spec import EngineSettings, NodeRegistry, NodeSpec, Output, Param, ParamType, SocketType
from engine.validate import validate
from nodes import build_registry, primitives

GRAPHS = Path(__file__).resolve().parents[1] / "resources" / "graphs"
SEEN: dict[str, dict] = {}  # node id -> the params its compute got, for the Knobs node type


def _knobs(ctx, inputs, params) -> dict:
    SEEN[ctx.node_id] = dict(params)
    return {"value": 0}


KNOBS = NodeSpec(type="Knobs", title="Knobs", category="test", help="One param of each scalar kind.",
                 compute=_knobs, outputs=(Output("value", SocketType.INT),),
                 params=(Param("count", ParamType.INT, 3, min=0, max=10),
                         Param("seed", ParamType.SEED, 1),
                         Param("strength", ParamType.FLOAT, 0.5),
                         Param("name", ParamType.STRING, "abc"),
                         Param("prompt", ParamType.TEXT, "a red circle"),
                         Param("file", ParamType.PATH, ""),
                         Param("sampler", ParamType.CHOICE, "euler", choices=("euler", "heun")),
                         Param("enabled", ParamType.BOOL, True)))


@pytest.fixture
def kit():
    kit = make_toy_kit()
    kit.registry.register_all(primitives.SPECS)
    kit.registry.register(KNOBS)
    SEEN.clear()
    return kit


@pytest.fixture
def ex(kit, tmp_path):
    settings = EngineSettings(output_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    return Executor(kit.registry, settings)


def _driven(source: tuple[str, dict], param: str, output: str = "value"):
    """A primitive node `src` feeding the converted param `param` of a Knobs node `knobs`."""
    graph = build_graph({"src": source, "knobs": ("Knobs", {})}, [f"src.{output} -> knobs.{param}"])
    graph.nodes["knobs"].param_inputs = [param]
    return graph


def statuses(result) -> dict[str, str]:
    return {nid: run.status for nid, run in result.nodes.items()}


# --- the graph file --------------------------------------------------------------


def test_converted_params_are_saved_and_loaded_with_their_links():
    graph = build_graph({"seed": ("Seed", {"value": 5}), "c": ("Const", {}), "m": ("Mul", {"k": 2})},
                        ["c.value -> m.x", "seed.seed -> m.k"])
    graph.nodes["m"].param_inputs = ["k"]
    text = graph_file.dumps(graph)
    data = json.loads(text)
    assert data["nodes"]["m"]["param_inputs"] == ["k"]
    assert "param_inputs" not in data["nodes"]["c"]  # written only where there is one
    loaded = graph_file.loads(text)
    assert loaded.nodes["m"].param_inputs == ["k"] and loaded.nodes["c"].param_inputs == []
    assert Link("seed", "seed", "m", "k") in loaded.links
    assert graph_file.dumps(loaded) == text


@pytest.mark.parametrize("path", sorted(GRAPHS.glob("*.json")) + [Path(__file__).parent / "fixtures" /
                                                                  "graph_v0_migrated.json"], ids=lambda p: p.stem)
def test_files_load_and_save_back_byte_for_byte(path):
    text = path.read_text(encoding="utf-8")
    graph = graph_file.loads(text, str(path))
    assert graph_file.dumps(graph) == text
    if path.stem not in ("text_to_image", "default"):
        assert all(node.param_inputs == [] for node in graph) and "param_inputs" not in text


@pytest.mark.parametrize("value, words", [("seed", "is not a list of param names"),
                                          (["seed", 3], "is not a list of param names"),
                                          (["seed", "seed"], "names a param twice")])
def test_a_malformed_param_inputs_list_names_the_node(value, words):
    data = {"format": "kiln.graph", "version": 1,
            "nodes": {"s": {"type": "Sampler", "params": {}, "param_inputs": value}}, "links": []}
    with pytest.raises(GraphFileError, match=f"node 's': \"param_inputs\" {words}"):
        graph_file.graph_from_dict(data, "g.json")


# --- what may feed what ---------------------------------------------------------------


@pytest.mark.parametrize("source, output, param", [
    (("Integer", {"value": 4}), "value", "count"),
    (("Seed", {"value": 4}), "seed", "seed"),
    (("Integer", {"value": 4}), "value", "seed"),
    (("Integer", {"value": 4}), "value", "strength"),
    (("Float", {"value": 0.25}), "value", "strength"),
    (("Text", {"value": "x"}), "value", "name"),
    (("Text", {"value": "x"}), "value", "prompt"),
    (("Text", {"value": "x"}), "value", "file"),
    (("Text", {"value": "heun"}), "value", "sampler"),
])
def test_allowed_links_into_params_validate(kit, source, output, param):
    assert validate(_driven(source, param, output), kit.registry) == []


@pytest.mark.parametrize("source, output, param, words", [
    (("Float", {"value": 0.5}), "value", "count", "FLOAT output cannot feed the int param 'count' (it takes INT)"),
    (("Text", {"value": "3"}), "value", "seed", "STRING output cannot feed the seed param 'seed'"),
    (("Integer", {"value": 3}), "value", "prompt", "INT output cannot feed the text param 'prompt'"),
])
def test_links_of_the_wrong_type_into_params_are_refused_naming_the_param(kit, source, output, param, words):
    (issue,) = validate(_driven(source, param, output), kit.registry)
    assert (issue.kind, issue.node_id, issue.param) == ("type_mismatch", "knobs", param)
    assert words in issue.message


def test_a_link_into_a_param_not_shown_as_an_input_is_reported(kit):
    graph = _driven(("Integer", {"value": 4}), "count")
    graph.nodes["knobs"].param_inputs = []
    (issue,) = validate(graph, kit.registry)
    assert (issue.kind, issue.param) == ("bad_link", "count") and "not shown as an input" in issue.message


def test_a_bool_param_cannot_be_shown_as_an_input(kit):
    graph = build_graph({"knobs": ("Knobs", {})})
    graph.nodes["knobs"].param_inputs = ["enabled"]
    (issue,) = validate(graph, kit.registry)
    assert (issue.kind, issue.param) == ("bad_param", "enabled") and "cannot take a link" in issue.message


def test_a_converted_param_with_no_link_uses_its_own_value(kit, ex):
    graph = build_graph({"knobs": ("Knobs", {"count": 7})})
    graph.nodes["knobs"].param_inputs = ["count"]
    assert validate(graph, kit.registry, ["knobs"]) == []  # not a missing input
    assert ex.run(graph, ["knobs"]).ok
    assert SEEN["knobs"]["count"] == 7


# --- running ---------------------------------------------------------------------------


def test_the_linked_value_replaces_the_param_and_an_int_feeds_a_float(kit, ex):
    graph = _driven(("Integer", {"value": 9}), "count")
    graph.nodes["knobs"].params["count"] = 2
    assert ex.run(graph, ["knobs"]).ok
    assert SEEN["knobs"]["count"] == 9
    graph = _driven(("Integer", {"value": 2}), "strength")
    assert ex.run(graph, ["knobs"]).ok
    assert SEEN["knobs"]["strength"] == 2.0 and isinstance(SEEN["knobs"]["strength"], float)


def test_a_linked_value_the_param_refuses_fails_the_node_naming_node_and_param(kit, ex):
    result = ex.run(_driven(("Integer", {"value": 12}), "count"), ["knobs"])
    assert not result.ok
    assert (result.error.node_id, result.error.param) == ("knobs", "count")
    assert str(result.error) == ("node 'knobs', param 'count': 12 is above the maximum 10 "
                                 "(the value linked from src.value)")
    result = ex.run(_driven(("Text", {"value": "ddim"}), "sampler"), ["knobs"])
    assert "'ddim' is not one of: euler, heun" in str(result.error)


def _one_seed_two_users():
    graph = build_graph({"seed": ("Seed", {"value": 5}), "c": ("Const", {"value": 10}), "c2": ("Const", {"value": 20}),
                         "a": ("Mul", {}), "b": ("Mul", {}), "other": ("Mul", {"k": 3})},
                        ["c.value -> a.x", "c2.value -> b.x", "c.value -> other.x",
                         "seed.seed -> a.k", "seed.seed -> b.k"])
    graph.nodes["a"].param_inputs = graph.nodes["b"].param_inputs = ["k"]
    return graph


def test_changing_the_seed_node_reruns_the_nodes_it_feeds_and_nothing_else(kit, ex):
    graph = _one_seed_two_users()
    first = ex.run(graph, ["a", "b", "other"])
    assert (first.outputs["a"]["value"], first.outputs["b"]["value"], first.outputs["other"]["value"]) == (50, 100, 30)
    graph.nodes["seed"].params["value"] = 6
    kit.calls.clear()
    second = ex.run(graph, ["a", "b", "other"])
    assert statuses(second) == {"c": "cached", "c2": "cached", "seed": "ran", "a": "ran", "b": "ran",
                                "other": "cached"}
    assert sorted(kit.calls) == ["a", "b"]
    assert (second.outputs["a"]["value"], second.outputs["b"]["value"]) == (60, 120)


def test_the_unused_value_of_a_linked_param_is_not_part_of_its_cache_key(kit, ex):
    graph = _one_seed_two_users()
    ex.run(graph, ["a"])
    graph.nodes["a"].params["k"] = 100  # hidden behind the link: changes nothing
    result = ex.run(graph, ["a"])
    assert statuses(result)["a"] == "cached" and result.outputs["a"]["value"] == 50


def test_a_file_named_by_a_linked_text_is_part_of_the_cache_key(kit, ex, tmp_path):
    model = tmp_path / "model.txt"
    model.write_text("3")
    graph = build_graph({"name": ("Text", {"value": str(model)}), "user": ("ModelUser", {"k": 2})},
                        ["name.value -> user.path"])
    graph.nodes["user"].param_inputs = ["path"]
    assert ex.run(graph, ["user"]).outputs["user"]["value"] == 6
    assert statuses(ex.run(graph, ["user"]))["user"] == "cached"
    model.write_text("40")  # the same name, another file
    assert statuses(ex.run(graph, ["user"]))["user"] == "ran"


# --- text_to_image.json: one seed ----------------------------------------------------------


def _recording_registry(seen: dict[str, dict]) -> NodeRegistry:
    """The real node types with computes that record their params and give placeholder outputs
    (the primitives, such as Seed, give their real value)."""
    def record(ctx, inputs, params, spec=None) -> dict:
        seen[ctx.node_id] = dict(params)
        if spec in primitives.SPECS:
            return spec.compute(ctx, inputs, params)
        return {o.name: f"{ctx.node_id}.{o.name}" for o in spec.outputs}

    registry = NodeRegistry()
    for spec in build_registry():
        registry.register(replace(spec, compute=lambda c, i, p, s=spec: record(c, i, p, s), side_effects=False))
    return registry


def test_the_seed_node_of_text_to_image_drives_the_plan_and_the_sampler(tmp_path):
    seen: dict[str, dict] = {}
    settings = EngineSettings(output_dir=str(tmp_path))
    ex = Executor(_recording_registry(seen), settings, cache=ResultCache.from_settings(settings, disk=False))
    graph = graph_file.load(GRAPHS / "text_to_image.json")
    assert graph.nodes["seed"].type == "Seed"
    ex.run(graph, ["sampler"])
    shipped = graph.nodes["seed"].params["value"]
    assert seen["plan"]["seed"] == seen["sampler"]["seed"] == shipped
    graph.nodes["seed"].params["value"] = shipped + 1000
    result = ex.run(graph, ["sampler"])
    assert seen["plan"]["seed"] == seen["sampler"]["seed"] == shipped + 1000
    assert {n for n, s in statuses(result).items() if s == "ran"} == {"seed", "plan", "sampler"}


def test_set_on_the_command_line_sets_the_one_seed_or_one_param_alone(tmp_path):
    from kiln.cli import apply_overrides, parse_set

    seen: dict[str, dict] = {}
    registry = _recording_registry(seen)
    settings = EngineSettings(output_dir=str(tmp_path))
    ex = Executor(registry, settings, cache=ResultCache.from_settings(settings, disk=False))
    graph = graph_file.load(GRAPHS / "text_to_image.json")
    ex.run(apply_overrides(graph, [parse_set("seed.value=77", graph, registry)]), ["sampler"])
    assert seen["plan"]["seed"] == seen["sampler"]["seed"] == 77
    alone = apply_overrides(graph, [parse_set("sampler.seed=78", graph, registry)])
    assert "seed" not in alone.incoming("sampler") and "seed" in graph.incoming("sampler")  # the file is untouched
    ex.run(alone, ["sampler"])
    assert (seen["plan"]["seed"], seen["sampler"]["seed"]) == (graph.nodes["seed"].params["value"], 78)


def test_the_evaluator_sets_the_seed_node_of_text_to_image():
    from training.generators import text_graph

    graph = text_graph("m.safetensors", "a red circle", 1_000_123)
    assert graph.nodes["seed"].params["value"] == 1_000_123
    assert graph.incoming("plan")["seed"].src == graph.incoming("sampler")["seed"].src == "seed"
