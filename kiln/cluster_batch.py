"""`main.py run GRAPH --batch JOBS.jsonl --cluster local|auto|ADDRESS`: a batch on a Ray render farm.

The driver checks the batch as a local batch does (a bad line: exit 2 before anything runs), starts
the workers (kiln.cluster, kiln.cluster_worker), and hands out jobs one at a time to each free
worker, preferring a job with the same non-seed overrides as that worker's last one (its cached
conditioning serves it again). A worker that dies has its job retried on another worker, at most
MAX_RETRIES times; a job failing by its own fault (a missing file, a value a node refuses) is
reported once. The pictures come back as PNG bytes and are written here in job order, so they get
the names a local batch would give them. Ctrl+C cancels the jobs in flight and the rest, and keeps
the pictures written. The JSON summary is the local batch's plus "worker" and "attempts" per job
and "cluster" (its size). Exit status as a local batch: 0 all done, 1 some job failed, 130 Ctrl+C.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from engine.errors import KilnError
from engine.graph import Graph
from engine.spec import EngineSettings, NodeRegistry, ParamType
from kiln.cluster import (
    Connection,
    Worker,
    WorkerPlan,
    cluster_size,
    connect,
    plan_workers,
    start_workers,
    stop_workers,
)
from kiln.cluster_progress import Progress

MAX_RETRIES = 2  # a job whose worker died is tried on another worker at most this many more times
DRAIN_TIMEOUT_S = 30.0  # after Ctrl+C, how long the jobs in flight get to stop and send back


@dataclass
class Job:
    index: int
    overrides: list[list[Any]]  # [[node id, param, value], ...]: JSON
    group: str  # the non-seed overrides: jobs alike share cached conditioning on one worker
    attempts: int = 0
    state: str = "pending"  # pending | running | ok | failed | cancelled
    record: dict[str, Any] = field(default_factory=dict)
    pngs: list[list[Any]] = field(default_factory=list)  # [[relative path, bytes]] until written
    sent_at: float = 0.0
    seconds_round_trip: float = 0.0  # from sending to its result being back (driver's clock)

    @property
    def done(self) -> bool:
        return self.state in ("ok", "failed", "cancelled")


EventCallback = Callable[[str, Job, Worker], None]  # ("sent" | "done" | "died", job, worker)


def run_batch_on_cluster(graph: Graph, overrides: list[list[Any]], settings: EngineSettings,
                         registry: NodeRegistry, hooks: tuple[Any, Any], *, target: str,
                         workers: int | None = None, as_json: bool = False, disk_cache: bool = True,
                         on_event: EventCallback | None = None) -> int:
    """Run one job per list of kiln.cli.Override on the cluster; print the summary; the exit status.

    `hooks`: kiln.cli's (apply_overrides, _summary), for the workers (kiln.cli imports this module)."""
    from engine.graph_file import graph_to_dict

    jobs = [_job(i, items, graph, registry) for i, items in enumerate(overrides)]
    t0 = time.perf_counter()
    stdout = sys.stdout  # ours alone: Ray prints its news (a worker died...) on sys.stdout, sent to stderr
    with contextlib.redirect_stdout(sys.stderr):
        conn = connect(target, workers)
        started: list[Worker] = []
        try:
            plan = plan_workers(conn.ray.cluster_resources(), workers)
            started = start_workers(conn.ray, plan, graph_to_dict(graph), graph.base_dir,
                                    _worker_settings(settings, plan), disk_cache, hooks)
            _announce(conn, started)
            progress = Progress(len(jobs), stdout if not as_json else None)
            finished = Farm(conn.ray, started, jobs, settings.output_dir, progress, on_event).run()
            summary = {"jobs": [j.record for j in jobs], "seconds": round(time.perf_counter() - t0, 4),
                       "cluster": {**cluster_size(conn.ray, started), "address": conn.address}}
        finally:
            stop_workers(conn.ray, started)
            conn.close()
    return _conclude(summary, jobs, finished, as_json, stdout)


def _job(index: int, items: list[Any], graph: Graph, registry: NodeRegistry) -> Job:
    overrides = [[o.node_id, o.param, o.value] for o in items]
    alike = sorted(json.dumps(o) for o in overrides if not _is_seed(o[0], o[1], graph, registry))
    return Job(index, overrides, "\n".join(alike))


def _is_seed(node_id: str, param: str, graph: Graph, registry: NodeRegistry) -> bool:
    declared = registry[graph.nodes[node_id].type].param(param)
    return declared is not None and declared.type is ParamType.SEED


