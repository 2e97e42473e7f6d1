"""Semantic synthesis trainer: data, map dropout, resumable runs, export loaded by the engine, evaluator wiring."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.drawing import encode_png_b64
from engine.models.autoencoder import AutoencoderKL
from engine.models.configs import AutoencoderConfig
from engine.models.loader import load_checkpoint
from engine.values import SemanticMap
from training import generators
from training import train_semantic as ts
from training.pipeline import engine_executor
from training.shapes_world import make_scene, semantic_map


def write_tiny_autoencoder(path: Path, ch_mult: tuple[int, ...] = (1, 1, 1, 1), z: int = 4) -> Path:
    """A random KL autoencoder in the Kiln file format (first_stage_model.* + card with architecture)."""
    cfg = AutoencoderConfig(kind="kl", embed_dim=z, z_channels=z, ch=32, ch_mult=ch_mult, num_res_blocks=1,
                            attn_type="none", resolution=128)
    torch.manual_seed(0)
    ae = AutoencoderKL(cfg)
    save_file({f"first_stage_model.{k}": v.contiguous() for k, v in ae.state_dict().items()}, str(path))
    rgb = [[0.1 * (i + 1)] * 3 for i in range(z)] + [[0.5, 0.5, 0.5]]
    card = {"architecture": cfg.to_dict(), "scale_factor": 0.75, "latent_rgb_factors": rgb}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


TINY_UNET = json.dumps({"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                        "attention_resolutions": [2]})


@pytest.fixture(scope="module")
def ae_file(tmp_path_factory) -> Path:
    return write_tiny_autoencoder(tmp_path_factory.mktemp("ae") / "tiny-ae.safetensors")


def test_training_concat_is_what_the_loaded_conditioner_gives_at_inference():
    cfg = ts.SemanticTrainConfig()
    trainer_mapper = ts.SpatialConditioner(cfg.conditioner())
    labels = torch.from_numpy(semantic_map(make_scene(11), 128)).long()[None]  # (1, 128, 128)
    fractions = ts.rescale_one_hot(labels, cfg.n_stages)
    assert fractions.shape == (1, 21, 16, 16)
    assert torch.allclose(fractions.sum(1), torch.ones(1, 16, 16))  # class shares of each latent cell
    inference = trainer_mapper.encode(SemanticMap(labels)).concat
    assert torch.allclose(trainer_mapper.channel_mapper(fractions), inference, atol=1e-6)


def test_dropped_maps_give_all_zero_concat_like_conditioning_zero_out():
    latents = torch.randn(6, 4, 16, 16).half()
    cfg = ts.SemanticTrainConfig(batch=5, p_uncond=1.0)
    x0, fractions = ts.semantic_batch(cfg, latents, list(range(6)), 0.5, np.random.default_rng(0))
    assert x0.shape == (5, 4, 16, 16) and float(fractions.abs().max()) == 0.0
    trainer_mapper = ts.SpatialConditioner(cfg.conditioner())
    assert float(trainer_mapper.channel_mapper(fractions).detach().abs().max()) == 0.0  # no bias: "no map" is zero
    kept = ts.semantic_batch(ts.SemanticTrainConfig(batch=5, p_uncond=0.0), latents, list(range(6)), 0.5,
                             np.random.default_rng(0))[1]
    assert torch.allclose(kept.sum(1), torch.ones(5, 16, 16))


def test_a_tiny_trainer_learns_a_fixed_batch():
    cfg = ts.SemanticTrainConfig(batch=4, lr=2e-3, map_channels=4)
    cfg.unet = ts.UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                             num_head_channels=32, legacy=False, out_channels=4)
    trainer = ts.SemanticTrainer(cfg)
    x0, fractions = ts.semantic_batch(cfg, torch.randn(8, 4, 16, 16).half(), list(range(8)), 1.0,
                                      np.random.default_rng(1))
    losses = [trainer.train_step(x0, fractions, torch.Generator().manual_seed(0)) for _ in range(25)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])  # same noise each step: it must fit it
    mapper_key = "cond_stage_model.channel_mapper.weight"
    assert not torch.equal(trainer.ema[mapper_key], trainer.weights()[mapper_key])  # EMA lags the mapper too


def test_train_resumes_exactly_and_exports_a_checkpoint_the_engine_runs(ae_file, tmp_path):
    from engine.executor import Executor

    def train(out: str, *extra: str) -> int:
        return ts.main(["train", "--out", str(tmp_path / out), "--ae", str(ae_file), "--scenes", "6", "--batch", "2",
                        "--threads", "1", "--unet", TINY_UNET, *extra])

    assert train("run", "--steps", "1") == 0
    assert train("run", "--steps", "2", "--save-every", "0") == 0  # resumes: one more step
    resumed = ts.load_state(tmp_path / "run" / ts.STATE)
    assert train("straight", "--steps", "2") == 0
    straight = ts.load_state(tmp_path / "straight" / ts.STATE)
    assert resumed["step"] == straight["step"] == 2
    for key, value in straight["weights"].items():
        assert torch.equal(resumed["weights"][key], value), key  # data, noise and weights as if never stopped

    out = tmp_path / "models" / "kiln-shapes-semantic"
    card = ts.export(str(tmp_path / "run"), str(out))
    assert card["training"]["steps"] == 2 and card["checkpoint_config"]["conditioner"]["kind"] == "spatial"
    loaded = load_checkpoint(f"{out}.safetensors", "cpu")
    assert loaded.report["strict"] and loaded.report["config_source"] == "metadata"
    assert loaded.config.diffusion.conditioning_key == "concat" and loaded.first_stage.scale_factor == 0.75
    assert loaded.first_stage.latent_rgb is not None and loaded.conditioner.accepts == "semantic"
    ema = ts.load_state(tmp_path / "run" / ts.STATE)["ema"]
    unet_key = "input_blocks.0.0.weight"
    exported = ema["model.diffusion_model." + unet_key].half().float()  # EMA weights, stored as float16
    assert torch.allclose(loaded.model.unet.state_dict()[unet_key], exported)

    labels = semantic_map(make_scene(1_000_001), 128)
    graph = generators.semantic_graph(f"{out}.safetensors", encode_png_b64(labels), seed=3, steps=2, cfg=2.0,
                                      sampler="euler", scheduler="karras")
    executor = engine_executor()
    assert isinstance(executor, Executor)
    result = executor.run(graph, targets=["decode"])
    assert result.ok, result.error
    assert result.model_evals == 2  # cfg 2 with the zeroed map as negative: one batched call per step
    assert tuple(result.outputs["decode"]["image"].pixels.shape) == (1, 3, 128, 128)

    from training.metrics import evaluate_semantic

    report = evaluate_semantic(generators.semantic_generator(f"{out}.safetensors", steps=1, cfg=1.0), [1_000_002])
    assert report["n"] == 1 and 0.0 <= report["pixel_accuracy"] <= 1.0


def test_bad_unet_override_is_one_clear_line(ae_file, tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "run"), "--ae", str(ae_file), "--unet", '{"model_chanels": 32}']
    assert ts.main(args) == 2
    assert capsys.readouterr().err == "error: --unet: unknown UNetConfig field 'model_chanels'\n"


def test_export_of_a_missing_run_is_one_clear_line(tmp_path, capsys):
    assert ts.main(["export", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nothing/state.pt: no training state" in err and err.count("\n") == 1
