"""SemanticEncode, SuperResolutionConditioning and EmptyLatentLike: what they give the sampler, and their errors."""
from __future__ import annotations

import pytest
import torch

from engine.errors import UserInputError
from engine.models.autoencoder import AutoencoderKL
from engine.models.conditioners import build_conditioner
from engine.models.configs import AutoencoderConfig, ConditionerConfig
from engine.models.first_stage import FirstStage
from engine.values import Image, Latent, SemanticMap
from nodes import build_registry
from nodes.semantic_conditioning import SEMANTIC_ENCODE
from nodes.upscale_nodes import EMPTY_LATENT_LIKE, SR_CONDITIONING


def spatial(out_channels: int = 3, n_stages: int = 3):
    cfg = ConditionerConfig("spatial", {"n_stages": n_stages, "method": "bilinear", "multiplier": 0.5,
                                        "in_channels": 21, "out_channels": out_channels, "bias": False})
    torch.manual_seed(0)
    return build_conditioner(cfg, "concat")


def identity():
    return build_conditioner(ConditionerConfig("identity", {}), "concat")


def f4_autoencoder() -> FirstStage:
    cfg = AutoencoderConfig(embed_dim=3, z_channels=3, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_type="none")
    return FirstStage(AutoencoderKL(cfg), 0.8, name="tiny-f4")


def two_region_map(h: int = 128, w: int = 128) -> SemanticMap:
    labels = torch.zeros(1, h, w, dtype=torch.long)
    labels[:, h // 4: h // 2, w // 4: w // 2] = 3 + 3 * 2 + 1  # a blue square on white
    return SemanticMap(labels, 21)


def latent(h: int, w: int, channels: int = 4, batch: int = 1) -> Latent:
    return Latent(torch.zeros(batch, channels, h, w))


def test_nodes_are_registered():
    registry = build_registry()
    for name in ("SemanticEncode", "SuperResolutionConditioning", "EmptyLatentLike"):
        assert name in registry


# ---------------------------------------------------------------- SemanticEncode


def test_semantic_encode_gives_the_rescaled_mapped_map_at_latent_size():
    cond = spatial()
    out = SEMANTIC_ENCODE.compute(None, {"conditioner": cond, "semantic": two_region_map()}, {})["conditioning"]
    assert out.concat.shape == (1, 3, 16, 16) and out.crossattn is None
    inside, outside = out.concat[0, :, 6, 6], out.concat[0, :, 12, 12]  # latent cells within / off the square
    mapper = cond.channel_mapper.weight[:, :, 0, 0]  # (3, 21)
    assert torch.allclose(inside, mapper[:, 10], atol=1e-6) and torch.allclose(outside, mapper[:, 0], atol=1e-6)


def test_semantic_encode_fits_the_map_to_a_connected_latent():
    cond = spatial()
    small = two_region_map(64, 64)  # a 64 px map for a 256 px picture (32x32 latent)
    out = SEMANTIC_ENCODE.compute(None, {"conditioner": cond, "semantic": small, "latent": latent(32, 32)},
                                  {})["conditioning"]
    assert out.concat.shape == (1, 3, 32, 32)
    direct = cond.encode(two_region_map(256, 256)).concat  # nearest resizing keeps class ids, edges on cells
    assert torch.allclose(out.concat, direct, atol=1e-6)


def test_semantic_encode_errors_are_one_clear_line():
    cond = spatial()
    with pytest.raises(UserInputError, match=r"^the semantic map is 100x100; this model shrinks it 8x .* "
                                             r"multiples of 8"):
        SEMANTIC_ENCODE.compute(None, {"conditioner": cond, "semantic": two_region_map(100, 100)}, {})
    with pytest.raises(UserInputError, match=r"^the semantic map is 128x64 but the latent stands for 128x128"):
        SEMANTIC_ENCODE.compute(None, {"conditioner": cond, "semantic": two_region_map(64, 128),
                                       "latent": latent(16, 16)}, {})
    bad = two_region_map()
    bad.labels[0, 0, 0] = 30
    with pytest.raises(UserInputError, match=r"class 30; this model knows 0..20"):
        SEMANTIC_ENCODE.compute(None, {"conditioner": cond, "semantic": bad}, {})
    with pytest.raises(UserInputError, match=r"^this model is conditioned on image, not a semantic map; "
                                             r"use Super-Resolution Conditioning$"):
        SEMANTIC_ENCODE.compute(None, {"conditioner": identity(), "semantic": two_region_map()}, {})


# ---------------------------------------------------------------- super-resolution


def test_sr_conditioning_is_the_picture_in_minus_one_to_one():
    pixels = torch.rand(2, 3, 32, 32)
    out = SR_CONDITIONING.compute(None, {"conditioner": identity(), "image": Image(pixels)}, {})["conditioning"]
    assert torch.allclose(out.concat, pixels * 2 - 1) and out.meta["low_resolution"] == "32x32"
    fitted = SR_CONDITIONING.compute(None, {"conditioner": identity(), "image": Image(pixels),
                                            "latent": latent(64, 64, 3)}, {})["conditioning"]
    assert fitted.concat.shape == (2, 3, 64, 64) and fitted.concat.min() >= -1 and fitted.concat.max() <= 1


def test_sr_conditioning_errors_are_one_clear_line():
    image = Image(torch.rand(1, 3, 32, 32))
    with pytest.raises(UserInputError, match=r"^the image is 32x32 but the latent is 64x32: a different shape"):
        SR_CONDITIONING.compute(None, {"conditioner": identity(), "image": image, "latent": latent(32, 64, 3)}, {})
    with pytest.raises(UserInputError, match=r"^this model is conditioned on semantic, not a low-resolution image"):
        SR_CONDITIONING.compute(None, {"conditioner": spatial(), "image": image}, {})


def test_empty_latent_like_is_four_times_the_picture_in_the_sr_latent_space():
    ae = f4_autoencoder()
    image = Image(torch.rand(2, 3, 128, 96), seeds=(5, 6))
    out = EMPTY_LATENT_LIKE.compute(None, {"image": image, "autoencoder": ae}, {"scale": 4})["latent"]
    assert out.samples.shape == (2, 3, 128, 96) and float(out.samples.abs().max()) == 0.0  # 512x384 px at f=4
    assert ae.decode_latents(out.samples[:1]).shape == (1, 3, 512, 384)


def test_empty_latent_like_names_the_scale_when_sizes_do_not_fit():
    ae = f4_autoencoder()
    with pytest.raises(UserInputError, match=r"^30x30 \(15x15 times 2\) is not a multiple of 4") as info:
        EMPTY_LATENT_LIKE.compute(None, {"image": Image(torch.rand(1, 3, 15, 15)), "autoencoder": ae}, {"scale": 2})
    assert info.value.param == "scale"
    with pytest.raises(UserInputError, match=r"larger than 8192 pixels a side"):
        EMPTY_LATENT_LIKE.compute(None, {"image": Image(torch.rand(1, 3, 4, 4096)), "autoencoder": ae}, {"scale": 4})
