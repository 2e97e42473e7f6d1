"""The export of an autoencoder training run: the weights in the original single-file layout, the JSON card
(PSNR on held-out scenes, the scale factor, the preview's latent -> RGB fits), and the preview fit of any
shipped model file (`fit-preview`).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.models.autoencoder import AutoencoderKL
from training.autoencoder import (
    CHECKPOINT,
    autoencoder_config,
    config_from_json,
    flag_text,
    load_checkpoint,
    mean_psnr,
)
from training.data import held_out_seeds, render_batch, to_tensor, train_seeds
from training.metrics import evaluate_autoencoder, reconstruct
from training.model_files import load_autoencoder, update_card, write_card
from training.shapes_world import SPEC_VERSION


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
                                    + " ".join(f"--{k.replace('_', '-')} {flag_text(v)}"
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
