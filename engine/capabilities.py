"""What a node may ask of a MODEL, an AUTOENCODER or a CONDITIONER, as small typed values.

The loaded objects (engine.models) expose these as `capabilities`, filled in from the
checkpoint's config when it is loaded, so nodes never reach into a model's modules or
guess from its file name. No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from engine.model_geometry import SizeRule, unet_downsampling
from engine.models.configs import AutoencoderConfig, CheckpointConfig, DiffusionConfig, UNetConfig

# How an inpainting model expects its concat channels (nodes.latent_nodes.inpaint_concat).
InpaintConvention = Literal["stable_diffusion", "ldm", "kiln"]
INPAINT_CONVENTIONS: tuple[InpaintConvention, ...] = get_args(InpaintConvention)

# What a conditioner encodes.
Accepts = Literal["text", "class", "layout", "semantic", "image", "masked_image", "nothing"]


@dataclass(frozen=True)
class ModelCapabilities:
    """A denoiser. None where it is not known (a UNet built without a config, as in tests)."""

    latent_channels: int | None = None  # channels of the latents it denoises
    unet_multiple: int | None = None  # latent sides must be multiples of this (the UNet halves them)
    latent_factor: int | None = None  # pixels per latent pixel of the checkpoint's autoencoder
    conditioning_key: str | None = None  # crossattn | concat | hybrid | adm; None = unconditional
    concat_channels: int = 0  # channels concatenated to the latent (inpainting, SR, layout regions)
    inpaint_convention: InpaintConvention | None = None

    @property
    def conditional(self) -> bool:
        return self.conditioning_key is not None

    @property
    def size_rule(self) -> SizeRule | None:
        """Which picture sizes it can sample (engine.model_geometry), when both factors are known."""
        if self.latent_factor is None or self.unet_multiple is None:
            return None
        return SizeRule(self.latent_factor, self.unet_multiple)


@dataclass(frozen=True)
class AutoencoderCapabilities:
    latent_channels: int
    factor: int  # pixels per latent pixel along a side
    scale_factor: float  # latent = scale_factor * the autoencoder's own latent
    is_vq: bool
    inpaint_convention: InpaintConvention  # of the checkpoint it came with (the "auto" choice)


@dataclass(frozen=True)
class ConditionerCapabilities:
    accepts: Accepts = "nothing"
    layout_tokens: bool = False  # a text model that also encodes labelled boxes (`encode_layouts`)
    layout_planner: bool = False  # plans boxes from a prompt (Kiln's built-in base model)

    def takes(self, wanted: str) -> bool:
        return self.accepts == wanted or (wanted == "layout" and self.layout_tokens)


def model_capabilities(unet: UNetConfig | None, diffusion: DiffusionConfig,
                       autoencoder: AutoencoderConfig | None = None,
                       inpaint_convention: InpaintConvention | None = None) -> ModelCapabilities:
    """From the configs a denoiser was built with; without its UNet's config, only what the schedule says."""
    if unet is None:
        return ModelCapabilities(conditioning_key=diffusion.conditioning_key,
                                 inpaint_convention=inpaint_convention)
    return ModelCapabilities(
        latent_channels=unet.out_channels, unet_multiple=unet_downsampling(unet.channel_mult),
        latent_factor=None if autoencoder is None else autoencoder.downsample_factor,
        conditioning_key=diffusion.conditioning_key,
        concat_channels=max(0, unet.in_channels - unet.out_channels), inpaint_convention=inpaint_convention)


def checkpoint_capabilities(config: CheckpointConfig) -> ModelCapabilities:
    convention = inpaint_convention_of(config)
    return model_capabilities(config.unet, config.diffusion, config.autoencoder, convention)


def inpaint_convention_of(config: CheckpointConfig) -> InpaintConvention | None:
    """The convention a checkpoint's config names (Kiln's exports write it), else the one its
    masked-image layout describes (the presets' and YAML files' `order`); None when it says nothing."""
    params = config.conditioner.params
    named = next((c for c in INPAINT_CONVENTIONS if c == params.get("inpaint_convention")), None)
    if named is not None:
        return named
    layout = params if config.conditioner.kind == "masked_image" else params.get("concat")
    if isinstance(layout, dict) and "order" in layout:
        return "stable_diffusion" if layout["order"] == "mask_image" else "ldm"
    return None


def resolved_inpaint_convention(named: InpaintConvention | None, is_vq: bool) -> InpaintConvention:
    """The convention when the config names none: LDM's for a VQ autoencoder, else Stable Diffusion's."""
    if named is not None:
        return named
    return "ldm" if is_vq else "stable_diffusion"
