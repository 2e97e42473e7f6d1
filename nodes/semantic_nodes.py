"""SemanticPainter: a label map the artist paints (or imports), for semantic image synthesis.

The map lives in the `labels` param as base64 PNG text of 8-bit class ids (grey value =
class id), or comes from `path`: a PNG of class indices or a colour-coded PNG using the
palette of engine.drawing. Class 0 (white background) fills an empty map.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import KilnError, UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import SemanticMap
from nodes.image_basic import MAX_SIDE
from nodes.mask_nodes import fit_to_size


def _semantic(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from engine import drawing

    image = inputs.get("image")
    size = image.size if image is not None else (params["width"], params["height"])
    labels, param = _source_labels(params)
    if labels is None:
        labels = np.zeros((size[1], size[0]), dtype=np.uint8)
    unknown = drawing.first_unknown_class(labels, params["num_classes"])
    if unknown is not None:
        class_id, x, y, count = unknown
        raise UserInputError(f"class {class_id} at pixel ({x}, {y}) ({count} pixels of unknown classes) is "
                             f"not below num_classes {params['num_classes']}", param)
    labels = fit_to_size(labels, size, param, what="label map", labels=True)
    tensor = torch.from_numpy(labels.astype(np.int64)).unsqueeze(0).contiguous()  # (1, H, W)
    return {"semantic": SemanticMap(tensor, params["num_classes"])}


def _source_labels(params: Mapping[str, Any]) -> tuple[Any, str]:
    from engine import drawing

    try:
        if params["path"]:
            return drawing.read_label_file(params["path"], params["num_classes"]), "path"
        if params["labels"]:
            return drawing.decode_png_b64(params["labels"], "painted label map"), "labels"
    except KilnError as exc:
        raise UserInputError(str(exc), "path" if params["path"] else "labels") from None
    return None, "labels"


SEMANTIC_PAINTER = NodeSpec(
    type="SemanticPainter", title="Semantic Painter", category="conditioning",
    help="Paint a map of classes (background, red circle, ...) for semantic synthesis; double-click "
         "to open the painter. A PNG of class indices or a colour-coded PNG replaces the painting "
         "when `path` is set.",
    compute=_semantic,
    editor="semantic", paints_over="image",
    inputs=(Input("image", SocketType.IMAGE, optional=True, help="a picture to paint over; sets the size"),),
    outputs=(Output("semantic", SocketType.SEMANTIC_MAP),),
    params=(
        Param("labels", ParamType.JSON, "", "the painted class ids (base64 PNG); empty = all class 0",
              drawing="labels"),
        Param("path", ParamType.PATH, "", "optional PNG of class indices or palette colours"),
        Param("width", ParamType.INT, 128, "map width without an image", min=1, max=MAX_SIDE, step=8),
        Param("height", ParamType.INT, 128, "map height without an image", min=1, max=MAX_SIDE, step=8),
        Param("num_classes", ParamType.INT, 21, "classes the model knows (21 for the built-in model)",
              min=2, max=256),
    ),
)

SPECS = (SEMANTIC_PAINTER,)
