"""The resumable training loop shared by every trainer: run_loop (steps or minutes, periodic atomic saves,
a stop on Ctrl-C or SIGTERM with a save, a learning-rate schedule), save_run / resume_run of `state.pt`
in the run folder, batches made ahead in worker processes, the progress bar and the loss log.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from engine import atomic
from engine.errors import KilnError

STATE = "state.pt"
LOSS_LOG = "loss.csv"  # beside STATE: time, step, mean loss, steps/s every log_every steps


class Trainable(Protocol):
    """What run_loop, save_run and resume_run drive: a step count, an optimizer, a step, saved state."""

    step: int
    opt: torch.optim.Optimizer

    def train_step(self, *batch_and_generator: Any) -> float: ...

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save that leaves the previous file whole when it fails or is interrupted."""
    with atomic.replacing(path) as f:
        torch.save(obj, f)


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KilnError(f"{path}: no training state here (run `train` with this --out first)")
    return torch.load(path, map_location="cpu", weights_only=True)


def save_run(trainer: Trainable, rng: np.random.Generator, gen: torch.Generator, meta: dict[str, Any],
             path: Path) -> None:
    state = trainer.state()
    state.update({"np": json.dumps(rng.bit_generator.state), "torch": gen.get_state(), "meta": json.dumps(meta)})
    atomic_torch_save(state, path)


