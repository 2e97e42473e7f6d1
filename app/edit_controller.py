"""The window's Edit menu and canvas gestures: clipboard, delete, rename fields, colour, groups and
backdrops, the add-node search, context menus and the nodes' drawing editors (app.node_editors).

Each change goes through app.editing.Editor, so it is one undo step."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QPoint, QPointF, QRectF
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QLineEdit, QMenu, QWidget

from app.canvas import style
from app.canvas.scene import PendingLink
from app.editing import CLIPBOARD_MIME
from app.node_editors import NodeEditors
from app.search import TypeFilter
from engine.errors import KilnError
from engine.spec import ROLE_HOLDS_LAYOUT, SocketType

if TYPE_CHECKING:
    from app.window import MainWindow

NEW_BACKDROP_SIZE = (400.0, 300.0)


class EditController(QObject):
    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.doc, self.editor, self.scene, self.view = window.doc, window.editor, window.scene, window.view
        self.node_editors = NodeEditors(self.doc, self.editor, window.runner, window.run_control, window)
        self.rename_field: QLineEdit | None = None
        self.active_editor: Any = None  # the drawing editor opened last
        self._search_target: tuple[QPointF, PendingLink | None] = (QPointF(), None)
        window.search.chosen.connect(self._on_search_chosen)

    def _status(self, message: str, ms: int) -> None:
        self.window.statusBar().showMessage(message, ms)

    # --- adding nodes ------------------------------------------------------------------------
    def open_search(self, scene_pos: QPointF, pending: PendingLink | None = None) -> None:
        self._search_target = (scene_pos, pending)
        flt = TypeFilter(pending.type_name, needs_input=pending.is_output) if pending else None
        global_pos = self.view.viewport().mapToGlobal(self.view.mapFromScene(scene_pos))
        self.window.search.open_at(global_pos, flt)

    def _on_search_chosen(self, type_name: str) -> None:
        pos, pending = self._search_target
        self.scene.add_node_from_search(type_name, pos, pending)

    # --- the selection -----------------------------------------------------------------------
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

    def color_menu(self, parent: QWidget) -> QMenu:
        menu = QMenu("&Colour", parent)
        for name, color in style.NODE_COLORS.items():
            menu.addAction(name, lambda c=color: self.color_selection(c))
        return menu

    def toggle_collapsed(self) -> None:
        self.editor.toggle_collapsed(self.scene.selected_node_ids())

    def toggle_disabled(self) -> None:
        self.editor.toggle_disabled(self.scene.selected_node_ids())

    def select_all(self) -> None:
        for item in [*self.scene.nodes.values(), *self.scene.backdrops.values()]:
            item.setSelected(True)

    def focus_node(self, node_id: str) -> None:
        if node_id in self.scene.nodes:
            self.scene.select_nodes([node_id])
            self.view.frame(True)

    def on_key_action(self, action: str) -> None:
        """A key the canvas passes on (Delete, D, F2, F, H, ?)."""
        {"delete": self.delete_selection, "disable": self.toggle_disabled, "rename": self.rename_selected,
         "frame": lambda: self.view.frame(True), "help": self.window.overlay.toggle,
         "collapse": self.toggle_collapsed}[action]()

    # --- clipboard ---------------------------------------------------------------------------
    def copy(self) -> None:
        ids, bds = self.scene.selected_node_ids(), self.scene.selected_backdrop_ids()
        if ids or bds:
            self._to_clipboard(self.editor.copy_text(ids, bds))
            self._status(f"Copied {len(ids)} node{'s' if len(ids) != 1 else ''}", 3000)

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
            self.window.notify_error(str(err))
            return []
        self.scene.select_nodes(ids)
        return ids

    def duplicate(self) -> None:
        ids = self.editor.duplicate(self.scene.selected_node_ids())
        self.scene.select_nodes(ids)

    # --- groups and backdrops ----------------------------------------------------------------
    def group_selection(self) -> None:
        items = [self.scene.nodes[n] for n in self.scene.selected_node_ids()]
        rects = [(r.x(), r.y(), r.width(), r.height()) for r in (i.sceneBoundingRect() for i in items)]
        if rects:
            self.editor.group(rects)
        else:
            self._status("Select the nodes to group first", 4000)

    def add_backdrop_at(self, pos: QPointF) -> None:
        self.editor.add_backdrop((pos.x(), pos.y(), *NEW_BACKDROP_SIZE), "Backdrop")

    def _backdrop_at(self, scene_pos: QPointF) -> Any:
        return next((b for b in self.scene.backdrops.values()
                     if b.sceneBoundingRect().contains(scene_pos)), None)

    # --- renaming ----------------------------------------------------------------------------
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
            self.rename_field = None
            self.view.setFocus()

        field.returnPressed.connect(lambda: finish(True))
        field.editingFinished.connect(lambda: finish(True))
        field.addAction(QAction(field, shortcut=QKeySequence("Esc"), triggered=lambda: finish(False)))
        field.show()
        field.setFocus()
        self.rename_field = field

    # --- drawing editors ---------------------------------------------------------------------
    def open_node_editor(self, node_id: str) -> Any:
        """Open the drawing editor a node declares (NodeSpec.editor); OK applies it as one undo step.

        Returns the (window-modal, not blocking) dialog, or None when the node has no editor."""
        dialog = self.node_editors.open(node_id)
        if dialog is not None:
            self.active_editor = dialog
        return dialog

    def planned_boxes(self, node_id: str) -> list[dict]:
        """The boxes a node with a LAYOUT input made in the last run (Plan Layout), else none."""
        result = self.window.run_control.last_result
        spec = self.doc.registry.get(self.doc.graph.nodes[node_id].type)
        if result is None or spec is None or spec.input_of_type(SocketType.LAYOUT) is None:
            return []
        return result.layouts.get(node_id, [])

    def edit_planned_boxes(self, node_id: str) -> str | None:
        """Copy a node's last boxes into a new box-holding node (Layout Editor) wired into its LAYOUT
        input, and open its editor."""
        boxes = self.planned_boxes(node_id)
        if not boxes:
            return None
        spec = self.doc.registry[self.doc.graph.nodes[node_id].type]
        wired = self.doc.graph.incoming(node_id).get(spec.input_of_type(SocketType.LAYOUT).name)
        source = self.doc.registry.get(self.doc.graph.nodes[wired.src].type) if wired is not None else None
        if source is not None and ROLE_HOLDS_LAYOUT in source.roles:
            self.open_node_editor(wired.src)  # the boxes already come from an editor: open that one
            return wired.src
        editor = self.editor.edit_boxes_in_layout_editor(node_id, boxes, self._free_place_left_of(node_id))
        self.open_node_editor(editor)
        return editor

    def _free_place_left_of(self, node_id: str) -> tuple[float, float]:
        """Below the spot left of the node until nothing is in the way."""
        x, y = self.doc.graph.nodes[node_id].pos
        place = QRectF(x - 330.0, y, 280.0, 220.0)
        for _ in range(60):
            if not any(item.sceneBoundingRect().intersects(place) for item in self.scene.nodes.values()):
                break
            place.translate(0.0, 40.0)
        return place.x(), place.y()

    # --- context menus -----------------------------------------------------------------------
    def context_menu(self, scene_pos: QPointF, global_pos: QPoint) -> None:
        menu = QMenu(self.window)
        node = self.scene.node_at(scene_pos)
        backdrop = self._backdrop_at(scene_pos) if node is None else None
        if backdrop is not None:
            self._fill_backdrop_menu(menu, backdrop)
        elif node is not None:
            self._fill_node_menu(menu, node)
        else:
            self._fill_canvas_menu(menu, scene_pos)
        menu.exec(global_pos)

    def _fill_backdrop_menu(self, menu: QMenu, backdrop: Any) -> None:
        if not backdrop.isSelected():
            self.scene.clearSelection()
            backdrop.setSelected(True)
        menu.addAction("Rename Backdrop", lambda: self.start_rename_backdrop(backdrop.backdrop_id))
        menu.addMenu(self.color_menu(menu))
        menu.addAction(self.window.actions["delete"])

    def _fill_node_menu(self, menu: QMenu, node: Any) -> None:
        from app.editors import declared_editor
        from app.param_inputs import add_convert_actions

        node_id = node.node_id
        if not node.isSelected():
            self.scene.select_nodes([node_id])
        actions = self.window.actions
        if declared_editor(self.doc.registry.get(self.doc.graph.nodes[node_id].type)) is not None:
            menu.addAction("Open Editor…", lambda: self.open_node_editor(node_id))
        if self.planned_boxes(node_id):
            menu.addAction("Edit Boxes in a Layout Editor", lambda: self.edit_planned_boxes(node_id))
        for name in ("rename", "disable", "collapse", "duplicate", "delete"):
            menu.addAction(actions[name])
        menu.addMenu(self.color_menu(menu))
        add_convert_actions(menu, self.editor, node_id)
        menu.addSeparator()
        menu.addAction(actions["run_selected"])

    def _fill_canvas_menu(self, menu: QMenu, scene_pos: QPointF) -> None:
        menu.addAction("Add Node…", lambda: self.open_search(scene_pos))
        menu.addAction("Add Backdrop", lambda: self.add_backdrop_at(scene_pos))
        menu.addAction("Paste", lambda: self.paste(scene_pos))
        menu.addSeparator()
        menu.addAction(self.window.actions["frame_all"])
