"""Autoencoder training: steps learn, runs resume exactly, exports load in the original layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from engine.models.autoencoder import AutoencoderKL
from training.autoencoder import CHECKPOINT, TrainConfig, Trainer, autoencoder_config, train_step
from training.autoencoder_export import export, fit_latent_rgb, fit_latent_rgb_network, training_sessions
from training.model_files import load_autoencoder
from training.train_autoencoder import main


def _tiny(tmp_path, **changes) -> TrainConfig:
    settings = {"out": str(tmp_path / "run"), "ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "crop": 16,
                "batch": 2, "warmup": 1, "lr": 3e-3, "eval_n": 2, "log_every": 100, "threads": 1}
    settings.update(changes)
    return TrainConfig(**settings)


def test_training_steps_reduce_the_loss_on_a_batch(tmp_path):
    tc = _tiny(tmp_path)
    torch.manual_seed(0)
    model = AutoencoderKL(autoencoder_config(tc))
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    losses = [train_step(model, opt, tc, step=0)["loss"] for _ in range(12)]  # step 0: always the same batch
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_a_resumed_run_continues_exactly_where_it_stopped(tmp_path):
    straight = Trainer(_tiny(tmp_path / "a", max_steps=4))
    straight.run()
    first = Trainer(_tiny(tmp_path / "b", max_steps=2))
    first.run()
    second = Trainer(_tiny(tmp_path / "b", max_steps=4))
    assert second.resume() and second.step == 2
    second.run()
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    evals = (tmp_path / "a" / "run" / "evals.jsonl").read_text().splitlines()
    assert json.loads(evals[-1])["step"] == 4


def test_export_writes_original_layout_weights_and_a_card(tmp_path):
    tc = _tiny(tmp_path, max_steps=2)
    Trainer(tc).run()
    out = tmp_path / "models" / "tiny-ae"
    card = export(tc.out, str(out), n_eval=3, n_stats=8, preview_steps=20)
    with safe_open(f"{out}.safetensors", framework="pt") as f:
        keys = list(f.keys())
        dtype = f.get_tensor("first_stage_model.encoder.conv_in.weight").dtype
    assert all(k.startswith("first_stage_model.") for k in keys)
    assert "first_stage_model.encoder.down.0.downsample.conv.weight" in keys
    assert "first_stage_model.post_quant_conv.weight" in keys
    assert dtype == (torch.float16 if card["dtype"] == "float16" else torch.float32)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["architecture"]["ch_mult"] == [1, 2] and saved["data"] == "shapes world v1"
    assert saved["scale_factor"] > 0 and len(saved["latent_rgb_factors"]) == 5  # 4 channel rows + bias
    assert len(saved["latent_rgb_network"]["w1"]) == 4 and len(saved["latent_rgb_network"]["b2"]) == 3
    assert "python -m training.evaluate autoencoder" in saved["evaluation"]["command"]
    assert "--crop 16" in saved["training"]["final_config_command"]
    model, _ = load_autoencoder(f"{out}.safetensors")
    assert model.encode(torch.zeros(1, 3, 16, 16)).mode().shape == (1, 4, 8, 8)


def test_latent_rgb_fit_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    weights = rng.normal(size=(4, 3))
    y = x @ weights + np.array([0.5, 0.4, 0.3])
    rows = np.array(fit_latent_rgb(x, y))
    assert rows[:4] == pytest.approx(weights, abs=1e-4)
    assert rows[4] == pytest.approx([0.5, 0.4, 0.3], abs=1e-4)


def test_preview_network_fits_colours_a_linear_map_cannot():
    """Colour that folds through the latent (here: a channel's magnitude, not its sign) defeats a linear
    preview; the fitted network draws it."""
    from engine.sampling.preview import LatentPreviewer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3)).astype(np.float32)
    y = np.stack([np.abs(x[:, 0]) / 3, 0.5 + 0.1 * x[:, 1], np.full(len(x), 0.2)], 1).clip(0, 1)
    linear = np.concatenate([x, np.ones((len(x), 1))], 1) @ np.array(fit_latent_rgb(x, y))
    network = fit_latent_rgb_network(x, y, steps=600)
    latent = torch.from_numpy(x[:256].T.reshape(1, 3, 16, 16).copy())
    drawn = LatentPreviewer(network, 3)(latent).reshape(-1, 3).astype(np.float32) / 255
    linear_error = np.abs(linear[:256] - y[:256]).mean()
    assert np.abs(drawn - y[:256]).mean() < linear_error / 3


def test_command_line_resume_keeps_the_run_config(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = ["train", "--out", out, "--ch-mult", "1,2", "--crop", "16", "--batch", "2", "--max-steps", "1",
            "--eval-n", "1", "--threads", "1"]
    assert main(args) == 0
    assert main(["train", "--out", out, "--max-steps", "2"]) == 0
    state = torch.load(f"{out}/{CHECKPOINT}", weights_only=True)
    assert state["step"] == 2 and json.loads(state["config"])["ch_mult"] == [1, 2]
    output = capsys.readouterr().out
    assert "resumed at step 1" in output
    (tmp_path / "cli" / "log.txt").write_text(output)  # what `> log.txt` would hold
    sessions = training_sessions(out)
    assert [s["from_step"] for s in sessions] == [0, 1]
    assert sessions[1]["command"] == f"python -m training.train_autoencoder train --out {out} --max-steps 2"


def test_cards_keep_lists_of_numbers_on_one_line_and_read_back_the_same():
    from training.model_files import card_text

    card = {"name": "x", "latent_rgb_factors": [[0.5, -1e-05, 2], [1.25, 0, -3.5]], "tags": ["a", "b"],
            "nested": {"b1": [0.1, -0.2], "empty": []}}
    text = card_text(card)
    assert json.loads(text) == card
    assert '    [0.5, -1e-05, 2],\n' in text and '"b1": [0.1, -0.2]' in text
    assert '"tags": [\n    "a",' in text  # words keep one per line
