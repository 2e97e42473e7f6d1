"""Known architectures: the paper's model zoo and Stable Diffusion 1.x / 2.x.

Each preset is the configuration of the released checkpoint (CompVis/latent-diffusion
and Stability YAML files). `get_preset(name)` returns a fresh CheckpointConfig.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from engine.errors import KilnError
from engine.models.configs import (
    AutoencoderConfig,
    CheckpointConfig,
    ConditionerConfig,
    ConditioningKey,
    DiffusionConfig,
    UNetConfig,
)


def _kl_f8() -> AutoencoderConfig:
    return AutoencoderConfig(kind="kl", embed_dim=4, z_channels=4, double_z=True, ch=128, ch_mult=(1, 2, 4, 4),
                             num_res_blocks=2)


def _vq_f4(attn_type: Literal["vanilla", "none"] = "vanilla") -> AutoencoderConfig:
    return AutoencoderConfig(kind="vq", embed_dim=3, z_channels=3, double_z=False, ch=128, ch_mult=(1, 2, 4),
                             num_res_blocks=2, n_embed=8192, attn_type=attn_type)


def _ldm_schedule(end: float, conditioning_key: ConditioningKey | None,
                  scale_factor: float = 1.0) -> DiffusionConfig:
    return DiffusionConfig(linear_start=0.0015, linear_end=end, conditioning_key=conditioning_key,
                           scale_factor=scale_factor)


def _sd_unet(context_dim: int, linear: bool, in_channels: int = 4) -> UNetConfig:
    num_heads, num_head_channels = (-1, 64) if linear else (8, -1)  # SD 2.x: 64 channels a head; 1.x: 8 heads
    return UNetConfig(in_channels=in_channels, out_channels=4, model_channels=320, attention_resolutions=(4, 2, 1),
                      num_res_blocks=2, channel_mult=(1, 2, 4, 4), use_spatial_transformer=True, transformer_depth=1,
                      context_dim=context_dim, use_linear_in_transformer=linear, legacy=False,
                      num_heads=num_heads, num_head_channels=num_head_channels)


def clip_vit_l() -> ConditionerConfig:
    """OpenAI CLIP ViT-L/14 text model, last hidden state (SD 1.x)."""
    return ConditionerConfig("clip", {"width": 768, "layers": 12, "heads": 12, "intermediate": 3072,
                                      "vocab": 49408, "max_length": 77, "act": "quick_gelu", "layer": "last",
                                      "pad": "eos"})


def openclip_vit_h() -> ConditionerConfig:
    """OpenCLIP ViT-H/14 text model, penultimate layer (SD 2.x)."""
    return ConditionerConfig("openclip", {"width": 1024, "layers": 24, "heads": 16, "intermediate": 4096,
                                          "vocab": 49408, "max_length": 77, "act": "gelu", "layer": "penultimate",
                                          "pad": 0})


def sd15() -> CheckpointConfig:
    return CheckpointConfig(_sd_unet(768, linear=False), _kl_f8(), DiffusionConfig(), clip_vit_l(), "sd15")


def sd15_inpainting() -> CheckpointConfig:
    cond = clip_vit_l()
    cond.params["concat"] = {"order": "mask_image", "mask_range": "01", "fill": "gray"}
    diffusion = DiffusionConfig(conditioning_key="hybrid")
    return CheckpointConfig(_sd_unet(768, linear=False, in_channels=9), _kl_f8(), diffusion, cond, "sd15-inpainting")


def sd2_512() -> CheckpointConfig:
    return CheckpointConfig(_sd_unet(1024, linear=True), _kl_f8(), DiffusionConfig(), openclip_vit_h(), "sd2-512")


def sd2_768_v() -> CheckpointConfig:
    cfg = sd2_512()
    cfg.diffusion.prediction = "v"
    cfg.preset = "sd2-768-v"
    return cfg


def txt2img_f8_large() -> CheckpointConfig:
    unet = UNetConfig(model_channels=320, attention_resolutions=(4, 2, 1), channel_mult=(1, 2, 4, 4), num_heads=8,
                      use_spatial_transformer=True, transformer_depth=1, context_dim=1280, legacy=False)
    cond = ConditionerConfig("bert", {"n_embed": 1280, "n_layer": 32, "vocab_size": 30522, "max_seq_len": 77,
                                      "tokenizer": "bert"})
    return CheckpointConfig(unet, _kl_f8(), DiffusionConfig(), cond, "txt2img-f8-large")


def cin256_v2() -> CheckpointConfig:
    unet = UNetConfig(in_channels=3, out_channels=3, model_channels=192, attention_resolutions=(8, 4, 2),
                      channel_mult=(1, 2, 3, 5), num_heads=1, use_spatial_transformer=True, transformer_depth=1,
                      context_dim=512)
    cond = ConditionerConfig("class", {"n_classes": 1001, "embed_dim": 512, "null_class": 1000})
    return CheckpointConfig(unet, _vq_f4(), _ldm_schedule(0.0195, "crossattn"), cond, "cin256-v2")


def _faces_unet() -> UNetConfig:
    return UNetConfig(in_channels=3, out_channels=3, model_channels=224, attention_resolutions=(8, 4, 2),
                      channel_mult=(1, 2, 3, 4), num_head_channels=32)


def celebahq256() -> CheckpointConfig:
    return CheckpointConfig(_faces_unet(), _vq_f4(), _ldm_schedule(0.0195, None), ConditionerConfig(), "celebahq256")


def ffhq256() -> CheckpointConfig:
    cfg = celebahq256()
    cfg.preset = "ffhq256"
    return cfg


def lsun_beds256() -> CheckpointConfig:
    cfg = celebahq256()
    cfg.preset = "lsun_beds256"
    return cfg


def lsun_churches256() -> CheckpointConfig:
    unet = UNetConfig(model_channels=192, attention_resolutions=(1, 2, 4, 8), channel_mult=(1, 2, 2, 4, 4),
                      num_heads=8, use_scale_shift_norm=True, resblock_updown=True)
    # scale_by_std: the real factor is stored in the checkpoint's `scale_factor` tensor.
    schedule = _ldm_schedule(0.0155, None, scale_factor=0.22765929)
    return CheckpointConfig(unet, _kl_f8(), schedule, ConditionerConfig(), "lsun_churches256")


def layout2img_openimages256() -> CheckpointConfig:
    unet = UNetConfig(in_channels=3, out_channels=3, model_channels=128, attention_resolutions=(8, 4, 2),
                      channel_mult=(1, 2, 3, 4), num_head_channels=32, use_spatial_transformer=True,
                      transformer_depth=3, context_dim=512)
    cond = ConditionerConfig("bbox", {"n_embed": 512, "n_layer": 16, "vocab_size": 8192, "max_seq_len": 92,
                                      "max_objects": 30, "encode_crop": True})
    return CheckpointConfig(unet, _vq_f4(), _ldm_schedule(0.0205, "crossattn"), cond, "layout2img-openimages256")


def semantic_synthesis256() -> CheckpointConfig:
    unet = UNetConfig(in_channels=6, out_channels=3, model_channels=128, attention_resolutions=(32, 16, 8),
                      channel_mult=(1, 4, 8), num_heads=8)
    cond = ConditionerConfig("spatial", {"n_stages": 2, "in_channels": 182, "out_channels": 3,
                                         "method": "bilinear", "multiplier": 0.5, "bias": False})
    return CheckpointConfig(unet, _vq_f4(), _ldm_schedule(0.0205, "concat"), cond, "semantic_synthesis256")


def bsr_sr() -> CheckpointConfig:
    unet = UNetConfig(in_channels=6, out_channels=3, model_channels=160, attention_resolutions=(16, 8),
                      channel_mult=(1, 2, 2, 4), num_head_channels=32)
    cond = ConditionerConfig("identity", {"range": "pm1", "upscale": 4})
    return CheckpointConfig(unet, _vq_f4(), _ldm_schedule(0.0155, "concat"), cond, "bsr_sr")


def inpainting_big() -> CheckpointConfig:
    unet = UNetConfig(in_channels=7, out_channels=3, model_channels=256, attention_resolutions=(8, 4, 2),
                      channel_mult=(1, 2, 3, 4), num_heads=8, resblock_updown=True)
    cond = ConditionerConfig("masked_image", {"order": "image_mask", "mask_range": "pm1", "fill": "black"})
    return CheckpointConfig(unet, _vq_f4("none"), _ldm_schedule(0.0205, "concat"), cond, "inpainting_big")


_PRESETS: tuple[tuple[str, Callable[[], CheckpointConfig]], ...] = (
    ("sd15", sd15), ("sd15-inpainting", sd15_inpainting), ("sd2-512", sd2_512), ("sd2-768-v", sd2_768_v),
    ("txt2img-f8-large", txt2img_f8_large), ("cin256-v2", cin256_v2), ("celebahq256", celebahq256),
    ("ffhq256", ffhq256), ("lsun_beds256", lsun_beds256), ("lsun_churches256", lsun_churches256),
    ("layout2img-openimages256", layout2img_openimages256), ("semantic_synthesis256", semantic_synthesis256),
    ("bsr_sr", bsr_sr), ("inpainting_big", inpainting_big),
)

PRESET_NAMES: tuple[str, ...] = tuple(name for name, _ in _PRESETS)


def get_preset(name: str) -> CheckpointConfig:
    """A fresh config of the named preset."""
    for preset_name, factory in _PRESETS:
        if preset_name == name:
            return factory()
    raise KilnError(f"unknown model preset {name!r} (known: {', '.join(PRESET_NAMES)})")
