"""Prepacked oneDNN convolutions against plain ones on the built-in models: `python -m bench.bench_prepacked`.

    python -m bench.bench_prepacked [--runs 7] [--calls 10] [--json]

Loads the built-in base and super-resolution checkpoints as the app does (CPU,
fp32, channels-last, convolutions prepacked), then times in the same process,
interleaved, the same module calls with the prepacked path on and off:
- one guided base UNet step (batch 2, 16x16 latent, 32 tokens);
- one SR autoencoder decode (128x128 latent -> 512 px, the default graph's last step).
Reports the median ms of each and the ratio prepacked / plain (lower is faster),
and checks that both paths give the same output.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.models.loader import load_checkpoint
from engine.models.prepacked import PrepackedConv2d

MODELS = Path(__file__).resolve().parents[1] / "resources" / "models"


def _set_prepacked(module: torch.nn.Module, on: bool) -> None:
    for layer in module.modules():
        if isinstance(layer, PrepackedConv2d):
            layer.prepacked = on


def _mean_ms(call: Callable[[], torch.Tensor], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1000


def compare(name: str, module: torch.nn.Module, call: Callable[[], torch.Tensor], runs: int, calls: int) -> dict:
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs = {}
    with torch.no_grad():
        for on in (True, False):
            _set_prepacked(module, on)
            outputs[on] = call()  # warm-up: packs the weights, lets oneDNN build its kernels
        for _ in range(runs):
            for on in (True, False):
                _set_prepacked(module, on)
                times[on].append(_mean_ms(call, calls))
    _set_prepacked(module, True)
    fast, plain = statistics.median(times[True]), statistics.median(times[False])
    return {"component": name, "prepacked_ms": round(fast, 2), "plain_ms": round(plain, 2),
            "ratio": round(fast / plain, 3), "max_abs_diff": float((outputs[True] - outputs[False]).abs().max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_prepacked", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10, help="calls per timed run (decode: a fifth)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    base = load_checkpoint(MODELS / "kiln-shapes-base.safetensors", "cpu").model.unet
    x = torch.randn(2, base.cfg.in_channels, 16, 16, generator=generator)
    context = torch.randn(2, 32, base.cfg.context_dim, generator=generator)
    t = torch.tensor([500.0, 500.0])
    sr = load_checkpoint(MODELS / "kiln-shapes-sr.safetensors", "cpu").first_stage
    latent = torch.randn(1, 3, 128, 128, generator=generator)
    results = [
        compare("base UNet step (batch 2, 16x16)", base, lambda: base(x, t, context), args.runs, args.calls),
        compare("SR decode (128x128 -> 512 px)", sr.model, lambda: sr.decode_latents(latent), args.runs,
                max(1, args.calls // 5)),
    ]
    results.append({"threads": torch.get_num_threads()})
    if args.json:
        print(json.dumps(results))
    else:
        for row in results[:-1]:
            print(f"{row['component']}: prepacked {row['prepacked_ms']} ms, plain {row['plain_ms']} ms, "
                  f"ratio {row['ratio']}, max abs diff {row['max_abs_diff']:.1e}")
        print(f"threads: {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
