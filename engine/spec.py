"""Node type declarations: socket types, params, node specs and the registry.

This module is the contract between the engine, the node types and the GUI.
It imports neither Qt nor torch.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from engine.choices import ChoiceProvider
from engine.errors import quote, quote_list

if TYPE_CHECKING:
    from engine.model_store import ModelStore


class SocketType(str, Enum):
    """What travels along a link. Values are the names written in graph files."""

    MODEL = "MODEL"  # a loaded denoiser (UNet + schedule + prediction type)
    AUTOENCODER = "AUTOENCODER"  # first stage: encode images to latents and back
    CONDITIONER = "CONDITIONER"  # turns prompts / layouts / maps into CONDITIONING
    CONDITIONING = "CONDITIONING"
    LATENT = "LATENT"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LAYOUT = "LAYOUT"
    SEMANTIC_MAP = "SEMANTIC_MAP"
    INT = "INT"
    FLOAT = "FLOAT"
    STRING = "STRING"

    def __str__(self) -> str:
        return self.value


class ParamType(str, Enum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING = "string"  # one line
    TEXT = "text"  # multi-line (prompts)
    CHOICE = "choice"  # one of `choices`, or of a dynamic list named by `choices_from`
    PATH = "path"  # a file path; its identity (size, mtime) is part of the cache key
    SEED = "seed"  # an int in [0, 2**63 - 1]; the GUI offers randomise/increment after run
    JSON = "json"  # any JSON value (layout boxes, painted masks as base64 PNG, ...)

    def __str__(self) -> str:
        return self.value


SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class Input:
    name: str
    type: SocketType
    optional: bool = False
    help: str = ""


@dataclass(frozen=True)
class Output:
    name: str
    type: SocketType
    help: str = ""


@dataclass(frozen=True)
class Param:
    name: str
    type: ParamType
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    # Names a list the application fills at run time ("checkpoints", "samplers", ...).
    # Such a param accepts any string at validation; the node checks it when it runs.
    choices_from: str | None = None
    # Show this param as a widget inside the node on the canvas (the main knobs).
    inline: bool = False
    # INT params: the value must be a multiple of this (pixel sizes that the autoencoder divides).
    multiple: int | None = None
    # The value is a painting kept as a base64 PNG: "mask" (grey levels, 255 = on) or "labels"
    # (class ids). The GUI shows it as a picture, never as text.
    drawing: str | None = None
    # A node's own rule for a value that passed the type checks (a file prefix's length, ...):
    # value -> a one-line problem or None. Called wherever the param is checked (validation too).
    validator: Callable[[Any], str | None] | None = field(default=None, compare=False, repr=False)

    def check(self, value: Any) -> str | None:
        """Return a one-line problem with `value`, or None when it is acceptable."""
        t = self.type
        if t in (ParamType.INT, ParamType.SEED):
            if isinstance(value, bool) or not isinstance(value, int):
                return f"expects an integer, got {_short(value)}"
            if t is ParamType.SEED and not 0 <= value <= SEED_MAX:
                return f"seed {quote(value, 40)} is outside [0, 2**63-1]"
        elif t is ParamType.FLOAT:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"expects a number, got {_short(value)}"
            if isinstance(value, float) and not math.isfinite(value):  # ints are finite, maybe huge
                return f"expects a finite number, got {value}"
        elif t is ParamType.BOOL:
            if not isinstance(value, bool):
                return f"expects true or false, got {_short(value)}"
        elif t is ParamType.JSON:
            if not all_finite(value):
                return "holds NaN or Infinity, which is not a number JSON allows"
        elif t in (ParamType.STRING, ParamType.TEXT, ParamType.PATH, ParamType.CHOICE):
            if not isinstance(value, str):
                return f"expects text, got {_short(value)}"
            if t is ParamType.CHOICE and self.choices and value not in self.choices:
                return f"{quote(value)} is not one of: {quote_list(self.choices, 12, str)}"
        if t in (ParamType.INT, ParamType.FLOAT, ParamType.SEED):
            if self.min is not None and value < self.min:
                return f"{_short(value)} is below the minimum {self.min:g}"
            if self.max is not None and value > self.max:
                return f"{_short(value)} is above the maximum {self.max:g}"
        if self.multiple and t is ParamType.INT and value % self.multiple:
            return f"{quote(value, 40)} is not a multiple of {self.multiple}"
        return self.validator(value) if self.validator is not None else None


def all_finite(value: Any, depth: int = 0) -> bool:
    """No NaN or Infinity anywhere in a JSON value (they cannot be written back as JSON)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 64:
        return True
    if isinstance(value, dict):
        return all(all_finite(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v, depth + 1) for v in value)
    return True


def _short(value: Any) -> str:
    return quote(value, 40)


