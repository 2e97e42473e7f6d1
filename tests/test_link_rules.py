"""The link rules (engine.link_rules): one verdict for the editor's drag and drop and the validator."""
from __future__ import annotations

import pytest

from engine.graph import Graph, Link, Node
from engine.link_rules import UNKNOWN_TYPE, link_verdict
from engine.spec import Input, NodeRegistry, NodeSpec, Output, Param, ParamType, SocketType
from engine.validate import validate


def _never_run(ctx, inputs, params):
    raise AssertionError("the rules must not run nodes")


def _spec(type_: str, inputs=(), outputs=(), params=()) -> NodeSpec:
    return NodeSpec(type_, type_, "test", type_, _never_run, inputs=tuple(inputs), outputs=tuple(outputs),
                    params=tuple(params))


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    reg.register_all([
        _spec("Number", outputs=[Output("value", SocketType.INT)]),
        _spec("Ratio", outputs=[Output("value", SocketType.FLOAT)]),
        _spec("Text", outputs=[Output("text", SocketType.STRING)]),
        _spec("Picture", outputs=[Output("image", SocketType.IMAGE)]),
        _spec("Add", inputs=[Input("a", SocketType.INT), Input("b", SocketType.INT, optional=True)],
              outputs=[Output("value", SocketType.INT)]),
        _spec("Blur", inputs=[Input("image", SocketType.IMAGE)], outputs=[Output("image", SocketType.IMAGE)],
              params=[Param("radius", ParamType.INT, 2), Param("strength", ParamType.FLOAT, 0.5),
                      Param("mode", ParamType.CHOICE, "box", choices=("box", "gauss")),
                      Param("sharp", ParamType.BOOL, False)]),
    ])
    return reg


def graph() -> Graph:
    """n, r, t, pic and blur (radius, strength and sharp shown as inputs); n -> add -> add2."""
    g = Graph()
    for node_id, type_ in [("n", "Number"), ("r", "Ratio"), ("t", "Text"), ("pic", "Picture"),
                           ("blur", "Blur"), ("add", "Add"), ("add2", "Add")]:
        g.add_node(Node(node_id, type_))
    g.nodes["blur"].param_inputs = ["radius", "strength", "sharp"]
    for link in [Link("pic", "image", "blur", "image"), Link("n", "value", "add", "a"),
                 Link("add", "value", "add2", "a")]:
        g.connect(link)
    return g


@pytest.mark.parametrize("link, reason, kind", [
    (Link("n", "value", "add", "b"), None, ""),
    (Link("n", "value", "blur", "radius"), None, ""),
    (Link("n", "value", "blur", "strength"), None, ""),  # an INT feeds a FLOAT param
    (Link("r", "value", "add", "b"), "FLOAT output cannot feed the INT input 'b'", "type_mismatch"),
    (Link("pic", "image", "add", "b"), "IMAGE output cannot feed the INT input 'b'", "type_mismatch"),
    (Link("r", "value", "blur", "radius"), "FLOAT output cannot feed the int param 'radius' (it takes INT)",
     "type_mismatch"),
    (Link("n", "value", "blur", "sharp"), "the bool param 'sharp' cannot take a link", "type_mismatch"),
    (Link("t", "text", "blur", "mode"), ("the param 'mode' is not shown as an input "
                                         "(convert it to an input, or remove the link)"), "bad_link"),
    (Link("n", "value", "blur", "size"), "Blur has no input 'size' (inputs: image)", "bad_link"),
    (Link("n", "total", "add", "b"), "Number has no output 'total' (outputs: value)", "bad_link"),
    (Link("ghost", "value", "add", "b"), "node 'ghost' is not in the graph", "bad_link"),
    (Link("add", "value", "add", "b"), "a node cannot feed itself", "cycle"),
    (Link("add2", "value", "add", "b"), "this link would make a cycle", "cycle"),
])
def test_each_rule_gives_its_verdict_and_reason(link, reason, kind):
    verdict = link_verdict(graph(), registry(), link)
    assert (verdict.allowed, verdict.reason, verdict.kind) == (reason is None, reason, kind)


def test_a_node_of_an_unknown_type_takes_no_link():
    g = graph()
    g.add_node(Node("odd", "Teleport"))
    verdict = link_verdict(g, registry(), Link("odd", "value", "add", "b"))
    assert (verdict.reason, verdict.node_id) == (UNKNOWN_TYPE, "odd")


def test_a_link_into_a_taken_input_replaces_the_one_it_has():
    g = graph()
    assert link_verdict(g, registry(), Link("r", "value", "blur", "strength")).replaces is None
    verdict = link_verdict(g, registry(), Link("add2", "value", "blur", "radius"))
    assert verdict.allowed and verdict.replaces is None
    g.connect(Link("n", "value", "blur", "radius"))
    verdict = link_verdict(g, registry(), Link("add2", "value", "blur", "radius"))
    assert verdict.allowed and verdict.replaces == Link("n", "value", "blur", "radius")


LOOP_REASONS = ("a node cannot feed itself", "this link would make a cycle")


def _every_candidate(g: Graph, reg: NodeRegistry) -> list[Link]:
    """Every output of every node to every input and param of every node, and a few wrong names."""
    links = []
    for src in g:
        outputs = [o.name for o in reg[src.type].outputs] + ["total"]
        for dst in g:
            spec = reg[dst.type]
            inputs = [i.name for i in spec.inputs] + [p.name for p in spec.params] + ["size"]
            links += [Link(src.id, out, dst.id, inp) for out in outputs for inp in inputs]
    return links


def test_the_editor_refuses_exactly_the_links_the_validator_flags(qapp):
    from app.document import Document
    from app.editing import Editor

    reg, base = registry(), graph()
    before = set(validate(base, reg))
    doc = Document(reg)
    doc.set_graph(base.copy(), None)
    editor = Editor(doc)
    candidates = _every_candidate(base, reg)
    refused = 0
    for link in candidates:
        with_link = base.copy()
        with_link.connect(link)
        flagged = [issue for issue in validate(with_link, reg) if issue not in before]
        problem = editor.connection_problem(link.src, link.src_socket, link.dst, link.dst_socket)
        assert (problem is None) == (flagged == []), (link, problem, flagged)
        if problem in LOOP_REASONS:  # the validator names the loop on each of its nodes
            assert any(issue.kind == "cycle" for issue in flagged), (link, flagged)
        elif problem is not None:
            assert any(problem in issue.message for issue in flagged), (problem, flagged)
        refused += problem is not None
    assert 0 < refused < len(candidates)
    assert doc.graph == base  # asking changed nothing
