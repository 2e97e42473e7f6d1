"""The LAYOUT value: labelled boxes in normalised picture coordinates, and its one validator.

A box is [x0, y0, x1, y1] with the origin top-left and every coordinate in [0, 1],
x0 < x1 and y0 < y1. In graph files and params a layout is JSON:
[{"label": "red circle", "box": [x0, y0, x1, y1]}, ...]; `Layout.from_json` is the
only place that checks it, and its message names the box (numbered from 1, as in
the editor's table) and the field. No torch, no Qt, no numpy.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import KilnError, quote

_SHAPE = '{"label": ..., "box": [x0, y0, x1, y1]}'


class LayoutError(KilnError):
    """A layout that cannot be used. `number` (from 1) and `field` say where, `problem` says what."""

    def __init__(self, problem: str, number: int | None = None, field: str | None = None):
        where = f"box {number}" if number is not None else "the layout"
        super().__init__(f'{where}, "{field}": {problem}' if field else f"{where}: {problem}")
        self.problem = problem
        self.number = number
        self.field = field


@dataclass(frozen=True)
class LayoutBox:
    label: str  # whitespace collapsed, never empty
    box: tuple[float, float, float, float]  # x0, y0, x1, y1

    @classmethod
    def from_json(cls, item: Any, number: int, vocabulary: Sequence[str] | None = None) -> LayoutBox:
        """One {"label", "box"} item, the `number`-th of its layout; LayoutError when it is not usable."""
        if not isinstance(item, dict):
            raise LayoutError(f"is not {_SHAPE}", number)
        label = _checked_label(item.get("label"), number, vocabulary)
        return cls(label, _checked_box(item.get("box"), number))

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "box": list(self.box)}


@dataclass(frozen=True)
class Layout:
    boxes: tuple[LayoutBox, ...] = ()

    @classmethod
    def from_json(cls, raw: Any, vocabulary: Sequence[str] | None = None) -> Layout:
        """A layout from its JSON form. With a vocabulary, every label must come from it."""
        if not isinstance(raw, list):
            raise LayoutError(f"a layout is a list of {_SHAPE}, not {type(raw).__name__}")
        return cls(tuple(LayoutBox.from_json(item, i + 1, vocabulary) for i, item in enumerate(raw)))

    def to_json(self) -> list[dict[str, Any]]:
        return [box.to_json() for box in self.boxes]

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self) -> Iterator[LayoutBox]:
        return iter(self.boxes)


def _checked_label(label: Any, number: int, vocabulary: Sequence[str] | None) -> str:
    if not isinstance(label, str):
        raise LayoutError(f"needs text, got {label!r:.40}", number, "label")
    cleaned = " ".join(label.split())
    if not cleaned:
        raise LayoutError("is empty", number, "label")
    if vocabulary is not None and cleaned not in vocabulary:
        raise LayoutError(f"{quote(cleaned)} is not one the built-in model knows (e.g. {vocabulary[0]!r}); "
                          f"choose labels 'free text' for a text model", number, "label")
    return cleaned


def _checked_box(box: Any, number: int) -> tuple[float, float, float, float]:
    if not _four_numbers(box):
        raise LayoutError(f"needs four numbers [x0, y0, x1, y1], got {box!r:.60}", number, "box")
    x0, y0, x1, y1 = (float(v) for v in box)
    shown = f"[{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise LayoutError(f"{shown} is outside [0, 1]", number, "box")
    if x1 <= x0 or y1 <= y0:
        raise LayoutError(f"{shown} needs x0 < x1 and y0 < y1", number, "box")
    return x0, y0, x1, y1


def _four_numbers(value: Any) -> bool:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
