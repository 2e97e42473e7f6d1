"""Node types, one small module per node or family, gathered into a registry.

Importing this package must not import torch or Qt: node modules import torch
inside their compute functions.
"""
from __future__ import annotations

from engine.choices import CHECKPOINTS, LORAS, VAE
from engine.spec import NodeRegistry


def build_registry() -> NodeRegistry:
    """The registry of every built-in node type (each module exposes SPECS) and the choice lists
    their params draw on."""
    # Each node module is listed here explicitly (no discovery by name).
    from nodes import (
        autoencoder_loader,
        autoencoder_nodes,
        checkpoint_loader,
        clip_set_last_layer,
        conditioning_nodes,
        image_basic,
        image_composite,
        image_io,
        image_utils,
        inpaint_encode,
        latent_batch,
        latent_nodes,
        latent_resize,
        layout_nodes,
        lora_loader,
        mask_classic,
        mask_nodes,
        match_low_res,
        plan_layout,
        primitives,
        regional_nodes,
        sampler,
        sampler_advanced,
        semantic_conditioning,
        semantic_nodes,
        upscale_nodes,
    )

    modules: list = [primitives, image_basic, image_io, checkpoint_loader, conditioning_nodes,
                     autoencoder_nodes, mask_nodes, image_utils, layout_nodes, plan_layout, semantic_nodes,
                     latent_nodes, sampler, sampler_advanced, semantic_conditioning, upscale_nodes, match_low_res,
                     latent_resize, latent_batch, inpaint_encode, image_composite, mask_classic, clip_set_last_layer]
    modules += [lora_loader, autoencoder_loader, regional_nodes]
    registry = NodeRegistry()
    for module in modules:
        registry.register_all(module.SPECS)
    registry.choices.register(CHECKPOINTS, checkpoint_loader.CHECKPOINT_FILES)
    for kind, files in ((LORAS, lora_loader.LORA_FILES), (VAE, autoencoder_loader.AUTOENCODER_FILES)):
        if kind not in registry.choices:
            registry.choices.register(kind, files)
    return registry
