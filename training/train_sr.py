"""Train the built-in 4x latent super-resolution model (LDM-SR) on the shapes world, and export it.

The model has its own KL autoencoder, f=4 with 3 latent channels, trained by
training/train_autoencoder.py with the `sr-f4` settings below. The UNet
denoises the latent of a 128 px crop (32x32x3) with the matching 32 px crop of
the scene rendered at a quarter of the size, in [-1, 1], concatenated: the
low-resolution picture is exactly at the latent's resolution. Crops come from
renders at 128, 256 and 512 px, so the model sees both the 32 -> 128 and the
128 -> 512 statistics; it has no attention above its 1/8 bottleneck and is
applied convolutionally to whole pictures. A share `p_degrade` of the small
crops is slightly blurred and noised, so that decoded outputs of the base model
(not exact renders) are in-distribution. The crops are rendered and encoded
once into `pool.pt` in the run folder.

    python -m training.train_sr autoencoder --out runs/sr-ae --max-minutes 120
    python -m training.train_sr export-autoencoder --run runs/sr-ae --out runs/sr-ae/kiln-shapes-sr-ae
    python -m training.train_sr train --out runs/sr --ae runs/sr-ae/kiln-shapes-sr-ae.safetensors --minutes 240
    python -m training.train_sr export --run runs/sr --out resources/models/kiln-shapes-sr --eval-n 200
    python -m training.train_sr speed --seconds 60      # steps/s of the UNet trainer on this machine

Speed on the shared 2-core CPU (batch 16, `speed` for 60 s): 1.72 steps/s with
--threads 1 while one other job ran, 0.17 with --threads 2 then. One 128 -> 512
upscale through the engine (15 steps, random weights of this size): 5.1 s with
1 thread, 47 s with 2 threads on the busy CPU.

`autoencoder` passes any further flags on to train_autoencoder (e.g.
--max-minutes, --threads) and resumes like it. `train` resumes from
`state.pt` with the run's saved config. The export writes the original
single-file layout (`model.diffusion_model.*`, `first_stage_model.*`; the
identity conditioner has no weights) with the CheckpointConfig in the
metadata and the JSON card, loadable by engine.models.loader.load_checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.configs import (
    AutoencoderConfig,
    CheckpointConfig,
    ConditionerConfig,
    DiffusionConfig,
    UNetConfig,
)
from engine.models.keymaps import UNET_PREFIX
from training.autoencoder import add_config_flags, train_from_flags
from training.autoencoder_export import export as export_autoencoder_run
from training.command_line import (
    add_export_arguments,
    add_speed_parser,
    add_threads_argument,
    add_train_parser,
    dispatch,
    run_command,
    schedule_of,
)
from training.data import held_out_seeds, object_crop_corner, to_tensor, train_seeds
from training.generators import sr_generator, time_upscale
from training.loop import (
    LOSS_LOG,
    STATE,
    atomic_torch_save,
    load_state,
    log,
    prefetched,
    resume_run,
    run_loop,
    save_run,
    with_learning_rate,
)
from training.metrics import evaluate_super_resolution
from training.model_files import exported_model, load_autoencoder, update_card, write_checkpoint
from training.pipeline import SR_MATCH, SR_STEPS
from training.shapes_world import make_scene, render
from training.trainer import ConcatTrainer, dataclass_from, with_overrides

LOW_CHANNELS = 3

# The SR autoencoder: KL, f=4 (three levels), 3 latent channels, no attention; trained on whole 128 px renders,
# starting from the built-in f=8 autoencoder's tensors where names and shapes agree (its full-resolution levels).
SR_AE_FLAGS = ("--ch", "32", "--ch-mult", "1,1,2", "--num-res-blocks", "1", "--z-channels", "3", "--crop", "128",
               "--init-from", str(Path(__file__).resolve().parents[1] / "resources" / "models" / "kiln-shapes-ae.safetensors"))


@dataclass
class SrTrainConfig:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        in_channels=3 + LOW_CHANNELS, out_channels=3, model_channels=32, num_res_blocks=(1, 1, 2, 2),
        attention_resolutions=(), channel_mult=(1, 1, 2, 4), num_head_channels=32, legacy=False))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(
        linear_start=0.0015, linear_end=0.0155, conditioning_key="concat", prediction="v"))
    factor: int = 4
    crop: int = 128  # pixels of the large crop (32x32 latents at f=4)
    sizes: tuple[int, ...] = (128, 256, 512)  # render sizes the crops are cut from
    size_weights: tuple[float, ...] = (0.5, 0.25, 0.25)
    object_share: float = 0.75  # crops centred near an object (the rest uniform)
    pool: int = 20_000  # crops rendered and encoded once
    p_degrade: float = 0.3
    batch: int = 16
    lr: float = 2e-4
    ema: float = 0.999
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unet"], d["diffusion"] = self.unet.to_dict(), self.diffusion.to_dict()
        return d


def fit_unet(cfg: SrTrainConfig, latent_channels: int) -> UNetConfig:
    """The UNet config for an autoencoder with `latent_channels` (the low-res picture adds 3)."""
    return replace(cfg.unet, in_channels=latent_channels + LOW_CHANNELS, out_channels=latent_channels)


# ---------------------------------------------------------------- the autoencoder (train_autoencoder, sr-f4)


def train_autoencoder_command(out: str, extra: list[str]) -> int:
    """`python -m training.train_autoencoder train` with the sr-f4 flags and the flags given after them."""
    command = ["train", "--out", out, *SR_AE_FLAGS, *extra]
    parser = argparse.ArgumentParser(prog="python -m training.train_sr autoencoder")
    add_config_flags(parser)
    return train_from_flags(parser.parse_args(command[1:]), command)


def export_autoencoder(run: str, out: str, n_eval: int = 200) -> dict[str, Any]:
    export_autoencoder_run(run, out, n_eval)
    return update_card(out, name="Kiln shapes SR autoencoder",
                       description="KL autoencoder, f=4, 3 latent channels, for the 4x super-resolution model "
                                   "(bundled into it; not a model of its own).")


# ---------------------------------------------------------------- data


def sr_crop(scene: Any, size: int, cfg: SrTrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (crop, crop, 3) window of the scene rendered at `size` and the same window of the size/factor render."""
    f, crop = cfg.factor, min(cfg.crop, size)
    high, low = render(scene, size), render(scene, size // f)
    if rng.random() < cfg.object_share:
        y, x = object_crop_corner(rng, scene, crop, size)
    else:
        y, x = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
    y, x = y // f * f, x // f * f  # on the small picture's pixel grid
    return high[y:y + crop, x:x + crop], low[y // f:(y + crop) // f, x // f:(x + crop) // f]


def _pool_key(cfg: SrTrainConfig) -> str:
    keys = ("factor", "crop", "sizes", "size_weights", "object_share", "pool", "seed")
    return json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)


@torch.no_grad()
def build_pool(ae: nn.Module, cfg: SrTrainConfig, cache: Path, chunk: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """(N, C, 32, 32) float16 unscaled latents of the large crops and (N, 32, 32, 3) uint8 small crops, cached."""
    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved["key"] == _pool_key(cfg):
            return saved["latents"], saved["lows"].numpy()
    rng = np.random.default_rng([cfg.seed, 1])  # apart from the training batches' rng
    weights = np.asarray(cfg.size_weights, dtype=np.float64)
    latents, lows = [], []
    for start in range(0, cfg.pool, chunk):
        n = min(chunk, cfg.pool - start)
        sizes = rng.choice(cfg.sizes, size=n, p=weights / weights.sum())
        pairs = [sr_crop(make_scene(seed), int(s), cfg, rng) for seed, s in zip(train_seeds(rng, n), sizes)]
        device = next(ae.parameters()).device
        latents.append(ae.encode(to_tensor(np.stack([p[0] for p in pairs])).to(device)).mode().half().cpu())
        lows.append(np.stack([p[1] for p in pairs]))
        if (start // chunk) % 50 == 0:
            log(f"pool: {start + n}/{cfg.pool} crops encoded")
    pool = torch.cat(latents), np.concatenate(lows)
    atomic_torch_save({"key": _pool_key(cfg), "latents": pool[0], "lows": torch.from_numpy(pool[1])}, cache)
    return pool


def _gaussian_kernel(sigma: float, radius: int = 2) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    return k / k.sum()


def degrade(low: torch.Tensor, rng: np.random.Generator, p: float) -> torch.Tensor:
    """Blur (sigma 0.2-0.7 px) and noise (up to 4/255), then 8-bit rounding, on a share p of (B, 3, h, w)."""
    out = low.clone()
    for i in np.flatnonzero(rng.random(low.shape[0]) < p):
        k = _gaussian_kernel(float(rng.uniform(0.2, 0.7)))
        x = F.pad(low[i:i + 1], (2, 2, 2, 2), mode="replicate")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        x = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
        noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32)) * float(rng.uniform(0, 0.03))
        out[i] = (((x + noise).clamp(-1, 1) + 1) * 127.5).round()[0] / 127.5 - 1
    return out


def sr_batch(cfg: SrTrainConfig, latents: torch.Tensor, lows: np.ndarray, scale: float,
             rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled latents (B, C, 32, 32) and their small crops (B, 3, 32, 32) in [-1, 1]."""
    idx = rng.integers(0, len(latents), size=cfg.batch)
    return latents[idx].float() * scale, degrade(to_tensor(lows[idx]), rng, cfg.p_degrade)


# ---------------------------------------------------------------- commands


def train(args: argparse.Namespace) -> dict[str, float]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE
    start = None
    if state_path.exists():
        meta = json.loads(load_state(state_path)["meta"])
        cfg, ae_path = dataclass_from(SrTrainConfig, meta["config"]), meta["ae"]
        log("resuming with the run's saved config")
    elif args.init_from:
        config, weights, steps = exported_model(args.init_from, (UNET_PREFIX,))
        cfg = dataclass_from(SrTrainConfig, {**config, "pool": args.pool, "batch": args.batch, "lr": args.lr or SrTrainConfig.lr})
        start, ae_path = (weights, steps), args.ae
    else:
        cfg = SrTrainConfig(pool=args.pool, batch=args.batch, lr=args.lr or SrTrainConfig.lr, p_degrade=args.p_degrade)
        cfg.unet = with_overrides(cfg.unet, args.unet)
        ae_path = args.ae
    ae, card = load_autoencoder(ae_path)
    cfg.unet = fit_unet(cfg, ae.cfg.embed_dim)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    latents, lows = build_pool(ae.to(args.device), cfg, out / "pool.pt")
    scale = float(card.get("scale_factor") or 1.0 / latents.float().std().item())
    trainer = ConcatTrainer(cfg.unet, cfg.diffusion, None, cfg.lr, cfg.ema, cfg.seed, args.device)
    if start is not None:
        trainer.start_from(*start, args.init_from)
    rng, gen = resume_run(trainer, state_path, cfg.seed)
    cfg.lr = with_learning_rate(trainer, cfg.lr, args.lr)
    meta = {"config": cfg.to_dict(), "ae": str(ae_path), "scale": scale}
    batches = prefetched(lambda r: sr_batch(cfg, latents, lows, scale, r), (cfg.seed, trainer.step), args.workers)
    return run_loop(trainer, batches, rng, gen, lambda: save_run(trainer, rng, gen, meta, state_path), args.steps,
                    args.minutes, args.save_every, loss_log=out / LOSS_LOG, schedule=schedule_of(args))


def checkpoint_config(cfg: SrTrainConfig, ae_cfg: AutoencoderConfig, scale: float) -> CheckpointConfig:
    return CheckpointConfig(fit_unet(cfg, ae_cfg.embed_dim), ae_cfg, replace(cfg.diffusion, scale_factor=scale),
                            ConditionerConfig("identity", {}))


def export(run: str, out: str, ae_path: str | None = None, weights: str = "ema", dtype: str = "float16",
           eval_n: int = 0, eval_steps: int = SR_STEPS) -> dict[str, Any]:
    """Write the model file and card from a run; with eval_n > 0, measure 32 -> 128 through the engine."""
    state = load_state(Path(run) / STATE)
    meta = json.loads(state["meta"])
    cfg = dataclass_from(SrTrainConfig, meta["config"])
    ae, ae_card = load_autoencoder(ae_path or meta["ae"])
    config = checkpoint_config(cfg, ae.cfg, float(meta["scale"]))
    card = {"name": "Kiln shapes 4x super-resolution",
            "description": "4x latent super-resolution (LDM-SR): the small picture in [-1, 1] concatenated to the "
                           "latent of its own f=4 autoencoder; 32 -> 128 px and 128 -> 512 px.",
            "latent_rgb_factors": ae_card.get("latent_rgb_factors"),
            "latent_rgb_network": ae_card.get("latent_rgb_network"),
            "training": {"command": f"python -m training.train_sr train --out {run}",
                         "steps": int(state["step"]), "crops_seen": int(state["step"]) * cfg.batch,
                         "weights": weights, "config": cfg.to_dict(), "autoencoder": str(ae_path or meta["ae"])}}
    tensors = state["ema"] if weights == "ema" else state["weights"]
    card = write_checkpoint(out, tensors, ae, config, card, getattr(torch, dtype))
    if eval_n > 0:
        generate = sr_generator(f"{out}.safetensors", steps=eval_steps, match_iterations=SR_MATCH)
        result = evaluate_super_resolution(generate, held_out_seeds(eval_n), model_only=generate.model_only)
        result["seconds_128_to_512"] = round(time_upscale(generate), 2)
        result["command"] = (f"python -m training.evaluate super-resolution --model {out}.safetensors "
                             f"--n {eval_n} --steps {eval_steps} --time-512")
        card = update_card(out, evaluation=result)
    return card


def speed(args: argparse.Namespace) -> dict[str, float]:
    """Steps/s of the real trainer and batch making, on random latents (no autoencoder needed)."""
    cfg = SrTrainConfig(batch=args.batch)
    cfg.unet = fit_unet(cfg, 3)
    n, side = 512, cfg.crop // cfg.factor
    latents = torch.randn(n, 3, side, side).half()
    lows = np.random.default_rng(0).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    trainer = ConcatTrainer(cfg.unet, cfg.diffusion, None, cfg.lr, cfg.ema, cfg.seed)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    params = sum(p.numel() for p in trainer.unet.parameters())
    log(f"{params / 1e6:.2f} M parameters, batch {cfg.batch} of {side}x{side} latents, "
        f"{torch.get_num_threads()} threads")
    return run_loop(trainer, lambda r: sr_batch(cfg, latents, lows, 1.0, r), rng, gen, lambda: None,
                    10**9, args.seconds / 60, float("inf"), log_every=5)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_sr", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ae = sub.add_parser("autoencoder", help="train the f=4 autoencoder (train_autoencoder with the sr-f4 flags)")
    ae.add_argument("--out", default="runs/sr-ae")
    ea = sub.add_parser("export-autoencoder", help="write the SR autoencoder file the UNet trains on")
    ea.add_argument("--run", default="runs/sr-ae")
    ea.add_argument("--out", default="runs/sr-ae/kiln-shapes-sr-ae", help="path without extension")
    ea.add_argument("--n", type=int, default=200, help="held-out images for the PSNR in its card")
    tr = add_train_parser(sub, "runs/sr", "runs/sr-ae/kiln-shapes-sr-ae.safetensors", SrTrainConfig.batch,
                          SrTrainConfig.lr, "train the UNet")
    tr.add_argument("--pool", type=int, default=SrTrainConfig.pool)
    tr.add_argument("--init-from", default=None, metavar="MODEL.safetensors",
                    help="start a new run's UNet from an exported SR model and its card (e.g. for a retrained "
                         "autoencoder of the same shape)")
    tr.add_argument("--p-degrade", type=float, default=SrTrainConfig.p_degrade)
    ex = sub.add_parser("export", help="write the model file and its card from a run")
    add_export_arguments(ex, "runs/sr", "resources/models/kiln-shapes-sr", SR_STEPS, "scenes")
    sp = add_speed_parser(sub, SrTrainConfig.batch, "UNet training")
    add_threads_argument(ea, tr, ex, sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if args.command == "autoencoder":
        return train_autoencoder_command(args.out, extra)
    if extra:
        _parser().error(f"unrecognized arguments: {' '.join(extra)}")
    return run_command(args, _run_command)


def _run_command(args: argparse.Namespace) -> None:
    if args.command == "export-autoencoder":
        print(json.dumps(export_autoencoder(args.run, args.out, args.n)["evaluation"], indent=2))
    else:
        dispatch(args, train, lambda a: export(a.run, a.out, a.ae, a.weights, a.dtype, a.eval_n, a.eval_steps), speed)


if __name__ == "__main__":
    sys.exit(main())
