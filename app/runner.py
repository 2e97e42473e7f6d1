"""Runs graphs on a worker thread and reports back on the UI thread.

The engine (`Executor.run`) blocks and may import torch; it never runs on the UI
thread. Jobs queue up and run one after another; engine events come back as
Qt signals (queued across threads). Images are turned into uint8 numpy arrays on
the worker, so the UI thread never touches torch.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal

from engine import planning
from engine.graph import Graph
from engine.planning import RunHandle, RunPlan
from engine.spec import EngineSettings, NodeRegistry, SocketType

if TYPE_CHECKING:  # numpy only on the worker, when pictures come back: start-up stays lean
    import numpy as np


@dataclass(eq=False)  # a job is itself: compared by identity
class Job:
    id: int
    graph: Graph  # a snapshot: edits made while it runs do not touch it
    targets: list[str] | None
    label: str
    graph_dict: dict  # the file document of the snapshot, for the history and saved PNGs (set by the worker)
    plan: RunPlan | None = None  # made on the worker: targets, order, the nodes whose pictures come back
    handle: RunHandle = field(default_factory=RunHandle)  # this job's own stop token
    shared_graph_dict: dict | None = None  # graph_dict as a PNG on disk records it (privacy setting)

    @property
    def cancelled(self) -> bool:
        return self.handle.cancelled


@dataclass
class Picture:
    """One picture made ready for the UI on the worker (so the UI thread only wraps memory)."""

    rgb: Any  # uint8 (H, W, 3), for saving
    display: Any  # uint8 (H, W, 4) in QImage.Format_RGB32 byte order (B, G, R, 255)
    thumb: Any  # the same, at most THUMB_SIDE pixels a side


THUMB_SIDE = 256


@dataclass
class JobResult:
    job: Job
    ok: bool
    cancelled: bool = False
    seconds: float = 0.0
    error_node: str | None = None
    error_message: str = ""
    error_details: str = ""
    issues: dict[str, str] = field(default_factory=dict)  # node id -> validation problem
    statuses: dict[str, tuple[str, float]] = field(default_factory=dict)
    images: dict[str, list[Picture]] = field(default_factory=dict)  # node id -> its pictures
    layouts: dict[str, list[dict]] = field(default_factory=dict)  # node id -> the boxes of its LAYOUT output
    seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    model_evals: int = 0


class Runner(QObject):
    event = Signal(object)  # engine.events.Event, on the UI thread
    job_queued = Signal(object)  # Job, just submitted
    job_started = Signal(object)  # Job
    job_finished = Signal(object)  # JobResult
    queue_changed = Signal(int)  # jobs waiting or running
    device_known = Signal(str)
    _delivered = Signal(object)  # worker -> UI thread; becomes job_finished there

    def __init__(self, registry: NodeRegistry, settings: EngineSettings | None = None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.registry = registry
        self.settings = settings or EngineSettings()
        self._ids = itertools.count(1)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._waiting: list[Job] = []
        self._current: Job | None = None
        self._lock = threading.Lock()
        self._executor: Any = None
        self._executor_settings: EngineSettings | None = None
        self._outstanding = 0  # submitted jobs whose result the UI has not handled yet (UI thread only)
        # always queued, so a result never arrives in the middle of the call that cancelled its job
        self._delivered.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        self._thread = threading.Thread(target=self._work, name="kiln-engine", daemon=True)
        self._thread.start()

    # --- UI thread ----------------------------------------------------------------------
    def submit(self, graph: Graph, targets: list[str] | None = None, label: str = "Run") -> Job:
        """Queue a run of a snapshot of `graph`; everything else is prepared on the worker."""
        targets = list(targets) if targets is not None else None
        job = Job(next(self._ids), planning.snapshot(graph), targets, label, {})
        with self._lock:
            self._waiting.append(job)
        self._outstanding += 1
        self._jobs.put(job)
        self.job_queued.emit(job)
        self.queue_changed.emit(self.pending())
        return job

    def pending(self) -> int:
        """Jobs queued or running whose results have not been shown yet."""
        return self._outstanding

    def active_jobs(self) -> list[Job]:
        """The running job (first) and those waiting, in order. Thread-safe."""
        with self._lock:
            return ([self._current] if self._current is not None else []) + list(self._waiting)

    @property
    def busy(self) -> bool:
        return self._outstanding > 0

    def _deliver(self, result: JobResult) -> None:
        self.job_finished.emit(result)  # every view handles it before the runner counts as idle
        self._outstanding -= 1
        self.queue_changed.emit(self._outstanding)

    def cancel(self, clear_queue: bool = True) -> None:
        """Stop the running job (within one sampler step) and, by default, drop the queue."""
        with self._lock:
            running = [self._current] if self._current is not None else []
            jobs = running + (list(self._waiting) if clear_queue else [])
        for job in jobs:
            self.cancel_job(job.id)

    def cancel_job(self, job_id: int) -> bool:
        """Cancel one job, from any thread: a waiting one is dropped (and reported cancelled at
        once), the running one stops within one sampler step and the queue goes on. False when
        no such job waits or runs."""
        with self._lock:
            waiting = next((job for job in self._waiting if job.id == job_id), None)
            if waiting is not None:
                self._waiting.remove(waiting)  # the worker skips it
                waiting.handle.cancel()
            elif self._current is not None and self._current.id == job_id:
                self._current.handle.cancel()
                return True
            else:
                return False
        self._delivered.emit(JobResult(waiting, ok=False, cancelled=True))
        return True

    def set_settings(self, settings: EngineSettings) -> None:
        """Takes effect from the next job (a new executor, with an empty memory cache)."""
        self.settings = settings

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel, stop the worker and cut every view off: a job that outlives `timeout` reports to no one."""
        with warnings.catch_warnings():  # PySide warns about a signal that has no connection
            warnings.simplefilter("ignore", RuntimeWarning)
            for signal in (self.event, self.job_queued, self.job_started, self.job_finished, self.queue_changed,
                           self.device_known):
                signal.disconnect()
        self.cancel()
        self._jobs.put(None)
        self._thread.join(timeout)

    # --- worker thread --------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                if job not in self._waiting:  # cancelled while waiting: already reported
                    continue
                self._waiting.remove(job)
                self._current = job
            try:
                result = JobResult(job, ok=False, cancelled=True) if job.cancelled else self._run(job)
            except Exception as exc:  # noqa: BLE001 - a bug, not a user mistake: report it, keep the worker alive
                import traceback

                result = JobResult(job, ok=False, error_message=f"internal error: {exc}",
                                   error_details=traceback.format_exc())
            with self._lock:
                self._current = None
            self._delivered.emit(result)

    def _get_executor(self) -> Any:
        if self._executor is None or self._executor_settings is not self.settings:
            from engine.executor import Executor

            self._executor = Executor(self.registry, self.settings)
            self._executor_settings = self.settings
            self.device_known.emit(_describe_device(self.settings.device))
        return self._executor

    def _run(self, job: Job) -> JobResult:
        from engine.errors import KilnError, ValidationError

        executor = self._get_executor()
        self.job_started.emit(job)

        t0 = time.perf_counter()
        try:
            job.plan = self._prepare(job, executor)
            run = executor.run_plan(job.plan.watching(), on_event=self.event.emit, handle=job.handle)
        except ValidationError as err:
            return JobResult(job, ok=False, error_message=str(err), seconds=time.perf_counter() - t0,
                             issues={nid: i.message for i in err.issues for nid in i.node_ids()})
        except KilnError as err:
            return JobResult(job, ok=False, error_message=str(err), seconds=time.perf_counter() - t0)
        return self._result(job, run)

    def _prepare(self, job: Job, executor: Any) -> RunPlan:
        """The graph document for the history, and the job's plan (ValidationError for a bad graph)."""
        from engine.provenance import picture_graph

        job.graph_dict = picture_graph(job.graph, self.registry, absolute_paths=True)
        job.shared_graph_dict = picture_graph(job.graph, self.registry, self.settings.absolute_paths)
        return executor.plan(job.graph, job.targets)

    def _typed_outputs(self, graph: Graph, node_id: str,
                       outputs: dict[str, Any]) -> list[tuple[SocketType, Any]]:
        """(socket type, value) of a node's outputs, in its spec's order."""
        node = graph.nodes.get(node_id)
        spec = self.registry.get(node.type) if node is not None else None
        if spec is None:
            return []
        return [(o.type, outputs[o.name]) for o in spec.outputs if o.name in outputs]

    def _result(self, job: Job, run: Any) -> JobResult:
        result = JobResult(job, ok=run.ok, cancelled=run.cancelled, seconds=run.seconds,
                           files=list(run.files), model_evals=run.model_evals,
                           statuses={n: (r.status, r.seconds) for n, r in run.nodes.items()})
        if run.error is not None:
            result.error_node = run.error.node_id
            result.error_message = run.error.message
            result.error_details = getattr(run.error, "details", "") or ""
        for node_id, outputs in run.outputs.items():
            typed = self._typed_outputs(job.graph, node_id, outputs)
            layout = next((value for kind, value in typed if kind is SocketType.LAYOUT and len(value)), None)
            if layout is not None:
                result.layouts[node_id] = layout.to_json()
            pictures, seeds = _pictures(typed)
            if pictures:
                result.images[node_id] = pictures
                result.seeds[node_id] = seeds
        return result


