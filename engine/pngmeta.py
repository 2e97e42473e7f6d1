"""PNG images that carry the graph and the run settings that made them.

Text chunks written (Pillow's PngInfo):

- "kiln.graph": the graph file document (engine.graph_file.graph_to_dict), compact JSON, compressed iTXt.
- "kiln.info": JSON with what the run used; by convention "seed", "steps", "sampler", "scheduler",
  "cfg_scale", "eta", "denoise", "width", "height", "prompt", "negative_prompt" and
  "models": [{"role", "file", "sha256"}], but any JSON object is kept.
- "parameters": a human-readable summary (prompt line, negative prompt line, settings line),
  the chunk other image tools show.

Reading parses the PNG chunks directly (no pixel decoding, checksums verified), so
`read_png_graph` is fast and does not depend on Pillow's text size limits.
"""
from __future__ import annotations

import io
import json
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from engine import atomic
from engine.errors import GraphFileError, KilnError

GRAPH_KEY = "kiln.graph"
INFO_KEY = "kiln.info"
SUMMARY_KEY = "parameters"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_TEXT_BYTES = 64 * 1024 * 1024  # a decompressed text chunk larger than this is refused
_SETTINGS_ORDER = ("steps", "sampler", "scheduler", "cfg_scale", "eta", "denoise", "seed")


# --- writing ---------------------------------------------------------------


def encode_png(pixels: Any, graph_dict: dict | None = None, info: dict | None = None) -> bytes:
    """PNG bytes of `pixels`, a uint8 numpy array (H, W, 3) or (H, W, 4), with Kiln metadata."""
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or 0 in pixels.shape:
        raise ValueError(f"encode_png expects uint8 pixels (H, W, 3 or 4), got {pixels.dtype} {pixels.shape}")
    chunks = PngInfo()
    if graph_dict is not None:
        chunks.add_itxt(GRAPH_KEY, _compact_json(graph_dict), zip=True)
    if info is not None:
        chunks.add_itxt(INFO_KEY, _compact_json(info), zip=True)
        chunks.add_text(SUMMARY_KEY, summary_text(info))  # tEXt, or iTXt when not latin-1
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", pnginfo=chunks)
    return buffer.getvalue()


def write_png(path: str | os.PathLike, pixels: Any, graph_dict: dict | None, info: dict | None) -> None:
    """Encode and write atomically (readers never see half an image)."""
    path = os.fspath(path)
    data = encode_png(pixels, graph_dict, info)
    try:
        atomic.write_bytes(path, data, fsync=True)
    except OSError as exc:
        raise KilnError(f"{path}: cannot be written: {exc.strerror or exc}") from None


def _compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False, default=_plain)


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and paths, as nodes may hand them over, become plain JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} cannot be stored in PNG metadata")


def summary_text(info: dict) -> str:
    """Prompt, negative prompt and one "Key: value, ..." settings line."""
    lines = []
    if info.get("prompt"):
        lines.append(_one_line(info["prompt"]))
    if info.get("negative_prompt"):
        lines.append("Negative prompt: " + _one_line(info["negative_prompt"]))
    settings = [f"{_label(key)}: {_one_line(info[key])}" for key in _settings_keys(info)]
    if "width" in info and "height" in info:
        settings.append(f"Size: {info['width']}x{info['height']}")
    for model in info.get("models") or []:
        if isinstance(model, dict) and model.get("file"):
            digest = f" (sha256 {str(model['sha256'])[:10]})" if model.get("sha256") else ""
            settings.append(f"{_label(str(model.get('role') or 'model'))}: {model['file']}{digest}")
    if settings:
        lines.append(", ".join(settings))
    return "\n".join(lines)


def _settings_keys(info: dict) -> list[str]:
    skip = {"prompt", "negative_prompt", "width", "height", "models"}
    scalar = [k for k, v in info.items() if k not in skip and isinstance(v, (str, int, float, bool))]
    ordered = [k for k in _SETTINGS_ORDER if k in scalar]
    return ordered + sorted(k for k in scalar if k not in ordered)


def _label(key: str) -> str:
    return {"cfg_scale": "CFG scale"}.get(key, key.replace("_", " ").capitalize())


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


