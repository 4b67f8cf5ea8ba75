"""Put a new Labels layer into a viewer over several short event-loop turns.

When a layer is inserted, napari builds all its views on the main thread in one
call: the vispy node, the Qt layer controls, one vispy visual per layer overlay
(a Labels layer has two for its painting tools, the polygon and the brush
outline), and then a selection change that swaps the controls panel. For a
Labels layer that is 0.2-0.3 s on a 2-core machine under Xvfb, which the GUI
feels as a freeze. :class:`StagedLabels` splits it into steps, each run in its
own event-loop turn (:class:`napari_cuts._widget.CutsWidget` runs them from a
zero-interval timer):

1. build the layer model, with its two painting-tool overlays taken out;
2. insert it without selecting it (the vispy node and the controls);
3. put the polygon overlay back (napari builds its visual);
4. put the brush overlay back.

The painting tools work as usual once step 4 has run. If the layer is selected
before that (the user clicks it in the layer list within those few turns), the
overlays go back at once. Both tricks rely on napari internals
(``Layer._overlays``, ``LayerList._activate_on_insert``); with a napari that
lacks them the steps fall back to napari's own one-go insert, which only costs
time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["DEFERRED_OVERLAYS", "StagedLabels"]

#: the Labels overlays whose visuals are built in later turns (napari's painting tools)
DEFERRED_OVERLAYS = ("polygon", "brush_stroke")


@contextmanager
def _inserted_without_selecting(layers: Any) -> Iterator[None]:
    """While active, inserting into napari's LayerList does not select the new layer."""
    if not hasattr(layers, "_activate_on_insert"):
        yield
        return
    before = layers._activate_on_insert
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = before


class StagedLabels:
    """A new Labels layer, built and inserted into ``viewer`` in separate steps.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layer goes.
    data : np.ndarray
        The layer's label data.
    on_inserted : callable
        ``on_inserted(layer)`` right after the layer is in ``viewer.layers``.
    **kwargs
        Keyword arguments of :class:`napari.layers.Labels` (``name``, ``scale``...).
    """

    def __init__(self, viewer: Any, data: np.ndarray, *, on_inserted: Callable[[Any], None], **kwargs: Any) -> None:
        self.viewer = viewer
        self.layer: Any = None
        self._data = data
        self._kwargs = kwargs
        self._on_inserted = on_inserted
        self._detached: dict[str, Any] = {}

    def steps(self) -> list[Callable[[], None]]:
        """The steps in order; run each in its own event-loop turn."""
        restore = [lambda key=key: self._restore(key) for key in DEFERRED_OVERLAYS]
        return [self._build, self._insert, *restore]

    def _build(self) -> None:
        from napari.layers import Labels

        self.layer = Labels(self._data, **self._kwargs)
        overlays = getattr(self.layer, "_overlays", None)
        if overlays is not None and hasattr(overlays, "pop"):
            for key in DEFERRED_OVERLAYS:
                if key in overlays:
                    self._detached[key] = overlays.pop(key)

    def _insert(self) -> None:
        layers = self.viewer.layers
        with _inserted_without_selecting(layers):
            layers.append(self.layer)
        if self._detached:
            layers.selection.events.active.connect(self._on_active)
        self._on_inserted(self.layer)

    def _restore(self, key: str | None = None) -> None:
        """Put one detached overlay back (all of them when ``key`` is None)."""
        keys = list(self._detached) if key is None else [key]
        for k in keys:
            overlay = self._detached.pop(k, None)
            if overlay is not None:
                self.layer._overlays[k] = overlay
        if not self._detached:
            self._disconnect()

    def _on_active(self, event: Any) -> None:
        if event.value is self.layer:  # selected early: its painting tools must work now
            self._restore()

    def _disconnect(self) -> None:
        try:
            self.viewer.layers.selection.events.active.disconnect(self._on_active)
        except Exception:  # never connected, or the viewer is gone
            pass
