"""Exported model files and their JSON cards: writing a checkpoint in the original single-file layout,
reading and updating cards and metadata, and loading what a run starts from (an autoencoder file, an
exported model's weights and training config).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import KilnError
from engine.models.autoencoder import AutoencoderKL
from engine.models.configs import AutoencoderConfig, CheckpointConfig
from engine.models.keymaps import AE_PREFIX
from engine.models.loader import CARD_CONFIG_KEY, METADATA_CONFIG_KEY
from training.shapes_world import SPEC_VERSION


def write_checkpoint(out: str | Path, weights: dict[str, torch.Tensor], ae: nn.Module, config: CheckpointConfig,
                     card: dict[str, Any], dtype: torch.dtype = torch.float16) -> dict[str, Any]:
    """`<out>.safetensors` in the original layout plus the `<out>.json` card; returns the card.

    The CheckpointConfig goes into the file's metadata (`kiln_config`) and the
    card (`checkpoint_config`); the card also carries the preview colours.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in weights.items()}
    tensors.update({AE_PREFIX + k: v.detach().to(dtype).contiguous() for k, v in ae.state_dict().items()})
    config_json = json.dumps(config.to_dict())
    save_file(tensors, f"{out}.safetensors", metadata={METADATA_CONFIG_KEY: config_json, "kind": "checkpoint",
                                                         "card": out.name + ".json", "data": SPEC_VERSION})
    os.chmod(f"{out}.safetensors", 0o644)  # safetensors writes owner-only; shipped models are for everyone
    card = {**card, "kind": "checkpoint", "dtype": str(dtype).removeprefix("torch."), "data": SPEC_VERSION,
            CARD_CONFIG_KEY: config.to_dict()}
    write_card(out, card)
    return card


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a .safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def card_text(card: dict[str, Any]) -> str:
    """A model card as JSON, indented, with each list of numbers on one line (weights stay readable)."""
    text = json.dumps(card, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text) + "\n"


def write_card(out: str | Path, card: dict[str, Any]) -> None:
    """`card` as `<out>.json` (out: the model file's path without its extension)."""
    Path(f"{out}.json").write_text(card_text(card))


def update_card(out: str | Path, **entries: Any) -> dict[str, Any]:
    card = json.loads(Path(f"{out}.json").read_text())
    card.update(entries)
    write_card(out, card)
    return card


def load_autoencoder(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The AutoencoderKL of a Kiln autoencoder file (`first_stage_model.*` keys) and its JSON card."""
    from safetensors.torch import load_file

    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.is_file():
        raise KilnError(f"{path}: no such model file")
    if not card_path.is_file():
        raise KilnError(f"{path}: the card {card_path.name} with the architecture is missing beside it")
    card = json.loads(card_path.read_text())
    # an autoencoder's own card, or a whole model's (its autoencoder inside the checkpoint config)
    architecture = card.get("architecture") or card.get("checkpoint_config", {}).get("autoencoder")
    if not isinstance(architecture, dict):
        raise KilnError(f"{card_path}: no autoencoder architecture in the card")
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in architecture.items()}
    model = AutoencoderKL(AutoencoderConfig(**arch))
    prefix = "first_stage_model."
    tensors = load_file(str(path))
    state = {k[len(prefix):]: v.to(torch.float32) for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise KilnError(f"{path}: no '{prefix}*' tensors in the file")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first_line = str(err).splitlines()[0]
        raise KilnError(f"{path}: weights do not fit the card's architecture ({first_line})") from None
    return model.eval(), card


def exported_model(path: str, prefixes: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, torch.Tensor], int]:
    """(training config, float32 weights under `prefixes`, training steps) of an exported model and its card,
    to train it further (`--init-from`)."""
    from safetensors.torch import load_file

    try:
        training = json.loads(Path(path).with_suffix(".json").read_text())["training"]
        tensors = load_file(path)
        config, steps = dict(training["config"]), int(training.get("steps", 0))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise KilnError(f"--init-from {path}: not an exported Kiln model with its card ({exc})") from None
    weights = {k: v.float() for k, v in tensors.items() if k.startswith(prefixes)}
    if not weights:
        raise KilnError(f"--init-from {path}: no {' or '.join(prefixes)}* tensors in the file")
    return config, weights, steps


def conditioner_params(base: str) -> dict[str, Any]:
    """The conditioner params in a Kiln checkpoint's metadata."""
    if not Path(base).is_file():
        raise KilnError(f"{base}: no such checkpoint file")
    metadata = safetensors_metadata(base)
    if METADATA_CONFIG_KEY not in metadata:
        raise KilnError(f"{base}: no Kiln config in the file's metadata; the planner needs a built-in base model")
    return json.loads(metadata[METADATA_CONFIG_KEY])["conditioner"].get("params", {})


def has_planner(base: str) -> bool:
    """Whether a checkpoint carries a layout planner (False for any file that is not a Kiln base model)."""
    try:
        return bool(conditioner_params(base).get("planner"))
    except (KilnError, OSError, ValueError, KeyError):
        return False
