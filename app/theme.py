"""The dark theme: Fusion style, a dark palette and resources/styles/dark.qss."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

RESOURCES = Path(__file__).resolve().parents[1] / "resources"


def dark_palette() -> QPalette:
    p = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#202226", QPalette.ColorRole.WindowText: "#dfe2e6",
        QPalette.ColorRole.Base: "#181a1d", QPalette.ColorRole.AlternateBase: "#24272b",
        QPalette.ColorRole.Text: "#dfe2e6", QPalette.ColorRole.Button: "#33373d",
        QPalette.ColorRole.ButtonText: "#dfe2e6", QPalette.ColorRole.Highlight: "#8a5a1c",
        QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.ToolTipBase: "#2a2d32",
        QPalette.ColorRole.ToolTipText: "#dfe2e6", QPalette.ColorRole.PlaceholderText: "#7b828c",
        QPalette.ColorRole.Link: "#ffb74d", QPalette.ColorRole.BrightText: "#ff5252",
    }
    for role, color in roles.items():
        p.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b7078"))
    return p


def apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    qss = RESOURCES / "styles" / "dark.qss"
    if qss.exists():
        icons = (RESOURCES / "icons").as_posix()  # url() in a style sheet resolves against the cwd
        app.setStyleSheet(qss.read_text(encoding="utf-8").replace("@ICONS@", icons))


def icon(name: str) -> QIcon:
    """An icon from resources/icons (SVG, crisp at any scale)."""
    return QIcon(str(RESOURCES / "icons" / f"{name}.svg"))
