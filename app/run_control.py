"""Shows runs as they happen: node states on the canvas, live previews, the
status bar's progress, the log, and the results in the viewer and its history."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

from app.canvas.scene import GraphScene
from app.log_panel import LogPanel
from app.run_progress import RunProgress
from app.runner import Job, JobResult, Picture, Runner
from app.viewer import ResultEntry, Viewer, to_qimage
from engine.errors import KilnError
from engine.planning import needed_order, resolve_targets
from engine.spec import NodeRegistry


class RunControl(QObject):
    idle = Signal()  # the queue ran dry
    result_ready = Signal(object)  # JobResult, after the views were updated

    def __init__(self, runner: Runner, scene: GraphScene, viewer: Viewer, log: LogPanel, status: QStatusBar):
        super().__init__()
        self.runner, self.scene, self.viewer, self.log = runner, scene, viewer, log
        self.node_images: dict[str, ResultEntry] = {}  # the last picture of every node
        self.node_batches: dict[str, list[ResultEntry]] = {}  # ... and all of its batch, when it made several
        self.last_result: JobResult | None = None
        self.preferred_node: str | None = None  # show this node's picture after a run, if it has one
        self.tally = RunProgress()
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.queue_label = QLabel("")
        self.device_label = QLabel("device: not started")
        status.addPermanentWidget(self.queue_label)
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.device_label)
        self.status = status
        runner.event.connect(self.on_event)
        runner.job_started.connect(self.on_job_started)
        runner.job_finished.connect(self.on_job_finished)
        runner.queue_changed.connect(self.on_queue_changed)
        runner.device_known.connect(lambda d: self.device_label.setText(f"device: {d}"))
        scene.doc.node_removed.connect(self._on_node_removed)
        scene.doc.graph_reset.connect(lambda: self.node_images.clear())  # another graph: none of its pictures yet

    # --- engine events -----------------------------------------------------------------
    def on_job_started(self, job: Job) -> None:
        self.status.showMessage(f"{job.label} #{job.id} running…")

    def on_event(self, event: Any) -> None:
        self.tally.update(event)
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, event: Any) -> None:
        for node_id in event.nodes:
            self.scene.set_node_state(node_id, "")
        self.progress.setValue(0)
        self.progress.show()

    def _on_queued(self, event: Any) -> None:
        self.scene.set_node_state(event.node_id, "queued")

    def _on_cached(self, event: Any) -> None:
        self.scene.set_node_state(event.node_id, "cached")

    def _on_started(self, event: Any) -> None:
        self.scene.set_node_progress(event.node_id, 0.0)
        self._update_bar()

    def _on_progress(self, event: Any) -> None:
        self.scene.set_node_progress(event.node_id, self.tally.step_fraction)
        if event.preview is not None:
            self.scene.set_thumbnail(event.node_id, to_qimage(event.preview))
        self._update_bar()

    def _on_finished(self, event: Any) -> None:
        self.scene.set_node_state(event.node_id, "done", seconds=event.seconds)
        self._update_bar()

    def _on_failed(self, event: Any) -> None:
        self.scene.set_node_state(event.node_id, "failed", event.message)

    def _on_file_written(self, event: Any) -> None:
        self.log.add("ok", f"wrote {event.path}", event.node_id)

    def _update_bar(self) -> None:
        self.progress.setValue(int(1000 * self.tally.fraction))

    def on_queue_changed(self, count: int) -> None:
        self.queue_label.setText(f"{count} run{'s' if count != 1 else ''} queued" if count > 1 else "")
        if count == 0:
            self.progress.hide()
            self.idle.emit()

    # --- results ---------------------------------------------------------------------
    def on_job_finished(self, result: JobResult) -> None:
        self.last_result = result
        self._show_images(result)
        if result.issues:
            self.scene.set_issues(result.issues)
        if result.ok:
            ran = sum(1 for s, _ in result.statuses.values() if s == "ran")
            cached = sum(1 for s, _ in result.statuses.values() if s == "cached")
            job = result.job
            text = f"{job.label} #{job.id} done in {result.seconds:.2f}s ({ran} ran, {cached} cached)"
            self.log.add("ok", text)
            self.status.showMessage(text, 8000)
        elif result.cancelled:
            self.log.add("warn", f"{result.job.label} #{result.job.id} cancelled")
            self.status.showMessage(f"{result.job.label} #{result.job.id} cancelled", 5000)
        else:
            self._report_failure(result)
        self._report_deleted_nodes(result)
        for node_id, (status, _) in result.statuses.items():
            if status == "skipped":  # queued but never reached (cancel, failure) or disabled
                self.scene.set_node_state(node_id, "")
        self.result_ready.emit(result)

    def _report_failure(self, result: JobResult) -> None:
        if result.error_node:
            self.scene.set_node_state(result.error_node, "failed", result.error_message)
            self.log.error(result.error_message, result.error_node, result.error_details)
            self.status.showMessage(f"{result.error_node} failed: {result.error_message}", 10000)
        else:
            for node_id, message in result.issues.items():
                self.scene.set_node_state(node_id, "failed", message)
            self.log.error(result.error_message)
            self.status.showMessage(result.error_message, 10000)

    def _show_images(self, result: JobResult) -> None:
        if not result.images:
            return
        fresh: list[ResultEntry] = []
        batches: dict[str, list[ResultEntry]] = {}
        for node_id, pictures in result.images.items():
            seeds = result.seeds.get(node_id, ())
            entries = [self._entry(result, node_id, picture, seeds[i] if i < len(seeds) else None)
                       for i, picture in enumerate(pictures)]
            batches[node_id] = entries
            if self._still_there(node_id, result):  # a deleted node's pictures go to the history only
                self.node_images[node_id], self.node_batches[node_id] = entries[0], entries
                self.scene.set_thumbnail(node_id, entries[0].thumbnail)
            if self._is_output(node_id, result):
                fresh.extend(entries)
        shown = self._choose_display(fresh, result, batches)
        for entry in reversed(fresh[:8]):
            if entry is not shown:
                self.viewer.add_result(entry)
        if shown is not None:
            self.viewer.add_result(shown)
            batch = batches[shown.node_id]
            if len(batch) > 1:
                self.viewer.show_batch(batch)

    def show_node(self, node_id: str) -> None:
        """Show a node's last picture, or its last batch as a grid."""
        entry = self.node_images.get(node_id)
        if entry is None:
            return
        batch = self.node_batches.get(node_id, [])
        if len(batch) > 1 and batch[0] is entry:
            self.viewer.show_batch(batch, as_new=False)
        else:
            self.viewer.show_entry(entry)

    def _still_there(self, node_id: str, result: JobResult) -> bool:
        """The node the job ran is still in the document (not deleted, nor replaced by another)."""
        node, ran = self.scene.doc.graph.nodes.get(node_id), result.job.graph.nodes.get(node_id)
        return node is not None and ran is not None and node.type == ran.type

    def _on_node_removed(self, node_id: str) -> None:
        for job in self.runner.active_jobs():
            if _job_needs(job, self.runner.registry, node_id):
                self.log.add("warn", f"node {node_id} was deleted; {job.label} #{job.id} goes on with its own "
                                     "copy of the graph (cancel it in the Queue panel, or Esc to cancel all)")
                return

    def _report_deleted_nodes(self, result: JobResult) -> None:
        gone = [node_id for node_id, (status, _) in result.statuses.items()
                if status != "skipped" and not self._still_there(node_id, result)]
        if not gone:
            return
        names = ", ".join(gone[:4]) + (f" and {len(gone) - 4} more" if len(gone) > 4 else "")
        which = "node" if len(gone) == 1 else "nodes"
        was = "was" if len(gone) == 1 else "were"
        self.log.add("warn", f"{which} {names} {was} deleted while {result.job.label} #{result.job.id} ran; "
                             f"{'its' if len(gone) == 1 else 'their'} results are kept in the history only")

    def _is_output(self, node_id: str, result: JobResult) -> bool:
        node = result.job.graph.nodes.get(node_id)
        spec = self.runner.registry.get(node.type) if node else None
        is_target = result.job.targets is not None and node_id in result.job.targets
        return is_target or (spec is not None and spec.output_node)

    def _choose_display(self, fresh: list[ResultEntry], result: JobResult,
                        batches: dict[str, list[ResultEntry]]) -> ResultEntry | None:
        preferred = self.preferred_node
        if preferred and preferred in batches and self._still_there(preferred, result):
            entry = batches[preferred][0]
            if not any(e is entry for e in fresh):  # identity: entries hold numpy arrays
                fresh.insert(0, entry)
            return entry
        return fresh[0] if fresh else None

    def _entry(self, result: JobResult, node_id: str, picture: Picture, seed: int | None) -> ResultEntry:
        node = result.job.graph.nodes.get(node_id)
        spec = self.runner.registry.get(node.type) if node else None
        title = (node.title if node and node.title else (spec.title if spec else node_id))
        info: dict[str, Any] = {"node": node_id}
        if seed is not None:
            info["seed"] = seed
        return ResultEntry(picture.rgb, node_id, title, result.job.graph_dict, info,
                           display=picture.display, thumb=picture.thumb,
                           shared_graph=result.job.shared_graph_dict)


def _job_needs(job: Job, registry: NodeRegistry, node_id: str) -> bool:
    """The job's run computes (or reads from the cache) this node."""
    if node_id not in job.graph.nodes:
        return False
    if job.plan is not None:  # the running job, planned on the worker
        return node_id in job.plan.order
    try:
        return node_id in needed_order(job.graph, resolve_targets(job.graph, registry, job.targets))
    except KilnError:  # a bad target: the job will fail on its own
        return False
