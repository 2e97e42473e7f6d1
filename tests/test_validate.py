"""Validation reports every problem at once, each against the node that has it."""
from __future__ import annotations

import pytest

from engine.errors import Issue, ValidationError
from engine.graph import Graph, Link, Node
from engine.spec import Input, NodeRegistry, NodeSpec, Output, Param, ParamType, SocketType
from engine.validate import check, validate


def _never_run(ctx, inputs, params):
    raise AssertionError("validation must not run nodes")


def toy_registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.register_all([
        NodeSpec("Number", "Number", "toy", "an integer source", _never_run,
                 outputs=(Output("value", SocketType.INT),),
                 params=(Param("value", ParamType.INT, 0),)),
        NodeSpec("Add", "Add", "toy", "a + b, times scale", _never_run,
                 inputs=(Input("a", SocketType.INT), Input("b", SocketType.INT)),
                 outputs=(Output("sum", SocketType.INT),),
                 params=(Param("scale", ParamType.FLOAT, 1.0, min=0.0, max=10.0),)),
        NodeSpec("Blur", "Blur", "toy", "blurs an image", _never_run,
                 inputs=(Input("image", SocketType.IMAGE),),
                 outputs=(Output("image", SocketType.IMAGE),),
                 params=(Param("mode", ParamType.CHOICE, "box", choices=("box", "gauss")),
                         Param("radius", ParamType.INT, 2, min=0, max=50),
                         Param("sampler", ParamType.CHOICE, "ddim", choices_from="samplers"))),
        NodeSpec("Show", "Show", "toy", "shows a value", _never_run,
                 inputs=(Input("value", SocketType.INT), Input("label", SocketType.STRING, optional=True)),
                 output_node=True),
    ])
    return registry


def chain() -> Graph:
    """Number -> Add(a, b) -> Show: a valid graph."""
    graph = Graph()
    graph.add_node(Node("n", "Number", params={"value": 3}))
    graph.add_node(Node("add", "Add", params={"scale": 2.0}))
    graph.add_node(Node("show", "Show"))
    graph.connect(Link("n", "value", "add", "a"))
    graph.connect(Link("n", "value", "add", "b"))
    graph.connect(Link("add", "sum", "show", "value"))
    return graph


def kinds(issues: list[Issue]) -> list[tuple[str, str | None]]:
    return [(i.kind, i.node_id) for i in issues]


def test_a_valid_graph_has_no_issues_and_check_passes():
    assert validate(chain(), toy_registry()) == []
    check(chain(), toy_registry())


def test_missing_params_take_the_default_and_unknown_params_are_kept_silently():
    graph = chain()
    graph.nodes["add"].params = {"added_in_kiln_9": {"x": [1, 2]}}
    assert validate(graph, toy_registry()) == []
    assert graph.nodes["add"].params == {"added_in_kiln_9": {"x": [1, 2]}}


def test_unknown_type_suggests_a_close_name():
    graph = chain()
    graph.nodes["add"].type = "Ad"
    issues = validate(graph, toy_registry())
    assert kinds(issues) == [("unknown_type", "add")]
    assert str(issues[0]) == "node 'add': unknown node type 'Ad' (did you mean 'Add'?)"


def test_missing_required_input_is_reported_but_not_a_missing_optional_one():
    graph = chain()
    graph.disconnect(Link("n", "value", "add", "b"))
    issues = validate(graph, toy_registry())
    assert [(i.kind, i.node_id, i.socket) for i in issues] == [("missing_input", "add", "b")]
    assert str(issues[0]) == "node 'add', input 'b': is required but not connected (it takes INT)"


def test_socket_type_mismatch_names_both_ends():
    graph = chain()
    graph.add_node(Node("blur", "Blur"))
    graph.connect(Link("n", "value", "blur", "image"))
    issues = validate(graph, toy_registry())
    assert [(i.kind, i.node_id, i.socket) for i in issues] == [("type_mismatch", "blur", "image")]
    assert issues[0].message == "INT output cannot feed the IMAGE input 'image' (link n.value → blur.image)"


def test_links_to_unknown_sockets_are_bad_links_on_the_node_lacking_the_socket():
    graph = chain()
    graph.connect(Link("n", "value", "show", "caption"))
    graph.disconnect(Link("add", "sum", "show", "value"))
    graph.connect(Link("add", "total", "show", "value"))
    issues = validate(graph, toy_registry())
    assert [(i.kind, i.node_id, i.socket) for i in issues] == [
        ("bad_link", "add", None), ("bad_link", "show", "caption")]
    assert "has no output 'total'" in issues[0].message and "outputs: sum" in issues[0].message
    assert "has no input 'caption'" in issues[1].message and "inputs: value, label" in issues[1].message


def test_links_to_nodes_not_in_the_graph_and_doubled_inputs_are_bad_links():
    graph = chain()
    graph.links.append(Link("ghost", "value", "show", "label"))
    graph.links.append(Link("n", "value", "add", "a"))  # a second link into add.a
    issues = validate(graph, toy_registry())
    assert sorted((i.kind, i.node_id, i.socket) for i in issues) == [
        ("bad_link", "add", "a"), ("bad_link", "show", "label")]
    assert any("not in the graph" in i.message for i in issues)


