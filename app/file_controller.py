"""The window's files: new, open, save, save as, recent files, the shipped examples, autosave recovery,
dropped files and pictures, graphs restored from the viewer's history, pictures saved, and the
window title (the file's name, * when changed).

The shipped examples (resources/graphs) open as templates: an unsaved copy whose Save asks for a
name, starting in the user's documents folder, so a shipped file is never overwritten by Ctrl+S
or by Enter in the unsaved-changes question.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QPointF, QStandardPaths, QTimer
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox

from app.canvas.view import PAN_HINT
from app.commands import ReplaceGraphCommand
from app.document import read_recovery
from engine.comfy.importer import ComfyReport, missing_text
from engine.errors import KilnError
from engine.spec import ROLE_OPENS_PICTURES, ParamType

if TYPE_CHECKING:
    from app.viewer import ResultEntry
    from app.window import MainWindow

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "resources" / "graphs"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
DROP_STAGGER = 40.0  # scene units between the Load Image nodes of several dropped pictures


def is_example(path: str) -> bool:
    """A graph shipped with Kiln (resources/graphs/*.json)."""
    folder = os.path.dirname(os.path.realpath(path))
    return path.lower().endswith(".json") and folder == os.path.realpath(EXAMPLES_DIR)


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.json"))


def documents_dir() -> str:
    """Where a copy of an example is saved first: the user's documents folder (else home)."""
    folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    return folder or os.path.expanduser("~")


def embeds_graph(path: str) -> bool:
    """A PNG with a Kiln or ComfyUI graph in it (False for other pictures, or a PNG that cannot be read)."""
    from engine import pngmeta
    from engine.comfy import workflow as comfy

    try:
        texts = pngmeta.read_png_text(path)
    except KilnError:
        return False
    return pngmeta.GRAPH_KEY in texts or comfy.is_comfy_png(texts)


class FileController(QObject):
    """Everything the File menu, drops and the viewer's history do to the open document."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.doc = window.doc
        self.settings = window.settings
        self.doc.replaced.connect(window.viewer.clear)  # the old graph's picture is not this one's
        self.doc.dirty_changed.connect(lambda _dirty: self.update_title())
        self.doc.path_changed.connect(lambda _path: self.update_title())

    def update_title(self) -> None:
        star = "*" if self.doc.dirty else ""
        self.window.setWindowTitle(f"{self.doc.display_name()}{star} — Kiln")

    # --- asking ---------------------------------------------------------------------------
    def ask_with_dialog(self, kind: str, question: str) -> str:
        """The window's questions as dialogs: the unsaved-changes one, else Yes or No."""
        if kind == "unsaved":
            return self.ask_unsaved(question)
        box = QMessageBox(self.window)
        box.setWindowTitle("Kiln")
        box.setText(question)
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        return "yes" if box.exec() == QMessageBox.StandardButton.Yes else "no"

    def confirm_discard(self) -> bool:
        """True when the current graph may be replaced (saved, discarded or unchanged)."""
        if not self.doc.dirty:
            return True
        answer = self.window.ask("unsaved", f"Save the changes to {self.doc.display_name()}?")
        if answer == "save":
            return self.save()
        return answer == "discard"

    def ask_unsaved(self, question: str) -> str:
        """The unsaved-changes question as a dialog: "save", "discard" or "cancel".

        Enter saves only into the user's own file; for an example or a graph without a file it
        cancels (Save would open Save As anyway). Discard is never the default."""
        buttons = QMessageBox.StandardButton
        box = QMessageBox(self.window)
        box.setWindowTitle("Kiln")
        box.setText(question)
        box.setStandardButtons(buttons.Save | buttons.Discard | buttons.Cancel)
        box.setDefaultButton(buttons.Save if self.doc.path else buttons.Cancel)
        box.setEscapeButton(buttons.Cancel)
        answer = buttons(box.exec())
        return {buttons.Save: "save", buttons.Discard: "discard"}.get(answer, "cancel")

    # --- opening --------------------------------------------------------------------------
    def new_graph(self) -> None:
        if self.confirm_discard():
            self.doc.new()
            self.window.view.reset_view()

    def frame_on_open(self) -> None:
        """Frame the opened graph legibly; when only part of it fits, say how to see the rest."""
        if not self.window.view.frame_for_reading():
            self.window.statusBar().showMessage(PAN_HINT, 12000)

    def open_file(self, path: str | None = None) -> bool:
        if not self.confirm_discard():
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.window, "Open graph", self.settings.last_dir(),
                                                  "Kiln graphs (*.json *.png);;All files (*)")
            if not path:
                return False
        return self.load_path(path)

    def load_path(self, path: str) -> bool:
        example = is_example(path)
        report = ComfyReport()
        try:
            self.doc.open(path, as_template=example, comfy=report)
        except KilnError as err:
            self.window.notify_error(str(err))
            return False
        self.settings.add_recent(path)
        if report.converted:
            self.log_conversion(path, report)
        elif example:
            self.window.log.info(f"opened the example {os.path.basename(path)}: Save asks where to keep your copy")
        else:
            self.settings.set_last_dir(path)
            self.window.log.info(f"opened {path}")
        QTimer.singleShot(0, self.frame_on_open)
        return True

    def log_conversion(self, path: str, report: ComfyReport) -> None:
        """Say that a ComfyUI file was converted, what was left out, and which node types Kiln lacks."""
        self.settings.set_last_dir(path)
        log = self.window.log
        log.add("warn", f"{report.summary(path, self.doc.graph)}; Save asks for a name for the Kiln graph")
        if report.missing:
            log.add("error", "node types Kiln lacks, shown as disabled 'Missing:' nodes without links: "
                    + missing_text(report.missing))
        for line in [*report.notes, *(str(issue) for issue in report.issues)]:
            log.add("warn", line)

    def fill_recent(self, menu: QMenu) -> None:
        menu.clear()
        for path in self.settings.recent_files():
            menu.addAction(path, lambda p=path: self.open_file(p))
        if menu.isEmpty():
            menu.addAction("(none)").setEnabled(False)

    def fill_examples(self, menu: QMenu) -> None:
        menu.clear()
        for path in example_files():
            menu.addAction(path.stem.replace("_", " "), lambda p=str(path): self.open_file(p))
        if menu.isEmpty():
            menu.addAction("(none found)").setEnabled(False)

    def offer_recovery(self) -> bool:
        """After a crash: offer the autosaved graph. True when it was restored."""
        autosaver = self.window.autosaver
        autosaver.timer.stop()  # an idle save while asking would find a clean graph and drop the file
        path = autosaver.recovery_path
        if not os.path.exists(path):
            return False
        found = read_recovery(path)
        if found is None:
            autosaver.discard()
            return False
        graph, original = found
        name = os.path.basename(original) if original else "an unsaved graph"
        question = f"Kiln did not close properly. Restore the autosaved copy of {name}?"
        if self.window.ask("recover", question) != "yes":
            autosaver.discard()
            return False
        self.doc.set_graph(graph, original, clean=False)
        self.window.log.add("warn", f"restored the autosaved copy of {name}; save it to keep it")
        QTimer.singleShot(0, self.frame_on_open)
        return True

    # --- drops ----------------------------------------------------------------------------
    def open_dropped(self, paths: list[str], at: QPointF | None = None) -> None:
        """A graph file or a Kiln PNG opens; any other picture becomes a Load Image node at `at`."""
        graphs = [p for p in paths if p.lower().endswith(".json") or (p.lower().endswith(".png")
                                                                      and embeds_graph(p))]
        if graphs:
            self.open_file(graphs[0])
            return
        pictures = [p for p in paths if p.lower().endswith(IMAGE_SUFFIXES)]
        if not pictures:
            self.window.notify_error(f"{paths[0]}: not a Kiln graph (.json), a Kiln PNG or a picture")
            return
        self.add_picture_nodes(pictures, at if at is not None else self.window.view.cursor_scene_pos())

    def add_picture_nodes(self, pictures: list[str], at: QPointF) -> list[str]:
        """One picture-opening node (Load Image) per picture, staggered from `at`, as one undo step;
        selects them."""
        spec = self.doc.registry.first_with_role(ROLE_OPENS_PICTURES)
        path_param = next((p.name for p in spec.params if p.type is ParamType.PATH), None) if spec else None
        if spec is None or path_param is None:
            self.window.notify_error("cannot add the dropped picture: this Kiln has no node that opens pictures")
            return []
        names = ", ".join(os.path.basename(p) for p in pictures)
        stack = self.doc.undo_stack
        stack.beginMacro(f"Add {spec.title} for {names}")
        ids = [self.window.editor.add_node(spec.type, (at.x() + i * DROP_STAGGER, at.y() + i * DROP_STAGGER),
                                           {path_param: os.path.abspath(path)})
               for i, path in enumerate(pictures)]
        stack.endMacro()
        self.window.scene.select_nodes(ids)
        return ids

    # --- saving ---------------------------------------------------------------------------
    def save(self) -> bool:
        if not self.doc.path:
            return self.save_as()
        return self._save_to(self.doc.path)

    def save_as(self, path: str | None = None) -> bool:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.window, "Save graph", self.save_as_start(),
                                                  "Kiln graphs (*.json)")
            if not path:
                return False
            if not path.lower().endswith(".json"):
                path += ".json"
        return self._save_to(path)

    def save_as_start(self) -> str:
        """Where Save As starts: the open file, else a copy of the example in the documents folder,
        else untitled.json in the last folder used (never the examples folder)."""
        if self.doc.path:
            return self.doc.path
        if self.doc.template:
            return os.path.join(documents_dir(), os.path.basename(self.doc.template))
        folder = self.settings.last_dir()
        if os.path.realpath(folder) == os.path.realpath(EXAMPLES_DIR):
            folder = documents_dir()
        return os.path.join(folder, "untitled.json")

    def _save_to(self, path: str) -> bool:
        try:
            saved = self.doc.save(path)
        except KilnError as err:
            self.window.notify_error(str(err))
            return False
        self.window.autosaver.discard()
        self.settings.add_recent(saved)
        self.settings.set_last_dir(saved)
        self.window.statusBar().showMessage(f"Saved {saved}", 4000)
        return True

    # --- pictures -------------------------------------------------------------------------
    def save_image(self, entry: ResultEntry | None, path: str | None = None) -> bool:
        """Write a result as a PNG with the graph that made it (engine.provenance.picture_graph)."""
        if entry is None:
            self.window.notify_error("no picture to save yet: run the graph first")
            return False
        if path is None:
            start = os.path.join(self.settings.last_dir(), f"{entry.node_id}.png")
            path, _ = QFileDialog.getSaveFileName(self.window, "Save image", start, "PNG images (*.png)")
            if not path:
                return False
        from engine.pngmeta import write_png

        try:
            graph = entry.shared_graph if entry.shared_graph is not None else entry.graph_dict
            write_png(path, entry.pixels, graph, dict(entry.info))
        except KilnError as err:
            self.window.notify_error(str(err))
            return False
        self.window.statusBar().showMessage(f"Saved {path} (the graph is embedded)", 5000)
        return True

    def restore_from_history(self, entry: ResultEntry) -> bool:
        """Bring back the graph that made a picture, as one undo step; its files are found wherever
        the graph was when it ran (the recorded paths are absolute)."""
        from engine.provenance import graph_of_picture

        try:
            graph = graph_of_picture(entry.graph_dict, f"the graph of {entry.title}", self.doc.graph.base_dir)
        except KilnError as err:
            self.window.notify_error(str(err))
            return False
        self.doc.undo_stack.push(ReplaceGraphCommand(self.doc, graph, f"Restore graph of {entry.title}"))
        self.window.viewer.show_entry(entry)
        return True

