"""Node results keyed by what produced them: a byte-bounded memory LRU plus a disk store.

A node's key is a sha256 over its type, spec version, params (canonical JSON),
the identity of files its params name, and the keys of its inputs (see
`node_key`). Node ids are not part of it, so identical subgraphs share results
and an edit changes the keys of exactly the nodes downstream of it.

The disk store is content-addressed: each stored value is an object named by
the sha256 of its content (`content_digest` of engine.values.to_bytes) under
`<cache dir>/results/objects/`, and a ref file `results/refs/<key[:2]>/<key>.<output>`
holds the object's name. A value passed through unchanged (PreviewImage, a
disabled node) is stored once. Every write goes to a temp file then os.replace,
so a crash leaves the old state or the new one; an object whose content no
longer matches its name, or that does not parse, is a miss and is deleted. Only storable
values (Image, Latent, SemanticMap, MASK tensors) go to disk; models and
conditionings stay in memory. Reads refresh mtimes; over budget, the least
recently used objects go first, with the refs not used since.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine import atomic
from engine import values as V
from engine.spec import EngineSettings

_OBJECT_SUFFIX = ".kobj"
_STALE_TMP_SECONDS = 3600


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/kiln, else ~/.cache/kiln."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kiln"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=repr)


def file_identity(path: str) -> list:
    """[abs path, size, mtime_ns] of a file, or [abs path, "missing"] when absent."""
    absolute = os.path.abspath(path)
    try:
        st = os.stat(absolute)
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return [absolute, "missing"]
    return [absolute, st.st_size, st.st_mtime_ns]


def node_key(type_name: str, version: int, params: Mapping[str, Any],
             files: Mapping[str, list], inputs: Mapping[str, tuple[str, str]]) -> str:
    """sha256 hex over what determines a node's outputs.

    `files` maps a param name to its file identity; `inputs` maps an input name to
    the (key, output name) of the value feeding it.
    """
    payload = {"type": type_name, "version": version, "params": dict(params),
               "files": dict(files), "inputs": {k: list(v) for k, v in inputs.items()}}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class DiskStore:
    """Content-addressed values on disk, bounded in bytes. Thread-safe within a process;
    several processes may share the folder (writes are atomic, reads verify)."""

    def __init__(self, root: str | os.PathLike, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._used: int | None = None  # object bytes, measured on the first write
        self._lock = threading.Lock()

    def get(self, key: str, names: list[str]) -> dict[str, Any] | None:
        found: dict[str, Any] = {}
        for name in names:
            value = self._read(key, name)
            if value is None:
                return None
            found[name] = value
        return found or None

    def put(self, key: str, name: str, value: Any) -> None:
        try:
            payload = V.to_bytes(value)
        except Exception:  # noqa: BLE001 - e.g. a dtype safetensors cannot hold: stay memory-only
            return
        digest = content_digest(payload)
        obj = self._object_path(digest)
        try:
            if obj.exists():
                _touch(obj)
                added = 0
            else:
                _write_atomic(obj, payload)
                added = len(payload)
            _write_atomic(self._ref_path(key, name), digest.encode())
        except OSError:
            return  # a full or read-only disk only costs recomputation later
        self._account(added)

    def clear(self) -> None:
        with self._lock:
            for path in self._files("objects") + self._files("refs"):
                _unlink(path)
            self._used = 0

    def _object_path(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / f"{digest}{_OBJECT_SUFFIX}"

    def _ref_path(self, key: str, name: str) -> Path:
        return self.root / "refs" / key[:2] / f"{key}.{name}"

    def _read(self, key: str, name: str) -> Any | None:
        ref = self._ref_path(key, name)
        try:
            digest = ref.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            return None
        if not _is_digest(digest):
            _unlink(ref)
            return None
        obj = self._object_path(digest)
        try:
            payload = obj.read_bytes()
            if content_digest(payload) != digest:
                raise ValueError("damaged")
            value = V.from_bytes(payload)
        except Exception:  # noqa: BLE001 - gone, truncated, damaged, unreadable: a miss, rewritten later
            _unlink(obj)
            _unlink(ref)
            return None
        _touch(ref)
        _touch(obj)
        return value

    def _account(self, added: int) -> None:
        with self._lock:
            if self._used is None:
                self._used = sum(size for _, size, _ in self._scan("objects"))
            else:
                self._used += added
            if self._used > self.max_bytes:
                self._evict()

    def _files(self, kind: str) -> list[Path]:
        folder = self.root / kind
        if not folder.is_dir():
            return []
        return [p for sub in folder.iterdir() if sub.is_dir() for p in sub.iterdir()]

    def _scan(self, kind: str) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every file; stale temp files from crashes are removed."""
        entries = []
        now = time.time()
        for path in self._files(kind):
            try:
                st = path.stat()
            except OSError:
                continue
            if path.name.endswith(".tmp"):
                if now - st.st_mtime > _STALE_TMP_SECONDS:
                    _unlink(path)
                continue
            entries.append((st.st_mtime, st.st_size, path))
        return entries

    def _evict(self) -> None:
        """Delete the least recently used objects until the store fits, and the refs unused since."""
        objects = sorted(self._scan("objects"), key=lambda e: e[0])
        total = sum(size for _, size, _ in objects)
        cutoff = None
        for mtime, size, path in objects:
            if total <= self.max_bytes:
                break
            _unlink(path)
            total -= size
            cutoff = mtime
        if cutoff is not None:
            for mtime, _, path in self._scan("refs"):
                if mtime <= cutoff:
                    _unlink(path)
        self._used = total


