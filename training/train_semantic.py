"""Train the built-in semantic synthesis model (label map -> image) on the shapes world, and export it.

The 21-class label map is one-hot encoded, brought to the 16x16 latent grid by
the paper's SpatialRescaler (three bilinear halvings, then a learnt 1x1 channel
mapper) and concatenated to the UNet's input. The latents are those of the
base autoencoder (f=8, 4 channels at 128 px), encoded once and cached. A share
`p_uncond` of the maps is dropped (all-zero one-hot, so all-zero concat
channels: the mapper has no bias) so that classifier-free guidance works with
Conditioning Zero Out as the negative.

    python -m training.train_semantic train --out runs/semantic --ae resources/models/kiln-shapes-ae.safetensors \
        --minutes 240
    python -m training.train_semantic export --run runs/semantic --out resources/models/kiln-shapes-semantic \
        --eval-n 200
    python -m training.train_semantic speed --seconds 60     # steps/s of this trainer on this machine

Speed on the shared 2-core CPU (batch 32, `speed` for 60 s): 0.90 steps/s with
--threads 1 while one other job ran; 0.07-0.17 steps/s with --threads 2 then
(OpenMP threads wait for each other on a busy CPU); use 2 threads only on an
idle machine. The latent cache has train_ldm's format: runs/ldm/latents.pt
(same autoencoder, same --scenes) can be copied to OUT/latents.pt to skip
encoding.

Resumable: the run folder keeps `state.pt` (weights, EMA, optimiser, step, data
rng), written atomically every `--save-every` seconds; rerunning `train` with
the same --out resumes with the run's saved config. The export writes the
original single-file layout (`model.diffusion_model.*`, `first_stage_model.*`,
`cond_stage_model.channel_mapper.weight`) with the CheckpointConfig in the
file's metadata and in a JSON card, so `engine.models.loader.load_checkpoint`
loads it like any user checkpoint.

The pieces shared with training/train_sr.py and train_ldm.py (the
concat-conditioned trainer, its resumable loop and the checkpoint writer) live
in the training library modules trainer, loop and model_files.
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

from engine.models.conditioners import SpatialConditioner
from engine.models.configs import (
    AutoencoderConfig,
    CheckpointConfig,
    ConditionerConfig,
    DiffusionConfig,
    UNetConfig,
)
from training.command_line import (
    add_export_arguments,
    add_speed_parser,
    add_threads_argument,
    add_train_parser,
    dispatch,
    run_command,
    schedule_of,
)
from training.data import encode_scenes, held_out_seeds
from training.generators import semantic_generator
from training.loop import (
    LOSS_LOG,
    STATE,
    load_state,
    log,
    prefetched,
    resume_run,
    run_loop,
    save_run,
    with_learning_rate,
)
from training.metrics import evaluate_semantic
from training.model_files import load_autoencoder, update_card, write_checkpoint
from training.pipeline import IMAGE_SIZE
from training.shapes_world import NUM_CLASSES, make_scene, semantic_map
from training.trainer import (
    LATENT_CHANNELS,
    ConcatTrainer,
    dataclass_from,
    with_overrides,
)

# ---------------------------------------------------------------- config


@dataclass
class SemanticTrainConfig:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        in_channels=LATENT_CHANNELS + 16, out_channels=LATENT_CHANNELS, model_channels=32, num_res_blocks=2,
        attention_resolutions=(2, 4), channel_mult=(1, 2, 5), num_head_channels=32, legacy=False))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(
        linear_start=0.0015, linear_end=0.0195, conditioning_key="concat", prediction="v"))
    map_channels: int = 16  # the channel mapper's output: concat channels
    n_stages: int = 3  # bilinear halvings: 128 px map -> 16x16 latent grid
    scenes: int = 40_000  # training scenes encoded once to latents
    batch: int = 32
    lr: float = 2e-4
    ema: float = 0.998
    p_uncond: float = 0.1  # maps dropped for classifier-free guidance
    seed: int = 0

    def conditioner(self) -> ConditionerConfig:
        return ConditionerConfig("spatial", {"n_stages": self.n_stages, "method": "bilinear", "multiplier": 0.5,
                                             "in_channels": NUM_CLASSES, "out_channels": self.map_channels,
                                             "bias": False})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unet"], d["diffusion"] = self.unet.to_dict(), self.diffusion.to_dict()
        return d


# ---------------------------------------------------------------- semantic data


def rescale_one_hot(labels: torch.Tensor, n_stages: int) -> torch.Tensor:
    """(B, H, W) class ids -> (B, 21, H/2^n, W/2^n) class fractions: SpatialRescaler before its mapper."""
    x = F.one_hot(labels.long(), NUM_CLASSES).permute(0, 3, 1, 2).float()
    for _ in range(n_stages):
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear")
    return x


def semantic_batch(cfg: SemanticTrainConfig, latents: torch.Tensor, seeds: list[int], scale: float,
                   rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled latents (B, 4, 16, 16) and their maps' class fractions (B, 21, 16, 16), some dropped."""
    idx = rng.integers(0, len(seeds), size=cfg.batch)
    x0 = latents[idx].float() * scale
    labels = np.stack([semantic_map(make_scene(seeds[i]), IMAGE_SIZE) for i in idx])
    fractions = rescale_one_hot(torch.from_numpy(labels), cfg.n_stages)
    dropped = torch.from_numpy(rng.random(cfg.batch) < cfg.p_uncond)
    fractions[dropped] = 0.0
    return x0, fractions


