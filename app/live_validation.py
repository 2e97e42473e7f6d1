"""Marks problems on the nodes (missing inputs, bad params, sizes a checkpoint cannot take) shortly
after each edit, before anything runs. Checked on a helper thread, so that a large graph never
holds up the UI."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from engine.choices import CHECKPOINTS

if TYPE_CHECKING:
    from app.window import MainWindow

VALIDATE_DELAY_MS = 150


class LiveValidation(QObject):
    issues_found = Signal(int, object)  # validation revision, {node id: problem}; from the helper thread

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.timer = QTimer(self, singleShot=True, interval=VALIDATE_DELAY_MS)
        self.timer.timeout.connect(self.revalidate)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-validate")
        self._revision = 0
        self._closed = False
        self.issues_found.connect(self._apply_issues)
        window.doc.changed.connect(self.timer.start)
        window.doc.graph_reset.connect(self.timer.start)

    def revalidate(self) -> None:
        """Check a copy of the graph on the helper thread; the newest check's issues are shown."""
        if self._closed:
            return
        self._revision += 1
        rev, graph, registry = self._revision, self.window.doc.graph.copy(), self.window.registry
        settings = self.window.settings.engine_settings()

        def check() -> None:
            from engine.model_geometry import size_issues
            from engine.validate import validate

            sizes = size_issues(graph, registry, lambda name: registry.choices.resolve(CHECKPOINTS, name, settings))
            issues: dict[str, str] = {}
            for issue in [*validate(graph, registry), *sizes]:
                for node_id in issue.node_ids():
                    issues.setdefault(node_id, issue.message)
            self.issues_found.emit(rev, issues)

        self._pool.submit(check)

    def _apply_issues(self, rev: int, issues: dict) -> None:
        if rev == self._revision:  # else the graph changed since: a newer check is on its way
            self.window.scene.set_issues(issues)

    def shutdown(self) -> None:
        self.timer.stop()
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
