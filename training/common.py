"""Training infrastructure shared by the built-in model trainers (train_ldm, train_semantic, train_sr).

- ConcatTrainer: eps-prediction training of a UNet with concat (and optional cross-attention) conditioning,
  EMA weights under the original single-file keys;
- the resumable loop: run_loop, save_run, resume_run, load_state (atomic `state.pt` in the run folder);
- write_checkpoint / update_card: the exported single-file model and its JSON card;
- encode_scenes: shapes-world latents encoded once and cached; load_autoencoder;
- through the engine: engine_executor, run_image, example_graph (the shipped example graphs, parameters set).
"""
from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import KilnError
from engine.models.configs import CheckpointConfig, DiffusionConfig, UNetConfig
from engine.models.diffusion import LatentDiffusionModel
from engine.models.keymaps import AE_PREFIX, COND_PREFIX, UNET_PREFIX
from engine.models.unet import UNetModel
from training.shapes_world import SPEC_VERSION

STATE = "state.pt"
LOSS_LOG = "loss.csv"  # beside STATE: time, step, mean loss, steps/s every log_every steps
IMAGE_SIZE = 128
LATENT_CHANNELS = 4


# ---------------------------------------------------------------- config


def dataclass_from(cls: type, data: dict[str, Any], nested: dict[str, type] | None = None) -> Any:
    """A (nested) config dataclass from a plain dict; lists become tuples, unknown keys are an error.

    `nested` names the fields holding config dataclasses (default: unet and diffusion).
    """
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field {unknown[0]!r}")
    nested = nested or {"unet": UNetConfig, "diffusion": DiffusionConfig}
    values = {}
    for key, value in data.items():
        if key in nested and isinstance(value, dict):
            value = dataclass_from(nested[key], value)
        values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def with_overrides(unet: UNetConfig, text: str | None) -> UNetConfig:
    """The UNet config with the fields of a JSON object (the --unet flag) replaced."""
    if not text:
        return unet
    try:
        changes = json.loads(text)
        merged = dataclass_from(UNetConfig, {**unet.to_dict(), **changes})
    except (ValueError, TypeError) as exc:
        raise KilnError(f"--unet: {exc}") from None
    return merged


# ---------------------------------------------------------------- the shared trainer


