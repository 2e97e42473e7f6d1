"""Which Kiln node type each ComfyUI node type becomes, socket by socket and widget by widget.

One explicit entry per ComfyUI type, used both ways (engine.comfy.importer and .exporter).
`widgets` lists ComfyUI's widgets in the order of a UI-format file's `widgets_values`; a seed
widget may be followed there by ComfyUI's `control_after_generate` value, which newer files
write and older ones lack (the importer tells them apart by the value). Nodes that are not a
1:1 mapping (Reroute, PrimitiveNode, Note, GLIGEN text boxes) are handled in engine.comfy.special.
No Qt, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Widget:
    comfy: str  # the ComfyUI widget (an input given as a value)
    kiln: str | None  # the Kiln param; None: no counterpart (a value other than `default` is reported)
    convert: str = ""  # a converter in engine.comfy.convert.CONVERTERS ("" = the value as it is)
    default: Any = None  # ComfyUI's value, written on export when Kiln has no counterpart
    seed: bool = False  # may be followed by control_after_generate in widgets_values
    quiet: bool = False  # no counterpart, but any value is harmless (video-only knobs, upload buttons)


@dataclass(frozen=True)
class Socket:
    comfy: str  # ComfyUI's input name, or its output's type name
    kiln: str  # Kiln's input / output name
    type: str  # ComfyUI's socket type (MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE, MASK)


@dataclass(frozen=True)
class NodeMap:
    comfy: str  # ComfyUI class_type
    kiln: str  # Kiln node type
    display: str  # ComfyUI's display name (an API file's default `_meta.title`)
    inputs: tuple[Socket, ...] = ()  # in ComfyUI's input order
    outputs: tuple[Socket, ...] = ()  # in ComfyUI's output slot order
    widgets: tuple[Widget, ...] = ()
    fixed: tuple[tuple[str, Any], ...] = ()  # Kiln params always set on import

    def widget(self, name: str) -> Widget | None:
        return next((w for w in self.widgets if w.comfy == name), None)

    def input(self, name: str) -> Socket | None:
        return next((s for s in self.inputs if s.comfy == name), None)


def _in(comfy: str, kiln: str, kind: str) -> Socket:
    return Socket(comfy, kiln, kind)


def _out(kind: str, kiln: str) -> Socket:
    return Socket(kind, kiln, kind)


MODEL_IN, CLIP_IN, VAE_IN = _in("model", "model", "MODEL"), _in("clip", "conditioner", "CLIP"), \
    _in("vae", "autoencoder", "VAE")
SAMPLES_IN, PIXELS_IN = _in("samples", "latent", "LATENT"), _in("pixels", "image", "IMAGE")
IMAGE_IN, MASK_IN = _in("image", "image", "IMAGE"), _in("mask", "mask", "MASK")
COND_IN = _in("conditioning", "conditioning", "CONDITIONING")
LATENT_OUT, IMAGE_OUT, MASK_OUT = _out("LATENT", "latent"), _out("IMAGE", "image"), _out("MASK", "mask")
COND_OUT = _out("CONDITIONING", "conditioning")
SAMPLER_INPUTS = (MODEL_IN, _in("positive", "positive", "CONDITIONING"),
                  _in("negative", "negative", "CONDITIONING"), _in("latent_image", "latent", "LATENT"))
UPSCALE = Widget("upscale_method", "upscale_method")
CROP = Widget("crop", "crop")
EDGES = tuple(Widget(side, side) for side in ("left", "top", "right", "bottom"))
TILED = (Widget("tile_size", "tile_size"), Widget("overlap", "overlap"),
         Widget("temporal_size", None, default=64, quiet=True),
         Widget("temporal_overlap", None, default=8, quiet=True))
COMFYUI_CONVENTION = (("convention", "comfyui"),)

TABLE: tuple[NodeMap, ...] = (
    NodeMap("CheckpointLoaderSimple", "CheckpointLoader", "Load Checkpoint",
            outputs=(_out("MODEL", "model"), _out("CLIP", "conditioner"), _out("VAE", "autoencoder")),
            widgets=(Widget("ckpt_name", "checkpoint", "checkpoint"),)),
    NodeMap("CLIPTextEncode", "TextEncode", "CLIP Text Encode (Prompt)", inputs=(CLIP_IN,),
            outputs=(COND_OUT,), widgets=(Widget("text", "text"),)),
    NodeMap("KSampler", "Sampler", "KSampler", inputs=SAMPLER_INPUTS, outputs=(LATENT_OUT,),
            widgets=(Widget("seed", "seed", seed=True), Widget("steps", "steps"), Widget("cfg", "cfg"),
                     Widget("sampler_name", "sampler"), Widget("scheduler", "scheduler"),
                     Widget("denoise", "denoise")),
            fixed=COMFYUI_CONVENTION),
    NodeMap("KSamplerAdvanced", "SamplerAdvanced", "KSampler (Advanced)", inputs=SAMPLER_INPUTS,
            outputs=(LATENT_OUT,),
            widgets=(Widget("add_noise", "add_noise", "enable"), Widget("noise_seed", "seed", seed=True),
                     Widget("steps", "steps"), Widget("cfg", "cfg"), Widget("sampler_name", "sampler"),
                     Widget("scheduler", "scheduler"), Widget("start_at_step", "start_at_step"),
                     Widget("end_at_step", "end_at_step"),
                     Widget("return_with_leftover_noise", "return_with_leftover_noise", "enable")),
            fixed=COMFYUI_CONVENTION),
    NodeMap("EmptyLatentImage", "EmptyLatent", "Empty Latent Image", outputs=(LATENT_OUT,),
            widgets=(Widget("width", "width"), Widget("height", "height"), Widget("batch_size", "batch_size"))),
    NodeMap("VAEDecode", "AutoencoderDecode", "VAE Decode", inputs=(SAMPLES_IN, VAE_IN), outputs=(IMAGE_OUT,)),
    NodeMap("VAEEncode", "AutoencoderEncode", "VAE Encode", inputs=(PIXELS_IN, VAE_IN), outputs=(LATENT_OUT,)),
    NodeMap("VAEDecodeTiled", "AutoencoderDecodeTiled", "VAE Decode (Tiled)", inputs=(SAMPLES_IN, VAE_IN),
            outputs=(IMAGE_OUT,), widgets=TILED),
    NodeMap("VAEEncodeTiled", "AutoencoderEncodeTiled", "VAE Encode (Tiled)", inputs=(PIXELS_IN, VAE_IN),
            outputs=(LATENT_OUT,), widgets=TILED),
    NodeMap("SaveImage", "SaveImage", "Save Image", inputs=(_in("images", "image", "IMAGE"),),
            widgets=(Widget("filename_prefix", "prefix"),)),
    NodeMap("PreviewImage", "PreviewImage", "Preview Image", inputs=(_in("images", "image", "IMAGE"),)),
    NodeMap("LoadImage", "LoadImage", "Load Image", outputs=(IMAGE_OUT, MASK_OUT),
            widgets=(Widget("image", "path"), Widget("upload", None, default="image", quiet=True))),
    NodeMap("ImageScale", "ImageScale", "Upscale Image", inputs=(IMAGE_IN,), outputs=(IMAGE_OUT,),
            widgets=(Widget("upscale_method", "method", "image_method"), Widget("width", "width"),
                     Widget("height", "height"), Widget("crop", "crop"))),
    NodeMap("ImageScaleBy", "ImageScale", "Upscale Image By", inputs=(IMAGE_IN,), outputs=(IMAGE_OUT,),
            widgets=(Widget("upscale_method", "method", "image_method"), Widget("scale_by", "factor"))),
    NodeMap("ImageInvert", "ImageInvert", "Invert Image", inputs=(IMAGE_IN,), outputs=(IMAGE_OUT,)),
    NodeMap("SetLatentNoiseMask", "SetLatentNoiseMask", "Set Latent Noise Mask", inputs=(SAMPLES_IN, MASK_IN),
            outputs=(LATENT_OUT,)),
    NodeMap("InvertMask", "InvertMask", "InvertMask", inputs=(MASK_IN,), outputs=(MASK_OUT,)),
    NodeMap("ConditioningZeroOut", "ConditioningZeroOut", "ConditioningZeroOut", inputs=(COND_IN,),
            outputs=(COND_OUT,)),
    # Kiln node types added alongside this importer (their names follow ComfyUI's widgets).
    NodeMap("LatentUpscale", "LatentUpscale", "Upscale Latent", inputs=(SAMPLES_IN,), outputs=(LATENT_OUT,),
            widgets=(UPSCALE, Widget("width", "width"), Widget("height", "height"), CROP)),
    NodeMap("LatentUpscaleBy", "LatentUpscaleBy", "Upscale Latent By", inputs=(SAMPLES_IN,),
            outputs=(LATENT_OUT,), widgets=(UPSCALE, Widget("scale_by", "scale_by"))),
    NodeMap("LatentComposite", "LatentComposite", "Latent Composite",
            inputs=(_in("samples_to", "destination", "LATENT"), _in("samples_from", "source", "LATENT")),
            outputs=(LATENT_OUT,), widgets=(Widget("x", "x"), Widget("y", "y"), Widget("feather", "feather"))),
    NodeMap("LatentFromBatch", "LatentFromBatch", "Latent From Batch", inputs=(SAMPLES_IN,),
            outputs=(LATENT_OUT,), widgets=(Widget("batch_index", "batch_index"), Widget("length", "length"))),
    NodeMap("RepeatLatentBatch", "RepeatLatentBatch", "Repeat Latent Batch", inputs=(SAMPLES_IN,),
            outputs=(LATENT_OUT,), widgets=(Widget("amount", "amount"),)),
    NodeMap("VAEEncodeForInpaint", "AutoencoderEncodeForInpaint", "VAE Encode (for Inpainting)",
            inputs=(PIXELS_IN, VAE_IN, MASK_IN), outputs=(LATENT_OUT,),
            widgets=(Widget("grow_mask_by", "grow_mask_by"),)),
    NodeMap("ImagePadForOutpaint", "ImagePadForOutpaint", "Pad Image for Outpainting", inputs=(IMAGE_IN,),
            outputs=(IMAGE_OUT, MASK_OUT), widgets=(*EDGES, Widget("feathering", "feathering"))),
    NodeMap("LoadImageMask", "LoadImageMask", "Load Image (as Mask)", outputs=(MASK_OUT,),
            widgets=(Widget("image", "path"), Widget("channel", "channel"),
                     Widget("upload", None, default="image", quiet=True))),
    NodeMap("SolidMask", "SolidMask", "SolidMask", outputs=(MASK_OUT,),
            widgets=(Widget("value", "value"), Widget("width", "width"), Widget("height", "height"))),
    NodeMap("MaskComposite", "MaskComposite", "MaskComposite",
            inputs=(_in("destination", "destination", "MASK"), _in("source", "source", "MASK")),
            outputs=(MASK_OUT,), widgets=(Widget("x", "x"), Widget("y", "y"), Widget("operation", "operation"))),
    NodeMap("GrowMask", "GrowMask", "GrowMask", inputs=(MASK_IN,), outputs=(MASK_OUT,),
            widgets=(Widget("expand", "expand"), Widget("tapered_corners", "tapered_corners"))),
    NodeMap("FeatherMask", "FeatherMask", "FeatherMask", inputs=(MASK_IN,), outputs=(MASK_OUT,), widgets=EDGES),
    NodeMap("ImageCompositeMasked", "ImageCompositeMasked", "ImageCompositeMasked",
            inputs=(_in("destination", "destination", "IMAGE"), _in("source", "source", "IMAGE"), MASK_IN),
            outputs=(IMAGE_OUT,),
            widgets=(Widget("x", "x"), Widget("y", "y"), Widget("resize_source", "resize_source"))),
    NodeMap("ConditioningCombine", "ConditioningCombine", "Conditioning (Combine)",
            inputs=(_in("conditioning_1", "conditioning_1", "CONDITIONING"),
                    _in("conditioning_2", "conditioning_2", "CONDITIONING")),
            outputs=(COND_OUT,)),
    NodeMap("ConditioningSetArea", "ConditioningSetArea", "Conditioning (Set Area)", inputs=(COND_IN,),
            outputs=(COND_OUT,),
            widgets=(Widget("width", "width", "area_x"), Widget("height", "height", "area_y"),
                     Widget("x", "x", "area_x"), Widget("y", "y", "area_y"), Widget("strength", "strength"))),
    NodeMap("ConditioningSetMask", "ConditioningSetMask", "Conditioning (Set Mask)", inputs=(COND_IN, MASK_IN),
            outputs=(COND_OUT,),
            widgets=(Widget("strength", "strength"), Widget("set_cond_area", None, default="default"))),
    NodeMap("CLIPSetLastLayer", "CLIPSetLastLayer", "CLIP Set Last Layer", inputs=(CLIP_IN,),
            outputs=(_out("CLIP", "conditioner"),), widgets=(Widget("stop_at_clip_layer", "stop_at_clip_layer"),)),
    NodeMap("VAELoader", "AutoencoderLoader", "Load VAE", outputs=(_out("VAE", "autoencoder"),),
            widgets=(Widget("vae_name", "vae_name", "model_file"),)),
    NodeMap("LoraLoader", "LoraLoader", "Load LoRA", inputs=(MODEL_IN, CLIP_IN),
            outputs=(_out("MODEL", "model"), _out("CLIP", "conditioner")),
            widgets=(Widget("lora_name", "lora_name", "model_file"), Widget("strength_model", "strength_model"),
                     Widget("strength_clip", "strength_clip"))),
    NodeMap("LoraLoaderModelOnly", "LoraLoaderModelOnly", "LoraLoaderModelOnly", inputs=(MODEL_IN,),
            outputs=(_out("MODEL", "model"),),
            widgets=(Widget("lora_name", "lora_name", "model_file"), Widget("strength_model", "strength_model"))),
)

BY_COMFY: dict[str, NodeMap] = {entry.comfy: entry for entry in TABLE}

# Kiln type -> the ComfyUI entries it may be written as (the exporter picks by params: ImageScale).
BY_KILN: dict[str, tuple[NodeMap, ...]] = {}
for _entry in TABLE:
    BY_KILN[_entry.kiln] = (*BY_KILN.get(_entry.kiln, ()), _entry)

# ComfyUI types handled by engine.comfy.special rather than by one table entry.
REROUTE, PRIMITIVE, GLIGEN_LOADER, GLIGEN_APPLY = "Reroute", "PrimitiveNode", "GLIGENLoader", "GLIGENTextBoxApply"
NOTE_TYPES = ("Note", "MarkdownNote")
SPECIAL_TYPES = (REROUTE, PRIMITIVE, GLIGEN_LOADER, GLIGEN_APPLY, *NOTE_TYPES)

# The Kiln types GLIGEN text boxes become (engine.comfy.special).
LAYOUT_TYPE, REGIONAL_TYPE = "LayoutEditor", "RegionalPrompts"

# Kiln's one-value nodes (param "value"): on export their value is written into the widgets they feed.
KILN_PRIMITIVES = ("Seed", "Integer", "Float", "Text")


def known(comfy_type: str) -> bool:
    """A ComfyUI node type Kiln can import."""
    return comfy_type in BY_COMFY or comfy_type in SPECIAL_TYPES
