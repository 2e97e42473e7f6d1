"""The UNet matches diffusers on the same weights, and keeps the original checkpoint layout.

Tiny random models in the CompVis layout are converted with diffusers' own
single-file converter into `UNet2DConditionModel`; both must give the same
noise prediction (max abs diff <= 1e-4, fp32). Checkpoints made by the original
code must load with strict=True, so key names and parameter counts are checked too.
"""
from __future__ import annotations

import math

import pytest
import torch

from engine.models.configs import UNetConfig
from engine.models.unet import AttentionBlock, UNetModel

TOL = 1e-4


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Default init everywhere (undoing zero-init) and non-trivial norm affines."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Embedding)):
            m.reset_parameters()
        elif isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            torch.nn.init.normal_(m.weight, 1.0, 0.2)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
    return module.eval()


def ldm_yaml(cfg: UNetConfig, **extra) -> dict:
    """The `original_config` dict diffusers reads: the YAML's unet_config params."""
    params = {k: v for k, v in cfg.to_dict().items() if v is not None and v != -1}
    params.update(extra)
    ddconfig = {"ch_mult": [1, 2, 4, 4]}
    return {"model": {"params": {"unet_config": {"params": params},
                                 "first_stage_config": {"params": {"ddconfig": ddconfig}}}}}


def to_diffusers(ours: UNetModel, yaml: dict):
    import warnings

    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        create_unet_diffusers_config_from_ldm,
    )

    checkpoint = {f"model.diffusion_model.{k}": v for k, v in ours.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = create_unet_diffusers_config_from_ldm(yaml, checkpoint)
    theirs = UNet2DConditionModel(**config).eval()
    theirs.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, config), strict=True)
    return theirs


