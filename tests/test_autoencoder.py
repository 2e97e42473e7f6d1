"""Autoencoders: diffusers parity (KL), VQ quantisation round trip, original key names,
the FirstStage wrapper (scaling, fp16 upcast, tiling without seams) and the nodes."""
from __future__ import annotations

import pytest
import torch

from engine.errors import Cancelled, UserInputError
from engine.models.autoencoder import AutoencoderKL, DiagonalGaussian, VQModel
from engine.models.configs import AutoencoderConfig
from engine.models.first_stage import FirstStage
from engine.values import Image, Latent
from nodes import autoencoder_nodes as N

TOL = 1e-4
TINY_KL = AutoencoderConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=32)
TINY_F4 = AutoencoderConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, resolution=64)
TINY_VQ = AutoencoderConfig(kind="vq", embed_dim=3, z_channels=3, double_z=False, ch=32, ch_mult=(1, 2),
                            num_res_blocks=1, resolution=32, attn_resolutions=(16,), n_embed=64)


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.GroupNorm):
            torch.nn.init.normal_(m.weight, 1.0, 0.2)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
    return module.eval()


def test_kl_autoencoder_matches_diffusers():
    import warnings

    from diffusers import AutoencoderKL as DiffusersAE
    from diffusers.loaders.single_file_utils import (
        convert_ldm_vae_checkpoint,
        create_vae_diffusers_config_from_ldm,
    )

    ours = randomize(AutoencoderKL(TINY_KL), seed=0)
    checkpoint = {f"first_stage_model.{k}": v for k, v in ours.state_dict().items()}
    yaml = {"model": {"params": {"first_stage_config": {"params": {"ddconfig": TINY_KL.to_dict()}}}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = create_vae_diffusers_config_from_ldm(yaml, checkpoint, image_size=32)
    theirs = DiffusersAE(**config).eval()
    theirs.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, config), strict=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        posterior, reference = ours.encode(x), theirs.encode(x).latent_dist
        decoded, decoded_ref = ours.decode(posterior.mean), theirs.decode(posterior.mean).sample
    assert posterior.mean.shape == (2, 4, 16, 16)
    assert (posterior.mean - reference.mean).abs().max().item() <= TOL
    assert (posterior.logvar - reference.logvar).abs().max().item() <= TOL
    assert decoded.abs().mean() > 0.05
    assert (decoded - decoded_ref).abs().max().item() <= TOL


def test_sd_vae_keys_and_size_match_the_original():
    with torch.device("meta"):
        vae = AutoencoderKL(AutoencoderConfig())
        inpaint = VQModel(AutoencoderConfig(kind="vq", embed_dim=3, z_channels=3, double_z=False,
                                            ch_mult=(1, 2, 4), attn_type="none"))
    keys = vae.state_dict()
    for name in ("encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight",
                 "encoder.down.0.block.1.conv2.bias", "encoder.down.0.downsample.conv.weight",
                 "encoder.down.1.block.0.nin_shortcut.weight", "encoder.mid.attn_1.q.weight",
                 "encoder.mid.attn_1.proj_out.bias", "encoder.mid.block_2.norm2.bias",
                 "encoder.norm_out.weight", "encoder.conv_out.weight", "decoder.conv_in.weight",
                 "decoder.up.0.block.2.conv1.weight", "decoder.up.1.block.0.nin_shortcut.weight",
                 "decoder.up.3.upsample.conv.weight", "quant_conv.weight", "post_quant_conv.bias"):
        assert name in keys, name
    assert "decoder.up.0.upsample.conv.weight" not in keys  # up.0 is the full-resolution level
    assert "encoder.down.3.downsample.conv.weight" not in keys
    assert keys["decoder.up.0.block.0.conv1.weight"].shape == (128, 256, 3, 3)
    assert keys["encoder.conv_out.weight"].shape == (8, 512, 3, 3)  # mean and log-variance
    assert len(keys) == 248 and sum(p.numel() for p in vae.parameters()) == 83_653_863
    vq_keys = inpaint.state_dict()
    assert vq_keys["quantize.embedding.weight"].shape == (8192, 3)
    assert not any(".attn" in k for k in vq_keys)  # attn_type "none": the inpainting model's AE
    assert list(vae.buffers()) == [] and list(inpaint.buffers()) == []


def test_encoder_downsample_pads_right_and_bottom_only():
    ae = randomize(AutoencoderKL(TINY_KL), seed=0)
    down = ae.encoder.down[0].downsample
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), down.conv.weight,
                                              down.conv.bias, stride=2)
        assert torch.equal(down(x), expected)
        # the top-left output pixel sees no padding, the bottom-right one does
        assert not torch.allclose(down(x)[..., -1, -1], torch.nn.functional.conv2d(
            x, down.conv.weight, down.conv.bias, stride=2, padding=1)[..., -1, -1])


