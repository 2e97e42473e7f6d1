"""Render farm throughput: `python -m bench.bench_cluster [--jobs 16] [--steps 8] [--size 128]`.

Runs one batch of the text-to-image example (a different seed per job) three ways: locally
(`main.py run --batch`, a subprocess), and on an embedded Ray cluster with 1 and 2 workers. Prints
pictures per second for each (the batch from its first job sent to its last picture written; cluster
and worker start-up apart), the ratios, the median time of one job on a worker (model loaded), the
scheduling overhead per job (round trip as the driver sees it, less the worker's own time), the model
load per worker (its first job's checkpoint node), and the projection for W workers:

    wall(N, W) = t_start + t_load + ceil(N / W) * (t_job + t_sched)
    throughput(W) = W / (t_job + t_sched)           (steady state, N >> W)

with this machine's figures, and for 8 GPU workers with t_job of a GPU given by --gpu-job-seconds.
Needs Ray (pip install 'ray>=2.60'). Outputs go to a temporary folder.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRAPH = ROOT / "resources" / "graphs" / "text_to_image.json"


def fast_args(steps: int, size: int) -> list[str]:
    return ["--set", f"sampler.steps={steps}", "--set", f"latent.width={size}", "--set", f"latent.height={size}",
            "--device", "cpu"]


def write_jobs(folder: Path, count: int) -> Path:
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps({"seed.value": 100 + i}) + "\n" for i in range(count)))
    return path


def run_local(folder: Path, jobs: Path, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "main.py"), "run", str(GRAPH), *extra, "--batch", str(jobs),
           "--out", str(folder / "local"), "--no-disk-cache", "--json"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=1800)
    summary = json.loads(done.stdout)
    times = [j["seconds"] for j in summary["jobs"]]
    return {"wall": summary["seconds"], "first": times[0], "job": statistics.median(times[1:])}


def run_cluster(folder: Path, jobs: Path, extra: list[str], workers: int) -> dict[str, Any]:
    from engine import graph_file
    from engine.spec import EngineSettings
    from kiln.cli import _summary, apply_overrides, parse_set, read_batch_overrides
    from kiln.cluster_batch import run_batch_on_cluster
    from nodes import build_registry

    registry = build_registry()
    graph = graph_file.load(GRAPH)
    graph = apply_overrides(graph, [parse_set(s, graph, registry) for s in extra[1:-2:2]])
    overrides = read_batch_overrides(str(jobs), graph, registry)
    trips: dict[int, float] = {}
    first_sent: list[float] = []

    def on_event(kind: str, job: Any, worker: Any) -> None:
        if kind == "sent" and not first_sent:
            first_sent.append(time.perf_counter())
        if kind == "done":
            trips[job.index] = job.seconds_round_trip

    settings = EngineSettings(output_dir=str(folder / f"cluster{workers}"), device="cpu")
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = run_batch_on_cluster(graph, overrides, settings, registry, (apply_overrides, _summary),
                                  target="auto", workers=workers, as_json=True, disk_cache=False,
                                  on_event=on_event)
    end = time.perf_counter()
    assert rc == 0, rc
    return _cluster_figures(json.loads(out.getvalue()), trips, first_sent[0] - t0, end - first_sent[0])


def _cluster_figures(summary: dict, trips: dict[int, float], start: float, wall: float) -> dict[str, Any]:
    jobs = summary["jobs"]
    first_of = {}
    for job in jobs:  # in job order: a worker's first job is the one that loaded the model
        first_of.setdefault(job["worker"]["id"], job)
    firsts = {id(j) for j in first_of.values()}
    steady = [j for j in jobs if id(j) not in firsts]
    loads = [j["nodes"]["ckpt"]["seconds"] for j in first_of.values()]
    overhead = [trips[j["index"]] - j["seconds"] for j in jobs]
    busy = sum(trips[j["index"]] for j in jobs)  # round trips, summed
    return {"wall": wall, "start": start, "job": statistics.median(j["seconds"] for j in steady),
            "busy": busy / (len(first_of) * wall), "job_sum": sum(j["seconds"] for j in jobs),
            "sched": statistics.median(overhead), "load": statistics.mean(loads),
            "per_worker": {w: sum(1 for j in jobs if j["worker"]["id"] == w) for w in first_of}}


def projection(n: int, w: int, t_start: float, t_load: float, t_job: float, t_sched: float) -> tuple[float, float]:
    """(wall seconds, pictures per second) of N jobs on W workers."""
    wall = t_start + t_load + math.ceil(n / w) * (t_job + t_sched)
    return wall, n / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--gpu-job-seconds", type=float, default=0.15,
                        help="t_job of one picture on a GPU for the 8-GPU projection (not measured here)")
    args = parser.parse_args()
    import ray

    extra = fast_args(args.steps, args.size)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-cluster-") as tmp:
        folder = Path(tmp)
        jobs = write_jobs(folder, args.jobs)
        local = run_local(folder, jobs, extra)
        t0 = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), num_gpus=0, object_store_memory=128 * 1024**2, include_dashboard=False,
                 log_to_driver=False, logging_level="WARNING")
        ray_start = time.perf_counter() - t0
        results = {w: run_cluster(folder, jobs, extra, w) for w in (1, 2)}
        ray.shutdown()
    report(args, local, results, ray_start)
    return 0


def report(args: argparse.Namespace, local: dict, results: dict[int, dict], ray_start: float) -> None:
    n = args.jobs
    print(f"{n} jobs: text_to_image.json, {args.steps} steps, {args.size} px, CPU ({os.cpu_count()} cores)")
    print(f"local batch: {local['wall']:.2f} s = {n / local['wall']:.2f} pictures/s "
          f"(first job {local['first']:.2f} s with the model load; then {local['job']:.3f} s a job)")
    print(f"embedded cluster start (ray.init): {ray_start:.2f} s")
    for w, r in results.items():
        print(f"cluster, {w} worker{'s' if w > 1 else ''}: {r['wall']:.2f} s = {n / r['wall']:.2f} pictures/s "
              f"(x{local['wall'] / r['wall']:.2f} of local); workers started in {r['start']:.2f} s; "
              f"job {r['job']:.3f} s; scheduling {1000 * r['sched']:.1f} ms/job; model load "
              f"{r['load']:.2f} s/worker; jobs per worker {r['per_worker']}; workers busy {100 * r['busy']:.0f} % "
              f"of the wall (sum of job times {r['job_sum']:.1f} s)")
    print(f"2 workers vs 1: x{results[1]['wall'] / results[2]['wall']:.2f}")
    r = results[2]
    print("projection: wall(N, W) = t_start + t_load + ceil(N/W) * (t_job + t_sched); "
          "throughput(W) = W / (t_job + t_sched)")
    for label, t_job in (("this CPU's t_job", r["job"]), (f"a GPU's t_job = {args.gpu_job_seconds} s (assumed)",
                                                          args.gpu_job_seconds)):
        wall, rate = projection(n, 8, r["start"], r["load"], t_job, r["sched"])
        print(f"8 GPU workers, {label}: {n} jobs in {wall:.2f} s ({rate:.2f} pictures/s); "
              f"steady state {8 / (t_job + r['sched']):.1f} pictures/s")


if __name__ == "__main__":
    sys.exit(main())
