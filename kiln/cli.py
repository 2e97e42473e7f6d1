"""Command line: `python main.py [GRAPH]` opens the GUI; subcommands run headless.

    python main.py run GRAPH.json|IMAGE.png [--set NODE.PARAM=VALUE]... [--out DIR] [--json]
                       [--batch FILE.jsonl] [--device D] [--threads N] [--cache-dir D] [--no-disk-cache]
                       [--models DIR]...
                       [--vram-budget GB] [--cpu-offload-budget GB] [--low-vram auto|on|off] [--sequential-offload]
                       [--absolute-paths | --private-paths] [--cluster local|auto|ADDRESS [--workers N]]
    python main.py validate GRAPH
    python main.py convert SOURCE OUT.json [--to kiln|comfyui|comfyui-workflow]
    python main.py nodes [--json]
    python main.py inspect-model FILE [--json]

Exit status: 0 success; 1 a node failed while running; 2 a user mistake (bad
arguments, unreadable or invalid graph, unknown node or param), reported as one
line on stderr; 3 an internal error (a bug in Kiln): its traceback is written to
$XDG_CACHE_HOME/kiln/logs and one line on stderr names that file (kiln.crash). A subcommand is a function `(argv, registry) -> int` listed in
COMMANDS. torch, transformers and Qt are imported only when something needs them.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.errors import KilnError, ValidationError, clip, quote, quote_list
from engine.graph import Graph
from engine.spec import NodeRegistry, ParamType, all_finite

_TEXT_PARAMS = (ParamType.STRING, ParamType.TEXT, ParamType.PATH, ParamType.CHOICE)


EXIT_STATUS = ("Exit status: 0 ok; 1 a node failed; 2 a user mistake (bad arguments or graph); "
               "3 an internal error (a bug in Kiln: the traceback is logged under "
               "$XDG_CACHE_HOME/kiln/logs and stderr names the file; please report it).")


class UsageError(KilnError):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def main(argv: list[str] | None = None, registry: NodeRegistry | None = None) -> int:
    """Entry point of main.py. `registry` replaces the built-in node types (tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:], registry)
        return cmd_gui(argv, registry)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except ValidationError as exc:  # one line per problem, as `validate` prints them
        for issue in exc.issues[:-1]:
            _fail(str(issue))
        return _fail(str(exc.issues[-1]) if exc.issues else str(exc))
    except KilnError as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # `main.py nodes | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: exit 3 with a log, never 1 like a node that failed
        from kiln import crash

        return crash.report(exc, argv)


def _fail(message: str, code: int = 2) -> int:
    print(f"kiln: {' '.join(message.split())}", file=sys.stderr)
    return code


def _registry(registry: NodeRegistry | None) -> NodeRegistry:
    if registry is not None:
        return registry
    from nodes import build_registry

    return build_registry()


def _load_graph(path: str, issues: list[Any] | None = None) -> Graph:
    """A graph file or PNG; a ComfyUI one is converted, saying so on stderr (kiln.convert_cmd)."""
    from kiln.convert_cmd import load_reporting

    return load_reporting(path, issues)


# --- GUI ---------------------------------------------------------------------
def cmd_gui(argv: list[str], registry: NodeRegistry | None) -> int:
    parser = _Parser(prog="main.py", description="Kiln: node-graph latent diffusion. Without a command "
                     "it opens the editor. Commands: " + ", ".join(COMMANDS) + " (main.py COMMAND --help).",
                     epilog=EXIT_STATUS)
    parser.add_argument("graph", nargs="?", help="graph file (.json) or Kiln PNG to open")
    parser.add_argument("--screenshot", metavar="PATH", help="save a screenshot of the window and quit")
    parser.add_argument("--run", action="store_true", help="run the graph once it is open")
    parser.add_argument("--size", metavar="WxH", type=_window_size, help="window size, e.g. 1600x1000")
    args = parser.parse_args(argv)
    if args.graph and not os.path.exists(args.graph) and os.sep not in args.graph and "." not in args.graph:
        raise UsageError(f"unknown command {quote(args.graph)}; commands: {', '.join(COMMANDS)}")
    try:
        from app.main import run_app
    except ModuleNotFoundError as exc:
        if exc.name in ("app", "app.main"):
            return _fail("the editor is not part of this installation (app.main is missing); "
                         "use `python main.py run GRAPH` to run a graph headless")
        if exc.name and exc.name.split(".")[0] in ("PySide6", "qasync"):
            return _fail(f"the editor needs {exc.name.split('.')[0]}: pip install PySide6-Essentials qasync")
        raise
    return int(run_app(args.graph, screenshot=args.screenshot, run=args.run, size=args.size) or 0)


