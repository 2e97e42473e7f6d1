"""Whether a link may be made, and why not: the one place that decides it.

The editor asks `link_verdict` before it makes a link (and to dim the sockets a dragged link
cannot reach); the validator asks `socket_verdict` of every link a graph holds, and reports
loops for the whole graph at once (engine.topology). The reasons are the user's words.

An input takes one link: a new link into a taken input replaces the one it has
(`LinkVerdict.replaces`), and that one is left out when looking for a loop. A link may also end
on a param the node shows as an input (engine.param_links). No Qt, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from engine import param_links
from engine.errors import Issue, quote
from engine.graph import Graph, Link
from engine.spec import NodeRegistry, NodeSpec, SocketType

UNKNOWN_TYPE = "unknown node type: install the node or remove it"


@dataclass(frozen=True)
class LinkVerdict:
    reason: str | None = None  # why the link is refused, in one line; None when it is allowed
    kind: str = ""  # the Issue kind of a refusal: bad_link | type_mismatch | cycle | unknown_type
    node_id: str | None = None  # the node the refusal is about, and its socket or param
    socket: str | None = None
    param: str | None = None
    replaces: Link | None = None  # the link the input has now, which this one would replace

    @property
    def allowed(self) -> bool:
        return self.reason is None

    def issue(self, link: Link) -> Issue:
        """The refusal of `link` as a validation problem of the node it is about, naming the link."""
        message = f"{self.reason} (link {link.src}.{link.src_socket} → {link.dst}.{link.dst_socket})"
        return Issue(self.kind, message, node_id=self.node_id, param=self.param, socket=self.socket)


ALLOWED = LinkVerdict()


def link_verdict(graph: Graph, registry: NodeRegistry, link: Link) -> LinkVerdict:
    """Whether `link` may be added to `graph`: its sockets fit, and it makes no loop once it
    replaces the link its input has now."""
    from engine.topology import would_loop

    replaces = graph.incoming(link.dst).get(link.dst_socket) if link.dst in graph.nodes else None
    if link.src == link.dst:
        verdict = LinkVerdict("a node cannot feed itself", "cycle", link.dst, socket=link.dst_socket)
    else:
        verdict = socket_verdict(graph, registry, link)
    if verdict.allowed and would_loop(graph, link, replaces):
        verdict = LinkVerdict("this link would make a cycle", "cycle", link.dst, socket=link.dst_socket)
    return replace(verdict, replaces=replaces)


def socket_verdict(graph: Graph, registry: NodeRegistry, link: Link) -> LinkVerdict:
    """Whether `link`'s ends exist and its output's type may feed its input (or converted param)."""
    missing = next((end for end in (link.src, link.dst) if end not in graph.nodes), None)
    if missing is not None:
        about = link.dst if missing == link.src else link.src
        socket = link.dst_socket if about == link.dst else None
        return LinkVerdict(f"node {quote(missing)} is not in the graph", "bad_link", about, socket=socket)
    src_spec, dst_spec = registry.get(graph.nodes[link.src].type), registry.get(graph.nodes[link.dst].type)
    if src_spec is None or dst_spec is None:
        return LinkVerdict(UNKNOWN_TYPE, "unknown_type", link.src if src_spec is None else link.dst)
    output = src_spec.output(link.src_socket)
    if output is None:
        names = ", ".join(o.name for o in src_spec.outputs) or "none"
        reason = f"{src_spec.title} has no output {quote(link.src_socket)} (outputs: {names})"
        return LinkVerdict(reason, "bad_link", link.src)
    input_ = dst_spec.input(link.dst_socket)
    if input_ is None:
        return _param_verdict(graph, dst_spec, link, output.type)
    if output.type != input_.type:
        reason = f"{output.type.value} output cannot feed the {input_.type.value} input {quote(link.dst_socket)}"
        return LinkVerdict(reason, "type_mismatch", link.dst, socket=link.dst_socket)
    return ALLOWED


def _param_verdict(graph: Graph, spec: NodeSpec, link: Link, output_type: SocketType) -> LinkVerdict:
    """A link that ends on no input: it must end on a param shown as an input, of a type it can feed."""
    param = spec.param(link.dst_socket)
    if param is None:
        names = ", ".join(i.name for i in spec.inputs) or "none"
        reason = f"{spec.title} has no input {quote(link.dst_socket)} (inputs: {names})"
        return LinkVerdict(reason, "bad_link", link.dst, socket=link.dst_socket)
    if param.name not in graph.nodes[link.dst].param_inputs:
        reason = (f"the param {param.name!r} is not shown as an input "
                  "(convert it to an input, or remove the link)")
        return LinkVerdict(reason, "bad_link", link.dst, param=param.name)
    problem = param_links.feed_problem(output_type, param)
    if problem is not None:
        return LinkVerdict(problem, "type_mismatch", link.dst, param=param.name)
    return ALLOWED
