"""The entry points of engine.comfy for graph_file, the command line and the editor."""
from __future__ import annotations

from typing import Any

from engine.comfy.formats import API, UI, FormatError, detect, from_png_texts, read
from engine.comfy.importer import ComfyReport, ImportRefused, import_document
from engine.errors import GraphFileError
from engine.graph import Graph

__all__ = ["API", "UI", "ComfyReport", "convert", "detect", "is_comfy_png", "png_document"]


def convert(data: Any, source: str, report: ComfyReport | None = None, lenient: bool = False) -> Graph:
    """The Kiln graph of a ComfyUI document. Strict (the default): a workflow using node types Kiln
    lacks is refused, naming each with its nodes; lenient (the editor): those nodes are kept as
    disabled placeholders of unknown type. GraphFileError names `source` for every problem."""
    report = report if report is not None else ComfyReport()
    what = "workflow" if detect(data) == UI else "API prompt"
    try:
        return import_document(read(data), report, lenient)
    except ImportRefused as exc:
        raise GraphFileError(source, f"is a ComfyUI {what} that {exc}") from None
    except FormatError as exc:
        raise GraphFileError(source, f"is a ComfyUI {what} Kiln cannot read: {exc}") from None


def is_comfy_png(texts: dict[str, str]) -> bool:
    """A PNG's text chunks carry a ComfyUI graph (and no Kiln one)."""
    from engine.pngmeta import GRAPH_KEY

    return GRAPH_KEY not in texts and (UI in texts or API in texts)


def png_document(texts: dict[str, str], source: str) -> Any:
    """The ComfyUI document a PNG carries: its `workflow` chunk when usable, else its `prompt`."""
    try:
        return from_png_texts(texts)
    except FormatError as exc:
        raise GraphFileError(source, str(exc)) from None
