"""Small integer node types for executor/cache/CLI tests; each kit records which nodes ran.

Build one with `make_toy_kit()`: every compute appends its node id to `kit.calls`,
so a test can assert exactly which nodes ran. Nothing here is global.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserInputError
from engine.graph import Graph, Link, Node
from engine.spec import FILES_KEY, Input, NodeRegistry, NodeSpec, Output, Param, ParamType, SocketType

INT, STRING = SocketType.INT, SocketType.STRING
VALUE_OUTPUT = (Output("value", INT),)


@dataclass
class ToyKit:
    registry: NodeRegistry
    calls: list[str] = field(default_factory=list)  # node ids, in the order their compute ran
    loop_started: threading.Event = field(default_factory=threading.Event)
    model_loads: list[str] = field(default_factory=list)  # paths the ModelUser loader read


def make_toy_kit() -> ToyKit:
    kit = ToyKit(NodeRegistry())

    def logged(fn: Callable) -> Callable:
        def compute(ctx: Any, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
            kit.calls.append(ctx.node_id)
            return fn(ctx, inputs, params)
        return compute

    def spec(type_: str, fn: Callable, inputs=(), outputs=VALUE_OUTPUT, params=(), **kw) -> None:
        kit.registry.register(NodeSpec(type=type_, title=type_, category="toy", help=type_,
                                       compute=logged(fn), inputs=tuple(inputs), outputs=tuple(outputs),
                                       params=tuple(params), **kw))

    spec("Const", lambda c, i, p: {"value": p["value"]}, params=[Param("value", ParamType.INT, 1)])
    spec("Add", lambda c, i, p: {"value": i["a"] + i.get("b", 0)},
         inputs=[Input("a", INT), Input("b", INT, optional=True)])
    spec("Mul", lambda c, i, p: {"value": i["x"] * p["k"]}, inputs=[Input("x", INT)],
         params=[Param("k", ParamType.INT, 2)])
    spec("Sink", lambda c, i, p: {"value": i["x"]}, inputs=[Input("x", INT)], output_node=True)
    spec("Label", lambda c, i, p: {"text": p["text"]}, outputs=[Output("text", STRING)],
         params=[Param("text", ParamType.STRING, "abc")])
    spec("Length", lambda c, i, p: {"value": len(i["s"])}, inputs=[Input("s", STRING)])
    spec("Loop", _loop(kit), inputs=[Input("x", INT, optional=True)],
         params=[Param("steps", ParamType.INT, 5), Param("delay", ParamType.FLOAT, 0.0)])
    spec("Fail", _fail, inputs=[Input("x", INT)],
         params=[Param("mode", ParamType.CHOICE, "runtime", choices=("ok", "runtime", "user", "bad_return"))])
    spec("ModelUser", _model_user(kit), params=[Param("path", ParamType.PATH, ""), Param("k", ParamType.INT, 1)])
    spec("Pick", lambda c, i, p: {"value": len(p["name"])},
         params=[Param("name", ParamType.CHOICE, "", choices_from="checkpoints")])
    spec("Record", _record, inputs=[Input("x", INT)], side_effects=True, output_node=True)
    return kit


def _loop(kit: ToyKit) -> Callable:
    def compute(ctx: Any, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
        kit.loop_started.set()
        for step in range(params["steps"]):
            ctx.check_cancelled()
            time.sleep(params["delay"])
            ctx.count_model_evals(1)
            ctx.progress(step + 1, params["steps"])
        return {"value": inputs.get("x", 0) + params["steps"]}
    return compute


def _fail(ctx: Any, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    mode = params["mode"]
    if mode == "runtime":
        raise RuntimeError("boom\nsecond line of detail")
    if mode == "user":
        raise UserInputError("mode 'user' is not allowed here", "mode")
    if mode == "bad_return":
        return {"wrong": 1}
    return {"value": inputs["x"]}


def _model_user(kit: ToyKit) -> Callable:
    def compute(ctx: Any, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
        path = params["path"]

        def load() -> int:
            kit.model_loads.append(path)
            with open(path) as f:
                return int(f.read())
        return {"value": ctx.models.get("toy", path, load) * params["k"]}
    return compute


def _record(ctx: Any, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
    path = os.path.join(ctx.settings.output_dir, f"record_{ctx.node_id}_{time.monotonic_ns()}.txt")
    with open(path, "w") as f:
        f.write(str(inputs["x"]))
    return {"value": inputs["x"], FILES_KEY: [path]}


def build_graph(nodes: Mapping[str, tuple[str, dict]], links: list[str] = (), disabled: tuple[str, ...] = (),
                titles: Mapping[str, str] | None = None) -> Graph:
    """nodes: {id: (type, params)}; links: "src.output -> dst.input" strings."""
    graph = Graph()
    for nid, (type_, params) in nodes.items():
        graph.add_node(Node(nid, type_, title=(titles or {}).get(nid, ""), params=dict(params),
                            disabled=nid in disabled))
    for text in links:
        src, dst = (part.strip() for part in text.split("->"))
        (s, so), (d, di) = src.split("."), dst.split(".")
        graph.connect(Link(s, so, d, di))
    return graph
