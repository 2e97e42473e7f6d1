"""Training the built-in KL autoencoders (f=8, 4 latent channels; the SR model's f=4 one) on the shapes world.

Training sees fresh 128 px renders of training seeds (or crops of them, with
--crop); loss L1 + L2 + a small KL term, Adam, EMA of the weights. Every few
minutes it writes an atomic, resumable checkpoint (model, EMA, optimiser, step;
the data and noise of step n are functions of (seed, n), so a resumed run sees
what an uninterrupted one would) and measures PSNR on a fixed held-out set.

Why whole images rather than crops: the original architecture normalises with
GroupNorm(32 groups), so at 32 channels every channel is normalised on its own
over the picture, and the decoder's last norm erases each channel's mean. Colours
then have to be coded in the spatial statistics of the features, which depend on
how much of the picture is background: a model trained on object-centred crops
(cheap steps) got shapes right but background and object colours wrong on whole
images (15 dB). The cheap crop phase is still a useful start.

The command lines are training/train_autoencoder.py and train_sr.py's `autoencoder`;
the export is training/autoencoder_export.py.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.autoencoder import AutoencoderKL
from engine.models.configs import AutoencoderConfig
from training.analyser import psnr
from training.data import crop_batch, held_out_seeds, render_batch
from training.loop import LOSS_LOG, Progress, atomic_torch_save, log
from training.metrics import reconstruct
from training.model_files import load_autoencoder

CHECKPOINT = "checkpoint.pt"
EVAL_LOG = "evals.jsonl"


@dataclass
class TrainConfig:
    out: str = "runs/ae"
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 1, 2, 4)
    num_res_blocks: int = 1
    z_channels: int = 4
    crop: int = 128  # whole images: see the module docstring on why crops hurt colours
    batch: int = 4
    object_share: float = 0.75  # crops centred near an object (the rest uniform)
    lr: float = 1e-3
    warmup: int = 100
    l2_weight: float = 1.0
    kl_weight: float = 1e-7
    ema_decay: float = 0.998
    grad_clip: float = 1.0
    logvar_init: float = -6.0  # start the posterior narrow (std 0.05) so early decodes see the signal
    max_steps: int = 1_000_000
    max_minutes: float = 0.0  # 0: run until stopped
    eval_every_s: float = 1200.0
    checkpoint_every_s: float = 300.0
    eval_n: int = 32
    log_every: int = 25
    seed: int = 0
    threads: int = 0  # 0: 2 threads while the machine has a core to spare, else 1 (re-checked as it runs)
    init_from: str = ""  # an autoencoder file: a new run starts from its tensors of the same name and shape
    device: str = "cpu"  # cpu, cuda, cuda:N or mps; checkpoints load anywhere, so a run can move


def autoencoder_config(tc: TrainConfig) -> AutoencoderConfig:
    return AutoencoderConfig(
        kind="kl", embed_dim=tc.z_channels, z_channels=tc.z_channels, double_z=True, resolution=128,
        ch=tc.ch, ch_mult=tuple(tc.ch_mult), num_res_blocks=tc.num_res_blocks,
        attn_resolutions=(), attn_type="none",
    )


# ---------------------------------------------------------------- one step


def loss_terms(model: AutoencoderKL, x: torch.Tensor, tc: TrainConfig, generator: torch.Generator
               ) -> dict[str, torch.Tensor]:
    """x: (B, 3, H, W) in [-1, 1]. Reconstruction through a posterior sample."""
    posterior = model.encode(x)
    rec = model.decode(posterior.sample(generator))
    l1 = (rec - x).abs().mean()
    l2 = F.mse_loss(rec, x)
    kl = posterior.kl().mean()
    total = l1 + tc.l2_weight * l2 + tc.kl_weight * kl
    return {"loss": total, "l1": l1, "l2": l2, "kl": kl}


def learning_rate(tc: TrainConfig, step: int) -> float:
    return tc.lr * min(1.0, (step + 1) / max(tc.warmup, 1))


def train_step(model: AutoencoderKL, opt: torch.optim.Optimizer, tc: TrainConfig, step: int
               ) -> dict[str, float]:
    """One optimiser step on the batch of `step` (a function of the seed and the step)."""
    rng = np.random.default_rng([tc.seed, step])
    x = crop_batch(rng, tc.batch, tc.crop, object_share=tc.object_share).to(next(model.parameters()).device)
    generator = torch.Generator().manual_seed(tc.seed * 1_000_003 + step)
    for group in opt.param_groups:
        group["lr"] = learning_rate(tc, step)
    terms = loss_terms(model, x, tc, generator)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def init_posterior(model: AutoencoderKL, logvar: float) -> None:
    """Make the initial log-variance output a constant: the default (~0) buries the mean in noise."""
    half = model.quant_conv.out_channels // 2
    model.quant_conv.weight[half:].zero_()
    model.quant_conv.bias[half:].fill_(logvar)


@torch.no_grad()
def update_ema(ema: AutoencoderKL, model: AutoencoderKL, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)


def mean_psnr(model: AutoencoderKL, images: np.ndarray) -> float:
    """Mean over images of the per-image PSNR (dB, peak 255)."""
    recs = reconstruct(model, images)
    return float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(images, recs)]))


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    atomic_torch_save(state, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def config_from_json(text: str, **overrides) -> TrainConfig:
    data = json.loads(text)
    known = {f.name for f in fields(TrainConfig)}
    tc = TrainConfig(**{k: v for k, v in data.items() if k in known})
    tc.ch_mult = tuple(tc.ch_mult)
    for key, value in overrides.items():
        setattr(tc, key, value)
    return tc


def copy_matching_tensors(model: nn.Module, path: str) -> int:
    """Start from another autoencoder: every tensor whose name and shape agree is copied (e.g. the full-
    resolution levels of the f=8 model into an f=4 one of the same width). Returns how many were."""
    source = load_autoencoder(path)[0].state_dict()
    own = model.state_dict()
    shared = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    log(f"init from {path}: {len(shared)} of {len(own)} tensors")
    return len(shared)


# ---------------------------------------------------------------- the loop


class Trainer:
    def __init__(self, tc: TrainConfig):
        self.tc = tc
        self.dir = Path(tc.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(tc.seed)
        self.model = AutoencoderKL(autoencoder_config(tc))
        init_posterior(self.model, tc.logvar_init)
        if tc.init_from:
            copy_matching_tensors(self.model, tc.init_from)
        self.model.to(tc.device)
        if torch.device(tc.device).type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=tc.lr, betas=(0.9, 0.99))
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions
        self.eval_images = render_batch(held_out_seeds(tc.eval_n), 128)

    def resume(self) -> bool:
        path = self.dir / CHECKPOINT
        if not path.exists():
            return False
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        return True

    def checkpoint(self) -> None:
        state = {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                 "step": self.step, "elapsed": self.elapsed, "config": json.dumps(asdict(self.tc)),
                 "autoencoder": json.dumps(autoencoder_config(self.tc).to_dict())}
        save_checkpoint(self.dir / CHECKPOINT, state)

    def evaluate(self) -> dict:
        record = {"step": self.step, "elapsed_s": round(self.elapsed, 1),
                  "psnr": round(mean_psnr(self.model, self.eval_images), 3),
                  "ema_psnr": round(mean_psnr(self.ema, self.eval_images), 3), "n": len(self.eval_images)}
        self.model.train()
        with open(self.dir / EVAL_LOG, "a") as f:
            f.write(json.dumps(record) + "\n")
        log(f"eval step={record['step']} t={record['elapsed_s']:.0f}s psnr={record['psnr']:.2f} dB "
            f"ema_psnr={record['ema_psnr']:.2f} dB (n={record['n']} held-out images at 128 px)")
        return record

    def run(self) -> None:
        tc = self.tc
        self.model.train()
        last_ckpt = last_eval = time.monotonic()
        session_start, window_start, window = time.monotonic(), time.monotonic(), []
        progress = Progress(self.step, tc.max_steps, tc.max_minutes * 60, self.dir / LOSS_LOG)
        while self.step < tc.max_steps:
            if tc.max_minutes and time.monotonic() - session_start > tc.max_minutes * 60:
                break
            if self.step % 50 == 0:
                torch.set_num_threads(thread_count(tc.threads))
            t0 = time.monotonic()
            window.append(train_step(self.model, self.opt, tc, self.step))
            update_ema(self.ema, self.model, tc.ema_decay if self.step >= tc.warmup else 0.0)
            self.step += 1
            self.elapsed += time.monotonic() - t0
            progress.update(self.step, window[-1]["loss"])
            if self.step % tc.log_every == 0:
                progress.clear()
                seconds = time.monotonic() - window_start
                self._log_progress(window, seconds)
                progress.record(self.step, float(np.mean([w["loss"] for w in window])), len(window) / seconds)
                window, window_start = [], time.monotonic()
            if time.monotonic() - last_eval > tc.eval_every_s:
                self.evaluate()
                last_eval = time.monotonic()
            if time.monotonic() - last_ckpt > tc.checkpoint_every_s:
                self.checkpoint()
                last_ckpt = time.monotonic()
        progress.clear()
        self.checkpoint()
        self.evaluate()

    def _log_progress(self, window: list[dict], seconds: float) -> None:
        mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
        pixels = len(window) * self.tc.batch * self.tc.crop**2
        log(f"step {self.step} t={self.elapsed:.0f}s loss={mean['loss']:.4f} l1={mean['l1']:.4f} "
            f"l2={mean['l2']:.5f} kl={mean['kl']:.1f} lr={learning_rate(self.tc, self.step):.2e} "
            f"px/s={pixels / max(seconds, 1e-9):.0f} threads={torch.get_num_threads()}")


def thread_count(wanted: int) -> int:
    """`wanted`, or for 0 a choice by load: on a busy machine a second thread waits more than it works."""
    if wanted > 0:
        return wanted
    others = os.getloadavg()[0] - torch.get_num_threads()
    return 2 if others < 0.8 else 1


# ---------------------------------------------------------------- the `train` command


def _int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def flag_text(value: Any) -> str:
    """A config value as its command-line flag takes it (tuples comma-separated)."""
    return ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--max-minutes, --ch-mult 1,2,4, ...), None when not given."""
    for f in fields(TrainConfig):
        default = getattr(TrainConfig, f.name)
        kind = _int_tuple if isinstance(default, tuple) else type(default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None,
                            help=f"default {flag_text(default)}")


def train_from_flags(args: argparse.Namespace, command: list[str]) -> int:
    """Train as the parsed config flags ask: a new run, or the run in --out resumed with the flags given now
    (e.g. --lr) taking over its saved config. `command` (the arguments after the module) goes into the log,
    where the export finds each session's command."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    saved = Path(given.get("out", TrainConfig.out)) / CHECKPOINT
    if saved.exists():
        tc = config_from_json(load_checkpoint(saved)["config"], **given)
    else:
        tc = TrainConfig(**given)
    torch.set_num_threads(thread_count(tc.threads))
    trainer = Trainer(tc)
    resumed = trainer.resume()
    start = f"resumed at step {trainer.step}" if resumed else "new run"
    log(f"{start}; config {json.dumps(asdict(tc))}")
    log("command: python -m training.train_autoencoder " + " ".join(command))
    trainer.run()
    return 0
