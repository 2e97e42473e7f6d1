"""CheckpointLoader: a checkpoint file -> MODEL, AUTOENCODER and CONDITIONER.

Checkpoints are named by file name (the built-in models in resources/models
first, then the user's model folders) or given as a path. Loaded models stay in
the ModelStore across runs; changing `prediction` re-wraps the same weights.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine import model_geometry
from engine.choices import CHECKPOINTS, ModelFolderFiles, model_folders
from engine.errors import KilnError, UserInputError, quote
from engine.spec import ComputeContext, EngineSettings, NodeSpec, Output, Param, ParamType, SocketType

CHECKPOINT_EXTS = (".safetensors", ".ckpt", ".pt", ".pth")
# A new Load Checkpoint starts on the first built-in model (the first name CHECKPOINT_FILES lists).
DEFAULT_CHECKPOINT = "kiln-shapes-base.safetensors"


def _is_checkpoint(entry: Path) -> bool:
    """Full models only: a diffusers folder, a torch file, or a safetensors file holding a UNet."""
    if entry.is_dir():
        return (entry / "unet" / "config.json").is_file()
    if entry.suffix.lower() in (".ckpt", ".pt", ".pth"):
        return True
    return entry.suffix.lower() == ".safetensors" and _safetensors_has_unet(entry)


def _safetensors_has_unet(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(length, 100 * 1024 * 1024)))
    except (OSError, ValueError, struct.error):
        return False
    return any(k.startswith("model.diffusion_model.") for k in header)


# The `checkpoints` choice list (registered on the registry by nodes.build_registry).
CHECKPOINT_FILES = ModelFolderFiles(_is_checkpoint)


def list_checkpoints(settings: EngineSettings | None = None) -> list[str]:
    """Checkpoint names for the `checkpoint` menu: built-in ones first, each name once."""
    return CHECKPOINT_FILES.list(settings)


def resolve_checkpoint_path(name: str, settings: EngineSettings | None = None) -> str:
    """A path as given when it exists, else the name looked up in the model folders."""
    if not name:
        raise UserInputError("choose a checkpoint", param="checkpoint")
    found = CHECKPOINT_FILES.resolve(name, settings)
    if found is None:
        searched = ", ".join(str(d) for d in model_folders(settings))
        raise UserInputError(f"checkpoint {quote(name)} not found (looked in {searched})", param="checkpoint")
    return found


def _load(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    from engine.models.loader import load_checkpoint, resolve_device, resolve_dtype, use_cpu_threads
    from engine.offload import estimate_checkpoint_bytes

    settings = ctx.settings
    path = resolve_checkpoint_path(params["checkpoint"], settings)
    use_ema = bool(params["use_ema"])
    try:
        device = resolve_device(settings.device)
        if device.type == "cpu":
            use_cpu_threads(settings.threads)
        dtype = resolve_dtype(settings.precision, device)
        loaded = ctx.models.get("checkpoint", path, lambda: load_checkpoint(path, device, dtype, use_ema=use_ema),
                                extra=(str(device), str(dtype), use_ema),
                                size_hint=lambda: estimate_checkpoint_bytes(path, dtype, use_ema))
    except UserInputError:
        raise
    except KilnError as exc:
        raise UserInputError(str(exc), param="checkpoint") from exc
    model_geometry.remember(path, loaded.model.capabilities.size_rule)  # for the editor's size check
    return {"model": _with_prediction(loaded.model, params["prediction"]), "autoencoder": loaded.first_stage,
            "conditioner": loaded.conditioner}


def _with_prediction(model: Any, prediction: str) -> Any:
    """The same UNet weights under another prediction type (no copy)."""
    if prediction == "auto" or prediction == model.prediction:
        return model
    from dataclasses import replace

    from engine.models.diffusion import LatentDiffusionModel

    return LatentDiffusionModel(model.unet, replace(model.config, prediction=prediction), model.name,
                                model.capabilities).to(model.device)


CHECKPOINT_LOADER = NodeSpec(
    type="CheckpointLoader", title="Load Checkpoint", category="loaders",
    aliases=("Checkpoint Loader", "CheckpointLoaderSimple", "Load Model", "Stable Diffusion checkpoint"),
    help="Loads a latent diffusion checkpoint (.safetensors, .ckpt or a diffusers folder): the denoiser, "
         "its autoencoder and its conditioner. Built-in models are listed first.",
    compute=_load,
    outputs=(Output("model", SocketType.MODEL, "the UNet denoiser with its noise schedule"),
             Output("autoencoder", SocketType.AUTOENCODER, "encodes images to latents and back"),
             Output("conditioner", SocketType.CONDITIONER, "turns prompts, classes or layouts into conditioning")),
    params=(Param("checkpoint", ParamType.CHOICE, DEFAULT_CHECKPOINT, "a model from the model folders, or a path",
                  choices_from=CHECKPOINTS, inline=True),
            Param("use_ema", ParamType.BOOL, False, "use the EMA weights when the file has them"),
            Param("prediction", ParamType.CHOICE, "auto", "what the UNet predicts: auto (from the file), "
                  "eps (noise) or v (SD 2.x 768 models)", choices=("auto", "eps", "v"))),
)

SPECS = (CHECKPOINT_LOADER,)
