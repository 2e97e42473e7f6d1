"""Where the canvas looks when it frames a graph: geometry only, in view pixels and scene units.

Framing fits a rectangle of the scene into an area of the viewport. The area is the whole viewport,
or the viewport less a strip along the minimap's side, so that no node ends up under the minimap."""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRect, QRectF

FIT_MAX_ZOOM = 1.25  # a small graph is framed no larger than this
MARGIN = 60.0  # scene units left around what is framed


def fit_zoom(rect: QRectF, area: QRectF) -> float:
    """The zoom that fits `rect` (scene) into `area` (view pixels), at most FIT_MAX_ZOOM."""
    return min(area.width() / max(1.0, rect.width()), area.height() / max(1.0, rect.height()), FIT_MAX_ZOOM)


def centre_in_area(rect: QRectF, area: QRectF, viewport: QRectF, zoom: float) -> QPointF:
    """The scene point to centre the view on so that `rect`'s centre lands on `area`'s centre."""
    shift = viewport.center() - area.center()
    return rect.center() + QPointF(shift.x() / zoom, shift.y() / zoom)


def centre_on_top_left(rect: QRectF, viewport: QRectF, zoom: float) -> QPointF:
    """The scene point to centre on so that `rect`'s top-left corner is at the viewport's."""
    return rect.topLeft() + QPointF(viewport.width() / zoom / 2, viewport.height() / zoom / 2)


def areas_beside(viewport: QRectF, keep_clear: QRect) -> list[QRectF]:
    """The viewport less the columns beside `keep_clear`, and the viewport less the rows beside it.

    `keep_clear` (the minimap) sits in a corner; each area leaves out the strip on its side."""
    clear = QRectF(keep_clear)
    areas = []
    if clear.center().x() > viewport.center().x():
        areas.append(QRectF(viewport.left(), viewport.top(), clear.left() - viewport.left(), viewport.height()))
    else:
        areas.append(QRectF(clear.right(), viewport.top(), viewport.right() - clear.right(), viewport.height()))
    if clear.center().y() > viewport.center().y():
        areas.append(QRectF(viewport.left(), viewport.top(), viewport.width(), clear.top() - viewport.top()))
    else:
        areas.append(QRectF(viewport.left(), clear.bottom(), viewport.width(), viewport.bottom() - clear.bottom()))
    return [a for a in areas if a.width() > 0 and a.height() > 0]
