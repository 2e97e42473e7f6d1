"""Checking a graph against the node registry before it runs.

`validate` reports every problem at once, each against the node that has it, so
the GUI can badge all of them and the CLI can print them together. Unknown
params are kept silently (a newer Kiln may have added them); missing params take
the spec default. Disabled nodes do not run, so their unconnected inputs are not
reported, but their links' socket types still are. A link may also end on a
param the node shows as an input (engine.param_links); such a param with no
link keeps its own value, so it is never "missing".
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import networkx as nx

from engine import param_links, paths, topology
from engine.errors import Issue, ValidationError, clip, quote
from engine.graph import Graph, Link, Node
from engine.link_rules import socket_verdict
from engine.spec import NodeRegistry, NodeSpec, Param, ParamType


def validate(graph: Graph, registry: NodeRegistry, targets: Iterable[str] | None = None) -> list[Issue]:
    """Every problem in `graph`. With `targets` (node ids or unique titles), missing
    inputs are reported only for those nodes and the nodes they depend on."""
    issues: list[Issue] = []
    for node in graph.nodes.values():
        spec = registry.get(node.type)
        if spec is None:
            issues.append(_unknown_type(node, registry))
        else:
            issues.extend(_param_issues(node, spec))
    issues.extend(_link_issues(graph, registry))
    dependencies = topology.dependencies(graph)
    scope, target_issues = _scope(graph, dependencies, targets)
    issues.extend(target_issues)
    issues.extend(_missing_inputs(graph, registry, scope))
    issues.extend(_cycle_issues(dependencies))
    return issues


def check(graph: Graph, registry: NodeRegistry, targets: Iterable[str] | None = None) -> None:
    """Raise ValidationError listing every problem, if there is any."""
    issues = validate(graph, registry, targets)
    if issues:
        raise ValidationError(issues)


def _unknown_type(node: Node, registry: NodeRegistry) -> Issue:
    known = [spec.type for spec in registry]
    close = difflib.get_close_matches(node.type, known, n=1) if len(node.type) <= 100 else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return Issue("unknown_type", f"unknown node type {quote(node.type)}{hint}", node_id=node.id)


def _param_issues(node: Node, spec: NodeSpec) -> list[Issue]:
    if not isinstance(node.params, dict):
        return [Issue("bad_param", "params are not a set of names and values", node_id=node.id)]
    issues = []
    for param in spec.params:
        if param.name not in node.params:
            continue  # the default applies
        try:
            problem = param.check(node.params[param.name])
        except (TypeError, ValueError, OverflowError):
            problem = "has a value that cannot be used"
        problem = problem or _path_problem(param, node.params[param.name])
        if problem:
            issues.append(Issue("bad_param", problem, node_id=node.id, param=param.name))
    for name in node.param_inputs:
        shown = spec.param(name)
        if shown is not None and not param_links.convertible(spec, shown):
            message = f"is shown as an input, but a {shown.type.value} param cannot take a link"
            issues.append(Issue("bad_param", message, node_id=node.id, param=name))
    return issues


def _path_problem(param: Param, value: Any) -> str | None:
    """A file param (PATH, or a choice naming a file) whose value no file can have (a NUL byte)."""
    if not isinstance(value, str) or not value:
        return None
    if param.type is not ParamType.PATH and param.choices_from is None:
        return None
    reason = paths.refusal(value)
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"the file name {shown} {reason}" if reason else None


def _link_issues(graph: Graph, registry: NodeRegistry) -> list[Issue]:
    issues = []
    feeding: dict[tuple[str, str], Link] = {}
    for link in sorted(graph.links):
        verdict = socket_verdict(graph, registry, link)
        if not verdict.allowed and verdict.kind != "unknown_type":  # that node is reported itself
            issues.append(verdict.issue(link))
        earlier = feeding.setdefault((link.dst, link.dst_socket), link)
        if earlier is not link:
            message = f"has two links ({_end(earlier)} and {_end(link)}); an input takes one"
            issues.append(Issue("bad_link", message, node_id=link.dst, socket=link.dst_socket))
    return issues


def _end(link: Link) -> str:
    return clip(f"{link.src}.{link.src_socket}", 40)


def _scope(graph: Graph, dependencies: nx.DiGraph,
           targets: Iterable[str] | None) -> tuple[set[str], list[Issue]]:
    """The nodes a run of `targets` needs (all nodes when None), and unknown targets."""
    if targets is None:
        return set(graph.nodes), []
    if isinstance(targets, str):
        targets = [targets]
    found, issues = [], []
    for target in targets:
        node = graph.find(target)
        if node is None:
            issues.append(Issue("bad_target", f"there is no node {quote(target)} (by id or unique title) to run"))
        else:
            found.append(node.id)
    return topology.needed(dependencies, found), issues


def _missing_inputs(graph: Graph, registry: NodeRegistry, scope: set[str]) -> list[Issue]:
    connected = {(lk.dst, lk.dst_socket) for lk in graph.links}
    issues = []
    for node in graph.nodes.values():
        spec = registry.get(node.type)
        if node.id not in scope or node.disabled or spec is None:
            continue
        for input_ in spec.inputs:
            if not input_.optional and (node.id, input_.name) not in connected:
                message = f"is required but not connected (it takes {input_.type.value})"
                issues.append(Issue("missing_input", message, node_id=node.id, socket=input_.name))
    return issues


def _cycle_issues(dependencies: nx.DiGraph) -> list[Issue]:
    """One issue per loop, against its smallest id, naming the way round ("cycle: a → b → a",
    its first few nodes for a long one) and listing every member for the GUI to badge."""
    issues: list[Issue] = []
    for loop in topology.loops(dependencies):
        message = f"is part of a cycle: {_way_round(loop.way_round)} (links must not loop back)"
        if len(loop.members) > len(loop.way_round) - 1:
            message += f"; {len(loop.members)} nodes loop together"
        issues.append(Issue("cycle", message, node_id=loop.members[0], members=tuple(loop.members)))
    return issues


def _way_round(way: list[str], shown: int = 6) -> str:
    names = [clip(node_id, 30) for node_id in way]
    if len(names) <= shown + 2:
        return " → ".join(names)
    return " → ".join([*names[:shown], f"… ({len(names) - shown - 1} more)", names[-1]])
