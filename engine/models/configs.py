"""Architecture configs of the latent diffusion system, as plain dataclasses.

Field names follow the CompVis/Stability YAML `params` so that a YAML file
next to a checkpoint maps onto them key for key. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

# How the conditioner's output reaches the UNet (DiffusionConfig.conditioning_key).
ConditioningKey = Literal["crossattn", "concat", "hybrid", "adm"]
CONDITIONING_KEYS: tuple[ConditioningKey, ...] = get_args(ConditioningKey)


@dataclass
class UNetConfig:
    """openaimodel.UNetModel (the paper's denoiser, also Stable Diffusion's)."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    num_res_blocks: int | tuple[int, ...] = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)  # downsampling rates that get attention
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    dropout: float = 0.0
    conv_resample: bool = True
    num_classes: int | None = None  # class-conditional via label embedding ("adm" with labels)
    num_heads: int = -1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    use_spatial_transformer: bool = False  # SpatialTransformer instead of AttentionBlock
    transformer_depth: int | tuple[int, ...] = 1
    context_dim: int | None = None
    use_linear_in_transformer: bool = False  # SD 2.x: Linear proj_in/proj_out
    legacy: bool = True
    adm_in_channels: int | None = None  # vector conditioning ("adm" with a feature vector)
    use_new_attention_order: bool = False  # AttentionBlock: split q/k/v before heads (not legacy)
    position_features: int = 0  # Kiln: Fourier position features per axis added in each SpatialTransformer

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


@dataclass
class AutoencoderConfig:
    """First stage: taming/ldm Encoder + Decoder with a KL or VQ bottleneck."""

    kind: Literal["kl", "vq"] = "kl"
    embed_dim: int = 4  # latent channels the diffusion model sees
    z_channels: int = 4
    double_z: bool = True  # KL: the encoder outputs mean and log-variance
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    attn_type: Literal["vanilla", "none"] = "vanilla"  # "none": the inpainting model's AE
    n_embed: int = 8192  # VQ codebook size

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


@dataclass
class DiffusionConfig:
    """The noise schedule and the meaning of the denoiser's output."""

    timesteps: int = 1000
    beta_schedule: Literal["linear", "cosine"] = "linear"
    linear_start: float = 0.00085
    linear_end: float = 0.012
    prediction: Literal["eps", "v"] = "eps"
    # How the conditioner's output reaches the UNet: None (unconditional),
    # "crossattn", "concat", "hybrid" (both) or "adm" (class/vector embedding).
    conditioning_key: ConditioningKey | None = "crossattn"
    scale_factor: float = 0.18215  # latent = scale_factor * autoencoder latent
    # Kiln: the last concat channels paint the layout's boxes (engine.models.regions); 0 = none
    region_channels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


@dataclass
class ConditionerConfig:
    """Which conditioner a checkpoint carries, and its size.

    kind: "clip" (SD 1.x, transformers CLIPTextModel), "openclip" (SD 2.x),
    "bert" (the LDM BERTEmbedder), "class" (ClassEmbedder), "spatial" (SpatialRescaler),
    "bbox" (the LDM layout tokens), "identity" (low-res image for SR),
    "masked_image" (inpainting: the autoencoder itself), or "none".
    `params` holds the kind's own sizes (width, layers, vocab, ...).
    """

    kind: str = "none"
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


@dataclass
class CheckpointConfig:
    """Everything needed to build a full latent diffusion model from a state dict."""

    unet: UNetConfig
    autoencoder: AutoencoderConfig
    diffusion: DiffusionConfig
    conditioner: ConditionerConfig = field(default_factory=ConditionerConfig)
    preset: str = "custom"  # the name of the matching preset, or "custom"

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "unet": self.unet.to_dict(),
            "autoencoder": self.autoencoder.to_dict(),
            "diffusion": self.diffusion.to_dict(),
            "conditioner": self.conditioner.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckpointConfig:
        """Inverse of to_dict; unknown fields are an error naming them (ValueError)."""
        return cls(
            unet=_from_fields(UNetConfig, d.get("unet", {})),
            autoencoder=_from_fields(AutoencoderConfig, d.get("autoencoder", {})),
            diffusion=_from_fields(DiffusionConfig, d.get("diffusion", {})),
            conditioner=ConditionerConfig(**d.get("conditioner", {})),
            preset=d.get("preset", "custom"),
        )


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so configs are JSON-ready."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _from_fields(cls: type, d: dict[str, Any]) -> Any:
    """A config dataclass from a plain dict, lists back to tuples."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field {unknown[0]!r}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
