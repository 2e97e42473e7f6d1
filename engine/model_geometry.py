"""Which picture sizes a model can sample, known without loading it.

A latent diffusion model shrinks a picture twice: the autoencoder by its factor
(8 for Stable Diffusion), then the UNet halves the latent once per level but the
last. A width that is not a multiple of both together fails deep in the UNet
("Sizes of tensors must match"), so the editor flags it on the node that sets the
size, from what the checkpoint file says about itself: the config Kiln embeds in
a safetensors header, a card or YAML file beside it, a diffusers folder's
configs, or the header's tensor names. A model that was loaded is remembered too
(.ckpt files have no header to read). No torch, no Qt.
"""
from __future__ import annotations

import json
import os
import re
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.choices import CHECKPOINTS
from engine.errors import Issue
from engine.graph import Graph, Link, Node
from engine.spec import NodeRegistry, NodeSpec, ParamType, SocketType

MAX_HEADER_BYTES = 100 * 1024 * 1024
_UNET_DOWNSAMPLE = re.compile(r"^model\.diffusion_model\.input_blocks\.(\d+)\.0\.op\.weight$")
_AE_DOWNSAMPLE = re.compile(r"^first_stage_model\.encoder\.down\.(\d+)\.downsample\.conv\.weight$")


@dataclass(frozen=True)
class SizeRule:
    autoencoder: int  # the autoencoder's downsampling factor
    unet: int  # the UNet's own downsampling of the latent

    @property
    def multiple(self) -> int:
        """Picture sides must be multiples of this."""
        return self.autoencoder * self.unet


def unet_downsampling(channel_mult: Iterable[int]) -> int:
    """The UNet halves the latent after every level but the last."""
    return 2 ** max(0, len(tuple(channel_mult)) - 1)


def rule_from_config(config: Any) -> SizeRule | None:
    """From a CheckpointConfig or its dict ({"unet": {"channel_mult"}, "autoencoder": {"ch_mult"}})."""
    data = config.to_dict() if hasattr(config, "to_dict") else config
    try:
        unet_mult = data["unet"]["channel_mult"]
        ae_mult = data["autoencoder"]["ch_mult"]
    except (KeyError, TypeError):
        return None
    return SizeRule(unet_downsampling(ae_mult), unet_downsampling(unet_mult))


def nearest_multiples(value: int, multiple: int) -> tuple[int, int]:
    """The multiples of `multiple` just below and above `value` (both positive)."""
    lower = value // multiple * multiple
    return (lower, lower + multiple) if lower else (multiple, 2 * multiple)


# ---------------------------------------------------------------- reading a checkpoint file

_known: dict[tuple[str, int, int], SizeRule | None] = {}  # (real path, size, mtime) -> rule
_known_lock = threading.Lock()


def _identity(path: str) -> tuple[str, int, int] | None:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return real, st.st_size, st.st_mtime_ns


def remember(path: str, rule: SizeRule | None) -> None:
    """Record the rule of a model that was loaded (its config is then known for sure)."""
    identity = _identity(path)
    if identity is not None and rule is not None:
        with _known_lock:
            _known[identity] = rule


def size_rule(path: str) -> SizeRule | None:
    """The checkpoint's size rule when its files tell it cheaply; None when unknown."""
    identity = _identity(path)
    if identity is None:
        return None
    with _known_lock:
        if identity in _known:
            return _known[identity]
    rule = _read_rule(Path(identity[0]))
    with _known_lock:
        _known.setdefault(identity, rule)
    return rule


def _read_rule(path: Path) -> SizeRule | None:
    if path.is_dir():
        return _diffusers_rule(path)
    for read in (_yaml_rule, _card_rule, _safetensors_rule):
        try:
            rule = read(path)
        except Exception:  # noqa: BLE001 - a best-effort probe: the loader names what is wrong with the file
            rule = None
        if rule is not None:
            return rule
    return None


def _yaml_rule(path: Path) -> SizeRule | None:
    """A CompVis/Stability YAML beside the file (it wins when loading, so here too)."""
    yaml_path = path.with_suffix(".yaml")
    if not yaml_path.is_file():
        return None
    import yaml

    params = yaml.safe_load(yaml_path.read_text())["model"]["params"]
    unet = params["unet_config"]["params"]["channel_mult"]
    ae = params["first_stage_config"]["params"]["ddconfig"]["ch_mult"]
    return SizeRule(unet_downsampling(ae), unet_downsampling(unet))


def _card_rule(path: Path) -> SizeRule | None:
    card = path.with_suffix(".json")
    if not card.is_file():
        return None
    return rule_from_config(json.loads(card.read_text()).get("checkpoint_config"))


