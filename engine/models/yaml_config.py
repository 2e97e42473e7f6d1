"""CompVis / Stability YAML model configs -> CheckpointConfig.

Only `target` strings this module knows are accepted; each is mapped to one of
our config classes by name. Nothing a string names is ever imported.
"""
from __future__ import annotations

import os
from typing import Any

from engine.models import presets
from engine.models.checkpoint import CheckpointError
from engine.models.configs import (
    CONDITIONING_KEYS,
    AutoencoderConfig,
    CheckpointConfig,
    ConditionerConfig,
    DiffusionConfig,
    UNetConfig,
)

LATENT_DIFFUSION_TARGETS = {
    "ldm.models.diffusion.ddpm.LatentDiffusion": None,
    "ldm.models.diffusion.ddpm.LatentInpaintDiffusion": "hybrid",
}
UNET_TARGETS = {"ldm.modules.diffusionmodules.openaimodel.UNetModel"}
AE_TARGETS = {
    "ldm.models.autoencoder.AutoencoderKL": "kl",
    "ldm.models.autoencoder.VQModelInterface": "vq",
    "ldm.models.autoencoder.VQModel": "vq",
}
_UNET_IGNORED = {"image_size", "use_checkpoint", "use_fp16", "n_embed", "ckpt_path", "disable_self_attentions",
                 "num_attention_blocks", "disable_middle_self_attn", "spatial_transformer_attn_type",
                 "use_bf16"}


