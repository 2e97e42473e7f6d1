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
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

from engine.graph import Graph
from engine.spec import EngineSettings, NodeRegistry, SocketType

IMAGE_TYPES = (SocketType.IMAGE, SocketType.MASK, SocketType.LAYOUT)  # a layout is shown as its boxes


@dataclass(eq=False)  # a job is itself: compared by identity
class Job:
    id: int
    graph: Graph  # a snapshot: edits made while it runs do not touch it
    targets: list[str] | None
    label: str
    graph_dict: dict  # the file document of the snapshot, for the history and saved PNGs (set by the worker)
    watch: list[str] = field(default_factory=list)  # nodes whose images we want back
    cancel_event: threading.Event = field(default_factory=threading.Event)  # this job's own stop flag

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


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


def image_nodes(graph: Graph, registry: NodeRegistry, targets: list[str]) -> list[str]:
    """The targets' ancestors (and targets) that have an image output: their pictures become thumbnails."""
    needed, todo = set(targets), list(targets)
    while todo:
        for link in graph.incoming(todo.pop()).values():
            if link.src not in needed:
                needed.add(link.src)
                todo.append(link.src)
    found = []
    for node_id in sorted(needed):
        node = graph.nodes.get(node_id)
        spec = registry.get(node.type) if node else None
        if spec is not None and not node.disabled and any(o.type in IMAGE_TYPES for o in spec.outputs):
            found.append(node_id)
    return found


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
        job = Job(next(self._ids), graph.copy(), list(targets) if targets is not None else None, label, {})
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
            dropped = list(self._waiting) if clear_queue else []
            if self._current is not None:
                self._current.cancel_event.set()
        for job in dropped:
            self.cancel_job(job.id)

    def cancel_job(self, job_id: int) -> bool:
        """Cancel one job, from any thread: a waiting one is dropped (and reported cancelled at
        once), the running one stops within one sampler step and the queue goes on. False when
        no such job waits or runs."""
        with self._lock:
            waiting = next((job for job in self._waiting if job.id == job_id), None)
            if waiting is not None:
                self._waiting.remove(waiting)  # the worker skips it
                waiting.cancel_event.set()
            elif self._current is not None and self._current.id == job_id:
                self._current.cancel_event.set()
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
            targets = self._prepare(job)
            run = executor.run(job.graph, targets, on_event=self.event.emit, cancel=job.cancel_event)
        except ValidationError as err:
            return JobResult(job, ok=False, error_message=str(err), seconds=time.perf_counter() - t0,
                             issues={i.node_id: i.message for i in err.issues if i.node_id})
        except KilnError as err:
            return JobResult(job, ok=False, error_message=str(err), seconds=time.perf_counter() - t0)
        return self._result(job, run)

    def _prepare(self, job: Job) -> list[str]:
        """The graph document for the history, and the targets plus the image nodes to watch."""
        from engine.executor import resolve_targets
        from engine.provenance import picture_graph

        job.graph_dict = picture_graph(job.graph, self.registry)
        wanted = resolve_targets(job.graph, self.registry, job.targets)  # ValidationError for a bad target
        job.watch = image_nodes(job.graph, self.registry, wanted)
        return list(dict.fromkeys([*wanted, *job.watch]))

    def _result(self, job: Job, run: Any) -> JobResult:
        result = JobResult(job, ok=run.ok, cancelled=run.cancelled, seconds=run.seconds,
                           files=list(run.files), model_evals=run.model_evals,
                           statuses={n: (r.status, r.seconds) for n, r in run.nodes.items()})
        if run.error is not None:
            result.error_node = run.error.node_id
            result.error_message = run.error.message
            result.error_details = getattr(run.error, "details", "") or ""
        for node_id, outputs in run.outputs.items():
            layout = next((value for value in outputs.values() if _is_layout(value)), None)
            if layout is not None:
                result.layouts[node_id] = [dict(item) for item in layout]
            pictures, seeds = _pictures(outputs, layout)
            if pictures:
                result.images[node_id] = pictures
                result.seeds[node_id] = seeds
        return result


def _pictures(outputs: dict[str, Any], layout: list[dict] | None = None) -> tuple[list[Picture], tuple[int, ...]]:
    """Pictures of the first image-like output (IMAGE or MASK), with the seeds; else of `layout`'s boxes."""
    import torch

    for value in outputs.values():
        pixels = getattr(value, "pixels", value)
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
            continue
        batch = pixels.detach()[:16].float().cpu().clamp(0, 1)
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        pictures = [_picture(img) for img in batch]
        return pictures, tuple(getattr(value, "seeds", ()) or ())
    if layout:
        from engine.drawing import render_layout

        drawn = torch.from_numpy(render_layout(layout, THUMB_SIDE)).permute(2, 0, 1).float() / 255
        return [_picture(drawn)], ()
    return [], ()


def _is_layout(value: Any) -> bool:
    """A LAYOUT value: a non-empty list of {"label", "box"} (an empty one has nothing to show)."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(item, dict) and "box" in item for item in value))


def _picture(image: Any) -> Picture:
    """(3, H, W) float in [0, 1] -> Picture."""
    import torch
    import torch.nn.functional as F

    rgb = (image * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()  # (H, W, 3)
    h, w = rgb.shape[:2]
    scale = THUMB_SIDE / max(h, w)
    small = image
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        small = F.interpolate(image[None], size=size, mode="area")[0]
    thumb = (small * 255).round().to(torch.uint8).permute(1, 2, 0)
    return Picture(rgb.numpy(), _bgrx(rgb), _bgrx(thumb))


def _bgrx(rgb: Any) -> Any:
    import torch

    alpha = torch.full_like(rgb[..., :1], 255)
    return torch.cat([rgb.flip(-1), alpha], dim=-1).contiguous().numpy()


def _describe_device(requested: str) -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return f"cuda ({torch.cuda.get_device_name(0)})"
        return "cpu"
    return requested
