"""The Run menu's actions: Run, Run to Selected, Cancel and Auto-run, and the seeds that advance
after each run. What a run shows as it goes is app.run_control's."""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer

if TYPE_CHECKING:
    from app.window import MainWindow

AUTO_RUN_DELAY_MS = 400


class RunActions(QObject):
    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.doc, self.editor, self.scene, self.runner = window.doc, window.editor, window.scene, window.runner
        self.auto_run_timer = QTimer(self, singleShot=True, interval=AUTO_RUN_DELAY_MS)
        self.auto_run_timer.timeout.connect(self._auto_run)
        self.advancing_seeds = False  # the seeds' own edits after a run never start an auto-run
        self.doc.changed.connect(self._on_doc_changed)
        self.runner.queue_changed.connect(self._on_queue_changed)

    def _status(self, message: str, ms: int) -> None:
        self.window.statusBar().showMessage(message, ms)

    def run_graph(self, targets: list[str] | None = None, label: str = "Run") -> None:
        """Queue a run of the graph (or of what `targets` need), then advance the seeds set to."""
        if not self.doc.graph.nodes:
            self._status("Nothing to run: add nodes first (Tab)", 4000)
            return
        self.scene.set_issues({})
        job = self.runner.submit(self.doc.graph, targets, label)
        self.window.log.info(f"{label} #{job.id} queued" + (f" (up to {', '.join(targets)})" if targets else ""))
        self.advancing_seeds = True
        try:
            self.editor.advance_seeds()
        finally:
            self.advancing_seeds = False

    def run_selected(self) -> None:
        ids = self.scene.selected_node_ids()
        if not ids:
            self._status("Select the nodes to run up to first", 4000)
            return
        self.run_graph(ids, "Run selected")

    def cancel_run(self) -> None:
        """Esc: close an open popup first; else cancel the run and the queue."""
        if self.window.close_popups():
            return
        if self.runner.busy:
            self.runner.cancel()
            self._status("Cancelling…", 3000)

    def set_auto_run(self, on: bool) -> None:
        self.window.settings.set_flag("auto_run", on)
        if on:
            self.auto_run_timer.start()

    def stop(self) -> None:
        self.auto_run_timer.stop()

    def _auto_run(self) -> None:
        if self.runner.busy:
            self.runner.cancel()
        self.run_graph(label="Auto-run")

    def _on_doc_changed(self) -> None:
        if self.window.actions["auto_run"].isChecked() and not self.advancing_seeds:
            self.auto_run_timer.start()

    def _on_queue_changed(self, count: int) -> None:
        self.window.actions["cancel"].setEnabled(count > 0)