@pytest.mark.parametrize("node_type, params, param, fragment", [
    ("Add", {"scale": 11.0}, "scale", "above the maximum 10"),
    ("Add", {"scale": -0.5}, "scale", "below the minimum 0"),
    ("Add", {"scale": "fast"}, "scale", "expects a number"),
    ("Add", {"scale": float("inf")}, "scale", "finite"),
    ("Add", {"scale": 10**400}, "scale", "above the maximum 10"),
    ("Number", {"value": 1.5}, "value", "expects an integer"),
    ("Number", {"value": True}, "value", "expects an integer"),
    ("Blur", {"mode": "median"}, "mode", "'median' is not one of: box, gauss"),
    ("Blur", {"radius": 51}, "radius", "above the maximum 50"),
    ("Blur", {"sampler": 3}, "sampler", "expects text"),
])
def test_bad_params_are_reported_with_the_param_name(node_type, params, param, fragment):
    graph = Graph()
    graph.add_node(Node("x", node_type, params=params))
    issues = [i for i in validate(graph, toy_registry()) if i.kind == "bad_param"]
    assert [(i.node_id, i.param) for i in issues] == [("x", param)]
    assert fragment in issues[0].message


def test_a_dynamic_choice_accepts_any_name_at_validation():
    graph = Graph()
    graph.add_node(Node("x", "Blur", params={"sampler": "dpmpp_2m"}))
    assert [i.kind for i in validate(graph, toy_registry())] == ["missing_input"]


def test_every_node_on_a_cycle_is_reported_and_no_other():
    graph = chain()
    graph.add_node(Node("add2", "Add"))
    graph.add_node(Node("add3", "Add"))
    graph.connect(Link("add", "sum", "add2", "a"))
    graph.connect(Link("add2", "sum", "add3", "a"))
    graph.connect(Link("add3", "sum", "add2", "b"))  # add2 <-> add3 loop
    graph.connect(Link("add3", "sum", "add3", "b"))  # and a self-loop
    issues = validate(graph, toy_registry())
    cycles = [i for i in issues if i.kind == "cycle"]
    assert [(i.node_id, i.node_ids()) for i in cycles] == [("add2", ("add2", "add3"))]  # once, with its members
    assert "cycle: add2 → add3 → add2" in cycles[0].message
    assert [i for i in issues if i.kind != "cycle"] == []


def test_a_self_loop_alone_is_a_cycle():
    graph = Graph()
    graph.add_node(Node("a", "Add"))
    graph.connect(Link("a", "sum", "a", "a"))
    graph.connect(Link("a", "sum", "a", "b"))
    assert kinds(validate(graph, toy_registry())) == [("cycle", "a")]


def test_all_problems_come_back_together():
    graph = chain()
    graph.add_node(Node("mystery", "Teleport"))
    graph.add_node(Node("blur", "Blur", params={"radius": -1}))
    graph.connect(Link("n", "value", "blur", "image"))
    graph.disconnect(Link("n", "value", "add", "b"))
    issues = validate(graph, toy_registry())
    assert sorted(kinds(issues)) == [("bad_param", "blur"), ("missing_input", "add"),
                                     ("type_mismatch", "blur"), ("unknown_type", "mystery")]
    with pytest.raises(ValidationError) as caught:
        check(graph, toy_registry())
    assert caught.value.issues == issues
    assert "node 'mystery': unknown node type 'Teleport'" in str(caught.value)
    assert "node 'blur', param 'radius'" in str(caught.value)


def test_targets_limit_missing_input_checks_to_what_they_depend_on():
    graph = chain()
    graph.add_node(Node("lonely", "Show"))  # unconnected, not needed for "show"
    graph.add_node(Node("half", "Add"))
    graph.connect(Link("n", "value", "half", "a"))
    assert kinds(validate(graph, toy_registry(), targets=["show"])) == []
    assert sorted(kinds(validate(graph, toy_registry()))) == [("missing_input", "half"),
                                                              ("missing_input", "lonely")]
    assert kinds(validate(graph, toy_registry(), targets=["half"])) == [("missing_input", "half")]


def test_targets_ancestors_are_checked_and_titles_work():
    graph = chain()
    graph.nodes["show"].title = "Final"
    graph.disconnect(Link("n", "value", "add", "b"))
    assert kinds(validate(graph, toy_registry(), targets=["Final"])) == [("missing_input", "add")]


def test_an_unknown_target_is_reported():
    issues = validate(chain(), toy_registry(), targets=["nowhere"])
    assert [i.kind for i in issues] == ["bad_target"]
    assert "'nowhere'" in str(issues[0])


def test_disabled_nodes_skip_missing_inputs_but_keep_type_checks():
    graph = Graph()
    graph.add_node(Node("n", "Number"))
    graph.add_node(Node("blur", "Blur", disabled=True))
    graph.add_node(Node("add", "Add", disabled=True))
    graph.connect(Link("n", "value", "blur", "image"))
    assert kinds(validate(graph, toy_registry())) == [("type_mismatch", "blur")]


def test_validation_never_runs_or_changes_the_graph():
    graph = chain()
    graph.nodes["add"].params["scale"] = 99.0
    before = graph.copy()
    validate(graph, toy_registry())
    assert graph == before
