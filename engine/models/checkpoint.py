"""Reading checkpoint files safely: safetensors, torch zip/legacy pickles, diffusers folders.

A `TensorSource` gives the names and shapes of the tensors in a file without
loading them, and loads one tensor at a time straight to a device and dtype.
Torch pickles are only ever read through `torch.load(weights_only=True)`: a file
whose pickle names anything that could run code is refused before it is read.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch

from engine.errors import KilnError

SAFETENSORS_EXTS = (".safetensors",)
TORCH_EXTS = (".ckpt", ".pt", ".pth", ".bin")

# Classes Lightning and numpy put beside the weights of real .ckpt files (callbacks,
# loop state, numpy scalars). They are replaced by an inert stand-in that keeps
# nothing and runs nothing, so such files load without trusting their pickle.
_INERT_GLOBAL_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
_INERT_GLOBALS = frozenset({
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
    "argparse.Namespace", "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata", "omegaconf.base.Metadata", "omegaconf.nodes.AnyNode",
    "typing.Any", "builtins.getattr",
})


class CheckpointError(KilnError):
    """A checkpoint file that cannot be used; the message names the file."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class TensorSource(Protocol):
    """Tensors by name, readable one at a time."""

    path: str
    format: str  # safetensors | torch | diffusers

    def shapes(self) -> dict[str, tuple[int, ...]]: ...

    def get(self, key: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor: ...

    def metadata(self) -> dict[str, str]: ...


class SafetensorsSource:
    """A .safetensors file: the header gives shapes, tensors are read on demand."""

    format = "safetensors"

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.path = str(path)
        _check_safetensors_header(self.path)
        try:
            self._file = safe_open(self.path, framework="pt", device="cpu")
        except Exception as exc:
            raise CheckpointError(path, f"cannot read safetensors file ({_one_line(exc)})") from exc
        self._shapes = {k: tuple(self._file.get_slice(k).get_shape()) for k in self._file.keys()}  # noqa: SIM118

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def metadata(self) -> dict[str, str]:
        return dict(self._file.metadata() or {})

    def get(self, key: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
        try:
            tensor = self._file.get_tensor(key)
        except Exception as exc:
            raise CheckpointError(self.path, f"cannot read tensor {key!r} ({_one_line(exc)})") from exc
        return _to(tensor, device, dtype)


class TorchSource:
    """A torch.save file (.ckpt/.pt/.bin), read with weights_only=True only."""

    format = "torch"

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        loaded = _safe_torch_load(self.path)
        self._tensors = _find_state_dict(loaded, self.path)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self._tensors.items()}

    def metadata(self) -> dict[str, str]:
        return {}

    def get(self, key: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
        return _to(self._tensors[key], device, dtype)


class DictSource:
    """Tensors already in memory (tests, converted files)."""

    format = "memory"

    def __init__(self, tensors: dict[str, torch.Tensor], path: str = "<memory>", meta: dict[str, str] | None = None):
        self.path = path
        self._tensors = tensors
        self._meta = dict(meta or {})

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self._tensors.items()}

    def metadata(self) -> dict[str, str]:
        return dict(self._meta)

    def get(self, key: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
        return _to(self._tensors[key], device, dtype)


Transform = Callable[[torch.Tensor], torch.Tensor]


class MappedSource:
    """Tensors of other sources seen under new names (diffusers -> original layout)."""

    def __init__(self, path: str, fmt: str, entries: dict[str, tuple[TensorSource, str, Transform | None]],
                 meta: dict[str, str] | None = None):
        self.path = path
        self.format = fmt
        self._entries = entries  # new name -> (source, old name, optional reshape)
        self._meta = dict(meta or {})

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for name, (source, old, transform) in self._entries.items():
            shape = source.shapes()[old]
            if transform is not None:
                shape = tuple(transform(torch.empty(shape, device="meta")).shape)
            out[name] = shape
        return out

    def metadata(self) -> dict[str, str]:
        return dict(self._meta)

    def get(self, key: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
        source, old, transform = self._entries[key]
        tensor = source.get(old, device, dtype)
        return transform(tensor) if transform is not None else tensor


def sniff_format(path: str | os.PathLike) -> str:
    """'safetensors', 'torch' or 'diffusers' for a path; raises CheckpointError otherwise."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(path, "no such file or folder")
    if p.is_dir():
        if (p / "unet" / "config.json").is_file():
            return "diffusers"
        raise CheckpointError(path, "is a folder but not a diffusers model (no unet/config.json)")
    if not p.is_file():
        raise CheckpointError(path, "is not a regular file (a device or pipe), not a checkpoint")
    with open(p, "rb") as f:
        head = f.read(16)
    if len(head) == 0:
        raise CheckpointError(path, "the file is empty")
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= p.stat().st_size:
        return "safetensors"  # checked first: a header length may start with byte 0x80
    if head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "torch"
    ext = p.suffix.lower()
    if ext in SAFETENSORS_EXTS:
        return "safetensors"
    raise CheckpointError(path, "not a checkpoint (expected .safetensors, .ckpt/.pt or a diffusers folder)")


def open_source(path: str | os.PathLike) -> TensorSource:
    """Open a single checkpoint file (not a diffusers folder; see keymaps.open_diffusers)."""
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return SafetensorsSource(path)
    if fmt == "torch":
        return TorchSource(path)
    raise CheckpointError(path, "is a diffusers folder; open it with engine.models.keymaps.open_diffusers")


_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


def _check_safetensors_header(path: str) -> None:
    """Catch truncated, foreign or malformed files with a clear message before safetensors does."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(path, "truncated safetensors file (no header)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise CheckpointError(path, "truncated or not a safetensors file (header runs past the end)")
        if header_len > _MAX_HEADER_BYTES:
            raise CheckpointError(path, f"not a safetensors file (header of {header_len} bytes; at most 100 MB)")
        try:
            header = json.loads(f.read(header_len))
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(path, "not a safetensors file (unreadable header)") from exc
    ends = _tensor_ends(header, path)
    end = max(ends.values(), default=0)
    if 8 + header_len + end > size:
        first = next(k for k, v in ends.items() if 8 + header_len + v > size)
        raise CheckpointError(path, f"truncated file: tensor {first!r} runs past the end "
                                    f"({size} bytes, needs {8 + header_len + end})")


def _tensor_ends(header: Any, path: str) -> dict[str, int]:
    """{tensor name: end of its data}, after checking each entry's fields (dtype, shape, data_offsets)."""
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a safetensors file (its header is not a JSON object)")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(path, "malformed safetensors header: '__metadata__' must map names to text")
    ends = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _entry_problem(entry)
        if problem:
            raise CheckpointError(path, f"malformed safetensors header: tensor {name[:80]!r} {problem}")
        ends[name] = entry["data_offsets"][1]
    return ends


def _entry_problem(entry: Any) -> str | None:
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(entry, dict):
        return "is not a JSON object"
    if not isinstance(entry.get("dtype"), str):
        return "has no text 'dtype'"
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(whole(v) for v in shape):
        return "has a 'shape' that is not a list of whole numbers"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(whole(v) for v in offsets):
        return "has 'data_offsets' that are not two whole numbers"
    if offsets[0] > offsets[1]:
        return "has 'data_offsets' that end before they start"
    return None


def _safe_torch_load(path: str) -> Any:
    """torch.load(weights_only=True), refusing pickles that name code to run."""
    stand_ins = _inert_stand_ins(path)
    try:
        with torch.serialization.safe_globals(stand_ins):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line naming the file
        culprit = _unsafe_global_in_message(str(exc))
        if culprit:
            raise CheckpointError(path, _refusal(culprit)) from None
        raise CheckpointError(path, f"cannot read torch checkpoint ({_one_line(exc)}); "
                                    "the file may be truncated or not a checkpoint") from None


def _inert_stand_ins(path: str) -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """Check the pickle's globals before loading; inert ones get a stand-in, others refuse."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001
        return []  # legacy (non-zip) format: torch.load(weights_only=True) still refuses code
    for name in names:
        if not _is_inert(name):
            raise CheckpointError(path, _refusal(name))
    return [(_Inert, name) for name in names]


def _is_inert(name: str) -> bool:
    return name in _INERT_GLOBALS or name.startswith(_INERT_GLOBAL_PREFIXES)


class _Inert:
    """Stands in for bookkeeping objects in .ckpt files; keeps and runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _refusal(name: str) -> str:
    return (f"refused to load: its pickle asks to run code ({name}); only plain tensors are "
            "accepted from .ckpt/.pt files (convert it to .safetensors with a tool you trust)")


def _unsafe_global_in_message(message: str) -> str | None:
    marker = "GLOBAL "
    if marker in message:
        return message.split(marker, 1)[1].split()[0]
    if "Unsupported operand" in message or "Unsupported class" in message:
        return message.split("Unsupported", 1)[1].split(".")[0].strip()
    return None


def _find_state_dict(loaded: Any, path: str) -> dict[str, torch.Tensor]:
    """The flat name -> tensor dict inside a loaded torch checkpoint."""
    if isinstance(loaded, dict):
        for key in ("state_dict", "model_state_dict", "module"):
            inner = loaded.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                loaded = inner
                break
        tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(path, "holds no tensors (not a model checkpoint)")


def _to(tensor: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


_MAX_JSON_BYTES = 16 * 1024 * 1024


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from a sidecar/config file, with errors naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_JSON_BYTES + 1)
        if len(raw) > _MAX_JSON_BYTES:
            raise CheckpointError(path, "is too large for a config file (over 16 MB)")
        value = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise CheckpointError(path, f"cannot be read ({exc.strerror or 'read error'})") from None
    except (ValueError, RecursionError):
        raise CheckpointError(path, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(path, "expected a JSON object")
    return value


def first_existing(paths: Iterable[Path]) -> Path | None:
    return next((p for p in paths if p.exists()), None)
