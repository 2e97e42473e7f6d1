"""Graph algorithms on a graph's links, done by networkx: what targets need, the order to run
it in, loops.

networkx takes about 0.1 s to import, so engine.planning imports this module only when it
plans a run, and `import engine.graph` / `import engine.executor` stay light. No Qt, no torch.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import networkx as nx

from engine.graph import Graph, Link


def dependencies(graph: Graph, without: Link | None = None) -> nx.DiGraph:
    """Nodes in the graph's order; an edge from the node that gives a value to each node that
    uses it (links to nodes not in the graph, and `without`, left out)."""
    digraph = nx.DiGraph()
    digraph.add_nodes_from(graph.nodes)
    digraph.add_edges_from((lk.src, lk.dst) for lk in graph.links
                           if lk != without and lk.src in graph.nodes and lk.dst in graph.nodes)
    return digraph


def needed(digraph: nx.DiGraph, targets: Iterable[str]) -> set[str]:
    """The targets in the graph and every node they depend on."""
    found: set[str] = set()
    for target in targets:
        if target in digraph and target not in found:
            found.add(target)
            found |= nx.ancestors(digraph, target)
    return found


def run_order(digraph: nx.DiGraph, nodes: Iterable[str]) -> list[str]:
    """`nodes` in topological order, ties broken by id (the same order every time). Nodes on a
    loop, and those after one, cannot be placed and are left out."""
    sub = _restricted(digraph, set(nodes))
    try:
        return list(nx.lexicographical_topological_sort(sub))
    except nx.NetworkXUnfeasible:
        looping = {nid for loop in loops(sub) for nid in loop.members}
        blocked = looping.union(*(nx.descendants(sub, nid) for nid in looping))
        return list(nx.lexicographical_topological_sort(_restricted(sub, set(sub) - blocked)))


def _restricted(digraph: nx.DiGraph, keep: set[str]) -> nx.DiGraph:
    """`digraph` on the nodes in `keep` only (built anew: a networkx subgraph view is slower)."""
    if len(keep) == len(digraph) and keep.issuperset(digraph):
        return digraph
    sub = nx.DiGraph()
    sub.add_nodes_from(nid for nid in digraph if nid in keep)
    sub.add_edges_from((src, dst) for src, dst in digraph.edges if src in keep and dst in keep)
    return sub


class Loop(NamedTuple):
    members: list[str]  # every node joined in the loop, by id
    way_round: list[str]  # [first, ..., first]: the shortest way round from the smallest id


def loops(digraph: nx.DiGraph) -> list[Loop]:
    """Each set of nodes the links join in a loop, once, in the order of their smallest ids."""
    found = []
    for component in nx.strongly_connected_components(digraph):
        first = min(component)
        if len(component) > 1 or digraph.has_edge(first, first):
            found.append(Loop(sorted(component), _shortest_loop(digraph.subgraph(component), first)))
    return sorted(found)


def _shortest_loop(component: nx.DiGraph, first: str) -> list[str]:
    if component.has_edge(first, first):
        return [first, first]
    ways_back = [nx.shortest_path(component, nxt, first) for nxt in sorted(component.successors(first))]
    return [first, *min(ways_back, key=len)]


def would_loop(graph: Graph, link: Link, replaced: Link | None) -> bool:
    """Whether adding `link` (in place of `replaced`) would make the links loop back."""
    if link.src == link.dst:
        return True
    digraph = dependencies(graph, without=replaced)
    return link.src in digraph and link.dst in digraph and nx.has_path(digraph, link.dst, link.src)