def training_target(prediction: str, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output: eps, or v = sqrt(a) eps - sqrt(1 - a) x0 (a = alphas_cumprod[t]).

    v keeps the loss meaningful at the noisiest steps, where an eps model must be very precise for its
    x0 estimate (x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)) to be of any use; short runs need that."""
    if prediction == "eps":
        return noise
    return a.sqrt() * noise - (1 - a).sqrt() * x0


class ConcatTrainer:
    """eps- or v-prediction training (the diffusion config's `prediction`) of a UNet with concat conditioning.

    `cond_stage` is an optional conditioner module trained with the UNet; its
    weights are exported under `cond_stage_model.`. Subclasses turn the batch's
    conditioning input into the concat channels in `concat`.
    """

    def __init__(self, unet_cfg: UNetConfig, diffusion_cfg: DiffusionConfig, cond_stage: nn.Module | None,
                 lr: float, ema_decay: float, seed: int, device: str = "cpu", position_lr_scale: float = 1.0):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        # on a GPU the forward pass runs in bfloat16 (about twice the speed; the loss stays float32)
        self.autocast: torch.dtype | None = torch.bfloat16 if self.device.type == "cuda" else None
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.unet = UNetModel(unet_cfg)
        self.cond_stage = cond_stage
        self.model = LatentDiffusionModel(self.unet, diffusion_cfg).to(self.device)
        if cond_stage is not None:
            cond_stage.to(self.device)
        self.ema_decay = ema_decay
        self.opt = torch.optim.AdamW(self._param_groups(lr, position_lr_scale), lr=lr, weight_decay=0.0)
        self.ema = {k: v.detach().clone() for k, v in self.weights().items()}
        self.step = 0
        self.forward_unet: Callable[..., torch.Tensor] = self.unet  # compile_unet() swaps in a compiled one

    def compile_unet(self, backend: str = "inductor") -> None:
        """Run the UNet's training forward and backward through torch.compile (fused kernels: on a GPU far
        fewer launches per step). The compiled module shares the UNet's parameters, so saved state, EMA and
        exports are unchanged; the first step pays the compilation (on this 2-core CPU 4 minutes cold,
        10 s from inductor's cache; steady speed there within the noise of eager)."""
        self.forward_unet = torch.compile(self.unet, backend=backend)
        log("the UNet is compiled with torch.compile (the first step compiles it)")

    def _parameters(self) -> list[nn.Parameter]:
        modules = [self.unet] + ([self.cond_stage] if self.cond_stage is not None else [])
        return [p for m in modules for p in m.parameters()]

    def _param_groups(self, lr: float, position_lr_scale: float) -> list[dict[str, Any]]:
        """One group, or two when the UNet's position projections learn at their own rate: added to a
        trained model they start at zero, and at the model's rate they would take thousands of steps to matter."""
        position = [p for name, p in self.unet.named_parameters() if ".pos_proj." in name]
        if position_lr_scale == 1.0 or not position:
            return [{"params": self._parameters()}]
        chosen = {id(p) for p in position}
        rest = [p for p in self._parameters() if id(p) not in chosen]
        return [{"params": rest}, {"params": position, "lr": lr * position_lr_scale}]

    def weights(self) -> dict[str, torch.Tensor]:
        """Live weights under their original single-file keys."""
        out = {UNET_PREFIX + k: v for k, v in self.unet.state_dict().items()}
        if self.cond_stage is not None:
            out.update({COND_PREFIX + k: v for k, v in self.cond_stage.state_dict().items()})
        return out

    def concat(self, cond_input: Any) -> torch.Tensor:
        return cond_input

    def context(self, cond_input: Any) -> torch.Tensor | None:
        """Cross-attention context (B, T, D) of the batch's conditioning; none for concat-only models."""
        return None

    def train_step(self, x0: torch.Tensor, cond_input: Any, gen: torch.Generator) -> float:
        """One AdamW step on the eps or v loss; x0 (B, C, h, w) scaled latents.

        Noise and timesteps are drawn on the CPU from `gen` on every device, so a run
        resumed on another device goes on with the same draws."""
        t = torch.randint(0, self.model.config.timesteps, (x0.shape[0],), generator=gen).to(self.device)
        noise = torch.randn(x0.shape, generator=gen).to(self.device)
        x0, cond_input = to_device(x0, self.device), to_device(cond_input, self.device)
        a = self.model.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            pred = self.forward_unet(torch.cat([x_t, self.concat(cond_input)], dim=1), t,
                                     context=self.context(cond_input))
        loss = F.mse_loss(pred.float(), training_target(self.model.prediction, x0, noise, a))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._parameters(), 1.0)
        self.opt.step()
        self._update_ema()
        self.step += 1
        return loss.item()

    def _update_ema(self) -> None:
        update_ema(self.ema, self.weights(), self.step, self.ema_decay)

    def state(self) -> dict[str, Any]:
        """Everything to resume, on the CPU (a run moves between machines)."""
        return {"weights": {k: v.detach().cpu().clone() for k, v in self.weights().items()},
                "ema": {k: v.cpu() for k, v in self.ema.items()},
                "opt": to_device(self.opt.state_dict(), torch.device("cpu")), "step": self.step}

    def load_weights(self, weights: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
        """Live weights from single-file keys (the EMA restarts from them).

        strict=False lets this model have tensors `weights` lacks (a part added to the
        architecture, which keeps its initial values); returns their keys."""
        unet_weights = {k[len(UNET_PREFIX):]: v for k, v in weights.items() if k.startswith(UNET_PREFIX)}
        if not strict:
            unet_weights = grown_inputs(unet_weights, self.unet.state_dict())
        missing = self.unet.load_state_dict(unet_weights, strict=strict).missing_keys
        if self.cond_stage is not None:
            self.cond_stage.load_state_dict({k[len(COND_PREFIX):]: v for k, v in weights.items()
                                             if k.startswith(COND_PREFIX)})
        if not strict and (unexpected := sorted(set(weights) - set(self.weights()))):
            raise KilnError(f"the model file has tensors this architecture lacks: {', '.join(unexpected[:4])}")
        self.ema = {k: v.detach().clone() for k, v in self.weights().items()}
        return [UNET_PREFIX + k for k in missing]

    def start_from(self, weights: dict[str, torch.Tensor], step: int, source: str) -> None:
        """A new run going on from an exported model's weights and step count (`--init-from`).

        Tensors the architecture adds (say `--unet '{"position_features": 6}'`) start at their initial values."""
        added = self.load_weights(weights, strict=False)
        self.step = step
        log(f"starting from {source} (its step {step}; fresh optimizer, EMA from its weights)")
        if added:
            log(f"{len(added)} tensors are new to this architecture and start from their initial values")

    def load(self, state: dict[str, Any]) -> None:
        self.load_weights(state["weights"])
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.opt.load_state_dict(state["opt"])  # moves its tensors to the parameters' device
        self.step = int(state["step"])


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], live: dict[str, torch.Tensor], step: int, decay: float) -> None:
    """Move `ema` towards the `live` weights; the decay warms up ((1 + step) / (10 + step)) so that a short
    run's EMA is not stuck at its start. Integer tensors are copied."""
    decay = min(decay, (1 + step) / (10 + step))
    floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    for k, v in live.items():
        if v.dtype.is_floating_point:
            floats[0].append(ema[k])
            floats[1].append(v.detach())
        else:
            ema[k].copy_(v)
    torch._foreach_lerp_(*floats, 1 - decay)  # one kernel per group of tensors on a GPU, not two per tensor


