"""The LAYOUT value: one validator whose messages name the box and the field, used by every node."""
from __future__ import annotations

import pytest

from engine import drawing
from engine.capabilities import ConditionerCapabilities
from engine.errors import UserInputError
from engine.executor import Executor
from engine.graph import Graph, Link, Node
from engine.layout import Layout, LayoutBox, LayoutError
from engine.spec import EngineSettings
from nodes import build_registry


def test_a_layout_reads_its_json_cleaned_and_writes_it_back():
    layout = Layout.from_json([{"label": " red   circle ", "box": [0, 0.25, 0.5, 1]}], drawing.LAYOUT_LABELS)
    assert layout == Layout((LayoutBox("red circle", (0.0, 0.25, 0.5, 1.0)),))
    assert layout.to_json() == [{"label": "red circle", "box": [0.0, 0.25, 0.5, 1.0]}]
    assert Layout.from_json(layout.to_json()) == layout and len(Layout()) == 0
    assert Layout.from_json([{"label": "a dog", "box": [0.1, 0.2, 0.4, 0.5]}]).boxes[0].label == "a dog"


@pytest.mark.parametrize(("boxes", "number", "field", "message"), [
    ([{"label": "red circle", "box": [0, 0, 1, 1]}, {"label": "red circle", "box": [0.2, 0.2, 1.2, 0.5]}],
     2, "box", 'box 2, "box": [0.2, 0.2, 1.2, 0.5] is outside [0, 1]'),
    ([{"label": "red circle", "box": [0.5, 0.2, 0.4, 0.5]}], 1, "box", "needs x0 < x1 and y0 < y1"),
    ([{"label": "red circle", "box": [0.1, 0.2, 0.4]}], 1, "box", "needs four numbers [x0, y0, x1, y1]"),
    ([{"label": "red circle", "box": [0.1, 0.2, 0.4, float("nan")]}], 1, "box", "needs four numbers"),
    ([{"label": "red circle", "box": [0.1, True, 0.4, 0.5]}], 1, "box", "needs four numbers"),
    ([{"box": [0.1, 0.2, 0.4, 0.5]}], 1, "label", 'box 1, "label": needs text, got None'),
    ([{"label": "  ", "box": [0.1, 0.2, 0.4, 0.5]}], 1, "label", "is empty"),
    ([{"label": "a dog", "box": [0.1, 0.2, 0.4, 0.5]}], 1, "label", "'a dog' is not one the built-in model"),
    ([["red circle", [0, 0, 1, 1]]], 1, None, 'box 1: is not {"label"'),
    ({"boxes": []}, None, None, "a layout is a list of"),
])
def test_a_bad_layout_is_refused_naming_the_box_and_the_field(boxes, number, field, message):
    with pytest.raises(LayoutError) as caught:
        Layout.from_json(boxes, drawing.LAYOUT_LABELS)
    assert (caught.value.number, caught.value.field) == (number, field)
    assert message in str(caught.value)


def test_every_node_that_takes_boxes_refuses_them_with_the_same_message():
    registry = build_registry()
    bad = [{"label": "red circle", "box": [0.5, 0.2, 0.4, 0.5]}]
    expected = 'box 1, "box": [0.5, 0.2, 0.4, 0.5] needs x0 < x1 and y0 < y1'
    for node_type in ("LayoutEditor", "LayoutEncode"):
        spec = registry[node_type]
        inputs = {"conditioner": _TextAndBoxes()} if node_type == "LayoutEncode" else {}
        with pytest.raises(UserInputError, match="needs x0 < x1") as caught:
            spec.compute(None, inputs, {**spec.default_params(), "boxes": bad})
        assert expected in str(caught.value) and caught.value.param == "boxes"


def test_a_layout_travels_between_nodes_as_a_layout_value(tmp_path):
    graph = Graph()
    boxes = [{"label": "blue square", "box": [0.25, 0.25, 0.5, 0.75]}]
    graph.add_node(Node("editor", "LayoutEditor", params={"boxes": boxes}))
    graph.add_node(Node("plan", "PlanLayout"))
    graph.add_node(Node("ckpt", "CheckpointLoader"))
    graph.add_node(Node("prompt", "TextEncode", params={"text": "a blue square"}))
    graph.connect(Link("ckpt", "conditioner", "prompt", "conditioner"))
    graph.connect(Link("ckpt", "conditioner", "plan", "conditioner"))
    graph.connect(Link("prompt", "conditioning", "plan", "conditioning"))
    graph.connect(Link("editor", "layout", "plan", "layout"))
    settings = EngineSettings(device="cpu", cache_dir=str(tmp_path), output_dir=str(tmp_path))
    result = Executor(build_registry(), settings).run(graph, ["editor", "plan"])
    assert result.ok, result.error
    assert result.outputs["editor"]["layout"] == result.outputs["plan"]["layout"] == Layout.from_json(boxes)
    assert result.outputs["plan"]["conditioning"].meta["layout"] == [boxes]


class _TextAndBoxes:
    """A conditioner stand-in that takes layouts (the validator runs before any encoding)."""

    capabilities = ConditionerCapabilities("text", layout_tokens=True)
