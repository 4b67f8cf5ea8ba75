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
2. build its vispy visual (not yet in the scene);
3. insert it without selecting it (napari adopts the visual built in step 2);
4. build its Qt layer controls (not yet shown);
5. put those controls into napari's controls panel;
6. build the polygon overlay's visual; 7. put the polygon overlay back (napari adopts it);
8. build the brush overlay's visual; 9. put the brush overlay back;
10. show it (unless it was asked for hidden): its first draw is a turn of its own.

A step that only builds something changes nothing on screen, so no repaint follows
it; a step that changes the window (insert, controls, overlays) is followed by one,
which under software OpenGL costs tens of milliseconds. Keeping the building and the
showing in different turns keeps each turn short. To hand napari an object built in
an earlier turn, its factory (``create_vispy_layer``, ``create_qt_layer_controls``,
``create_vispy_overlay``, looked up in the napari module that calls it) is swapped
for the length of one call by one that returns the prebuilt object for this layer
and calls the original for anything else.

Its controls and painting tools are in place once step 9 has run. If it is
selected before that (the user clicks it in the layer list within those few
turns), they are put in at once; :meth:`StagedLabels.complete` does all that is
left (the widget calls it when it closes midway). These tricks rely on napari internals (``Layer._overlays``,
``LayerList._activate_on_insert``, the viewer window's layer-controls container, the
factories above).
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


#: where napari looks up the factory of each view it builds for a layer: (module, name)
_FACTORIES = {
    "visual": ("napari._qt.qt_viewer", "create_vispy_layer"),
    "controls": ("napari._qt.layer_controls.qt_layer_controls_container", "create_qt_layer_controls"),
    "overlay": ("napari._vispy.canvas", "create_vispy_overlay"),
}


def _factory(kind: str) -> tuple[Any, Any]:
    """``(module, factory)``: napari's factory of ``kind`` as its caller looks it up, or ``(None, None)``."""
    import importlib

    module_name, attr = _FACTORIES[kind]
    try:
        module = importlib.import_module(module_name)
    except Exception:  # another napari: napari builds the view itself
        return None, None
    made = getattr(module, attr, None)
    return (module, made) if callable(made) else (None, None)


def _build_with(kind: str, *args: Any, **kwargs: Any) -> Any:
    """Call napari's factory of ``kind``; None where it is missing or fails (napari then builds it later)."""
    _, factory = _factory(kind)
    if factory is None:
        return None
    try:
        return factory(*args, **kwargs)
    except Exception:
        return None


@contextmanager
def _adopting(kind: str, target: Any, made: Any, adopt: Callable[[Any, dict], None] | None = None) -> Iterator[SimpleNamespace]:
    """While active, napari's factory of ``kind`` returns ``made`` when it is called for ``target``.

    ``target`` is the first argument (a layer) or the ``overlay`` keyword; every other
    call goes to napari's factory. ``adopt(made, kwargs)`` runs when ``made`` is handed
    over. Yields a namespace whose ``used`` says whether it was.
    """
    state = SimpleNamespace(used=False)
    module, original = _factory(kind) if made is not None else (None, None)
    if module is None:
        yield state
        return
    attr = _FACTORIES[kind][1]

    def factory(*args: Any, **kwargs: Any) -> Any:
        obj = args[0] if args else kwargs.get("overlay")
        if obj is target and not state.used:
            state.used = True
            if adopt is not None:
                adopt(made, kwargs)
            return made
        return original(*args, **kwargs)

    setattr(module, attr, factory)
    try:
        yield state
    finally:
        setattr(module, attr, original)


def _reparent(visual: Any, kwargs: dict) -> None:
    """What napari's overlay factory does with ``parent``, for a visual built without one."""
    if kwargs.get("parent") is not None:
        visual.node.parent = kwargs["parent"]


def _close(view: Any) -> None:
    """Dispose of a prebuilt view napari did not take (disconnects it from the layer's events)."""
    try:
        view.close()
        if hasattr(view, "deleteLater"):
            view.deleteLater()
    except Exception:  # already gone with its viewer
        pass


