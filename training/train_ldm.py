"""Train the built-in base latent diffusion model on the shapes world.

One UNet learns, on the latents of the built-in autoencoder:
- text-to-image and layout-to-image through cross-attention on one token
  stream (engine.models.token_conditioner), with conditioning dropout so that
  classifier-free guidance and unconditional sampling work;
- inpainting through concatenation of [masked latent, mask] (the concat is all
  zeros for plain generation, so one model serves every mode).

    python -m training.train_ldm --out runs/ldm --ae resources/models/kiln-shapes-ae.safetensors
    python -m training.train_ldm --out runs/ldm --export resources/models/kiln-shapes-base.safetensors

Resumable: the run folder keeps `state.pt` (weights, EMA, optimizer, step, rng)
written atomically every `--save-every` seconds; rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.models.configs import DiffusionConfig, UNetConfig
from engine.models.diffusion import LatentDiffusionModel
from engine.models.token_conditioner import TokenConditioner, TokenConditionerConfig
from engine.models.unet import UNetModel
from training import shapes_world as world
from training.data import render_batch

LATENT_CHANNELS = 4


def vocabulary() -> tuple[str, ...]:
    """Every word a shapes-world caption or layout label can hold, sorted."""
    return tuple(sorted(world.VOCABULARY))


@dataclass
class LdmTrainConfig:
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(
        in_channels=2 * LATENT_CHANNELS + 1, out_channels=LATENT_CHANNELS, model_channels=64,
        num_res_blocks=2, attention_resolutions=(1, 2, 4), channel_mult=(1, 2, 3), num_head_channels=32,
        use_spatial_transformer=True, transformer_depth=1, context_dim=256,
        use_linear_in_transformer=True, legacy=False))
    conditioner: TokenConditionerConfig = field(default_factory=lambda: TokenConditionerConfig(
        words=vocabulary(), coord_bins=64, max_tokens=40, width=256, layers=3, heads=4))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(
        linear_start=0.0015, linear_end=0.0195, conditioning_key="hybrid"))
    scenes: int = 40_000  # training scenes encoded once to latents
    batch: int = 64
    lr: float = 2e-4
    ema: float = 0.999
    p_text: float = 0.45
    p_layout: float = 0.40  # the rest is unconditional
    p_inpaint: float = 0.5
    seed: int = 0


def encode_scenes(ae_path: str, seeds: list[int], out: Path) -> tuple[torch.Tensor, float]:
    """(N, 4, 16, 16) float16 unscaled latents (posterior mode) of the scenes, cached in out."""
    cache = out / "latents.pt"
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved["seeds"].tolist() == seeds:
            return saved["latents"], float(saved["scale"])
    ae = load_autoencoder(ae_path)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(seeds), 256):
            images = render_batch(seeds[start:start + 256])
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            chunks.append(ae.encode(x).mode().half())
            print(f"encoded {start + len(images)}/{len(seeds)}", flush=True)
    latents = torch.cat(chunks)
    scale = 1.0 / latents.float().std().item()
    _atomic_torch_save({"latents": latents, "seeds": torch.tensor(seeds), "scale": scale}, cache)
    return latents, scale


def load_autoencoder(path: str):
    from safetensors.torch import load_file

    from engine.models.autoencoder import AutoencoderKL
    from engine.models.configs import AutoencoderConfig

    card = json.loads(Path(path).with_suffix(".json").read_text())
    cfg = AutoencoderConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in card["config"]["autoencoder"].items()})
    ae = AutoencoderKL(cfg)
    state = load_file(path)
    prefix = "first_stage_model."
    ae.load_state_dict({k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)})
    return ae.eval()


@dataclass
class Batch:
    latents: torch.Tensor  # (B, 4, 16, 16) scaled
    tokens: torch.Tensor  # (B, T)
    concat: torch.Tensor  # (B, 5, 16, 16): masked latent, mask


def make_batch(cfg: LdmTrainConfig, tokenizer, latents: torch.Tensor, seeds: list[int], scale: float,
               rng: np.random.Generator) -> Batch:
    idx = rng.integers(0, len(seeds), size=cfg.batch)
    x = latents[idx].float() * scale  # (B, 4, h, w)
    tokens, masks = [], []
    for i in idx:
        scene = world.make_scene(seeds[i])
        tokens.append(_tokens_for(cfg, tokenizer, scene, rng))
        masks.append(_mask_for(cfg, scene, x.shape[-1], rng))
    mask = torch.from_numpy(np.stack(masks))[:, None].float()  # (B, 1, h, w) 1 = regenerate
    has_mask = mask.flatten(1).amax(1).view(-1, 1, 1, 1)
    concat = torch.cat([x * (1 - mask) * has_mask, mask], dim=1)
    return Batch(x, tokenizer.batch(tokens), concat)


def _tokens_for(cfg: LdmTrainConfig, tokenizer, scene, rng: np.random.Generator) -> list[int]:
    u = rng.random()
    if u < cfg.p_text:
        return tokenizer.encode_text(world.augmented_caption(scene, rng))
    if u < cfg.p_text + cfg.p_layout:
        boxes = world.layout(scene)
        order = rng.permutation(len(boxes))
        return tokenizer.encode_layout([boxes[j] for j in order])
    return tokenizer.encode_text("")


def _mask_for(cfg: LdmTrainConfig, scene, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n) latent-resolution mask: none, an object's grown box, or a random rectangle."""
    mask = np.zeros((n, n), dtype=np.float32)
    if rng.random() >= cfg.p_inpaint:
        return mask
    if rng.random() < 0.6:
        obj = scene.objects[rng.integers(len(scene.objects))]
        x0, y0, x1, y1 = obj.box
        grow = rng.uniform(0.0, 0.08)
        box = (x0 - grow, y0 - grow, x1 + grow, y1 + grow)
    else:
        w, h = rng.uniform(0.2, 0.7, size=2)
        x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        box = (x0, y0, x0 + w, y0 + h)
    c0, r0 = int(np.floor(max(box[0], 0) * n)), int(np.floor(max(box[1], 0) * n))
    c1, r1 = int(np.ceil(min(box[2], 1) * n)), int(np.ceil(min(box[3], 1) * n))
    mask[r0:r1, c0:c1] = 1.0
    return mask


