"""Opening files of unknown kind safely: only regular files, their kind told from the first bytes,
and never more read than a cap allows, so /dev/zero, a pipe or a 3 GB checkpoint handed over as a
graph is refused at once, naming the file. No Qt, no torch.
"""
from __future__ import annotations

import os
import stat

from engine.errors import GraphFileError

HEAD_BYTES = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_SIGNATURES = {
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a zip archive (a PyTorch checkpoint, perhaps)",
    b"%PDF": "a PDF document",
}


def regular_file_size(path: str) -> int:
    """The size of `path`, refusing what is not a regular file (a folder, a device, a pipe)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GraphFileError(path, "no such file") from None
    except ValueError:
        raise GraphFileError(path, "is not a file name the system can use (it holds a NUL byte)") from None
    except OSError as exc:
        raise GraphFileError(path, f"cannot be read: {exc.strerror or 'read error'}") from None
    if stat.S_ISDIR(st.st_mode):
        raise GraphFileError(path, "is a folder, not a graph file")
    if not stat.S_ISREG(st.st_mode):
        raise GraphFileError(path, "is not a regular file (a device, pipe or socket), not a graph file")
    return st.st_size


def binary_kind(head: bytes, size: int) -> str | None:
    """A name for well-known binary content from its first bytes, or None when it may be text."""
    for magic, name in _SIGNATURES.items():
        if head.startswith(magic):
            return name
    if head.startswith(PNG_SIGNATURE):
        return "a PNG image"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "a safetensors model file"
    if b"\x00" in head:
        return "binary data"
    return None


def read_capped(path: str, cap: int, what: str = "graph file") -> tuple[bytes, int]:
    """(the first HEAD_BYTES of a regular file, its size); GraphFileError when it is larger than `cap`
    and not binary (a binary file is named by `binary_kind` from these bytes instead)."""
    size = regular_file_size(path)
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as exc:
        raise GraphFileError(path, f"cannot be read: {exc.strerror or 'read error'}") from None
    if size > cap and binary_kind(head, size) is None:
        raise GraphFileError(path, f"is too large for a {what} ({size // (1024 * 1024)} MB; at most "
                                   f"{cap // (1024 * 1024)} MB)")
    return head, size


def read_whole(path: str, cap: int) -> bytes:
    """At most cap + 1 bytes of `path`; GraphFileError when there are more (it grew since)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(cap + 1)
    except OSError as exc:
        raise GraphFileError(path, f"cannot be read: {exc.strerror or 'read error'}") from None
    if len(raw) > cap:
        raise GraphFileError(path, f"is too large for a graph file (over {cap // (1024 * 1024)} MB)")
    return raw
