"""Key layouts: the original single-file names, EMA copies, OpenCLIP and diffusers.

Everything inside Kiln uses the original CompVis/Stability names
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`).
Other layouts are mapped onto them here, so one set of modules serves all.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from engine.models.checkpoint import CheckpointError, MappedSource, TensorSource, open_source, read_json

UNET_PREFIX = "model.diffusion_model."
AE_PREFIX = "first_stage_model."
COND_PREFIX = "cond_stage_model."
EMA_PREFIX = "model_ema."

# Tensors real checkpoints carry that no module needs: the schedule (recomputed
# from the config), EMA bookkeeping, training-only pieces.
_IGNORED_EXACT = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights", "scale_factor",
    "model_ema.decay", "model_ema.num_updates",
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
    "cond_stage_model.model.logit_scale", "cond_stage_model.model.text_projection",
    "cond_stage_model.model.attn_mask",
})
_IGNORED_PREFIXES = (EMA_PREFIX, "first_stage_model.loss.", "model_ema_")


def is_ignorable(key: str) -> bool:
    """True for keys a checkpoint may carry that no module loads."""
    return key in _IGNORED_EXACT or key.startswith(_IGNORED_PREFIXES)


def ema_key(key: str) -> str:
    """`model.diffusion_model.a.b` -> `model_ema.diffusion_modelab` (LitEma's buffer names)."""
    if not key.startswith("model."):
        raise ValueError(f"only model.* keys have EMA copies, not {key!r}")
    return EMA_PREFIX + key[len("model."):].replace(".", "")


def has_ema(keys: set[str] | dict) -> bool:
    return any(k.startswith(EMA_PREFIX + "diffusion_model") for k in keys)


# ---------------------------------------------------------------- cond stage = first stage (LDM inpainting)


def first_stage_copies(shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """`cond_stage_model.X` -> `first_stage_model.X` when the conditioner is the first stage itself.

    LDM's `cond_stage_config: __is_first_stage__` (inpainting_big) stores every first-stage
    tensor a second time under `cond_stage_model.`. Empty unless every conditioner key has a
    first-stage twin of the same shape (and there are some).
    """
    copies = {k: AE_PREFIX + k[len(COND_PREFIX):] for k in shapes if k.startswith(COND_PREFIX)}
    if not copies or any(shapes.get(twin) != shapes[k] for k, twin in copies.items()):
        return {}
    return copies


def check_first_stage_copies(source: TensorSource, copies: dict[str, str], path: str) -> None:
    """Raise on the first `cond_stage_model.` tensor that differs from its first-stage twin."""
    for key, twin in copies.items():
        if not torch.equal(source.get(key, "cpu"), source.get(twin, "cpu")):
            raise CheckpointError(path, f"{key!r} differs from {twin!r}: the conditioning stage of this "
                                        f"inpainting model must be a copy of its first stage")


# ---------------------------------------------------------------- OpenCLIP text -> CLIPTextModel

_OPENCLIP_LAYER_RENAMES = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}


def openclip_source_key(clip_key: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor] | None]:
    """Where a CLIPTextModel key (transformers 5 names) lives in an OpenCLIP state dict.

    Returns (openclip key relative to `cond_stage_model.model.`, transform or None).
    q/k/v projections are thirds of the fused `attn.in_proj_{weight,bias}`.
    """
    fixed = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
    }
    if clip_key in fixed:
        return fixed[clip_key], None
    match = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", clip_key)
    if not match:
        raise KeyError(clip_key)
    layer, module, kind = match.groups()
    base = f"transformer.resblocks.{layer}."
    qkv = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
    if module in qkv:
        return base + f"attn.in_proj_{kind}", _third(qkv[module])
    for old, new in _OPENCLIP_LAYER_RENAMES.items():
        if module == new:
            return base + f"{old}.{kind}", None
    raise KeyError(clip_key)


