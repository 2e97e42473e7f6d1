"""Run plans (Executor.plan) and run handles: what a run does is fixed once, and each run stops alone."""
from __future__ import annotations

import collections

import pytest
from toy_nodes import build_graph, make_toy_kit

from engine import planning
from engine import validate as validate_module
from engine.errors import ValidationError
from engine.executor import Executor
from engine.graph import Graph
from engine.planning import RunHandle
from engine.spec import EngineSettings
from nodes import build_registry


@pytest.fixture
def settings(tmp_path):
    return EngineSettings(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))


def _pictures_graph() -> Graph:
    """red -> inv (disabled) -> view; spare feeds nothing."""
    return build_graph({"red": ("SolidImage", {"width": 8, "height": 8}), "inv": ("ImageInvert", {}),
                        "view": ("PreviewImage", {}), "spare": ("SolidImage", {}), "n": ("Integer", {})},
                       ["red.image -> inv.image", "inv.image -> view.image"], disabled=("inv",))


def test_a_plan_holds_the_targets_the_order_and_the_enabled_picture_nodes_they_need(settings):
    plan = Executor(build_registry(), settings).plan(_pictures_graph())
    assert plan.targets == ("view",)
    assert plan.order == ("red", "inv", "view")
    assert plan.watch == ("red", "view")  # not the disabled inv, not spare (not needed)
    assert plan.watching().targets == ("view", "red")


def test_ties_in_the_order_go_by_id_as_before(settings):
    kit = make_toy_kit()
    graph = build_graph({"y": ("Const", {}), "x": ("Const", {}), "a": ("Mul", {})}, ["x.value -> a.x"])
    assert Executor(kit.registry, settings).plan(graph, ["a", "y"]).order == ("x", "a", "y")


def test_a_plan_of_a_graph_with_a_loop_names_the_loop(settings):
    kit = make_toy_kit()
    graph = build_graph({"a": ("Add", {}), "b": ("Mul", {}), "s": ("Sink", {})},
                        ["a.value -> b.x", "b.value -> a.a", "a.value -> s.x"])
    with pytest.raises(ValidationError, match="cycle: a → b → a"):
        Executor(kit.registry, settings).plan(graph)


def test_cancelling_one_run_leaves_the_next_alone(settings):
    kit = make_toy_kit()
    executor = Executor(kit.registry, settings)
    graph = build_graph({"loop": ("Loop", {"steps": 3}), "sink": ("Sink", {})}, ["loop.value -> sink.x"])
    first = RunHandle()
    first.cancel()
    assert executor.run(graph, handle=first).cancelled
    second = executor.run(graph, on_event=lambda event: first.cancel())
    assert second.ok and not second.cancelled


def test_a_gui_run_copies_resolves_and_validates_the_graph_once(qtbot, monkeypatch, settings):
    from gui_support import make_registry

    from app.runner import Runner

    counts: collections.Counter[str] = collections.Counter()

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(Graph, "copy", counted("copy", Graph.copy))
    monkeypatch.setattr(planning, "snapshot", counted("copy", planning.snapshot))
    monkeypatch.setattr(planning, "resolve_targets", counted("resolve", planning.resolve_targets))
    monkeypatch.setattr(validate_module, "validate", counted("validate", validate_module.validate))
    runner = Runner(make_registry(), settings)
    graph = build_graph({"sampler": ("SlowSampler", {"steps": 2}), "preview": ("PreviewImage", {})},
                        ["sampler.image -> preview.image"])
    with qtbot.waitSignal(runner.job_finished, timeout=60000) as finished:
        runner.submit(graph)
    result = finished.args[0]
    runner.shutdown()
    assert result.ok, result.error_message
    assert sorted(result.images) == ["preview", "sampler"]  # the watched pictures came back
    assert counts == {"copy": 1, "resolve": 1, "validate": 1}
