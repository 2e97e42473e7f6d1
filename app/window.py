"""The main window: an assembler of docks and actions over the controllers that do the work.

Files are app.file_controller's, edits app.edit_controller's, runs app.run_actions' (what they
queue) and app.run_control's (what they show), validation app.live_validation's."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMessageBox, QUndoView, QWidget

from app import theme
from app.canvas.scene import GraphScene, PendingLink
from app.canvas.view import GraphView
from app.document import Autosaver, Document
from app.edit_controller import EditController
from app.editing import Editor
from app.failure_marks import FailureMarks
from app.file_controller import FileController
from app.live_validation import LiveValidation
from app.log_panel import LogPanel
from app.properties import PropertiesPanel
from app.queue_panel import QueuePanel
from app.run_actions import RunActions
from app.run_control import RunControl
from app.runner import Runner
from app.search import NodeSearchPopup
from app.settings import AppSettings, SettingsDialog
from app.shortcuts import ShortcutOverlay
from app.viewer import ResultEntry, Viewer
from engine.errors import KilnError
from engine.spec import NodeRegistry

Asker = Callable[[str, str], str]  # (kind, question) -> answer; tests replace it


class MainWindow(QMainWindow):
    def __init__(self, registry: NodeRegistry | None = None, settings: AppSettings | None = None):
        super().__init__()
        if registry is None:
            from nodes import build_registry

            registry = build_registry()
        self.registry = registry
        self.settings = settings or AppSettings()
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
        self.failure_marks = FailureMarks(self.doc.undo_stack, self.scene)
        self.actions: dict[str, QAction] = {}
        self._build_layout()
        self.run_control = RunControl(self.runner, self.scene, self.viewer, self.log, self.statusBar())
        self.files = FileController(self)
        self.ask: Asker = self.files.ask_with_dialog
        self.edits = EditController(self)
        self.runs = RunActions(self)
        self.validation = LiveValidation(self)
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._connect()
        self.setWindowIcon(theme.icon("kiln"))
        self.setAcceptDrops(True)
        self.files.update_title()

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
        a, K, files = self._action, QKeySequence.StandardKey, self.files
        a("new", "&New", files.new_graph, K.New, "new")
        a("open", "&Open…", lambda: files.open_file(), K.Open, "open")
        a("save", "&Save", lambda: files.save(), K.Save, "save")
        a("save_as", "Save &As…", lambda: files.save_as(), K.SaveAs)
        a("save_image", "Save &Image…", lambda: files.save_image(self.viewer.current))
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
        self._build_view_and_run_actions()

    def _build_edit_actions(self) -> None:
        a, K, edits = self._action, QKeySequence.StandardKey, self.edits
        a("cut", "Cu&t", edits.cut, K.Cut)
        a("copy", "&Copy", edits.copy, K.Copy)
        a("paste", "&Paste", lambda: edits.paste(), K.Paste)
        a("duplicate", "&Duplicate", edits.duplicate, ["Ctrl+D", "Alt+C"])
        a("delete", "De&lete", edits.delete_selection)
        a("select_all", "Select &All", edits.select_all, K.SelectAll)
        a("group", "&Group in Backdrop", edits.group_selection, "Ctrl+G")
        a("add_backdrop", "Add &Backdrop", lambda: edits.add_backdrop_at(self.view.cursor_scene_pos()))
        a("rename", "&Rename", edits.rename_selected)
        a("disable", "&Disable / Enable", edits.toggle_disabled)
        a("collapse", "Co&llapse / Expand", edits.toggle_collapsed)
        a("add_node", "Add &Node…", lambda: edits.open_search(self.view.cursor_scene_pos()))

    def _build_view_and_run_actions(self) -> None:
        a, K, runs = self._action, QKeySequence.StandardKey, self.runs
        a("frame", "&Frame Selection", lambda: self.view.frame(True))
        a("frame_all", "Frame &All", lambda: self.view.frame(False), "Home", "frame")
        a("zoom_in", "Zoom &In", lambda: self.view.zoom_by(1.25), K.ZoomIn)
        a("zoom_out", "Zoom &Out", lambda: self.view.zoom_by(0.8), K.ZoomOut)
        a("snap", "&Snap to Grid", lambda on: setattr(self.scene, "snap_to_grid", on),
          checkable=True).setChecked(self.scene.snap_to_grid)
        a("minimap", "&Minimap", self.view.minimap.set_wanted, checkable=True).setChecked(True)
        a("run", "&Run", lambda: runs.run_graph(), ["Ctrl+Return", "Ctrl+Enter"], "run",
          tip="Run the graph (Ctrl+Enter); press again to queue another run")
        a("run_selected", "Run to &Selected", runs.run_selected, ["Ctrl+Shift+Return", "Ctrl+Shift+Enter"],
          tip="Run only what the selected nodes need")
        a("cancel", "&Cancel", runs.cancel_run, "Esc", "stop", tip="Cancel the run and the queue (Esc)")
        a("auto_run", "&Auto-run on Change", runs.set_auto_run, checkable=True,
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
        self._add_to_menu(file_menu, ("save", "save_as", "save_image", None, "settings", None, "quit"))
        edit = bar.addMenu("&Edit")
        self._add_to_menu(edit, ("undo", "redo", None, "cut", "copy", "paste", "duplicate", "delete", "select_all",
                                 None, "add_node", "rename", "disable", "collapse", "group", "add_backdrop"))
        edit.addMenu(self.edits.color_menu(edit))
        view = bar.addMenu("&View")
        self._add_to_menu(view, ("frame", "frame_all", "zoom_in", "zoom_out", None, "snap", "minimap", None))
        for dock in (self.viewer_dock, self.properties_dock, self.log_dock, self.history_dock, self.queue_dock):
            view.addAction(dock.toggleViewAction())
        self._add_to_menu(bar.addMenu("&Run"), ("run", "run_selected", "cancel", None, "auto_run"))
        self._add_to_menu(bar.addMenu("&Help"), ("help", "about"))

    def _add_to_menu(self, menu: Any, names: tuple[str | None, ...]) -> None:
        """Add the named actions to a menu (or the toolbar) in order; None is a separator."""
        for name in names:
            menu.addSeparator() if name is None else menu.addAction(self.actions[name])

    def _build_toolbar(self) -> None:
        bar = self.addToolBar("Main")
        bar.setObjectName("main_toolbar")
        bar.setMovable(False)
        self._add_to_menu(bar, ("new", "open", "save", None, "undo", "redo", None, "frame_all", None, "run",
                                "run_selected", "cancel", None, "auto_run", None, "help"))
        run, cancel = bar.widgetForAction(self.actions["run"]), bar.widgetForAction(self.actions["cancel"])
        run.setObjectName("runButton")
        run.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        cancel.setObjectName("cancelButton")

    def _connect(self) -> None:
        edits, scene, view = self.edits, self.scene, self.view
        scene.selectionChanged.connect(self._on_selection_changed)
        scene.search_requested.connect(edits.open_search)
        scene.refused.connect(lambda msg: self.statusBar().showMessage(f"Cannot connect: {msg}", 6000))
        scene.rename_requested.connect(edits.start_rename)
        scene.rename_backdrop_requested.connect(edits.start_rename_backdrop)
        scene.editor_requested.connect(edits.open_node_editor)
        self.properties.editor_requested.connect(edits.open_node_editor)
        view.search_requested.connect(edits.open_search)
        view.key_action.connect(edits.on_key_action)
        view.files_dropped.connect(self.files.open_dropped)
        view.context_menu.connect(edits.context_menu)
        self.viewer.restore_requested.connect(self.files.restore_from_history)
        self.viewer.save_requested.connect(self.files.save_image)
        self.viewer.message.connect(lambda m: self.statusBar().showMessage(m, 4000))
        self.log.node_clicked.connect(edits.focus_node)

    def _on_selection_changed(self) -> None:
        ids = self.scene.selected_node_ids()
        self.properties.show_node(ids[0] if len(ids) == 1 else None)
        if len(ids) == 1:
            self.run_control.preferred_node = ids[0]
            self.run_control.show_node(ids[0])

    # --- what the controllers share ----------------------------------------------------------
    def notify_error(self, message: str) -> None:
        """A user mistake or a file problem: one line in the status bar and the log, no dialog."""
        self.log.error(message)
        self.statusBar().showMessage(message, 10000)

    def close_popups(self) -> bool:
        """Esc closes the node search and the shortcut overlay first; True when one of them (or a
        rename field) was open."""
        if self.search.isVisible() or self.overlay.isVisible() or self.edits.rename_field is not None:
            self.search.hide()
            self.overlay.hide()
            return True
        return False

    def choices(self, name: str) -> list[str]:
        """Values for params with `choices_from` (e.g. the checkpoint files found): the registry's lists."""
        try:
            return self.registry.choices.list(name, self.settings.engine_settings())
        except (OSError, KilnError):
            return []

    def open_settings(self) -> None:
        if SettingsDialog(self.settings, self).exec():
            self.runner.set_settings(self.settings.engine_settings())

    def _about(self) -> None:
        QMessageBox.about(self, "About Kiln", "Kiln: node-graph latent diffusion.\n"
                          "After Rombach et al., High-Resolution Image Synthesis with\n"
                          "Latent Diffusion Models, CVPR 2022.")

    # --- what tests and app.main call: one line each, to the controller that does it -------------
    def confirm_discard(self) -> bool:
        return self.files.confirm_discard()

    def new_graph(self) -> None:
        self.files.new_graph()

    def open_file(self, path: str | None = None) -> bool:
        return self.files.open_file(path)

    def load_path(self, path: str) -> bool:
        return self.files.load_path(path)

    def frame_on_open(self) -> None:
        self.files.frame_on_open()

    def save_as(self, path: str | None = None) -> bool:
        return self.files.save_as(path)

    def offer_recovery(self) -> bool:
        return self.files.offer_recovery()

    def save_image(self, entry: ResultEntry | None, path: str | None = None) -> bool:
        return self.files.save_image(entry, path)

    def restore_from_history(self, entry: ResultEntry) -> bool:
        return self.files.restore_from_history(entry)

    def copy(self) -> None:
        self.edits.copy()

    def paste(self, at: QPointF | None = None) -> list[str]:
        return self.edits.paste(at)

    def select_all(self) -> None:
        self.edits.select_all()

    def open_search(self, scene_pos: QPointF, pending: PendingLink | None = None) -> None:
        self.edits.open_search(scene_pos, pending)

    def open_node_editor(self, node_id: str) -> Any:
        return self.edits.open_node_editor(node_id)

    def edit_planned_boxes(self, node_id: str) -> str | None:
        return self.edits.edit_planned_boxes(node_id)

    def run_graph(self, targets: list[str] | None = None, label: str = "Run") -> None:
        self.runs.run_graph(targets, label)

    # --- window --------------------------------------------------------------------------------
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
        self.validation.shutdown()
        self.runs.stop()
        self.autosaver.discard()
        self.scene.selectionChanged.disconnect(self._on_selection_changed)
        self.settings.save_window_state(self.saveGeometry(), self.saveState())
        event.accept()
