"""LayoutEditor: labelled boxes the artist draws, for layout-to-image synthesis.

The boxes live in the `boxes` param as [{"label": "red circle", "box": [x0, y0, x1, y1]}, ...]
in normalised coordinates (origin top-left); the LAYOUT value is the engine.layout.Layout they
make. With labels "shapes world" every label must be one of the built-in model's 18
`{colour} {shape}` labels; "free text" accepts any label (for models with a text encoder).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UserInputError
from engine.layout import Layout, LayoutError
from engine.spec import ROLE_HOLDS_LAYOUT, ComputeContext, NodeSpec, Output, Param, ParamType, SocketType

VOCABULARIES = ("shapes world", "free text")


def _layout(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    from engine import drawing

    vocabulary = drawing.LAYOUT_LABELS if params["labels"] == "shapes world" else None
    try:
        return {"layout": Layout.from_json(params["boxes"], vocabulary)}
    except LayoutError as exc:
        raise UserInputError(str(exc), "boxes") from None


LAYOUT_EDITOR = NodeSpec(
    type="LayoutEditor", title="Layout Editor", category="conditioning",
    aliases=("Bounding boxes", "Regional prompter"),
    help="Labelled boxes for layout-to-image models; double-click to draw them. "
         "Coordinates are fractions of the picture, origin top-left.",
    compute=_layout,
    editor="layout", roles=(ROLE_HOLDS_LAYOUT,),
    outputs=(Output("layout", SocketType.LAYOUT, 'a list of {"label", "box": [x0, y0, x1, y1]}'),),
    params=(
        Param("boxes", ParamType.JSON, [],
              'list of {"label": "red circle", "box": [x0, y0, x1, y1]} in [0, 1]'),
        Param("labels", ParamType.CHOICE, "shapes world", "which labels are allowed: the built-in model's "
              "'{colour} {shape}' or any text", choices=VOCABULARIES, inline=True),
    ),
)

SPECS = (LAYOUT_EDITOR,)
