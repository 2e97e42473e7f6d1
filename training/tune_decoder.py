"""Fine-tune the decoder of the built-in autoencoder so that it draws clean picture edges from generated latents.

    python -m training.tune_decoder train --out runs/decoder --minutes 30
    python -m training.tune_decoder export --run runs/decoder --out resources/models/kiln-shapes-ae
    python -m training.tune_decoder swap --ae resources/models/kiln-shapes-ae.safetensors \
        --model resources/models/kiln-shapes-base.safetensors

Why: the encoder pads right and bottom only before each stride-2 convolution (the original
architecture), so the latents it makes carry a signature in their border rows, and the decoder
learnt to rely on it. A diffusion model reproduces that signature only roughly, and where it
misses, the decoder paints a band of colour along the top edge (up to 30 levels on a gray
background), which the analyser then reads as an extra object. The same happens to a real
picture's latent flipped upside down. Here the decoder trains on latents whose border rows and
columns are, at random, replaced by the next ones inwards (the signature removed), against the
picture itself. The encoder is frozen, so every latent, and every diffusion model trained on
them, stays valid: `swap` puts the new decoder into a checkpoint file in place of its old one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import KilnError
from engine.models.keymaps import AE_PREFIX
from training.data import held_out_seeds, render_batch, to_tensor, train_seeds
from training.loop import LOSS_LOG, STATE, atomic_torch_save, load_state, log, run_loop
from training.metrics import evaluate_autoencoder, reconstruct
from training.model_files import load_autoencoder, safetensors_metadata, update_card, write_card
from training.trainer import update_ema

DECODER_KEYS = ("decoder.", "post_quant_conv.")


def strip_border_signature(z: torch.Tensor, rng: np.random.Generator, p: float = 0.5) -> torch.Tensor:
    """z (B, C, h, w) with, for each item and each edge with probability p, the outer 1 or 2 rows
    (or columns) replaced by the next one inwards."""
    z = z.clone()
    chosen, depth = rng.random((4, z.shape[0])) < p, rng.integers(1, 3, size=(4, z.shape[0]))
    for edge in range(4):  # top, bottom, left, right
        lines = z if edge < 2 else z.transpose(-1, -2)  # a view: rows, or columns as rows
        n = lines.shape[-2]
        for k in (1, 2):
            items = torch.from_numpy(np.flatnonzero(chosen[edge] & (depth[edge] == k))).to(z.device)
            if len(items):
                source, target = (k, slice(0, k)) if edge % 2 == 0 else (n - k - 1, slice(n - k, n))
                lines[items, :, target] = lines[items, :, source:source + 1]
    return z


def border_weights(size: tuple[int, int], weight: float, width: int = 8) -> torch.Tensor:
    """(H, W) loss weights: `weight` within `width` pixels (one latent cell) of the edge, 1 inside."""
    h, w = size
    out = torch.full((h, w), float(weight))
    out[width:h - width, width:w - width] = 1.0
    return out


class DecoderTrainer:
    """Adam on the decoder (and post_quant_conv) alone; L1 + L2 against the picture; EMA weights."""

    def __init__(self, ae: nn.Module, lr: float, ema_decay: float = 0.999, border_weight: float = 1.0):
        self.ae, self.border_weight = ae, border_weight
        for name, p in ae.named_parameters():
            p.requires_grad_(name.startswith(DECODER_KEYS))
        self.params = [p for p in ae.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.ema = {k: v.detach().clone() for k, v in self.decoder_state().items()}
        self.ema_decay, self.step = ema_decay, 0
        self._weight = torch.empty(0)

    def decoder_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.ae.state_dict().items() if k.startswith(DECODER_KEYS)}

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor], gen: torch.Generator) -> float:
        z, x = batch  # (B, C, h, w) latents (signature stripped at random), (B, 3, H, W) pictures in [-1, 1]
        y = self.ae.decode(z)
        if self._weight.shape != x.shape[-2:] or self._weight.device != x.device:
            self._weight = border_weights(x.shape[-2:], self.border_weight).to(x)  # (H, W): outer 8 px count more
        weight = self._weight
        loss = ((y - x).abs() * weight).mean() + ((y - x).square() * weight).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        update_ema(self.ema, self.decoder_state(), self.step, self.ema_decay)
        self.step += 1
        return loss.item()

    def state(self) -> dict[str, Any]:
        return {"weights": {k: v.clone() for k, v in self.decoder_state().items()}, "ema": self.ema,
                "opt": self.opt.state_dict(), "step": self.step}

    def load(self, state: dict[str, Any]) -> None:
        self.ae.load_state_dict({**self.ae.state_dict(), **state["weights"]})
        device = next(iter(self.ema.values())).device
        self.ema = {k: v.to(device) for k, v in state["ema"].items()}
        self.opt.load_state_dict(state["opt"])  # Adam moves its moments to the parameters' device
        self.step = int(state["step"])


def pool_of_pictures(ae: nn.Module, n: int, seed: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(latents (n, C, h, w) posterior mode, pictures (n, 3, 128, 128) in [-1, 1]) of random training scenes,
    both on `device`."""
    seeds = train_seeds(np.random.default_rng(seed), n)
    pictures = to_tensor(render_batch(seeds, 128)).to(device)
    with torch.no_grad():
        latents = torch.cat([ae.encode(pictures[i:i + 64]).mode() for i in range(0, n, 64)])
    return latents, pictures


