"""Shared helpers for the ComfyUI import/export tests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine import graph_file
from engine.comfy.importer import ComfyReport
from engine.comfy.workflow import convert
from engine.graph import Graph
from nodes import build_registry

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "comfy"
REGISTRY = build_registry()


def load_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def imported(name_or_data: str | dict, lenient: bool = False) -> tuple[Graph, ComfyReport]:
    data = load_json(name_or_data) if isinstance(name_or_data, str) else name_or_data
    report = ComfyReport()
    return convert(data, str(name_or_data)[:40], report, lenient), report


def unregistered(graph: Graph) -> list[str]:
    return sorted({n.type for n in graph.nodes.values() if n.type not in REGISTRY})


def need_types(graph: Graph) -> None:
    """Every Kiln node type a converted graph names must be registered: an importer table entry pointing
    at a type that does not exist is a failure, not a skip."""
    missing = unregistered(graph)
    assert not missing, f"the importer maps onto Kiln node types that are not registered: {', '.join(missing)}"


def with_defaults(graph: Graph) -> dict:
    """The graph's file document with every registered node's params completed by the defaults."""
    data = graph_file.graph_to_dict(graph)
    for node in data["nodes"].values():
        spec = REGISTRY.get(node["type"])
        if spec is not None:
            node["params"] = spec.default_params() | node["params"]
    return data


def run_main(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
