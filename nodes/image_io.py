"""Images in and out: LoadImage, SaveImage (PNG with the graph embedded), PreviewImage.

LoadImage's MASK comes from the alpha channel: transparent pixels are the region
to regenerate (alpha 0 -> mask 1, opaque -> 0), so an image with a hole erased
in a paint program feeds inpainting directly. Without alpha the mask is all 0.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import UserInputError
from engine.spec import (
    FILES_KEY,
    ROLE_OPENS_PICTURES,
    ComputeContext,
    Input,
    NodeSpec,
    Output,
    Param,
    ParamType,
    SocketType,
)
from engine.values import Image

_MAX_PIXELS = 8192 * 8192


def _load(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    rgba = read_rgba(params["path"])  # (H, W, 4) uint8
    array = torch.from_numpy(rgba).permute(2, 0, 1).float() / 255.0  # (4, H, W)
    pixels = array[:3].unsqueeze(0).contiguous()  # (1, 3, H, W)
    mask = (1.0 - array[3:]).unsqueeze(0).contiguous()  # (1, 1, H, W), 1 = transparent
    return {"image": Image(pixels), "mask": mask}


def read_rgba(path: str) -> Any:
    """A picture file as (H, W, 4) uint8 RGBA, upright; UserInputError naming `path` if unreadable."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    if not path:
        raise UserInputError("no image file chosen", "path")
    try:
        with PILImage.open(path) as img:
            if img.width * img.height > _MAX_PIXELS:
                raise UserInputError(f"{path}: {img.width}x{img.height} is too large to load", "path")
            upright = ImageOps.exif_transpose(img)
            return np.array(upright.convert("RGBA"))  # a writable copy
    except FileNotFoundError:
        raise UserInputError(f"{path}: file not found", "path") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserInputError(f"{path}: not an image Kiln can read ({type(exc).__name__})", "path") from None
    except PILImage.DecompressionBombError:
        raise UserInputError(f"{path}: too large to load", "path") from None


ROUNDING_MODES = ("round", "truncate")


def to_uint8_hwc(pixels: Any, rounding: str = "round") -> list:
    """(B, 3, H, W) floats in [0, 1] -> list of (H, W, 3) uint8 numpy arrays.

    "round": to the nearest level (Kiln); "truncate": down, as ComfyUI's SaveImage
    (`clip(255 * x, 0, 255).astype(uint8)`)."""
    import numpy as np

    # numpy: torch's thread pool makes this small element-wise job slow on a busy CPU
    array = pixels.detach().float().cpu().numpy()
    if rounding == "truncate":
        rounded = np.clip(array * 255.0, 0, 255).astype(np.uint8)  # (B, 3, H, W)
    else:
        rounded = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return [np.ascontiguousarray(item.transpose(1, 2, 0)) for item in rounded]


