"""4x SR trainer: aligned crops, degradations, the crop pool, the f=4 autoencoder preset, export run by the engine."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train_semantic import write_tiny_autoencoder

from engine.models.loader import load_checkpoint
from training import train_sr as tsr
from training.generators import sr_generator
from training.metrics import bicubic_upscale, evaluate_super_resolution
from training.shapes_world import make_scene, render

TINY_UNET = json.dumps({"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1})


@pytest.mark.parametrize("size", [128, 256, 512])
def test_small_crop_is_the_same_window_of_the_quarter_size_render(size):
    cfg = tsr.SrTrainConfig(object_share=1.0)
    rng = np.random.default_rng(size)
    for seed in range(3):
        high, low = tsr.sr_crop(make_scene(seed), size, cfg, rng)
        assert high.shape == (128, 128, 3) and low.shape == (32, 32, 3)
        boxed = high.reshape(32, 4, 32, 4, 3).astype(np.float64).mean(axis=(1, 3))
        assert np.abs(boxed - low).mean() < 1.0  # misaligned by one small pixel would be tens of levels off
        assert low.std() > 10  # object-centred crops hold an edge


def test_degrade_blurs_and_noises_only_the_chosen_share_and_stays_8_bit():
    low = torch.from_numpy(render(make_scene(4), 32)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    batch = low.repeat(8, 1, 1, 1)
    assert torch.equal(tsr.degrade(batch, np.random.default_rng(0), 0.0), batch)
    out = tsr.degrade(batch, np.random.default_rng(0), 1.0)
    assert all(not torch.equal(out[i], batch[i]) for i in range(8))
    levels = (out + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and out.min() >= -1 and out.max() <= 1
    assert (out - batch).abs().mean() < 0.05  # mild: the picture stays the same picture


def test_crop_pool_is_encoded_once_and_reused(tmp_path):
    from training.model_files import load_autoencoder

    ae, _ = load_autoencoder(write_tiny_autoencoder(tmp_path / "ae.safetensors", ch_mult=(1, 1, 1), z=3))
    cfg = tsr.SrTrainConfig(pool=5)
    latents, lows = tsr.build_pool(ae, cfg, tmp_path / "pool.pt", chunk=2)
    assert latents.shape == (5, 3, 32, 32) and latents.dtype == torch.float16
    assert lows.shape == (5, 32, 32, 3) and lows.dtype == np.uint8
    again = tsr.build_pool(None, cfg, tmp_path / "pool.pt")  # no autoencoder needed: read from the cache
    assert torch.equal(again[0], latents) and np.array_equal(again[1], lows)
    bigger = tsr.build_pool(ae, tsr.SrTrainConfig(pool=6), tmp_path / "pool.pt", chunk=3)  # another pool: rebuilt
    cached = tsr.build_pool(None, tsr.SrTrainConfig(pool=6), tmp_path / "pool.pt")[0]
    assert bigger[0].shape[0] == 6 and torch.equal(cached, bigger[0])


def test_autoencoder_command_trains_train_autoencoder_with_the_f4_preset(tmp_path, capsys):
    from training import autoencoder

    run = tmp_path / "sr-ae"
    assert tsr.main(["autoencoder", "--out", str(run), "--max-steps", "1", "--eval-n", "1", "--batch", "2",
                     "--threads", "1"]) == 0
    state = autoencoder.load_checkpoint(run / autoencoder.CHECKPOINT)
    arch = json.loads(state["autoencoder"])
    assert arch["ch_mult"] == [1, 1, 2] and arch["z_channels"] == 3 and arch["embed_dim"] == 3
    assert state["step"] == 1
    assert "init from" in capsys.readouterr().out  # started from the f=8 autoencoder's full-res levels


def test_train_export_and_upscale_32_to_128_through_the_engine(tmp_path):
    ae_file = write_tiny_autoencoder(tmp_path / "sr-ae.safetensors", ch_mult=(1, 1, 1), z=3)
    run = tmp_path / "run"
    assert tsr.main(["train", "--out", str(run), "--ae", str(ae_file), "--pool", "2", "--batch", "2", "--steps", "2",
                     "--threads", "1", "--unet", TINY_UNET]) == 0
    assert tsr.main(["train", "--out", str(run), "--steps", "3", "--threads", "1"]) == 0  # resumes, own config
    assert torch.load(run / "state.pt", weights_only=True)["opt"]["param_groups"][0]["lr"] == 2e-4
    assert tsr.main(["train", "--out", str(run), "--steps", "4", "--threads", "1", "--lr", "5e-5"]) == 0
    state = torch.load(run / "state.pt", weights_only=True)  # a given --lr takes over from the saved one
    assert state["opt"]["param_groups"][0]["lr"] == 5e-5 and json.loads(state["meta"])["config"]["lr"] == 5e-5
    out = tmp_path / "kiln-shapes-sr"
    card = tsr.export(str(run), str(out))
    assert card["training"]["steps"] == 4 and card["checkpoint_config"]["unet"]["model_channels"] == 32
    loaded = load_checkpoint(f"{out}.safetensors", "cpu")
    assert loaded.report["strict"] and loaded.conditioner.accepts == "image"
    assert loaded.first_stage.downsample_factor == 4 and loaded.model.unet.cfg.in_channels == 6

    generate = sr_generator(f"{out}.safetensors", steps=2, workdir=str(tmp_path))
    outputs = []
    report = evaluate_super_resolution(lambda low, seed: outputs.append(generate(low, seed)) or outputs[-1],
                                       [1_000_004])
    assert outputs[0].shape == (128, 128, 3) and outputs[0].dtype == np.uint8  # 32 px in, 128 px out
    assert report["n"] == 1 and report["bicubic_psnr"] > 20
    assert report["gain_over_bicubic_db"] == pytest.approx(report["psnr_mean"] - report["bicubic_psnr"])


def test_bicubic_baseline_gains_nothing_over_itself():
    seeds = [1_000_000, 1_000_001]
    report = evaluate_super_resolution(lambda low, seed: bicubic_upscale(low, 128), seeds)
    assert report["gain_over_bicubic_db"] == 0.0 and 20 < report["bicubic_psnr"] < 40
