"""The Qt binding must not corrupt reference counts while the editor paints.

PySide6 6.12.0 on Python 3.11 drops one reference to None on every QPainter.setPen,
setFont, drawRect and QFont.setBold call: node painting made the process abort with
`Fatal Python error: none_dealloc` after a few minutes of use. pyproject.toml excludes
that release; this test catches the next binding release that does the same, before users do.
"""
from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen

from tests.gui_support import close_window, demo_graph, make_window

IMMORTAL_NONE = sys.version_info >= (3, 12)  # None's count is fixed there, so a leak cannot abort
LOSS_ALLOWED = 50  # a few references may move between caches; a broken binding loses one per call


def _none_refs() -> int:
    return sys.getrefcount(None)


def _paint_primitives(times: int) -> None:
    image = QImage(64, 64, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    font = QFont()
    for _ in range(times):
        painter.setPen(QPen(QColor(10, 20, 30)))
        painter.setFont(font)
        font.setBold(True)
        font.setPointSizeF(9.5)
        painter.drawRect(QRectF(1, 1, 10, 10))
    painter.end()


def _stop_before_abort(step, rounds: int) -> int:
    """Run `step` repeatedly; returns None's references lost, stopping early once a loss is certain
    (a real leak would otherwise free None itself and abort the test process)."""
    start = _none_refs()
    for _ in range(rounds):
        step()
        if start - _none_refs() > 4 * LOSS_ALLOWED:
            break
    return start - _none_refs()


@pytest.mark.skipif(IMMORTAL_NONE, reason="None is immortal from Python 3.12 on")
def test_painter_calls_keep_none_alive(qapp):
    lost = _stop_before_abort(lambda: _paint_primitives(50), rounds=40)  # 2,000 calls of each kind
    assert lost <= LOSS_ALLOWED, f"the Qt binding lost {lost} references to None while painting"


@pytest.mark.skipif(IMMORTAL_NONE, reason="None is immortal from Python 3.12 on")
def test_painting_the_editor_for_a_long_time_keeps_none_alive(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path)
    window.doc.set_graph(demo_graph(), None)
    viewport = window.view.viewport()
    for node in window.scene.nodes.values():
        node.setSelected(True)

    def repaint() -> None:
        window.view.viewport().update()
        viewport.grab()  # paints every node, link and port of the canvas

    repaint()  # first paint fills caches (fonts, pixmaps) that hold references for good
    lost = _stop_before_abort(repaint, rounds=300)
    close_window(window)
    assert lost <= LOSS_ALLOWED, f"painting the canvas 300 times lost {lost} references to None"


def test_the_install_excludes_the_binding_release_that_aborts_on_python_3_11():
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    pyside = [Requirement(r) for r in project["dependencies"] if r.startswith("PySide6")]
    for python, allowed in (("3.11", False), ("3.12", True)):
        env = {"python_version": python}
        applying = [r for r in pyside if r.marker is None or r.marker.evaluate(env)]
        assert len(applying) == 1, f"one PySide6 requirement applies on Python {python}"
        assert applying[0].specifier.contains("6.12.0") is allowed
        assert applying[0].specifier.contains("6.11.3")
