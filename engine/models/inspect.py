"""inspect-model: what a checkpoint is, read from its header without loading weights."""
from __future__ import annotations

import json
import sys
from typing import Any

import torch

from engine.errors import KilnError
from engine.models.checkpoint import CheckpointError
from engine.models.configs import CheckpointConfig
from engine.models.keymaps import has_ema
from engine.models.loader import build_modules, check_shapes, meta_modules, plan_keys, resolve_checkpoint


def inspect_checkpoint(path: str) -> dict[str, Any]:
    """A JSON-ready summary: preset, autoencoder, UNet, conditioning, parameter counts, strictness."""
    resolved = resolve_checkpoint(path)
    cfg = resolved.config
    shapes = resolved.source.shapes()
    try:
        with meta_modules():
            unet, ae, conditioner = build_modules(cfg)
    except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError, RuntimeError):
        raise CheckpointError(path, f"its model config ({resolved.config_source}) describes a model "
                                    "Kiln cannot build") from None
    plans, report = plan_keys(unet, ae, conditioner, shapes, use_ema=False)
    shape_problem = None
    if not report["missing"]:
        try:
            check_shapes(plans, shapes, path)
        except KilnError as exc:
            shape_problem = str(exc)
    counts = {name: _count(module) for name, module in (("unet", unet), ("autoencoder", ae),
                                                         ("conditioner", conditioner))}
    counts["total"] = sum(counts.values())
    return {
        "file": path, "format": resolved.source.format, "config_source": resolved.config_source,
        **_describe(cfg), "parameters": counts, "ema_weights": has_ema(shapes),
        "strict": report["strict"] and shape_problem is None,
        "missing_keys": report["missing"][:10], "unexpected_keys": report["unexpected"][:10],
        "shape_mismatch": shape_problem, "guessed": resolved.guessed, "keys_in_file": len(shapes),
        "first_stage_copies": report["first_stage_copies"],  # cond_stage_model.* = first stage (LDM inpainting)
    }


def _describe(cfg: CheckpointConfig) -> dict[str, Any]:
    u, a, d = cfg.unet, cfg.autoencoder, cfg.diffusion
    levels = [lvl for lvl in range(len(u.channel_mult)) if 2 ** lvl in u.attention_resolutions]
    return {
        "preset": cfg.preset,
        "autoencoder": {"kind": a.kind, "downsampling_factor": a.downsample_factor, "latent_channels": a.embed_dim,
                        "scale_factor": d.scale_factor, "channels": a.ch, "channel_mult": list(a.ch_mult)},
        "unet": {"model_channels": u.model_channels, "channel_mult": list(u.channel_mult),
                 "attention_levels": levels, "attention_downsampling_rates": [2 ** lvl for lvl in levels],
                 "context_dim": u.context_dim if u.use_spatial_transformer else None,
                 "input_channels": u.in_channels, "output_channels": u.out_channels,
                 "transformer": "linear" if u.use_linear_in_transformer else ("conv" if u.use_spatial_transformer else None)},
        "conditioning": {"mode": d.conditioning_key or "unconditional", "conditioner": cfg.conditioner.kind},
        "prediction": d.prediction,
        "schedule": {"timesteps": d.timesteps, "beta_schedule": d.beta_schedule, "linear_start": d.linear_start,
                     "linear_end": d.linear_end},
    }


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inspect_main(path: str, as_json: bool = False) -> int:
    """Print the summary (a table, or one JSON object); 2 with one line on stderr for a bad file."""
    try:
        info = inspect_checkpoint(path)
    except KilnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print(format_table(info))
    return 0


def format_table(info: dict[str, Any]) -> str:
    a, u, c, p = info["autoencoder"], info["unet"], info["conditioning"], info["parameters"]
    rows = [
        ("file", info["file"]), ("format", f"{info['format']} (config: {info['config_source']})"),
        ("preset", info["preset"]),
        ("autoencoder", (f"{a['kind'].upper()} f{a['downsampling_factor']}, {a['latent_channels']} latent "
                         f"channels, scale {a['scale_factor']:g}")),
        ("unet", (f"{u['model_channels']} channels x {u['channel_mult']}, attention at levels "
                  f"{u['attention_levels']}, {u['input_channels']} in / {u['output_channels']} out")),
        ("context", str(u["context_dim"]) if u["context_dim"] else "none"),
        ("conditioning", f"{c['mode']} ({c['conditioner']})"), ("prediction", info["prediction"]),
        ("parameters", ", ".join(f"{k} {_millions(v)}" for k, v in p.items())),
        ("ema weights", "yes" if info["ema_weights"] else "no"),
        ("strict", "yes" if info["strict"] else _why_not(info)),
    ]
    if info["guessed"]:
        rows.append(("guessed", ", ".join(info["guessed"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 100_000 else str(n)


def _why_not(info: dict[str, Any]) -> str:
    if info["missing_keys"]:
        return f"no: missing {info['missing_keys'][0]}"
    if info["unexpected_keys"]:
        return f"no: unexpected {info['unexpected_keys'][0]}"
    return f"no: {info['shape_mismatch']}"