# --- reading ---------------------------------------------------------------


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """Every text chunk of a PNG as {key: text}; GraphFileError if it is not a readable PNG.
    The file is read chunk by chunk: only text chunks are read (each at most _MAX_TEXT_BYTES)."""
    path = os.fspath(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise GraphFileError(path, "is not a regular file, not a PNG image")
        with open(path, "rb") as f:
            if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise GraphFileError(path, "is not a PNG image")
            texts: dict[str, str] = {}
            for chunk_type, body in _chunks(f, os.fstat(f.fileno()).st_size, path):
                key, text = _decode_text_chunk(chunk_type, body, path)
                texts.setdefault(key, text)
    except (OSError, ValueError) as exc:
        raise GraphFileError(path, f"cannot be read: {getattr(exc, 'strerror', None) or 'bad file name'}") from None
    return texts


def read_png_graph(path: str | os.PathLike) -> dict:
    """The graph document embedded by Kiln in a PNG."""
    path = os.fspath(path)
    texts = read_png_text(path)
    if GRAPH_KEY not in texts:
        comfy = "prompt" in texts or "workflow" in texts
        raise GraphFileError(path, "is a ComfyUI image; it has no Kiln graph embedded" if comfy
                             else "has no Kiln graph embedded")
    return _embedded_json(texts[GRAPH_KEY], "graph", path)


def read_png_info(path: str | os.PathLike) -> dict:
    """The run info (seed, models and their hashes, sampler settings) embedded by Kiln."""
    path = os.fspath(path)
    texts = read_png_text(path)
    if INFO_KEY not in texts:
        raise GraphFileError(path, "has no Kiln run info embedded")
    return _embedded_json(texts[INFO_KEY], "run info", path)


def _embedded_json(text: str, what: str, path: str) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise GraphFileError(path, f"has a damaged Kiln {what} embedded (not valid JSON)") from None
    if not isinstance(value, dict):
        raise GraphFileError(path, f"has a damaged Kiln {what} embedded (not a JSON object)")
    return value


def _chunks(f: BinaryIO, size: int, path: str) -> Iterator[tuple[bytes, bytes]]:
    """Yield (type, body) for each text chunk up to IEND, checking lengths and their CRCs; other
    chunks (the pixels) are skipped unread."""
    while True:
        header = f.read(8)
        if len(header) < 8:
            raise GraphFileError(path, "is a damaged PNG (cut short)")
        length, chunk_type = struct.unpack(">I4s", header)
        if f.tell() + length + 4 > size:
            raise GraphFileError(path, "is a damaged PNG (cut short)")
        if chunk_type == b"IEND":
            return
        if chunk_type not in (b"tEXt", b"zTXt", b"iTXt"):
            f.seek(length + 4, os.SEEK_CUR)
            continue
        if length > _MAX_TEXT_BYTES:
            raise GraphFileError(path, "is a damaged PNG (a text chunk over 64 MB)")
        body, crc = f.read(length), f.read(4)
        if len(body) < length or len(crc) < 4:
            raise GraphFileError(path, "is a damaged PNG (cut short)")
        if zlib.crc32(chunk_type + body) != int.from_bytes(crc, "big"):
            name = chunk_type.decode("latin-1")
            raise GraphFileError(path, f"is a damaged PNG (bad checksum in its {name!r} chunk)")
        yield chunk_type, body


def _decode_text_chunk(chunk_type: bytes, body: bytes, path: str) -> tuple[str, str]:
    key, _, rest = body.partition(b"\0")
    try:
        if chunk_type == b"tEXt":
            return key.decode("latin-1"), rest.decode("latin-1")
        if chunk_type == b"zTXt":
            return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
        compressed, rest = rest[:1] == b"\x01", rest[2:]
        _lang, _, rest = rest.partition(b"\0")
        _translated_key, _, text = rest.partition(b"\0")
        return key.decode("latin-1"), (_inflate(text) if compressed else text).decode("utf-8")
    except (zlib.error, UnicodeDecodeError):
        name = key.decode("latin-1")
        raise GraphFileError(path, f"is a damaged PNG (its {name!r} text cannot be decoded)") from None


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, _MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise zlib.error("text chunk too large")
    return out
