"""Runs a graph: validates it, plans what must be computed, runs nodes in order, caches.

Only the part of the graph feeding the targets is considered. Walking back from
the targets, a node whose outputs are all in the cache (memory or disk) is
"cached" and its ancestors need not run; everything else that is needed runs
once, in topological order. Side-effect nodes always run. Disabled nodes pass
each output through from their first connected input of the same socket type.
A link may end on a param the node shows as an input (engine.param_links): its
value replaces the param's own for that node's compute, is checked by the
param's own rules, and stands in the node's cache key instead of the param.

No torch and no Qt at module level: the GUI calls `Executor.run` on a worker thread.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import events as E
from engine import memory, param_links, paths, planning
from engine.cache import ResultCache, file_identity, node_key
from engine.errors import Cancelled, KilnError, NodeError, UserInputError, clip, quote
from engine.graph import Graph, Node
from engine.model_store import ModelStore
from engine.planning import RunHandle, RunPlan, snapshot
from engine.spec import FILES_KEY, ComputeContext, EngineSettings, NodeRegistry, NodeSpec, Param, ParamType


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
    memory: dict[str, Any] | None = None  # models on the device/CPU, evictions, peak (engine.model_budget)

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
        self.models.configure(self.settings)
        self._run_lock = threading.Lock()
        self._current: RunHandle | None = None  # the handle of the run in progress

    def cancel(self) -> None:
        """Ask the current run to stop at the next step or between nodes. Thread-safe."""
        handle = self._current
        if handle is not None:
            handle.cancel()

    def plan(self, graph: Graph, targets: Iterable[str] | None = None) -> RunPlan:
        """The run of `targets` (default: the output nodes): resolved, validated (ValidationError) and
        ordered. The plan keeps `graph` itself: hand over a snapshot no one edits."""
        return planning.plan(graph, self.registry, targets)

    def run(self, graph: Graph, targets: Iterable[str] | None = None,
            on_event: E.EventCallback | None = None, handle: RunHandle | None = None) -> RunResult:
        """Run what `targets` (default: the output nodes) need, on a snapshot of `graph` (the GUI may
        keep editing). Raises ValidationError first."""
        return self.run_plan(self.plan(snapshot(graph), targets), on_event, handle)

    def run_plan(self, plan: RunPlan, on_event: E.EventCallback | None = None,
                 handle: RunHandle | None = None) -> RunResult:
        """Run a plan as it is. `handle`: this run's own stop token (`Executor.cancel` uses it too)."""
        handle = handle if handle is not None else RunHandle()
        with self._run_lock:
            self._current = handle
            try:
                return _Run(self, plan, on_event, handle).execute()
            finally:
                self._current = None


class _Context:
    """What a node's compute sees of the run: implements engine.spec.ComputeContext (mypy checks it
    where `_call_compute` takes one)."""

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
        if self._run.handle.cancelled:
            raise Cancelled()

    def count_model_evals(self, n: int = 1) -> None:
        self._run.model_evals += int(n)


