"""Batches of shapes-world data for training: renders, crops, captions, layouts, label maps.

Rendering is cheap (about 1000 scenes/s at 128 px on one core), so training
draws fresh scenes from the training seeds on the fly; `cached_renders` keeps
a fixed pool on disk (a .npy file, memory-mapped) when the same images are
needed again, e.g. for measuring latent statistics; `encode_scenes` caches the
scenes' latents for the diffusion trainers.
Seeds below 1,000,000 are for training, from 1,000,000 up held out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine import atomic
from training.pipeline import IMAGE_SIZE
from training.shapes_world import (
    HELD_OUT_SEED_START,
    TRAIN_SEEDS,
    augmented_caption,
    caption,
    layout,
    make_scene,
    render,
    render_with_labels,
)

if TYPE_CHECKING:
    import torch


def held_out_seeds(n: int, offset: int = 0) -> list[int]:
    """The first n evaluation seeds (from 1,000,000 + offset)."""
    return list(range(HELD_OUT_SEED_START + offset, HELD_OUT_SEED_START + offset + n))


def train_seeds(rng: np.random.Generator, n: int) -> list[int]:
    """n seeds drawn uniformly from the training range."""
    return [int(s) for s in rng.integers(TRAIN_SEEDS.start, TRAIN_SEEDS.stop, size=n)]


def render_batch(seeds: Sequence[int], size: int = 128) -> np.ndarray:
    """(B, S, S, 3) uint8 renders of the scenes of the seeds."""
    out = np.empty((len(seeds), size, size, 3), dtype=np.uint8)
    for i, seed in enumerate(seeds):
        out[i] = render(make_scene(seed), size)
    return out


def cached_renders(path: str | Path, seeds: Sequence[int], size: int = 128) -> np.ndarray:
    """Renders of seeds, kept in a .npy file (rebuilt when the seeds or size differ)."""
    path = Path(path)
    seeds_path = path.with_suffix(".seeds.npy")
    wanted = np.asarray(seeds, dtype=np.int64)
    if path.exists() and seeds_path.exists():
        images = np.load(path, mmap_mode="r")
        if images.shape[1] == size and np.array_equal(np.load(seeds_path), wanted):
            return images
    path.parent.mkdir(parents=True, exist_ok=True)
    images = render_batch(seeds, size)
    with atomic.replacing(path) as f:
        np.save(f, images)
    np.save(seeds_path, wanted)
    return images


def random_crops(rng: np.random.Generator, images: np.ndarray, crop: int) -> np.ndarray:
    """One random crop x crop window from each image of (B, S, S, 3)."""
    b, s = images.shape[0], images.shape[1]
    if crop > s:
        raise ValueError(f"crop {crop} is larger than the images ({s} px)")
    ys = rng.integers(0, s - crop + 1, size=b)
    xs = rng.integers(0, s - crop + 1, size=b)
    return np.stack([img[y : y + crop, x : x + crop] for img, y, x in zip(images, ys, xs)])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), rounded and clipped."""
    array = ((pixels.detach().float().clamp(-1, 1) + 1.0) * 127.5).round()
    return array.permute(0, 2, 3, 1).to("cpu").numpy().astype(np.uint8)


def object_crop_corner(rng: np.random.Generator, scene, crop: int, size: int) -> tuple[int, int]:
    """Top-left corner of a crop centred within half a box side of a random object's centre.

    Such crops almost always hold an object edge, where the autoencoder has
    something to learn; flat background is learnt within the first steps.
    """
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    cx, cy = obj.centre
    jitter = rng.uniform(-0.5, 0.5, size=2) * obj.d
    corner = (np.array([cy, cx]) + jitter) * size - crop / 2
    y, x = np.clip(np.round(corner), 0, size - crop).astype(int)
    return int(y), int(x)


def crop_batch(rng: np.random.Generator, batch: int, crop: int, size: int = 128, object_share: float = 0.0
               ) -> torch.Tensor:
    """(batch, 3, crop, crop) in [-1, 1]: crops of fresh renders of random training scenes.

    A share `object_share` of the crops is centred near an object, the rest uniform.
    """
    out = np.empty((batch, crop, crop, 3), dtype=np.uint8)
    for i, seed in enumerate(train_seeds(rng, batch)):
        scene = make_scene(seed)
        image = render(scene, size)
        if rng.random() < object_share:
            y, x = object_crop_corner(rng, scene, crop, size)
        else:
            y, x = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
        out[i] = image[y : y + crop, x : x + crop]
    return to_tensor(out)


@dataclass
class SceneSample:
    seed: int
    image: np.ndarray  # (S, S, 3) uint8
    labels: np.ndarray  # (S, S) uint8 semantic map
    caption: str  # augmented (training) caption when an rng was given, else the full caption
    layout: list[dict]


def scene_samples(seeds: Sequence[int], size: int = 128, rng: np.random.Generator | None = None
                  ) -> list[SceneSample]:
    """Everything a conditional model trains on, per seed."""
    samples = []
    for seed in seeds:
        scene = make_scene(seed)
        image, labels = render_with_labels(scene, size)
        text = augmented_caption(scene, rng) if rng is not None else caption(scene)
        samples.append(SceneSample(seed, image, labels, text, layout(scene)))
    return samples


def _default_signals() -> None:
    """In a forked worker: SIGTERM kills again. The parent may catch it (a trainer's StopRequest, or Ray in
    the same process); a worker that inherited such a handler would outlive Pool.terminate, which then
    waits for it forever."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def encode_scenes(ae: torch.nn.Module, seeds: list[int], cache: Path, batch: int = 64, workers: int = 0
                  ) -> torch.Tensor:
    """(N, 4, 16, 16) float16 unscaled latents (posterior mode) of the scenes' 128 px renders, cached.

    Runs where the autoencoder's weights are; the latents come back on the CPU. With `workers`,
    that many processes render the scenes (the GPU encodes faster than one core renders)."""
    import functools
    import multiprocessing

    import torch

    from training.loop import atomic_torch_save, log

    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved["seeds"].tolist() == seeds:
            return saved["latents"]
    parts = [seeds[start:start + batch] for start in range(0, len(seeds), batch)]
    render = functools.partial(render_batch, size=IMAGE_SIZE)
    pool = multiprocessing.get_context("fork").Pool(workers, _default_signals) if workers > 0 else None
    chunks, device = [], next(ae.parameters()).device
    try:
        for i, images in enumerate(pool.imap(render, parts) if pool else map(render, parts)):
            with torch.no_grad():
                chunks.append(ae.encode(to_tensor(images).to(device)).mode().half().cpu())
            if i % 20 == 0:
                log(f"encoded {min((i + 1) * batch, len(seeds))}/{len(seeds)} scenes")
    finally:
        if pool is not None:
            pool.terminate()
    latents = torch.cat(chunks)
    atomic_torch_save({"latents": latents, "seeds": torch.tensor(seeds)}, cache)
    return latents