def grown_inputs(weights: dict[str, torch.Tensor], model: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights whose input dimension (dim 1) the model has grown, padded with zeros there.

    New input channels (say layout regions added to the concat) then start with no effect."""
    out = dict(weights)
    for key, value in weights.items():
        target = model.get(key)
        if target is None or not _has_more_inputs(target.shape, value.shape):
            continue
        pad = value.new_zeros(value.shape[0], target.shape[1] - value.shape[1], *value.shape[2:])
        out[key] = torch.cat([value, pad], dim=1)
        log(f"{key}: {value.shape[1]} -> {target.shape[1]} input channels, the new ones zero-weighted")
    return out


def _has_more_inputs(grown: torch.Size, old: torch.Size) -> bool:
    """The same shape but for a larger dim 1 (a layer's input channels)."""
    return (len(grown) == len(old) >= 2 and grown[1] > old[1]
            and grown[:1] == old[:1] and grown[2:] == old[2:])


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors inside tensors, dataclasses, lists, tuples and dicts, moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: to_device(getattr(value, f.name), device) for f in fields(value)})
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def exported_model(path: str, prefixes: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, torch.Tensor], int]:
    """(training config, float32 weights under `prefixes`, training steps) of an exported model and its card,
    to train it further (`--init-from`)."""
    from safetensors.torch import load_file

    try:
        training = json.loads(Path(path).with_suffix(".json").read_text())["training"]
        tensors = load_file(path)
        config, steps = dict(training["config"]), int(training.get("steps", 0))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise KilnError(f"--init-from {path}: not an exported Kiln model with its card ({exc})") from None
    weights = {k: v.float() for k, v in tensors.items() if k.startswith(prefixes)}
    if not weights:
        raise KilnError(f"--init-from {path}: no {' or '.join(prefixes)}* tensors in the file")
    return config, weights, steps


# ---------------------------------------------------------------- the resumable loop


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KilnError(f"{path}: no training state here (run `train` with this --out first)")
    return torch.load(path, map_location="cpu", weights_only=True)


def save_run(trainer: ConcatTrainer, rng: np.random.Generator, gen: torch.Generator, meta: dict[str, Any],
             path: Path) -> None:
    state = trainer.state()
    state.update({"np": json.dumps(rng.bit_generator.state), "torch": gen.get_state(), "meta": json.dumps(meta)})
    atomic_torch_save(state, path)