def _third(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def take(t: torch.Tensor) -> torch.Tensor:  # (3D, ...) -> (D, ...)
        d = t.shape[0] // 3
        return t[index * d:(index + 1) * d]
    return take


# ---------------------------------------------------------------- diffusers UNet/VAE names

_RESNET_RENAMES = (
    ("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut."),
)


def _rename_resnet(rest: str) -> str:
    for old, new in _RESNET_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    raise KeyError(rest)


def unet_key_to_diffusers(key: str, num_res_blocks: list[int]) -> str:
    """Original openaimodel key (no prefix) -> diffusers UNet2DConditionModel key."""
    simple = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
              "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out.",
              "label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2.",
              "label_emb.": "class_embedding."}
    for old, new in simple.items():
        if key.startswith(old):
            return new + key[len(old):]
    match = re.fullmatch(r"(input_blocks|middle_block|output_blocks)\.(\d+)\.?(\d*)\.(.+)", key)
    if not match:
        raise KeyError(key)
    where, a, b, rest = match.groups()
    if where == "middle_block":
        index = int(a)
        rest = key.split(".", 2)[2]
        if index == 1:
            return "mid_block.attentions.0." + rest
        return f"mid_block.resnets.{index // 2}." + _rename_resnet(rest)
    k, m = int(a), int(b)
    if where == "input_blocks":
        return _input_block_key(k, m, rest, num_res_blocks)
    return _output_block_key(k, m, rest, num_res_blocks)


def _input_block_key(k: int, m: int, rest: str, nrb: list[int]) -> str:
    index = 1
    for level, n in enumerate(nrb):
        for j in range(n):
            if index == k:
                if m == 0:
                    return f"down_blocks.{level}.resnets.{j}." + _rename_resnet(rest)
                return f"down_blocks.{level}.attentions.{j}." + rest
            index += 1
        if level < len(nrb) - 1:
            if index == k:
                return f"down_blocks.{level}.downsamplers.0.conv." + rest.removeprefix("op.")
            index += 1
    raise KeyError(f"input_blocks.{k}.{m}.{rest}")


def _output_block_key(k: int, m: int, rest: str, nrb: list[int]) -> str:
    index = 0
    levels = len(nrb)
    for up in range(levels):
        for j in range(nrb[levels - 1 - up] + 1):
            if index == k:
                if m == 0:
                    return f"up_blocks.{up}.resnets.{j}." + _rename_resnet(rest)
                if rest.startswith("conv."):
                    return f"up_blocks.{up}.upsamplers.0." + rest
                return f"up_blocks.{up}.attentions.{j}." + rest
            index += 1
    raise KeyError(f"output_blocks.{k}.{m}.{rest}")


_VAE_ATTN_RENAMES = {"norm.": "group_norm.", "q.": "to_q.", "k.": "to_k.", "v.": "to_v.", "proj_out.": "to_out.0."}


