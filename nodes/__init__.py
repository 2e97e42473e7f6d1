"""Node types, one small module per node or family, gathered into a registry.

Importing this package must not import torch or Qt: node modules import torch
inside their compute functions.
"""
from __future__ import annotations

from engine.choices import CHECKPOINTS
from engine.spec import NodeRegistry


def build_registry() -> NodeRegistry:
    """The registry of every built-in node type (each module exposes SPECS) and the choice lists
    their params draw on."""
    # Each node module is listed here explicitly (no discovery by name).
    from nodes import (
        autoencoder_nodes,
        checkpoint_loader,
        conditioning_nodes,
        image_basic,
        image_io,
        image_utils,
        latent_nodes,
        layout_nodes,
        mask_nodes,
        match_low_res,
        plan_layout,
        primitives,
        sampler,
        semantic_conditioning,
        semantic_nodes,
        upscale_nodes,
    )

    modules: list = [primitives, image_basic, image_io, checkpoint_loader, conditioning_nodes,
                     autoencoder_nodes, mask_nodes, image_utils, layout_nodes, plan_layout, semantic_nodes,
                     latent_nodes, sampler, semantic_conditioning, upscale_nodes, match_low_res]
    registry = NodeRegistry()
    for module in modules:
        registry.register_all(module.SPECS)
    registry.choices.register(CHECKPOINTS, checkpoint_loader.CHECKPOINT_FILES)
    return registry