def load_yaml_config(path: str | os.PathLike) -> CheckpointConfig:
    """Read a YAML file beside a checkpoint; errors name the file and the offending entry."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(path, f"cannot read YAML ({str(exc).splitlines()[0]})") from exc
    try:
        return config_from_yaml_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(path, f"unsupported model config: {exc}") from exc


def config_from_yaml_dict(doc: Any) -> CheckpointConfig:
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise TypeError("no `model:` section")
    model = doc["model"]
    target = model.get("target")
    if target not in LATENT_DIFFUSION_TARGETS:
        raise ValueError(f"model target {target!r} is not a latent diffusion model Kiln knows")
    params = model.get("params") or {}
    unet = _unet(params.get("unet_config"))
    ae = _autoencoder(params.get("first_stage_config"))
    cond = _conditioner(params.get("cond_stage_config"))
    diffusion = _diffusion(params, cond.kind == "none", LATENT_DIFFUSION_TARGETS[target])
    if diffusion.conditioning_key == "hybrid" and "concat" not in cond.params:
        cond.params["concat"] = {"order": "mask_image", "mask_range": "01", "fill": "gray"}  # Stability's inpainting models
    return CheckpointConfig(unet, ae, diffusion, cond, "custom")


def _section(section: Any, name: str) -> tuple[str, dict]:
    if isinstance(section, str):
        return section, {}
    if not isinstance(section, dict) or "target" not in section:
        raise ValueError(f"`{name}` has no target")
    return section["target"], dict(section.get("params") or {})


def _unet(section: Any) -> UNetConfig:
    target, p = _section(section, "unet_config")
    if target not in UNET_TARGETS:
        raise ValueError(f"unet target {target!r} is not supported")
    for key in _UNET_IGNORED:
        p.pop(key, None)
    for key in ("attention_resolutions", "channel_mult", "num_res_blocks", "transformer_depth"):
        if isinstance(p.get(key), list):
            p[key] = tuple(p[key])
    try:
        return UNetConfig(**p)
    except TypeError as exc:
        raise ValueError(f"unet_config: {exc}") from None


def _autoencoder(section: Any) -> AutoencoderConfig:
    target, p = _section(section, "first_stage_config")
    if target not in AE_TARGETS:
        raise ValueError(f"first stage target {target!r} is not supported")
    dd = dict(p.get("ddconfig") or {})
    attn = str(dd.pop("attn_type", "vanilla"))
    cfg = AutoencoderConfig(kind=AE_TARGETS[target], embed_dim=p.get("embed_dim", 4),  # type: ignore[arg-type]
                            n_embed=p.get("n_embed", 8192), attn_type="none" if attn == "none" else "vanilla")
    for key in ("z_channels", "double_z", "resolution", "in_channels", "out_ch", "ch", "num_res_blocks", "dropout"):
        if key in dd:
            setattr(cfg, key, dd[key])
    cfg.ch_mult = tuple(dd.get("ch_mult", cfg.ch_mult))
    cfg.attn_resolutions = tuple(dd.get("attn_resolutions", ()))
    return cfg


def _conditioner(section: Any) -> ConditionerConfig:
    if section is None or section == "__is_unconditional__":
        return ConditionerConfig("none")
    if section == "__is_first_stage__":
        return ConditionerConfig("masked_image", {"order": "image_mask", "mask_range": "pm1", "fill": "black"})
    target, p = _section(section, "cond_stage_config")
    if target == "ldm.modules.encoders.modules.FrozenCLIPEmbedder":
        return presets.clip_vit_l()
    if target == "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder":
        cfg = presets.openclip_vit_h()
        cfg.params["layer"] = p.get("layer", "last")
        return cfg
    if target == "ldm.modules.encoders.modules.BERTEmbedder":
        return _bert(p)
    if target == "ldm.modules.encoders.modules.ClassEmbedder":
        n = int(p.get("n_classes", 1000))
        return ConditionerConfig("class", {"n_classes": n, "embed_dim": int(p.get("embed_dim", 512)),
                                           "null_class": n - 1 if n == 1001 else None})
    if target == "ldm.modules.encoders.modules.SpatialRescaler":
        return ConditionerConfig("spatial", {"n_stages": int(p.get("n_stages", 1)), "method": p.get("method", "bilinear"),
                                             "multiplier": float(p.get("multiplier", 0.5)),
                                             "in_channels": int(p.get("in_channels", 3)),
                                             "out_channels": p.get("out_channels"), "bias": bool(p.get("bias", False))})
    if target == "torch.nn.Identity":
        return ConditionerConfig("identity", {"range": "pm1", "upscale": 4})
    raise ValueError(f"conditioner target {target!r} is not supported")


def _bert(p: dict) -> ConditionerConfig:
    params = {"n_embed": int(p["n_embed"]), "n_layer": int(p["n_layer"]), "vocab_size": int(p.get("vocab_size", 30522)),
              "max_seq_len": int(p.get("max_seq_len", 77))}
    if p.get("use_tokenizer", True):
        return ConditionerConfig("bert", {**params, "tokenizer": "bert"})
    return ConditionerConfig("bbox", {**params, "max_objects": (params["max_seq_len"] - 2) // 3, "encode_crop": True})


def _diffusion(p: dict, unconditional: bool, forced_key: str | None) -> DiffusionConfig:
    prediction = p.get("parameterization", "eps")
    if prediction not in ("eps", "v"):
        raise ValueError(f"parameterization {prediction!r} is not supported (eps or v)")
    key = forced_key or p.get("conditioning_key")
    if key is None:  # the original code's rule
        key = "concat" if p.get("concat_mode", True) else "crossattn"
    if unconditional:
        key = None
    known = next((k for k in CONDITIONING_KEYS if k == key), None)
    if known is None and key is not None:
        raise ValueError(f"conditioning_key {key!r} is not supported")
    scale = 1.0 if p.get("scale_by_std") else p.get("scale_factor", 1.0)
    return DiffusionConfig(timesteps=int(p.get("timesteps", 1000)), beta_schedule=p.get("beta_schedule", "linear"),
                           linear_start=float(p.get("linear_start", 1e-4)), linear_end=float(p.get("linear_end", 2e-2)),
                           prediction=prediction, conditioning_key=known, scale_factor=float(scale))
