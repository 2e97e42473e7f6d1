"""Showing a node's params as input sockets ("Convert <param> to Input" / "to Widget").

A converted param gets a socket on the canvas that an Integer, Float, Seed or
Text node (or any output of a type it takes, engine.param_links) can feed; while
linked, its widget is disabled and shows where the value comes from. Unlinked,
it keeps using its own widget value. Each conversion is one undo step;
converting back also removes the param's link, in the same step.
"""
from __future__ import annotations

from PySide6.QtGui import QUndoCommand
from PySide6.QtWidgets import QMenu

from app.commands import DisconnectCommand
from app.document import Document
from app.editing import Editor
from engine import param_links
from engine.graph import Link


class SetParamInputsCommand(QUndoCommand):
    """Replace the list of params a node shows as inputs."""

    def __init__(self, doc: Document, node_id: str, names: list[str], text: str):
        super().__init__(text)
        self.doc, self.node_id = doc, node_id
        self.old = list(doc.graph.nodes[node_id].param_inputs)
        self.new = list(names)

    def redo(self) -> None:
        self.doc.apply_set_node_field(self.node_id, "param_inputs", list(self.new))

    def undo(self) -> None:
        self.doc.apply_set_node_field(self.node_id, "param_inputs", list(self.old))


def param_link(doc: Document, node_id: str, name: str) -> Link | None:
    """The link feeding the converted param `name` of the node, if any."""
    node = doc.graph.nodes[node_id]
    spec = doc.registry.get(node.type)
    if spec is None or param_links.linked_param(spec, node, name) is None:
        return None
    return doc.graph.incoming(node_id).get(name)


def link_source_text(doc: Document, link: Link) -> str:
    """Where a linked param's value comes from, in words: "from Seed (seed.seed)"."""
    return f"from {doc.node_title(link.src)} ({link.src}.{link.src_socket})"


def convert_to_input(editor: Editor, node_id: str, name: str) -> None:
    doc = editor.doc
    node = doc.graph.nodes[node_id]
    if name in node.param_inputs:
        return
    names = param_links.ordered(doc.registry.get(node.type), [*node.param_inputs, name])
    text = f"Convert {name} of {doc.node_title(node_id)} to input"
    doc.undo_stack.push(SetParamInputsCommand(doc, node_id, names, text))


def convert_to_widget(editor: Editor, node_id: str, name: str) -> None:
    """Show the param as a widget again; its link, if any, goes in the same undo step."""
    doc = editor.doc
    node = doc.graph.nodes[node_id]
    if name not in node.param_inputs:
        return
    link = doc.graph.incoming(node_id).get(name)
    stack = doc.undo_stack
    stack.beginMacro(f"Convert {name} of {doc.node_title(node_id)} to widget")
    try:
        if link is not None:
            stack.push(DisconnectCommand(doc, link))
        stack.push(SetParamInputsCommand(doc, node_id, [n for n in node.param_inputs if n != name], ""))
    finally:
        stack.endMacro()


def add_convert_actions(menu: QMenu, editor: Editor, node_id: str) -> None:
    """As in ComfyUI: "Convert <param> to Widget" for each param shown as an input, and a
    "Convert Widget to Input" submenu with "Convert <param> to Input" for the node's other scalar params."""
    doc = editor.doc
    node = doc.graph.nodes[node_id]
    spec = doc.registry.get(node.type)
    params = param_links.convertible_params(spec) if spec is not None else []
    if params:
        menu.addSeparator()
    for param in params:
        if param.name in node.param_inputs:
            menu.addAction(f"Convert {param.name} to Widget",
                           lambda name=param.name: convert_to_widget(editor, node_id, name))
    widgets = [p for p in params if p.name not in node.param_inputs]
    if widgets:
        sub = menu.addMenu("Convert Widget to Input")
        for param in widgets:
            sub.addAction(f"Convert {param.name} to Input",
                          lambda name=param.name: convert_to_input(editor, node_id, name))
