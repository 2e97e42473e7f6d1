"""A separate autoencoder file (an SD "VAE") -> the AUTOENCODER value (FirstStage).

Layouts read: the original ldm first stage (`encoder.down.0.block.0...`, `quant_conv`, ...) with or
without the `first_stage_model.` prefix (a full checkpoint also works: its first stage is used), and
diffusers' AutoencoderKL (`encoder.down_blocks.0.resnets.0...`). The architecture comes from the
shapes; the weights load onto Kiln's own autoencoder modules exactly as a checkpoint's first stage
does (meta device, one read per tensor). Pickled files are read with `torch.load(weights_only=True)`
only (engine.models.checkpoint). The latent scale factor comes from a `<stem>.json` card beside the
file ("scale_factor"), else it is SD's 0.18215 for a 4-channel KL autoencoder (1.0 for VQ ones).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.errors import KilnError
from engine.models.checkpoint import CheckpointError, TensorSource, open_source
from engine.models.configs import AutoencoderConfig
from engine.models.detect import detect_autoencoder
from engine.models.keymaps import AE_PREFIX, vae_key_to_diffusers

SD_SCALE_FACTOR = 0.18215
_IGNORED = ("loss.", "model_ema.")


@dataclass
class LoadedAutoencoder:
    first_stage: Any  # FirstStage
    config: AutoencoderConfig
    report: dict[str, Any] = field(default_factory=dict)


def _layout(keys: set[str]) -> tuple[str, str]:
    """(layout, prefix): 'ldm' or 'diffusers', and the prefix its autoencoder keys carry."""
    prefix = AE_PREFIX if any(k.startswith(AE_PREFIX) for k in keys) else ""
    plain = {k[len(prefix):] for k in keys if k.startswith(prefix)}
    if any(k.startswith("encoder.down_blocks.") for k in plain):
        return "diffusers", prefix
    return "ldm", prefix


def _count(pattern: str, keys: set[str]) -> int:
    found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    if not found:
        raise KilnError(f"no keys like {pattern!r}")
    return 1 + max(found)


def diffusers_vae_config(s: dict[str, tuple[int, ...]]) -> AutoencoderConfig:
    """AutoencoderConfig from the shapes of a diffusers AutoencoderKL state dict."""
    if any(".down_blocks." in k and ".attentions." in k for k in s):
        raise KilnError("attention inside the down blocks is not an SD autoencoder layout")
    ch, in_channels = s["encoder.conv_in.weight"][:2]
    levels = _count(r"encoder\.down_blocks\.(\d+)\.", set(s))
    nrb = _count(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", set(s))
    z = s["decoder.conv_in.weight"][1]
    mult = tuple(s[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"][0] // ch for i in range(levels))
    return AutoencoderConfig(kind="kl", z_channels=z, double_z=s["encoder.conv_out.weight"][0] == 2 * z,
                             in_channels=in_channels, out_ch=s["decoder.conv_out.weight"][0], ch=ch,
                             ch_mult=mult, num_res_blocks=nrb,
                             embed_dim=s["post_quant_conv.weight"][1] if "post_quant_conv.weight" in s else z,
                             attn_type="vanilla" if "encoder.mid_block.attentions.0.to_q.weight" in s else "none")


def _conv1x1(t: torch.Tensor) -> torch.Tensor:
    """diffusers stores the attention projections as Linear (C, C); ldm as Conv2d (C, C, 1, 1)."""
    return t.reshape(*t.shape, 1, 1) if t.ndim == 2 else t


def _diffusers_name(key: str, levels: int) -> tuple[str, Any]:
    name = vae_key_to_diffusers(key, levels)
    attention = ".attentions." in name and name.endswith("weight") and "group_norm" not in name
    return name, _conv1x1 if attention else None


def resolve_autoencoder(source: TensorSource, path: str) -> tuple[AutoencoderConfig, str, str]:
    """The file's autoencoder config, key layout and key prefix."""
    shapes = source.shapes()
    layout, prefix = _layout(set(shapes))
    plain = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    try:
        config = diffusers_vae_config(plain) if layout == "diffusers" else detect_autoencoder(plain)
    except (KilnError, KeyError, ValueError, IndexError) as exc:
        detail = exc.args[0] if isinstance(exc, KilnError) else f"no {exc}"
        raise CheckpointError(path, f"not an autoencoder file ({detail})") from None
    return config, layout, prefix


def plan_entries(module: torch.nn.Module, layout: str, prefix: str, levels: int) -> dict[str, tuple[str, Any]]:
    """Module key -> (file key, transform or None)."""
    entries = {}
    for key in module.state_dict():
        name, transform = _diffusers_name(key, levels) if layout == "diffusers" else (key, None)
        entries[key] = (prefix + name, transform)
    return entries


def _scale_factor(path: str, config: AutoencoderConfig, card: dict[str, Any]) -> float:
    if isinstance(card.get("scale_factor"), (int, float)):
        return float(card["scale_factor"])
    return 1.0 if config.kind == "vq" else SD_SCALE_FACTOR


def load_autoencoder_file(path: str | os.PathLike, device: str | torch.device = "auto",
                          dtype: str | torch.dtype | None = None) -> LoadedAutoencoder:
    """Load an autoencoder file onto `device`; fp16 is kept in fp32 (SD autoencoders overflow in fp16)."""
    from engine.models.autoencoder import build_autoencoder
    from engine.models.first_stage import FirstStage
    from engine.models.loader import (
        KeyPlan,
        _latent_rgb,
        _load_plan,
        _read_card,
        check_shapes,
        meta_modules,
        resolve_device,
        resolve_dtype,
    )
    from engine.models.prepacked import prepack_convolutions

    path = str(path)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    dt = torch.float32 if dt == torch.float16 else dt
    source = open_source(path)
    config, layout, prefix = resolve_autoencoder(source, path)
    with meta_modules():
        ae = build_autoencoder(config)
    entries = plan_entries(ae, layout, prefix, len(config.ch_mult))
    shapes = source.shapes()
    missing = [src for src, _ in entries.values() if src not in shapes]
    if missing:
        raise CheckpointError(path, f"missing key {missing[0]!r} for a {layout} autoencoder"
                                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    used = {src for src, _ in entries.values()}
    unused = sorted(k for k in shapes if k.startswith(prefix) and k not in used and not k.startswith(_IGNORED))
    plan = KeyPlan(ae, entries)
    check_shapes([plan], shapes, path)
    _load_plan(plan, source, dev, dt, channels_last=dev.type == "cpu")
    if dev.type == "cpu":
        prepack_convolutions(ae)
    card = _read_card(path)
    name = os.path.basename(path)
    first_stage = FirstStage(ae, _scale_factor(path, config, card), name=name, latent_rgb=_latent_rgb(card))
    report = {"layout": layout, "prefix": prefix, "unused": unused, "device": str(dev), "dtype": str(dt),
              "keys_used": len(used)}
    return LoadedAutoencoder(first_stage, config, report)
