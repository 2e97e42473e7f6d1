"""The import graph of app/, engine/, nodes/, training/ and kiln/: no cycles, engine below the rest, short files.

Every `import` counts, at module level or inside a function (a lazy import is still a dependency:
it only hides a cycle until the function runs). Imports under `if TYPE_CHECKING:` never run and
do not count.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "engine", "nodes", "training", "kiln")  # kiln: the composition root (the command line)
ABOVE_ENGINE = ("nodes", "app", "kiln")
MAX_LINES = 600
SKIPPED_FOLDERS = {"tests", "__pycache__", "build", "dist", "runs", "out"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Dotted names a module imports (for `from a import b`, both `a.b` and `a`), outside TYPE_CHECKING."""
    names: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    return ".".join(parts[:keep] + ([node.module] if node.module else []))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module a dotted name lands in (`a.b.func` -> `a.b`), or None outside the project."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> nx.DiGraph:
    modules = project_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for name in imported_names(tree, module, is_package):
            target = _resolve(name, modules)
            if target is not None and target != module:
                graph.add_edge(module, target)
    return graph


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph()


def test_the_graph_sees_module_level_and_lazy_imports(graph):
    assert graph.has_edge("engine.graph_file", "engine.errors")  # at the top of the module
    assert graph.has_edge("engine.graph_file", "engine.pngmeta")  # inside load()
    assert graph.has_edge("nodes", "nodes.sampler")  # inside build_registry()


def _one_cycle(graph: nx.DiGraph, members: set[str]) -> str:
    edges = nx.find_cycle(graph.subgraph(members))
    return " -> ".join([a for a, _ in edges] + [edges[0][0]])


def test_no_import_cycles(graph):
    tangles = sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)
    report = [f"{', '.join(members)} (e.g. {_one_cycle(graph, set(members))})" for members in tangles]
    assert not tangles, "modules that import each other in a cycle:\n" + "\n".join(report)


def test_engine_imports_neither_nodes_nor_app(graph):
    wrong = sorted((a, b) for a, b in graph.edges if a.split(".")[0] == "engine" and b.split(".")[0] in ABOVE_ENGINE)
    assert not wrong, f"engine modules import nodes, app or kiln: {wrong}"


def _source_files(folder: Path) -> list[Path]:
    """The project's .py files below `folder`, leaving out tests/ and ignored or hidden folders."""
    files = []
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not (path.name.startswith(".") or path.name in SKIPPED_FOLDERS
                                  or path.name.endswith(".egg-info")):
            files.extend(_source_files(path))
        elif path.suffix == ".py":
            files.append(path)
    return files


def test_training_scripts_are_leaves_that_nothing_imports(graph):
    """train_*.py, tune_decoder.py and evaluate.py are command lines over the training library modules."""
    scripts = {m for m in graph if m.startswith("training.train_") or m in ("training.tune_decoder", "training.evaluate")}
    assert {"training.train_ldm", "training.evaluate", "training.tune_decoder"} <= scripts
    importers = sorted((a, b) for a, b in graph.edges if b in scripts)
    assert not importers, f"training scripts imported by other modules: {importers}"


def test_no_python_file_outside_tests_is_longer_than_600_lines():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in _source_files(ROOT)}
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert "main.py" in lengths and "training/evaluate.py" in lengths
    assert not too_long, f"files over {MAX_LINES} lines: {too_long}"