def _safetensors_rule(path: Path) -> SizeRule | None:
    if path.suffix.lower() != ".safetensors":
        return None
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER_BYTES:
            return None
        header = json.loads(f.read(length))
    embedded = (header.get("__metadata__") or {}).get("kiln_config")
    if embedded:
        return rule_from_config(json.loads(embedded))
    unet_levels = sum(1 for key in header if _UNET_DOWNSAMPLE.match(key))
    ae_levels = sum(1 for key in header if _AE_DOWNSAMPLE.match(key))
    if not unet_levels or not ae_levels:
        return None  # not the usual layout (e.g. ResBlock downsampling): unknown, not guessed
    return SizeRule(2 ** ae_levels, 2 ** unet_levels)


def _diffusers_rule(folder: Path) -> SizeRule | None:
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())["block_out_channels"]
        vae = json.loads((folder / "vae" / "config.json").read_text())["block_out_channels"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return SizeRule(unet_downsampling(vae), unet_downsampling(unet))


# ---------------------------------------------------------------- the graph

FindCheckpoint = Callable[[str], str | None]  # a checkpoint param's value -> its file, None if not found


def size_issues(graph: Graph, registry: NodeRegistry, find_checkpoint: FindCheckpoint) -> list[Issue]:
    """Picture sizes a sampler's model cannot take, each on the node and param that set the size.

    Follows each sampler's model link to its checkpoint loader and its latent link to the node with
    width/height params (Empty Latent); anything not knowable from the files is not reported."""
    issues: list[Issue] = []
    checked: set[str] = set()
    for node in graph.nodes.values():
        spec = registry.get(node.type)
        model_input, latent_input = _sampler_inputs(spec)
        if node.disabled or model_input is None or latent_input is None:
            continue
        incoming = graph.incoming(node.id)
        sized = _size_node(graph, registry, incoming.get(latent_input))
        if sized is None or sized.id in checked:
            continue
        found = _checkpoint_rule(graph, registry, incoming.get(model_input), find_checkpoint)
        if found is not None:
            checked.add(sized.id)
            issues.extend(_size_param_issues(graph, registry, sized, *found))
    return issues


def _sampler_inputs(spec: NodeSpec | None) -> tuple[str | None, str | None]:
    if spec is None:
        return None, None
    model = next((i.name for i in spec.inputs if i.type is SocketType.MODEL), None)
    latent = next((i.name for i in spec.inputs if i.type is SocketType.LATENT), None)
    return model, latent


def _size_node(graph: Graph, registry: NodeRegistry, link: Link | None, depth: int = 8) -> Node | None:
    """The node whose width/height params make the latent; through nodes that only pass it on."""
    while link is not None and depth > 0 and link.src in graph.nodes:
        node = graph.nodes[link.src]
        spec = registry.get(node.type)
        if spec is None or node.disabled:
            return None
        names = {p.name for p in spec.params if p.type is ParamType.INT}
        if {"width", "height"} <= names:
            return node
        latent_inputs = [i.name for i in spec.inputs if i.type is SocketType.LATENT]
        if spec.params or len(latent_inputs) != 1:
            return None  # it may change the size (an upscale, an encode): the size is not known here
        link, depth = graph.incoming(node.id).get(latent_inputs[0]), depth - 1
    return None


def _checkpoint_rule(graph: Graph, registry: NodeRegistry, link: Link | None,
                     find_checkpoint: FindCheckpoint) -> tuple[SizeRule, str] | None:
    """The size rule of the checkpoint a model link comes from, with the checkpoint's name."""
    node = graph.nodes.get(link.src) if link is not None else None
    spec = registry.get(node.type) if node is not None else None
    if node is None or spec is None:
        return None
    param = next((p for p in spec.params if p.choices_from == CHECKPOINTS), None)
    if param is None or param.name in graph.incoming(node.id):
        return None
    name = node.params.get(param.name, param.default)
    path = find_checkpoint(name) if isinstance(name, str) and name else None
    rule = size_rule(path) if path else None
    return (rule, os.path.basename(name.rstrip("/\\"))) if rule is not None else None


def _size_param_issues(graph: Graph, registry: NodeRegistry, node: Node, rule: SizeRule,
                       model: str) -> list[Issue]:
    spec = registry[node.type]
    linked = graph.incoming(node.id)
    defaults = spec.default_params()
    issues = []
    for name in ("width", "height"):
        value = node.params.get(name, defaults.get(name))
        if name in linked or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            continue
        if value % rule.multiple:
            lower, upper = nearest_multiples(value, rule.multiple)
            message = (f"{name} {value} is not a multiple of {rule.multiple}, which model {model} needs "
                       f"({lower} or {upper} would do)")
            issues.append(Issue("bad_size", message, node_id=node.id, param=name))
    return issues