def resume_run(trainer: Trainable, path: Path, seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """Data rngs at the saved step (or fresh ones), the trainer loaded when a state exists."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    if path.exists():
        state = load_state(path)
        trainer.load(state)
        rng.bit_generator.state = json.loads(state["np"])
        gen.set_state(state["torch"])
        log(f"resumed at step {trainer.step}")
    return rng, gen


def with_learning_rate(trainer: Trainable, current: float, wanted: float | None) -> float:
    """A resumed run's learning rate: `wanted` (the --lr flag) when given, every param group scaled alike."""
    if wanted is None or wanted == current:
        return current
    for group in trainer.opt.param_groups:
        group["lr"] *= wanted / current
    log(f"learning rate {current:g} -> {wanted:g}")
    return wanted


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate over one `train` call, as a factor of the run's rate.

    A linear warm-up over the first `warmup` steps (a fresh optimizer on a trained model takes
    full-size steps at once otherwise), then, from `decay_from` of the run (by steps or time,
    whichever is further on), a linear fall to `floor`. The default changes nothing."""

    warmup: int = 0
    decay_from: float = 1.0
    floor: float = 0.1

    def factor(self, steps_done: int, fraction: float) -> float:
        warm = min(1.0, (steps_done + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.decay_from >= 1.0 or fraction <= self.decay_from:
            return warm
        tail = min(1.0, (fraction - self.decay_from) / (1.0 - self.decay_from))
        return warm * (1.0 - (1.0 - self.floor) * tail)


def _scale_learning_rate(trainer: Trainable, base: list[float], factor: float) -> None:
    for group, lr in zip(trainer.opt.param_groups, base):
        group["lr"] = lr * factor


def run_loop(trainer: Trainable, next_batch: Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor]],
             rng: np.random.Generator, gen: torch.Generator, save: Callable[[], None], steps: int, minutes: float,
             save_every: float, log_every: int = 25, loss_log: Path | None = None,
             schedule: LrSchedule | None = None) -> dict[str, float]:
    """Train until `steps` or `minutes`; save every `save_every` seconds and at the end. Returns the speed.

    Every `log_every` steps a line goes to stdout (with the share of the time spent waiting for
    batches: on a GPU, whether the batch makers keep up) and, given `loss_log`, a row to that CSV
    file; on a terminal a progress bar on stderr shows the step, the loss and the time left.
    A `schedule` scales the learning rate within this call; saves keep the unscaled rate.
    """
    started = last_save = window_start = time.monotonic()
    done, losses, waited = 0, [], 0.0
    progress = Progress(trainer.step, steps, minutes * 60, loss_log)
    scaled = schedule is not None and schedule != LrSchedule()
    base_lr = [group["lr"] for group in trainer.opt.param_groups] if scaled else []

    def save_unscaled() -> None:
        if scaled:
            _scale_learning_rate(trainer, base_lr, 1.0)
        save()

    stop = StopRequest()
    try:
        while trainer.step < steps and time.monotonic() - started < minutes * 60 and not stop.asked:
            if scaled:
                _scale_learning_rate(trainer, base_lr, schedule.factor(done, progress.fraction(trainer.step)))
            asked = time.monotonic()
            batch = next_batch(rng)
            waited += time.monotonic() - asked
            losses.append(trainer.train_step(*batch, gen))
            done += 1
            progress.update(trainer.step, losses[-1])
            if trainer.step % log_every == 0:
                window = max(time.monotonic() - window_start, 1e-9)
                rate = len(losses) / window
                progress.clear()
                log(f"step {trainer.step} loss {np.mean(losses):.4f} {rate:.3f} steps/s "
                    f"(waiting for batches {100 * waited / window:.0f} %)")
                progress.record(trainer.step, float(np.mean(losses)), rate)
                losses, waited, window_start = [], 0.0, time.monotonic()
            if time.monotonic() - last_save > save_every:
                save_unscaled()
                last_save = time.monotonic()
        save_unscaled()
    finally:
        stop.release()
    progress.clear()
    seconds = time.monotonic() - started
    why = f" on {stop.asked}" if stop.asked else ""
    log(f"stopped{why} at step {trainer.step} ({done} steps in {seconds:.0f} s)")
    return {"steps": done, "seconds": seconds, "steps_per_s": done / max(seconds, 1e-9)}


class _BatchStream(torch.utils.data.IterableDataset):
    """Endless batches from `make`, each worker process drawing from its own rng."""

    def __init__(self, make: Callable[[np.random.Generator], tuple], seed: tuple[int, ...]):
        super().__init__()
        self.make, self.seed = make, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        torch.set_num_threads(1)
        rng = np.random.default_rng([*self.seed, info.id if info is not None else 0])
        while True:
            yield self.make(rng)


def prefetched(make: Callable[[np.random.Generator], tuple], seed: tuple[int, ...], workers: int
               ) -> Callable[[np.random.Generator], tuple]:
    """`make` run ahead of the trainer in `workers` processes (a GPU step outruns one core making batches).

    The workers draw from rngs seeded by `seed` and their number, not from the run's rng, so a
    run is repeatable from its start, but a resumed one draws other batches than an unbroken one
    (seed it with the start step so that it does not repeat the batches it began with).
    With workers 0, `make` itself."""
    if workers <= 0:
        return make
    loader = torch.utils.data.DataLoader(_BatchStream(make, seed), batch_size=None, num_workers=workers,
                                         prefetch_factor=4, persistent_workers=True, timeout=120,
                                         multiprocessing_context="fork")
    batches = iter(loader)
    return lambda rng: next(batches)


class StopRequest:
    """Ctrl-C or SIGTERM during training: finish the step, save, stop (a second one acts as usual).

    Without it a stopped run would lose everything since its last periodic save."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.asked = ""
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self.previous[number] = signal.signal(number, self._ask)

    def _ask(self, number: int, frame: Any) -> None:
        self.asked = signal.Signals(number).name
        log(f"{self.asked}: stopping after this step, with a save")
        self.release()

    def release(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, flush=True)


class Progress:
    """A one-line progress bar on a terminal and a CSV loss log (time, step, loss, steps_per_s).

    Runs stop at a step count or a time limit, whichever comes first, so the bar
    shows the larger of the two fractions and the time left at the current speed.
    """

    def __init__(self, first_step: int, last_step: int, seconds: float, loss_log: Path | None,
                 stream: Any = None, width: int = 24):
        self.first_step, self.last_step, self.seconds, self.width = first_step, last_step, seconds, width
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.loss_log, self.started, self.drawn_at = loss_log, time.monotonic(), 0.0
        if loss_log is not None and not loss_log.exists():
            loss_log.parent.mkdir(parents=True, exist_ok=True)
            loss_log.write_text("time,step,loss,steps_per_s\n")

    def fraction(self, step: int) -> float:
        by_time = (time.monotonic() - self.started) / self.seconds if self.seconds > 0 else 0.0
        span = self.last_step - self.first_step
        by_steps = (step - self.first_step) / span if 0 < span < 10**8 else 0.0
        return min(1.0, max(by_time, by_steps))

    def update(self, step: int, loss: float) -> None:
        now = time.monotonic()
        if not self.live or now - self.drawn_at < 0.25:
            return
        self.drawn_at, done = now, self.fraction(step)
        elapsed = now - self.started
        left = elapsed * (1 - done) / done if done > 0 else float("nan")
        filled = round(done * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done:4.0%} step {step} loss {loss:.4f} "
                          f"{_clock(elapsed)} elapsed, {_clock(left)} left ")
        self.stream.flush()

    def clear(self) -> None:
        if self.live and self.drawn_at:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def record(self, step: int, loss: float, steps_per_s: float) -> None:
        if self.loss_log is not None:
            with open(self.loss_log, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')},{step},{loss:.6f},{steps_per_s:.4f}\n")


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes:02d}:{secs:02d}"

