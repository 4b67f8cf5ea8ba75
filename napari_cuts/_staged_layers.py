"""Put a new Labels layer into a viewer over several short event-loop turns.

When a layer is inserted, napari builds all its views on the main thread in one
call: the vispy node, the Qt layer controls, one vispy visual per layer overlay
(a Labels layer has two for its painting tools, the polygon and the brush
outline), and then a selection change that swaps the controls panel. For a
Labels layer that is 0.2-0.3 s on a 2-core machine under Xvfb, which the GUI
feels as a freeze. :class:`StagedLabels` splits it into steps, each run in its
own event-loop turn (:class:`napari_cuts._widget.CutsWidget` runs them from a
zero-interval timer):

1. build the layer model, hidden, with its two painting-tool overlays taken out;
2. insert it without selecting it (napari builds the vispy node);
3. build its Qt layer controls;
4. put the polygon overlay back (napari builds its visual);
5. put the brush overlay back;
6. show it (unless it was asked for hidden): its first draw is a turn of its own.

Its controls and painting tools are in place once step 5 has run. If it is
selected before that (the user clicks it in the layer list within those few
turns), they are put in at once; :meth:`StagedLabels.complete` does all that is
left (the widget calls it when it closes midway). These tricks rely on napari internals (``Layer._overlays``,
``LayerList._activate_on_insert``, the viewer window's layer-controls container).
napari warns that a plugin's access to private attributes will end (not before
napari 0.10); those warnings are silenced here, and where napari lacks or refuses
an internal, that part falls back to napari's own one-go insert, which only costs
time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["DEFERRED_OVERLAYS", "StagedLabels"]

#: the Labels overlays whose visuals are built in later turns (napari's painting tools)
DEFERRED_OVERLAYS = ("polygon", "brush_stroke")


@contextmanager
def _quiet_private_access() -> Iterator[None]:
    """Silence napari's warning about a plugin reading private attributes (we know; see above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Private attribute access", category=FutureWarning)
        yield


def _private(obj: Any, name: str) -> Any:
    """``obj.name``, or None where it is missing or napari refuses a plugin's private access."""
    try:
        with _quiet_private_access():
            return getattr(obj, name)
    except Exception:
        return None


def _set_private(obj: Any, name: str, value: Any) -> bool:
    """Set ``obj.name``; False where napari refuses."""
    try:
        with _quiet_private_access():
            setattr(obj, name, value)
    except Exception:
        return False
    return True


@contextmanager
def _inserted_without_selecting(layers: Any) -> Iterator[None]:
    """While active, inserting into napari's LayerList does not select the new layer."""
    before = _private(layers, "_activate_on_insert")
    switched = isinstance(before, bool) and _set_private(layers, "_activate_on_insert", False)
    try:
        yield
    finally:
        if switched:
            _set_private(layers, "_activate_on_insert", before)


def _controls_adder(viewer: Any) -> tuple[Any, Any]:
    """napari's layer-controls container of ``viewer``'s window and its ``_add``, or ``(None, None)``."""
    qt_viewer = _private(getattr(viewer, "window", None), "_qt_viewer")
    controls = getattr(qt_viewer, "controls", None)
    add = _private(controls, "_add")
    if callable(add) and isinstance(getattr(controls, "widgets", None), dict):
        return controls, add
    return None, None


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
        self._controls: Any = None  # napari's controls container, while this layer's controls are pending
        self._placeholder: Any = None
        self._controls_add: Any = None
        self._listening = False
        self._visible = bool(kwargs.pop("visible", True))

    def steps(self) -> list[Callable[[], None]]:
        """The steps in order; run each in its own event-loop turn."""
        restore = [lambda key=key: self._restore(key) for key in DEFERRED_OVERLAYS]
        return [self._build, self._insert, self._add_controls, *restore, self._show]

    def _build(self) -> None:
        from napari.layers import Labels

        self.layer = Labels(self._data, visible=False, **self._kwargs)
        overlays = _private(self.layer, "_overlays")
        if overlays is not None and hasattr(overlays, "pop"):
            for key in DEFERRED_OVERLAYS:
                if key in overlays:
                    self._detached[key] = overlays.pop(key)

    def _insert(self) -> None:
        layers = self.viewer.layers
        controls, add = _controls_adder(self.viewer)
        with ExitStack() as stack:
            stack.enter_context(_inserted_without_selecting(layers))
            if controls is not None:  # its controls are built in the next step
                stack.enter_context(layers.events.inserted.blocker(add))
            layers.append(self.layer)
        if controls is not None:
            # until then an empty placeholder stands in, so that napari finds an entry for the layer
            # (selected early: an empty panel for a moment; removed early: the placeholder goes)
            from qtpy.QtWidgets import QWidget

            self._placeholder = QWidget()
            controls.addWidget(self._placeholder)
            controls.widgets[self.layer] = self._placeholder
            self._controls, self._controls_add = controls, add
        if self._detached or self._controls is not None:
            layers.selection.events.changed.connect(self._on_selection)
            self._listening = True
        self._on_inserted(self.layer)

    def _add_controls(self) -> None:
        controls, self._controls = self._controls, None
        placeholder, self._placeholder = self._placeholder, None
        if controls is not None and controls.widgets.get(self.layer) is placeholder:
            del controls.widgets[self.layer]
            self._controls_add(SimpleNamespace(value=self.layer))
            if controls.currentWidget() is placeholder and self.layer in controls.widgets:
                controls.setCurrentWidget(controls.widgets[self.layer])
            controls.removeWidget(placeholder)
            placeholder.deleteLater()
        self._maybe_disconnect()

    def _restore(self, key: str | None = None) -> None:
        """Put one detached overlay back (all of them when ``key`` is None)."""
        keys = list(self._detached) if key is None else [key]
        for k in keys:
            overlay = self._detached.pop(k, None)
            if overlay is not None:
                self.layer._overlays[k] = overlay
        self._maybe_disconnect()

    def _show(self) -> None:
        if self._visible:
            self.layer.visible = True

    def complete(self) -> None:
        """Do what is left at once, if the layer is already in the viewer (e.g. the steps were abandoned)."""
        if self.layer is None or self.layer not in self.viewer.layers:
            return
        self._add_controls()
        self._restore()
        self._show()

    def _on_selection(self, event: Any = None) -> None:
        if self.layer in self.viewer.layers.selection:  # selected early: its controls and tools now
            self._add_controls()
            self._restore()

    def _maybe_disconnect(self) -> None:
        if self._listening and not self._detached and self._controls is None:
            self._listening = False
            try:
                self.viewer.layers.selection.events.changed.disconnect(self._on_selection)
            except Exception:  # the viewer is gone
                pass
