"""The main window: canvas, viewer, properties, log and undo history, wired to the runner."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QUndoView,
    QWidget,
)

from app import theme
from app.canvas import style
from app.canvas.scene import GraphScene, PendingLink
from app.canvas.view import PAN_HINT, GraphView
from app.document import Autosaver, Document
from app.editing import CLIPBOARD_MIME, Editor
from app.failure_marks import FailureMarks
from app.file_controller import FileController
from app.log_panel import LogPanel
from app.node_editors import NodeEditors
from app.properties import PropertiesPanel
from app.queue_panel import QueuePanel
from app.run_control import RunControl
from app.runner import Runner
from app.search import NodeSearchPopup, TypeFilter
from app.settings import AppSettings, SettingsDialog
from app.shortcuts import ShortcutOverlay
from app.viewer import ResultEntry, Viewer
from engine.errors import KilnError
from engine.spec import NodeRegistry

Asker = Callable[[str, str], str]  # (kind, question) -> answer; tests replace it
AUTO_RUN_DELAY_MS = 400


class MainWindow(QMainWindow):
    issues_found = Signal(int, object)  # validation revision, {node id: problem}; from a helper thread

    def __init__(self, registry: NodeRegistry | None = None, settings: AppSettings | None = None):
        super().__init__()
        if registry is None:
            from nodes import build_registry

            registry = build_registry()
        self.registry = registry
        self.settings = settings or AppSettings()
        self.ask: Asker = self._ask_with_dialog
        self.doc = Document(registry, self)
        self.editor = Editor(self.doc)
        self.scene = GraphScene(self.doc, self.editor, self.choices)
        self.scene.setParent(self)
        self.view = GraphView(self.scene)
        self.viewer = Viewer()
        self.log = LogPanel()
        self.properties = PropertiesPanel(self.doc, self.editor, self.choices)
        # No Qt parent: the worker thread holds the runner, so it lives while a job finishes after the window
        # is gone (a worker emitting on a deleted QObject corrupts memory).
        self.runner = Runner(registry, self.settings.engine_settings())
        self.search = NodeSearchPopup(registry, self)
        self.overlay = ShortcutOverlay(self)
        self.autosaver = Autosaver(self.doc, self.settings.recovery_path())
        self.files = FileController(self)
        self.failure_marks = FailureMarks(self.doc.undo_stack, self.scene)
        self.actions: dict[str, QAction] = {}
        self._search_target: tuple[QPointF, PendingLink | None] = (QPointF(), None)
        self._rename_field: QLineEdit | None = None
        self.active_editor: Any = None  # the drawing editor opened last
        self.auto_run_timer = QTimer(self, singleShot=True, interval=AUTO_RUN_DELAY_MS)
        self.validate_timer = QTimer(self, singleShot=True, interval=150)
        self._validator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-validate")
        self._validation_rev = 0
        self._closed = False
        self._build_layout()
        self.run_control = RunControl(self.runner, self.scene, self.viewer, self.log, self.statusBar())
        self.node_editors = NodeEditors(self.doc, self.editor, self.runner, self.run_control, self)
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._connect()
        self.setWindowIcon(theme.icon("kiln"))
        self.setAcceptDrops(True)
        self._update_title()

    # --- layout --------------------------------------------------------------------------
    def _build_layout(self) -> None:
        """Canvas in the middle; viewer over properties on the right; log and undo history below."""
        self.setCentralWidget(self.view)
        right = Qt.DockWidgetArea.RightDockWidgetArea
        self.viewer_dock = self._dock("Viewer", self.viewer, right)
        self.properties_dock = self._dock("Properties", self.properties, right)
        self.splitDockWidget(self.viewer_dock, self.properties_dock, Qt.Orientation.Vertical)
        self.log_dock = self._dock("Log", self.log, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.undo_view = QUndoView(self.doc.undo_stack)
        self.undo_view.setEmptyLabel("<file opened>")
        self.history_dock = self._dock("Undo history", self.undo_view, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.queue_panel = QueuePanel(self.runner, self.registry)
        self.queue_dock = self._dock("Queue", self.queue_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.log_dock, self.history_dock)
        self.tabifyDockWidget(self.log_dock, self.queue_dock)
        self.log_dock.raise_()
        self.viewer_dock.setMinimumWidth(320)
        self.resizeDocks([self.log_dock], [140], Qt.Orientation.Vertical)

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.replace(" ", "_").lower())
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, name: str, text: str, slot: Callable, shortcut: Any = None, icon: str | None = None,
                checkable: bool = False, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
        if icon:
            action.setIcon(theme.icon(icon))
        action.setCheckable(checkable)
        action.setToolTip(tip or text.replace("&", ""))
        action.triggered.connect(slot)
        self.addAction(action)
        self.actions[name] = action
        return action

    def _build_actions(self) -> None:
        a, K = self._action, QKeySequence.StandardKey
        a("new", "&New", self.new_graph, K.New, "new")
        a("open", "&Open…", lambda: self.files.open_file(), K.Open, "open")
        a("save", "&Save", lambda: self.files.save(), K.Save, "save")
        a("save_as", "Save &As…", lambda: self.files.save_as(), K.SaveAs)
        a("save_image", "Save &Image…", lambda: self.files.save_image(self.viewer.current))
        a("settings", "Se&ttings…", self.open_settings)
        a("quit", "&Quit", self.close, K.Quit)
        undo = self.doc.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcuts([QKeySequence(K.Undo)])
        undo.setIcon(theme.icon("undo"))
        redo = self.doc.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        redo.setIcon(theme.icon("redo"))
        for name, action in (("undo", undo), ("redo", redo)):
            self.addAction(action)
            self.actions[name] = action
        self._build_edit_actions()

    def _build_edit_actions(self) -> None:
        a, K = self._action, QKeySequence.StandardKey
        a("cut", "Cu&t", self.cut, K.Cut)
        a("copy", "&Copy", self.copy, K.Copy)
        a("paste", "&Paste", lambda: self.paste(), K.Paste)
        a("duplicate", "&Duplicate", self.duplicate, ["Ctrl+D", "Alt+C"])
        a("delete", "De&lete", self.delete_selection)
        a("select_all", "Select &All", self.select_all, K.SelectAll)
        a("group", "&Group in Backdrop", self.group_selection, "Ctrl+G")
        a("add_backdrop", "Add &Backdrop", self.add_empty_backdrop)
        a("rename", "&Rename", self.rename_selected)
        a("disable", "&Disable / Enable", self.toggle_disabled)
        a("collapse", "Co&llapse / Expand", self.toggle_collapsed)
        a("add_node", "Add &Node…", lambda: self.open_search(self.view.cursor_scene_pos()))
        a("frame", "&Frame Selection", lambda: self.view.frame(True))
        a("frame_all", "Frame &All", lambda: self.view.frame(False), "Home", "frame")
        a("zoom_in", "Zoom &In", lambda: self.view.zoom_by(1.25), K.ZoomIn)
        a("zoom_out", "Zoom &Out", lambda: self.view.zoom_by(0.8), K.ZoomOut)
        a("snap", "&Snap to Grid", self._toggle_snap, checkable=True).setChecked(self.scene.snap_to_grid)
        a("minimap", "&Minimap", self.view.minimap.set_wanted, checkable=True).setChecked(True)
        a("run", "&Run", lambda: self.run_graph(), ["Ctrl+Return", "Ctrl+Enter"], "run",
          tip="Run the graph (Ctrl+Enter); press again to queue another run")
        a("run_selected", "Run to &Selected", self.run_selected, ["Ctrl+Shift+Return", "Ctrl+Shift+Enter"],
          tip="Run only what the selected nodes need")
        a("cancel", "&Cancel", self.cancel_run, "Esc", "stop", tip="Cancel the run and the queue (Esc)")
        a("auto_run", "&Auto-run on Change", self._toggle_auto_run, checkable=True,
          tip="Run again shortly after every edit")
        a("help", "&Keyboard Shortcuts", self.overlay.toggle, None, "help")
        a("about", "&About Kiln", self._about)
        self.actions["cancel"].setEnabled(False)
        self.actions["auto_run"].setChecked(self.settings.flag("auto_run"))  # off unless the user chose it

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        for name in ("new", "open"):
            file_menu.addAction(self.actions[name])
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(lambda: self.files.fill_recent(self.recent_menu))
        self.examples_menu = file_menu.addMenu("Open &Example")
        self.examples_menu.aboutToShow.connect(lambda: self.files.fill_examples(self.examples_menu))
        for name in ("save", "save_as", "save_image", None, "settings", None, "quit"):
            file_menu.addSeparator() if name is None else file_menu.addAction(self.actions[name])
        edit = bar.addMenu("&Edit")
        for name in ("undo", "redo", None, "cut", "copy", "paste", "duplicate", "delete", "select_all", None,
                     "add_node", "rename", "disable", "collapse", "group", "add_backdrop"):
            edit.addSeparator() if name is None else edit.addAction(self.actions[name])
        edit.addMenu(self._color_menu(edit))
        view = bar.addMenu("&View")
        for name in ("frame", "frame_all", "zoom_in", "zoom_out", None, "snap", "minimap"):
            view.addSeparator() if name is None else view.addAction(self.actions[name])
        view.addSeparator()
        for dock in (self.viewer_dock, self.properties_dock, self.log_dock, self.history_dock, self.queue_dock):
            view.addAction(dock.toggleViewAction())
        run = bar.addMenu("&Run")
        for name in ("run", "run_selected", "cancel", None, "auto_run"):
            run.addSeparator() if name is None else run.addAction(self.actions[name])
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.actions["help"])
        help_menu.addAction(self.actions["about"])

    def _color_menu(self, parent: QWidget) -> QMenu:
        menu = QMenu("&Colour", parent)
        for name, color in style.NODE_COLORS.items():
            menu.addAction(name, lambda c=color: self.color_selection(c))
        return menu

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Main")
        bar.setObjectName("main_toolbar")
        bar.setMovable(False)
        for name in ("new", "open", "save", None, "undo", "redo", None, "frame_all", None):
            bar.addSeparator() if name is None else bar.addAction(self.actions[name])
        bar.addAction(self.actions["run"])
        bar.widgetForAction(self.actions["run"]).setObjectName("runButton")
        bar.widgetForAction(self.actions["run"]).setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        bar.addAction(self.actions["run_selected"])
        bar.addAction(self.actions["cancel"])
        bar.widgetForAction(self.actions["cancel"]).setObjectName("cancelButton")
        bar.addSeparator()
        bar.addAction(self.actions["auto_run"])
        bar.addSeparator()
        bar.addAction(self.actions["help"])

    def _connect(self) -> None:
        self.doc.dirty_changed.connect(lambda _d: self._update_title())
        self.doc.path_changed.connect(lambda _p: self._update_title())
        self.doc.changed.connect(self._on_doc_changed)
        self.doc.graph_reset.connect(self._on_graph_reset)
        self.scene.selectionChanged.connect(self._on_selection_changed)
        self.scene.search_requested.connect(self.open_search)
        self.scene.refused.connect(lambda msg: self.statusBar().showMessage(f"Cannot connect: {msg}", 6000))
        self.scene.rename_requested.connect(self.start_rename)
        self.scene.rename_backdrop_requested.connect(self.start_rename_backdrop)
        self.scene.editor_requested.connect(self.open_node_editor)
        self.properties.editor_requested.connect(self.open_node_editor)
        self.view.search_requested.connect(self.open_search)
        self.view.key_action.connect(self._on_key_action)
        self.view.files_dropped.connect(self.files.open_dropped)
        self.view.context_menu.connect(self._context_menu)
        self.search.chosen.connect(self._on_search_chosen)
        self.viewer.restore_requested.connect(self.files.restore_from_history)
        self.viewer.save_requested.connect(self.files.save_image)
        self.viewer.message.connect(lambda m: self.statusBar().showMessage(m, 4000))
        self.log.node_clicked.connect(self.focus_node)
        self.runner.queue_changed.connect(lambda n: self.actions["cancel"].setEnabled(n > 0))
        self.auto_run_timer.timeout.connect(self._auto_run)
        self.validate_timer.timeout.connect(self.revalidate)
        self.issues_found.connect(self._apply_issues)

    # --- prompts ---------------------------------------------------------------------------
    def _ask_with_dialog(self, kind: str, question: str) -> str:
        if kind == "unsaved":
            return self.files.ask_unsaved(question)
        box = QMessageBox(self)
        box.setWindowTitle("Kiln")
        box.setText(question)
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        return "yes" if box.exec() == QMessageBox.StandardButton.Yes else "no"

    def notify_error(self, message: str) -> None:
        """A user mistake or a file problem: one line in the status bar and the log, no dialog."""
        self.log.error(message)
        self.statusBar().showMessage(message, 10000)

    # --- files -------------------------------------------------------------------------------
    def _update_title(self) -> None:
        star = "*" if self.doc.dirty else ""
        self.setWindowTitle(f"{self.doc.display_name()}{star} — Kiln")

    # file handling lives in app.file_controller; these delegations are what tests and app.main call
    def confirm_discard(self) -> bool:
        return self.files.confirm_discard()

    def new_graph(self) -> None:
        if self.confirm_discard():
            self.doc.new()
            self.view.reset_view()

    def open_file(self, path: str | None = None) -> bool:
        return self.files.open_file(path)

    def load_path(self, path: str) -> bool:
        return self.files.load_path(path)

    def frame_on_open(self) -> None:
        """Frame the opened graph legibly; when only part of it fits, say how to see the rest."""
        if not self.view.frame_for_reading():
            self.statusBar().showMessage(PAN_HINT, 12000)

    def save_as(self, path: str | None = None) -> bool:
        return self.files.save_as(path)

    def offer_recovery(self) -> bool:
        return self.files.offer_recovery()

    def save_image(self, entry: ResultEntry | None, path: str | None = None) -> bool:
        return self.files.save_image(entry, path)

    def restore_from_history(self, entry: ResultEntry) -> bool:
        return self.files.restore_from_history(entry)

    def open_settings(self) -> None:
        if SettingsDialog(self.settings, self).exec():
            self.runner.set_settings(self.settings.engine_settings())

    # --- editing ------------------------------------------------------------------------------
    def _on_doc_changed(self) -> None:
        self.validate_timer.start()
        if self.actions["auto_run"].isChecked() and not self._advancing_seeds:
            self.auto_run_timer.start()

    _advancing_seeds = False

    def _on_graph_reset(self) -> None:
        self.run_control.node_images.clear()
        self.validate_timer.start()

    def revalidate(self) -> None:
        """Mark problems (missing inputs, bad params) on the nodes before anything runs.

        Checked on a helper thread, so that a large graph never holds up the UI."""
        if self._closed:
            return
        self._validation_rev += 1
        rev, graph, registry = self._validation_rev, self.doc.graph.copy(), self.registry
        settings = self.settings.engine_settings()

        def check() -> None:
            from engine.validate import validate
            from nodes.checkpoint_loader import model_size_issues

            issues: dict[str, str] = {}
            for issue in [*validate(graph, registry), *model_size_issues(graph, registry, settings)]:
                if issue.node_id and issue.node_id not in issues:
                    issues[issue.node_id] = issue.message
            self.issues_found.emit(rev, issues)

        self._validator.submit(check)

    def _apply_issues(self, rev: int, issues: dict) -> None:
        if rev == self._validation_rev:  # else the graph changed since: a newer check is on its way
            self.scene.set_issues(issues)

    def _on_selection_changed(self) -> None:
        ids = self.scene.selected_node_ids()
        self.properties.show_node(ids[0] if len(ids) == 1 else None)
        if len(ids) == 1:
            self.run_control.preferred_node = ids[0]
            self.run_control.show_node(ids[0])

    def _on_key_action(self, action: str) -> None:
        {"delete": self.delete_selection, "disable": self.toggle_disabled, "rename": self.rename_selected,
         "frame": lambda: self.view.frame(True), "help": self.overlay.toggle,
         "collapse": lambda: self.editor.toggle_collapsed(self.scene.selected_node_ids())}[action]()

    def open_search(self, scene_pos: QPointF, pending: PendingLink | None = None) -> None:
        self._search_target = (scene_pos, pending)
        flt = TypeFilter(pending.type_name, needs_input=pending.is_output) if pending else None
        global_pos = self.view.viewport().mapToGlobal(self.view.mapFromScene(scene_pos))
        self.search.open_at(global_pos, flt)

    def _on_search_chosen(self, type_name: str) -> None:
        pos, pending = self._search_target
        self.scene.add_node_from_search(type_name, pos, pending)

    def delete_selection(self) -> None:
        links, dots = self.scene.selected_links(), self.scene.selected_reroutes()
        nodes, backdrops = self.scene.selected_node_ids(), self.scene.selected_backdrop_ids()
        if not (links or dots or nodes or backdrops):
            return
        stack = self.doc.undo_stack
        stack.beginMacro("Delete selection")
        for link in links:
            self.editor.disconnect(link)
        if dots:
            self.editor.remove_reroutes(dots)
        self.editor.delete(nodes, backdrops)
        stack.endMacro()

    def color_selection(self, color: str | None) -> None:
        """Recolour the selected nodes (title bars) and backdrops, as one undo step."""
        nodes, backdrops = self.scene.selected_node_ids(), self.scene.selected_backdrop_ids()
        if not (nodes or backdrops):
            return
        stack = self.doc.undo_stack
        stack.beginMacro("Colour selection")
        self.editor.set_color(nodes, color)
        for backdrop_id in backdrops:
            self.editor.set_backdrop(backdrop_id, "Colour backdrop", color=color)
        stack.endMacro()

    def toggle_collapsed(self) -> None:
        self.editor.toggle_collapsed(self.scene.selected_node_ids())

    def toggle_disabled(self) -> None:
        self.editor.toggle_disabled(self.scene.selected_node_ids())

    def select_all(self) -> None:
        for item in [*self.scene.nodes.values(), *self.scene.backdrops.values()]:
            item.setSelected(True)

    def copy(self) -> None:
        ids, bds = self.scene.selected_node_ids(), self.scene.selected_backdrop_ids()
        if ids or bds:
            self._to_clipboard(self.editor.copy_text(ids, bds))
            self.statusBar().showMessage(f"Copied {len(ids)} node{'s' if len(ids) != 1 else ''}", 3000)

    def cut(self) -> None:
        ids, bds = self.scene.selected_node_ids(), self.scene.selected_backdrop_ids()
        if ids or bds:
            self._to_clipboard(self.editor.cut(ids, bds))

    def _to_clipboard(self, text: str) -> None:
        # Plain text only: a QMimeData made in Python and left on the clipboard is deleted by Qt after the
        # interpreter has gone, which crashes the application on quit (tests/test_gui_quit.py).
        QGuiApplication.clipboard().setText(text)

    def paste(self, at: QPointF | None = None) -> list[str]:
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None:
            return []
        if mime.hasFormat(CLIPBOARD_MIME):
            text = bytes(mime.data(CLIPBOARD_MIME)).decode("utf-8")
        else:
            text = mime.text()
        if not text.strip():
            return []
        pos = at if at is not None else self.view.cursor_scene_pos()
        try:
            ids = self.editor.paste(text, (pos.x(), pos.y()))
        except KilnError as err:
            self.notify_error(str(err))
            return []
        self.scene.select_nodes(ids)
        return ids

    def duplicate(self) -> None:
        ids = self.editor.duplicate(self.scene.selected_node_ids())
        self.scene.select_nodes(ids)

    def group_selection(self) -> None:
        items = [self.scene.nodes[n] for n in self.scene.selected_node_ids()]
        rects = [(r.x(), r.y(), r.width(), r.height()) for r in (i.sceneBoundingRect() for i in items)]
        if rects:
            self.editor.group(rects)
        else:
            self.statusBar().showMessage("Select the nodes to group first", 4000)

    def add_empty_backdrop(self) -> None:
        pos = self.view.cursor_scene_pos()
        self.editor.add_backdrop((pos.x(), pos.y(), 400.0, 300.0), "Backdrop")

    def rename_selected(self) -> None:
        ids = self.scene.selected_node_ids()
        if len(ids) == 1:
            self.start_rename(ids[0])
        elif len(self.scene.selected_backdrop_ids()) == 1:
            self.start_rename_backdrop(self.scene.selected_backdrop_ids()[0])

    def start_rename(self, node_id: str) -> None:
        item = self.scene.nodes[node_id]
        rect = item.mapRectToScene(QRectF(0, 0, item.width, style.TITLE_HEIGHT))
        title = self.doc.node_title(node_id)
        self._open_rename_field(rect, title, lambda text: self.editor.rename(node_id, text))

    def start_rename_backdrop(self, backdrop_id: str) -> None:
        item = self.scene.backdrops[backdrop_id]
        rect = item.mapRectToScene(QRectF(0, 0, item.size[0], 32))
        title = self.doc.graph.backdrops[backdrop_id].title
        self._open_rename_field(rect, title, lambda text: self.editor.set_backdrop(
            backdrop_id, f"Rename backdrop to {text!r}", title=text))

    def _open_rename_field(self, scene_rect: QRectF, text: str, commit: Callable[[str], None]) -> None:
        field = QLineEdit(text, self.view.viewport())
        field.setObjectName("renameField")
        field.setGeometry(self.view.mapFromScene(scene_rect).boundingRect())
        field.selectAll()
        done = {"closed": False}

        def finish(accept: bool) -> None:
            if done["closed"]:
                return
            done["closed"] = True
            if accept:
                commit(field.text())
            field.deleteLater()
            self._rename_field = None
            self.view.setFocus()

        field.returnPressed.connect(lambda: finish(True))
        field.editingFinished.connect(lambda: finish(True))
        field.addAction(QAction(field, shortcut=QKeySequence("Esc"), triggered=lambda: finish(False)))
        field.show()
        field.setFocus()
        self._rename_field = field

    def open_node_editor(self, node_id: str) -> Any:
        """Open the drawing editor of a mask/layout/semantic node; OK applies it as one undo step.

        Returns the (window-modal, not blocking) dialog, or None when the node has no editor."""
        dialog = self.node_editors.open(node_id)
        if dialog is not None:
            self.active_editor = dialog
        return dialog

    def focus_node(self, node_id: str) -> None:
        if node_id in self.scene.nodes:
            self.scene.select_nodes([node_id])
            self.view.frame(True)

    def _context_menu(self, scene_pos: QPointF, global_pos: QPoint) -> None:
        menu = QMenu(self)
        node = self.scene.node_at(scene_pos)
        backdrop = self._backdrop_at(scene_pos) if node is None else None
        if backdrop is not None:
            if not backdrop.isSelected():
                self.scene.clearSelection()
                backdrop.setSelected(True)
            menu.addAction("Rename Backdrop", lambda: self.start_rename_backdrop(backdrop.backdrop_id))
            menu.addMenu(self._color_menu(menu))
            menu.addAction(self.actions["delete"])
        elif node is not None:
            if not node.isSelected():
                self.scene.select_nodes([node.node_id])
            from app.editors import has_editor

            if has_editor(self.doc.graph.nodes[node.node_id].type):
                menu.addAction("Open Editor…", lambda: self.open_node_editor(node.node_id))
            if self._planned_boxes(node.node_id):
                menu.addAction("Edit Boxes in a Layout Editor", lambda: self.edit_planned_boxes(node.node_id))
            for name in ("rename", "disable", "collapse", "duplicate", "delete"):
                menu.addAction(self.actions[name])
            menu.addMenu(self._color_menu(menu))
            from app.param_inputs import add_convert_actions

            add_convert_actions(menu, self.editor, node.node_id)
            menu.addSeparator()
            menu.addAction(self.actions["run_selected"])
        else:
            menu.addAction("Add Node…", lambda: self.open_search(scene_pos))
            menu.addAction("Add Backdrop", lambda: self.editor.add_backdrop(
                (scene_pos.x(), scene_pos.y(), 400.0, 300.0), "Backdrop"))
            menu.addAction("Paste", lambda: self.paste(scene_pos))
            menu.addSeparator()
            menu.addAction(self.actions["frame_all"])
        menu.exec(global_pos)

    def _planned_boxes(self, node_id: str) -> list[dict]:
        """The boxes a node with a `layout` input made in the last run (Plan Layout), else none."""
        result = self.run_control.last_result
        spec = self.doc.registry.get(self.doc.graph.nodes[node_id].type)
        if result is None or spec is None or spec.input("layout") is None:
            return []
        return result.layouts.get(node_id, [])

    def edit_planned_boxes(self, node_id: str) -> str | None:
        """Copy a node's last boxes into a new Layout Editor wired into its layout input, and open the editor."""
        boxes = self._planned_boxes(node_id)
        if not boxes:
            return None
        wired = self.doc.graph.incoming(node_id).get("layout")
        if wired is not None and self.doc.graph.nodes[wired.src].type == "LayoutEditor":
            self.open_node_editor(wired.src)  # the boxes already come from an editor: open that one
            return wired.src
        x, y = self.doc.graph.nodes[node_id].pos
        place = QRectF(x - 330.0, y, 280.0, 220.0)
        for _ in range(60):  # below the spot left of the node until nothing is in the way
            if not any(item.sceneBoundingRect().intersects(place) for item in self.scene.nodes.values()):
                break
            place.translate(0.0, 40.0)
        editor = self.editor.edit_boxes_in_layout_editor(node_id, boxes, (place.x(), place.y()))
        self.open_node_editor(editor)
        return editor

    def _backdrop_at(self, scene_pos: QPointF) -> Any:
        return next((b for b in self.scene.backdrops.values()
                     if b.sceneBoundingRect().contains(scene_pos)), None)

    def _toggle_snap(self, on: bool) -> None:
        self.scene.snap_to_grid = on

    # --- running -------------------------------------------------------------------------------
    def run_graph(self, targets: list[str] | None = None, label: str = "Run") -> None:
        if not self.doc.graph.nodes:
            self.statusBar().showMessage("Nothing to run: add nodes first (Tab)", 4000)
            return
        self.scene.set_issues({})
        job = self.runner.submit(self.doc.graph, targets, label)
        self.log.info(f"{label} #{job.id} queued" + (f" (up to {', '.join(targets)})" if targets else ""))
        self._advancing_seeds = True
        try:
            self.editor.advance_seeds()
        finally:
            self._advancing_seeds = False

    def run_selected(self) -> None:
        ids = self.scene.selected_node_ids()
        if not ids:
            self.statusBar().showMessage("Select the nodes to run up to first", 4000)
            return
        self.run_graph(ids, "Run selected")

    def cancel_run(self) -> None:
        if self.search.isVisible() or self.overlay.isVisible() or self._rename_field is not None:
            self.search.hide()
            self.overlay.hide()
            return
        if self.runner.busy:
            self.runner.cancel()
            self.statusBar().showMessage("Cancelling…", 3000)

    def _toggle_auto_run(self, on: bool) -> None:
        self.settings.set_flag("auto_run", on)
        if on:
            self.auto_run_timer.start()

    def _auto_run(self) -> None:
        if self.runner.busy:
            self.runner.cancel()
        self.run_graph(label="Auto-run")

    def _about(self) -> None:
        QMessageBox.about(self, "About Kiln", "Kiln: node-graph latent diffusion.\n"
                          "After Rombach et al., High-Resolution Image Synthesis with\n"
                          "Latent Diffusion Models, CVPR 2022.")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not getattr(self, "_shown_once", False):
            self._shown_once = True
            width = max(self.width() // 3, 340)
            self.resizeDocks([self.viewer_dock], [width], Qt.Orientation.Horizontal)
            height = self.viewer_dock.height() + self.properties_dock.height()
            self.resizeDocks([self.viewer_dock, self.properties_dock], [height * 3 // 5, height * 2 // 5],
                             Qt.Orientation.Vertical)

    def restore_layout(self) -> None:
        """Dock and window layout from the last session, when there is one."""
        geometry, state = self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    # --- window --------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.files.open_dropped(paths)
            event.acceptProposedAction()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.overlay.isVisible():
            self.overlay.move((self.width() - self.overlay.width()) // 2,
                              (self.height() - self.overlay.height()) // 2)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.confirm_discard():
            event.ignore()
            return
        self.runner.shutdown()
        self.validate_timer.stop()
        self.auto_run_timer.stop()
        self._closed = True
        self._validator.shutdown(wait=True, cancel_futures=True)
        self.autosaver.discard()
        self.scene.selectionChanged.disconnect(self._on_selection_changed)
        self.settings.save_window_state(self.saveGeometry(), self.saveState())
        event.accept()

    def choices(self, name: str) -> list[str]:
        """Values for params with `choices_from` (e.g. the checkpoint files found)."""
        if name == "checkpoints":
            try:
                from nodes.checkpoint_loader import list_checkpoints
            except ImportError:
                return []
            try:
                return list(list_checkpoints(self.settings.engine_settings()))
            except (OSError, KilnError):
                return []
        return []