def _unwrapped(obj: Any) -> Any:
    """The object behind napari's plugin proxy (the views are built on napari's own objects)."""
    return getattr(obj, "__wrapped__", obj)


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
        # views built one turn before napari puts them in (None: napari builds them when it does)
        self._visual: Any = None
        self._controls_widget: Any = None
        self._overlay_visuals: dict[str, Any] = {}

    def steps(self) -> list[Callable[[], None]]:
        """The steps in order; run each in its own event-loop turn."""
        overlays = []
        for key in DEFERRED_OVERLAYS:
            overlays += [lambda key=key: self._build_overlay(key), lambda key=key: self._restore(key)]
        return [
            self._build, self._build_visual, self._insert, self._build_controls, self._add_controls,
            *overlays, self._show,
        ]

    def _canvas(self) -> Any:
        """napari's vispy canvas of the viewer's window, or None."""
        qt_viewer = _unwrapped(_private(getattr(self.viewer, "window", None), "_qt_viewer"))
        return getattr(qt_viewer, "canvas", None)

    def _in_viewer(self) -> bool:
        return self.layer is not None and self.layer in self.viewer.layers

    def _build(self) -> None:
        from napari.layers import Labels

        self.layer = Labels(self._data, visible=False, **self._kwargs)
        overlays = _private(self.layer, "_overlays")
        if overlays is not None and hasattr(overlays, "pop"):
            for key in DEFERRED_OVERLAYS:
                if key in overlays:
                    self._detached[key] = overlays.pop(key)

    def _build_visual(self) -> None:
        canvas = self._canvas()
        font_info = getattr(canvas, "font_info", None)
        if self._visual is None and not self._in_viewer() and callable(font_info):
            self._visual = _build_with("visual", self.layer, font_info=font_info())

    def _insert(self) -> None:
        layers = self.viewer.layers
        controls, add = _controls_adder(self.viewer)
        visual, self._visual = self._visual, None
        with ExitStack() as stack:
            stack.enter_context(_inserted_without_selecting(layers))
            if controls is not None:  # its controls are built in the next steps
                stack.enter_context(layers.events.inserted.blocker(add))
            adopted = stack.enter_context(_adopting("visual", self.layer, visual))
            layers.append(self.layer)
        if visual is not None and not adopted.used:
            _close(visual)
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

    def _build_controls(self) -> None:
        if self._controls is not None and self._controls_widget is None and self._in_viewer():
            widget = _build_with("controls", self.layer)
            if widget is not None:
                # as a hidden child of the panel, so that it gets napari's style now, not when shown
                try:
                    widget.setParent(_unwrapped(self._controls))
                    widget.hide()
                    widget.ensurePolished()
                except Exception:  # another Qt layout: napari styles it when it is shown
                    pass
            self._controls_widget = widget

    def _add_controls(self) -> None:
        controls, self._controls = self._controls, None
        placeholder, self._placeholder = self._placeholder, None
        widget, self._controls_widget = self._controls_widget, None
        adopted = SimpleNamespace(used=False)
        if controls is not None and controls.widgets.get(self.layer) is placeholder:
            del controls.widgets[self.layer]
            with _adopting("controls", self.layer, widget) as adopted:
                self._controls_add(SimpleNamespace(value=self.layer))
            if controls.currentWidget() is placeholder and self.layer in controls.widgets:
                controls.setCurrentWidget(controls.widgets[self.layer])
            controls.removeWidget(placeholder)
            placeholder.deleteLater()
        if widget is not None and not adopted.used:
            _close(widget)
        self._maybe_disconnect()

    def _build_overlay(self, key: str) -> None:
        """Build the visual of detached overlay ``key`` (napari adopts it when the overlay is put back)."""
        overlay = self._detached.get(key)
        canvas = self._canvas()
        if overlay is None or key in self._overlay_visuals or canvas is None or not self._in_viewer():
            return
        visual = _build_with(
            "overlay", overlay=overlay, font_info=_private(canvas, "_font_info"),
            viewer=getattr(canvas, "viewer", None), parent=None, layer=self.layer,
        )
        if visual is not None:
            self._overlay_visuals[key] = visual

    def _restore(self, key: str | None = None) -> None:
        """Put one detached overlay back (all of them when ``key`` is None)."""
        keys = list(self._detached) if key is None else [key]
        for k in keys:
            overlay = self._detached.pop(k, None)
            visual = self._overlay_visuals.pop(k, None)
            adopted = SimpleNamespace(used=False)
            if overlay is not None:
                with _adopting("overlay", overlay, visual, _reparent) as adopted:
                    self.layer._overlays[k] = overlay
            if visual is not None and not adopted.used:
                _close(visual)
        self._maybe_disconnect()

    def _show(self) -> None:
        if self._visible:
            self.layer.visible = True

    def complete(self) -> None:
        """Do what is left at once, if the layer is already in the viewer (e.g. the steps were abandoned)."""
        if not self._in_viewer():
            self._discard_prebuilt()
            return
        self._add_controls()
        self._restore()
        self._show()

    def _discard_prebuilt(self) -> None:
        """Dispose of views built for a layer that never got (or no longer is) in the viewer."""
        views = [self._visual, self._controls_widget, *self._overlay_visuals.values()]
        self._visual = self._controls_widget = None
        self._overlay_visuals = {}
        for view in views:
            if view is not None:
                _close(view)

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