def _save(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    image: Image = inputs["image"]
    folder, stem = _output_place(ctx.settings.output_dir, params["prefix"])
    paths = []
    for index, pixels in enumerate(to_uint8_hwc(image.pixels, params.get("rounding", "round"))):
        info = _image_info(ctx.node_id, image, index)
        paths.append(_write_new_png(folder, stem, pixels, ctx.graph_json, info))
    return {"image": image, FILES_KEY: paths}


def _image_info(node_id: str, image: Image, index: int) -> dict[str, Any]:
    info: dict[str, Any] = {"width": image.size[0], "height": image.size[1], "node": node_id,
                            "batch_index": index}
    if index < len(image.seeds):
        info["seed"] = int(image.seeds[index])
    return info


NAME_MAX = 255  # bytes in one file name on the usual file systems (ext4, APFS, NTFS in UTF-16 units)
_NUMBER_AND_SUFFIX = len("_00000.png")


def prefix_problem(prefix: Any) -> str | None:
    """Why `prefix` cannot name files in the output folder, checked before the graph runs."""
    if not isinstance(prefix, str):
        return None  # the type check reports it
    shown = repr(prefix) if len(repr(prefix)) <= 50 else repr(prefix)[:47] + "..."
    if "\0" in prefix:
        return f"the prefix {shown} holds a NUL character, which no file name may contain"
    parts = Path(prefix.strip()).parts
    if not parts or Path(prefix).is_absolute() or ".." in parts or not parts[-1].strip("."):
        return (f"the prefix {shown} is not usable: it must be a name inside the output folder "
                "(sub-folders allowed, no leading / or ..)")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        size = len(part.encode("utf-8", "surrogatepass")) + (_NUMBER_AND_SUFFIX if last else 0)
        if size > NAME_MAX:
            what = "the file name" if last else "a folder name"
            return (f"{what} would be {size} bytes (with the number and .png), over the file system's "
                    f"limit of {NAME_MAX}; shorten the prefix {shown}")
    return None


def _output_place(output_dir: str, prefix: str) -> tuple[Path, str]:
    """(folder, file stem) for a prefix such as "kiln" or "portraits/face"."""
    problem = prefix_problem(prefix)
    if problem:
        raise UserInputError(problem, "prefix")
    parts = Path(prefix.strip()).parts
    folder = Path(output_dir, *parts[:-1])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create output folder {folder}: {exc.strerror or exc}", "prefix") from None
    return folder, parts[-1]


def _write_new_png(folder: Path, stem: str, pixels: Any, graph: dict, info: dict) -> str:
    """Write `{stem}_{NNNNN}.png` with the next free number; never overwrites a file."""
    from engine.pngmeta import encode_png

    return write_numbered_png(folder, stem, encode_png(pixels, graph, info))


def write_numbered_png(folder: Path, stem: str, data: bytes) -> str:
    """Write PNG bytes as `{stem}_{NNNNN}.png` with the next free number; never overwrites a file."""
    number = _next_number(folder, stem)
    while True:
        path = folder / f"{stem}_{number:05d}.png"
        if _create_exclusive(path, data):
            return str(path)
        number += 1


def save_png_bytes(output_dir: str, prefix: str, data: bytes) -> str:
    """Write encoded PNG bytes where SaveImage with `prefix` would put them (a render farm's driver
    writes the pictures its workers made: same folder, same numbering)."""
    folder, stem = _output_place(output_dir, prefix)
    return write_numbered_png(folder, stem, data)


def prefix_of(relative_path: str) -> str:
    """The SaveImage prefix that wrote `relative_path` (`sub/kiln_00003.png` -> `sub/kiln`)."""
    head, name = os.path.split(relative_path)
    match = re.fullmatch(r"(.+)_\d{5,}\.png", name)
    if match is None:
        raise ValueError(f"{relative_path!r} is not a name SaveImage writes")
    return os.path.join(head, match.group(1)) if head else match.group(1)


def _next_number(folder: Path, stem: str) -> int:
    pattern = re.compile(re.escape(stem) + r"_(\d{5,})\.png")
    numbers = [int(m.group(1)) for name in os.listdir(folder) if (m := pattern.fullmatch(name))]
    return max(numbers, default=0) + 1


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Write a complete file at `path` unless one exists (then False). Readers never see half."""
    from engine import atomic

    try:
        return atomic.create_new(path, data)
    except OSError as exc:
        raise UserInputError(f"cannot write {path}: {exc.strerror or exc}", "prefix") from None


def _preview(ctx: ComputeContext, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    return {"image": inputs["image"]}


LOAD_IMAGE = NodeSpec(
    type="LoadImage", title="Load Image", category="image",
    aliases=("LoadImage", "Open Image"),
    help="Read a PNG/JPEG/WebP file. MASK is 1 where the image is transparent (to regenerate).",
    compute=_load, roles=(ROLE_OPENS_PICTURES,),
    outputs=(Output("image", SocketType.IMAGE), Output("mask", SocketType.MASK, "1 = transparent")),
    params=(Param("path", ParamType.PATH, "", "image file", inline=True),),
)

SAVE_IMAGE = NodeSpec(
    type="SaveImage", title="Save Image", category="image",
    aliases=("SaveImage",),
    help="Write each image as {prefix}_NNNNN.png in the output folder, with the graph embedded.",
    compute=_save,
    inputs=(Input("image", SocketType.IMAGE),),
    outputs=(Output("image", SocketType.IMAGE, "the same image, for viewing"),),
    params=(Param("prefix", ParamType.STRING, "kiln", "file name start; may include sub-folders",
                  inline=True, validator=prefix_problem),
            Param("rounding", ParamType.CHOICE, "round", "floats to 8-bit levels: round to the nearest "
                  "(Kiln) or truncate, as ComfyUI's SaveImage does (a converted ComfyUI graph sets it)",
                  choices=ROUNDING_MODES)),
    output_node=True,
    side_effects=True,
)

PREVIEW_IMAGE = NodeSpec(
    type="PreviewImage", title="Preview Image", category="image",
    aliases=("PreviewImage",),
    help="Show the image in the viewer without writing a file.",
    compute=_preview,
    inputs=(Input("image", SocketType.IMAGE),),
    outputs=(Output("image", SocketType.IMAGE),),
    output_node=True,
)

SPECS = (LOAD_IMAGE, SAVE_IMAGE, PREVIEW_IMAGE)