def _window_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not WIDTHxHEIGHT, e.g. 1600x1000") from None
    if not (200 <= w <= 16384 and 200 <= h <= 16384):
        raise argparse.ArgumentTypeError(f"{quote(text)}: width and height must be 200..16384")
    return w, h


# --- run ---------------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    node_id: str
    param: str
    value: Any


def parse_set(item: str, graph: Graph, registry: NodeRegistry) -> Override:
    """`NODE.PARAM=VALUE` -> Override; VALUE is JSON when it parses (text params keep text)."""
    target, eq, raw = item.partition("=")
    node_ref, dot, param = target.strip().rpartition(".")
    if not eq or not dot or not node_ref or not param:
        raise UsageError(f"--set {quote(item)}: expected NODE.PARAM=VALUE")
    override = resolve_override(node_ref, param, graph, registry)
    declared = registry[graph.nodes[override.node_id].type].param(param)
    try:
        value = loads_finite(raw)
    except NonFiniteNumber as exc:
        if declared is None or declared.type not in _TEXT_PARAMS:
            raise UsageError(f"--set {clip(target.strip())}: {exc} is not a finite number; node "
                             f"{quote(override.node_id)}, param {quote(param)} needs one") from None
        value = raw
    except ValueError:
        value = raw
    if declared is not None and declared.type in _TEXT_PARAMS and not isinstance(value, str):
        value = raw  # `--set save.prefix=123` means the text "123"
    return _from_current_folder(Override(override.node_id, param, value), graph, registry)


class NonFiniteNumber(ValueError):
    """JSON text held NaN, Infinity or a number too large for a float."""


def _non_finite(text: str) -> float:
    raise NonFiniteNumber(text[:20])


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(text[:20])
    return value


def loads_finite(text: str) -> Any:
    """json.loads refusing NaN, Infinity and overflowing numbers (they cannot be saved back as JSON)."""
    return json.loads(text, parse_constant=_non_finite, parse_float=_finite_float)


def _from_current_folder(override: Override, graph: Graph, registry: NodeRegistry) -> Override:
    """A file path typed on the command line means a file from the current folder.

    Paths inside the graph file are relative to the graph's folder (engine.paths),
    so a relative path given here is made absolute before it joins the graph.
    """
    declared = registry[graph.nodes[override.node_id].type].param(override.param)
    value = override.value
    if declared is None or declared.type is not ParamType.PATH or not isinstance(value, str) or not value:
        return override
    return Override(override.node_id, override.param, os.path.abspath(os.path.expanduser(value)))


def resolve_override(node_ref: str, param: str, graph: Graph, registry: NodeRegistry,
                     value: Any = None) -> Override:
    """Find the node (by id, else by unique title) and check it has the param."""
    node_id = find_node(graph, registry, node_ref)
    node = graph.nodes[node_id]
    spec = registry.get(node.type)
    if spec is None:
        raise UsageError(f"node {quote(node_id)} has unknown type {quote(node.type)}")
    if spec.param(param) is None:
        names = ", ".join(p.name for p in spec.params) or "none"
        raise UsageError(f"node {quote(node_id)} ({spec.type}) has no param {quote(param)}; its params: {names}")
    return Override(node_id, param, value)


def find_node(graph: Graph, registry: NodeRegistry, ref: str) -> str:
    """A node id from an id or a title (the shown title: the node's own, else its type's)."""
    if ref in graph.nodes:
        return ref
    matches = [n.id for n in graph if (n.title or _type_title(n.type, registry)) == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"title {quote(ref)} names {len(matches)} nodes ({quote_list(sorted(matches), 8, str)}); use an id")
    raise UsageError(f"no node with id or title {quote(ref)} in the graph")


def _type_title(type_name: str, registry: NodeRegistry) -> str | None:
    spec = registry.get(type_name)
    return spec.title if spec is not None else None


def apply_overrides(graph: Graph, overrides: list[Override]) -> Graph:
    """A copy of `graph` with the params set. A param shown as an input takes the value given here
    instead of its link's (the link is left out of the copy), as a literal input does in ComfyUI."""
    out = graph.copy()
    for o in overrides:
        node = out.nodes[o.node_id]
        node.params[o.param] = o.value
        if o.param in node.param_inputs:
            out.links = [lk for lk in out.links if (lk.dst, lk.dst_socket) != (o.node_id, o.param)]
    return out


