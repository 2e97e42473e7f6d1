"""Sizes and colours of the canvas, in one place."""
from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QFontInfo
from PySide6.QtWidgets import QGraphicsItem

from engine.spec import SocketType

NODE_WIDTH = 240.0
TITLE_HEIGHT = 28.0
ROW_HEIGHT = 22.0
PORT_RADIUS = 6.0
CORNER = 6.0
PADDING = 8.0
THUMB_MAX_HEIGHT = 180.0
GRID = 20.0
ZOOM_MIN, ZOOM_MAX = 0.1, 4.0
READABLE_TITLE_PX = 9.0  # node titles smaller than this on screen cannot be read without squinting
_FLAG = QGraphicsItem.GraphicsItemFlag
MOVABLE_FLAGS = _FLAG.ItemIsMovable | _FLAG.ItemIsSelectable | _FLAG.ItemSendsGeometryChanges

SOCKET_COLORS: dict[str, str] = {
    SocketType.MODEL.value: "#b39ddb",
    SocketType.AUTOENCODER.value: "#ef6f6c",
    SocketType.CONDITIONER.value: "#ffd54f",
    SocketType.CONDITIONING.value: "#ffab40",
    SocketType.LATENT.value: "#f48fb1",
    SocketType.IMAGE.value: "#64b5f6",
    SocketType.MASK.value: "#81c784",
    SocketType.LAYOUT.value: "#4dd0e1",
    SocketType.SEMANTIC_MAP.value: "#bcaaa4",
    SocketType.INT.value: "#aed581",
    SocketType.FLOAT.value: "#9fa8da",
    SocketType.STRING.value: "#cfd8dc",
}

NODE_COLORS: dict[str, str | None] = {  # the colour menu: name -> title bar colour
    "Default": None,
    "Red": "#8e3b3b",
    "Orange": "#8f5a2a",
    "Yellow": "#857a2c",
    "Green": "#3f6e3f",
    "Teal": "#2f6b6b",
    "Blue": "#34558a",
    "Purple": "#5e4585",
}

BACKGROUND = QColor("#1d1f22")
GRID_MINOR = QColor("#25282c")
GRID_MAJOR = QColor("#2d3035")
NODE_BODY = QColor("#2b2e33")
NODE_TITLE = QColor("#3a3f46")
NODE_BORDER = QColor("#15171a")
TEXT = QColor("#dfe2e6")
TEXT_DIM = QColor("#9aa1ab")
SELECTED = QColor("#ffb74d")
FAILED = QColor("#ef5350")
RUNNING = QColor("#4fc3f7")
CACHED = QColor("#80cbc4")
DONE = QColor("#a5d6a7")
QUEUED = QColor("#b0bec5")
BACKDROP_DEFAULT = "#4a5a6a"


def socket_color(type_name: str) -> QColor:
    return QColor(SOCKET_COLORS.get(type_name, "#cccccc"))


def readable_zoom(font: QFont) -> float:
    """The smallest zoom at which node titles (drawn in `font`, the canvas font) stay legible."""
    pixels = QFontInfo(font).pixelSize() or 12
    return min(1.0, max(ZOOM_MIN, READABLE_TITLE_PX / pixels))
