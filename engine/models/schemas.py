"""Small schemas for what Kiln reads from model files: safetensors headers, diffusers configs and
the embedded `kiln_config`. Each check refuses a wrong type or an unusable value with a
CheckpointError naming the file and the field, before any code indexes or divides by it.
Nothing here imports torch.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from engine.models.checkpoint import CheckpointError
from engine.models.configs import AutoencoderConfig, DiffusionConfig, UNetConfig

_SIZE_MAX = 1 << 20  # no channel count, layer count or size in a real model is larger
Check = Callable[[Any], str | None]  # a problem with a value, or None


def _int(low: int, high: int = _SIZE_MAX) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number, not {_kind(value)}"
        return None if low <= value <= high else f"must be between {low} and {high}, not {value}"
    return check


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, not {_kind(value)}"
    return None if math.isfinite(value) else "must be a finite number"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, not {_kind(value)}"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be text, not {_kind(value)}"


def _list(item: Check, min_len: int = 1, max_len: int = 64) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, (list, tuple)):
            return f"must be a list, not {_kind(value)}"
        if not min_len <= len(value) <= max_len:
            return f"must hold {min_len} to {max_len} entries, not {len(value)}"
        problems = (item(v) for v in value)
        return next((f"entry {i}: {p}" for i, p in enumerate(problems) if p), None)
    return check


def _either(*checks: Check) -> Check:
    def check(value: Any) -> str | None:
        problems = [c(value) for c in checks]
        return None if None in problems else problems[0]
    return check


def _optional(inner: Check) -> Check:
    return lambda value: None if value is None else inner(value)


def _kind(value: Any) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_object(data: Any, schema: dict[str, tuple[Check, bool]], path: Any, what: str = "") -> None:
    """Refuse `data` unless it is an object whose fields in `schema` ({name: (check, required)}) pass."""
    prefix = f"{what}: " if what else ""
    if not isinstance(data, dict):
        raise CheckpointError(path, f"{prefix}expected a JSON object, found {_kind(data)}")
    for name, (check, required) in schema.items():
        if name not in data:
            if required:
                raise CheckpointError(path, f"{prefix}field {name!r} is missing")
            continue
        problem = check(data[name])
        if problem:
            raise CheckpointError(path, f"{prefix}field {name!r} {problem}")


# --- diffusers folders ---------------------------------------------------------------------------
_POS = _int(1)
_CHANNELS = _list(_POS)
_UNET = {
    "block_out_channels": (_CHANNELS, True), "layers_per_block": (_either(_int(0, 64), _list(_int(0, 64))), False),
    "down_block_types": (_list(_text, 0), False), "in_channels": (_POS, False), "out_channels": (_POS, False),
    "num_attention_heads": (_optional(_either(_POS, _list(_POS))), False),
    "attention_head_dim": (_optional(_either(_POS, _list(_POS))), False),
    "cross_attention_dim": (_optional(_POS), False), "use_linear_projection": (_bool, False),
    "transformer_layers_per_block": (_either(_int(0, 64), _list(_int(0, 64))), False),
    "num_class_embeds": (_optional(_POS), False),
}
_VAE = {
    "block_out_channels": (_CHANNELS, True), "latent_channels": (_POS, False), "in_channels": (_POS, False),
    "out_channels": (_POS, False), "layers_per_block": (_int(0, 64), False), "sample_size": (_POS, False),
    "scaling_factor": (_number, False),
}
_TEXT_ENCODER = {
    "hidden_size": (_POS, True), "num_hidden_layers": (_POS, True), "num_attention_heads": (_POS, True),
    "intermediate_size": (_POS, True), "vocab_size": (_POS, True), "max_position_embeddings": (_POS, False),
    "hidden_act": (_text, False),
}
_SCHEDULER = {
    "beta_schedule": (_text, False), "prediction_type": (_text, False), "num_train_timesteps": (_POS, False),
    "beta_start": (_number, False), "beta_end": (_number, False),
}


def check_diffusers_unet(data: Any, path: Any) -> None:
    check_object(data, _UNET, path)
    _check_multiples(data["block_out_channels"], path)
    levels = len(data["block_out_channels"])
    for name in ("layers_per_block", "num_attention_heads", "attention_head_dim", "transformer_layers_per_block"):
        value = data.get(name)
        if isinstance(value, list) and len(value) != levels:
            raise CheckpointError(path, f"field {name!r} must have one entry per block ({levels}), not {len(value)}")


def check_diffusers_vae(data: Any, path: Any) -> None:
    check_object(data, _VAE, path)
    _check_multiples(data["block_out_channels"], path)


def check_diffusers_text_encoder(data: Any, path: Any) -> None:
    check_object(data, _TEXT_ENCODER, path)


def check_diffusers_scheduler(data: Any, path: Any) -> None:
    check_object(data, _SCHEDULER, path)


def _check_multiples(channels: list[int], path: Any) -> None:
    if any(ch % channels[0] for ch in channels):
        raise CheckpointError(path, f"field 'block_out_channels' must be multiples of its first entry, not {channels}")


# --- the embedded kiln_config --------------------------------------------------------------------
def _dataclass_schema(cls: type, positive: tuple[str, ...]) -> dict[str, tuple[Check, bool]]:
    """Checks for the fields of a config dataclass, from its defaults' types."""
    schema: dict[str, tuple[Check, bool]] = {}
    for f in fields(cls):
        default = f.default
        check: Check
        if isinstance(default, bool):
            check = _bool
        elif isinstance(default, int):
            check = _int(1 if f.name in positive else -1)
        elif isinstance(default, float):
            check = _number
        elif isinstance(default, tuple):
            check = _list(_int(1 if f.name in positive else 0), 0)
        elif isinstance(default, str):
            check = _text
        else:
            continue  # None defaults: int | None fields, checked where they are used
        if f.name == "conditioning_key":
            check = _optional(_text)
        if f.name in ("num_res_blocks", "transformer_depth"):
            check = _either(_int(0, 64), _list(_int(0, 64)))
        schema[f.name] = (check, False)
    return schema


_KILN_CONFIG = {
    "unet": _dataclass_schema(UNetConfig, ("in_channels", "out_channels", "model_channels", "channel_mult")),
    "autoencoder": _dataclass_schema(AutoencoderConfig, ("embed_dim", "z_channels", "resolution", "in_channels",
                                                         "out_ch", "ch", "ch_mult", "n_embed")),
    "diffusion": _dataclass_schema(DiffusionConfig, ("timesteps",)),
}


def check_kiln_config(data: Any, path: Any, what: str) -> None:
    """The embedded `kiln_config` (CheckpointConfig.to_dict()): sections and their fields' types."""
    check_object(data, {"preset": (_text, False)}, path, what)
    for section, schema in _KILN_CONFIG.items():
        if section in data:
            check_object(data[section], schema, path, f"{what} {section}")
    if "conditioner" in data:
        cond = {"kind": (_text, False), "params": (lambda v: None if isinstance(v, dict) else "must be an object",
                                                   False)}
        check_object(data["conditioner"], cond, path, f"{what} conditioner")