def _pictures(typed: list[tuple[SocketType, Any]]) -> tuple[list[Picture], tuple[int, ...]]:
    """Pictures of the first IMAGE or MASK output, with its seeds; else of the first LAYOUT's boxes.
    The engine turns each value into RGB arrays by its socket type (engine.display)."""
    from engine import display

    shown = [(kind, value) for kind, value in typed if kind in (SocketType.IMAGE, SocketType.MASK)]
    shown += [(kind, value) for kind, value in typed if kind is SocketType.LAYOUT]
    for kind, value in shown:
        rgbs = display.to_rgb(value, kind)
        if rgbs:
            seeds = tuple(value.seeds) if kind is SocketType.IMAGE else ()
            return [_picture(rgb, display.thumbnail(rgb, THUMB_SIDE)) for rgb in rgbs], seeds
    return [], ()


def _picture(rgb: np.ndarray, thumb: np.ndarray) -> Picture:
    return Picture(rgb, _bgrx(rgb), _bgrx(thumb))


def _bgrx(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W, 4) in QImage.Format_RGB32 byte order (B, G, R, 255)."""
    import numpy as np

    out = np.empty((*rgb.shape[:2], 4), dtype=np.uint8)
    out[..., :3] = rgb[..., ::-1]
    out[..., 3] = 255
    return out


def _describe_device(requested: str) -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return f"cuda ({torch.cuda.get_device_name(0)})"
        return "cpu"
    return requested
