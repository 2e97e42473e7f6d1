"""The options a GPU run of the trainers uses: a learning-rate schedule, batches made in worker
processes, scenes rendered in worker processes, and a bfloat16 forward pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_ldm import tiny_config
from test_train_semantic import write_tiny_autoencoder

from training.data import encode_scenes
from training.loop import LrSchedule, prefetched, run_loop
from training.model_files import load_autoencoder
from training.train_ldm import Trainer, make_batch


def test_the_default_schedule_keeps_the_rate():
    assert all(LrSchedule().factor(step, fraction) == 1.0 for step, fraction in ((0, 0.0), (50, 0.5), (99, 1.0)))


def test_warm_up_rises_linearly_and_the_decay_ends_at_the_floor():
    schedule = LrSchedule(warmup=4, decay_from=0.5, floor=0.1)
    assert [schedule.factor(step, 0.0) for step in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert schedule.factor(10, 0.5) == 1.0
    assert schedule.factor(10, 0.75) == pytest.approx(0.55)
    assert schedule.factor(10, 1.0) == pytest.approx(0.1)


def _tiny_trainer() -> Trainer:
    torch.manual_seed(0)
    return Trainer(tiny_config(lr=1e-3))


def _fixed_batch(trainer: Trainer):
    cfg = trainer.cfg
    return make_batch(cfg, trainer.conditioner.tokenizer, torch.randn(8, 4, 8, 8).half(), list(range(8)), 1.0,
                      np.random.default_rng(0))


def test_the_loop_follows_the_schedule_and_saves_the_runs_own_rate():
    trainer = _tiny_trainer()
    batch = _fixed_batch(trainer)
    seen, saved = [], []

    def next_batch(_rng):
        seen.append(trainer.opt.param_groups[0]["lr"])
        return (batch,)

    run_loop(trainer, next_batch, np.random.default_rng(0), torch.Generator().manual_seed(0),
             lambda: saved.append(trainer.opt.param_groups[0]["lr"]), 10, 5.0, float("inf"),
             schedule=LrSchedule(warmup=2, decay_from=0.5))
    assert seen[:2] == pytest.approx([5e-4, 1e-3])
    assert seen[-1] < seen[5] and seen[-1] == pytest.approx(1e-3 * (1 - 0.9 * 0.8))
    assert saved == [1e-3]  # a resumed run goes on at its rate, not the decayed one


def test_the_log_says_how_much_of_the_time_went_to_waiting_for_batches(capsys):
    import time

    trainer = _tiny_trainer()
    batch = _fixed_batch(trainer)

    def slow_batch(_rng):
        time.sleep(0.2)  # a batch maker far slower than a step of the tiny model
        return (batch,)

    run_loop(trainer, slow_batch, np.random.default_rng(0), torch.Generator().manual_seed(0), lambda: None,
             4, 5.0, float("inf"), log_every=4)
    line = next(x for x in capsys.readouterr().out.splitlines() if "step 4 loss" in x)
    share = int(line.split("waiting for batches ")[1].split(" %")[0])
    rate = float(line.split(" steps/s")[0].split()[-1])
    slept = 100 * 4 * 0.2 / (4 / rate)  # the sleeps' share of the window the line reports, whatever the load
    assert slept - 1 <= share <= slept + 5, line


def _draw(rng: np.random.Generator) -> tuple[torch.Tensor]:
    return (torch.from_numpy(rng.random(3)),)


def _first(next_batch, n: int = 6) -> list[torch.Tensor]:
    return [next_batch(None)[0] for _ in range(n)]


def test_batches_made_in_worker_processes_repeat_from_the_same_seed():
    first = _first(prefetched(_draw, (0, 5), workers=2))
    again = _first(prefetched(_draw, (0, 5), workers=2))
    resumed = _first(prefetched(_draw, (0, 6), workers=2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert len({tuple(t.tolist()) for t in first}) == 6  # the two workers do not make the same batches
    assert not any(torch.equal(a, b) for a, b in zip(first, resumed))
    assert prefetched(_draw, (0, 5), workers=0) is _draw


def test_scenes_rendered_in_worker_processes_encode_to_the_same_latents(tmp_path):
    ae, _ = load_autoencoder(str(write_tiny_autoencoder(tmp_path / "ae.safetensors")))
    seeds = list(range(10))
    alone = encode_scenes(ae, seeds, tmp_path / "alone.pt", batch=4)
    helped = encode_scenes(ae, seeds, tmp_path / "helped.pt", batch=4, workers=2)
    assert alone.shape == (10, 4, 16, 16) and torch.equal(alone, helped)


def test_a_bfloat16_forward_pass_trains_too():
    trainer = _tiny_trainer()
    trainer.autocast = torch.bfloat16  # what a GPU run uses; the CPU runs it as well
    batch = _fixed_batch(trainer)
    losses = [trainer.train_step(batch, torch.Generator().manual_seed(0)) for _ in range(8)]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert all(p.dtype == torch.float32 for p in trainer.unet.parameters())  # the weights stay float32


def test_a_compiled_unet_trains_the_same_weights_and_saves_under_the_same_keys():
    plain, compiled = _tiny_trainer(), _tiny_trainer()
    compiled.compile_unet(backend="eager")  # dynamo traces the UNet; no code generated: fast
    batch = _fixed_batch(plain)
    for _ in range(3):
        expected = plain.train_step(batch, torch.Generator().manual_seed(0))
        assert compiled.train_step(batch, torch.Generator().manual_seed(0)) == pytest.approx(expected, rel=1e-4)
    assert compiled.state()["weights"].keys() == plain.state()["weights"].keys()
    key = next(iter(plain.ema))
    torch.testing.assert_close(compiled.ema[key], plain.ema[key], rtol=1e-4, atol=1e-6)
