"""Value conversions between ComfyUI widgets and Kiln params, both ways (named in engine.comfy.tables).

A conversion that cannot place a value raises Unplaceable with a short reason; the importer
reports it against the node and keeps the Kiln default.
"""
from __future__ import annotations

import ntpath
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.choices import find_model_file
from engine.errors import quote


class Unplaceable(Exception):
    """A ComfyUI value with no Kiln counterpart (or the reverse); str() says why."""


@dataclass
class Context:
    """What conversions may need to know about the whole workflow."""

    size: tuple[int, int] = (512, 512)  # the picture size areas are fractions of (width, height)
    notes: list[str] = field(default_factory=list)  # filled by conversions that change a value


def _enable(value: Any, ctx: Context) -> bool:
    if value in ("enable", "disable"):
        return value == "enable"
    if isinstance(value, bool):
        return value
    raise Unplaceable(f"{quote(value, 30)} is neither 'enable' nor 'disable'")


def _enable_back(value: Any, ctx: Context) -> str:
    return "enable" if value else "disable"


def _image_method_back(value: Any, ctx: Context) -> Any:
    """Kiln's Scale Image also offers "nearest", which ComfyUI calls "nearest-exact"."""
    return "nearest-exact" if value == "nearest" else value


def _fraction(value: Any, side: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unplaceable(f"{quote(value, 30)} is not a number of pixels")
    return round(float(value) / side, 6)


def _pixels(value: Any, side: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Unplaceable(f"{quote(value, 30)} is not a fraction")
    return round(float(value) * side)


def _model_file(value: Any, ctx: Context) -> Any:
    """A model name as ComfyUI writes it ("SD1.5\\model.safetensors"): kept when Kiln's model
    folders have it, else its base name when they have that."""
    if not isinstance(value, str) or not value or find_model_file(value, None):
        return value
    base = ntpath.basename(posixpath.basename(value))
    if base != value and find_model_file(base, None):
        ctx.notes.append(f"{quote(value)} is read as {quote(base)} from Kiln's model folders")
        return base
    return value


def _same(value: Any, ctx: Context) -> Any:
    return value


Converter = Callable[[Any, Context], Any]

CONVERTERS: dict[str, tuple[Converter, Converter]] = {  # name -> (import, export)
    "": (_same, _same),
    "enable": (_enable, _enable_back),
    "image_method": (_same, _image_method_back),
    "area_x": (lambda v, c: _fraction(v, c.size[0]), lambda v, c: _pixels(v, c.size[0])),
    "area_y": (lambda v, c: _fraction(v, c.size[1]), lambda v, c: _pixels(v, c.size[1])),
    "checkpoint": (_model_file, _same),
    "model_file": (_model_file, _same),
}

# ComfyUI's control_after_generate values (after a seed in widgets_values).
SEED_CONTROLS = ("fixed", "increment", "decrement", "randomize")
