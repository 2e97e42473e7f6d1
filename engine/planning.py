"""What a run will do, fixed before it starts: its graph, targets, order and pictures to watch;
and each run's own handle to stop it.

`plan` resolves the targets once and validates once; the executor runs the plan as it is.
networkx (engine.topology) is imported only when a plan is made. No Qt, no torch.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import Issue, ValidationError
from engine.graph import Graph
from engine.spec import NodeRegistry, SocketType

PICTURE_TYPES = (SocketType.IMAGE, SocketType.MASK, SocketType.LAYOUT)  # a layout is shown as its boxes


@dataclass(frozen=True)
class RunPlan:
    graph: Graph = field(repr=False)  # the graph the run uses: a snapshot no one edits
    targets: tuple[str, ...]  # the nodes whose outputs the run returns
    order: tuple[str, ...]  # the targets and every node they need, in the order they run
    watch: tuple[str, ...]  # needed, enabled nodes with an IMAGE, MASK or LAYOUT output, by id

    def watching(self) -> RunPlan:
        """The same run, returning the watched nodes' outputs too (their pictures)."""
        return replace(self, targets=tuple(dict.fromkeys([*self.targets, *self.watch])))


@dataclass(frozen=True, eq=False)
class RunHandle:
    """One run's stop token: cancelling it stops that run (within one step) and no other. Thread-safe."""

    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()


def plan(graph: Graph, registry: NodeRegistry, targets: Iterable[str] | None = None) -> RunPlan:
    """Resolve the targets and validate (ValidationError lists every problem), then order what
    the targets need. `graph` becomes the plan's: hand over a snapshot."""
    from engine.validate import check

    target_ids = resolve_targets(graph, registry, targets)
    check(graph, registry, target_ids)
    order = needed_order(graph, target_ids)
    return RunPlan(graph, tuple(target_ids), tuple(order), tuple(_picture_nodes(graph, registry, order)))


def resolve_targets(graph: Graph, registry: NodeRegistry, targets: Iterable[str] | None) -> list[str]:
    """The given ids (checked), else the enabled output nodes, else every sink node."""
    if targets is not None:
        ids = list(dict.fromkeys(targets))
        issues = [Issue("bad_target", "no such node to run", node_id=t) for t in ids if t not in graph.nodes]
        if issues:
            raise ValidationError(issues)
        return ids
    outputs = [n.id for n in graph if not n.disabled
               and (spec := registry.get(n.type)) is not None and spec.output_node]
    if outputs:
        return sorted(outputs)
    feeding = {lk.src for lk in graph.links}
    return sorted(n.id for n in graph if n.id not in feeding)


def needed_order(graph: Graph, targets: Iterable[str]) -> list[str]:
    """The targets and their ancestors in topological order (ties broken by id, so stable)."""
    from engine import topology

    dependencies = topology.dependencies(graph)
    return topology.run_order(dependencies, topology.needed(dependencies, targets))


def _picture_nodes(graph: Graph, registry: NodeRegistry, order: Iterable[str]) -> list[str]:
    found = []
    for node_id in sorted(order):
        node = graph.nodes[node_id]
        spec = registry.get(node.type)
        if spec is not None and not node.disabled and any(o.type in PICTURE_TYPES for o in spec.outputs):
            found.append(node_id)
    return found


def snapshot(graph: Graph) -> Graph:
    """A copy the GUI's later edits cannot reach (faster than deepcopy: params are JSON)."""
    return Graph(nodes={nid: replace(n, params=_copy_json(n.params), param_inputs=list(n.param_inputs))
                        for nid, n in graph.nodes.items()},
                 links=list(graph.links), backdrops={k: replace(b) for k, b in graph.backdrops.items()},
                 meta=_copy_json(graph.meta), base_dir=graph.base_dir)


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value
