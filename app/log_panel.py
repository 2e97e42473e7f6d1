"""The log: run summaries, warnings and node failures (click a node name to select it)."""
from __future__ import annotations

import html
import time

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import QTextBrowser

COLORS = {"info": "#9aa1ab", "ok": "#a5d6a7", "warn": "#ffcc80", "error": "#ef9a9a"}


class LogPanel(QTextBrowser):
    node_clicked = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(self._on_anchor)
        self.lines: list[tuple[str, str]] = []  # (level, plain text), for tests and copying

    def add(self, level: str, text: str, node_id: str | None = None, details: str = "") -> None:
        self.lines.append((level, text))
        stamp = time.strftime("%H:%M:%S")
        body = html.escape(text)
        if node_id:
            link = f'<a href="node:{html.escape(node_id)}" style="color:#ffb74d">{html.escape(node_id)}</a>'
            body = f"{link}: {body}"
        self.append(f'<span style="color:#6b7078">{stamp}</span> '
                    f'<span style="color:{COLORS.get(level, COLORS["info"])}">{body}</span>')
        if details:
            self.append(f'<pre style="color:#8a9099">{html.escape(details.strip())}</pre>')

    def info(self, text: str) -> None:
        self.add("info", text)

    def error(self, text: str, node_id: str | None = None, details: str = "") -> None:
        self.add("error", text, node_id, details)

    def _on_anchor(self, url: QUrl) -> None:
        text = url.toString()
        if text.startswith("node:"):
            self.node_clicked.emit(text[len("node:"):])