def _worker_settings(settings: EngineSettings, plan: WorkerPlan) -> dict[str, Any]:
    """The driver's engine settings for a worker: its own share of the CPU threads unless given."""
    threads = settings.threads or plan.threads
    return dataclasses.asdict(dataclasses.replace(settings, threads=threads))


def _announce(conn: Connection, workers: list[Worker]) -> None:
    names = ", ".join(w.label for w in workers)
    print(f"kiln: {len(workers)} worker{'s' if len(workers) != 1 else ''} on {conn.address}: {names}",
          file=sys.stderr)


def _conclude(summary: dict[str, Any], jobs: list[Job], finished: bool, as_json: bool, stdout: TextIO) -> int:
    counts = {s: sum(1 for j in jobs if j.state == s) for s in ("ok", "failed", "cancelled")}
    if as_json:
        print(json.dumps(summary), file=stdout, flush=True)
    else:
        print(f"kiln: {len(jobs)} jobs on {summary['cluster']['workers']} workers: {counts['ok']} done, "
              f"{counts['failed']} failed, {counts['cancelled']} cancelled, {summary['seconds']:.2f} s",
              file=sys.stderr)
    if not finished:
        written = sum(len(j.record.get("outputs", ())) for j in jobs)
        print(f"kiln: interrupted: {counts['cancelled']} jobs cancelled; the {written} pictures written "
              "are kept", file=sys.stderr)
        return 130
    failed = [j for j in jobs if j.state == "failed"]
    if failed:
        first = failed[0]
        message = f"{len(failed)} of {len(jobs)} jobs failed; first: job {first.index}: {first.record.get('error')}"
        print(f"kiln: {' '.join(message.split())}", file=sys.stderr)  # as kiln.cli._fail says it
        return 1
    return 0


class Farm:
    """Hands out the jobs, takes back the results, retries the jobs of workers that died."""

    def __init__(self, ray: Any, workers: list[Worker], jobs: list[Job], out_dir: str, progress: Progress,
                 on_event: EventCallback | None = None) -> None:
        self.ray = ray
        self.workers = workers
        self.jobs = jobs
        self.pending = list(jobs)
        self.running: dict[Any, tuple[Worker, Job]] = {}  # object ref -> (worker, job)
        self.last_group: dict[int, str] = {}
        self.progress = progress
        self.on_event = on_event
        self.writer = OrderedWriter(jobs, out_dir, progress)
        self.deaths = _death_errors(ray)

    def run(self) -> bool:
        """Run every job; False when Ctrl+C stopped the batch (the rest are cancelled)."""
        try:
            while self.pending or self.running:
                self._dispatch()
                if not self.running:
                    self._give_up("no worker left (every worker died)")
                    break
                ready, _ = self.ray.wait(list(self.running), num_returns=1)
                for ref in ready:
                    self._collect(ref)
        except KeyboardInterrupt:
            self._cancel()
            return False
        finally:
            self.writer.flush()
            self.progress.close()
        return True

    def _dispatch(self) -> None:
        busy = {w.id for w, _ in self.running.values()}
        for worker in self.workers:
            if worker.alive and worker.id not in busy and self.pending:
                self._send(worker, self._pick(worker))

    def _pick(self, worker: Worker) -> Job:
        """The first pending job alike to this worker's last; else one no other worker is on; else the first."""
        same = [j for j in self.pending if j.group == self.last_group.get(worker.id)]
        taken = {g for wid, g in self.last_group.items() if wid != worker.id and self._alive(wid)}
        fresh = [j for j in self.pending if j.group not in taken]
        return (same or fresh or self.pending)[0]

    def _alive(self, worker_id: int) -> bool:
        return any(w.alive for w in self.workers if w.id == worker_id)

    def _send(self, worker: Worker, job: Job) -> None:
        self.pending.remove(job)
        job.attempts += 1
        job.state, job.sent_at = "running", time.perf_counter()
        self.last_group[worker.id] = job.group
        self.running[worker.actor.run_job.remote(job.index, job.overrides)] = (worker, job)
        self._event("sent", job, worker)

    def _collect(self, ref: Any) -> None:
        worker, job = self.running.pop(ref)
        try:
            payload = self.ray.get(ref)
        except self.deaths as exc:
            self._died(worker, job, exc)
            return
        except self.ray.exceptions.RayTaskError as exc:  # a bug in the worker's code: the job's own failure
            payload = _failed_payload(job.index, f"internal error: {_gist(exc)}")
        self._finish(worker, job, payload)

    def _died(self, worker: Worker, job: Job, exc: BaseException) -> None:
        worker.alive = False
        self._event("died", job, worker)
        if job.attempts <= MAX_RETRIES:
            job.state = "pending"
            self.pending = sorted([*self.pending, job], key=lambda j: j.index)
            self.progress.line(f"{worker.label} died running job {job.index}; trying it again "
                               f"(attempt {job.attempts + 1} of {MAX_RETRIES + 1})")
            return
        payload = _failed_payload(job.index, f"{worker.label} died running it, the last of "
                                             f"{job.attempts} attempts ({_gist(exc)})")
        self._finish(worker, job, payload)

    def _finish(self, worker: Worker, job: Job, payload: dict[str, Any]) -> None:
        job.seconds_round_trip = time.perf_counter() - job.sent_at
        job.state = "cancelled" if payload["cancelled"] else "ok" if payload["ok"] else "failed"
        summary = dict(payload["summary"])
        if "error" in summary:
            summary["error"] = f"on {worker.label}: {summary['error']}"
        job.record = {"index": job.index, **summary, "outputs": [], "worker": _who(worker),
                      "attempts": job.attempts, **({"cancelled": True} if job.state == "cancelled" else {})}
        job.pngs = payload["pngs"]
        self.progress.finished(_finished_line(job, worker))
        self._event("done", job, worker)
        self.writer.flush()

    def _give_up(self, reason: str) -> None:
        for job in self.pending:
            job.state = "failed"
            job.record = {"index": job.index, **_failed_payload(job.index, reason)["summary"], "worker": None,
                          "attempts": job.attempts}
            self.progress.finished(f"job {job.index} failed: {reason}")
        self.pending = []

    def _cancel(self) -> None:
        """Ctrl+C: stop the jobs in flight (their results still come back), cancel the rest."""
        self.progress.line("interrupted: cancelling the jobs in flight and the rest")
        for worker, _ in list(self.running.values()):
            worker.actor.cancel.remote()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.running and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=deadline - time.monotonic())
            for ref in ready:
                self._collect(ref)
        for worker, job in self.running.values():
            job.record = _cancelled_record(job, _who(worker))
            job.state = "cancelled"
        self.running.clear()
        for job in self.pending:
            job.record, job.state = _cancelled_record(job, None), "cancelled"
        self.pending = []

    def _event(self, kind: str, job: Job, worker: Worker) -> None:
        if self.on_event is not None:
            self.on_event(kind, job, worker)


