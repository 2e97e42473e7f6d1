"""Training shows a progress bar on a terminal and keeps a loss log beside its checkpoint."""
from __future__ import annotations

import io
import time

import numpy as np
import torch

from training.loop import Progress, run_loop


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class CountingTrainer:
    """Stands in for a model trainer: its loss falls by 0.01 a step."""

    def __init__(self, step: int = 0):
        self.step = step

    def train_step(self, _batch, _gen) -> float:
        self.step += 1
        time.sleep(0.002)
        return 1.0 - 0.01 * self.step


def test_the_loop_appends_a_loss_log_row_every_log_interval(tmp_path):
    log = tmp_path / "run" / "loss.csv"
    saves = []
    for first, last in ((0, 20), (20, 30)):  # a resumed run appends under the same header
        trainer = CountingTrainer(first)
        run_loop(trainer, lambda r: (None,), np.random.default_rng(0), torch.Generator(), lambda: saves.append(1),
                 last, 5.0, float("inf"), log_every=5, loss_log=log)
    lines = log.read_text().splitlines()
    assert lines[0] == "time,step,loss,steps_per_s"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[1]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert np.allclose([float(r[2]) for r in rows], [0.97, 0.92, 0.87, 0.82, 0.77, 0.72])
    assert all(float(r[3]) > 0 for r in rows) and len(saves) == 2


def test_the_bar_shows_the_step_loss_and_time_left_and_is_cleared_for_log_lines():
    terminal = FakeTerminal()
    progress = Progress(100, 200, 3600.0, None, stream=terminal)
    progress.update(150, 0.1234)
    drawn = terminal.getvalue()
    assert drawn.startswith("\r[" + "#" * 12 + "-" * 12 + "]") and " 50% step 150 loss 0.1234" in drawn
    assert "elapsed" in drawn and "left" in drawn
    progress.clear()
    assert terminal.getvalue().endswith("\r\x1b[K")


def test_a_time_limited_run_shows_the_time_fraction_and_a_log_file_gets_no_bar(tmp_path):
    progress = Progress(0, 10**9, 10.0, None)
    progress.started -= 5.0
    assert 0.49 < progress.fraction(3) < 0.6
    piped = io.StringIO()
    Progress(0, 10, 60.0, None, stream=piped).update(5, 0.5)
    assert piped.getvalue() == ""


def test_sigterm_or_ctrl_c_stops_training_after_the_step_with_a_save(capsys):
    import os
    import signal

    class SignalledTrainer(CountingTrainer):
        def train_step(self, batch, gen) -> float:
            if self.step == 7:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().train_step(batch, gen)

    before = signal.getsignal(signal.SIGTERM)
    trainer, saved_at = SignalledTrainer(), []
    run_loop(trainer, lambda r: (None,), np.random.default_rng(0), torch.Generator(),
             lambda: saved_at.append(trainer.step), 1000, 5.0, float("inf"))
    assert trainer.step == 8 and saved_at == [8]  # the step in flight finished, then one save
    assert "stopped on SIGTERM at step 8" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is given back
