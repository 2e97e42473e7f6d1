"""Engine overhead on unchanged re-runs: `python -m bench.bench_engine [--graph G] [--runs N]`.

Runs a graph once (cold: models load, everything computes), then N times
unchanged in the same process, and prints the median engine time per re-run
(goal: under 50 ms) and the model evaluations of the re-runs (goal: 0).
Uses resources/graphs/text_to_image.json when present, else a model-free graph.
Outputs and cache go to a temporary folder. It also prints how long planning a run
takes (Executor.plan: targets, validation, order, pictures to watch) for each example
graph (goal: well under 1 ms); `--plan-only` prints just that.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from engine import graph_file
from engine.cache import ResultCache
from engine.executor import Executor
from engine.graph import Graph, Link, Node
from engine.planning import snapshot
from engine.spec import EngineSettings
from nodes import build_registry

DEFAULT_GRAPH = ROOT / "resources" / "graphs" / "text_to_image.json"


def model_free_graph() -> Graph:
    """Solid colours blended, inverted and scaled at 512 px, saved and previewed."""
    g = Graph()
    g.add_node(Node("red", "SolidImage", params={"width": 512, "height": 512, "color": "#d04020"}))
    g.add_node(Node("blue", "SolidImage", params={"width": 512, "height": 512, "color": "#2040d0"}))
    g.add_node(Node("blend", "ImageBlend", params={"factor": 0.3}))
    g.add_node(Node("invert", "ImageInvert"))
    g.add_node(Node("scale", "ImageScale", params={"factor": 0.5}))
    g.add_node(Node("save", "SaveImage", params={"prefix": "bench"}))
    g.add_node(Node("preview", "PreviewImage"))
    for link in [("red", "image", "blend", "a"), ("blue", "image", "blend", "b"), ("blend", "image", "invert", "image"),
                 ("invert", "image", "scale", "image"), ("scale", "image", "save", "image"),
                 ("scale", "image", "preview", "image")]:
        g.connect(Link(*link))
    return g


def bench(graph: Graph, runs: int, device: str, workdir: str) -> dict:
    settings = EngineSettings(device=device, output_dir=workdir, cache_dir=str(Path(workdir) / "cache"))
    executor = Executor(build_registry(), settings, ResultCache.from_settings(settings))
    t0 = time.perf_counter()
    cold = executor.run(graph)
    cold_seconds = time.perf_counter() - t0
    if not cold.ok:
        raise SystemExit(f"bench: the graph failed: {cold.error}")
    times, evals, ran = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = executor.run(graph)
        times.append(time.perf_counter() - t0)
        evals.append(result.model_evals)
        ran.append(sorted(n for n, r in result.nodes.items() if r.status == "ran"))
    return {"nodes": len(cold.nodes), "cold_s": cold_seconds, "cold_evals": cold.model_evals,
            "median_ms": 1000 * statistics.median(times), "max_ms": 1000 * max(times),
            "rerun_evals": max(evals), "ran": ran[-1]}


def planning_ms(repeats: int = 200) -> dict[str, float]:
    """Median milliseconds of Executor.plan for each example graph (the first call, which imports
    networkx, left out)."""
    executor = Executor(build_registry())
    medians = {}
    for path in sorted((ROOT / "resources" / "graphs").glob("*.json")):
        graph = snapshot(graph_file.load(path))
        executor.plan(graph)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            executor.plan(graph)
            times.append(time.perf_counter() - t0)
        medians[path.stem] = 1000 * statistics.median(times)
    return medians


def print_planning() -> bool:
    medians = planning_ms()
    ok = max(medians.values()) < 1.0
    figures = ", ".join(f"{name} {ms:.3f}" for name, ms in medians.items())
    print(f"planning (ms)       {figures}; goal (< 1 ms each): {'met' if ok else 'NOT met'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", help="graph file (default: text_to_image.json if present)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plan-only", action="store_true", help="only time planning the example graphs")
    args = parser.parse_args(argv)
    if args.plan_only:
        return 0 if print_planning() else 1
    path = Path(args.graph) if args.graph else DEFAULT_GRAPH if DEFAULT_GRAPH.exists() else None
    graph = graph_file.load(path) if path else model_free_graph()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as workdir:
        stats = bench(graph, args.runs, args.device, workdir)
    ok = stats["median_ms"] < 50 and stats["rerun_evals"] == 0
    print(f"graph               {path.relative_to(ROOT) if path and path.is_relative_to(ROOT) else path or 'model-free'}")
    print(f"nodes               {stats['nodes']}")
    print(f"cold run            {stats['cold_s']:.2f} s, {stats['cold_evals']} model evals")
    print(f"re-run median       {stats['median_ms']:.1f} ms (max {stats['max_ms']:.1f} ms, {args.runs} runs)")
    print(f"re-run model evals  {stats['rerun_evals']}")
    print(f"nodes re-run        {', '.join(stats['ran']) or 'none'} (side effects)")
    print(f"goal (< 50 ms, 0 evals): {'met' if ok else 'NOT met'}")
    return 0 if print_planning() and ok else 1


if __name__ == "__main__":
    sys.exit(main())
