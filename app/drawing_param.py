"""A painted mask or label map in the properties panel: a thumbnail and a line, never its base64 text.

Painter nodes keep their drawing in the graph as a base64 PNG string (a param declared with
`Param.drawing`); thousands of characters of it would mean nothing to a person and could be
broken by one keystroke. The drawing is changed in the node's painter, opened from here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from app.param_widgets import ParamEditor
from engine.errors import KilnError
from engine.spec import Param, ParamType

if TYPE_CHECKING:  # numpy comes with the first drawing shown, not at start-up
    import numpy as np

PNG_B64_START = "iVBORw0KGgo"  # the PNG signature, base64-encoded
THUMB_SIDE = 72


def holds_drawing(param: Param, value: Any) -> bool:
    """True for a param whose value is (or will be) a painting stored as a base64 PNG."""
    if param.type not in (ParamType.JSON, ParamType.STRING):
        return False
    return param.drawing is not None or (isinstance(value, str) and value.startswith(PNG_B64_START))


class DrawingParamView(ParamEditor):
    """Shows a drawing param as a small picture plus "drawing, W×H (edit in the painter)"."""

    open_requested = Signal()

    def __init__(self, param: Param, can_open: bool, parent: QWidget | None = None):
        super().__init__(param, compact=False, parent=parent)
        self.thumbnail = QLabel()
        self.thumbnail.setFixedSize(THUMB_SIDE, THUMB_SIDE)
        self.thumbnail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.summary = QLabel()
        self.summary.setObjectName("helpText")
        self.summary.setWordWrap(True)
        side = QVBoxLayout()
        side.addWidget(self.summary)
        self.open_button: QPushButton | None = None
        if can_open:
            self.open_button = QPushButton("Open Editor…")
            self.open_button.clicked.connect(self.open_requested)
            side.addWidget(self.open_button, 0, Qt.AlignmentFlag.AlignLeft)
        side.addStretch(1)
        self.layout_.addWidget(self.thumbnail)
        self.layout_.addLayout(side, 1)

    def set_value(self, value: Any) -> None:
        pixels, problem = self._decode(value)
        if pixels is None:
            self.thumbnail.clear()
            self.summary.setText(problem)
            return
        h, w = pixels.shape[:2]
        self.summary.setText(f"drawing, {w}×{h} (edit in the painter)")
        from app.editors.canvas import to_qimage

        picture = QPixmap.fromImage(to_qimage(pixels))
        self.thumbnail.setPixmap(picture.scaled(THUMB_SIDE, THUMB_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.FastTransformation))

    def _decode(self, value: Any) -> tuple[np.ndarray | None, str]:
        """RGB pixels to show, or None and what to say instead."""
        if not value:
            return None, "nothing drawn yet (paint it in the editor)"
        if not isinstance(value, str):
            return None, f"not a drawing ({type(value).__name__}); the painter starts empty"
        from engine import drawing  # numpy and PIL: only once a drawing is shown

        try:
            array = drawing.decode_png_b64(value, f"painted {self.param.name}")
        except KilnError as exc:
            return None, str(exc)
        if self.param.drawing == "labels":  # class ids: in the painter's colours
            return drawing.labels_to_rgb(array, 256), ""
        return array, ""