class OrderedWriter:
    """Writes the pictures of finished jobs in job order, as a local batch names them."""

    def __init__(self, jobs: list[Job], out_dir: str, progress: Progress) -> None:
        self.jobs = jobs
        self.out_dir = out_dir
        self.progress = progress
        self.next = 0

    def flush(self) -> None:
        while self.next < len(self.jobs) and self.jobs[self.next].done:
            self._write(self.jobs[self.next])
            self.next += 1

    def _write(self, job: Job) -> None:
        from nodes.image_io import prefix_of, save_png_bytes

        written = []
        try:
            for relative, data in job.pngs:
                written.append(save_png_bytes(self.out_dir, prefix_of(relative), data))
        except (KilnError, ValueError) as exc:
            job.state = "failed"
            job.record["error"] = f"writing its pictures here: {exc}"
        job.record["outputs"], job.pngs = written, []
        for path in written:
            self.progress.output(path)


def _death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """What ray.get raises when the worker (its process, its machine) went away mid-job."""
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _who(worker: Worker) -> dict[str, Any]:
    return {"id": worker.id, "host": worker.info.get("host"), "pid": worker.info.get("pid")}


def _failed_payload(index: int, error: str) -> dict[str, Any]:
    summary = {"outputs": [], "nodes": {}, "model_evals": 0, "seconds": 0.0, "error": error}
    return {"index": index, "ok": False, "cancelled": False, "summary": summary, "pngs": []}


def _cancelled_record(job: Job, worker: dict[str, Any] | None) -> dict[str, Any]:
    return {"index": job.index, "outputs": [], "nodes": {}, "model_evals": 0, "seconds": 0.0,
            "worker": worker, "attempts": job.attempts, "cancelled": True}


def _finished_line(job: Job, worker: Worker) -> str:
    if job.state == "ok":
        return f"job {job.index} done on {worker.label} in {job.record['seconds']:.2f} s"
    if job.state == "cancelled":
        return f"job {job.index} cancelled on {worker.label}"
    return f"job {job.index} failed {job.record.get('error')}"


def _gist(exc: BaseException) -> str:
    """The message of a Ray error: its last non-blank line (a remote traceback ends with it)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__