def vae_key_to_diffusers(key: str, levels: int) -> str:
    """Original ldm Encoder/Decoder key (no prefix) -> diffusers AutoencoderKL key."""
    top, _, rest = key.partition(".")
    if top in ("quant_conv", "post_quant_conv"):
        return key
    if top not in ("encoder", "decoder"):
        raise KeyError(key)
    rest = rest.replace("norm_out.", "conv_norm_out.") if rest.startswith("norm_out.") else rest
    match = re.fullmatch(r"(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(.+)", rest)
    if match:
        side, i, kind, j, tail = match.groups()
        i = int(i) if side == "down" else levels - 1 - int(i)
        block = "down_blocks" if side == "down" else "up_blocks"
        if kind == "block":
            return f"{top}.{block}.{i}.resnets.{j}." + tail.replace("nin_shortcut.", "conv_shortcut.")
        return f"{top}.{block}.{i}.attentions.{j}." + _vae_attn(tail)
    match = re.fullmatch(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(.+)", rest)
    if match:
        side, i, kind, tail = match.groups()
        i = int(i) if side == "down" else levels - 1 - int(i)
        block, sampler = ("down_blocks", "downsamplers") if side == "down" else ("up_blocks", "upsamplers")
        return f"{top}.{block}.{i}.{sampler}.0.conv.{tail}"
    match = re.fullmatch(r"mid\.(block_1|block_2|attn_1)\.(.+)", rest)
    if match:
        part, tail = match.groups()
        if part == "attn_1":
            return f"{top}.mid_block.attentions.0." + _vae_attn(tail)
        return f"{top}.mid_block.resnets.{int(part[-1]) - 1}." + tail.replace("nin_shortcut.", "conv_shortcut.")
    return f"{top}.{rest}"  # conv_in, conv_out, conv_norm_out


def _vae_attn(tail: str) -> str:
    for old, new in _VAE_ATTN_RENAMES.items():
        if tail.startswith(old):
            return new + tail[len(old):]
    raise KeyError(tail)


def _as_conv1x1(t: torch.Tensor) -> torch.Tensor:
    """diffusers stores VAE attention projections as Linear (C, C); ldm as Conv2d (C, C, 1, 1)."""
    return t.reshape(*t.shape, 1, 1) if t.ndim == 2 else t


# ---------------------------------------------------------------- diffusers folders


def open_diffusers(folder: str | Path, unet_keys: list[str], vae_keys: list[str],
                   unet_nrb: list[int], vae_levels: int) -> MappedSource:
    """A diffusers model folder seen under the original names.

    `unet_keys`/`vae_keys` are the original module keys (no prefix) expected for
    the configs read from the folder. Text encoder keys map to
    `cond_stage_model.transformer.text_model.*`.
    """
    folder = Path(folder)
    entries: dict[str, tuple[TensorSource, str, Callable | None]] = {}
    unet = _open_weights(folder / "unet")
    vae = _open_weights(folder / "vae")
    for key in unet_keys:
        entries[UNET_PREFIX + key] = (unet, _diffusers_name(unet, key, unet_key_to_diffusers(key, unet_nrb)), None)
    for key in vae_keys:
        name = vae_key_to_diffusers(key, vae_levels)
        transform = _as_conv1x1 if ".attentions." in name and name.endswith("weight") and "group_norm" not in name else None
        entries[AE_PREFIX + key] = (vae, _diffusers_name(vae, key, name), transform)
    if (folder / "text_encoder").is_dir():
        text = _open_weights(folder / "text_encoder")
        for name in text.shapes():
            plain = name.removeprefix("text_model.")
            if plain != "embeddings.position_ids":
                entries[COND_PREFIX + "transformer.text_model." + plain] = (text, name, None)
    unet_shapes = set(unet.shapes())
    used = {old for src, old, _ in entries.values() if src is unet}
    extra = sorted(unet_shapes - used)
    if extra:
        raise CheckpointError(folder / "unet", f"unexpected key {extra[0]!r} for the architecture in config.json")
    return MappedSource(str(folder), "diffusers", entries)


def _diffusers_name(source: TensorSource, original: str, name: str) -> str:
    if name not in source.shapes():
        raise CheckpointError(source.path, f"missing key {name!r} (original {original!r})")
    return name


def _open_weights(part: Path) -> TensorSource:
    """The weights file of one diffusers component folder."""
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors",
                 "diffusion_pytorch_model.bin", "pytorch_model.bin"):
        if (part / name).is_file():
            return open_source(part / name)
    if not part.is_dir():
        raise CheckpointError(part, "missing component folder of the diffusers model")
    raise CheckpointError(part, "no weights file (diffusion_pytorch_model.safetensors or model.safetensors)")


def diffusers_component_config(folder: str | Path, part: str) -> dict:
    path = Path(folder) / part / "config.json"
    if not path.is_file():
        raise CheckpointError(path, "missing (a diffusers model folder needs it)")
    return read_json(path)
