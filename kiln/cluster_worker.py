"""A render farm worker: one long-lived Ray actor holding Kiln's executor, model store and caches.

A model loads once per worker and conditioning computed for one job is found in the memory cache
by the next job with the same prompt. The graph arrives once, as a JSON document; each job brings
its overrides as JSON (`[[node id, param, value], ...]`, checked by the driver). Pictures are
written by SaveImage into a private scratch folder, read back and returned as PNG bytes (graph
embedded) with their name relative to the output folder; the driver writes them (kiln.cluster_batch).

A plain class: kiln.cluster wraps it with `ray.remote`, so importing this module never imports ray.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import threading
from typing import Any, NamedTuple

from engine.errors import KilnError


class _Override(NamedTuple):  # what `apply` (kiln.cli.apply_overrides) reads of an override
    node_id: str
    param: str
    value: Any


class KilnWorker:
    """The actor. `run_job` runs one job; `cancel` (from a second actor thread) stops it."""

    def __init__(self, worker_id: int, graph_doc: dict, base_dir: str | None, settings: dict,
                 disk_cache: bool, apply: Any, summarize: Any) -> None:
        """`apply(graph, overrides) -> graph` and `summarize(run result) -> dict`: kiln.cli's
        apply_overrides and _summary, handed in by the driver (kiln.cli is above this module), so a
        job's overrides and its summary mean here what they mean in a local batch."""
        from engine.cache import ResultCache
        from engine.executor import Executor
        from engine.graph_file import graph_from_dict
        from engine.spec import EngineSettings
        from nodes import build_registry

        self.worker_id = worker_id
        self.apply = apply
        self.summarize = summarize
        self.graph = graph_from_dict(graph_doc, "<batch graph>")
        self.graph.base_dir = base_dir
        self.settings = EngineSettings(**settings)
        self.executor = Executor(build_registry(), self.settings,
                                 ResultCache.from_settings(self.settings, disk=disk_cache))
        self.jobs_run = 0
        self._lock = threading.Lock()
        self._handle: Any = None
        self._cancelled = False

    def info(self) -> dict[str, Any]:
        """Who this worker is, for the summary and the log: id, host name, process id."""
        return {"id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid()}

    def run_job(self, index: int, overrides: list[list[Any]]) -> dict[str, Any]:
        """Run job `index`: {"index", "ok", "cancelled", "summary" (as a local batch's job), "pngs":
        [[relative path, PNG bytes], ...]}. A job's own failure is reported, never raised."""
        from engine.planning import RunHandle

        with self._lock:
            if self._cancelled:
                return _not_run(index, "cancelled", cancelled=True)
            self._handle = handle = RunHandle()
        folder = tempfile.mkdtemp(prefix="kiln-job-")  # removed when the job ends
        try:
            graph = self.apply(self.graph, [_Override(*item) for item in overrides])
            return self._run(index, graph, folder, handle)
        except KilnError as exc:  # a graph this worker cannot run (the driver checked the same)
            return _not_run(index, str(exc))
        finally:
            self._handle = None
            shutil.rmtree(folder, ignore_errors=True)

    def _run(self, index: int, graph: Any, folder: str, handle: Any) -> dict[str, Any]:
        self.executor.settings = dataclasses.replace(self.settings, output_dir=folder)
        result = self.executor.run(graph, handle=handle)
        self.jobs_run += 1
        pngs = [[os.path.relpath(path, folder), _read(path)] for path in result.files]
        return {"index": index, "ok": result.ok, "cancelled": result.cancelled,
                "summary": self.summarize(result), "pngs": pngs}

    def cancel(self) -> None:
        """Stop the job in flight within a sampler step, and refuse the jobs sent after it."""
        with self._lock:
            self._cancelled = True
            if self._handle is not None:
                self._handle.cancel()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _not_run(index: int, error: str, cancelled: bool = False) -> dict[str, Any]:
    summary: dict[str, Any] = {"outputs": [], "nodes": {}, "model_evals": 0, "seconds": 0.0}
    if not cancelled:
        summary["error"] = error
    return {"index": index, "ok": False, "cancelled": cancelled, "summary": summary, "pngs": []}

