"""Cancel inside one UNet call, and progress within a step: engine.sampling.block_watch."""
from __future__ import annotations

import threading
import time

import torch
from torch import nn

from engine.errors import Cancelled
from engine.models.configs import DiffusionConfig, UNetConfig
from engine.models.diffusion import LatentDiffusionModel
from engine.models.unet import UNetModel
from engine.sampling import pipeline
from engine.sampling.block_watch import unet_blocks
from engine.sampling.pipeline import SamplingOptions, sample
from engine.values import Conditioning, Latent

BLOCK_SLEEP = 0.1  # seconds per UNet block: 9 blocks, about 0.9 s a UNet call


def small_unet_model() -> LatentDiffusionModel:
    torch.manual_seed(0)
    cfg = UNetConfig(in_channels=4, out_channels=4, model_channels=32, num_res_blocks=1, channel_mult=(1, 1),
                     attention_resolutions=(), num_heads=2)
    unet = UNetModel(cfg)
    nn.init.normal_(unet.out[2].weight, std=0.05)
    return LatentDiffusionModel(unet, DiffusionConfig(), name="small-unet").eval()


def latent() -> Latent:
    return Latent(torch.zeros(1, 4, 8, 8))


OPTIONS = SamplingOptions(sampler="euler", scheduler="karras", steps=1, cfg=1.0)


def test_cancel_stops_inside_one_unet_call_and_leaves_the_model_unchanged():
    model = small_unet_model()
    blocks = unet_blocks(model.unet)
    assert len(blocks) == 9
    reference = sample(model, latent(), Conditioning(), None, 5, OPTIONS).samples
    slow = [b.register_forward_hook(lambda *_: time.sleep(BLOCK_SLEEP)) for b in blocks]
    stop = threading.Event()

    def check() -> None:
        if stop.is_set():
            raise Cancelled()

    result: dict[str, object] = {}

    def run() -> None:
        try:
            sample(model, latent(), Conditioning(), None, 5, OPTIONS,
                   step_callback=lambda _info: check(), check_cancelled=check)
        except Exception as exc:  # noqa: BLE001  # the test asserts on it
            result["error"] = exc

    start = time.perf_counter()
    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.2)
    stop.set()
    worker.join(5)
    elapsed = time.perf_counter() - start
    for handle in slow:
        handle.remove()
    assert isinstance(result.get("error"), Cancelled)
    assert elapsed < 0.6 * len(blocks) * BLOCK_SLEEP, f"took {elapsed:.2f} s: cancel waited for the step"
    assert all(not b._forward_pre_hooks for b in blocks)  # the watch's hooks are gone
    again = sample(model, latent(), Conditioning(), None, 5, OPTIONS, check_cancelled=lambda: None).samples
    assert torch.equal(again, reference)


def test_block_progress_rises_within_steps(monkeypatch):
    model = small_unet_model()
    monkeypatch.setattr(pipeline, "BLOCK_PROGRESS_CELLS", 0)  # this latent counts as large
    seen: list[tuple[int, int]] = []
    options = SamplingOptions(sampler="heun", scheduler="karras", steps=2, cfg=1.0)  # two UNet calls a step
    sample(model, latent(), Conditioning(), None, 5, options, block_progress=lambda d, t: seen.append((d, t)))
    assert {t for _, t in seen} == {2 * 9}
    done = [d for d, _ in seen]
    assert done == sorted(set(done)) and done[0] == 1 and done[-1] < 2 * 9
    assert 9 in done or 10 in done  # the second step reports too
    assert all(not b._forward_pre_hooks for b in unet_blocks(model.unet))


def test_no_block_progress_for_a_small_latent():
    model = small_unet_model()
    seen: list[tuple[int, int]] = []
    sample(model, latent(), Conditioning(), None, 5, OPTIONS, block_progress=lambda d, t: seen.append((d, t)))
    assert seen == []
