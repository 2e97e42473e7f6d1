"""SemanticEncode: a semantic map through a semantic synthesis model's SpatialRescaler.

The conditioner (engine.models.conditioners.SpatialConditioner) one-hot encodes
the map, halves it bilinearly `n_stages` times down to the latent's size and maps
the classes with its 1x1 channel mapper; the result is concatenated to the
latent at every UNet call. With a latent connected, the map is first resized
(nearest) so that the conditioning has exactly the latent's size. For guidance,
Conditioning Zero Out of this node's output is the "no map" negative of models
trained with map dropout (Kiln's built-in model). torch is imported inside compute.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.capabilities import ConditionerCapabilities
from engine.errors import UserInputError
from engine.spec import ComputeContext, Input, NodeSpec, Output, SocketType
from engine.values import SemanticMap

_HINTS = {"text": "Text Encode", "class": "Class Encode", "layout": "Layout Encode",
          "image": "Super-Resolution Conditioning", "masked_image": "Inpaint Conditioning"}


def require_accepts(conditioner: Any, wanted: str, what: str) -> None:
    """A one-line error unless the model's conditioner takes `wanted` (semantic, image, ...)."""
    capabilities: ConditionerCapabilities = conditioner.capabilities
    accepts = capabilities.accepts
    if accepts == wanted:
        return
    if accepts == "nothing":
        raise UserInputError(f"this model is unconditional: it takes no {what}")
    hint = _HINTS.get(accepts)
    use = f"; use {hint}" if hint else ""
    raise UserInputError(f"this model is conditioned on {accepts.replace('_', ' ')}, not a {what}{use}")


def map_reduction(conditioner: Any) -> int:
    """How many map pixels make one latent pixel along a side (8 for 3 bilinear halvings)."""
    params = conditioner.config.params
    stages = int(params.get("n_stages", 1))
    return max(1, round((1.0 / float(params.get("multiplier", 0.5))) ** stages))


def fit_map(semantic: SemanticMap, latent_size: tuple[int, int], reduction: int) -> SemanticMap:
    """The map resized (nearest, class ids kept) to latent_size * reduction when it differs."""
    import torch.nn.functional as F

    labels = semantic.labels
    target = (latent_size[0] * reduction, latent_size[1] * reduction)
    if tuple(labels.shape[-2:]) == target:
        return semantic
    h, w = labels.shape[-2:]
    if abs(w / h - target[1] / target[0]) > 0.01 * (target[1] / target[0]):
        raise UserInputError(f"the semantic map is {w}x{h} but the latent stands for {target[1]}x{target[0]} "
                             f"pixels: a different shape")
    resized = F.interpolate(labels[:, None].float(), size=target, mode="nearest-exact")
    return SemanticMap(resized[:, 0].round().long(), semantic.num_classes)


def _semantic_encode(ctx: ComputeContext, inputs: Mapping[str, Any],
                     params: Mapping[str, Any]) -> dict[str, Any]:
    conditioner, semantic = inputs["conditioner"], inputs["semantic"]
    require_accepts(conditioner, "semantic", "semantic map")
    reduction = map_reduction(conditioner)
    latent = inputs.get("latent")
    if latent is not None:
        semantic = fit_map(semantic, tuple(latent.samples.shape[-2:]), reduction)
    h, w = semantic.labels.shape[-2:]
    if h % reduction or w % reduction:
        raise UserInputError(f"the semantic map is {w}x{h}; this model shrinks it {reduction}x to the "
                             f"latent, so both sides must be multiples of {reduction} (or connect the latent "
                             f"to fit it)")
    cond = conditioner.encode(semantic)
    return {"conditioning": cond.with_(meta={**cond.meta, "semantic": f"{w}x{h}"})}


SEMANTIC_ENCODE = NodeSpec(
    type="SemanticEncode", title="Semantic Encode", category="conditioning",
    help="Conditions a semantic synthesis model on a map of classes: the map is shrunk to the latent's "
         "size by the model's spatial rescaler and concatenated to the latent. Connect the latent to resize "
         "the map to it. For guidance, use Conditioning Zero Out of this output as the negative.",
    compute=_semantic_encode,
    inputs=(Input("conditioner", SocketType.CONDITIONER, help="from Load Checkpoint (a semantic model)"),
            Input("semantic", SocketType.SEMANTIC_MAP, help="from Semantic Painter"),
            Input("latent", SocketType.LATENT, optional=True,
                  help="the latent to sample; the map is fitted to it")),
    outputs=(Output("conditioning", SocketType.CONDITIONING),),
)

SPECS = (SEMANTIC_ENCODE,)
