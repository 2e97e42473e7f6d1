"""What travels along links at run time, and how it is sized and stored.

Conventions (every node follows them):

- IMAGE: `Image`, pixels float32 (B, 3, H, W) in [0, 1] on the CPU, plus the seed
  each picture was made with (empty when it was loaded, not sampled).
- LATENT: `Latent`, samples float32 (B, C, h, w) already multiplied by the model's
  scale factor, an optional noise mask and per-item seeds.
- MASK: a float32 tensor (B, 1, H, W) in [0, 1]; 1 = the region to (re)generate.
- CONDITIONING: `Conditioning` (cross-attention context, concat channels, class/vector y, regional prompts).
- LAYOUT: `engine.layout.Layout`, labelled boxes [x0, y0, x1, y1] in normalised coordinates.
- SEMANTIC_MAP: `SemanticMap`, int64 (B, H, W) class ids and the number of classes.
- MODEL / AUTOENCODER / CONDITIONER: objects from engine.models (never written to disk).

torch is imported only inside functions, so importing this module stays cheap.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class Image:
    pixels: torch.Tensor  # (B, 3, H, W) float32 in [0, 1]
    seeds: tuple[int, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])  # (W, H)


@dataclass
class Latent:
    samples: torch.Tensor  # (B, C, h, w), scaled
    noise_mask: torch.Tensor | None = None  # (B or 1, 1, h or H, w or W); 1 = regenerate
    seeds: tuple[int, ...] = ()


@dataclass
class Conditioning:
    crossattn: torch.Tensor | None = None  # (B, T, D)
    concat: torch.Tensor | None = None  # (B, C, h, w) at latent resolution
    y: torch.Tensor | None = None  # (B,) class ids or (B, D) vectors
    regions: torch.Tensor | None = None  # (B, N, 4 + K) layout boxes for region channels (engine.models.regions)
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"prompt": "..."}
    # regional prompts (engine.models.regional): PromptRegions, how they apply ("attention" or "blend") and the
    # global prompt's weight inside them
    prompt_regions: tuple[Any, ...] = ()
    region_mode: str = "attention"
    region_background: float = 0.3

    def with_(self, **changes: Any) -> Conditioning:
        return replace(self, **changes)


@dataclass
class SemanticMap:
    labels: torch.Tensor  # (B, H, W) int64 class ids
    num_classes: int = 21


# Value classes that the disk cache may store, by name.
STORABLE: dict[str, type] = {"Image": Image, "Latent": Latent, "SemanticMap": SemanticMap}


def nbytes(value: Any) -> int:
    """Approximate memory held by a value (for the byte-bounded LRU)."""
    import sys

    if "torch" in sys.modules:
        import torch

        if isinstance(value, torch.Tensor):
            return value.element_size() * value.nelement()
    if hasattr(value, "nbytes") and isinstance(value.nbytes, int):
        return int(value.nbytes)
    if is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in fields(value))
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value) + 8 * len(value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values()) + 16 * len(value)
    if isinstance(value, (str, bytes)):
        return len(value)
    return 64


def is_storable(value: Any) -> bool:
    """True for values the on-disk cache can write: Image, Latent, SemanticMap, MASK tensors."""
    if type(value).__name__ in STORABLE and type(value) is STORABLE[type(value).__name__]:
        return True
    import sys

    if "torch" in sys.modules:
        import torch

        return isinstance(value, torch.Tensor)
    return False


def to_bytes(value: Any) -> bytes:
    """Serialise a storable value as safetensors (no pickle)."""
    import torch
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    if isinstance(value, torch.Tensor):
        kind = "Tensor"
        tensors["value"] = value.detach().cpu().contiguous()
    else:
        kind = type(value).__name__
        for f in fields(value):
            item = getattr(value, f.name)
            if isinstance(item, torch.Tensor):
                tensors[f.name] = item.detach().cpu().contiguous()
            elif item is not None:
                meta[f.name] = list(item) if isinstance(item, tuple) else item
    header = {"kind": kind, "meta": json.dumps(meta, sort_keys=True)}
    return save(tensors, metadata=header)


def from_bytes(data: bytes) -> Any:
    """Inverse of to_bytes."""
    import os
    import tempfile

    from safetensors import safe_open

    # safe_open needs a file; load() from bytes keeps no metadata, so go through a temp file.
    with tempfile.NamedTemporaryFile(suffix=".safetensors", delete=False) as tmp:
        tmp.write(data)
        path = tmp.name
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a mapping
    finally:
        os.unlink(path)
    kind = header.get("kind", "Tensor")
    if kind == "Tensor":
        return tensors["value"]
    cls = STORABLE[kind]
    meta = json.loads(header.get("meta", "{}"))
    kwargs: dict[str, Any] = dict(tensors)
    for f in fields(cls):
        if f.name in meta:
            v = meta[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)



