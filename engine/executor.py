"""Runs a graph: validates it, plans what must be computed, runs nodes in order, caches.

Only the part of the graph feeding the targets is considered. Walking back from
the targets, a node whose outputs are all in the cache (memory or disk) is
"cached" and its ancestors need not run; everything else that is needed runs
once, in topological order. Side-effect nodes always run. Disabled nodes pass
each output through from their first connected input of the same socket type.

No torch and no Qt at module level: the GUI calls `Executor.run` on a worker thread.
"""
from __future__ import annotations

import heapq
import os
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine import events as E
from engine import paths
from engine.cache import ResultCache, file_identity, node_key
from engine.errors import Cancelled, Issue, KilnError, NodeError, UserInputError, ValidationError
from engine.graph import Graph, Node
from engine.model_store import ModelStore
from engine.spec import FILES_KEY, EngineSettings, NodeRegistry, NodeSpec, ParamType

_MODELS_DIR = Path(__file__).resolve().parents[1] / "resources" / "models"


@dataclass
class NodeRun:
    status: str  # "ran" | "cached" | "failed" | "skipped"
    seconds: float = 0.0


@dataclass
class RunResult:
    ok: bool
    cancelled: bool = False
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # targets only
    nodes: dict[str, NodeRun] = field(default_factory=dict)
    model_evals: int = 0
    seconds: float = 0.0
    error: NodeError | None = None  # `.details` holds the traceback of an unexpected failure
    files: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.nodes.values() if r.status == status)


@dataclass(frozen=True)
class _Ref:
    """Where an input's value comes from: output `output` of the node computed as `key`."""

    producer: str
    key: str
    output: str


@dataclass(frozen=True)
class _Missing:
    """The output of a disabled node that has nothing of its type to pass through."""

    disabled: str
    type: str


class Executor:
    def __init__(self, registry: NodeRegistry, settings: EngineSettings | None = None,
                 cache: ResultCache | None = None, models: ModelStore | None = None):
        self.registry = registry
        self.settings = settings or EngineSettings()
        self.cache = cache if cache is not None else ResultCache.from_settings(self.settings)
        self.models = models if models is not None else ModelStore()
        self._cancel = threading.Event()
        self._run_lock = threading.Lock()

    def cancel(self) -> None:
        """Ask the current run to stop at the next step or between nodes. Thread-safe."""
        self._cancel.set()

    def run(self, graph: Graph, targets: Iterable[str] | None = None,
            on_event: E.EventCallback | None = None) -> RunResult:
        """Run what `targets` (default: the output nodes) need. Raises ValidationError first."""
        with self._run_lock:
            self._cancel.clear()
            graph = snapshot(graph)  # the GUI may keep editing while this runs
            target_ids = resolve_targets(graph, self.registry, targets)
            from engine.validate import check

            check(graph, self.registry, target_ids)
            return _Run(self, graph, target_ids, on_event).execute()


def resolve_targets(graph: Graph, registry: NodeRegistry, targets: Iterable[str] | None) -> list[str]:
    """The given ids (checked), else the enabled output nodes, else every sink node."""
    if targets is not None:
        ids = list(dict.fromkeys(targets))
        issues = [Issue("bad_target", "no such node to run", node_id=t) for t in ids if t not in graph.nodes]
        if issues:
            raise ValidationError(issues)
        return ids
    outputs = [n.id for n in graph if not n.disabled
               and (spec := registry.get(n.type)) is not None and spec.output_node]
    if outputs:
        return sorted(outputs)
    feeding = {lk.src for lk in graph.links}
    return sorted(n.id for n in graph if n.id not in feeding)


