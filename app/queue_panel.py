"""The queue: runs waiting and running, each with its own cancel button.

Follows the runner's signals only: a row appears when a job is queued, turns to
"running" when the worker takes it, shows the node running and its progress from
the engine events, and goes when the job's result has been delivered."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.run_progress import RunProgress
from app.runner import Job, JobResult, Runner
from app.theme import icon
from engine.spec import NodeRegistry


class JobRow(QFrame):
    """One job: its label and id, its state, a progress bar while it runs, a cancel button."""

    cancel_clicked = Signal(int)  # job id

    def __init__(self, job: Job, parent: QWidget | None = None):
        super().__init__(parent)
        self.job = job
        self.setObjectName("queueRow")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel(f"<b>{job.label} #{job.id}</b>")
        self.state = QLabel("waiting")
        self.state.setObjectName("helpText")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setFixedHeight(6)
        self.bar.hide()
        self.cancel_button = QToolButton()
        self.cancel_button.setIcon(icon("stop"))
        self.cancel_button.setToolTip(f"Cancel {job.label} #{job.id}")
        self.cancel_button.clicked.connect(lambda: self.cancel_clicked.emit(job.id))
        line = QHBoxLayout()
        line.setSpacing(12)
        line.addWidget(self.title)
        line.addWidget(self.state, 1)
        text = QVBoxLayout()
        text.setSpacing(2)
        text.addLayout(line)
        text.addWidget(self.bar)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 2, 2, 2)
        layout.addLayout(text, 1)
        layout.addWidget(self.cancel_button, 0, Qt.AlignmentFlag.AlignVCenter)

    def set_waiting(self, place: int) -> None:
        self.state.setText("waiting (next)" if place == 1 else f"waiting ({_ordinal(place)} in line)")

    def set_running(self, progress: RunProgress, node: str) -> None:
        """The node running, its own progress and its place in the run; the bar shows the whole run."""
        if self.cancel_button.isEnabled():  # else "cancelling…" stays until the job ends
            text = "running"
            if node:
                text += f" · {node} {round(100 * progress.step_fraction)}%"
            if progress.planned:
                text += f" · node {min(progress.done + 1, progress.planned)} of {progress.planned}"
            self.state.setText(text)
        self.bar.show()
        self.bar.setValue(round(1000 * progress.fraction))

    def set_cancelling(self) -> None:
        self.cancel_button.setEnabled(False)
        self.state.setText("cancelling…")


class QueuePanel(QWidget):
    def __init__(self, runner: Runner, registry: NodeRegistry, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner, self.registry = runner, registry
        self.rows: dict[int, JobRow] = {}  # job id -> row, in queue order
        self.running: Job | None = None
        self.tally = RunProgress()
        self.empty = QLabel("No runs waiting or running. Ctrl+Enter queues a run.")
        self.empty.setObjectName("helpText")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._list = QVBoxLayout()
        self._list.setSpacing(4)
        self._list.addWidget(self.empty)
        self._list.addStretch(1)
        self._build()
        runner.job_queued.connect(self.on_job_queued)
        runner.job_started.connect(self.on_job_started)
        runner.event.connect(self.on_event)
        runner.job_finished.connect(self.on_job_finished)

    def _build(self) -> None:
        inner = QWidget()
        inner.setLayout(self._list)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(inner)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(scroll)

    # --- runner signals ---------------------------------------------------------------
    def on_job_queued(self, job: Job) -> None:
        row = JobRow(job)
        row.cancel_clicked.connect(self.cancel_job)
        self.rows[job.id] = row
        self._list.insertWidget(self._list.count() - 1, row)  # above the stretch
        self._refresh_waiting()

    def on_job_started(self, job: Job) -> None:
        self.running = job
        self.tally.reset()
        if job.id in self.rows:
            self.rows[job.id].set_running(self.tally, "")
        self._refresh_waiting()

    def on_event(self, event: Any) -> None:
        row = self.rows.get(self.running.id) if self.running is not None else None
        if row is not None and self.tally.update(event):
            row.set_running(self.tally, self._node_title(self.running, self.tally.node_id))

    def on_job_finished(self, result: JobResult) -> None:
        row = self.rows.pop(result.job.id, None)
        if row is not None:
            self._list.removeWidget(row)
            row.deleteLater()
        if self.running is result.job:
            self.running = None
        self._refresh_waiting()

    # --- user ---------------------------------------------------------------------------
    def cancel_job(self, job_id: int) -> None:
        """The runner drops a waiting job at once, or stops the running one; the row goes when it reports."""
        if self.runner.cancel_job(job_id) and job_id in self.rows:
            self.rows[job_id].set_cancelling()

    def row_states(self) -> list[tuple[int, str]]:
        """(job id, state text) of every row, in queue order: what the panel says."""
        return [(job_id, row.state.text()) for job_id, row in self.rows.items()]

    def _refresh_waiting(self) -> None:
        place = 0
        for row in self.rows.values():
            if row.job is not self.running and row.cancel_button.isEnabled():
                place += 1
                row.set_waiting(place)
        self.empty.setVisible(not self.rows)

    def _node_title(self, job: Job, node_id: str | None) -> str:
        node = job.graph.nodes.get(node_id) if node_id else None
        if node is None:
            return ""
        spec = self.registry.get(node.type)
        return node.title or (spec.title if spec else node.type)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
