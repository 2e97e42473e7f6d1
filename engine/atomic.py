"""Files written whole or not at all: readers see the old file or the new one, never half of one.

Each write goes to a temporary file beside the target (same folder, so the same file system),
which then replaces the target (os.replace) or, for `create_new`, is hard-linked to a name that
must not exist yet. With fsync=True the data reaches the disk before the rename, so a power cut
cannot leave an empty file under the new name (graph files, pictures). No Qt, no torch.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


def _temp_path(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def replacing(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False,
              encoding: str | None = None) -> Iterator[IO[Any]]:
    """An open temporary file that replaces `path` when the block ends without an error.

    For writers that stream (torch.save, np.save, json.dump): `with replacing(p) as f: torch.save(obj, f)`.
    On an error the temporary file is removed and `path` is left as it was."""
    target = os.fspath(path)
    tmp = _temp_path(target)
    try:
        with open(tmp, mode.replace("w", "x"), encoding=encoding) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Replace `path` with `data` atomically."""
    with replacing(path, "wb", fsync=fsync) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False, encoding: str = "utf-8") -> None:
    """Replace `path` with `text` atomically."""
    write_bytes(path, text.encode(encoding), fsync=fsync)


def create_new(path: str | os.PathLike, data: bytes) -> bool:
    """Write a complete file at `path` unless one exists there (then False, and nothing is written).

    On a file system without hard links the file is created exclusively and written in place."""
    target = os.fspath(path)
    tmp = _temp_path(target)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        try:
            os.link(tmp, target)  # atomic, and fails if `target` exists
        except FileExistsError:
            return False
        return True
    except OSError:  # a file system without hard links
        return _create_in_place(target, data)
    finally:
        _unlink_quietly(tmp)


def _create_in_place(path: str, data: bytes) -> bool:
    try:
        with open(path, "xb") as f:
            f.write(data)
        return True
    except FileExistsError:
        return False
