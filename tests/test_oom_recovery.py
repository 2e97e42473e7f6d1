"""Out of device memory in the middle of a node (engine.oom), injected as torch.OutOfMemoryError on
the CPU: a decode falls back to tiles, sampling frees the idle models and retries once, and an
unrecoverable one fails the node with the numbers, keeping what was computed for the next run.
"""
from __future__ import annotations

import pytest
import torch
from toy_nodes import build_graph

from engine.cache import ResultCache
from engine.executor import Executor
from engine.oom import Workload, decode_with_fallback, is_device_oom, sample_with_retry
from engine.spec import EngineSettings
from nodes import build_registry

BASE = "kiln-shapes-base.safetensors"


def _graph(side: int = 64):
    nodes = {"ckpt": ("CheckpointLoader", {"checkpoint": BASE}), "prompt": ("TextEncode", {"text": "a red circle"}),
             "latent": ("EmptyLatent", {"width": side, "height": side}),
             "sampler": ("Sampler", {"steps": 2, "cfg": 1.0, "sampler": "euler", "seed": 3}),
             "decode": ("AutoencoderDecode", {})}
    return build_graph(nodes, ["ckpt.conditioner -> prompt.conditioner", "prompt.conditioning -> sampler.positive",
                               "ckpt.model -> sampler.model", "ckpt.autoencoder -> latent.autoencoder",
                               "latent.latent -> sampler.latent", "ckpt.autoencoder -> decode.autoencoder",
                               "sampler.latent -> decode.latent"])


@pytest.fixture()
def executor(tmp_path) -> Executor:
    settings = EngineSettings(device="cpu", precision="fp32", output_dir=str(tmp_path), vram_budget=10**9)
    return Executor(build_registry(), settings, cache=ResultCache.from_settings(settings, disk=False))


def _oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_oom_is_recognised():
    assert is_device_oom(_oom()) and is_device_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_device_oom(MemoryError()) and not is_device_oom(ValueError("out of memory"))


def test_decode_falls_back_to_tiles_with_the_same_picture(executor, monkeypatch):
    from engine.models.first_stage import FirstStage

    real = FirstStage.decode_latents
    tiles: list = []

    def fails_whole(self, latent, tile=None, overlap=None, on_tile=None):
        tiles.append(tile)
        if tile is None or tile > 8:
            raise _oom()
        return real(self, latent, tile=tile, overlap=overlap, on_tile=on_tile)

    monkeypatch.setattr(FirstStage, "decode_latents", fails_whole)
    result = executor.run(_graph(128), targets=["decode", "sampler", "ckpt"])
    assert result.ok, result.error
    assert tiles == [None, 8]  # whole, then in tiles of half the latent side (64 px)
    ae, latent = result.outputs["ckpt"]["autoencoder"], result.outputs["sampler"]["latent"].samples
    expected = real(ae, latent, tile=8)
    assert torch.equal(result.outputs["decode"]["image"].pixels, expected.float())


def test_sampling_frees_idle_models_and_retries_once(executor, monkeypatch):
    from engine.sampling import pipeline

    real, calls = pipeline.sample, []

    def fails_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise _oom()
        return real(*args, **kwargs)

    reference = executor.run(_graph())
    monkeypatch.setattr(pipeline, "sample", fails_first)
    executor.run(_graph(128))  # another size: the sampler runs, and fails once
    assert len(calls) == 2
    evicted = {e["part"] for e in executor.models.report()["evictions"]}
    assert evicted == {"conditioner", "autoencoder"}  # idle; the UNet is the sampler's own
    executor.cache.clear()
    monkeypatch.setattr(pipeline, "sample", real)
    again = executor.run(_graph())
    assert torch.equal(again.outputs["decode"]["image"].pixels, reference.outputs["decode"]["image"].pixels)


def test_an_unrecoverable_oom_names_the_numbers_and_the_next_run_works(executor, monkeypatch):
    from engine.sampling import pipeline

    real = pipeline.sample

    def always(*_args, **_kwargs):
        raise _oom()

    monkeypatch.setattr(pipeline, "sample", always)
    failed = executor.run(_graph())
    assert not failed.ok and failed.error is not None and failed.error.node_id == "sampler"
    message = str(failed.error)
    assert "sampling a 8x8 latent (64x64 px), batch 1, in float32 ran out of device memory" in message
    assert "--low-vram on" in message and "\n" not in message
    monkeypatch.setattr(pipeline, "sample", real)
    result = executor.run(_graph())
    assert result.ok and result.nodes["ckpt"].status == "cached" and result.nodes["prompt"].status == "cached"


def test_an_untileable_decode_fails_with_the_tile_size():
    work = Workload("decoding", (2, 4, 128, 128), 8, "float16")

    def decode(_tile):
        raise _oom()

    with pytest.raises(Exception, match=r"decoding a 128x128 latent \(1024x1024 px\), batch 2, in float16 ran "
                                        r"out of device memory even in tiles of 64 px"):
        decode_with_fallback(decode, None, work)
    assert sample_with_retry(lambda: 7, lambda: None, work) == 7
