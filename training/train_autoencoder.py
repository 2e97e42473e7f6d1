"""Train the built-in KL autoencoder (f=8, 4 latent channels) on the shapes world, and export it.

    python -m training.train_autoencoder train --out runs/ae
    python -m training.train_autoencoder export --run runs/ae

Training sees fresh 128 px renders of training seeds (or crops of them, with
--crop); loss L1 + L2 + a small KL term, Adam, EMA of the weights. Every few
minutes it writes an atomic, resumable checkpoint (model, EMA, optimiser, step;
the data and noise of step n are functions of (seed, n), so a resumed run sees
what an uninterrupted one would) and measures PSNR on a fixed held-out set.
Running `train` again with the same --out resumes; flags given then override
the saved config (e.g. a lower --lr).

Why whole images rather than crops: the original architecture normalises with
GroupNorm(32 groups), so at 32 channels every channel is normalised on its own
over the picture, and the decoder's last norm erases each channel's mean. Colours
then have to be coded in the spatial statistics of the features, which depend on
how much of the picture is background: a model trained on object-centred crops
(cheap steps) got shapes right but background and object colours wrong on whole
images (15 dB). The cheap crop phase is still a useful start.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.autoencoder import AutoencoderKL
from engine.models.configs import AutoencoderConfig
from training.common import LOSS_LOG, Progress, write_card
from training.data import crop_batch, held_out_seeds, render_batch, to_tensor, to_uint8, train_seeds
from training.shapes_world import SPEC_VERSION

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


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def reconstruct(model: AutoencoderKL, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """uint8 (N, S, S, 3) -> uint8 reconstructions through the posterior mode."""
    model.eval()
    device = next(model.parameters()).device
    out = [to_uint8(model.decode(model.encode(to_tensor(images[i : i + batch]).to(device)).mode()).cpu())
           for i in range(0, len(images), batch)]
    return np.concatenate(out)


def mean_psnr(model: AutoencoderKL, images: np.ndarray) -> float:
    """Mean over images of the per-image PSNR (dB, peak 255)."""
    from training.analyser import psnr

    recs = reconstruct(model, images)
    return float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(images, recs)]))


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    from training.common import load_autoencoder

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


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, flush=True)


# ---------------------------------------------------------------- export


@torch.no_grad()
def latent_statistics(model: AutoencoderKL, n: int = 256, seed: int = 12345, scale: float | None = None,
                      size: int = 128) -> tuple[float, np.ndarray, np.ndarray]:
    """scale_factor = 1 / std of training latents (unless given), and (scaled latents, pixels) per latent cell."""
    images = render_batch(train_seeds(np.random.default_rng(seed), n), size)
    model.eval()
    batch = max(1, 32 * 128 * 128 // (size * size))
    latents = torch.cat([model.encode(to_tensor(images[i : i + batch])).mode() for i in range(0, n, batch)])
    scale = 1.0 / float(latents.std()) if scale is None else scale
    f = size // latents.shape[-1]
    pixels01 = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
    cells = F.avg_pool2d(pixels01, f)  # (N, 3, h, w): the colour each latent cell stands for
    x = (latents * scale).permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).numpy()
    y = cells.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    return scale, x, y


def fit_latent_rgb(x: np.ndarray, y: np.ndarray) -> list[list[float]]:
    """Least squares rgb01 = x @ W + b; returns C rows of W then the bias row (preview.py's format)."""
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)  # (C + 1, 3)
    return [[round(float(v), 5) for v in row] for row in solution]


