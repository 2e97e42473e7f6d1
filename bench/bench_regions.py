"""The cost of regional prompts: UNet calls and time per guided sampler step for 0, 1, 3 and 8 regions.

    python -m bench.bench_regions [--size 64] [--steps 6] [--threads N] [--repeats 3]

A cross-attention UNet with SD 1.x's attention layout (model_channels 64, attention at 1/1, 1/2 and 1/4
of the latent, 77-token contexts of width 768, as the text encoders give) samples a `size` x `size`
latent with cfg 5 against an empty negative; each region is a box with its own 77-token prompt. Both
region modes are timed: "attention" joins every prompt into one context (one UNet call a step, longer
keys), "blend" runs the model once more per region (batched into the same call). The ratio is against
the plain guided step of the same run. A script, not a test.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from engine.models.configs import DiffusionConfig, UNetConfig
from engine.models.diffusion import LatentDiffusionModel
from engine.models.regional import PromptRegion
from engine.models.unet import UNetModel
from engine.sampling.pipeline import SamplingOptions, sample
from engine.values import Conditioning, Latent

REGION_COUNTS = (0, 1, 3, 8)


def sd_like_model() -> LatentDiffusionModel:
    torch.manual_seed(0)
    cfg = UNetConfig(model_channels=64, channel_mult=(1, 2, 4, 4), attention_resolutions=(1, 2, 4),
                     num_res_blocks=1, num_heads=8, use_spatial_transformer=True, context_dim=768)
    unet = UNetModel(cfg)
    nn.init.normal_(unet.out[2].weight, std=0.02)
    return LatentDiffusionModel(unet, DiffusionConfig(), name="bench").eval()


def regions(count: int) -> tuple[PromptRegion, ...]:
    """`count` boxes tiling the picture in a row, each with its own random prompt."""
    generator = torch.Generator().manual_seed(1)
    width = 1.0 / max(count, 1)
    return tuple(PromptRegion(torch.randn(1, 77, 768, generator=generator),
                              box=(i * width, 0.2, (i + 1) * width, 0.8)) for i in range(count))


def time_run(model: LatentDiffusionModel, cond: Conditioning, size: int, steps: int) -> tuple[float, int]:
    """Seconds per step and UNet calls per step of one guided run."""
    calls: list[int] = []
    options = SamplingOptions(sampler="euler", scheduler="karras", steps=steps, cfg=5.0)
    negative = Conditioning(crossattn=torch.zeros(1, 77, 768))
    start = time.perf_counter()
    with torch.inference_mode():
        sample(model, Latent(torch.zeros(1, 4, size, size)), cond, negative, 0, options, on_model_eval=calls.append)
    return (time.perf_counter() - start) / steps, len(calls) // steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="latent side (64 = a 512 px picture)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is reported")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = sd_like_model()
    glob = Conditioning(crossattn=torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0)))
    time_run(model, glob, args.size, 1)  # warm-up
    plain = statistics.median(time_run(model, glob, args.size, args.steps)[0] for _ in range(args.repeats))
    print(f"latent {args.size}x{args.size}, {args.steps} steps, {torch.get_num_threads()} threads; "
          f"plain guided step {plain * 1000:.0f} ms")
    print(f"{'mode':>10} {'regions':>7} {'UNet calls/step':>16} {'ms/step':>8} {'vs plain':>8}")
    for mode in ("attention", "blend"):
        for count in REGION_COUNTS:
            cond = glob.with_(prompt_regions=regions(count), region_mode=mode)
            runs = [time_run(model, cond, args.size, args.steps) for _ in range(args.repeats)]
            seconds = statistics.median(r[0] for r in runs)
            print(f"{mode:>10} {count:>7} {runs[0][1]:>16} {seconds * 1000:>8.0f} {seconds / plain:>7.2f}x")


if __name__ == "__main__":
    main()