def test_vq_quantises_to_the_nearest_code_and_round_trips_codes_exactly():
    vq = randomize(VQModel(TINY_VQ), seed=2)
    torch.nn.init.normal_(vq.quantize.embedding.weight)
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        h = vq.encode(pixels * 2 - 1)  # (B, 3, 16, 16), not quantised
        quant, loss, idx = vq.quantize(h)
        book = vq.quantize.embedding.weight
        brute = torch.cdist(h.permute(0, 2, 3, 1).reshape(-1, 3), book).argmin(1).reshape(2, 16, 16)
        on_codes = quant.clone()
        same = vq.decode(on_codes), vq.decode(on_codes, force_not_quantize=True)
        raw = vq.decode(h, force_not_quantize=True)
    assert h.shape == (2, 3, 16, 16)
    assert torch.equal(idx, brute)
    assert torch.allclose(quant, book[idx].permute(0, 3, 1, 2))
    assert torch.allclose(loss, 1.25 * (quant - h).pow(2).mean())  # legacy: mse + 0.25 * mse
    assert torch.allclose(vq.quantize(quant)[0], quant)  # codes quantise to themselves
    assert torch.allclose(same[0], same[1], atol=1e-5)
    assert (vq.decode(h) - raw).abs().max() > 1e-3  # off-code latents are snapped before decoding
    stage = FirstStage(vq, scale_factor=1.0, name="vq")
    latent = stage.encode_pixels(pixels)
    image = stage.decode_latents(latent)
    assert torch.allclose(latent, h, atol=1e-5)
    assert image.shape == (2, 3, 32, 32) and image.min() >= 0 and image.max() <= 1


def test_vq_training_pass_passes_gradients_straight_through():
    vq = VQModel(TINY_VQ)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    recon, loss = vq(x)
    (recon.mean() + loss).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert vq.quantize.embedding.weight.grad.abs().sum() > 0