def resume_run(trainer: ConcatTrainer, path: Path, seed: int) -> tuple[np.random.Generator, torch.Generator]:
    """Data rngs at the saved step (or fresh ones), the trainer loaded when a state exists."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    if path.exists():
        state = load_state(path)
        trainer.load(state)
        rng.bit_generator.state = json.loads(state["np"])
        gen.set_state(state["torch"])
        log(f"resumed at step {trainer.step}")
    return rng, gen


def with_learning_rate(trainer: ConcatTrainer, current: float, wanted: float | None) -> float:
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


def _scale_learning_rate(trainer: ConcatTrainer, base: list[float], factor: float) -> None:
    for group, lr in zip(trainer.opt.param_groups, base):
        group["lr"] = lr * factor


def run_loop(trainer: ConcatTrainer, next_batch: Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor]],
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


# ---------------------------------------------------------------- the checkpoint file


def write_checkpoint(out: str | Path, weights: dict[str, torch.Tensor], ae: nn.Module, config: CheckpointConfig,
                     card: dict[str, Any], dtype: torch.dtype = torch.float16) -> dict[str, Any]:
    """`<out>.safetensors` in the original layout plus the `<out>.json` card; returns the card.

    The CheckpointConfig goes into the file's metadata (`kiln_config`) and the
    card (`checkpoint_config`); the card also carries the preview colours.
    """
    from safetensors.torch import save_file

    from engine.models.loader import CARD_CONFIG_KEY, METADATA_CONFIG_KEY

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in weights.items()}
    tensors.update({AE_PREFIX + k: v.detach().to(dtype).contiguous() for k, v in ae.state_dict().items()})
    config_json = json.dumps(config.to_dict())
    save_file(tensors, f"{out}.safetensors", metadata={METADATA_CONFIG_KEY: config_json, "kind": "checkpoint",
                                                         "card": out.name + ".json", "data": SPEC_VERSION})
    os.chmod(f"{out}.safetensors", 0o644)  # safetensors writes owner-only; shipped models are for everyone
    card = {**card, "kind": "checkpoint", "dtype": str(dtype).removeprefix("torch."), "data": SPEC_VERSION,
            CARD_CONFIG_KEY: config.to_dict()}
    write_card(out, card)
    return card


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a .safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def card_text(card: dict[str, Any]) -> str:
    """A model card as JSON, indented, with each list of numbers on one line (weights stay readable)."""
    text = json.dumps(card, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text) + "\n"


def write_card(out: str | Path, card: dict[str, Any]) -> None:
    """`card` as `<out>.json` (out: the model file's path without its extension)."""
    Path(f"{out}.json").write_text(card_text(card))


def update_card(out: str | Path, **entries: Any) -> dict[str, Any]:
    card = json.loads(Path(f"{out}.json").read_text())
    card.update(entries)
    write_card(out, card)
    return card


def load_autoencoder(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """An exported Kiln autoencoder file and its card (architecture, scale_factor, latent_rgb_factors)."""
    from training.evaluate import load_autoencoder as load_file

    return load_file(path)


# ---------------------------------------------------------------- shapes-world latents


@torch.no_grad()
def encode_scenes(ae: nn.Module, seeds: list[int], cache: Path, batch: int = 64, workers: int = 0) -> torch.Tensor:
    """(N, 4, 16, 16) float16 unscaled latents (posterior mode) of the scenes' 128 px renders, cached.

    Runs where the autoencoder's weights are; the latents come back on the CPU. With `workers`,
    that many processes render the scenes (the GPU encodes faster than one core renders)."""
    import functools
    import multiprocessing

    from training.data import render_batch, to_tensor

    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved["seeds"].tolist() == seeds:
            return saved["latents"]
    parts = [seeds[start:start + batch] for start in range(0, len(seeds), batch)]
    render = functools.partial(render_batch, size=IMAGE_SIZE)
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 0 else None
    chunks, device = [], next(ae.parameters()).device
    try:
        for i, images in enumerate(pool.imap(render, parts) if pool else map(render, parts)):
            chunks.append(ae.encode(to_tensor(images).to(device)).mode().half().cpu())
            if i % 20 == 0:
                log(f"encoded {min((i + 1) * batch, len(seeds))}/{len(seeds)} scenes")
    finally:
        if pool is not None:
            pool.terminate()
    latents = torch.cat(chunks)
    atomic_torch_save({"latents": latents, "seeds": torch.tensor(seeds)}, cache)
    return latents


# ---------------------------------------------------------------- through the engine


EXAMPLE_GRAPHS = Path(__file__).resolve().parents[1] / "resources" / "graphs"


@functools.cache
def _example_file(name: str) -> Any:
    from engine import graph_file

    return graph_file.load(EXAMPLE_GRAPHS / f"{name}.json")  # read once; example_graph hands out copies


@functools.cache
def _node_registry() -> Any:
    from nodes import build_registry

    return build_registry()


def example_graph(name: str, model: str, params: dict[str, Any], checkpoint_node: str = "ckpt") -> Any:
    """A copy of resources/graphs/NAME.json on `model` (its `checkpoint_node`), with `params`
    ({"node.param": value}) set through `main.py run --set`'s own checks (an unknown node or param is a
    KilnError): the evaluator measures the shipped example graphs themselves, not copies."""
    from engine.cli import apply_overrides, resolve_override

    graph = _example_file(name)
    values = {f"{checkpoint_node}.checkpoint": str(Path(model).resolve()) if Path(model).exists() else model,
              **params}
    overrides = []
    for key, value in values.items():
        node, param = key.split(".")
        overrides.append(resolve_override(node, param, graph, _node_registry(), value))
    return apply_overrides(graph, overrides)


def run_image(executor: Any, graph: Any, target: str = "decode") -> np.ndarray:
    """Run a graph; the target's IMAGE as uint8 (H, W, 3); a failed node raises its KilnError."""
    from nodes.image_io import to_uint8_hwc

    result = executor.run(graph, targets=[target])
    if not result.ok:
        raise result.error
    return to_uint8_hwc(result.outputs[target]["image"].pixels)[0]


def engine_executor() -> Any:
    """An Executor over the built-in nodes with a memory-only result cache."""
    from engine.cache import ResultCache
    from engine.executor import Executor
    from engine.spec import EngineSettings
    from nodes import build_registry

    settings = EngineSettings(device="cpu", precision="fp32")
    return Executor(build_registry(), settings, cache=ResultCache.from_settings(settings, disk=False))



# ---------------------------------------------------------------- the trainers' command lines

THREADS_HELP = "torch threads; 1 is fastest while other work shares the CPU (measured 5-10x)"


def add_train_parser(sub: Any, out: str, ae: str, batch: int, lr: float, what: str = "train") -> Any:
    """The `train` subcommand with the flags every diffusion trainer has; callers add their own."""
    tr = sub.add_parser("train", help=f"{what} (resumes from OUT/state.pt when it exists)")
    tr.add_argument("--out", default=out)
    tr.add_argument("--ae", default=ae)
    tr.add_argument("--batch", type=int, default=batch)
    tr.add_argument("--lr", type=float, default=None,
                    help=f"learning rate (a new run's default {lr:g}; a resumed run keeps its own unless given)")
    tr.add_argument("--device", default="cpu", help="where to train: cpu, cuda, cuda:N or mps (the saved state "
                    "is device-free, so a run can move between machines)")
    add_run_arguments(tr)
    return tr


def dispatch(args: Any, train: Callable[[Any], Any], export: Callable[[Any], dict[str, Any]],
             speed: Callable[[Any], dict[str, float]]) -> None:
    """Run the parsed `train`, `export` or `speed` subcommand of a diffusion trainer."""
    if args.command == "export":
        print_export(export(args), args.out)
    elif args.command == "speed":
        print(json.dumps(speed(args)))
    else:
        train(args)


def add_run_arguments(parser: Any, minutes: float = 120.0) -> None:
    """--unet, --steps, --minutes, --save-every: how long a diffusion trainer runs and how often it saves."""
    parser.add_argument("--unet", default=None, help='UNet config changes as JSON, e.g. \'{"model_channels": 32}\'')
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--minutes", type=float, default=minutes)
    parser.add_argument("--save-every", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=0,
                        help="processes that render scenes and make batches ahead of the trainer (for a GPU)")
    parser.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    parser.add_argument("--decay-from", type=float, default=1.0,
                        help="fraction of this call's steps or minutes after which the learning rate falls "
                             "linearly to a tenth (1 = never)")


def schedule_of(args: Any) -> LrSchedule:
    """The learning-rate schedule a `train` command's --warmup and --decay-from ask for."""
    if args.warmup < 0 or not 0.0 <= args.decay_from <= 1.0:
        raise KilnError("--warmup must be >= 0 and --decay-from between 0 and 1")
    return LrSchedule(warmup=args.warmup, decay_from=args.decay_from)


def add_export_arguments(parser: Any, run: str, out: str, eval_steps: int, eval_what: str) -> None:
    """--run, --out, --ae, --weights, --dtype, --eval-n, --eval-steps of an `export` subcommand."""
    parser.add_argument("--run", default=run)
    parser.add_argument("--out", default=out, help="path without extension")
    parser.add_argument("--ae", default=None, help="the autoencoder file (default: the one the run trained on)")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--eval-n", type=int, default=0, help=f"held-out {eval_what} to measure through the engine")
    parser.add_argument("--eval-steps", type=int, default=eval_steps)


def add_speed_parser(sub: Any, batch: int, what: str = "training") -> Any:
    sp = sub.add_parser("speed", help=f"measure {what} steps/s on random latents")
    sp.add_argument("--seconds", type=float, default=60.0)
    sp.add_argument("--batch", type=int, default=batch)
    return sp


def add_threads_argument(*parsers: Any) -> None:
    for parser in parsers:
        parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)


def run_command(args: Any, command: Callable[[Any], None]) -> int:
    """Set the thread count and run; a KilnError becomes one line on stderr and exit status 2."""
    import sys

    torch.set_num_threads(args.threads)
    try:
        command(args)
    except KilnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def print_export(card: dict[str, Any], out: str) -> None:
    """What an export prints: the evaluation when there was one, else the file and its training steps."""
    print(json.dumps(card.get("evaluation") or {"written": f"{out}.safetensors",
                                                "steps": card["training"]["steps"]}, indent=2))
