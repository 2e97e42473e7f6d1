"""PlanLayout: boxes planned from a prompt, then the prompt and the boxes as one conditioning.

A text-conditioned model mixes up the attributes of a prompt's objects; with
boxes as well it places and labels each one. The checkpoint's layout planner
(engine.models.layout_planner; Kiln's built-in base model carries one) reads the
prompt a Text Encode node encoded and draws a layout from the node's seed. The
output conditioning holds the prompt's tokens followed by the layout's, and the
boxes as region channels, as Layout Encode makes them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.capabilities import ConditionerCapabilities
from engine.errors import UserInputError
from engine.layout import Layout
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType


def _plan_layout(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    conditioner, cond, given = inputs["conditioner"], inputs["conditioning"], inputs.get("layout")
    capabilities: ConditionerCapabilities = conditioner.capabilities
    if given is not None:  # boxes drawn or edited by hand take the planner's place
        layouts = [given.to_json()] * _batch(cond)
    elif not capabilities.layout_planner:  # any checkpoint but Kiln's built-in base model
        return {"conditioning": cond, "layout": Layout()}
    else:
        layouts = conditioner.plan_layouts(_prompts(cond), int(params["seed"]), float(params["temperature"]))
    if not any(layouts):
        return {"conditioning": cond, "layout": Layout()}
    return {"conditioning": _joined(cond, conditioner, layouts), "layout": Layout.from_json(layouts[0])}


def _prompts(cond: Any) -> list[str]:
    prompts = cond.meta.get("prompt")
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise UserInputError("the conditioning input must come from a Text Encode node: the planner reads its prompt")
    return list(prompts)


def _batch(cond: Any) -> int:
    return 1 if cond.crossattn is None else int(cond.crossattn.shape[0])


def _joined(cond: Any, conditioner: Any, layouts: list[list[dict]]) -> Any:
    """The prompt's conditioning with the layouts' tokens appended and their boxes as region channels."""
    import torch

    if not conditioner.capabilities.layout_tokens:
        raise UserInputError("this checkpoint takes no layout boxes; leave the layout input unconnected")
    boxes = conditioner.encode_layouts(layouts)
    if cond.crossattn is None or cond.crossattn.shape[-1] != boxes.crossattn.shape[-1]:
        raise UserInputError("the conditioning input was encoded by another checkpoint's text encoder")
    return cond.with_(crossattn=torch.cat([cond.crossattn, boxes.crossattn.to(cond.crossattn)], dim=1),
                      regions=boxes.regions, meta={**cond.meta, "layout": layouts})


PLAN_LAYOUT = NodeSpec(
    type="PlanLayout", title="Plan Layout", category="conditioning",
    help="Plans where each object of a prompt goes (labelled boxes drawn by the checkpoint's layout planner "
         "from the seed), then conditions on the prompt and the boxes together: prompts with several objects "
         "come out with each one's colour, shape, size and place as asked. The boxes also come out as a "
         "LAYOUT (the first prompt's; the node's thumbnail draws it), which a Layout Encode can take. Kiln's "
         "built-in base model carries a planner; with any other checkpoint the prompt passes through unchanged. "
         "Boxes wired into the layout input are used instead of planning (right-click the node after a run: "
         "Edit Boxes in a Layout Editor).",
    compute=_plan_layout,
    inputs=(Input("conditioner", SocketType.CONDITIONER, help="from Load Checkpoint"),
            Input("conditioning", SocketType.CONDITIONING, help="from Text Encode: the prompt to plan"),
            Input("layout", SocketType.LAYOUT, optional=True,
                  help="boxes to use instead of planning (a Layout Editor: the plan, edited)")),
    outputs=(Output("conditioning", SocketType.CONDITIONING, "the prompt and the planned boxes"),
             Output("layout", SocketType.LAYOUT, "the planned boxes")),
    params=(Param("seed", ParamType.SEED, 0, "which of the layouts the prompt allows", inline=True),
            Param("temperature", ParamType.FLOAT, 1.0, "below 1: the likeliest places and sizes; above: more "
                  "varied ones", min=0.1, max=2.0, step=0.05)),
)

SPECS = (PLAN_LAYOUT,)