class _Run:
    """One execution of one graph snapshot."""

    def __init__(self, executor: Executor, plan: RunPlan, on_event: E.EventCallback | None,
                 handle: RunHandle):
        self.executor = executor
        self.graph = graph = plan.graph
        self.targets = list(plan.targets)
        self.on_event = on_event
        self.handle = handle
        self.order = list(plan.order)
        self.specs: dict[str, NodeSpec] = {nid: executor.registry[graph.nodes[nid].type] for nid in self.order}
        self.params = {nid: paths.resolve_params(self.specs[nid], {**self.specs[nid].default_params(),
                                                                   **graph.nodes[nid].params}, graph.base_dir)
                       for nid in self.order}  # relative file paths name files beside the graph file
        self.incoming: dict[str, dict[str, Any]] = {nid: {} for nid in self.order}  # id -> input -> link
        for lk in graph.links:
            if lk.dst in self.incoming:
                self.incoming[lk.dst][lk.dst_socket] = lk
        self.linked_params: dict[str, dict[str, Param]] = {nid: self._linked_params(nid) for nid in self.order}
        self.keys: dict[str, str] = {}
        # Nodes whose key waits for a value known only once their producers ran (a file named by a
        # linked value, and the nodes fed by them): they run, and take their real key just before.
        self.late_keys: set[str] = set()
        self.refs: dict[str, dict[str, _Ref | _Missing]] = {}  # node id -> output name -> source
        self.values: dict[str, dict[str, Any]] = {}  # key -> outputs, for this run
        self.result = RunResult(ok=True)
        self.model_evals = 0
        self._graph_json: dict | None = None

    def _linked_params(self, nid: str) -> dict[str, Param]:
        """{param name: param} of the node's params that take their value from a link."""
        node, spec = self.graph.nodes[nid], self.specs[nid]
        found = {socket: param_links.linked_param(spec, node, socket) for socket in self.incoming[nid]}
        return {socket: param for socket, param in found.items() if param is not None}

    def emit(self, event: E.Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def graph_json(self) -> dict:
        if self._graph_json is None:
            from engine.provenance import picture_graph

            self._graph_json = picture_graph(self.graph, self.executor.registry,
                                             self.executor.settings.absolute_paths)
        return self._graph_json

    # --- planning --------------------------------------------------------------
    def input_refs(self, nid: str) -> dict[str, _Ref | _Missing]:
        return {socket: self.refs[lk.src][lk.src_socket]
                for socket, lk in sorted(self.incoming[nid].items())}

    def compute_keys(self) -> None:
        for nid in self.order:
            self._compute_key(nid)

    def _compute_key(self, nid: str) -> None:
        """The node's cache key; a file name the system refuses fails the node, naming it."""
        try:
            self._compute_key_unchecked(nid)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or "a file name it holds cannot be used"
            raise NodeError(nid, f"cannot check the files it names ({reason})") from None

    def _compute_key_unchecked(self, nid: str) -> None:
        node, spec = self.graph.nodes[nid], self.specs[nid]
        inputs = self.input_refs(nid)
        if node.disabled:
            self.refs[nid] = {o.name: self._pass_through(node, spec, o.type, inputs) for o in spec.outputs}
            return
        linked = self.linked_params[nid]
        own_params = {name: value for name, value in self.params[nid].items() if name not in linked}
        linked_files, unknown = self._linked_files(nid)
        files = {**self._param_files(spec, nid), **linked_files}
        key = node_key(spec.type, spec.version, own_params, files, {s: _key_part(r) for s, r in inputs.items()})
        if spec.side_effects:  # never shared, never cached
            key = node_key("side-effect", 0, {"node": nid, "key": key}, {}, {})
        self.keys[nid] = key
        self.refs[nid] = {o.name: _Ref(nid, key, o.name) for o in spec.outputs}
        if unknown or any(isinstance(r, _Ref) and r.producer in self.late_keys for r in inputs.values()):
            self.late_keys.add(nid)
        else:
            self.late_keys.discard(nid)

    def _refresh_late_key(self, nid: str) -> None:
        """Its producers have run: the real key of a node in `late_keys`, after the pass-through
        refs of the disabled nodes before it (they follow the producers' real keys)."""
        for other in self.order[:self.order.index(nid)]:
            if self.graph.nodes[other].disabled:
                self._compute_key(other)
        self._compute_key(nid)

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
            identity = self._file_identity(p, value) if p.name not in self.linked_params[nid] else None
            if identity is not None:
                files[p.name] = identity
        return files

    def _file_identity(self, param: Param, value: Any) -> list | None:
        if not isinstance(value, str) or not value:
            return None
        if param.type is ParamType.PATH:
            return file_identity(value)
        if param.choices_from is None:
            return None
        found = self.executor.registry.choices.resolve(param.choices_from, value, self.executor.settings)
        return file_identity(found) if found is not None else None

    def _linked_files(self, nid: str) -> tuple[dict[str, list], bool]:
        """File identities for file params that take a linked value, and whether some value is not
        known yet (its producer has not run and is not cached: the node's key must wait for it)."""
        files: dict[str, list] = {}
        unknown = False
        for name, param in self.linked_params[nid].items():
            if param.type is not ParamType.PATH and param.choices_from is None:
                continue
            link = self.incoming[nid][name]
            ref = self.refs[link.src].get(link.src_socket)
            value = self._peek(ref) if isinstance(ref, _Ref) else None
            unknown = unknown or value is None
            if param.type is ParamType.PATH and isinstance(value, str):
                value = paths.resolve(value, self.graph.base_dir)
            identity = self._file_identity(param, value)
            if identity is not None:
                files[name] = identity
        return files, unknown

    def _peek(self, ref: _Ref) -> Any:
        """An output's value when this run has it or the cache does, else None."""
        spec = self.specs[ref.producer]
        if ref.key in self.values:
            return self.values[ref.key].get(ref.output)
        found = None if spec.side_effects else self.executor.cache.get(ref.key, [o.name for o in spec.outputs])
        return found.get(ref.output) if found else None

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
        if spec.side_effects or nid in self.late_keys:
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
        try:
            self.compute_keys()
        except NodeError as err:
            return self._abort(err, t0)
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
                if self.handle.cancelled:
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
        self.result.memory = self.executor.models.report()
        self.result.seconds = time.perf_counter() - t0
        self.emit(E.RunFinished(self.result.ok, self.result.cancelled, self.result.seconds))
        return self.result

    def _abort(self, err: NodeError, t0: float) -> RunResult:
        """A node's key could not be computed: the run fails on that node before any runs."""
        self.emit(E.RunStarted(tuple(self.order)))
        self.result.ok, self.result.error = False, err
        self.result.nodes = {nid: NodeRun("failed" if nid == err.node_id else "skipped") for nid in self.order}
        self.emit(E.Failed(err.node_id, err.message))
        self.result.seconds = time.perf_counter() - t0
        self.emit(E.RunFinished(False, False, self.result.seconds))
        return self.result

    def _skip_rest(self, nids: list[str]) -> None:
        for nid in nids:
            self._set(nid, "skipped")

    def run_node(self, nid: str) -> None:
        if nid in self.late_keys:
            self._refresh_late_key(nid)
        spec, key = self.specs[nid], self.keys[nid]
        if self._lookup(nid):  # an identical node earlier in this run computed it
            self._set(nid, "cached")
            self.emit(E.Cached(nid))
            return
        inputs = self.gather_inputs(nid)
        params = {**self.params[nid], **self._take_linked_params(nid, inputs)}
        self.emit(E.Started(nid))
        t0 = time.perf_counter()
        raw = _call_compute(spec, _Context(self, nid), inputs, params)
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
                raise NodeError(nid, f"node {quote(ref.disabled)} is disabled and has no input of type "
                                     f"{ref.type} to pass through")
            inputs[socket] = self.values[ref.key][ref.output]
        return inputs

    def _take_linked_params(self, nid: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """Move the values of linked params out of `inputs`, each checked as its param's own value."""
        values: dict[str, Any] = {}
        for name, param in self.linked_params[nid].items():
            value = inputs.pop(name)
            try:
                if param.type is ParamType.FLOAT and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)  # an INT output feeding a FLOAT param
                problem = param.check(value)
            except (TypeError, ValueError, OverflowError):
                problem = f"cannot use the value {quote(value, 40)}"
            if problem:
                link = self.incoming[nid][name]
                raise NodeError(nid, f"{problem} (the value linked from {clip(f'{link.src}.{link.src_socket}', 40)})", name)
            if param.type is ParamType.PATH and value:
                value = paths.resolve(value, self.graph.base_dir)
            values[name] = value
        return values

    def collect_outputs(self) -> None:
        for t in self.targets:
            refs = self.refs.get(t, {})
            self.result.outputs[t] = {name: self.values[r.key][r.output] for name, r in refs.items()
                                      if isinstance(r, _Ref) and r.key in self.values}


def _key_part(ref: _Ref | _Missing) -> tuple[str, str]:
    if isinstance(ref, _Missing):
        return ("missing", ref.disabled)
    return (ref.key, ref.output)


def _call_compute(spec: NodeSpec, ctx: ComputeContext, inputs: dict[str, Any], params: dict[str, Any]) -> Any:
    """Run a node's compute, turning every failure except cancel into a NodeError."""
    try:
        with ctx.models.using(inputs.values()):  # its models on the device, safe from eviction
            return spec.compute(ctx, inputs, dict(params))
    except (Cancelled, NodeError):
        raise
    except UserInputError as exc:
        raise NodeError(ctx.node_id, str(exc), exc.param) from exc
    except KilnError as exc:
        raise NodeError(ctx.node_id, str(exc)) from exc
    except Exception as exc:
        if memory.is_allocation_failure(exc):
            raise NodeError(ctx.node_id, memory.allocation_message(params, exc)) from exc
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