class ComputeContext(Protocol):
    """What a node's compute function may use besides its inputs and params."""

    @property
    def node_id(self) -> str: ...

    @property
    def settings(self) -> EngineSettings: ...

    @property
    def models(self) -> ModelStore:
        """Loaded models kept across runs."""

    @property
    def graph_json(self) -> dict:
        """The graph being run, for embedding in written images."""

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report step/total; `preview` is an optional small RGB uint8 array (H, W, 3)."""

    def check_cancelled(self) -> None:
        """Raise engine.errors.Cancelled if the user asked to stop. Call once per step."""

    def count_model_evals(self, n: int = 1) -> None:
        """Record n denoiser (UNet) forward passes."""


@dataclass
class EngineSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    output_dir: str = "."
    model_dirs: tuple[str, ...] = ()  # searched after resources/models
    cache_dir: str | None = None  # None: the user cache directory
    memory_cache_bytes: int = 2 * 1024**3
    disk_cache_bytes: int = 4 * 1024**3
    threads: int = 0  # torch CPU threads; 0: the cores other processes leave idle (models.loader.cpu_threads)
    absolute_paths: bool = False  # saved PNGs record absolute file paths (False: relative + sha256, private)
    # Device memory for models (engine.model_budget), in bytes: None = the free device memory when the
    # first model loads, less a reserve (no limit on the CPU); models past it wait in CPU memory, up to
    # cpu_offload_budget (None: no limit), and are dropped (reloaded from disk on use) beyond that.
    vram_budget: int | None = None
    cpu_offload_budget: int | None = None
    low_vram: str = "auto"  # auto | on | off: only the model part in use on the device
    sequential_offload: bool = False  # stream the UNet's blocks through the device one at a time


# A compute result may also carry, under this key, the paths of files it wrote
# (SaveImage); the executor reports them in RunResult.files. Not an output socket.
FILES_KEY = "_files"

ComputeFn = Callable[[ComputeContext, Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class NodeSpec:
    """A node type. `compute(ctx, inputs, params)` returns {output name: value}.

    compute must be pure: same inputs and params, same outputs. Randomness comes
    only from SEED params. Missing optional inputs are absent from `inputs`.
    """

    type: str
    title: str
    category: str
    help: str
    compute: ComputeFn
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    params: tuple[Param, ...] = ()
    version: int = 1  # bump when compute changes meaning: it is part of the cache key
    output_node: bool = False  # a sink: runs when the whole graph is run
    side_effects: bool = False  # writes files etc.: never served from the cache
    aliases: tuple[str, ...] = ()  # what other tools (ComfyUI, A1111) call it, for node search
    # What the GUI needs to know, declared here so that it never goes by type names:
    editor: str | None = None  # the drawing editor that opens the node: "mask", "layout" or "semantic"
    paints_over: str | None = None  # the input whose picture the editor shows under the drawing
    roles: tuple[str, ...] = ()  # ROLE_* below: what the GUI may use this node type for

    def input(self, name: str) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    def input_of_type(self, socket_type: SocketType) -> Input | None:
        return next((i for i in self.inputs if i.type is socket_type), None)

    def output_of_type(self, socket_type: SocketType) -> Output | None:
        return next((o for o in self.outputs if o.type is socket_type), None)

    def output(self, name: str) -> Output | None:
        return next((o for o in self.outputs if o.name == name), None)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def default_params(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


# NodeSpec.roles, found with NodeRegistry.first_with_role:
ROLE_OPENS_PICTURES = "opens_pictures"  # a dropped picture file becomes this node (in its first PATH param)
ROLE_HOLDS_LAYOUT = "holds_layout"  # holds the boxes the layout editor edits; outputs them as a LAYOUT


@dataclass
class NodeRegistry:
    """The node types an engine knows, and the lists their `choices_from` params draw on.
    Built explicitly and passed around; no globals."""

    _specs: dict[str, NodeSpec] = field(default_factory=dict)
    choices: ChoiceProvider = field(default_factory=ChoiceProvider)

    def register(self, spec: NodeSpec) -> NodeSpec:
        if spec.type in self._specs:
            raise ValueError(f"node type {spec.type!r} is registered twice")
        self._specs[spec.type] = spec
        return spec

    def register_all(self, specs: Iterable[NodeSpec]) -> None:
        for spec in specs:
            self.register(spec)

    def get(self, type_name: str) -> NodeSpec | None:
        return self._specs.get(type_name)

    def first_with_role(self, role: str) -> NodeSpec | None:
        """The first registered node type that declares `role` (a ROLE_* constant)."""
        return next((s for s in self._specs.values() if role in s.roles), None)

    def __getitem__(self, type_name: str) -> NodeSpec:
        return self._specs[type_name]

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._specs

    def __iter__(self) -> Iterator[NodeSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: (s.category, s.type)))

    def __len__(self) -> int:
        return len(self._specs)

    def describe(self) -> list[dict[str, Any]]:
        """JSON-ready description of every node type (for `main.py nodes --json`)."""
        return [describe_spec(s) for s in self]


def describe_spec(spec: NodeSpec) -> dict[str, Any]:
    return {
        "type": spec.type,
        "title": spec.title,
        "category": spec.category,
        "help": spec.help,
        "version": spec.version,
        "output_node": spec.output_node,
        "inputs": [{"name": i.name, "type": i.type.value, "optional": i.optional, "help": i.help}
                   for i in spec.inputs],
        "outputs": [{"name": o.name, "type": o.type.value, "help": o.help} for o in spec.outputs],
        "params": [_describe_param(p) for p in spec.params],
    }


def _describe_param(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "type": p.type.value, "default": p.default, "help": p.help}
    for key in ("min", "max", "step", "multiple", "choices_from"):
        if getattr(p, key) is not None:
            out[key] = getattr(p, key)
    if p.choices:
        out["choices"] = list(p.choices)
    return out
