"""Params shown as input sockets ("widgets converted to inputs", as in ComfyUI).

A node lists such params in `Node.param_inputs`; a link may then end on the
param's name (`Link.dst_socket`), and at run time the linked value replaces
the param's own value for that node. A converted param with no link keeps
using its own (widget) value, as an unconnected widget input does in ComfyUI.

Which outputs may feed which params:

    INT    -> INT, SEED, FLOAT
    FLOAT  -> FLOAT
    STRING -> STRING, TEXT, PATH, CHOICE

BOOL and JSON params cannot be converted (no socket type carries them). No Qt, no torch.
"""
from __future__ import annotations

from engine.graph import Node
from engine.spec import NodeSpec, Param, ParamType, SocketType

# The socket type a converted param shows, by param type.
_SOCKET_OF = {
    ParamType.INT: SocketType.INT,
    ParamType.SEED: SocketType.INT,
    ParamType.FLOAT: SocketType.FLOAT,
    ParamType.STRING: SocketType.STRING,
    ParamType.TEXT: SocketType.STRING,
    ParamType.PATH: SocketType.STRING,
    ParamType.CHOICE: SocketType.STRING,
}
# The output types a converted param takes besides its own socket type.
_ALSO_ACCEPTS = {ParamType.FLOAT: (SocketType.INT,)}


def socket_type(param: Param) -> SocketType | None:
    """The socket type of `param` shown as an input; None when it cannot be converted."""
    return _SOCKET_OF.get(param.type)


def accepted_types(param: Param) -> tuple[SocketType, ...]:
    """The output types that may feed `param` (empty when it cannot be converted)."""
    own = socket_type(param)
    return () if own is None else (own, *_ALSO_ACCEPTS.get(param.type, ()))


def convertible(spec: NodeSpec, param: Param) -> bool:
    """Whether `param` of `spec` may be shown as an input (scalar, and not named like an input)."""
    return socket_type(param) is not None and spec.input(param.name) is None


def convertible_params(spec: NodeSpec) -> list[Param]:
    return [p for p in spec.params if convertible(spec, p)]


def linked_param(spec: NodeSpec, node: Node, socket: str) -> Param | None:
    """The converted param a link ending on `socket` of `node` feeds, else None (a real input, or nothing)."""
    if spec.input(socket) is not None or socket not in node.param_inputs:
        return None
    param = spec.param(socket)
    return param if param is not None and convertible(spec, param) else None


def feed_problem(output_type: SocketType, param: Param) -> str | None:
    """Why an output of `output_type` cannot feed `param`, or None when it can."""
    accepted = accepted_types(param)
    if not accepted:
        return f"the {param.type.value} param {param.name!r} cannot take a link"
    if output_type not in accepted:
        names = " or ".join(t.value for t in accepted)
        return f"{output_type.value} output cannot feed the {param.type.value} param {param.name!r} (it takes {names})"
    return None


def ordered(spec: NodeSpec | None, names: list[str]) -> list[str]:
    """`names` without repeats, in the order the node type declares its params (unknown names last)."""
    order = {p.name: i for i, p in enumerate(spec.params)} if spec is not None else {}
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda n: (order.get(n, len(order)), unique.index(n)))