class SemanticTrainer(ConcatTrainer):
    """The UNet plus the SpatialRescaler whose channel mapper learns with it."""

    def __init__(self, cfg: SemanticTrainConfig, device: str = "cpu"):
        self.cfg = cfg
        unet = replace(cfg.unet, in_channels=LATENT_CHANNELS + cfg.map_channels)
        torch.manual_seed(cfg.seed)  # the channel mapper is built before the UNet
        super().__init__(unet, cfg.diffusion, SpatialConditioner(cfg.conditioner()), cfg.lr, cfg.ema, cfg.seed,
                         device)

    def concat(self, cond_input: torch.Tensor) -> torch.Tensor:
        return self.cond_stage.channel_mapper(cond_input)  # (B, map_channels, 16, 16)


# ---------------------------------------------------------------- commands


def train(args: argparse.Namespace) -> dict[str, float]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE
    if state_path.exists():
        meta = json.loads(load_state(state_path)["meta"])
        cfg = dataclass_from(SemanticTrainConfig, meta["config"])
        ae_path = meta["ae"]
        log("resuming with the run's saved config")
    else:
        cfg = SemanticTrainConfig(scenes=args.scenes, batch=args.batch, lr=args.lr or SemanticTrainConfig.lr, p_uncond=args.p_uncond)
        cfg.unet = with_overrides(cfg.unet, args.unet)
        ae_path = args.ae
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    ae, card = load_autoencoder(ae_path)
    seeds = list(range(cfg.scenes))
    latents = encode_scenes(ae.to(args.device), seeds, out / "latents.pt", workers=args.workers)
    scale = float(card.get("scale_factor") or 1.0 / latents.float().std().item())
    trainer = SemanticTrainer(cfg, args.device)
    rng, gen = resume_run(trainer, state_path, cfg.seed)
    cfg.lr = with_learning_rate(trainer, cfg.lr, args.lr)
    meta = {"config": cfg.to_dict(), "ae": str(ae_path), "scale": scale}
    batches = prefetched(lambda r: semantic_batch(cfg, latents, seeds, scale, r), (cfg.seed, trainer.step),
                         args.workers)
    return run_loop(trainer, batches, rng, gen, lambda: save_run(trainer, rng, gen, meta, state_path), args.steps,
                    args.minutes, args.save_every, loss_log=out / LOSS_LOG, schedule=schedule_of(args))


