"""AutoencoderLoader: a separate autoencoder file (an SD "VAE") -> AUTOENCODER.

Files are listed from the `vae` folders (engine.choices) or given as a path; the original ldm
layout (with or without `first_stage_model.`) and diffusers' AutoencoderKL layout are read
(engine.models.autoencoder_file). Loaded autoencoders stay in the ModelStore across runs.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.choices import VAE, ModelFolderFiles
from engine.errors import KilnError, UserInputError
from engine.spec import ComputeContext, EngineSettings, NodeSpec, Output, Param, ParamType, SocketType
from nodes.lora_loader import safetensors_keys

_AE_KEYS = ("encoder.conv_in.weight", "first_stage_model.encoder.conv_in.weight")


def _is_autoencoder(entry: Path) -> bool:
    """A .safetensors file holding an autoencoder and no UNet; a pickled file inside a `vae` folder."""
    if not entry.is_file():
        return False
    suffix = entry.suffix.lower()
    if suffix in (".pt", ".ckpt", ".pth"):
        return entry.parent.name == VAE
    if suffix != ".safetensors":
        return False
    keys = safetensors_keys(entry)
    return any(k in _AE_KEYS for k in keys) and not any(k.startswith("model.diffusion_model.") for k in keys)


AUTOENCODER_FILES = ModelFolderFiles(_is_autoencoder, VAE)


def resolve_autoencoder_path(name: str, settings: EngineSettings | None) -> str:
    return AUTOENCODER_FILES.require(name, settings, "an autoencoder", "vae_name")


def _load(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    from engine.models.autoencoder_file import load_autoencoder_file
    from engine.models.loader import resolve_device, resolve_dtype, use_cpu_threads

    settings = ctx.settings
    path = resolve_autoencoder_path(params["vae_name"], settings)
    try:
        device = resolve_device(settings.device)
        if device.type == "cpu":
            use_cpu_threads(settings.threads)
        dtype = resolve_dtype(settings.precision, device)
        loaded = ctx.models.get("autoencoder", path, lambda: load_autoencoder_file(path, device, dtype),
                                extra=(str(device), str(dtype)))
    except UserInputError:
        raise
    except KilnError as exc:
        raise UserInputError(str(exc), param="vae_name") from exc
    return {"autoencoder": loaded.first_stage}


AUTOENCODER_LOADER = NodeSpec(
    type="AutoencoderLoader", title="Load Autoencoder", category="loaders",
    aliases=("VAELoader", "Load VAE", "VAE Loader"),
    help="Loads a separate autoencoder file (an SD 'VAE': .safetensors in the original or diffusers "
         "layout) to use in place of a checkpoint's own.",
    compute=_load,
    outputs=(Output("autoencoder", SocketType.AUTOENCODER, "encodes images to latents and back"),),
    params=(Param("vae_name", ParamType.CHOICE, "", "an autoencoder file from the vae folders, or a path",
                  choices_from=VAE, inline=True),),
)

SPECS = (AUTOENCODER_LOADER,)