_MAX_BATCH_BYTES = 16 * 1024 * 1024


def read_batch(path: str, graph: Graph, registry: NodeRegistry) -> list[Graph]:
    """One graph per non-blank JSONL line of `{"NODE.PARAM": value}` overrides, all checked now."""
    return [apply_overrides(graph, job) for job in read_batch_overrides(path, graph, registry)]


def read_batch_overrides(path: str, graph: Graph, registry: NodeRegistry) -> list[list[Override]]:
    """The overrides of each job of a batch file, each job checked as `read_batch` checks it."""
    from engine import sniff
    from engine.errors import GraphFileError
    from engine.validate import check

    try:
        if sniff.regular_file_size(path) > _MAX_BATCH_BYTES:
            raise UsageError(f"{path}: is too large for a batch file (over 16 MB)")
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except GraphFileError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    jobs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            overrides = _batch_overrides(line, graph, registry)
            job = apply_overrides(graph, overrides)
            check(job, registry)
            _check_sizes(job, registry)
        except KilnError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
        jobs.append(overrides)
    if not jobs:
        raise UsageError(f"{path}: no jobs (expected one JSON object per line)")
    return jobs


def _batch_overrides(line: str, graph: Graph, registry: NodeRegistry) -> list[Override]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, dict):
        raise UsageError('expected an object like {"NODE.PARAM": value}')
    overrides = []
    for target, value in data.items():
        node_ref, dot, param = target.rpartition(".")
        if not dot or not node_ref or not param:
            raise UsageError(f"{quote(target)}: expected a key NODE.PARAM")
        if not all_finite(value):
            raise UsageError(f"{clip(target)}: NaN and Infinity are not finite numbers; the param needs one")
        overrides.append(_from_current_folder(resolve_override(node_ref, param, graph, registry, value),
                                              graph, registry))
    return overrides


def _run_parser() -> _Parser:
    p = _Parser(prog="main.py run", description="Run a graph headless; SaveImage nodes write PNGs "
                "(graph and settings embedded) into --out.", epilog=EXIT_STATUS)
    p.add_argument("graph", help="graph file (.json) or a PNG written by Kiln")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="change a param (NODE is an id or a unique title; VALUE is JSON or text); "
                        "a param fed by a link takes VALUE instead, e.g. seed.value=7 for the examples' one seed")
    p.add_argument("--out", metavar="DIR", help="folder for images (default: current folder)")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.add_argument("--batch", metavar="FILE.jsonl", help='one run per line of {"NODE.PARAM": value}')
    p.add_argument("--device", type=_device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=_threads, default=0,
                   help="CPU threads for torch (default 0: the cores other processes leave idle)")
    p.add_argument("--cache-dir", metavar="DIR", help="result cache folder (default: user cache)")
    p.add_argument("--no-disk-cache", action="store_true", help="keep results in memory only")
    p.add_argument("--models", action="append", default=[], metavar="DIR",
                   help="a model folder, searched after the built-in models as the editor's model folders are: "
                        "checkpoints, VAEs, LoRAs and embeddings by name, in DIR or its subfolders checkpoints/, "
                        "vae/, loras/, embeddings/ (ComfyUI's models/ folder works); repeatable")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--absolute-paths", dest="absolute_paths", action="store_true", default=False,
                       help="PNGs record the absolute paths of the files the run read")
    where.add_argument("--private-paths", dest="absolute_paths", action="store_false",
                       help="PNGs record file paths relative to the graph's folder plus a sha256 (default)")
    _memory_options(p)
    from kiln.cluster import add_cluster_options  # no Ray import

    add_cluster_options(p)
    return p


def _memory_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vram-budget", metavar="GB", type=_gigabytes,
                   help="device memory for models (default: the free memory at start, less a reserve)")
    p.add_argument("--cpu-offload-budget", metavar="GB", type=_gigabytes,
                   help="CPU memory for models moved off the device (default: no limit; beyond it they "
                        "are dropped and reloaded from disk on use)")
    p.add_argument("--low-vram", choices=("auto", "on", "off"), default="auto",
                   help="only the model part in use on the device (auto: when a model does not fit whole)")
    p.add_argument("--sequential-offload", action="store_true",
                   help="stream the UNet's blocks through the device one by one (slowest, least memory)")


