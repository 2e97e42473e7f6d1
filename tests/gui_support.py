"""Shared pieces of the GUI tests: a registry (the real model-free nodes plus a slow
sampler-like node and a failing node), an isolated window, mouse helpers."""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from engine.errors import UserInputError
from engine.graph import Graph, Link, Node
from engine.spec import Input, NodeRegistry, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image


def _slow(ctx: Any, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
    """Like a sampler: many steps, a check for cancel and a live preview at each one."""
    import numpy as np
    import torch

    steps = params["steps"]
    for step in range(steps):
        ctx.check_cancelled()
        time.sleep(params["delay"])
        shade = int(255 * (step + 1) / steps)
        ctx.progress(step + 1, steps, np.full((16, 16, 3), shade, dtype=np.uint8))
    seed, batch = params["seed"], params["batch"]  # item k uses seed + k, as the sampler does
    pixels = torch.stack([torch.full((3, 32, 32), ((seed + k) * 40 % 255) / 255.0) for k in range(batch)])
    return {"image": Image(pixels, tuple(seed + k for k in range(batch)))}


def _fail(ctx: Any, inputs: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
    raise UserInputError("this node always fails (test)", "reason")


def make_registry() -> NodeRegistry:
    from nodes import build_registry

    registry = build_registry()
    registry.register(NodeSpec(
        type="SlowSampler", title="Slow Sampler", category="test",
        help="Counts steps slowly and shows a preview at every step.", compute=_slow,
        outputs=(Output("image", SocketType.IMAGE),),
        params=(Param("steps", ParamType.INT, 5, min=1, max=10000, inline=True),
                Param("delay", ParamType.FLOAT, 0.0, min=0.0, max=1.0),
                Param("seed", ParamType.SEED, 7, inline=True),
                Param("batch", ParamType.INT, 1, min=1, max=16))))
    registry.register(NodeSpec(
        type="Explode", title="Explode", category="test", help="Fails on purpose.", compute=_fail,
        inputs=(Input("image", SocketType.IMAGE),), outputs=(Output("image", SocketType.IMAGE),),
        params=(Param("reason", ParamType.STRING, "test"),)))
    registry.register(NodeSpec(
        type="EveryParam", title="Every Param", category="test", help="One param of each kind.",
        compute=lambda ctx, inputs, params: {},
        params=(Param("count", ParamType.INT, 3, "how many", min=0, max=10),
                Param("strength", ParamType.FLOAT, 0.5, "how strong", min=0.0, max=1.0, step=0.05),
                Param("enabled", ParamType.BOOL, True),
                Param("name", ParamType.STRING, "abc"),
                Param("prompt", ParamType.TEXT, "a red circle"),
                Param("sampler", ParamType.CHOICE, "euler", choices=("euler", "heun", "ddim")),
                Param("checkpoint", ParamType.CHOICE, "model.safetensors", choices_from="checkpoints"),
                Param("file", ParamType.PATH, ""),
                Param("seed", ParamType.SEED, 2**40),
                Param("boxes", ParamType.JSON, [{"label": "cat", "box": [0, 0, 1, 1]}]))))
    return registry


def make_settings(tmp_path) -> Any:
    from app.settings import AppSettings

    settings = AppSettings(QSettings(str(tmp_path / "settings" / "kiln.ini"), QSettings.Format.IniFormat))
    settings.set_engine(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    return settings


def make_window(qtbot, tmp_path, settings: Any = None) -> Any:
    from app.window import MainWindow

    window = MainWindow(make_registry(), settings or make_settings(tmp_path))
    window.ask = Answers()
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    qtbot.waitExposed(window)
    return window


def close_window(window: Any) -> None:
    window.doc.undo_stack.setClean()
    window.ask = Answers(unsaved="discard", recover="no")
    window.close()


class Answers:
    """Scripted answers to the window's questions; records what was asked."""

    def __init__(self, **answers: str):
        self.answers = {"unsaved": "cancel", "recover": "no", **answers}
        self.asked: list[tuple[str, str]] = []

    def __call__(self, kind: str, question: str) -> str:
        self.asked.append((kind, question))
        return self.answers[kind]


def demo_graph() -> Graph:
    graph = Graph()
    graph.add_node(Node("solid", "SolidImage", params={"width": 24, "height": 16, "color": "#3c6ea8",
                                                       "batch_size": 1}, pos=(0.0, 0.0)))
    graph.add_node(Node("invert", "ImageInvert", pos=(320.0, 0.0)))
    graph.add_node(Node("preview", "PreviewImage", pos=(640.0, 0.0)))
    graph.connect(Link("solid", "image", "invert", "image"))
    graph.connect(Link("invert", "image", "preview", "image"))
    return graph


def wait_idle(qtbot, window: Any, timeout: int = 20000) -> None:
    qtbot.waitUntil(lambda: not window.runner.busy and window.run_control.last_result is not None,
                    timeout=timeout)


def view_point(window: Any, scene_pos: QPointF) -> QPoint:
    return window.view.mapFromScene(scene_pos)


def drag(window: Any, start: QPointF, end: QPointF, button: Qt.MouseButton = Qt.MouseButton.LeftButton,
         steps: int = 6) -> None:
    """Press at `start`, move in steps and release at `end` (scene coordinates) on the canvas."""
    viewport = window.view.viewport()
    a, b = view_point(window, start), view_point(window, end)
    _send(viewport, QMouseEvent.Type.MouseButtonPress, a, button, button)
    for i in range(1, steps + 1):
        p = QPoint(round(a.x() + (b.x() - a.x()) * i / steps), round(a.y() + (b.y() - a.y()) * i / steps))
        _send(viewport, QMouseEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, button)
    _send(viewport, QMouseEvent.Type.MouseButtonRelease, b, button, Qt.MouseButton.NoButton)


def click(window: Any, pos: QPointF, double: bool = False) -> None:
    viewport = window.view.viewport()
    p = view_point(window, pos)
    left = Qt.MouseButton.LeftButton
    _send(viewport, QMouseEvent.Type.MouseButtonPress, p, left, left)
    _send(viewport, QMouseEvent.Type.MouseButtonRelease, p, left, Qt.MouseButton.NoButton)
    if double:
        _send(viewport, QMouseEvent.Type.MouseButtonDblClick, p, left, left)
        _send(viewport, QMouseEvent.Type.MouseButtonRelease, p, left, Qt.MouseButton.NoButton)


def _send(widget: Any, kind: QMouseEvent.Type, pos: QPoint, button: Qt.MouseButton,
          buttons: Qt.MouseButton) -> None:
    global_pos = widget.mapToGlobal(pos)
    event = QMouseEvent(kind, QPointF(pos), QPointF(global_pos), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)