def fit_latent_rgb_network(x: np.ndarray, y: np.ndarray, hidden: int = 32, steps: int = 3000, seed: int = 0
                           ) -> dict[str, list]:
    """rgb01 = silu(x @ w1 + b1) @ w2 + b2 by Adam on mean squared error (preview.py's network form).

    For latents whose colour is not linear: on held-out scenes the 4x SR autoencoder's preview error fell
    from 26 to 14 levels of 255 (RMS against the pixels each latent cell stands for), the base
    autoencoder's from 25 to 19."""
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    first, second = nn.Linear(inputs.shape[1], hidden), nn.Linear(hidden, 3)
    for layer in (first, second):
        nn.init.normal_(layer.weight, std=layer.in_features ** -0.5, generator=generator)
        nn.init.zeros_(layer.bias)
    params = [*first.parameters(), *second.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    with torch.enable_grad():
        for step in range(steps):
            if step == steps * 2 // 3:
                optimizer.param_groups[0]["lr"] = 2e-3
            pick = torch.randint(0, len(inputs), (4096,), generator=generator)
            loss = F.mse_loss(second(F.silu(first(inputs[pick]))), targets[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {"w1": _rounded(first.weight.T), "b1": _rounded(first.bias), "w2": _rounded(second.weight.T),
            "b2": _rounded(second.bias)}


def _rounded(tensor: torch.Tensor) -> list:
    return np.round(tensor.detach().numpy().astype(np.float64), 5).tolist()


def fit_preview(path: str, n: int = 256, size: int = 128) -> dict[str, list]:
    """Fit the preview network of a shipped model file's autoencoder (its card's scale) into its card."""
    from engine.models.loader import load_checkpoint as load_model
    from training.common import load_autoencoder, update_card

    stem = str(Path(path).with_suffix(""))
    card = json.loads(Path(f"{stem}.json").read_text())
    if card.get("kind") == "autoencoder":
        model, scale = load_autoencoder(path)[0], float(card["scale_factor"])
    else:
        first_stage = load_model(path, "cpu").first_stage
        model, scale = first_stage.model, first_stage.scale_factor
    _, x, y = latent_statistics(model, n, scale=scale, size=size)
    network = fit_latent_rgb_network(x, y)
    update_card(stem, latent_rgb_network=network,
                latent_rgb_network_note="rgb01 = silu(scaled_latent @ w1 + b1) @ w2 + b2, fitted by: python -m "
                                        f"training.train_autoencoder fit-preview {path} --n {n} --size {size}")
    return network


def state_dict_for_file(model: AutoencoderKL, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The original single-file layout: every key under `first_stage_model.`."""
    state = model.state_dict()
    return {f"first_stage_model.{k}": v.detach().to(dtype).contiguous() for k, v in state.items()}


def export(run: str, out: str = "resources/models/kiln-shapes-ae", n_eval: int = 500, source: str = "best",
           n_stats: int = 256, preview_steps: int = 3000) -> dict:
    """Write `<out>.safetensors` and the `<out>.json` card from a training run."""
    from safetensors.torch import save_file

    from training.evaluate import evaluate_autoencoder

    state = load_checkpoint(Path(run) / CHECKPOINT)
    tc = config_from_json(state["config"])
    model = AutoencoderKL(autoencoder_config(tc))
    eval_images = render_batch(held_out_seeds(tc.eval_n), 128)
    candidates = {}
    for name in ("model", "ema"):
        model.load_state_dict(state[name])
        candidates[name] = mean_psnr(model, eval_images)
    chosen = max(candidates, key=candidates.get) if source == "best" else source
    model.load_state_dict(state[chosen])
    fp32 = evaluate_autoencoder(lambda im: reconstruct(model, im), held_out_seeds(n_eval))
    half = copy.deepcopy(model).half().float()
    fp16 = evaluate_autoencoder(lambda im: reconstruct(half, im), held_out_seeds(n_eval))
    use_fp16 = fp32["psnr_mean"] - fp16["psnr_mean"] < 0.1
    final, result = (half, fp16) if use_fp16 else (model, fp32)
    scale, x, y = latent_statistics(final, n_stats)
    rgb = fit_latent_rgb(x, y)
    card = _card(tc, state, chosen, candidates, scale, rgb, result, fp32, fp16, use_fp16, n_eval, out)
    card["latent_rgb_network"] = fit_latent_rgb_network(x, y, steps=preview_steps)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file(state_dict_for_file(final, torch.float16 if use_fp16 else torch.float32), f"{out}.safetensors",
              metadata={"kind": "autoencoder", "card": Path(out).name + ".json", "data": SPEC_VERSION})
    write_card(out, card)
    os.chmod(f"{out}.safetensors", 0o644)  # safetensors writes 0600; the weights ship to everyone
    return card


def training_sessions(run: str) -> list[dict]:
    """[{"from_step", "command"}] per training session, read from the run's log.txt (empty without one)."""
    log_path = Path(run) / "log.txt"
    if not log_path.is_file():
        return []
    sessions, start = [], 0
    for line in log_path.read_text().splitlines():
        if " new run;" in line:
            start = 0
        elif " resumed at step " in line:
            start = int(line.split(" resumed at step ")[1].split(";")[0])
        elif " command: " in line:
            sessions.append({"from_step": start, "command": line.split(" command: ", 1)[1]})
    return sessions


def _card(tc, state, chosen, candidates, scale, rgb, result, fp32, fp16, use_fp16, n_eval, out) -> dict:
    steps = int(state["step"])
    return {
        "name": "Kiln shapes autoencoder",
        "description": "KL autoencoder, f=8, 4 latent channels, trained on the shapes world (128 px).",
        "kind": "autoencoder",
        "architecture": autoencoder_config(tc).to_dict(),
        "scale_factor": round(scale, 6),
        "latent_rgb_factors": rgb,
        "latent_rgb_note": "rows: latent channels then bias; rgb in [0, 1] = scaled_latent @ W + b",
        "dtype": "float16" if use_fp16 else "float32",
        "data": SPEC_VERSION,
        "training": {
            "final_config_command": f"python -m training.train_autoencoder train --out {tc.out} "
                                    + " ".join(f"--{k.replace('_', '-')} {_arg(v)}"
                                               for k, v in asdict(tc).items() if k != "out"),
            "sessions": training_sessions(tc.out),
            "steps": steps,
            "train_seconds": round(float(state["elapsed"]), 1),
            "weights": "EMA" if chosen == "ema" else "raw",
            "psnr_by_weights_on_eval_set": {k: round(v, 3) for k, v in candidates.items()},
        },
        "evaluation": {
            "psnr_db": round(result["psnr_mean"], 3),
            "psnr_db_fp32": round(fp32["psnr_mean"], 3),
            "psnr_db_fp16": round(fp16["psnr_mean"], 3),
            "psnr_db_min": round(result["psnr_min"], 3),
            "scene_exact": result["scene_exact"],
            "scene_exact_note": "share of reconstructions whose scene the analyser reads back exactly",
            "n": n_eval,
            "seeds": f"{held_out_seeds(1)[0]}..{held_out_seeds(n_eval)[-1]}",
            "command": f"python -m training.evaluate autoencoder --model {out}.safetensors --n {n_eval}",
        },
    }


def _int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _arg(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_autoencoder",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train (resumes from OUT/checkpoint.pt when it exists)")
    for f in fields(TrainConfig):
        default = getattr(TrainConfig, f.name)
        kind = _int_tuple if isinstance(default, tuple) else type(default)
        train.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None,
                           help=f"default {_arg(default)}")
    exp = sub.add_parser("export", help="write the weights and the JSON card from a run")
    exp.add_argument("--run", default="runs/ae")
    exp.add_argument("--out", default="resources/models/kiln-shapes-ae", help="path without extension")
    exp.add_argument("--n", type=int, default=500, help="held-out images for the PSNR in the card")
    exp.add_argument("--weights", choices=("best", "ema", "model"), default="best")
    fit = sub.add_parser("fit-preview", help="fit the live preview's latent -> RGB network into a model's card")
    fit.add_argument("model", help="a shipped .safetensors file with its .json card beside it")
    fit.add_argument("--n", type=int, default=256, help="training scenes to fit on")
    fit.add_argument("--size", type=int, default=128, help="their size in pixels (the size the model works at)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "fit-preview":
        fit_preview(args.model, args.n, args.size)
        return 0
    if args.command == "export":
        card = export(args.run, args.out, args.n, args.weights)
        print(json.dumps(card["evaluation"], indent=2))
        return 0
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    saved = Path(given.get("out", TrainConfig.out)) / CHECKPOINT
    if saved.exists():  # resume: the run's config, with any flags given now (e.g. --lr) taking over
        tc = config_from_json(load_checkpoint(saved)["config"], **given)
    else:
        tc = TrainConfig(**given)
    torch.set_num_threads(thread_count(tc.threads))
    trainer = Trainer(tc)
    resumed = trainer.resume()
    start = f"resumed at step {trainer.step}" if resumed else "new run"
    log(f"{start}; config {json.dumps(asdict(tc))}")
    log("command: python -m training.train_autoencoder " + " ".join(sys.argv[1:] if argv is None else argv))
    trainer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