TINY = {"model_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1, "use_spatial_transformer": True}

CASES = {
    # SD 1.x: conv projections, a fixed number of heads, last level without attention
    "sd1_crossattn_conv": (UNetConfig(in_channels=4, attention_resolutions=(1,), num_heads=8,
                                      context_dim=48, **TINY), {}),
    # SD 2.x: linear projections, fixed head width, attention on every level, deeper transformer
    "sd2_crossattn_linear": (UNetConfig(in_channels=4, attention_resolutions=(1, 2), num_head_channels=16,
                                        context_dim=40, use_linear_in_transformer=True,
                                        transformer_depth=2, **TINY), {}),
    # inpainting: latent + mask + masked-image latent concatenated
    "concat_9ch": (UNetConfig(in_channels=9, attention_resolutions=(1,), num_heads=4, context_dim=48,
                              **TINY), {}),
    # vector conditioning (the "adm" label embedding)
    "adm_vector": (UNetConfig(in_channels=4, attention_resolutions=(2,), num_heads=2, context_dim=48,
                              adm_in_channels=24, **TINY), {"num_classes": "sequential"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_unet_matches_diffusers(name):
    cfg, extra = CASES[name]
    ours = randomize(UNetModel(cfg), seed=len(name))
    theirs = to_diffusers(ours, ldm_yaml(cfg, **extra))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, cfg.in_channels, 32, 32, generator=gen)
    t = torch.tensor([3.0, 871.5, 600.0])  # k-diffusion samplers pass fractional timesteps
    context = torch.randn(3, 7, cfg.context_dim, generator=gen)
    x[2], context[2] = x[0], context[0]  # item 2 is item 0 at another timestep
    kwargs, y = {}, None
    if cfg.adm_in_channels:
        y = torch.randn(3, cfg.adm_in_channels, generator=gen)
        y[2] = y[0]
        kwargs["class_labels"] = y
    with torch.no_grad():
        a = ours(x, t, context, y=y)
        b = theirs(x, t, encoder_hidden_states=context, **kwargs).sample
    assert a.shape == (3, cfg.out_channels, 32, 32)
    assert a.abs().mean() > 0.05  # a real signal, not zeros on both sides
    assert (a - b).abs().max().item() <= TOL
    assert (a[2] - a[0]).abs().max() > 1e-2  # the timestep does matter


def test_class_conditional_unet_matches_diffusers():
    cfg = UNetConfig(in_channels=3, out_channels=3, attention_resolutions=(1,), num_heads=2, context_dim=16,
                     num_classes=10, **TINY)
    ours = randomize(UNetModel(cfg), seed=5)
    theirs = to_diffusers(ours, ldm_yaml(cfg))
    x, t, ctx = torch.randn(2, 3, 16, 16), torch.tensor([10, 500]), torch.randn(2, 3, 16)
    labels = torch.tensor([1, 7])
    with torch.no_grad():
        a = ours(x, t, ctx, y=labels)
        b = theirs(x, t, encoder_hidden_states=ctx, class_labels=labels).sample
        other = ours(x, t, ctx, y=torch.tensor([2, 7]))
    assert (a - b).abs().max().item() <= TOL
    assert (other[0] - a[0]).abs().max() > 1e-3 and (other[1] - a[1]).abs().max() < 1e-6


def _legacy_attention_reference(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """QKVAttentionLegacy exactly as the original openaimodel computes it."""
    bs, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(bs * heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)


def test_attention_block_uses_the_legacy_head_layout():
    block = randomize(AttentionBlock(64, num_heads=4), seed=3)
    x = torch.randn(2, 64, 6, 5)
    with torch.no_grad():
        flat = x.reshape(2, 64, 30)
        qkv = block.qkv(block.norm(flat))
        expected = (flat + block.proj_out(_legacy_attention_reference(qkv, 4))).reshape(x.shape)
        got = block(x)
        new_order = AttentionBlock(64, num_heads=4, use_new_attention_order=True)
        new_order.load_state_dict(block.state_dict())
        other = new_order.eval()(x)
    assert (got - expected).abs().max() <= 1e-5
    assert (other - expected).abs().max() > 1e-3  # the two orders really differ on the same weights


def test_unconditional_unet_with_scale_shift_and_resblock_updown():
    # lsun_churches-like: AttentionBlocks, scale-shift norm, resampling inside ResBlocks
    cfg = UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 2),
                     attention_resolutions=(2, 4), num_heads=2, use_scale_shift_norm=True,
                     resblock_updown=True, num_res_blocks=(1, 2, 1))
    unet = UNetModel(cfg)
    keys = unet.state_dict()
    assert keys["input_blocks.1.0.emb_layers.1.weight"].shape == (64, 128)  # scale and shift
    assert "input_blocks.2.0.in_layers.0.weight" in keys and "input_blocks.2.0.op.weight" not in keys
    assert "input_blocks.3.1.qkv.weight" in keys and "input_blocks.1.1.qkv.weight" not in keys
    with torch.no_grad():
        zero = unet(torch.randn(1, 4, 16, 16), torch.tensor([5]))
        out = randomize(unet, seed=2)(torch.randn(1, 4, 16, 12), torch.tensor([5]))
    assert zero.abs().max() == 0  # zero-initialised output conv, as in the original
    assert out.shape == (1, 4, 16, 12) and torch.isfinite(out).all() and out.abs().mean() > 1e-3


SD1 = UNetConfig(use_spatial_transformer=True, context_dim=768, num_heads=8)


def test_sd1_state_dict_has_the_original_keys_and_size():
    with torch.device("meta"):
        unet = UNetModel(SD1)
    keys = unet.state_dict()
    for name in ("time_embed.0.weight", "time_embed.2.bias", "input_blocks.0.0.weight",
                 "input_blocks.1.0.in_layers.2.weight", "input_blocks.1.0.emb_layers.1.weight",
                 "input_blocks.1.1.proj_in.weight", "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                 "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.bias",
                 "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight",
                 "input_blocks.1.1.transformer_blocks.0.ff.net.2.weight",
                 "input_blocks.1.1.transformer_blocks.0.norm3.weight", "input_blocks.3.0.op.weight",
                 "input_blocks.4.0.skip_connection.weight", "middle_block.1.proj_out.weight",
                 "middle_block.2.out_layers.3.weight", "output_blocks.2.1.conv.weight",
                 "output_blocks.11.1.transformer_blocks.0.attn2.to_v.weight", "out.0.weight", "out.2.weight"):
        assert name in keys, name
    assert "input_blocks.1.1.transformer_blocks.0.attn2.to_k.bias" not in keys
    assert keys["input_blocks.1.1.proj_in.weight"].shape == (320, 320, 1, 1)
    assert keys["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 768)
    assert len(keys) == 686 and list(unet.buffers()) == []
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD 1.x UNet


def test_sd2_linear_projections_have_linear_shapes():
    cfg = UNetConfig(use_spatial_transformer=True, context_dim=1024, num_head_channels=64,
                     use_linear_in_transformer=True)
    with torch.device("meta"):
        keys = UNetModel(cfg).state_dict()
    assert keys["input_blocks.1.1.proj_in.weight"].shape == (320, 320)
    assert keys["output_blocks.8.1.proj_out.weight"].shape == (640, 640)
    assert keys["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape == (320, 1024)


def test_unet_runs_in_bfloat16_close_to_float32():
    cfg, _ = CASES["sd1_crossattn_conv"]
    unet = randomize(UNetModel(cfg), seed=9)
    x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([400]), torch.randn(1, 5, 48)
    with torch.no_grad():
        ref = unet(x, t, ctx)
        low = unet.to(torch.bfloat16)(x, t, ctx)
    assert low.dtype == torch.float32  # returned in the caller's dtype
    assert (low - ref).abs().mean() / ref.abs().mean() < 0.05


def test_labels_are_required_exactly_when_the_model_has_them():
    cfg = UNetConfig(attention_resolutions=(1,), num_heads=2, context_dim=16, num_classes=4, **TINY)
    unet = UNetModel(cfg)
    with pytest.raises(ValueError, match="needs class labels"):
        unet(torch.randn(1, 4, 8, 8), torch.tensor([1]), torch.randn(1, 2, 16))
    with pytest.raises(ValueError, match="use_spatial_transformer needs context_dim"):
        UNetModel(UNetConfig(use_spatial_transformer=True, num_heads=8))


# ---------------------------------------------------------------- Kiln's position features


def test_position_features_start_as_the_original_block_and_then_tell_places_apart():
    from engine.models.detect import detect_unet

    plain_cfg, _ = CASES["sd2_crossattn_linear"]
    plain = randomize(UNetModel(plain_cfg), seed=3)
    placed = UNetModel(UNetConfig(**{**plain_cfg.to_dict(), "position_features": 4,
                                     "attention_resolutions": (1, 2), "channel_mult": (1, 2)})).eval()
    added = placed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert added and all(k.endswith("pos_proj.weight") for k in added)
    x, t, ctx = torch.zeros(1, 4, 64, 64), torch.tensor([300]), torch.randn(1, 5, 40)
    with torch.no_grad():
        before = plain(x, t, ctx)
        assert torch.equal(placed(x, t, ctx), before)  # zero-initialised: a retrain starts where it was
        for key in added:
            torch.nn.init.normal_(placed.get_parameter(key), 0.0, 0.5)
        after = placed(x, t, ctx)
    # On a blank input, two pixels far from the borders look alike to the plain UNet (only
    # padding tells places apart); with the features they differ, so "left" can mean something.
    assert (before[..., 32, 28] - before[..., 32, 36]).abs().max() < 1e-4
    assert (after[..., 32, 28] - after[..., 32, 36]).abs().max() > 1e-2
    shapes = {k: tuple(v.shape) for k, v in placed.state_dict().items()}
    assert detect_unet(shapes)[0].position_features == 4  # a file without its card loads as well


def test_position_features_made_while_sampling_still_serve_a_training_step():
    from engine.models.attention import SpatialTransformer

    block = SpatialTransformer(32, 2, 16, 1, 16, use_linear=True, position_features=4)
    torch.nn.init.normal_(block.pos_proj.weight)
    x, ctx = torch.randn(1, 32, 4, 4), torch.randn(1, 3, 16)
    with torch.inference_mode():
        sampled = block(x, ctx)  # the features are made (and kept) here
    trained = block(x, ctx)
    trained.sum().backward()
    assert torch.allclose(sampled, trained) and block.pos_proj.weight.grad.abs().sum() > 0
