"""Constant values: one param each, exposed as an output socket to feed other nodes."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.spec import SEED_MAX, ComputeContext, NodeSpec, Output, Param, ParamType, SocketType


def _emit_value(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"value": params["value"]}


def _emit_seed(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"seed": params["value"]}


def _emit_float(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"value": float(params["value"])}


INTEGER = NodeSpec(
    type="Integer", title="Integer", category="primitives",
    aliases=("Int", "Primitive"),
    help="A whole number to feed an INT input.",
    compute=_emit_value,
    outputs=(Output("value", SocketType.INT),),
    params=(Param("value", ParamType.INT, 0, "the number", inline=True),),
)

FLOAT = NodeSpec(
    type="Float", title="Float", category="primitives",
    aliases=("Primitive",),
    help="A number to feed a FLOAT input.",
    compute=_emit_float,
    outputs=(Output("value", SocketType.FLOAT),),
    params=(Param("value", ParamType.FLOAT, 0.0, "the number", step=0.1, inline=True),),
)

TEXT = NodeSpec(
    type="Text", title="Text", category="primitives",
    aliases=("String", "Primitive"),
    help="A piece of text (a prompt, a file name) to feed a STRING input.",
    compute=_emit_value,
    outputs=(Output("value", SocketType.STRING),),
    params=(Param("value", ParamType.TEXT, "", "the text", inline=True),),
)

SEED = NodeSpec(
    type="Seed", title="Seed", category="primitives",
    help="A seed shared by several nodes; randomise or increment it after each run.",
    compute=_emit_seed,
    outputs=(Output("seed", SocketType.INT),),
    params=(Param("value", ParamType.SEED, 0, "the seed", min=0, max=SEED_MAX, inline=True),),
)

SPECS = (INTEGER, FLOAT, TEXT, SEED)
