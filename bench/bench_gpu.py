"""Kiln on a GPU next to diffusers, same weights, same process: `python -m bench.bench_gpu`.

An SD 1.5-size UNet (presets.sd15, random weights) at a 64x64 latent, batch 1 and 2, in fp16:
steps per second for ours and for diffusers' UNet2DConditionModel loaded from the same state dict
(diffusers' own single-file converter), the achieved TFLOP/s (FLOPs counted once with
torch.utils.flop_counter) against the card's fp16 dense peak, and the peak device memory of
each. Then the SD autoencoder's decode at 512 and 1024 px, whole and in tiles (fp32, as
engine.precision keeps it), and a 20-step text-to-image run (dpmpp_2m, cfg 7.5, decode included).
Without a CUDA GPU it prints one line and exits 0; `--smoke` runs the same code on the CPU at a
reduced width, to check the script itself.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import torch

# fp16 dense tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets
PEAK_TFLOPS = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
               "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


def card_peak(name: str) -> float | None:
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key]
    return None


def build_pair(device: torch.device, dtype: torch.dtype, width: int | None) -> tuple[Any, ...]:
    """(our UNet, diffusers' UNet, our autoencoder) of the SD 1.5 preset, one random state dict."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from diffusers.utils import logging as diffusers_logging

    from bench.bench_models import _original_yaml
    from engine.models.autoencoder import AutoencoderKL
    from engine.models.presets import get_preset
    from engine.models.unet import UNetModel

    diffusers_logging.set_verbosity_error()
    cfg = get_preset("sd15")
    unet_cfg = cfg.unet if width is None else replace(cfg.unet, model_channels=width)
    ae_cfg = cfg.autoencoder if width is None else replace(cfg.autoencoder, ch=width)
    torch.manual_seed(0)
    unet, vae = UNetModel(unet_cfg), AutoencoderKL(ae_cfg)
    for module in unet.modules():  # undo zero-init so that the outputs carry signal
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.reset_parameters()
    ckpt = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ucfg = sfu.create_unet_diffusers_config_from_ldm(_original_yaml(unet_cfg, ae_cfg), ckpt)
    theirs = UNet2DConditionModel(**ucfg)
    theirs.load_state_dict(sfu.convert_ldm_unet_checkpoint(ckpt, ucfg), strict=True)
    unets = tuple(m.to(device, dtype).eval().requires_grad_(False) for m in (unet, theirs))
    return (*unets, vae.to(device, torch.float32).eval().requires_grad_(False), cfg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], runs: int, device: torch.device) -> tuple[float, int | None]:
    """(median seconds after one warm-up, peak device bytes allocated during the runs)."""
    with torch.inference_mode():
        fn()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(runs):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return statistics.median(times), peak


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def unet_rows(ours: Any, theirs: Any, device: torch.device, dtype: torch.dtype, latent: int,
              runs: int, peak: float | None) -> list[str]:
    rows = []
    for batch in (1, 2):
        gen = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, 4, latent, latent, generator=gen).to(device, dtype)
        t = torch.full((batch,), 500.0, device=device)
        ctx = torch.randn(batch, 77, 768, generator=gen).to(device, dtype)
        flops = count_flops(partial(ours, x, t, ctx))
        mine, mine_peak = measure(partial(ours, x, t, ctx), runs, device)
        other, other_peak = measure(partial(theirs, x, t, encoder_hidden_states=ctx), runs, device)
        achieved = flops / mine / 1e12
        share = f"{100 * achieved / peak:.0f} %" if peak else "-"
        rows.append(f"UNet {latent}x{latent} batch {batch}: ours {1 / mine:.2f} steps/s ({_mib(mine_peak)} MiB), "
                    f"diffusers {1 / other:.2f} steps/s ({_mib(other_peak)} MiB), ratio ours/diffusers "
                    f"{mine / other:.3f}; {flops / 1e9:,.0f} GFLOP, {achieved:.1f} TFLOP/s = {share} of peak")
    return rows


def decode_rows(vae: Any, cfg: Any, device: torch.device, sides: tuple[int, ...], runs: int) -> list[str]:
    from engine.models.first_stage import FirstStage

    first_stage = FirstStage(vae, cfg.diffusion.scale_factor, name="sd15")
    rows = []
    for side in sides:
        z = torch.randn(1, 4, side // 8, side // 8, generator=torch.Generator().manual_seed(side)).to(device)
        for tile in (0, 32):  # 0: whole; 32 latent px = 256 px tiles
            seconds, peak = measure(partial(first_stage.decode_latents, z, tile=tile), runs, device)
            how = "whole" if tile == 0 else f"tiles of {tile * 8} px"
            rows.append(f"decode {side}x{side} ({how}, fp32): {seconds * 1e3:.0f} ms, peak {_mib(peak)} MiB")
    return rows


def text_to_image_row(ours: Any, vae: Any, cfg: Any, device: torch.device, dtype: torch.dtype,
                      latent: int, steps: int) -> str:
    from engine.models.diffusion import LatentDiffusionModel
    from engine.models.first_stage import FirstStage
    from engine.sampling.pipeline import SamplingOptions, sample
    from engine.values import Conditioning, Latent

    model = LatentDiffusionModel(ours, cfg.diffusion, "sd15").to(device)
    first_stage = FirstStage(vae, cfg.diffusion.scale_factor, name="sd15")
    gen = torch.Generator().manual_seed(7)
    positive = Conditioning(crossattn=torch.randn(1, 77, 768, generator=gen).to(device, dtype))
    negative = Conditioning(crossattn=torch.randn(1, 77, 768, generator=gen).to(device, dtype))
    empty = Latent(torch.zeros(1, 4, latent, latent, device=device))
    options = SamplingOptions(steps=steps, cfg=7.5)

    def run() -> Any:
        return first_stage.decode_latents(sample(model, empty, positive, negative, 1, options).samples)

    seconds, peak = measure(run, 1, device)
    return (f"text to image, {steps} steps dpmpp_2m cfg 7.5, {latent * 8}x{latent * 8} px with decode: "
            f"{seconds:.2f} s ({steps / seconds:.2f} steps/s), peak {_mib(peak)} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "bf16"))
    parser.add_argument("--smoke", action="store_true", help="reduced width on the CPU: checks the script only")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing measured")
        return 0
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    runs, latent, sides, steps = (1, 8, (64,), 2) if args.smoke else (args.runs, 64, (512, 1024), 20)
    name = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name(device)
    peak = None if args.smoke else card_peak(name)
    ours, theirs, vae, cfg = build_pair(device, dtype, 32 if args.smoke else None)
    print(f"bench_gpu: {name}, torch {torch.__version__}, {args.dtype if not args.smoke else 'fp32'}, "
          f"median of {runs}; card fp16 dense peak {peak or '?'} TFLOP/s")
    rows = [*unet_rows(ours, theirs, device, dtype, latent, runs, peak),
            *decode_rows(vae, cfg, device, sides, runs),
            text_to_image_row(ours, vae, cfg, device, dtype, latent, steps)]
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
