"""The properties panel: every param of the selected node, reset to default, the node's help."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.document import Document
from app.drawing_param import DrawingParamView, holds_drawing
from app.editing import Editor
from app.param_inputs import link_source_text, param_link
from app.param_widgets import ParamEditor, SeedEditor, make_editor
from app.theme import icon


class PropertiesPanel(QScrollArea):
    editor_requested = Signal(str)  # node id: open its drawing editor
    def __init__(self, doc: Document, editor: Editor,
                 choices_provider: Callable[[str], list[str]] | None = None):
        super().__init__()
        self.doc = doc
        self.editor = editor
        self.choices_provider = choices_provider
        self.node_id: str | None = None
        self.editors: dict[str, ParamEditor] = {}
        self.linked_labels: dict[str, QLabel] = {}  # params that take their value from a link
        self._shown_links: tuple = ()
        self.resets: dict[str, QToolButton] = {}
        self.refusal_lines: dict[str, QLabel] = {}  # under each field: why a typed value was refused
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # rows shrink to fit
        doc.param_changed.connect(self._on_param_changed)
        doc.node_changed.connect(self._on_node_changed)
        doc.node_removed.connect(lambda n: self.show_node(None) if n == self.node_id else None)
        doc.graph_reset.connect(self._on_graph_reset)
        doc.meta_changed.connect(self._on_meta_changed)
        doc.link_added.connect(self._on_link_changed)
        doc.link_removed.connect(self._on_link_changed)
        self.show_node(None)

    def _on_graph_reset(self) -> None:
        self.show_node(self.node_id if self.node_id in self.doc.graph.nodes else None)

    def show_node(self, node_id: str | None) -> None:
        self.node_id = node_id
        self.editors.clear()
        self.resets.clear()
        self.refusal_lines.clear()
        self.linked_labels.clear()
        self._shown_links = self._param_links(node_id)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(8)
        if node_id is None or node_id not in self.doc.graph.nodes:
            self.node_id = None
            hint = QLabel("Select a node to edit its parameters.\n\n"
                          "Tab or double-click the canvas to add one.")
            hint.setObjectName("helpText")
            hint.setWordWrap(True)
            layout.addWidget(hint)
        else:
            self._fill(layout, node_id)
        layout.addStretch(1)
        self.setWidget(body)

    def _fill(self, layout: QVBoxLayout, node_id: str) -> None:
        node = self.doc.graph.nodes[node_id]
        spec = self.doc.registry.get(node.type)
        self.header = QLabel(self.doc.node_title(node_id))
        self.header.setObjectName("nodeHeader")
        layout.addWidget(self.header)
        sub = QLabel(f"{node.type} · id {node_id}" + (" · disabled" if node.disabled else ""))
        sub.setObjectName("helpText")
        layout.addWidget(sub)
        if spec is None:
            layout.addWidget(QLabel(f"Unknown node type {node.type!r}: its params are kept as they are."))
            return
        if spec.help:
            help_label = QLabel(spec.help)
            help_label.setObjectName("helpText")
            help_label.setWordWrap(True)
            layout.addWidget(help_label)
        from app.editors import declared_editor

        if declared_editor(spec) is not None:
            button = QPushButton("Open Editor…")
            button.setToolTip("Draw on the input picture (or double-click the node)")
            button.clicked.connect(lambda: self.editor_requested.emit(node_id))
            layout.addWidget(button)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for param in spec.params:
            label = QLabel(param.name.replace("_", " "))
            label.setToolTip(param.help)
            form.addRow(label, self._param_row(node_id, param))
        layout.addLayout(form)

    def _param_row(self, node_id: str, param) -> QWidget:
        link = param_link(self.doc, node_id, param.name)
        if link is not None:  # read only: the value arrives on the param's socket
            label = QLabel(link_source_text(self.doc, link))
            label.setObjectName("linkedParam")
            label.setToolTip(f"{param.help}\nShown as an input and linked; convert it to a widget to edit it here")
            self.linked_labels[param.name] = label
            return label
        row = QWidget()
        lines = QVBoxLayout(row)
        lines.setContentsMargins(0, 0, 0, 0)
        lines.setSpacing(2)
        box = QHBoxLayout()
        lines.addLayout(box)
        editor = self._drawing_view(node_id, param) or make_editor(
            param, compact=False, choices_provider=self.choices_provider, graph_folder=lambda: self.doc.graph.base_dir)
        as_input = param.name in self.doc.graph.nodes[node_id].param_inputs
        editor.setToolTip(param.help + ("\nShown as an input with no link: this value is used" if as_input else ""))
        editor.committed.connect(lambda value, merge, name=param.name:
                                 self.editor.set_param(node_id, name, value, merge))
        if isinstance(editor, SeedEditor):
            editor.mode_changed.connect(lambda mode, name=param.name:
                                        self.editor.set_seed_mode(node_id, name, mode))
            editor.set_mode(self.doc.seed_mode(node_id, param.name))
        editor.set_value(self.doc.param_value(node_id, param.name))
        reset = QToolButton()
        reset.setIcon(icon("restore"))
        reset.setToolTip(f"Reset to default ({param.default!r})"[:120])
        reset.clicked.connect(lambda _=False, name=param.name: self.editor.reset_param(node_id, name))
        box.addWidget(editor, 1)
        box.addWidget(reset, 0, Qt.AlignmentFlag.AlignTop)
        lines.addWidget(self._refusal_line(param.name, editor))
        self.editors[param.name] = editor
        self.resets[param.name] = reset
        self._update_reset(param.name)
        return row

    def _drawing_view(self, node_id: str, param) -> DrawingParamView | None:
        """A painted mask or label map shows as a picture with an Open Editor… button, never as base64."""
        from app.editors import declared_editor

        if not holds_drawing(param, self.doc.param_value(node_id, param.name)):
            return None
        spec = self.doc.registry.get(self.doc.graph.nodes[node_id].type)
        view = DrawingParamView(param, can_open=declared_editor(spec) is not None)
        view.open_requested.connect(lambda: self.editor_requested.emit(node_id))
        return view

    def _refusal_line(self, name: str, editor: ParamEditor) -> QLabel:
        """Under the field: why a typed value was refused, while the field shows it."""
        line = QLabel()
        line.setObjectName("refusal")
        line.setWordWrap(True)
        line.hide()
        editor.refused.connect(lambda message: (line.setText(message), line.setVisible(bool(message))))
        self.refusal_lines[name] = line
        return line

    def _update_reset(self, name: str) -> None:
        spec = self.doc.registry.get(self.doc.graph.nodes[self.node_id].type)
        param = spec.param(name) if spec else None
        if param is not None and name in self.resets:
            self.resets[name].setEnabled(self.doc.param_value(self.node_id, name) != param.default)

    def _on_param_changed(self, node_id: str, name: str) -> None:
        if node_id == self.node_id and name in self.editors:
            self.editors[name].set_value(self.doc.param_value(node_id, name))
            self._update_reset(name)

    def _on_node_changed(self, node_id: str) -> None:
        if node_id == self.node_id and self._param_links(node_id) != self._shown_links:
            self.show_node(node_id)
        elif node_id == self.node_id and hasattr(self, "header"):
            self.header.setText(self.doc.node_title(node_id))

    def _on_link_changed(self, link) -> None:
        if link.dst == self.node_id and self._param_links(self.node_id) != self._shown_links:
            self.show_node(self.node_id)

    def _param_links(self, node_id: str | None) -> tuple:
        """What decides which params show as read-only "from <node>" rows: converted params and their links."""
        node = self.doc.graph.nodes.get(node_id) if node_id is not None else None
        if node is None:
            return ()
        incoming = self.doc.graph.incoming(node_id)
        return tuple((name, incoming.get(name)) for name in node.param_inputs)

    def _on_meta_changed(self, key: str) -> None:
        if key == "seed_control" and self.node_id is not None:
            for name, editor in self.editors.items():
                if isinstance(editor, SeedEditor):
                    editor.set_mode(self.doc.seed_mode(self.node_id, name))
