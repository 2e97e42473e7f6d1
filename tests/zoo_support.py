"""Tiny random single-file checkpoints of the model zoo's presets, in the original key layout.

`shrink(get_preset(name))` keeps every preset's structure (levels, channel multipliers, res blocks,
attention placement, transformer depth, conditioning) at a width a CPU samples in a moment: UNet and
first stage at 32 channels, text models with 2 layers of width 64. `write_zoo_checkpoint` fills the
layout `tests/test_presets.original_checkpoint` writes out from the original code (independent of
Kiln's modules) with random values, records the reduced config in the file's `kiln_config` metadata,
and puts a tiny offline tokenizer beside it where the text model needs one (CLIP BPE, BERT WordPiece).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from test_checkpoint_loading import WORDS, write_clip_tokenizer
from test_presets import original_checkpoint

from engine.models.configs import CheckpointConfig, ConditionerConfig, UNetConfig
from engine.models.loader import METADATA_CONFIG_KEY
from engine.models.presets import get_preset

WIDTH = 32  # UNet model_channels and first-stage ch: GroupNorm(32) needs a multiple of 32
TEXT_WIDTH = 64  # text models: one head of 64 (CLIP-like) or the x-transformer's 8 heads of 64
TEXT_LAYERS = 2  # SD 2.x takes the penultimate layer: 2 is the fewest that has one
CODEBOOK = 64  # VQ codebook entries (8192 in the released models)
COND_PREFIX = "cond_stage_model."


def shrink(cfg: CheckpointConfig) -> CheckpointConfig:
    """The preset at reduced width; every structural choice (and so every key name) kept."""
    cond = _shrink_conditioner(cfg.conditioner)
    context = _context_width(cond)
    unet = replace(cfg.unet, model_channels=WIDTH, context_dim=context if cfg.unet.context_dim else None,
                   num_head_channels=min(cfg.unet.num_head_channels, WIDTH))
    ae = replace(cfg.autoencoder, ch=WIDTH, n_embed=CODEBOOK)
    return CheckpointConfig(unet, ae, replace(cfg.diffusion), cond, cfg.preset)


def _shrink_conditioner(cond: ConditionerConfig) -> ConditionerConfig:
    p = dict(cond.params)
    if cond.kind in ("clip", "openclip"):
        p.update(width=TEXT_WIDTH, layers=TEXT_LAYERS, heads=1, intermediate=4 * TEXT_WIDTH)
    elif cond.kind in ("bert", "bbox"):
        p.update(n_embed=TEXT_WIDTH, n_layer=TEXT_LAYERS)
    elif cond.kind == "class":
        p.update(embed_dim=TEXT_WIDTH)
    return ConditionerConfig(cond.kind, p)


def _context_width(cond: ConditionerConfig) -> int | None:
    p = cond.params
    return p.get("width") or p.get("n_embed") or p.get("embed_dim")


def original_shapes(cfg: CheckpointConfig) -> dict[str, tuple[int, ...]]:
    """The released checkpoint's key layout for `cfg`, with what test_presets leaves out added."""
    shapes = original_checkpoint(cfg)
    if cfg.conditioner.kind == "masked_image":  # LDM inpainting: the first stage again as the conditioning stage
        shapes.update({COND_PREFIX + k[len("first_stage_model."):]: v for k, v in shapes.items()
                       if k.startswith("first_stage_model.")})
    if cfg.preset == "lsun_churches256":  # scale_by_std: the factor is a tensor of the file
        shapes["scale_factor"] = ()
    return shapes


def random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Values that keep activations in range: fan-in scaled weights, norms near 1, small biases."""
    if key.endswith("position_ids"):
        return torch.arange(shape[-1])[None]
    if key.endswith("logit_scale") or key == "scale_factor":
        return torch.tensor(0.3)
    noise = torch.randn(shape, generator=generator)
    if len(shape) >= 2:
        return (noise / math.sqrt(math.prod(shape[1:]))).half()  # stored in half, as the pruned releases are
    if key.endswith(".weight") and ("norm" in key or "ln_" in key):
        return (1 + 0.02 * noise).half()
    return (0.02 * noise).half()


def schedule_tensors(cfg: CheckpointConfig) -> dict[str, torch.Tensor]:
    d = cfg.diffusion
    betas = torch.linspace(d.linear_start ** 0.5, d.linear_end ** 0.5, d.timesteps, dtype=torch.float64) ** 2
    return {"betas": betas.float(), "alphas_cumprod": torch.cumprod(1 - betas, 0).float()}


def zoo_state_dict(cfg: CheckpointConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {key: random_tensor(key, shape, generator) for key, shape in sorted(original_shapes(cfg).items())}
    if cfg.conditioner.kind == "masked_image":  # the copies hold the same weights, as in the released file
        state.update({COND_PREFIX + k[len("first_stage_model."):]: v.clone() for k, v in state.items()
                      if k.startswith("first_stage_model.")})
    state.update(schedule_tensors(cfg))
    return state


def write_bert_vocab(folder: Path) -> None:
    """A tiny WordPiece vocabulary (vocab.txt) with BERT's special tokens and whole words."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")


def write_zoo_checkpoint(name: str, folder: Path, seed: int = 0) -> tuple[Path, CheckpointConfig]:
    """`folder/<name>.safetensors`: the preset shrunk, random, original keys, config in the metadata."""
    cfg = shrink(get_preset(name))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(zoo_state_dict(cfg, seed), str(path), metadata={METADATA_CONFIG_KEY: json.dumps(cfg.to_dict())})
    if cfg.conditioner.kind in ("clip", "openclip"):
        write_clip_tokenizer(folder / "tokenizer")
    elif cfg.conditioner.kind == "bert":
        write_bert_vocab(folder / "tokenizer")
    return path, cfg


def latent_levels(unet: UNetConfig) -> int:
    """The UNet's downsamplings: the latent side must be a multiple of 2 ** this."""
    return len(unet.channel_mult) - 1
