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
from collections import deque
from collections.abc import Iterable

from engine import param_links
from engine.errors import Issue, ValidationError
from engine.graph import Graph, Link, Node
from engine.spec import NodeRegistry, NodeSpec, Output


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
    dependencies = _dependency_graph(graph)
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
    close = difflib.get_close_matches(node.type, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return Issue("unknown_type", f"unknown node type {node.type!r}{hint}", node_id=node.id)


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
        if problem:
            issues.append(Issue("bad_param", problem, node_id=node.id, param=param.name))
    for name in node.param_inputs:
        param = spec.param(name)
        if param is not None and not param_links.convertible(spec, param):
            message = f"is shown as an input, but a {param.type.value} param cannot take a link"
            issues.append(Issue("bad_param", message, node_id=node.id, param=name))
    return issues


def _link_issues(graph: Graph, registry: NodeRegistry) -> list[Issue]:
    issues = []
    feeding: dict[tuple[str, str], Link] = {}
    for link in sorted(graph.links):
        issues.extend(_one_link_issues(graph, registry, link))
        earlier = feeding.setdefault((link.dst, link.dst_socket), link)
        if earlier is not link:
            message = f"has two links ({_end(earlier)} and {_end(link)}); an input takes one"
            issues.append(Issue("bad_link", message, node_id=link.dst, socket=link.dst_socket))
    return issues


def _one_link_issues(graph: Graph, registry: NodeRegistry, link: Link) -> list[Issue]:
    if link.src not in graph.nodes:
        message = f"is linked from node {link.src!r}, which is not in the graph"
        return [Issue("bad_link", message, node_id=link.dst, socket=link.dst_socket)]
    if link.dst not in graph.nodes:
        message = f"output {link.src_socket!r} is linked to node {link.dst!r}, which is not in the graph"
        return [Issue("bad_link", message, node_id=link.src)]
    src_spec = registry.get(graph.nodes[link.src].type)
    dst_spec = registry.get(graph.nodes[link.dst].type)
    issues = []
    output = src_spec.output(link.src_socket) if src_spec else None
    if src_spec and output is None:
        names = ", ".join(o.name for o in src_spec.outputs) or "none"
        message = f"has no output {link.src_socket!r} (linked to {link.dst}.{link.dst_socket}); outputs: {names}"
        issues.append(Issue("bad_link", message, node_id=link.src))
    input_ = dst_spec.input(link.dst_socket) if dst_spec else None
    if dst_spec and input_ is None:
        return issues + _param_link_issues(graph.nodes[link.dst], dst_spec, link, output)
    if output is not None and input_ is not None and output.type != input_.type:
        message = f"expects {input_.type.value} but is linked to {_end(link)}, which gives {output.type.value}"
        issues.append(Issue("type_mismatch", message, node_id=link.dst, socket=link.dst_socket))
    return issues


def _param_link_issues(node: Node, spec: NodeSpec, link: Link, output: Output | None) -> list[Issue]:
    """A link that ends on no input: it must end on a param shown as an input, of a type it can feed."""
    param = spec.param(link.dst_socket)
    if param is None:
        names = ", ".join(i.name for i in spec.inputs) or "none"
        message = f"has no input {link.dst_socket!r} (linked from {_end(link)}); inputs: {names}"
        return [Issue("bad_link", message, node_id=link.dst, socket=link.dst_socket)]
    if link.dst_socket not in node.param_inputs:
        message = (f"is linked from {_end(link)} but is not shown as an input "
                   "(convert it to an input, or remove the link)")
        return [Issue("bad_link", message, node_id=link.dst, param=param.name)]
    problem = param_links.feed_problem(output.type, param) if output is not None else None
    if problem is not None:
        return [Issue("type_mismatch", f"{problem}; it is linked to {_end(link)}", node_id=link.dst,
                      param=param.name)]
    return []


def _end(link: Link) -> str:
    return f"{link.src}.{link.src_socket}"


Edges = dict[str, set[str]]  # node id -> the node ids at the other end of its links


def _dependency_graph(graph: Graph) -> Edges:
    """Edges run from the node that gives a value to the node that uses it."""
    users: Edges = {nid: set() for nid in graph.nodes}
    for lk in graph.links:
        if lk.src in graph.nodes and lk.dst in graph.nodes:
            users[lk.src].add(lk.dst)
    return users


def _reversed(edges: Edges) -> Edges:
    out: Edges = {nid: set() for nid in edges}
    for src, dsts in edges.items():
        for dst in dsts:
            out[dst].add(src)
    return out


def _reachable(edges: Edges, start: str, within: set[str] | None = None) -> set[str]:
    """Nodes reached from `start` along one or more edges (`start` itself only through a loop)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen and (within is None or nxt in within):
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _scope(graph: Graph, dependencies: Edges,
           targets: Iterable[str] | None) -> tuple[set[str], list[Issue]]:
    """The nodes a run of `targets` needs (all nodes when None), and unknown targets."""
    if targets is None:
        return set(graph.nodes), []
    if isinstance(targets, str):
        targets = [targets]
    sources = _reversed(dependencies)
    scope: set[str] = set()
    issues = []
    for target in targets:
        node = graph.find(target)
        if node is None:
            issues.append(Issue("bad_target", f"there is no node {target!r} (by id or unique title) to run"))
            continue
        scope.add(node.id)
        scope.update(_reachable(sources, node.id))
    return scope, issues


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


def _cycle_issues(dependencies: Edges) -> list[Issue]:
    """One issue per node on a cycle: the nodes of each strongly connected loop."""
    candidates = _not_sortable(dependencies)
    reach = {nid: _reachable(dependencies, nid, candidates) for nid in candidates}
    issues = []
    reported: set[str] = set()
    for first in sorted(candidates):
        if first in reported or first not in reach[first]:
            continue
        component = {nid for nid in reach[first] if first in reach[nid]}
        reported |= component
        path = " -> ".join(_shortest_loop(dependencies, first, component))
        for node_id in sorted(component):
            issues.append(Issue("cycle", f"is part of a cycle ({path}); links must not loop back", node_id=node_id))
    return issues


def _not_sortable(edges: Edges) -> set[str]:
    """The nodes a topological sort cannot place: those on a cycle and those after one."""
    waiting = {nid: 0 for nid in edges}
    for dsts in edges.values():
        for dst in dsts:
            waiting[dst] += 1
    ready = [nid for nid, n in waiting.items() if n == 0]
    while ready:
        for dst in edges[ready.pop()]:
            waiting[dst] -= 1
            if waiting[dst] == 0:
                ready.append(dst)
    return {nid for nid, n in waiting.items() if n > 0}


def _shortest_loop(edges: Edges, first: str, component: set[str]) -> list[str]:
    """[first, ..., first]: the shortest way round from `first` inside its component."""
    came_from: dict[str, str] = {}
    queue = deque([first])
    while queue:
        node = queue.popleft()
        for nxt in sorted(edges[node] & component):
            if nxt == first:
                path = [node]
                while path[-1] != first:
                    path.append(came_from[path[-1]])
                return [first, *reversed(path[:-1]), first]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise ValueError(f"internal: {first} is on no loop")