def checkpoint_config(cfg: SemanticTrainConfig, ae_cfg: AutoencoderConfig, scale: float) -> CheckpointConfig:
    unet = replace(cfg.unet, in_channels=LATENT_CHANNELS + cfg.map_channels)
    return CheckpointConfig(unet, ae_cfg, replace(cfg.diffusion, scale_factor=scale), cfg.conditioner())


def export(run: str, out: str, ae_path: str | None = None, weights: str = "ema", dtype: str = "float16",
           eval_n: int = 0, eval_steps: int = 25, eval_cfg: float = 2.0) -> dict[str, Any]:
    """Write the model file and card from a run; with eval_n > 0, measure it through the engine."""
    state = load_state(Path(run) / STATE)
    meta = json.loads(state["meta"])
    cfg = dataclass_from(SemanticTrainConfig, meta["config"])
    ae, ae_card = load_autoencoder(ae_path or meta["ae"])
    scale = float(meta["scale"])
    config = checkpoint_config(cfg, ae.cfg, scale)
    tensors = state["ema"] if weights == "ema" else state["weights"]
    card = {"name": "Kiln shapes semantic synthesis",
            "description": "Semantic map (21 shapes-world classes) to 128 px image: SpatialRescaler concat "
                           "conditioning on the base f=8 autoencoder's latents.",
            "latent_rgb_factors": ae_card.get("latent_rgb_factors"),
            "latent_rgb_network": ae_card.get("latent_rgb_network"),
            "training": {"command": f"python -m training.train_semantic train --out {run}",
                         "steps": int(state["step"]), "images_seen": int(state["step"]) * cfg.batch,
                         "weights": weights, "config": cfg.to_dict(), "autoencoder": str(ae_path or meta["ae"])}}
    card = write_checkpoint(out, tensors, ae, config, card, getattr(torch, dtype))
    if eval_n > 0:
        generate = semantic_generator(f"{out}.safetensors", steps=eval_steps, cfg=eval_cfg)
        result = evaluate_semantic(generate, held_out_seeds(eval_n))
        result["command"] = (f"python -m training.evaluate semantic --model {out}.safetensors --n {eval_n} "
                             f"--steps {eval_steps} --cfg {eval_cfg}")
        card = update_card(out, evaluation=result)
    return card


def speed(args: argparse.Namespace) -> dict[str, float]:
    """Steps/s of the real trainer and batch making, on random latents (no autoencoder needed)."""
    cfg = SemanticTrainConfig(batch=args.batch)
    seeds = list(range(1000))
    latents = torch.randn(len(seeds), LATENT_CHANNELS, IMAGE_SIZE // 8, IMAGE_SIZE // 8).half()
    trainer = SemanticTrainer(cfg)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    params = sum(p.numel() for p in trainer._parameters())
    log(f"{params / 1e6:.2f} M parameters, batch {cfg.batch}, {torch.get_num_threads()} threads")
    return run_loop(trainer, lambda r: semantic_batch(cfg, latents, seeds, 1.0, r), rng, gen, lambda: None,
                    10**9, args.seconds / 60, float("inf"), log_every=5)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_semantic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = add_train_parser(sub, "runs/semantic", "resources/models/kiln-shapes-ae.safetensors",
                          SemanticTrainConfig.batch, SemanticTrainConfig.lr)
    tr.add_argument("--scenes", type=int, default=SemanticTrainConfig.scenes)
    tr.add_argument("--p-uncond", type=float, default=SemanticTrainConfig.p_uncond)
    ex = sub.add_parser("export", help="write the model file and its card from a run")
    add_export_arguments(ex, "runs/semantic", "resources/models/kiln-shapes-semantic", 25, "maps")
    ex.add_argument("--eval-cfg", type=float, default=2.0)
    sp = add_speed_parser(sub, SemanticTrainConfig.batch)
    add_threads_argument(tr, ex, sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser().parse_args(argv), _run_command)


def _run_command(args: argparse.Namespace) -> None:
    dispatch(args, train, lambda a: export(a.run, a.out, a.ae, a.weights, a.dtype, a.eval_n, a.eval_steps,
                                           a.eval_cfg), speed)


if __name__ == "__main__":
    sys.exit(main())
