"""Node results keyed by what produced them: a byte-bounded memory LRU plus a disk store.

A node's key is a sha256 over its type, spec version, params (canonical JSON),
the identity of files its params name, and the keys of its inputs (see
`node_key`). Node ids are not part of it, so identical subgraphs share results
and an edit changes the keys of exactly the nodes downstream of it.

Disk entries hold one output each, as `<key>.<output>.kres` under
`<cache dir>/results/<key[:2]>/`: a magic line, the sha256 of the payload, then
the payload (engine.values.to_bytes, safetensors). Writes go to a temp file then
os.replace, so a crash leaves either the old state or the new one; an entry
that fails its checksum or does not parse is a miss and is deleted. Only
storable values (Image, Latent, SemanticMap, MASK tensors) go to disk; models
and conditionings stay in memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

from engine import values as V
from engine.spec import EngineSettings

_MAGIC = b"KILNRES1\n"
_SUFFIX = ".kres"
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
    except OSError:
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


class ResultCache:
    """Results of node runs: {output name: value} per node key. Thread-safe."""

    def __init__(self, memory_bytes: int = 2 * 1024**3, disk_dir: str | os.PathLike | None = None,
                 disk_bytes: int = 4 * 1024**3):
        self.memory_bytes = memory_bytes
        self.disk_dir = Path(disk_dir) / "results" if disk_dir is not None else None
        self.disk_bytes = disk_bytes
        self._memory: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._memory_used = 0
        self._disk_used: int | None = None  # measured on the first write
        self._lock = threading.RLock()
        self.hits = self.disk_hits = self.misses = 0

    @classmethod
    def from_settings(cls, settings: EngineSettings, disk: bool = True) -> "ResultCache":
        disk_dir = (settings.cache_dir or default_cache_dir()) if disk else None
        return cls(settings.memory_cache_bytes, disk_dir, settings.disk_cache_bytes)

    # --- lookups ---------------------------------------------------------------
    def get(self, key: str, output_names: Iterable[str]) -> dict[str, Any] | None:
        """All outputs of the node with this key, from memory or disk, else None."""
        names = list(output_names)
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None and all(n in entry[0] for n in names):
                self._memory.move_to_end(key)
                self.hits += 1
                return dict(entry[0])
        found = self._disk_get(key, names)
        with self._lock:
            if found is None:
                self.misses += 1
                return None
            self.disk_hits += 1
            self._memory_put(key, found)
        return dict(found)

    def put(self, key: str, outputs: Mapping[str, Any]) -> None:
        """Remember a node's complete outputs (to disk too when every one is storable)."""
        outputs = dict(outputs)
        with self._lock:
            self._memory_put(key, outputs)
        if self.disk_dir is not None and outputs and all(V.is_storable(v) for v in outputs.values()):
            for name, value in outputs.items():
                self._disk_put(key, name, value)

    def clear(self, disk: bool = False) -> None:
        with self._lock:
            self._memory.clear()
            self._memory_used = 0
            if disk and self.disk_dir is not None:
                for path in self._disk_files():
                    _unlink(path)
                self._disk_used = 0

    @property
    def memory_used(self) -> int:
        return self._memory_used

    def __len__(self) -> int:
        return len(self._memory)

    # --- memory ----------------------------------------------------------------
    def _memory_put(self, key: str, outputs: dict[str, Any]) -> None:
        size = sum(V.nbytes(v) for v in outputs.values())
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_used -= old[1]
        if size > self.memory_bytes:
            return  # larger than the whole budget: keep it on disk only
        self._memory[key] = (outputs, size)
        self._memory_used += size
        while self._memory_used > self.memory_bytes:
            _, (_, evicted) = self._memory.popitem(last=False)
            self._memory_used -= evicted

    # --- disk ------------------------------------------------------------------
    def _entry_path(self, key: str, output: str) -> Path:
        assert self.disk_dir is not None
        return self.disk_dir / key[:2] / f"{key}.{output}{_SUFFIX}"

    def _disk_get(self, key: str, names: list[str]) -> dict[str, Any] | None:
        if self.disk_dir is None or not names:
            return None
        found: dict[str, Any] = {}
        for name in names:
            value = self._disk_read(self._entry_path(key, name))
            if value is None:
                return None
            found[name] = value
        return found

    def _disk_read(self, path: Path) -> Any | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        head = len(_MAGIC) + 32
        payload = data[head:]
        if data[:len(_MAGIC)] != _MAGIC or hashlib.sha256(payload).digest() != data[len(_MAGIC):head]:
            _unlink(path)  # truncated or corrupt: a miss, and gone so it is rewritten
            return None
        try:
            value = V.from_bytes(payload)
        except Exception:  # a payload this version cannot read is a miss as well
            _unlink(path)
            return None
        _touch(path)
        return value

    def _disk_put(self, key: str, name: str, value: Any) -> None:
        path = self._entry_path(key, name)
        try:
            payload = V.to_bytes(value)
        except Exception:  # e.g. a dtype safetensors cannot hold: stay memory-only
            return
        data = _MAGIC + hashlib.sha256(payload).digest() + payload
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            _unlink(tmp)
            return  # a full or read-only disk only costs future recomputation
        with self._lock:
            if self._disk_used is None:
                self._disk_used = sum(size for _, size, _ in self._disk_scan())
            else:
                self._disk_used += len(data)
            if self._disk_used > self.disk_bytes:
                self._disk_evict()

    def _disk_files(self) -> list[Path]:
        if self.disk_dir is None or not self.disk_dir.is_dir():
            return []
        return [p for sub in self.disk_dir.iterdir() if sub.is_dir() for p in sub.iterdir()]

    def _disk_scan(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every entry; stale temp files from crashes are removed."""
        import time

        entries = []
        now = time.time()
        for path in self._disk_files():
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

    def _disk_evict(self) -> None:
        """Delete the least recently used entries until the store fits its budget."""
        entries = sorted(self._disk_scan(), key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.disk_bytes:
                break
            _unlink(path)
            total -= size
        self._disk_used = total


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
