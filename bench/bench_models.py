"""Our networks against diffusers on the same weights: `python -m bench.bench_models`.

Builds an SD 1.x-shaped UNet at reduced width and an SD-shaped KL autoencoder at
reduced width with random weights, converts them with diffusers' single-file
converters, checks that both give the same output, and times one UNet step
(batch 2, latent 32x32, 77 context tokens) and one autoencoder decode
(latent 32x32 -> 256x256) in the same process: warm-up first, then the median
of interleaved runs. Goal: the ratio ours/diffusers is at most 1.0.
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared, busy CPU spinning makes every
# conv many times slower for both sides alike. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from engine.models.autoencoder import AutoencoderKL
from engine.models.configs import AutoencoderConfig, UNetConfig
from engine.models.unet import UNetModel

UNET = UNetConfig(model_channels=128, channel_mult=(1, 2, 4, 4), attention_resolutions=(4, 2, 1), num_heads=8,
                  use_spatial_transformer=True, context_dim=768)
VAE = AutoencoderConfig(ch=64, ch_mult=(1, 2, 4, 4), num_res_blocks=2, resolution=256)


def _original_yaml(unet: UNetConfig, vae: AutoencoderConfig) -> dict:
    params = {k: v for k, v in unet.to_dict().items() if v is not None and v != -1}
    first = {"params": {"ddconfig": vae.to_dict()}}
    return {"model": {"params": {"unet_config": {"params": params}, "first_stage_config": first}}}


def build_pair(device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, ...]:
    """(our UNet, diffusers UNet, our VAE, diffusers VAE), same random weights."""
    from diffusers import AutoencoderKL as DiffusersVAE
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    torch.manual_seed(0)
    unet, vae = UNetModel(UNET), AutoencoderKL(VAE)
    for module in unet.modules():  # undo zero-init so the outputs carry signal
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()
    ckpt = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    ckpt.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    yaml = _original_yaml(UNET, VAE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ucfg = sfu.create_unet_diffusers_config_from_ldm(yaml, ckpt)
        vcfg = sfu.create_vae_diffusers_config_from_ldm(yaml, ckpt, image_size=256)
    d_unet = UNet2DConditionModel(**ucfg)
    d_unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(ckpt, ucfg), strict=True)
    d_vae = DiffusersVAE(**vcfg)
    d_vae.load_state_dict(sfu.convert_ldm_vae_checkpoint(ckpt, vcfg), strict=True)
    return tuple(m.to(device, dtype).eval().requires_grad_(False) for m in (unet, d_unet, vae, d_vae))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pair(ours: Callable[[], torch.Tensor], theirs: Callable[[], torch.Tensor], runs: int,
              device: torch.device) -> tuple[float, float, float]:
    """Median seconds of each (interleaved, after one warm-up each) and their max abs difference."""
    with torch.inference_mode():
        diff = (ours().float() - theirs().float()).abs().max().item()
        samples: tuple[list[float], list[float]] = ([], [])
        for _ in range(runs):
            for fn, out in ((ours, samples[0]), (theirs, samples[1])):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                out.append(time.perf_counter() - t0)
    return statistics.median(samples[0]), statistics.median(samples[1]), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    unet, d_unet, vae, d_vae = build_pair(device, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 32, 32, generator=gen).to(device, dtype)
    t = torch.tensor([500.0, 500.0], device=device)
    ctx = torch.randn(2, 77, 768, generator=gen).to(device, dtype)
    z = torch.randn(1, 4, 32, 32, generator=gen).to(device, dtype)
    rows = [
        ("UNet step (B2, 32x32, w128)", time_pair(lambda: unet(x, t, ctx),
                                                  lambda: d_unet(x, t, encoder_hidden_states=ctx).sample,
                                                  args.runs, device)),
        ("VAE decode (32x32 -> 256x256, ch64)", time_pair(lambda: vae.decode(z),
                                                          lambda: d_vae.decode(z).sample, args.runs, device)),
    ]
    print(f"device {device}, dtype {args.dtype}, threads {torch.get_num_threads()}, median of {args.runs}")
    print(f"{'component':38} {'ours ms':>9} {'diffusers ms':>13} {'ratio':>7} {'max |diff|':>11}")
    for name, (ours, theirs, diff) in rows:
        print(f"{name:38} {ours * 1e3:9.1f} {theirs * 1e3:13.1f} {ours / theirs:7.3f} {diff:11.2e}")


if __name__ == "__main__":
    main()
