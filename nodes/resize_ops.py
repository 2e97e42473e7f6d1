"""Resizing helpers shared by the image and latent scale nodes (no node types here).

Tensors are (B, C, H, W). Methods follow ComfyUI's names: nearest-exact, bilinear, area,
bicubic, bislerp (spherical interpolation of each pixel's channel vector, for latents) and
lanczos (PIL's filter, per channel, in floating point). "center" crop first trims the
source to the target's aspect ratio, evenly on both sides. torch is imported inside each function.
"""
from __future__ import annotations

from typing import Any

SCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


def center_crop_to_aspect(tensor: Any, width: int, height: int) -> Any:
    """Trim (B, C, H, W) evenly on both sides of one axis so that it has the aspect width:height."""
    old_h, old_w = int(tensor.shape[-2]), int(tensor.shape[-1])
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * new_aspect / old_aspect) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * old_aspect / new_aspect) / 2)
    return tensor[..., y:old_h - y, x:old_w - x]


def resize(tensor: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """(B, C, H, W) resized to (height, width) by `method` (see SCALE_METHODS and "lanczos")."""
    import torch.nn.functional as F

    if crop == "center":
        tensor = center_crop_to_aspect(tensor, width, height)
    tensor = tensor.float()
    if method == "bislerp":
        return bislerp(tensor, width, height)
    if method == "lanczos":
        return lanczos(tensor, width, height)
    if method in ("bilinear", "bicubic"):
        return F.interpolate(tensor, size=(height, width), mode=method, align_corners=False)
    return F.interpolate(tensor, size=(height, width), mode=method)


def _source_positions(old: int, new: int) -> tuple[Any, Any, Any]:
    """For each of `new` output positions: the two neighbouring source indices and the weight of the
    second, with the half-pixel-centre mapping that bilinear resizing uses."""
    import torch

    pos = ((torch.arange(new, dtype=torch.float64) + 0.5) * (old / new) - 0.5).clamp(0, old - 1)
    first = pos.floor().long()
    second = (first + 1).clamp(max=old - 1)
    return first, second, (pos - first).float()


def slerp(a: Any, b: Any, t: Any, dim: int = 1) -> Any:
    """Spherical interpolation of the vectors along `dim` (direction on the sphere, length linear).

    Where the two directions (nearly) coincide or are opposite, or a vector is zero, it is linear."""
    import torch

    norm_a, norm_b = a.norm(dim=dim, keepdim=True), b.norm(dim=dim, keepdim=True)
    unit_a = a / norm_a.clamp_min(1e-12)
    unit_b = b / norm_b.clamp_min(1e-12)
    dot = (unit_a * unit_b).sum(dim=dim, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    curved = (torch.sin((1 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / sin_omega.clamp_min(1e-12)
    curved = curved * (norm_a * (1 - t) + norm_b * t)
    linear = a * (1 - t) + b * t
    degenerate = (sin_omega.abs() < 1e-4) | (norm_a == 0) | (norm_b == 0)
    return torch.where(degenerate, linear, curved)


def bislerp(tensor: Any, width: int, height: int) -> Any:
    """Bilinear resizing that slerps channel vectors instead of averaging them (keeps latent norms)."""
    first, second, t = _source_positions(int(tensor.shape[-1]), width)
    tensor = slerp(tensor[..., first], tensor[..., second], t.view(1, 1, 1, -1))
    first, second, t = _source_positions(int(tensor.shape[-2]), height)
    return slerp(tensor[..., first, :], tensor[..., second, :], t.view(1, 1, -1, 1))


def lanczos(tensor: Any, width: int, height: int) -> Any:
    """PIL's Lanczos filter on each channel as 32-bit float images (no 8-bit rounding)."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    array = tensor.detach().float().cpu().numpy()
    out = np.empty((array.shape[0], array.shape[1], height, width), dtype=np.float32)
    for b in range(array.shape[0]):
        for c in range(array.shape[1]):
            plane = PILImage.fromarray(np.ascontiguousarray(array[b, c]), mode="F")
            out[b, c] = np.asarray(plane.resize((width, height), PILImage.Resampling.LANCZOS))
    return torch.from_numpy(out)
