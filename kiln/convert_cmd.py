"""`main.py convert`: ComfyUI workflows to Kiln graphs and back; and the line a converted file gets
on stderr when `run` or `validate` opens one.

    python main.py convert WORKFLOW.json|IMAGE.png OUT.json                 # ComfyUI -> Kiln graph
    python main.py convert GRAPH.json OUT.json --to comfyui|comfyui-workflow  # Kiln -> ComfyUI
"""
from __future__ import annotations

import argparse
import json
import sys

from engine.errors import Issue, KilnError
from engine.graph import Graph
from engine.spec import NodeRegistry

TARGETS = ("kiln", "comfyui", "comfyui-workflow")


def load_reporting(path: str, issues: list[Issue] | None = None) -> Graph:
    """graph_file.load, saying on stderr when the file was a ComfyUI one and what its conversion left
    out. Problems at nodes (a checkpoint Kiln lacks) go to `issues` when given, else are warnings."""
    from engine import graph_file
    from engine.comfy.importer import ComfyReport

    report = ComfyReport()
    graph = graph_file.load(path, comfy=report)
    if report.converted:
        print(f"kiln: {report.summary(path, graph)}", file=sys.stderr)
        for note in report.notes:
            print(f"kiln: note: {note}", file=sys.stderr)
        if issues is not None:
            issues.extend(report.issues)
        else:
            for issue in report.issues:
                print(f"kiln: warning: {issue}", file=sys.stderr)
    return graph


def convert_main(argv: list[str], registry: NodeRegistry | None, parser: argparse.ArgumentParser) -> int:
    parser.add_argument("source", help="a ComfyUI workflow, API prompt or PNG; or a Kiln graph with --to comfyui")
    parser.add_argument("out", help="the file to write (.json)")
    parser.add_argument("--to", choices=TARGETS, default="kiln",
                        help="kiln (default): a Kiln graph; comfyui: ComfyUI's API format; comfyui-workflow: "
                             "its UI format (what its editor opens)")
    args = parser.parse_args(argv)
    graph = load_reporting(args.source)
    if args.to == "kiln":
        from engine import graph_file

        graph_file.save(graph, args.out)
    else:
        _write_comfy(graph, registry, args.to, args.out)
    print(args.out)
    return 0


def _write_comfy(graph: Graph, registry: NodeRegistry | None, fmt: str, out: str) -> None:
    from engine import atomic
    from engine.comfy.exporter import export

    if registry is None:
        from nodes import build_registry

        registry = build_registry()
    document, notes = export(graph, registry, fmt)
    for note in notes:
        print(f"kiln: note: {note}", file=sys.stderr)
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    try:
        atomic.write_bytes(out, text.encode("utf-8"), fsync=True)
    except OSError as exc:
        raise KilnError(f"{out}: cannot be written: {exc.strerror or exc}") from None