class Trainer:
    def __init__(self, cfg: LdmTrainConfig):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.unet = UNetModel(cfg.unet)
        self.conditioner = TokenConditioner(cfg.conditioner)
        self.model = LatentDiffusionModel(self.unet, cfg.diffusion)
        params = list(self.unet.parameters()) + list(self.conditioner.parameters())
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        self.ema = {k: v.detach().clone() for k, v in self._weights().items()}
        self.step = 0

    def _weights(self) -> dict[str, torch.Tensor]:
        out = {f"model.diffusion_model.{k}": v for k, v in self.unet.state_dict().items()}
        out.update({f"cond_stage_model.{k}": v for k, v in self.conditioner.state_dict().items()})
        return out

    def train_step(self, batch: Batch, gen: torch.Generator) -> float:
        x0 = batch.latents
        t = torch.randint(0, self.cfg.diffusion.timesteps, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = self.model.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        context = self.conditioner(batch.tokens)
        pred = self.unet(torch.cat([x_t, batch.concat], dim=1), t, context=context)
        loss = F.mse_loss(pred, noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.opt.param_groups[0]["params"], 1.0)
        self.opt.step()
        self._update_ema()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        for k, v in self._weights().items():
            if v.dtype.is_floating_point:
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                self.ema[k].copy_(v)

    def state(self, rng_state: dict) -> dict:
        return {"unet": self.unet.state_dict(), "conditioner": self.conditioner.state_dict(),
                "ema": self.ema, "opt": self.opt.state_dict(), "step": self.step, "rng": rng_state}

    def load(self, state: dict) -> dict:
        self.unet.load_state_dict(state["unet"])
        self.conditioner.load_state_dict(state["conditioner"])
        self.ema = state["ema"]
        self.opt.load_state_dict(state["opt"])
        self.step = state["step"]
        return state["rng"]


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = LdmTrainConfig(scenes=args.scenes, batch=args.batch, lr=args.lr)
    (out / "config.json").write_text(json.dumps(_config_dict(cfg), indent=2, sort_keys=True))
    seeds = list(range(cfg.scenes))
    latents, scale = encode_scenes(args.ae, seeds, out)
    trainer = Trainer(cfg)
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    state_path = out / "state.pt"
    if state_path.exists():
        saved = trainer.load(torch.load(state_path, weights_only=False))  # our own file
        rng.bit_generator.state, gen = saved["np"], _generator_from(saved["torch"])
        print(f"resumed at step {trainer.step}", flush=True)
    tokenizer = trainer.conditioner.tokenizer
    started, last_save, losses = time.time(), time.time(), []
    while trainer.step < args.steps and time.time() - started < args.minutes * 60:
        losses.append(trainer.train_step(make_batch(cfg, tokenizer, latents, seeds, scale, rng), gen))
        if trainer.step % 50 == 0:
            print(f"step {trainer.step} loss {np.mean(losses):.4f} "
                  f"{(time.time() - started) / max(len(losses), 1):.2f}s/step", flush=True)
            losses = []
        if time.time() - last_save > args.save_every:
            _save(trainer, rng, gen, scale, state_path)
            last_save = time.time()
    _save(trainer, rng, gen, scale, state_path)
    print(f"stopped at step {trainer.step}", flush=True)


def _save(trainer: Trainer, rng, gen: torch.Generator, scale: float, path: Path) -> None:
    state = trainer.state({"np": rng.bit_generator.state, "torch": gen.get_state()})
    state["scale"] = scale
    _atomic_torch_save(state, path)


def _generator_from(state: torch.Tensor) -> torch.Generator:
    gen = torch.Generator()
    gen.set_state(state)
    return gen


def _config_dict(cfg: LdmTrainConfig) -> dict:
    d = asdict(cfg)
    d["unet"], d["diffusion"] = cfg.unet.to_dict(), cfg.diffusion.to_dict()
    d["conditioner"] = cfg.conditioner.to_dict()
    return d


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--ae", default="resources/models/kiln-shapes-ae.safetensors")
    p.add_argument("--scenes", type=int, default=40_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--minutes", type=float, default=120.0)
    p.add_argument("--save-every", type=float, default=300.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args)


if __name__ == "__main__":
    main()
