"""``napari-cuts``: open napari with a sample (or your image), the CUTS widget and the default encoder.

Usage::

    napari-cuts                     # sample fundus with geographic atrophy, segmented at once
    napari-cuts scan.nii.gz         # your image(s): PNG, JPEG, TIFF or NIfTI
    napari-cuts --no-segment        # do not start segmenting automatically
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-cuts",
        description="Open napari with the CUTS widget docked and the bundled default encoder selected.",
    )
    p.add_argument("images", nargs="*", help="image files to open (default: the sample fundus photograph)")
    p.add_argument("--no-segment", action="store_true", help="do not run Segment automatically")
    return p


def _add_images(viewer: Any, paths: Sequence[str]) -> list[Any]:
    from napari_cuts._io import read_image_file
    from napari_cuts._sample_data import fundus_ga

    layers = []
    if not paths:
        for data, kwargs, kind in fundus_ga():
            add = viewer.add_image if kind == "image" else viewer.add_labels
            layer = add(data, **kwargs)
            if kind == "image":
                layers.append(layer)
        return layers
    for path in paths:
        data, kwargs = read_image_file(path)
        rgb = data.ndim >= 3 and data.shape[-1] in (3, 4)
        layers.append(viewer.add_image(data, rgb=rgb, **kwargs))
    return layers


def setup_viewer(viewer: Any, paths: Sequence[str] = (), *, segment: bool = True) -> Any:
    """Add images and the CUTS widget to ``viewer``; select the default encoder; optionally segment.

    Returns the :class:`~napari_cuts._widget.CutsWidget`.
    """
    layers = _add_images(viewer, paths)
    widget = None
    try:  # through the plugin manager, as Plugins > CUTS does
        _, widget = viewer.window.add_plugin_dock_widget("napari-cuts", "CUTS")
    except Exception:  # plugin not registered (e.g. running from a source tree)
        widget = None
    if widget is None or not hasattr(widget, "start_segmentation"):
        from napari_cuts._widget import CutsWidget

        widget = CutsWidget(viewer)
        viewer.window.add_dock_widget(widget, name="CUTS", area="right")
    if layers:
        widget.set_image_layer(layers[0])
    widget.use_default_encoder()
    if segment and layers:
        widget.start_segmentation()
    return widget


#: the window size the launcher aims for (logical pixels), within 90 % of the screen
WINDOW_TARGET = (1600, 1000)


def fit_window(window: Any, screen: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int] | None:
    """Grow napari's window to a comfortable size on the screen, centred; never shrink it.

    napari opens at about 1090x630 on a first launch: with its own panels and the
    CUTS panel docked, that leaves the image a narrow strip. ``screen`` is the
    available ``(left, top, width, height)`` (default: the primary screen's).
    Returns the geometry set, or None when the window was left as it is.
    """
    if screen is None:
        from qtpy.QtWidgets import QApplication

        primary = QApplication.primaryScreen()
        if primary is None:
            return None
        avail = primary.availableGeometry()
        screen = (avail.left(), avail.top(), avail.width(), avail.height())
    left, top, sw, sh = screen
    _, _, width, height = window.geometry()
    new_w = max(width, min(WINDOW_TARGET[0], int(sw * 0.9)))
    new_h = max(height, min(WINDOW_TARGET[1], int(sh * 0.9)))
    if (new_w, new_h) == (width, height):
        return None
    geometry = (left + max(0, (sw - new_w) // 2), top + max(0, (sh - new_h) // 2), new_w, new_h)
    window.set_geometry(*geometry)
    return geometry


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import napari

    from napari_cuts._widget import _warm_up_engine

    # load torch and the engine while napari builds its window: the import's pauses (garbage
    # collections of the whole heap) then fall before the window takes input, not after
    _warm_up_engine()
    viewer = napari.Viewer(title="CUTS")
    fit_window(viewer.window)
    setup_viewer(viewer, args.images, segment=not args.no_segment)
    # napari fitted the image to the canvas before the CUTS panel took its share of the window:
    # fit it again once the window is laid out
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, viewer.reset_view)
    napari.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
