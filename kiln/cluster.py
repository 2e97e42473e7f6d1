"""Ray for the render farm: joining or starting a cluster, and starting Kiln workers on it.

`--cluster local` starts an embedded cluster on this machine, `auto` joins the one RAY_ADDRESS
names (else one running here), anything else is an address (`ray://HOST:10001` through the Ray
client, or `HOST:6379`). Ray is an optional extra (`pip install 'ray>=2.60'`), imported only here
and only when --cluster is given; a Ray already connected in this process is used as it is.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from engine.errors import KilnError, quote


class ClusterError(KilnError):
    """The cluster cannot be used (Ray missing, nothing to join, no worker started): exit 2."""

RAY_MISSING = ("--cluster needs Ray, which is not installed: pip install 'ray>=2.60' "
               "(or, in a Kiln checkout: pip install -e '.[cluster]')")
LOCAL_OBJECT_STORE = 128 * 1024 * 1024  # pictures come back as PNG bytes: small
START_TIMEOUT_S = 120.0  # a worker that has not started by then is given up (no room on the cluster)


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """--cluster and --workers of `main.py run`."""
    parser.add_argument("--cluster", metavar="local|auto|ADDRESS",
                        help="run the --batch on a Ray cluster: local starts one here, auto joins RAY_ADDRESS, "
                             "or ray://HOST:10001 / HOST:6379 (needs: pip install 'ray>=2.60')")
    parser.add_argument("--workers", type=_worker_count, metavar="N",
                        help="with --cluster: workers to start (default one per GPU, else one per 2 CPU cores)")


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 4096:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a worker count (1 to 4096)")
    return int(text)


def import_ray() -> Any:
    """The ray module, or a ClusterError (exit 2) saying what to install."""
    try:
        import ray
    except ImportError as exc:
        if (exc.name or "ray").split(".")[0] != "ray":
            raise
        raise ClusterError(RAY_MISSING) from None
    return ray


@dataclass
class Connection:
    ray: Any
    address: str
    owned: bool  # this process connected (or started the cluster): disconnect at the end

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


def connect(target: str, workers: int | None) -> Connection:
    """Start (`local`) or join (`auto`, an address) a Ray cluster."""
    ray = import_ray()
    if ray.is_initialized():
        return Connection(ray, _address(ray), owned=False)
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    try:
        if target == "local":
            cpus = max(os.cpu_count() or 1, workers or 1)
            ray.init(num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE, **quiet)
        else:
            address = "auto" if target == "auto" else target
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "RAY_ADDRESS or a cluster on this machine" if target == "auto" else repr(target)
        raise ClusterError(f"--cluster: cannot join {where}: {_first_line(exc)} "
                         "(start one with `ray start --head`, or use --cluster local)") from None
    return Connection(ray, _address(ray), owned=True)


def _address(ray: Any) -> str:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 - the Ray client has no GCS address to show
        return "ray client"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class WorkerPlan:
    """How many workers, and what each one asks of the cluster."""

    count: int
    num_cpus: float
    num_gpus: float
    threads: int  # torch CPU threads per worker


def plan_workers(resources: dict[str, float], requested: int | None) -> WorkerPlan:
    """Default: one worker per GPU, else one per 2 CPU cores (at least one); `requested` overrides."""
    cpus, gpus = float(resources.get("CPU", 1.0)), int(resources.get("GPU", 0))
    if gpus:
        count = requested or gpus
        return WorkerPlan(count, _share(min(1.0, cpus / count)), _share(min(1.0, gpus / count)),
                          max(1, int(cpus // count)))
    count = requested or max(1, int(cpus // 2))
    share = _share(cpus / count)
    return WorkerPlan(count, share, 0.0, max(1, int(share)))


def _share(value: float) -> float:
    """A resource share Ray accepts, rounded down so that the shares add up to no more than the whole."""
    return max(0.01, math.floor(value * 100) / 100)


@dataclass
class Worker:
    """A started worker as the driver sees it."""

    id: int
    actor: Any
    info: dict[str, Any] = field(default_factory=dict)
    alive: bool = True

    @property
    def label(self) -> str:
        return f"worker {self.id} ({self.info.get('host', '?')})"


def start_workers(ray: Any, plan: WorkerPlan, graph_doc: dict, base_dir: str | None, settings: dict,
                  disk_cache: bool, hooks: tuple[Any, Any]) -> list[Worker]:
    """Start `plan.count` workers and wait until each is ready; those that fail or find no room
    within START_TIMEOUT_S are reported on stderr and left out. ClusterError when none starts."""
    from kiln.cluster_worker import KilnWorker

    remote = ray.remote(KilnWorker).options(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
                                            max_concurrency=2, max_restarts=0)
    workers = [Worker(i, remote.remote(i, graph_doc, base_dir, settings, disk_cache, *hooks)) for i in range(plan.count)]
    pending = {w.actor.info.remote(): w for w in workers}
    ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=START_TIMEOUT_S)
    started = [w for ref in ready if (w := _started(ray, ref, pending[ref]))]
    for ref in late:
        print(f"kiln: worker {pending[ref].id} found no room on the cluster within {START_TIMEOUT_S:.0f} s; "
              "going on without it", file=sys.stderr)
        ray.kill(pending[ref].actor)
    if not started:
        raise ClusterError("--cluster: no worker could start (see the lines above)")
    return sorted(started, key=lambda w: w.id)


def _started(ray: Any, ref: Any, worker: Worker) -> Worker | None:
    try:
        worker.info = ray.get(ref)
        return worker
    except ray.exceptions.RayError as exc:
        print(f"kiln: worker {worker.id} could not start: {_first_line(exc)}", file=sys.stderr)
        return None


def stop_workers(ray: Any, workers: list[Worker]) -> None:
    """Kill the workers (their resources go back to the cluster at once)."""
    for worker in workers:
        with contextlib.suppress(Exception):  # already gone
            ray.kill(worker.actor)


def cluster_size(ray: Any, workers: list[Worker]) -> dict[str, Any]:
    """The cluster as the summary records it."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    resources = ray.cluster_resources()
    return {"workers": len(workers), "nodes": len(nodes), "cpus": resources.get("CPU", 0),
            "gpus": resources.get("GPU", 0)}
