"""CLIPSetLastLayer: read a CLIP text encoder's prompts out of an earlier layer ("clip skip")."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType


def _set_last_layer(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    conditioner = inputs["conditioner"]
    if not hasattr(conditioner, "with_clip_layer"):
        raise UserInputError(f"this model's text encoder is not CLIP ({getattr(conditioner, 'kind', '?')}); "
                             "CLIP Set Last Layer only applies to CLIP models (Stable Diffusion)")
    return {"conditioner": conditioner.with_clip_layer(int(params["stop_at_clip_layer"]))}


CLIP_SET_LAST_LAYER = NodeSpec(
    type="CLIPSetLastLayer", title="CLIP Set Last Layer", category="conditioning",
    aliases=("Clip Skip", "CLIP skip"),
    help="Prompts are read from an earlier layer of the CLIP text encoder, through its final layer norm: "
         "-1 the last layer, -2 the one before (\"clip skip 2\"), and so on, as in ComfyUI. -1 is the last "
         "layer for SD 2.x too, whose own choice is -2; a layer beyond the model's first is the last.",
    compute=_set_last_layer,
    inputs=(Input("conditioner", SocketType.CONDITIONER, help="from Load Checkpoint (a CLIP model)"),),
    outputs=(Output("conditioner", SocketType.CONDITIONER, "the same weights, read at that layer"),),
    params=(Param("stop_at_clip_layer", ParamType.INT, -1, "the layer whose output is used: -1 the last",
                  min=-24, max=-1, inline=True),),
)

SPECS = (CLIP_SET_LAST_LAYER,)