def needed_order(graph: Graph, targets: Iterable[str]) -> list[str]:
    """The targets and their ancestors in topological order (ties broken by id, so stable)."""
    feeders: dict[str, set[str]] = {}
    for lk in graph.links:
        feeders.setdefault(lk.dst, set()).add(lk.src)
    needed, stack = set(), [t for t in targets if t in graph.nodes]
    while stack:
        nid = stack.pop()
        if nid not in needed:
            needed.add(nid)
            stack.extend(f for f in feeders.get(nid, ()) if f in graph.nodes)
    waiting = {nid: len(feeders.get(nid, set()) & needed) for nid in needed}
    consumers: dict[str, list[str]] = {}
    for dst in needed:
        for src in feeders.get(dst, set()) & needed:
            consumers.setdefault(src, []).append(dst)
    ready = [nid for nid, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        nid = heapq.heappop(ready)
        order.append(nid)
        for dst in consumers.get(nid, ()):
            waiting[dst] -= 1
            if waiting[dst] == 0:
                heapq.heappush(ready, dst)
    return order  # validation has already refused cycles


def snapshot(graph: Graph) -> Graph:
    """A copy the GUI's later edits cannot reach (faster than deepcopy: params are JSON)."""
    return Graph(nodes={nid: replace(n, params=_copy_json(n.params)) for nid, n in graph.nodes.items()},
                 links=list(graph.links), backdrops={k: replace(b) for k, b in graph.backdrops.items()},
                 meta=_copy_json(graph.meta), base_dir=graph.base_dir)


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


class _Context:
    """What a node's compute sees of the run (engine.spec.ComputeContext)."""

    def __init__(self, run: _Run, node_id: str):
        self._run = run
        self.node_id = node_id
        self.settings = run.executor.settings
        self.models = run.executor.models

    @property
    def graph_json(self) -> dict:
        return self._run.graph_json()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        self._run.emit(E.Progress(self.node_id, int(step), int(total), preview))

    def check_cancelled(self) -> None:
        if self._run.executor._cancel.is_set():
            raise Cancelled()

    def count_model_evals(self, n: int = 1) -> None:
        self._run.model_evals += int(n)


class _Run:
    """One execution of one graph snapshot."""

    def __init__(self, executor: Executor, graph: Graph, targets: list[str],
                 on_event: E.EventCallback | None):
        self.executor = executor
        self.graph = graph
        self.targets = targets
        self.on_event = on_event
        self.order = needed_order(graph, targets)
        self.specs: dict[str, NodeSpec] = {nid: executor.registry[graph.nodes[nid].type] for nid in self.order}
        self.params = {nid: paths.resolve_params(self.specs[nid], {**self.specs[nid].default_params(),
                                                                   **graph.nodes[nid].params}, graph.base_dir)
                       for nid in self.order}  # relative file paths name files beside the graph file
        self.incoming: dict[str, dict[str, Any]] = {nid: {} for nid in self.order}  # id -> input -> link
        for lk in graph.links:
            if lk.dst in self.incoming:
                self.incoming[lk.dst][lk.dst_socket] = lk
        self.keys: dict[str, str] = {}
        self.refs: dict[str, dict[str, _Ref | _Missing]] = {}  # node id -> output name -> source
        self.values: dict[str, dict[str, Any]] = {}  # key -> outputs, for this run
        self.result = RunResult(ok=True)
        self.model_evals = 0
        self._graph_json: dict | None = None

    def emit(self, event: E.Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def graph_json(self) -> dict:
        if self._graph_json is None:
            from engine.graph_file import graph_to_dict

            data = graph_to_dict(self.graph)
            # The picture records the files that made it: the graph's folder is not beside the picture.
            for nid, name, value in paths.path_params(self.graph, self.executor.registry):
                data["nodes"][nid]["params"][name] = os.path.abspath(paths.resolve(value, self.graph.base_dir))
            self._graph_json = data
        return self._graph_json

    # --- planning --------------------------------------------------------------
    def input_refs(self, nid: str) -> dict[str, _Ref | _Missing]:
        return {socket: self.refs[lk.src][lk.src_socket]
                for socket, lk in sorted(self.incoming[nid].items())}

    def compute_keys(self) -> None:
        for nid in self.order:
            node, spec = self.graph.nodes[nid], self.specs[nid]
            inputs = self.input_refs(nid)
            if node.disabled:
                self.refs[nid] = {o.name: self._pass_through(node, spec, o.type, inputs) for o in spec.outputs}
                continue
            key = node_key(spec.type, spec.version, self.params[nid], self._param_files(spec, nid),
                           {s: _key_part(r) for s, r in inputs.items()})
            if spec.side_effects:  # never shared, never cached
                key = node_key("side-effect", 0, {"node": nid, "key": key}, {}, {})
            self.keys[nid] = key
            self.refs[nid] = {o.name: _Ref(nid, key, o.name) for o in spec.outputs}

    def _pass_through(self, node: Node, spec: NodeSpec, type_: Any,
                      inputs: Mapping[str, _Ref | _Missing]) -> _Ref | _Missing:
        for inp in spec.inputs:
            if inp.type == type_ and inp.name in inputs:
                return inputs[inp.name]
        return _Missing(node.id, str(type_))

    def _param_files(self, spec: NodeSpec, nid: str) -> dict[str, list]:
        """File identities for PATH params and for choice params naming an existing file."""
        files: dict[str, list] = {}
        for p in spec.params:
            value = self.params[nid].get(p.name)
            if not isinstance(value, str) or not value:
                continue
            if p.type is ParamType.PATH:
                files[p.name] = file_identity(value)
            elif p.choices_from is not None:
                found = self._find_model_file(value)
                if found is not None:
                    files[p.name] = file_identity(found)
        return files

    def _find_model_file(self, name: str) -> str | None:
        """The file a name stands for, searched like nodes/checkpoint_loader does."""
        dirs = [Path("."), _MODELS_DIR, *(Path(d).expanduser() for d in self.executor.settings.model_dirs)]
        name = os.path.expanduser(name)
        return next((str(d / name) for d in dirs if (d / name).exists()), None)

    def producers(self, nid: str) -> set[str]:
        disabled = self.graph.nodes[nid].disabled
        refs = self.refs[nid].values() if disabled else self.input_refs(nid).values()
        return {r.producer for r in refs if isinstance(r, _Ref)}

    def plan(self) -> list[str]:
        """Statuses from a walk back from the targets; returns the nodes to run, in order."""
        demanded, covered = set(self.targets), set()
        to_run: list[str] = []
        for nid in reversed(self.order):
            if nid in demanded and not self.graph.nodes[nid].disabled:
                if self._lookup(nid):
                    self._set(nid, "cached")
                    covered |= self.producers(nid)
                else:
                    self._set(nid, "skipped")  # until it runs
                    to_run.append(nid)
                    demanded |= self.producers(nid)
            elif nid in demanded:
                self._set(nid, "skipped")
                demanded |= self.producers(nid)
            elif nid in covered:  # up to date: a cached descendant stands for it
                self._set(nid, "skipped" if self.graph.nodes[nid].disabled else "cached")
                covered |= self.producers(nid)
            else:
                self._set(nid, "skipped")
        return to_run[::-1]

    def _lookup(self, nid: str) -> bool:
        spec, key = self.specs[nid], self.keys[nid]
        if spec.side_effects:
            return False
        if key in self.values:
            return True
        found = self.executor.cache.get(key, [o.name for o in spec.outputs])
        if found is not None:
            self.values[key] = found
        return found is not None

    def _set(self, nid: str, status: str, seconds: float = 0.0) -> None:
        self.result.nodes[nid] = NodeRun(status, seconds)

    # --- execution -------------------------------------------------------------
    def execute(self) -> RunResult:
        t0 = time.perf_counter()
        self.compute_keys()
        self.emit(E.RunStarted(tuple(self.order)))
        to_run = self.plan()
        self.result.nodes = {nid: self.result.nodes[nid] for nid in self.order}  # in run order
        for nid in self.order:
            if self.result.nodes[nid].status == "cached":
                self.emit(E.Cached(nid))
            elif nid in to_run:
                self.emit(E.Queued(nid))
        for i, nid in enumerate(to_run):
            try:
                if self.executor._cancel.is_set():
                    raise Cancelled()
                self.run_node(nid)
            except Cancelled:
                self.result.ok, self.result.cancelled = False, True
                self._skip_rest(to_run[i:])
                break
            except NodeError as err:
                self.result.ok, self.result.error = False, err
                self._set(nid, "failed")
                self.emit(E.Failed(nid, err.message))
                self._skip_rest(to_run[i + 1:])
                break
        self.collect_outputs()
        self.result.model_evals = self.model_evals
        self.result.seconds = time.perf_counter() - t0
        self.emit(E.RunFinished(self.result.ok, self.result.cancelled, self.result.seconds))
        return self.result

    def _skip_rest(self, nids: list[str]) -> None:
        for nid in nids:
            self._set(nid, "skipped")

    def run_node(self, nid: str) -> None:
        spec, key = self.specs[nid], self.keys[nid]
        if self._lookup(nid):  # an identical node earlier in this run computed it
            self._set(nid, "cached")
            self.emit(E.Cached(nid))
            return
        inputs = self.gather_inputs(nid)
        self.emit(E.Started(nid))
        t0 = time.perf_counter()
        raw = _call_compute(spec, _Context(self, nid), inputs, self.params[nid])
        outputs, files = _check_outputs(nid, spec, raw)
        seconds = time.perf_counter() - t0
        self.values[key] = outputs
        if not spec.side_effects:
            self.executor.cache.put(key, outputs)
        for path in files:
            self.result.files.append(path)
            self.emit(E.FileWritten(nid, path))
        self._set(nid, "ran", seconds)
        self.emit(E.Finished(nid, seconds))

    def gather_inputs(self, nid: str) -> dict[str, Any]:
        inputs: dict[str, Any] = {}
        for socket, ref in self.input_refs(nid).items():
            if isinstance(ref, _Missing):
                raise NodeError(nid, f"node {ref.disabled!r} is disabled and has no input of type "
                                     f"{ref.type} to pass through")
            inputs[socket] = self.values[ref.key][ref.output]
        return inputs

    def collect_outputs(self) -> None:
        for t in self.targets:
            refs = self.refs.get(t, {})
            self.result.outputs[t] = {name: self.values[r.key][r.output] for name, r in refs.items()
                                      if isinstance(r, _Ref) and r.key in self.values}


def _key_part(ref: _Ref | _Missing) -> tuple[str, str]:
    if isinstance(ref, _Missing):
        return ("missing", ref.disabled)
    return (ref.key, ref.output)


def _call_compute(spec: NodeSpec, ctx: _Context, inputs: dict[str, Any], params: dict[str, Any]) -> Any:
    """Run a node's compute, turning every failure except cancel into a NodeError."""
    try:
        return spec.compute(ctx, inputs, dict(params))
    except (Cancelled, NodeError):
        raise
    except UserInputError as exc:
        raise NodeError(ctx.node_id, str(exc), exc.param) from exc
    except KilnError as exc:
        raise NodeError(ctx.node_id, str(exc)) from exc
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        err = NodeError(ctx.node_id, f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": "))
        err.details = traceback.format_exc()
        raise err from exc


def _check_outputs(nid: str, spec: NodeSpec, raw: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(raw, Mapping):
        raise NodeError(nid, f"{spec.type} returned {type(raw).__name__} instead of its outputs")
    missing = [o.name for o in spec.outputs if o.name not in raw]
    if missing:
        raise NodeError(nid, f"{spec.type} returned no {', '.join(map(repr, missing))} output")
    outputs = {o.name: raw[o.name] for o in spec.outputs}
    return outputs, [str(p) for p in raw.get(FILES_KEY, ())]
