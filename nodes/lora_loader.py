"""LoraLoader and LoraLoaderModelOnly: a LoRA file applied to MODEL (and CONDITIONER).

The outputs are patched copies that share every unpatched tensor with their inputs
(engine.models.lora): the cached base model is never changed, so the executor's cached
outputs and other nodes using the same model stay valid. Two loaders in a row stack.
LoRA files are listed from the `loras` folders (engine.choices); safetensors only.
"""
from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.choices import LORAS, ModelFolderFiles
from engine.errors import UserInputError
from engine.spec import ComputeContext, EngineSettings, Input, NodeSpec, Output, Param, ParamType, SocketType

log = logging.getLogger(__name__)

_LORA_ENDINGS = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight")


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names in a .safetensors header (no tensor read); empty when it is not one."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(length, 100 * 1024 * 1024)))
    except (OSError, ValueError, struct.error):
        return []
    return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else []


def _is_lora(entry: Path) -> bool:
    if not entry.is_file() or entry.suffix.lower() != ".safetensors":
        return False
    return any(key.endswith(_LORA_ENDINGS) for key in safetensors_keys(entry))


LORA_FILES = ModelFolderFiles(_is_lora, LORAS)


def resolve_lora_path(name: str, settings: EngineSettings | None) -> str:
    return LORA_FILES.require(name, settings, "a LoRA", "lora_name")


def apply_lora(path: str, model: Any, conditioner: Any | None, strength_model: float,
               strength_clip: float) -> tuple[Any, Any]:
    """(patched model, patched conditioner or None); raises when no key of the file fits."""
    from engine.models.lora import patched_copy, plan_lora, read_lora_file

    tensors = read_lora_file(path)
    plan = plan_lora(tensors, model.unet, conditioner)
    if plan.used_keys == 0:
        part = "UNet" if conditioner is None else "UNet or text encoder"
        raise UserInputError(f"{path}: none of the LoRA's {len(tensors)} keys match this model's {part} "
                             f"(a LoRA for another kind of model?)", param="lora_name")
    if plan.unused:
        log.warning("LoRA %s: %d of %d keys match nothing in this model and were not used (first: %s)",
                    path, len(plan.unused), len(tensors), plan.unused[0])
    where = f"{path}"
    patched_model = patched_copy(model, plan.unet, strength_model, where, inner="unet")
    patched_cond = None if conditioner is None else patched_copy(conditioner, plan.text, strength_clip, where)
    return patched_model, patched_cond


def _load(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    path = resolve_lora_path(params["lora_name"], ctx.settings)
    model, cond = apply_lora(path, inputs["model"], inputs["conditioner"], float(params["strength_model"]),
                             float(params["strength_clip"]))
    return {"model": model, "conditioner": cond}


def _load_model_only(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    path = resolve_lora_path(params["lora_name"], ctx.settings)
    model, _ = apply_lora(path, inputs["model"], None, float(params["strength_model"]), 0.0)
    return {"model": model}


def _lora_param() -> Param:
    return Param("lora_name", ParamType.CHOICE, "", "a LoRA file (.safetensors) from the loras folders, or a path",
                 choices_from=LORAS, inline=True)


def _strength(name: str, what: str) -> Param:
    return Param(name, ParamType.FLOAT, 1.0, f"how strongly the LoRA changes {what} (0: not at all; "
                 "negative values push the other way)", min=-10.0, max=10.0, step=0.05, inline=True)


LORA_LOADER = NodeSpec(
    type="LoraLoader", title="Load LoRA", category="loaders",
    aliases=("LoRA", "Lora Loader", "LyCORIS", "LoCon"),
    help="Applies a LoRA file (kohya/A1111 or diffusers/PEFT layout, LoCon convolutions included) to the "
         "denoiser and the text encoder, each with its own strength. The inputs are left unchanged; chain "
         "several loaders to stack LoRAs.",
    compute=_load,
    inputs=(Input("model", SocketType.MODEL, help="the denoiser to patch"),
            Input("conditioner", SocketType.CONDITIONER, help="the text encoder to patch")),
    outputs=(Output("model", SocketType.MODEL, "the denoiser with the LoRA applied"),
             Output("conditioner", SocketType.CONDITIONER, "the text encoder with the LoRA applied")),
    params=(_lora_param(), _strength("strength_model", "the denoiser"), _strength("strength_clip", "the text encoder")),
)

LORA_LOADER_MODEL_ONLY = NodeSpec(
    type="LoraLoaderModelOnly", title="Load LoRA (Model Only)", category="loaders",
    aliases=("LoRA model only",),
    help="Applies a LoRA file to the denoiser only (its text encoder part, if any, is left out).",
    compute=_load_model_only,
    inputs=(Input("model", SocketType.MODEL, help="the denoiser to patch"),),
    outputs=(Output("model", SocketType.MODEL, "the denoiser with the LoRA applied"),),
    params=(_lora_param(), _strength("strength_model", "the denoiser")),
)

SPECS = (LORA_LOADER, LORA_LOADER_MODEL_ONLY)