def train(args: argparse.Namespace) -> dict[str, float]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ae, _ = load_autoencoder(args.ae)
    ae.to(args.device)
    trainer = DecoderTrainer(ae, args.lr, border_weight=args.border_weight)
    if (out / STATE).exists():
        state = load_state(out / STATE)
        trainer.load(state)
        for group in trainer.opt.param_groups:  # the rate given now, not the saved one
            group["lr"] = args.lr
        log(f"resumed at step {trainer.step}, learning rate {args.lr:g}")
    (out / "config.json").write_text(json.dumps({"ae": args.ae, "lr": args.lr, "batch": args.batch,
                                                 "pool": args.pool, "border_weight": args.border_weight}, indent=2))
    latents, pictures = pool_of_pictures(ae, args.pool, seed=trainer.step, device=args.device)
    rng = np.random.default_rng(trainer.step)

    def next_batch(r: np.random.Generator) -> tuple[tuple[torch.Tensor, torch.Tensor]]:
        idx = torch.as_tensor(r.integers(0, len(latents), size=args.batch), device=latents.device)
        return ((strip_border_signature(latents[idx], r), pictures[idx]),)

    def save() -> None:
        atomic_torch_save({**trainer.state(), "ae": args.ae}, out / STATE)

    return run_loop(trainer, next_batch, rng, torch.Generator(), save, args.steps, args.minutes, args.save_every,
                    loss_log=out / LOSS_LOG)


def export(run: str, out: str, n_eval: int, weights: str = "ema") -> dict[str, Any]:
    """The tuned autoencoder file (the EMA or raw decoder, the original encoder) and its card, measured on
    held-out scenes."""
    from safetensors.torch import load_file, save_file

    state = load_state(Path(run) / STATE)
    source = Path(state["ae"])
    tensors = load_file(str(source))
    for key, value in state[weights].items():
        tensors[AE_PREFIX + key] = value.to(tensors[AE_PREFIX + key].dtype).contiguous()
    card = json.loads(source.with_suffix(".json").read_text())
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, f"{out}.safetensors", metadata=safetensors_metadata(source))
    card.pop("evaluation", None)  # the source's figures; measured again below when n_eval > 0
    card["description"] = (card.get("description", "").split(" Decoder fine-tuned")[0]
                           + " Decoder fine-tuned on latents stripped of the encoder's border signature"
                           " (training/tune_decoder.py).").strip()
    card["decoder_tuning"] = {"command": f"python -m training.tune_decoder train --out {run}", "steps": int(state["step"]),
                              "weights": weights, "why": "border rows of the latents stripped at random (training/tune_decoder.py)"}
    write_card(out, card)
    if n_eval:
        model, _ = load_autoencoder(f"{out}.safetensors")
        result = evaluate_autoencoder(lambda images: reconstruct(model, images), held_out_seeds(n_eval))
        card["evaluation"] = {**result, "command": f"python -m training.evaluate autoencoder --model {out}.safetensors "
                                                   f"--n {n_eval}"}
        write_card(out, card)
    return card


def swap(ae_file: str, model: str) -> int:
    """Put the decoder of `ae_file` into the checkpoint `model` (same architecture); returns tensors replaced."""
    from safetensors.torch import load_file, save_file

    new, old = load_file(ae_file), load_file(model)
    prefixes = tuple(AE_PREFIX + p for p in DECODER_KEYS)
    keys = sorted(k for k in new if k.startswith(prefixes))
    theirs = sorted(k for k in old if k.startswith(prefixes))
    if not keys or keys != theirs:
        raise KilnError(f"{model}: its decoder has other layers than the one in {ae_file}")
    for key in keys:
        if old[key].shape != new[key].shape:
            raise KilnError(f"{model}: its autoencoder does not match {ae_file} at {key}")
        old[key] = new[key].to(old[key].dtype).contiguous()
    save_file(old, model, metadata=safetensors_metadata(model))
    update_card(Path(model).with_suffix(""), decoder=f"the decoder of {Path(ae_file).name} (training/tune_decoder.py swap)")
    return len(keys)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.tune_decoder", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="fine-tune (resumes from OUT/state.pt)")
    tr.add_argument("--out", default="runs/decoder")
    tr.add_argument("--ae", default="resources/models/kiln-shapes-ae.safetensors")
    tr.add_argument("--lr", type=float, default=5e-5)
    tr.add_argument("--batch", type=int, default=16)
    tr.add_argument("--border-weight", type=float, default=4.0,
                    help="loss weight of the pixels within one latent cell of the edge (1 inside)")
    tr.add_argument("--pool", type=int, default=2000, help="training scenes rendered and encoded once")
    tr.add_argument("--steps", type=int, default=1_000_000)
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    tr.add_argument("--minutes", type=float, default=30.0)
    tr.add_argument("--save-every", type=float, default=300.0)
    ex = sub.add_parser("export", help="write the tuned autoencoder file and card")
    ex.add_argument("--run", default="runs/decoder")
    ex.add_argument("--out", default="resources/models/kiln-shapes-ae")
    ex.add_argument("--n", type=int, default=500, help="held-out scenes for the PSNR in the card (0: none)")
    ex.add_argument("--weights", choices=("ema", "weights"), default="ema", help="the EMA or the raw decoder")
    sw = sub.add_parser("swap", help="put a tuned decoder into a checkpoint file that shares the autoencoder")
    sw.add_argument("--ae", required=True)
    sw.add_argument("--model", required=True)
    for p in (tr, ex, sw):
        p.add_argument("--threads", type=int, default=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.command == "train":
            train(args)
        elif args.command == "export":
            print(json.dumps(export(args.run, args.out, args.n, args.weights).get("evaluation", {}), indent=2))
        else:
            print(f"{swap(args.ae, args.model)} decoder tensors replaced in {args.model}")
    except KilnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
