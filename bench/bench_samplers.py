"""Model evaluations per sampler and the sampling loop's overhead beyond the UNet.

    python -m bench.bench_samplers [--steps 20] [--cfg 5] [--size 32] [--device cpu] [--samplers a,b] [--threads N]

Runs every sampler for one txt2img pass on a small random UNet (cross-attention,
guidance batched), with the Sampler node's per-step preview, and prints per
sampler: UNet forward passes, wall time, time inside the UNet, and the share
of the run spent outside it (goal: < 2 %). A script, not a test.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from engine.models.configs import DiffusionConfig, UNetConfig
from engine.models.diffusion import LatentDiffusionModel
from engine.models.unet import UNetModel
from engine.sampling.names import SAMPLER_NAMES
from engine.sampling.pipeline import SamplingOptions, sample
from engine.sampling.preview import LatentPreviewer
from engine.values import Conditioning, Latent


def small_model(device: str) -> LatentDiffusionModel:
    torch.manual_seed(0)
    cfg = UNetConfig(model_channels=64, channel_mult=(1, 2, 2), attention_resolutions=(2, 4), num_res_blocks=1,
                     num_heads=4, use_spatial_transformer=True, context_dim=64)
    unet = UNetModel(cfg)
    nn.init.normal_(unet.out[2].weight, std=0.02)
    return LatentDiffusionModel(unet, DiffusionConfig(), name="bench").to(device).eval()


class UNetTimer:
    """Forward hooks that add up the time spent inside the UNet."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.seconds, self.calls, self._start = 0.0, 0, 0.0
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _before(self, *_):
        self.sync()
        self._start = time.perf_counter()

    def _after(self, *_):
        self.sync()
        self.seconds += time.perf_counter() - self._start
        self.calls += 1


def run(model: LatentDiffusionModel, timer: UNetTimer, name: str, args: argparse.Namespace) -> dict:
    cond = Conditioning(crossattn=torch.randn(1, 77, 64))
    uncond = Conditioning(crossattn=torch.zeros(1, 77, 64))
    latent = Latent(torch.zeros(1, 4, args.size, args.size))
    preview = LatentPreviewer(None, 4)
    options = SamplingOptions(sampler=name, scheduler="karras", steps=args.steps, cfg=args.cfg)
    timer.seconds, timer.calls = 0.0, 0
    start = time.perf_counter()
    sample(model, latent, cond, uncond, 0, options, step_callback=lambda info: preview(info.denoised))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    return {"sampler": name, "evals": timer.calls, "total": total, "unet": timer.seconds,
            "overhead": (total - timer.seconds) / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=32, help="latent side (32 = 256 px at f8)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = small_model(args.device)
    timer = UNetTimer(model.unet, model.device)
    with torch.no_grad():
        run(model, timer, "euler", argparse.Namespace(**{**vars(args), "steps": 2}))  # warm up
    print(f"device {args.device}, {args.steps} steps, cfg {args.cfg}, latent 4x{args.size}x{args.size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'sampler':<20}{'UNet calls':>11}{'total s':>10}{'UNet s':>9}{'outside UNet':>14}")
    rows = [run(model, timer, name, args) for name in args.samplers.split(",")]
    for r in rows:
        print(f"{r['sampler']:<20}{r['evals']:>11}{r['total']:>10.3f}{r['unet']:>9.3f}{r['overhead']:>13.2%}")
    worst = max(rows, key=lambda r: r["overhead"])
    print(f"worst overhead: {worst['sampler']} {worst['overhead']:.2%} (goal < 2%)")


if __name__ == "__main__":
    main()
