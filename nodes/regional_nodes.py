"""Regional prompt nodes: prompts on layout boxes, rectangles and painted masks, and combining conditionings.

They work for any cross-attention text model (Stable Diffusion 1.x/2.x, the paper's text model, the built-in
model through its text path) without training: engine.models.regional describes the two ways a region is
applied ("attention": masked cross-attention in one UNet call; "blend": ComfyUI's averaging of one
prediction per prompt under its mask).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Conditioning

MODES = ("attention", "blend")
_MODE_HELP = ("attention: each place sees its own prompt's words (masked cross-attention, one model call "
              "per step); blend: one prediction per prompt, averaged under the masks (ComfyUI's arithmetic, "
              "one more model call per region)")
_REGION_ONLY = "region_only"  # meta flag: the conditioning's own prompt is only its region's


def _strength(default: float = 1.0) -> Param:
    return Param("strength", ParamType.FLOAT, default, "how strongly the region's prompt acts there (0 = not at all)",
                 min=0.0, max=10.0, step=0.05)


_TIME = (Param("start", ParamType.FLOAT, 0.0, "acts from this fraction of the schedule (0 = the first, noisiest "
               "step)", min=0.0, max=1.0, step=0.05),
         Param("end", ParamType.FLOAT, 1.0, "acts until this fraction of the schedule (1 = the last step)",
               min=0.0, max=1.0, step=0.05))


def _check_time(params: Mapping[str, Any]) -> None:
    if params["start"] > params["end"]:
        raise UserInputError(f"start {params['start']} is after end {params['end']}", param="start")


def _text_context(cond: Conditioning, what: str) -> Any:
    if cond.crossattn is None:
        raise UserInputError(f"{what} has no cross-attention context: regional prompts need a text model's prompt "
                             "(Text Encode)")
    return cond.crossattn


def _regional_prompts(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    from engine.models.regional import PromptRegion

    _check_time(params)
    glob, conditioner, layout = inputs["conditioning"], inputs["conditioner"], inputs["layout"]
    _text_context(glob, "the global prompt")
    if not conditioner.capabilities.takes("text"):
        raise UserInputError("this model takes no text prompts, so box labels cannot be prompts")
    regions = []
    for box in layout:
        encoded = conditioner.encode([box.label])
        regions.append(PromptRegion(_text_context(encoded, f"box {box.label!r}"), box=box.box,
                                    strength=params["strength"], start=params["start"], end=params["end"]))
    return {"conditioning": glob.with_(prompt_regions=glob.prompt_regions + tuple(regions),
                                       region_mode=params["mode"], region_background=params["background"])}


def _as_region(cond: Conditioning, params: Mapping[str, Any], **where: Any) -> dict[str, Any]:
    """The conditioning as one region: its prompt acts only there (ConditioningSetArea/Mask's meaning)."""
    from engine.models.regional import PromptRegion

    _check_time(params)
    region = PromptRegion(_text_context(cond, "the conditioning"), strength=params["strength"],
                          start=params["start"], end=params["end"], **where)
    return {"conditioning": cond.with_(prompt_regions=cond.prompt_regions + (region,), region_mode=params["mode"],
                                       meta={**cond.meta, _REGION_ONLY: True})}


def _set_area(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    x0, y0 = params["x"], params["y"]
    x1, y1 = min(1.0, x0 + params["width"]), min(1.0, y0 + params["height"])
    if x1 <= x0 or y1 <= y0:
        raise UserInputError(f"the area [{x0}, {y0}, {x1}, {y1}] is empty", param="width")
    return _as_region(inputs["conditioning"], params, box=(x0, y0, x1, y1))


def _set_mask(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    mask = inputs["mask"]
    if mask.ndim == 4:
        mask = mask[:, 0]
    if mask.ndim == 3:
        if mask.shape[0] != 1:
            raise UserInputError(f"the mask has {mask.shape[0]} items; a region takes one")
        mask = mask[0]
    if float(mask.max()) <= 0:
        raise UserInputError("the mask is empty: paint where the prompt should act")
    return _as_region(inputs["conditioning"], params, mask=mask.float().cpu())


def _combine(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """One global prompt (the first input that is not a region, else the first) and every region of both;
    a second global prompt is averaged in as a region over the whole picture, as ComfyUI does."""
    from engine.models.regional import PromptRegion

    a, b = inputs["conditioning_1"], inputs["conditioning_2"]
    first, second = (b, a) if a.meta.get(_REGION_ONLY) and not b.meta.get(_REGION_ONLY) else (a, b)
    regions = first.prompt_regions + second.prompt_regions
    if not second.meta.get(_REGION_ONLY):
        regions += (PromptRegion(_text_context(second, "conditioning_2"), box=(0.0, 0.0, 1.0, 1.0)),)
    mode = next((c.region_mode for c in (first, second) if c.prompt_regions), "blend")
    meta = {k: v for k, v in first.meta.items() if k != _REGION_ONLY}
    return {"conditioning": first.with_(prompt_regions=regions, region_mode=mode, meta=meta)}


_COND_IN = Input("conditioning", SocketType.CONDITIONING)
_COND_OUT = Output("conditioning", SocketType.CONDITIONING)

REGIONAL_PROMPTS = NodeSpec(
    type="RegionalPrompts", title="Regional Prompts", category="conditioning",
    aliases=("Regional Prompt", "Area Prompts", "Regional Guidance", "GLIGENTextBoxApply"),
    help="Each Layout Editor box's label becomes a prompt that acts inside that box; the global prompt acts "
         "everywhere else (and, at the background weight, inside the boxes too). Works for any text model "
         "without training. The built-in model also has its own layout input (Layout Encode: layout tokens "
         "and painted region channels); this node uses neither, only its text path.",
    compute=_regional_prompts,
    inputs=(Input("conditioner", SocketType.CONDITIONER, help="from Load Checkpoint: encodes the box labels"),
            Input("conditioning", SocketType.CONDITIONING, help="the global prompt"),
            Input("layout", SocketType.LAYOUT, help="boxes whose labels are prompts (Layout Editor, free text)")),
    outputs=(_COND_OUT,),
    params=(_strength(),
            Param("background", ParamType.FLOAT, 0.3, "attention mode: the global prompt's weight inside a box "
                  "(0 = the box's prompt alone, 1 = both alike)", min=0.0, max=1.0, step=0.05),
            *_TIME,
            Param("mode", ParamType.CHOICE, "attention", _MODE_HELP, choices=MODES)),
)

SET_AREA = NodeSpec(
    type="ConditioningSetArea", title="Conditioning Set Area", category="conditioning",
    aliases=("Conditioning (Set Area)", "Area Conditioning"),
    help="The prompt acts only inside a rectangle given in fractions of the picture, so one setting serves "
         "every size. Combine it with a global prompt (Conditioning Combine).",
    compute=_set_area, inputs=(_COND_IN,), outputs=(_COND_OUT,),
    params=(Param("x", ParamType.FLOAT, 0.0, "left edge, 0..1", min=0.0, max=1.0, step=0.01),
            Param("y", ParamType.FLOAT, 0.0, "top edge, 0..1", min=0.0, max=1.0, step=0.01),
            Param("width", ParamType.FLOAT, 0.5, "0..1 of the picture's width", min=0.0, max=1.0, step=0.01),
            Param("height", ParamType.FLOAT, 0.5, "0..1 of the picture's height", min=0.0, max=1.0, step=0.01),
            _strength(), *_TIME, Param("mode", ParamType.CHOICE, "blend", _MODE_HELP, choices=MODES)),
)

SET_MASK = NodeSpec(
    type="ConditioningSetMask", title="Conditioning Set Mask", category="conditioning",
    aliases=("Conditioning (Set Mask)", "Mask Conditioning"),
    help="The prompt acts only where the mask is painted (soft edges weigh less), at any picture size. "
         "Kiln runs the model on the whole latent: ComfyUI's set_cond_area 'mask bounds' crop is not done.",
    compute=_set_mask, inputs=(_COND_IN, Input("mask", SocketType.MASK, help="where the prompt acts")),
    outputs=(_COND_OUT,),
    params=(_strength(), *_TIME, Param("mode", ParamType.CHOICE, "blend", _MODE_HELP, choices=MODES)),
)

COMBINE = NodeSpec(
    type="ConditioningCombine", title="Conditioning Combine", category="conditioning",
    aliases=("Conditioning (Combine)",),
    help="A global prompt and regional ones (Set Area, Set Mask, Regional Prompts) as one conditioning; two "
         "global prompts are averaged.",
    compute=_combine,
    inputs=(Input("conditioning_1", SocketType.CONDITIONING), Input("conditioning_2", SocketType.CONDITIONING)),
    outputs=(_COND_OUT,),
)

SPECS = (REGIONAL_PROMPTS, SET_AREA, SET_MASK, COMBINE)