def _gigabytes(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a size in GB (e.g. 6 or 3.5)")
    return int(value * 1024**3)


def _device(text: str) -> str:
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{quote(text)} is not auto, cpu, cuda, cuda:N or mps")
    return text


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a thread count (0 or more; 0 chooses by load)")
    return value


def cmd_run(argv: list[str], registry: NodeRegistry | None) -> int:
    args = _run_parser().parse_args(argv)
    graph = _load_graph(args.graph)
    registry = _registry(registry)
    _warn_missing_files(args.graph, graph.base_dir)
    graph = apply_overrides(graph, [parse_set(item, graph, registry) for item in args.set])
    if args.cluster or args.workers:
        return _run_on_cluster(args, graph, registry)
    jobs = read_batch(args.batch, graph, registry) if args.batch else None
    if jobs is None:
        _check_sizes(graph, registry, tuple(args.models))
    executor = _make_executor(args, registry)
    if jobs is None:
        with _collector_paused():
            result = executor.run(graph)
        summary = _summary(result)
        _report(summary, args.json, result)
        return 0 if result.ok else _fail(str(result.error), 1)
    return _run_batch(executor, jobs, args.json)


def _run_on_cluster(args: argparse.Namespace, graph: Graph, registry: NodeRegistry) -> int:
    """--cluster: the batch on a Ray render farm (kiln.cluster_batch; Ray is imported only then)."""
    from kiln.cluster import import_ray
    from kiln.cluster_batch import run_batch_on_cluster

    if not args.cluster or not args.batch:
        raise UsageError("--cluster runs a --batch JOBS.jsonl" if args.cluster else "--workers goes with --cluster")
    import_ray()  # say at once when Ray is missing
    return run_batch_on_cluster(graph, read_batch_overrides(args.batch, graph, registry),
                                _make_executor(args, registry).settings, registry, (apply_overrides, _summary),
                                target=args.cluster, workers=args.workers, as_json=args.json,
                                disk_cache=not args.no_disk_cache)


def _warn_missing_files(path: str, base_dir: str | None) -> None:
    """For a Kiln PNG with private paths: one stderr line per recorded file not found (name, hash)."""
    if not path.lower().endswith(".png"):
        return
    from engine import pngmeta
    from engine.provenance import missing_files

    try:
        data = pngmeta.read_png_graph(path)
    except (KilnError, OSError, ValueError):  # the graph already loaded; this is only a hint
        return
    for line in missing_files(data, base_dir):
        print(f"warning: {line}", file=sys.stderr)


@contextmanager
def _collector_paused(pause: bool = True) -> Iterator[None]:
    """The cyclic garbage collector off while a first run imports torch and loads models.

    Those create some 180k objects that live as long as the process and nothing to
    free, but the collector walked them again and again: 0.3-0.4 s of a 128 px run
    on a small CPU. Afterwards they are frozen (out of the collector's sight), so
    later collections stay as cheap as before.
    """
    was_enabled = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause:
            gc.freeze()
        if was_enabled:
            gc.enable()


def _make_executor(args: argparse.Namespace, registry: NodeRegistry) -> Any:
    from engine.cache import ResultCache
    from engine.executor import Executor
    from engine.spec import EngineSettings

    settings = EngineSettings(output_dir=args.out or os.getcwd(), device=args.device or "auto",
                              cache_dir=args.cache_dir, threads=args.threads, model_dirs=tuple(args.models),
                              absolute_paths=args.absolute_paths, vram_budget=args.vram_budget,
                              cpu_offload_budget=args.cpu_offload_budget, low_vram=args.low_vram,
                              sequential_offload=args.sequential_offload)
    cache = ResultCache.from_settings(settings, disk=not args.no_disk_cache)
    return Executor(registry, settings, cache)


def _summary(result: Any) -> dict[str, Any]:
    summary = {
        "outputs": list(result.files),
        "nodes": {nid: {"status": r.status, "seconds": round(r.seconds, 4)} for nid, r in result.nodes.items()},
        "model_evals": result.model_evals,
        "seconds": round(result.seconds, 4),
    }
    if result.memory and result.memory.get("device"):  # a model was loaded: where it sits, evictions, peak
        summary["memory"] = result.memory
    if result.error is not None:
        summary["error"] = str(result.error)
    return summary


def _report(summary: dict[str, Any], as_json: bool, result: Any) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    for path in summary["outputs"]:
        print(path)
    counts = {s: result.count(s) for s in ("ran", "cached", "failed")}
    print(f"kiln: {len(result.nodes)} nodes ({counts['ran']} ran, {counts['cached']} cached"
          f"{', 1 failed' if counts['failed'] else ''}), {result.model_evals} model evals, "
          f"{result.seconds:.2f} s", file=sys.stderr)


def _run_batch(executor: Any, jobs: list[Graph], as_json: bool) -> int:
    import time

    t0 = time.perf_counter()
    summaries = []
    failure = None
    for index, job in enumerate(jobs):
        with _collector_paused(index == 0):  # later jobs reuse the loaded models
            result = executor.run(job)
        summaries.append({"index": index, **_summary(result)})
        if not as_json:
            _report(summaries[-1], False, result)
        if not result.ok:
            failure = f"job {index}: {result.error}"
            break
    if as_json:
        print(json.dumps({"jobs": summaries, "seconds": round(time.perf_counter() - t0, 4)}))
    return _fail(failure, 1) if failure else 0


# --- validate, nodes, inspect-model ------------------------------------------------
def cmd_validate(argv: list[str], registry: NodeRegistry | None) -> int:
    parser = _Parser(prog="main.py validate", description="Check a graph against the node types.")
    parser.add_argument("graph")
    args = parser.parse_args(argv)
    from engine.validate import validate

    issues: list[Any] = []  # a ComfyUI file's conversion may find some (a checkpoint Kiln lacks)
    graph = _load_graph(args.graph, issues)
    registry = _registry(registry)
    issues += validate(graph, registry) + _size_issues(graph, registry)
    for issue in issues:
        print(issue)
    if issues:
        return _fail(f"{args.graph}: {len(issues)} problem{'s' if len(issues) > 1 else ''} (listed above)")
    print(f"{args.graph}: ok ({len(graph.nodes)} nodes, {len(graph.links)} links)")
    return 0


def _size_issues(graph: Graph, registry: NodeRegistry, model_dirs: tuple[str, ...] = ()) -> list[Any]:
    """Picture sizes the graph's checkpoints cannot sample, where the checkpoint files tell (no torch)."""
    from engine.choices import CHECKPOINTS
    from engine.model_geometry import size_issues
    from engine.spec import EngineSettings

    settings = EngineSettings(model_dirs=model_dirs)
    return size_issues(graph, registry, lambda name: registry.choices.resolve(CHECKPOINTS, name, settings))


def _check_sizes(graph: Graph, registry: NodeRegistry, model_dirs: tuple[str, ...] = ()) -> None:
    """Refuse, before anything runs, a picture size the checkpoint cannot sample (exit 2)."""
    from engine.errors import ValidationError

    issues = _size_issues(graph, registry, model_dirs)
    if issues:
        raise ValidationError(issues)


def cmd_nodes(argv: list[str], registry: NodeRegistry | None) -> int:
    parser = _Parser(prog="main.py nodes", description="List the node types.")
    parser.add_argument("--json", action="store_true", help="full description as JSON")
    args = parser.parse_args(argv)
    registry = _registry(registry)
    if args.json:
        print(json.dumps(registry.describe(), indent=2))
        return 0
    for spec in registry:
        ins = ", ".join(f"{i.name}:{i.type}" for i in spec.inputs) or "-"
        outs = ", ".join(f"{o.name}:{o.type}" for o in spec.outputs) or "-"
        print(f"{spec.category:<14} {spec.type:<20} {ins} -> {outs}")
    return 0


def cmd_inspect_model(argv: list[str], registry: NodeRegistry | None) -> int:
    parser = _Parser(prog="main.py inspect-model", description="Describe a checkpoint file.")
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        from engine.models.inspect import inspect_main
    except ModuleNotFoundError as exc:
        if exc.name == "engine.models.inspect":
            raise UsageError("inspect-model is not available in this installation") from None
        raise
    return int(inspect_main(args.file, args.json))


def cmd_convert(argv: list[str], registry: NodeRegistry | None) -> int:
    from kiln.convert_cmd import convert_main

    parser = _Parser(prog="main.py convert", description="Convert a ComfyUI workflow (UI or API format, or a "
                     "PNG) to a Kiln graph, or a Kiln graph to ComfyUI's formats.", epilog=EXIT_STATUS)
    return convert_main(argv, registry, parser)


COMMANDS: dict[str, Callable[[list[str], NodeRegistry | None], int]] = {
    "run": cmd_run,
    "validate": cmd_validate,
    "nodes": cmd_nodes,
    "inspect-model": cmd_inspect_model,
    "convert": cmd_convert,
}
