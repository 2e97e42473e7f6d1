"""CheckpointLoader: a checkpoint file -> MODEL, AUTOENCODER and CONDITIONER.

Checkpoints are named by file name (the built-in models in resources/models
first, then the user's model folders) or given as a path. Loaded models stay in
the ModelStore across runs; changing `prediction` re-wraps the same weights.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine import model_geometry
from engine.errors import Issue, KilnError, UserInputError
from engine.graph import Graph
from engine.spec import EngineSettings, NodeRegistry, NodeSpec, Output, Param, ParamType, SocketType

BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[1] / "resources" / "models"
CHECKPOINT_EXTS = (".safetensors", ".ckpt", ".pt", ".pth")
# A new Load Checkpoint starts on the first built-in model (the first name list_checkpoints gives).
DEFAULT_CHECKPOINT = "kiln-shapes-base.safetensors"


def model_dirs(settings: EngineSettings | None) -> list[Path]:
    """Folders searched for checkpoints: built-in models first, then the user's."""
    extra = [Path(os.path.expanduser(d)) for d in (settings.model_dirs if settings else ())]
    return [BUILTIN_MODELS_DIR, *extra]


def list_checkpoints(settings: EngineSettings | None = None) -> list[str]:
    """Checkpoint names for the `checkpoint` menu: built-in ones first, each name once."""
    names: list[str] = []
    for folder in model_dirs(settings):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
            if entry.name not in names and _is_checkpoint(entry):
                names.append(entry.name)
    return names


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


def resolve_checkpoint_path(name: str, settings: EngineSettings | None = None) -> str:
    """A path as given when it exists, else the name looked up in the model folders."""
    if not name:
        raise UserInputError("choose a checkpoint", param="checkpoint")
    given = Path(os.path.expanduser(name))
    if given.exists():
        return str(given)
    for folder in model_dirs(settings):
        candidate = folder / name
        if candidate.exists():
            return str(candidate)
    searched = ", ".join(str(d) for d in model_dirs(settings))
    raise UserInputError(f"checkpoint {name!r} not found (looked in {searched})", param="checkpoint")


def find_checkpoint(name: str, settings: EngineSettings | None = None) -> str | None:
    """The file a checkpoint param names, or None when there is none (for checks that must not fail)."""
    try:
        return resolve_checkpoint_path(name, settings)
    except UserInputError:
        return None


def model_size_issues(graph: Graph, registry: NodeRegistry, settings: EngineSettings | None) -> list[Issue]:
    """Picture sizes a sampler's checkpoint cannot take, on the Empty Latent (or the like) that sets them;
    read from the checkpoint files without loading them (engine.model_geometry)."""
    return model_geometry.size_issues(graph, registry, lambda name: find_checkpoint(name, settings))


def _load(ctx: Any, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    from engine.models.loader import load_checkpoint, resolve_device, resolve_dtype, use_cpu_threads

    settings = ctx.settings
    path = resolve_checkpoint_path(params["checkpoint"], settings)
    use_ema = bool(params["use_ema"])
    try:
        device = resolve_device(settings.device)
        if device.type == "cpu":
            use_cpu_threads(settings.threads)
        dtype = resolve_dtype(settings.precision, device)
        loaded = ctx.models.get("checkpoint", path, lambda: load_checkpoint(path, device, dtype, use_ema=use_ema),
                                extra=(str(device), str(dtype), use_ema))
    except UserInputError:
        raise
    except KilnError as exc:
        raise UserInputError(str(exc), param="checkpoint") from exc
    model_geometry.remember(path, model_geometry.rule_from_config(loaded.config))  # for the editor's size check
    return {"model": _with_prediction(loaded.model, params["prediction"]), "autoencoder": loaded.first_stage,
            "conditioner": loaded.conditioner}


def _with_prediction(model: Any, prediction: str) -> Any:
    """The same UNet weights under another prediction type (no copy)."""
    if prediction == "auto" or prediction == model.prediction:
        return model
    from dataclasses import replace

    from engine.models.diffusion import LatentDiffusionModel

    return LatentDiffusionModel(model.unet, replace(model.config, prediction=prediction), model.name).to(model.device)


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
                  choices_from="checkpoints", inline=True),
            Param("use_ema", ParamType.BOOL, False, "use the EMA weights when the file has them"),
            Param("prediction", ParamType.CHOICE, "auto", "what the UNet predicts: auto (from the file), "
                  "eps (noise) or v (SD 2.x 768 models)", choices=("auto", "eps", "v"))),
)

SPECS = (CHECKPOINT_LOADER,)
