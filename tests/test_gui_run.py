"""Running graphs from the window: pictures in the viewer, node states, cancel, failures, queue, seeds."""
from __future__ import annotations

import time

import numpy as np
import pytest
from gui_support import close_window, demo_graph, make_window, wait_idle
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QDialog

from engine.graph import Graph, Link, Node


@pytest.fixture
def window(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    yield w
    close_window(w)


def _slow_graph(steps: int, delay: float) -> Graph:
    graph = Graph()
    graph.add_node(Node("sampler", "SlowSampler", params={"steps": steps, "delay": delay, "seed": 7}))
    graph.add_node(Node("preview", "PreviewImage", pos=(320.0, 0.0)))
    graph.connect(Link("sampler", "image", "preview", "image"))
    return graph


def test_run_shows_the_picture_in_the_viewer_and_thumbnails_on_nodes(window, qtbot):
    window.doc.set_graph(demo_graph(), None)
    window.actions["run"].trigger()
    wait_idle(qtbot, window)
    result = window.run_control.last_result
    assert result.ok
    shown = window.viewer.current
    assert shown is not None and shown.node_id == "preview"
    expected = 255 - np.array([0x3c, 0x6e, 0xa8])
    assert shown.pixels.shape == (16, 24, 3)
    assert np.abs(shown.pixels[8, 12].astype(int) - expected).max() <= 1
    qimage = window.viewer.canvas.image
    assert (qimage.width(), qimage.height()) == (24, 16)
    assert qimage.pixelColor(3, 3).red() == shown.pixels[3, 3, 0]
    assert window.scene.nodes["solid"].thumbnail is not None  # intermediate nodes get thumbnails too
    assert [window.scene.nodes[n].state for n in ("solid", "invert", "preview")] == ["done"] * 3
    assert "done" in window.log.lines[-1][1]


def test_an_unchanged_rerun_is_served_from_the_cache(window, qtbot):
    window.doc.set_graph(demo_graph(), None)
    window.run_graph()
    wait_idle(qtbot, window)
    window.run_control.last_result = None
    window.run_graph()
    wait_idle(qtbot, window)
    statuses = window.run_control.last_result.statuses
    assert statuses["preview"][0] == "cached" and statuses["solid"][0] == "cached"
    assert window.scene.nodes["preview"].state == "cached"


def test_cancel_stops_a_long_run_within_a_step_and_the_ui_keeps_working(window, qtbot):
    window.doc.set_graph(_slow_graph(steps=400, delay=0.02), None)
    gaps, last = [], [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer(interval=5)
    timer.timeout.connect(tick)
    timer.start()
    window.actions["run"].trigger()
    qtbot.waitUntil(lambda: window.scene.nodes["sampler"].state == "running"
                    and window.scene.nodes["sampler"].progress > 0, timeout=20000)
    assert window.scene.nodes["sampler"].thumbnail is not None  # live per-step preview
    assert window.actions["cancel"].isEnabled()
    window.editor.rename("preview", "still editable while running")
    t0 = time.perf_counter()
    window.actions["cancel"].trigger()
    wait_idle(qtbot, window)
    stopped_after = time.perf_counter() - t0
    timer.stop()
    result = window.run_control.last_result
    assert result.cancelled and not result.ok
    assert stopped_after < 1.5
    assert window.scene.nodes["sampler"].state != "running"
    assert "cancelled" in window.log.lines[-1][1]
    assert max(gaps) < 0.5  # generous: the bench measures the real figure


def test_a_failing_node_is_outlined_with_its_message_and_the_rest_stays_editable(window, qtbot):
    graph = demo_graph()
    graph.add_node(Node("boom", "Explode", pos=(320.0, 300.0)))
    graph.connect(Link("boom", "image", "preview", "image"))
    graph.connect(Link("solid", "image", "boom", "image"))
    window.doc.set_graph(graph, None)
    window.run_graph()
    wait_idle(qtbot, window)
    item = window.scene.nodes["boom"]
    assert item.state == "failed"
    assert "this node always fails (test)" in item.toolTip()
    level, text = window.log.lines[-1]
    assert level == "error" and "this node always fails (test)" in text
    window.editor.connect("invert", "image", "preview", "image")
    window.run_control.last_result = None
    window.run_graph()
    wait_idle(qtbot, window)
    assert window.run_control.last_result.ok


def test_a_graph_with_a_missing_input_names_the_node_before_running(window, qtbot):
    graph = demo_graph()
    graph.disconnect(graph.incoming("invert")["image"])
    window.doc.set_graph(graph, None)
    qtbot.waitUntil(lambda: window.scene.nodes["invert"].issue != "", timeout=3000)
    window.run_graph()
    wait_idle(qtbot, window)
    assert not window.run_control.last_result.ok
    assert window.scene.nodes["invert"].state == "failed"
    assert "invert" in window.log.lines[-1][1]


def test_several_runs_queue_up_and_each_adds_to_the_history(window, qtbot):
    window.doc.set_graph(_slow_graph(steps=3, delay=0.01), None)
    window.editor.set_seed_mode("sampler", "seed", "increment")
    for _ in range(3):
        window.run_graph()
    assert window.runner.pending() >= 2
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=20000)
    seeds = [e.info.get("seed") for e in window.viewer.entries()]
    assert seeds == [9, 8, 7]  # newest first; each run used the seed it was queued with
    assert window.doc.graph.nodes["sampler"].params["seed"] == 10


def test_run_to_selected_runs_only_what_the_selection_needs(window, qtbot):
    window.doc.set_graph(demo_graph(), None)
    window.scene.select_nodes(["invert"])
    window.actions["run_selected"].trigger()
    wait_idle(qtbot, window)
    result = window.run_control.last_result
    assert result.ok and set(result.statuses) == {"solid", "invert"}
    assert window.viewer.current.node_id == "invert"


def test_history_entries_restore_the_graph_that_made_them(window, qtbot):
    window.doc.set_graph(demo_graph(), None)
    window.run_graph()
    wait_idle(qtbot, window)
    first = window.viewer.entries()[0]
    window.editor.set_param("solid", "color", "#00ff00")
    window.run_control.last_result = None
    window.run_graph()
    wait_idle(qtbot, window)
    assert window.viewer.previous is first  # the comparison shows the earlier picture
    window.viewer.canvas.set_mode("side by side")
    assert window.viewer.canvas.other is not None
    window.viewer.restore_requested.emit(first)
    assert window.doc.graph.nodes["solid"].params["color"] == "#3c6ea8"
    window.actions["undo"].trigger()
    assert window.doc.graph.nodes["solid"].params["color"] == "#00ff00"


def test_auto_run_reruns_shortly_after_an_edit(window, qtbot):
    window.doc.set_graph(demo_graph(), None)
    window.actions["auto_run"].trigger()
    window.editor.set_param("solid", "color", "#ffffff")
    qtbot.waitUntil(lambda: window.viewer.current is not None, timeout=20000)
    wait_idle(qtbot, window)
    assert window.viewer.current.pixels[0, 0].tolist() == [0, 0, 0]


def test_the_default_graph_runs_on_the_built_in_models_to_a_512px_picture(window, qtbot):
    from pathlib import Path

    from PIL import Image

    from training.analyser import analyse, match_caption

    assert window.load_path(str(Path(__file__).resolve().parents[1] / "resources" / "graphs" / "default.json"))
    # as shipped (25 steps, SR 4), as the headless example test: the seed is picked for the caption at 25 steps
    window.actions["run"].trigger()
    wait_idle(qtbot, window, timeout=240_000)
    assert window.run_control.last_result.ok, window.run_control.last_result.error_message
    shown = window.viewer.current
    assert shown.node_id == "save" and shown.pixels.shape == (512, 512, 3)
    small = np.asarray(Image.fromarray(shown.pixels).resize((128, 128), Image.Resampling.BOX))
    match = match_caption(analyse(small), window.doc.graph.nodes["prompt"].params["text"])
    assert match.scene_ok, match
    assert window.scene.nodes["sampler"].thumbnail is not None
    assert window.scene.nodes["plan"].thumbnail is not None  # the planned boxes, drawn


def test_a_job_still_running_when_the_window_closes_finishes_without_harm(qtbot, tmp_path, monkeypatch):
    import threading

    from gui_support import make_window
    from PySide6.QtWidgets import QApplication

    from app.runner import Runner

    failures = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    window = make_window(qtbot, tmp_path)
    runner = window.runner
    monkeypatch.setattr(runner, "shutdown", lambda: Runner.shutdown(runner, timeout=0.01))
    window.doc.set_graph(_slow_graph(steps=2, delay=0.5), None)
    window.run_graph()
    qtbot.waitUntil(lambda: window.scene.nodes["sampler"].state == "running", timeout=20000)
    lines = len(window.log.lines)
    close_window(window)  # the worker is inside a 0.5 s step and outlives the window
    assert runner._thread.is_alive()
    runner._thread.join(10)
    QApplication.processEvents()  # its queued results reach the runner, and no view
    assert not runner._thread.is_alive() and failures == []
    assert len(window.log.lines) == lines and window.scene.nodes["sampler"].state == "running"


def test_planned_boxes_open_in_a_layout_editor_wired_back_into_the_plan(window, qtbot):
    from engine.graph import Graph

    graph = Graph()
    graph.add_node(Node("ckpt", "CheckpointLoader", params={"checkpoint": "kiln-shapes-base.safetensors"}))
    graph.add_node(Node("prompt", "TextEncode", params={"text": "a large red circle at the top left and a small "
                                                                "blue square at the bottom right"}, pos=(330.0, 0.0)))
    graph.add_node(Node("plan", "PlanLayout", params={"seed": 3}, pos=(660.0, 0.0)))
    graph.connect(Link("ckpt", "conditioner", "prompt", "conditioner"))
    graph.connect(Link("ckpt", "conditioner", "plan", "conditioner"))
    graph.connect(Link("prompt", "conditioning", "plan", "conditioning"))
    window.doc.set_graph(graph, None)
    assert window.edits.planned_boxes("plan") == []  # nothing planned yet: no menu entry
    window.run_graph(["plan"])
    wait_idle(qtbot, window, timeout=120_000)
    assert window.run_control.last_result.ok, window.run_control.last_result.error_message
    planned = window.run_control.last_result.layouts["plan"]
    assert [item["label"] for item in planned] == ["red circle", "blue square"]
    assert window.scene.nodes["plan"].thumbnail is not None
    editor = window.edit_planned_boxes("plan")
    nodes = window.doc.graph.nodes
    assert nodes[editor].type == "LayoutEditor" and nodes[editor].params["boxes"] == planned
    assert window.doc.graph.incoming("plan")["layout"].src == editor
    assert window.edit_planned_boxes("plan") == editor  # asked again: the wired editor opens, no second one
    assert sum(node.type == "LayoutEditor" for node in nodes.values()) == 1
    for dialog in window.findChildren(QDialog):
        dialog.reject()
    window.doc.undo_stack.undo()  # one step takes the editor and its link away
    assert editor not in window.doc.graph.nodes and "layout" not in window.doc.graph.incoming("plan")


def test_a_selected_picture_node_that_is_no_output_is_shown_after_every_run(window, qtbot):
    from gui_support import click
    from PySide6.QtCore import QPointF, Qt

    window.doc.set_graph(demo_graph(), None)
    window.view.frame(False)
    item = window.scene.nodes["invert"]
    click(window, item.scenePos() + QPointF(item.width / 2, 10))  # its title bar
    assert window.scene.selected_node_ids() == ["invert"]
    for run in (1, 2):
        window.run_control.last_result = None
        qtbot.keyClick(window.view, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        wait_idle(qtbot, window)
        assert any(f"Run #{run} done" in text for _, text in window.log.lines), window.log.lines
        shown = window.viewer.current
        assert shown.node_id == "invert" and shown.pixels[0, 0].tolist() == [0xc3, 0x91, 0x57]
        assert window.viewer.entries()[0] is shown  # the newest history entry


def test_deleting_a_node_while_a_run_uses_it_lets_the_run_finish_and_says_so(window, qtbot):
    from PySide6.QtCore import Qt

    window.doc.set_graph(_slow_graph(steps=60, delay=0.02), None)
    window.actions["run"].trigger()
    qtbot.waitUntil(lambda: window.scene.nodes["sampler"].state == "running", timeout=20000)
    window.scene.select_nodes(["sampler"])
    window.view.setFocus()
    qtbot.keyClick(window.view, Qt.Key.Key_Delete)
    assert "sampler" not in window.doc.graph.nodes
    assert "cancel it in the Queue panel" in window.log.lines[-1][1]  # said at once, with the way out
    wait_idle(qtbot, window)
    assert window.run_control.last_result.ok  # the run finished on its own copy of the graph
    warnings = [text for level, text in window.log.lines if level == "warn"]
    assert "node sampler was deleted while Run #1 ran; its results are kept in the history only" in warnings
    assert window.viewer.entries()[0].node_id == "preview"  # the picture is in the history
    assert "sampler" not in window.scene.nodes and "sampler" not in window.run_control.node_images
    window.actions["undo"].trigger()  # the node comes back, without the deleted run's state
    assert window.scene.nodes["sampler"].state != "done"