class ResultCache:
    """Results of node runs: {output name: value} per node key. Thread-safe."""

    def __init__(self, memory_bytes: int = 2 * 1024**3, disk_dir: str | os.PathLike | None = None,
                 disk_bytes: int = 4 * 1024**3):
        self.memory_bytes = memory_bytes
        self.disk = DiskStore(Path(disk_dir) / "results", disk_bytes) if disk_dir is not None else None
        self._memory: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._memory_used = 0
        self._lock = threading.RLock()
        self.hits = self.disk_hits = self.misses = 0

    @classmethod
    def from_settings(cls, settings: EngineSettings, disk: bool = True) -> ResultCache:
        disk_dir = (settings.cache_dir or default_cache_dir()) if disk else None
        return cls(settings.memory_cache_bytes, disk_dir, settings.disk_cache_bytes)

    def get(self, key: str, output_names: Iterable[str]) -> dict[str, Any] | None:
        """All outputs of the node with this key, from memory or disk, else None."""
        names = list(output_names)
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None and all(n in entry[0] for n in names):
                self._memory.move_to_end(key)
                self.hits += 1
                return dict(entry[0])
        found = self.disk.get(key, names) if self.disk is not None and names else None
        with self._lock:
            if found is None:
                self.misses += 1
                return None
            self.disk_hits += 1
            self._memory_put(key, found)
        return dict(found)

    def put(self, key: str, outputs: Mapping[str, Any]) -> None:
        """Remember a node's complete outputs (on disk too when every one is storable)."""
        outputs = dict(outputs)
        with self._lock:
            self._memory_put(key, outputs)
        if self.disk is not None and outputs and all(V.is_storable(v) for v in outputs.values()):
            for name, value in outputs.items():
                self.disk.put(key, name, value)

    def clear(self, disk: bool = False) -> None:
        with self._lock:
            self._memory.clear()
            self._memory_used = 0
        if disk and self.disk is not None:
            self.disk.clear()

    @property
    def memory_used(self) -> int:
        return self._memory_used

    def __len__(self) -> int:
        return len(self._memory)

    def _memory_put(self, key: str, outputs: dict[str, Any]) -> None:
        size = sum(V.nbytes(v) for v in outputs.values())
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_used -= old[1]
        if size > self.memory_bytes:
            return  # larger than the whole budget: on disk only
        self._memory[key] = (outputs, size)
        self._memory_used += size
        while self._memory_used > self.memory_bytes:
            _, (_, evicted) = self._memory.popitem(last=False)
            self._memory_used -= evicted


def content_digest(payload: bytes) -> str:
    """sha256 of a safetensors payload with its JSON header in canonical form.

    safetensors writes header keys in no fixed order, so equal values may give
    different bytes; this digest is the same for equal values, and any damage
    to the payload changes it (or makes it unreadable: ValueError).
    """
    if len(payload) < 8:
        raise ValueError("payload too short")
    size = int.from_bytes(payload[:8], "little")
    if size > len(payload) - 8:
        raise ValueError("header longer than the payload")
    header = json.loads(payload[8:8 + size])
    digest = hashlib.sha256(canonical_json(header).encode())
    digest.update(memoryview(payload)[8 + size:])
    return digest.hexdigest()


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, data)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass
