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

The pieces shared with training/train_sr.py (the concat-conditioned trainer,
its resumable loop and the checkpoint writer) live here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import KilnError
from engine.models.conditioners import SpatialConditioner
from engine.models.configs import (AutoencoderConfig, CheckpointConfig, ConditionerConfig, DiffusionConfig,
                                   UNetConfig)
from engine.models.diffusion import LatentDiffusionModel
from engine.models.keymaps import AE_PREFIX, COND_PREFIX, UNET_PREFIX
from engine.models.unet import UNetModel
from training.shapes_world import NUM_CLASSES, SPEC_VERSION, make_scene, semantic_map

STATE = "state.pt"
IMAGE_SIZE = 128
LATENT_CHANNELS = 4


# ---------------------------------------------------------------- config


@dataclass
class SemanticTrainConfig:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        in_channels=LATENT_CHANNELS + 16, out_channels=LATENT_CHANNELS, model_channels=32, num_res_blocks=2,
        attention_resolutions=(2, 4), channel_mult=(1, 2, 5), num_head_channels=32, legacy=False))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(
        linear_start=0.0015, linear_end=0.0195, conditioning_key="concat"))
    map_channels: int = 16  # the channel mapper's output: concat channels
    n_stages: int = 3  # bilinear halvings: 128 px map -> 16x16 latent grid
    scenes: int = 40_000  # training scenes encoded once to latents
    batch: int = 32
    lr: float = 2e-4
    ema: float = 0.999
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


def dataclass_from(cls: type, data: dict[str, Any]) -> Any:
    """A (nested) config dataclass from a plain dict; lists become tuples, unknown keys are an error."""
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field {unknown[0]!r}")
    nested = {"unet": UNetConfig, "diffusion": DiffusionConfig}
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


class ConcatTrainer:
    """eps-prediction training of a UNet whose conditioning is concatenated to the noisy latent.

    `cond_stage` is an optional conditioner module trained with the UNet; its
    weights are exported under `cond_stage_model.`. Subclasses turn the batch's
    conditioning input into the concat channels in `concat`.
    """

    def __init__(self, unet_cfg: UNetConfig, diffusion_cfg: DiffusionConfig, cond_stage: nn.Module | None,
                 lr: float, ema_decay: float, seed: int):
        torch.manual_seed(seed)
        self.unet = UNetModel(unet_cfg)
        self.cond_stage = cond_stage
        self.model = LatentDiffusionModel(self.unet, diffusion_cfg)
        self.ema_decay = ema_decay
        self.opt = torch.optim.AdamW(self._parameters(), lr=lr, weight_decay=0.0)
        self.ema = {k: v.detach().clone() for k, v in self.weights().items()}
        self.step = 0

    def _parameters(self) -> list[nn.Parameter]:
        modules = [self.unet] + ([self.cond_stage] if self.cond_stage is not None else [])
        return [p for m in modules for p in m.parameters()]

    def weights(self) -> dict[str, torch.Tensor]:
        """Live weights under their original single-file keys."""
        out = {UNET_PREFIX + k: v for k, v in self.unet.state_dict().items()}
        if self.cond_stage is not None:
            out.update({COND_PREFIX + k: v for k, v in self.cond_stage.state_dict().items()})
        return out

    def concat(self, cond_input: torch.Tensor) -> torch.Tensor:
        return cond_input

    def train_step(self, x0: torch.Tensor, cond_input: torch.Tensor, gen: torch.Generator) -> float:
        """One AdamW step on the eps loss; x0 (B, C, h, w) scaled latents."""
        t = torch.randint(0, self.model.config.timesteps, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = self.model.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = self.unet(torch.cat([x_t, self.concat(cond_input)], dim=1), t)
        loss = F.mse_loss(pred, noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._parameters(), 1.0)
        self.opt.step()
        self._update_ema()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        for k, v in self.weights().items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.ema[k].copy_(v)

    def state(self) -> dict[str, Any]:
        return {"weights": {k: v.detach().clone() for k, v in self.weights().items()}, "ema": self.ema,
                "opt": self.opt.state_dict(), "step": self.step}

    def load(self, state: dict[str, Any]) -> None:
        weights = state["weights"]
        self.unet.load_state_dict({k[len(UNET_PREFIX):]: v for k, v in weights.items() if k.startswith(UNET_PREFIX)})
        if self.cond_stage is not None:
            self.cond_stage.load_state_dict({k[len(COND_PREFIX):]: v for k, v in weights.items()
                                             if k.startswith(COND_PREFIX)})
        self.ema = state["ema"]
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])


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


def run_loop(trainer: ConcatTrainer, next_batch: Callable[[np.random.Generator], tuple[torch.Tensor, torch.Tensor]],
             rng: np.random.Generator, gen: torch.Generator, save: Callable[[], None], steps: int, minutes: float,
             save_every: float, log_every: int = 25) -> dict[str, float]:
    """Train until `steps` or `minutes`; save every `save_every` seconds and at the end. Returns the speed."""
    started = last_save = window_start = time.monotonic()
    done, losses = 0, []
    while trainer.step < steps and time.monotonic() - started < minutes * 60:
        losses.append(trainer.train_step(*next_batch(rng), gen))
        done += 1
        if trainer.step % log_every == 0:
            seconds = time.monotonic() - window_start
            log(f"step {trainer.step} loss {np.mean(losses):.4f} {len(losses) / max(seconds, 1e-9):.3f} steps/s")
            losses, window_start = [], time.monotonic()
        if time.monotonic() - last_save > save_every:
            save()
            last_save = time.monotonic()
    save()
    seconds = time.monotonic() - started
    log(f"stopped at step {trainer.step} ({done} steps in {seconds:.0f} s)")
    return {"steps": done, "seconds": seconds, "steps_per_s": done / max(seconds, 1e-9)}


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, flush=True)


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
    Path(f"{out}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def update_card(out: str | Path, **entries: Any) -> dict[str, Any]:
    path = Path(f"{out}.json")
    card = json.loads(path.read_text())
    card.update(entries)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def load_autoencoder(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """An exported Kiln autoencoder file and its card (architecture, scale_factor, latent_rgb_factors)."""
    from training.evaluate import load_autoencoder as load_file

    return load_file(path)


# ---------------------------------------------------------------- semantic data


def rescale_one_hot(labels: torch.Tensor, n_stages: int) -> torch.Tensor:
    """(B, H, W) class ids -> (B, 21, H/2^n, W/2^n) class fractions: SpatialRescaler before its mapper."""
    x = F.one_hot(labels.long(), NUM_CLASSES).permute(0, 3, 1, 2).float()
    for _ in range(n_stages):
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear")
    return x


@torch.no_grad()
def encode_scenes(ae: nn.Module, seeds: list[int], cache: Path, batch: int = 64) -> torch.Tensor:
    """(N, 4, 16, 16) float16 unscaled latents (posterior mode) of the scenes' 128 px renders, cached."""
    from training.data import render_batch, to_tensor

    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved["seeds"].tolist() == seeds:
            return saved["latents"]
    chunks = []
    for start in range(0, len(seeds), batch):
        images = render_batch(seeds[start:start + batch], IMAGE_SIZE)
        chunks.append(ae.encode(to_tensor(images)).mode().half())
        if (start // batch) % 20 == 0:
            log(f"encoded {start + len(images)}/{len(seeds)} scenes")
    latents = torch.cat(chunks)
    atomic_torch_save({"latents": latents, "seeds": torch.tensor(seeds)}, cache)
    return latents


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

    def __init__(self, cfg: SemanticTrainConfig):
        self.cfg = cfg
        unet = replace(cfg.unet, in_channels=LATENT_CHANNELS + cfg.map_channels)
        torch.manual_seed(cfg.seed)  # the channel mapper is built before the UNet
        super().__init__(unet, cfg.diffusion, SpatialConditioner(cfg.conditioner()), cfg.lr, cfg.ema, cfg.seed)

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
        cfg = SemanticTrainConfig(scenes=args.scenes, batch=args.batch, lr=args.lr, p_uncond=args.p_uncond)
        cfg.unet = with_overrides(cfg.unet, args.unet)
        ae_path = args.ae
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    ae, card = load_autoencoder(ae_path)
    seeds = list(range(cfg.scenes))
    latents = encode_scenes(ae, seeds, out / "latents.pt")
    scale = float(card.get("scale_factor") or 1.0 / latents.float().std().item())
    trainer = SemanticTrainer(cfg)
    rng, gen = resume_run(trainer, state_path, cfg.seed)
    meta = {"config": cfg.to_dict(), "ae": str(ae_path), "scale": scale}
    return run_loop(trainer, lambda r: semantic_batch(cfg, latents, seeds, scale, r), rng, gen,
                    lambda: save_run(trainer, rng, gen, meta, state_path), args.steps, args.minutes, args.save_every)


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
            "training": {"command": f"python -m training.train_semantic train --out {run}",
                         "steps": int(state["step"]), "images_seen": int(state["step"]) * cfg.batch,
                         "weights": weights, "config": cfg.to_dict(), "autoencoder": str(ae_path or meta["ae"])}}
    card = write_checkpoint(out, tensors, ae, config, card, getattr(torch, dtype))
    if eval_n > 0:
        from training.data import held_out_seeds
        from training.evaluate import evaluate_semantic

        generate = engine_generator(f"{out}.safetensors", steps=eval_steps, cfg=eval_cfg)
        result = evaluate_semantic(generate, held_out_seeds(eval_n))
        result["command"] = (f"python -m training.evaluate semantic --model {out}.safetensors --n {eval_n} "
                             f"--steps {eval_steps} --cfg {eval_cfg}")
        card = update_card(out, evaluation=result)
    return card


# ---------------------------------------------------------------- through the engine


def semantic_graph(model: str, labels_b64: str, seed: int, steps: int, cfg: float, sampler: str, scheduler: str):
    """CheckpointLoader -> SemanticPainter -> SemanticEncode -> Sampler -> AutoencoderDecode, as a Graph."""
    from engine.graph import Graph, Link, Node

    graph = Graph()
    nodes = {"ckpt": ("CheckpointLoader", {"checkpoint": model}),
             "map": ("SemanticPainter", {"labels": labels_b64, "num_classes": NUM_CLASSES}),
             "latent": ("EmptyLatent", {"width": IMAGE_SIZE, "height": IMAGE_SIZE}),
             "pos": ("SemanticEncode", {}), "neg": ("ConditioningZeroOut", {}),
             "sampler": ("Sampler", {"seed": seed, "steps": steps, "cfg": cfg, "sampler": sampler,
                                     "scheduler": scheduler}),
             "decode": ("AutoencoderDecode", {})}
    for nid, (kind, params) in nodes.items():
        graph.add_node(Node(nid, kind, params=params))
    for text in ("ckpt.conditioner -> pos.conditioner", "map.semantic -> pos.semantic", "latent.latent -> pos.latent",
                 "pos.conditioning -> neg.conditioning", "ckpt.model -> sampler.model",
                 "pos.conditioning -> sampler.positive", "neg.conditioning -> sampler.negative",
                 "ckpt.autoencoder -> latent.autoencoder", "latent.latent -> sampler.latent",
                 "ckpt.autoencoder -> decode.autoencoder", "sampler.latent -> decode.latent"):
        src, dst = (part.strip().split(".") for part in text.split("->"))
        graph.connect(Link(src[0], src[1], dst[0], dst[1]))
    return graph


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


def engine_generator(model: str, steps: int = 25, cfg: float = 2.0, sampler: str = "dpmpp_2m",
                     scheduler: str = "karras") -> Callable[[np.ndarray, int], np.ndarray]:
    """generate(labels (S, S) uint8, seed) -> uint8 (S, S, 3), through the real nodes (model loaded once)."""
    from engine.drawing import encode_png_b64

    executor = engine_executor()

    def generate(labels: np.ndarray, seed: int) -> np.ndarray:
        graph = semantic_graph(model, encode_png_b64(labels.astype(np.uint8)), seed, steps, cfg, sampler, scheduler)
        return run_image(executor, graph)

    return generate


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
    tr = sub.add_parser("train", help="train (resumes from OUT/state.pt when it exists)")
    tr.add_argument("--out", default="runs/semantic")
    tr.add_argument("--ae", default="resources/models/kiln-shapes-ae.safetensors")
    tr.add_argument("--scenes", type=int, default=SemanticTrainConfig.scenes)
    tr.add_argument("--batch", type=int, default=SemanticTrainConfig.batch)
    tr.add_argument("--lr", type=float, default=SemanticTrainConfig.lr)
    tr.add_argument("--p-uncond", type=float, default=SemanticTrainConfig.p_uncond)
    tr.add_argument("--unet", default=None, help='UNet config changes as JSON, e.g. \'{"model_channels": 32}\'')
    tr.add_argument("--steps", type=int, default=1_000_000)
    tr.add_argument("--minutes", type=float, default=120.0)
    tr.add_argument("--save-every", type=float, default=300.0)
    ex = sub.add_parser("export", help="write the model file and its card from a run")
    ex.add_argument("--run", default="runs/semantic")
    ex.add_argument("--out", default="resources/models/kiln-shapes-semantic", help="path without extension")
    ex.add_argument("--ae", default=None, help="the autoencoder file (default: the one the run trained on)")
    ex.add_argument("--weights", choices=("ema", "raw"), default="ema")
    ex.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    ex.add_argument("--eval-n", type=int, default=0, help="held-out maps to measure through the engine")
    ex.add_argument("--eval-steps", type=int, default=25)
    ex.add_argument("--eval-cfg", type=float, default=2.0)
    sp = sub.add_parser("speed", help="measure training steps/s on random latents")
    sp.add_argument("--seconds", type=float, default=60.0)
    sp.add_argument("--batch", type=int, default=SemanticTrainConfig.batch)
    for p in (tr, ex, sp):
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads; 1 is fastest while other work shares the CPU (measured 5-10x)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        _run_command(args)
    except KilnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _run_command(args: argparse.Namespace) -> None:
    if args.command == "export":
        card = export(args.run, args.out, args.ae, args.weights, args.dtype, args.eval_n, args.eval_steps,
                      args.eval_cfg)
        print(json.dumps(card.get("evaluation") or {"written": f"{args.out}.safetensors",
                                                    "steps": card["training"]["steps"]}, indent=2))
    elif args.command == "speed":
        print(json.dumps(speed(args)))
    else:
        train(args)


if __name__ == "__main__":
    sys.exit(main())
