"""Conditioning nodes: prompts, class labels and layouts through a model's conditioner."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.capabilities import ConditionerCapabilities
from engine.choices import EMBEDDINGS, model_folders
from engine.errors import UserInputError
from engine.layout import Layout, LayoutError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Conditioning

_HINTS = {"text": "TextEncode", "class": "ClassEncode", "layout": "LayoutEncode"}


def _require(conditioner: Any, wanted: str, node: str) -> None:
    capabilities: ConditionerCapabilities = conditioner.capabilities
    accepts = capabilities.accepts
    if capabilities.takes(wanted):
        return
    if accepts == "nothing":
        raise UserInputError(f"this model is unconditional: it takes no {wanted}; leave {node} out")
    hint = _HINTS.get(accepts)
    use = f"; use {hint}" if hint else ""
    raise UserInputError(f"this model is conditioned on {accepts.replace('_', ' ')}, not {wanted}{use}")


# Models whose sampler still needs a positive without any text: an empty prompt gives them no
# conditioning (unconditional models; LDM inpainting, which Inpaint Conditioning then fills in).
_EMPTY_PROMPT_OK = ("nothing", "masked_image")


def _text_encode(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    conditioner = inputs["conditioner"]
    if not params["text"].strip() and conditioner.capabilities.accepts in _EMPTY_PROMPT_OK:
        return {"conditioning": Conditioning()}
    _require(conditioner, "text", "TextEncode")
    if getattr(conditioner, "kind", None) in ("clip", "openclip"):  # `embedding:NAME` in the prompt
        folders = model_folders(ctx.settings, EMBEDDINGS)
        return {"conditioning": conditioner.encode([params["text"]], embedding_folders=folders)}
    return {"conditioning": conditioner.encode([params["text"]])}


def _class_encode(ctx: ComputeContext, inputs: Mapping[str, Any],
                  params: Mapping[str, Any]) -> dict[str, Any]:
    conditioner = inputs["conditioner"]
    _require(conditioner, "class", "ClassEncode")
    if params["unconditional"]:
        return {"conditioning": conditioner.unconditional(1)}
    return {"conditioning": conditioner.encode([params["class_id"]])}


def _layout_encode(ctx: ComputeContext, inputs: Mapping[str, Any],
                   params: Mapping[str, Any]) -> dict[str, Any]:
    conditioner = inputs["conditioner"]
    _require(conditioner, "layout", "LayoutEncode")
    layout: Layout = inputs["layout"] if "layout" in inputs else _param_layout(params["boxes"])
    encode = conditioner.encode_layouts if conditioner.capabilities.layout_tokens else conditioner.encode
    return {"conditioning": encode([layout.to_json()])}


def _param_layout(boxes: Any) -> Layout:
    try:
        return Layout.from_json(boxes)
    except LayoutError as exc:
        raise UserInputError(f"the layout: {exc}", param="boxes") from None


def _zero_out(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    cond = inputs["conditioning"]

    def zero(t: Any) -> Any:
        return None if t is None else t * 0

    return {"conditioning": cond.with_(crossattn=zero(cond.crossattn), concat=zero(cond.concat),
                                       regions=None, y=cond.y, meta={**cond.meta, "zeroed": True})}


_CONDITIONER_IN = Input("conditioner", SocketType.CONDITIONER, help="from Load Checkpoint")
_CONDITIONING_OUT = Output("conditioning", SocketType.CONDITIONING)

TEXT_ENCODE = NodeSpec(
    type="TextEncode", title="Text Encode", category="conditioning",
    aliases=("CLIP Text Encode", "CLIP Text Encode (Prompt)", "CLIPTextEncode", "Prompt", "Negative prompt"),
    help="Encodes a prompt with the model's text encoder (CLIP, OpenCLIP, the paper's BERT, or the built-in "
         "word model). CLIP prompts longer than 75 tokens are encoded in chunks and joined. CLIP prompts take "
         "ComfyUI's weighting: (word) x1.1, ((word)) x1.21, (word:1.3), [word] /1.1, \\( for a bracket, and "
         "embedding:NAME for a textual-inversion file in an 'embeddings' model folder.",
    compute=_text_encode, inputs=(_CONDITIONER_IN,), outputs=(_CONDITIONING_OUT,),
    params=(Param("text", ParamType.TEXT, "", "the prompt", inline=True),),
)

CLASS_ENCODE = NodeSpec(
    type="ClassEncode", title="Class Encode", category="conditioning",
    help="Conditions a class-conditional model (e.g. the ImageNet LDM) on one class label.",
    compute=_class_encode, inputs=(_CONDITIONER_IN,), outputs=(_CONDITIONING_OUT,),
    params=(Param("class_id", ParamType.INT, 0, "the class number", min=0, inline=True),
            Param("unconditional", ParamType.BOOL, False, "the model's 'no class' label (for guidance)")),
)

LAYOUT_ENCODE = NodeSpec(
    type="LayoutEncode", title="Layout Encode", category="conditioning",
    aliases=("GLIGEN Textbox Apply", "GLIGEN"),
    help="Encodes labelled boxes for a layout-to-image model: as tokens for cross-attention and, for a model "
         "with region channels (the built-in base model), also painted at the latent's size. Boxes come from "
         "the LAYOUT input or, when it is not connected, from the `boxes` param.",
    compute=_layout_encode,
    inputs=(_CONDITIONER_IN, Input("layout", SocketType.LAYOUT, optional=True, help="boxes; overrides the param")),
    outputs=(_CONDITIONING_OUT,),
    params=(Param("boxes", ParamType.JSON, [], "[{\"label\": \"red circle\", \"box\": [x0, y0, x1, y1]}, ...] "
                                               "in 0..1 image coordinates"),),
)

ZERO_OUT = NodeSpec(
    type="ConditioningZeroOut", title="Conditioning Zero Out", category="conditioning",
    help="The same conditioning with its context and concat channels set to zero (a neutral negative).",
    compute=_zero_out, inputs=(Input("conditioning", SocketType.CONDITIONING),), outputs=(_CONDITIONING_OUT,),
)

SPECS = (TEXT_ENCODE, CLASS_ENCODE, LAYOUT_ENCODE, ZERO_OUT)
