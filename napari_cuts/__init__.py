"""napari plugin for CUTS: label-free, multi-granular segmentation.

The dock widget lives in :mod:`napari_cuts._widget`; everything that does not
need Qt (mask editing, resampling, file I/O) lives in plain modules so that it
can be tested and reused without a GUI. Importing this package is cheap: Qt,
napari and torch are only imported when a widget or engine call needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "CutsWidget"]


def __getattr__(name: str):
    if name == "CutsWidget":
        from napari_cuts._widget import CutsWidget

        return CutsWidget
    raise AttributeError(f"module 'napari_cuts' has no attribute {name!r}")
