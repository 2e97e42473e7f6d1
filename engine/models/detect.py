"""Architecture configs read from the tensor shapes of a state dict.

`detect_config(shapes)` works on {original key: shape} only, so it runs on a
file's header without loading any weights. What shapes cannot tell (attention
head counts, the prediction type, the schedule) comes from the matching preset,
else from the commonest choice, and is listed in `Detection.guessed`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.errors import KilnError
from engine.models.configs import (
    AutoencoderConfig,
    CheckpointConfig,
    ConditionerConfig,
    DiffusionConfig,
    UNetConfig,
)
from engine.models.keymaps import AE_PREFIX, COND_PREFIX, UNET_PREFIX, first_stage_copies
from engine.models.presets import PRESET_NAMES, get_preset

Shapes = dict[str, tuple[int, ...]]


@dataclass
class Detection:
    config: CheckpointConfig
    candidates: list[str] = field(default_factory=list)  # presets with the same architecture
    guessed: list[str] = field(default_factory=list)  # fields shapes could not tell


def strip(shapes: Shapes, prefix: str) -> Shapes:
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


# ---------------------------------------------------------------- UNet


def detect_unet(s: Shapes) -> tuple[UNetConfig, list[str]]:
    """UNetConfig from the shapes of `model.diffusion_model.*` (prefix stripped)."""
    if "input_blocks.0.0.weight" not in s:
        raise KilnError("no UNet weights (model.diffusion_model.input_blocks.0.0.weight is missing)")
    mc, in_ch = s["input_blocks.0.0.weight"][:2]
    groups = _output_groups(s)
    levels = len(groups)
    nrb = [len(g) - 1 for g in reversed(groups)]  # per level, level 0 first
    mult = [s[f"output_blocks.{g[0]}.0.out_layers.3.weight"][0] // mc for g in reversed(groups)]
    attn_levels = [lvl for lvl, g in enumerate(reversed(groups)) if _has_attention(s, f"output_blocks.{g[0]}.1.")]
    spatial = any(k.endswith("proj_in.weight") for k in s)
    cfg = UNetConfig(in_channels=in_ch, out_channels=s["out.2.weight"][0], model_channels=mc,
                     num_res_blocks=nrb[0] if len(set(nrb)) == 1 else tuple(nrb),
                     attention_resolutions=tuple(2 ** lvl for lvl in attn_levels), channel_mult=tuple(mult),
                     use_spatial_transformer=spatial)
    cfg.use_scale_shift_norm = s["input_blocks.1.0.emb_layers.1.weight"][0] == 2 * s["input_blocks.1.0.out_layers.3.weight"][0]
    cfg.resblock_updown = levels > 1 and f"output_blocks.{groups[0][-1]}.{_last_index(s, groups[0][-1])}.in_layers.0.weight" in s
    if "label_emb.weight" in s:
        cfg.num_classes = s["label_emb.weight"][0]
    elif "label_emb.0.0.weight" in s:
        cfg.adm_in_channels = s["label_emb.0.0.weight"][1]
    guessed = _detect_transformer(s, cfg, attn_levels, levels)
    return cfg, guessed


def _output_groups(s: Shapes) -> list[list[int]]:
    """Output block indices grouped by level (deepest first): a level ends with its upsampler."""
    count = 1 + max(int(m.group(1)) for k in s if (m := re.match(r"output_blocks\.(\d+)\.", k)))
    groups, current = [], []
    for k in range(count):
        current.append(k)
        last = _last_index(s, k)
        if last > 0 and (f"output_blocks.{k}.{last}.conv.weight" in s
                         or f"output_blocks.{k}.{last}.in_layers.0.weight" in s):
            groups.append(current)
            current = []
    groups.append(current)
    return groups


def _last_index(s: Shapes, k: int) -> int:
    prefix = f"output_blocks.{k}."
    return max(int(key[len(prefix):].split(".", 1)[0]) for key in s if key.startswith(prefix))


def _has_attention(s: Shapes, prefix: str) -> bool:
    return f"{prefix}norm.weight" in s and (f"{prefix}qkv.weight" in s or f"{prefix}proj_in.weight" in s)


def _detect_transformer(s: Shapes, cfg: UNetConfig, attn_levels: list[int], levels: int) -> list[str]:
    """Context dim, linear projections, depth per level; head counts are guessed."""
    guessed = ["num_heads/num_head_channels"]
    if not cfg.use_spatial_transformer:
        cfg.num_head_channels = 32 if cfg.num_heads == -1 else -1
        return guessed
    ctx = next((v[1] for k, v in s.items() if k.endswith("attn2.to_k.weight")), None)
    cfg.context_dim = ctx
    cfg.use_linear_in_transformer = len(s["middle_block.1.proj_in.weight"]) == 2
    cfg.position_features = s["middle_block.1.pos_proj.weight"][1] // 4 if "middle_block.1.pos_proj.weight" in s else 0
    depths = [_depth(s, _first_attention_input(s, lvl, cfg)) if lvl in attn_levels else 0 for lvl in range(levels)]
    middle = _depth(s, "middle_block.1.")
    used = {d for d in depths if d} | {middle}
    cfg.transformer_depth = middle if len(used) == 1 else tuple(d or middle for d in depths)
    if cfg.use_linear_in_transformer:
        cfg.num_head_channels, cfg.num_heads, cfg.legacy = 64, -1, False
    else:
        cfg.num_heads, cfg.legacy = 8, False
    return guessed


def _first_attention_input(s: Shapes, level: int, cfg: UNetConfig) -> str:
    nrb = cfg.num_res_blocks if isinstance(cfg.num_res_blocks, tuple) else (cfg.num_res_blocks,) * len(cfg.channel_mult)
    index = 1 + sum(n + 1 for n in nrb[:level])
    return f"input_blocks.{index}.1."


def _depth(s: Shapes, prefix: str) -> int:
    found = {int(m.group(1)) for k in s if (m := re.match(re.escape(prefix) + r"transformer_blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


# ---------------------------------------------------------------- autoencoder


def detect_autoencoder(s: Shapes) -> AutoencoderConfig:
    """AutoencoderConfig from the shapes of `first_stage_model.*` (prefix stripped)."""
    if "encoder.conv_in.weight" not in s or "decoder.conv_in.weight" not in s:
        raise KilnError("no autoencoder weights (first_stage_model.encoder/decoder are missing)")
    ch, in_channels = s["encoder.conv_in.weight"][:2]
    levels = 1 + max(int(m.group(1)) for k in s if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    mult = tuple(s[f"encoder.down.{i}.block.0.conv2.weight"][0] // ch for i in range(levels))
    nrb = 1 + max(int(m.group(1)) for k in s if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
    z = s["decoder.conv_in.weight"][1]
    cfg = AutoencoderConfig(kind="vq" if "quantize.embedding.weight" in s else "kl", z_channels=z,
                            double_z=s["encoder.conv_out.weight"][0] == 2 * z, in_channels=in_channels,
                            out_ch=s["decoder.conv_out.weight"][0], ch=ch, ch_mult=mult, num_res_blocks=nrb,
                            embed_dim=s["post_quant_conv.weight"][1] if "post_quant_conv.weight" in s else z)
    cfg.attn_type = "vanilla" if "encoder.mid.attn_1.q.weight" in s else "none"
    cfg.attn_resolutions = tuple(cfg.resolution // 2 ** i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in s)
    if cfg.kind == "vq":
        cfg.n_embed = s["quantize.embedding.weight"][0]
    return cfg


# ---------------------------------------------------------------- conditioner


def detect_conditioner(s: Shapes, unet: UNetConfig, ae: AutoencoderConfig) -> tuple[ConditionerConfig, str | None]:
    """The conditioner kind and sizes (from `cond_stage_model.*`, prefix stripped) and the conditioning key."""
    if "transformer.text_model.embeddings.token_embedding.weight" in s:
        return _detect_clip(s), "hybrid" if unet.in_channels > unet.out_channels else "crossattn"
    if "model.token_embedding.weight" in s:
        return _detect_openclip(s), "hybrid" if unet.in_channels > unet.out_channels else "crossattn"
    if "transformer.token_emb.weight" in s:
        return _detect_bert(s), "crossattn"
    if "embedding.weight" in s:
        n, dim = s["embedding.weight"]
        key = "adm" if unet.num_classes else "crossattn"
        return ConditionerConfig("class", {"n_classes": n, "embed_dim": dim, "null_class": None}), key
    if "token_embedding.weight" in s and "norm_out.weight" in s:
        return _detect_tokens(s), "crossattn"
    if "channel_mapper.weight" in s:
        out_ch, in_ch = s["channel_mapper.weight"][:2]
        stages = _log2(ae.downsample_factor)
        return ConditionerConfig("spatial", {"n_stages": stages, "in_channels": in_ch, "out_channels": out_ch,
                                             "method": "bilinear", "multiplier": 0.5,
                                             "bias": "channel_mapper.bias" in s}), "concat"
    if s:
        raise KilnError(f"unknown conditioner layout (first key cond_stage_model.{next(iter(s))})")
    return _detect_without_weights(unet, ae)


def _detect_without_weights(unet: UNetConfig, ae: AutoencoderConfig) -> tuple[ConditionerConfig, str | None]:
    extra = unet.in_channels - unet.out_channels
    if extra == 0:
        if unet.context_dim:
            raise KilnError("the UNet expects a cross-attention context but the file has no conditioner weights")
        if unet.num_classes:
            return ConditionerConfig("class", {"n_classes": unet.num_classes, "embed_dim": 0,
                                               "null_class": None}), "adm"
        return ConditionerConfig("none"), None
    if extra == ae.embed_dim + 1:
        return ConditionerConfig("masked_image", {"order": "image_mask", "mask_range": "pm1", "fill": "black"}), "concat"
    if extra == 3:
        return ConditionerConfig("identity", {"range": "pm1", "upscale": ae.downsample_factor}), "concat"
    raise KilnError(f"cannot tell what the UNet's {extra} extra input channels are for")


def _detect_clip(s: Shapes) -> ConditionerConfig:
    base = "transformer.text_model."
    vocab, width = s[base + "embeddings.token_embedding.weight"]
    layers = _count(s, base + r"encoder\.layers\.(\d+)\.")
    inter = s[base + "encoder.layers.0.mlp.fc1.weight"][0]
    positions = s[base + "embeddings.position_embedding.weight"][0]
    return ConditionerConfig("clip", {"width": width, "layers": layers, "heads": max(1, width // 64),
                                      "intermediate": inter, "vocab": vocab, "max_length": positions,
                                      "act": "quick_gelu", "layer": "last", "pad": "eos"})


def _detect_openclip(s: Shapes) -> ConditionerConfig:
    vocab, width = s["model.token_embedding.weight"]
    layers = _count(s, r"model\.transformer\.resblocks\.(\d+)\.")
    inter = s["model.transformer.resblocks.0.mlp.c_fc.weight"][0]
    return ConditionerConfig("openclip", {"width": width, "layers": layers, "heads": max(1, width // 64),
                                          "intermediate": inter, "vocab": vocab,
                                          "max_length": s["model.positional_embedding"][0], "act": "gelu",
                                          "layer": "penultimate", "pad": 0})


def _detect_bert(s: Shapes) -> ConditionerConfig:
    vocab, width = s["transformer.token_emb.weight"]
    layers = _count(s, r"transformer\.attn_layers\.layers\.(\d+)\.") // 2
    inner = s["transformer.attn_layers.layers.0.1.to_q.weight"][0]
    ff = s["transformer.attn_layers.layers.1.1.net.0.0.weight"][0] // width
    params = {"n_embed": width, "n_layer": layers, "vocab_size": vocab,
              "max_seq_len": s["transformer.pos_emb.emb.weight"][0], "heads": 8, "dim_head": inner // 8,
              "ff_mult": ff, "tokenizer": "bert"}
    if vocab == 8192 and params["max_seq_len"] == 92:  # the paper's layout tokens, not text
        params.pop("tokenizer")
        params.update({"max_objects": 30, "encode_crop": True})
        return ConditionerConfig("bbox", params)
    return ConditionerConfig("bert", params)


def _detect_tokens(s: Shapes) -> ConditionerConfig:
    """The built-in TokenConditioner; its word list is not in the shapes (it comes from the card)."""
    max_tokens, width = s["position_embedding"]
    return ConditionerConfig("tokens", {"width": width, "layers": _count(s, r"blocks\.(\d+)\."),
                                        "max_tokens": max_tokens, "vocab_size": s["token_embedding.weight"][0]})


def _count(s: Shapes, pattern: str) -> int:
    found = {int(m.group(1)) for k in s if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _log2(n: int) -> int:
    return max(0, n.bit_length() - 1)


# ---------------------------------------------------------------- whole checkpoint


def detect_config(shapes: Shapes, filename: str = "") -> Detection:
    """The CheckpointConfig of a single-file state dict, matched to a preset where one fits."""
    unet, guessed = detect_unet(strip(shapes, UNET_PREFIX))
    ae = detect_autoencoder(strip(shapes, AE_PREFIX))
    # a conditioning stage that is the first stage again (LDM inpainting) has no weights of its own
    cond_shapes = {} if first_stage_copies(shapes) else strip(shapes, COND_PREFIX)
    cond, key = detect_conditioner(cond_shapes, unet, ae)
    diffusion = DiffusionConfig(conditioning_key=key)  # type: ignore[arg-type]
    if ae.kind == "vq":
        diffusion.scale_factor = 1.0
    detected = CheckpointConfig(unet, ae, diffusion, cond)
    candidates = matching_presets(detected)
    if candidates:
        detected = _adopt_preset(detected, _pick(candidates, filename))
        guessed = [g for g in guessed if not g.startswith("num_heads")]
    else:
        guessed += ["schedule (linear_start/linear_end)", "prediction"]
    return Detection(detected, candidates, guessed)


def architecture_signature(cfg: CheckpointConfig) -> tuple:
    """What shapes determine; presets with equal signatures are indistinguishable by shapes."""
    u, a = cfg.unet, cfg.autoencoder
    depth = u.transformer_depth
    unet_sig = (u.in_channels, u.out_channels, u.model_channels, _levels_value(u.num_res_blocks, len(u.channel_mult)),
                tuple(sorted(_attention_levels(u))), tuple(u.channel_mult), u.use_spatial_transformer,
                u.context_dim if u.use_spatial_transformer else None,
                u.use_linear_in_transformer if u.use_spatial_transformer else None,
                _levels_value(depth, len(u.channel_mult)) if u.use_spatial_transformer else None,
                u.num_classes, u.adm_in_channels, u.use_scale_shift_norm, u.resblock_updown,
                u.position_features if u.use_spatial_transformer else None)
    ae_sig = (a.kind, a.embed_dim, a.z_channels, a.ch, tuple(a.ch_mult), a.num_res_blocks, a.attn_type,
              a.n_embed if a.kind == "vq" else None)
    cond_sig = (cfg.conditioner.kind, tuple(sorted((k, v) for k, v in cfg.conditioner.params.items()
                                                   if k in _SHAPE_PARAMS)))
    return unet_sig, ae_sig, cond_sig


_SHAPE_PARAMS = {"width", "layers", "intermediate", "vocab", "max_length", "n_embed", "n_layer", "vocab_size",
                 "max_seq_len", "n_classes", "embed_dim", "in_channels", "out_channels"}


def _levels_value(value: int | tuple[int, ...], levels: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * levels


def _attention_levels(u: UNetConfig) -> list[int]:
    return [lvl for lvl in range(len(u.channel_mult)) if 2 ** lvl in u.attention_resolutions]


def matching_presets(cfg: CheckpointConfig) -> list[str]:
    sig = architecture_signature(cfg)
    return [name for name in PRESET_NAMES if architecture_signature(get_preset(name)) == sig]


_FILENAME_HINTS = {"sd2-768-v": ("768",), "ffhq256": ("ffhq",), "lsun_beds256": ("bed",),
                   "celebahq256": ("celeba",)}


def _pick(candidates: list[str], filename: str) -> str:
    name = filename.lower()
    for candidate in candidates:
        if any(hint in name for hint in _FILENAME_HINTS.get(candidate, ())):
            return candidate
    return candidates[0]


def _adopt_preset(detected: CheckpointConfig, name: str) -> CheckpointConfig:
    """The preset's config (heads, schedule, conditioner details) with the detected shapes kept."""
    preset = get_preset(name)
    preset.preset = name
    return preset