def test_diagonal_gaussian_mode_sample_and_kl():
    moments = torch.cat([torch.full((1, 2, 2, 2), 0.5), torch.full((1, 2, 2, 2), -50.0)], dim=1)
    post = DiagonalGaussian(moments)
    assert torch.equal(post.mode(), torch.full((1, 2, 2, 2), 0.5))
    assert post.logvar.min() == -30.0  # clamped as in the original
    zero = DiagonalGaussian(torch.zeros(2, 8, 3, 3))
    assert torch.allclose(zero.kl(), torch.zeros(2))
    a = zero.sample(torch.Generator().manual_seed(7))
    b = zero.sample(torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.std() > 0.5


def _stage(cfg: AutoencoderConfig = TINY_F4, scale: float = 0.5) -> FirstStage:
    return FirstStage(randomize(AutoencoderKL(cfg), seed=3), scale_factor=scale, name="tiny.safetensors")


def test_first_stage_scales_latents_and_maps_pixels_to_unit_range():
    stage = _stage(TINY_KL, scale=0.18215)
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        mode = stage.model.encode(pixels * 2 - 1).mode()
        latent = stage.encode_pixels(pixels)
        image = stage.decode_latents(latent)
        direct = ((stage.model.decode(latent / 0.18215) + 1) / 2).clamp(0, 1)
    assert torch.allclose(latent, 0.18215 * mode, atol=1e-6)
    assert torch.allclose(image, direct, atol=1e-6)
    assert stage.downsample_factor == 2 and stage.latent_channels == 4
    sampled = stage.encode_pixels(pixels, generator=torch.Generator().manual_seed(0), sample=True)
    again = stage.encode_pixels(pixels, generator=torch.Generator().manual_seed(0), sample=True)
    assert torch.equal(sampled, again) and not torch.allclose(sampled, latent)
    with pytest.raises(ValueError, match="not a multiple of 2"):
        stage.encode_pixels(torch.rand(1, 3, 33, 32))


def test_fp16_request_keeps_the_autoencoder_in_fp32_unless_told_otherwise():
    stage = _stage(TINY_KL)
    assert stage.to(dtype=torch.float16).dtype == torch.float32
    assert stage.to(dtype=torch.bfloat16).dtype == torch.bfloat16
    risky = FirstStage(AutoencoderKL(TINY_KL), upcast=False)
    assert risky.to(dtype=torch.float16).dtype == torch.float16
    stage.model.half()  # halved behind the wrapper's back: decoding upcasts first
    out = stage.decode_latents(torch.randn(1, 4, 8, 8))
    assert stage.dtype == torch.float32 and out.dtype == torch.float32 and torch.isfinite(out).all()


def _column_steps(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """How sharply the column-mean error jumps between neighbouring columns: a seam is a spike."""
    err = (image - reference).mean(dim=(0, 1, 2))  # (W,)
    return (err[1:] - err[:-1]).abs()


def test_tiled_decode_is_close_to_whole_and_has_no_seams():
    stage = _stage()
    latent = torch.randn(1, 4, 48, 40, generator=torch.Generator().manual_seed(4))
    whole = stage.decode_latents(latent, tile=0)
    calls = []
    tiled = stage.decode_latents(latent, tile=24, overlap=8, on_tile=lambda d, t: calls.append((d, t)))
    hard = stage.decode_latents(latent, tile=16, overlap=0)  # plain stitching, for contrast
    assert tiled.shape == whole.shape == (1, 3, 192, 160)
    assert calls[-1] == (6, 6)  # 3 rows x 2 columns of tiles
    # Tiles see their own GroupNorm statistics, so values move a little (measured 0.020 mean).
    assert (tiled - whole).abs().mean() < 0.03
    # Seams: feathered blending keeps column-to-column jumps of the error below 0.01 (measured
    # 0.006); hard stitching makes a jump several times larger (measured 0.076).
    assert _column_steps(tiled, whole).max() < 0.01
    assert _column_steps(hard, whole).max() > 3 * _column_steps(tiled, whole).max()


def test_tiled_encode_is_close_to_whole():
    stage = _stage()
    pixels = torch.rand(1, 3, 192, 160, generator=torch.Generator().manual_seed(5))
    whole = stage.encode_pixels(pixels, tile=0)
    tiled = stage.encode_pixels(pixels, tile=96, overlap=32)
    assert tiled.shape == whole.shape == (1, 4, 48, 40)
    assert (tiled - whole).abs().mean() < 0.1 * whole.abs().mean()  # measured 8 %


def test_large_images_are_tiled_automatically():
    stage = _stage()
    stage.auto_tile_pixels = 64 * 64  # pretend memory is tight
    calls = []
    stage.decode_latents(torch.randn(1, 4, 32, 32), on_tile=lambda d, t: calls.append(t))
    assert calls and calls[-1] > 1
    calls.clear()
    stage.decode_latents(torch.randn(1, 4, 16, 16), on_tile=lambda d, t: calls.append(t))
    assert calls == []  # small enough: one pass


class FakeContext:
    node_id = "decode"

    def __init__(self, cancel_after: int | None = None):
        self.steps: list[tuple[int, int]] = []
        self.cancel_after = cancel_after

    def progress(self, step, total, preview=None):
        self.steps.append((step, total))

    def check_cancelled(self):
        if self.cancel_after is not None and len(self.steps) >= self.cancel_after:
            raise Cancelled()


def test_decode_node_keeps_seeds_and_checks_channels():
    stage = _stage()
    latent = Latent(torch.randn(2, 4, 8, 8), seeds=(11, 12))
    out = N.AUTOENCODER_DECODE.compute(FakeContext(), {"autoencoder": stage, "latent": latent},
                                       N.AUTOENCODER_DECODE.default_params())
    image = out["image"]
    assert isinstance(image, Image) and image.seeds == (11, 12) and image.size == (32, 32)
    assert image.pixels.dtype == torch.float32 and image.pixels.device.type == "cpu"
    wrong = Latent(torch.zeros(1, 3, 8, 8))
    with pytest.raises(UserInputError, match="3 channels but autoencoder 'tiny.safetensors' decodes 4"):
        N.AUTOENCODER_DECODE.compute(FakeContext(), {"autoencoder": stage, "latent": wrong}, {"tile_size": 0})


def test_encode_node_crops_to_the_downsampling_factor():
    stage = _stage()
    image = Image(torch.rand(1, 3, 30, 45), seeds=(3,))
    out = N.AUTOENCODER_ENCODE.compute(FakeContext(), {"autoencoder": stage, "image": image},
                                       {"tile_size": 0})
    latent = out["latent"]
    assert latent.samples.shape == (1, 4, 7, 11) and latent.seeds == (3,)
    with pytest.raises(UserInputError, match="at least 4x4"):
        tiny = Image(torch.rand(1, 3, 3, 8))
        N.AUTOENCODER_ENCODE.compute(FakeContext(), {"autoencoder": stage, "image": tiny}, {"tile_size": 0})


def test_tiled_nodes_report_progress_honour_cancel_and_check_overlap():
    stage = _stage()
    latent = Latent(torch.randn(1, 4, 48, 40))
    ctx = FakeContext()
    params = {"tile_size": 96, "overlap": 32}  # pixels: 24-latent tiles
    out = N.AUTOENCODER_DECODE_TILED.compute(ctx, {"autoencoder": stage, "latent": latent}, params)
    whole = stage.decode_latents(latent.samples, tile=0)
    assert ctx.steps[-1] == (6, 6)
    assert (out["image"].pixels - whole).abs().mean() < 0.03
    with pytest.raises(Cancelled):
        N.AUTOENCODER_DECODE_TILED.compute(FakeContext(cancel_after=2),
                                           {"autoencoder": stage, "latent": latent}, params)
    square = {"autoencoder": stage, "image": Image(torch.rand(1, 3, 64, 64))}
    with pytest.raises(UserInputError) as info:
        N.AUTOENCODER_ENCODE_TILED.compute(FakeContext(), square, {"tile_size": 64, "overlap": 48})
    assert info.value.param == "overlap" and "more than half" in str(info.value)
    encoded = N.AUTOENCODER_ENCODE_TILED.compute(FakeContext(), square, {"tile_size": 512, "overlap": 64})
    assert encoded["latent"].samples.shape == (1, 4, 16, 16)
