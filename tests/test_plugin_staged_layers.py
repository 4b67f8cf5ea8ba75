"""StagedLabels: a new Labels layer put into the viewer in short steps."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_cuts._staged_layers import DEFERRED_OVERLAYS, StagedLabels  # noqa: E402


def _staged(viewer, name="staged"):
    got = []
    staged = StagedLabels(viewer, np.zeros((32, 40), np.uint8), on_inserted=got.append, name=name, opacity=0.3)
    return staged, got


def test_steps_build_insert_then_restore_the_painting_tools(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((32, 40)), name="img")
    staged, got = _staged(viewer)
    steps = staged.steps()
    assert len(steps) == 6 + 2 * len(DEFERRED_OVERLAYS)
    qt_viewer = viewer.window._qt_viewer
    controls, canvas = qt_viewer.controls, qt_viewer.canvas
    steps[0]()  # build: the model exists, not yet in the viewer, its painting-tool overlays set aside
    assert "staged" not in viewer.layers and got == []
    assert not set(DEFERRED_OVERLAYS) & set(staged.layer._overlays)
    steps[1]()  # its vispy visual, not yet in the scene
    prebuilt_visual = staged._visual
    assert prebuilt_visual is not None and staged.layer not in canvas.layer_to_visual
    steps[2]()  # insert, without taking the selection from the user's layer; napari adopts the visual
    assert viewer.layers["staged"] is staged.layer and got == [staged.layer]
    assert canvas.layer_to_visual[staged.layer] is prebuilt_visual
    assert viewer.layers.selection.active is image
    assert staged.layer.opacity == 0.3 and staged.layer.data.shape == (32, 40)
    assert not staged.layer.visible  # shown in the last step
    from napari._qt.layer_controls.qt_labels_controls import QtLabelsControls

    assert not isinstance(controls.widgets[staged.layer], QtLabelsControls)  # a placeholder until...
    steps[3]()  # ...its Qt controls are built...
    prebuilt_controls = staged._controls_widget
    assert isinstance(prebuilt_controls, QtLabelsControls)
    assert controls.widgets[staged.layer] is not prebuilt_controls
    steps[4]()  # ...and put in
    assert controls.widgets[staged.layer] is prebuilt_controls
    for i, key in enumerate(DEFERRED_OVERLAYS):
        steps[5 + 2 * i]()  # the overlay's visual...
        prebuilt_overlay = staged._overlay_visuals[key]
        assert key not in staged.layer._overlays
        steps[6 + 2 * i]()  # ...adopted by napari when the overlay is put back, under the layer's node
        overlay = staged.layer._overlays[key]
        assert canvas._layer_overlay_to_visual[staged.layer][overlay] is prebuilt_overlay
        assert prebuilt_overlay.node.parent is prebuilt_visual.node
    steps[-1]()
    assert set(DEFERRED_OVERLAYS) <= set(staged.layer._overlays)
    assert staged.layer.visible
    layer = staged.layer
    viewer.layers.selection.active = layer
    layer.mode = "paint"  # both tools need their overlay
    layer.mode = "polygon"
    layer.mode = "pan_zoom"
    # napari's factories are its own again: a plain layer gets fresh views
    from napari._qt import qt_viewer as qt_viewer_module
    from napari._vispy.utils.visual import create_vispy_layer

    assert qt_viewer_module.create_vispy_layer is create_vispy_layer
    other = viewer.add_labels(np.zeros((32, 40), np.uint8), name="plain")
    assert canvas.layer_to_visual[other] is not prebuilt_visual


def test_a_layer_never_inserted_leaves_nothing_connected(make_napari_viewer):
    """Steps abandoned after its views were built: complete() disposes of them; nothing goes in."""
    viewer = make_napari_viewer()
    staged, got = _staged(viewer)
    steps = staged.steps()
    steps[0]()
    listeners = len(staged.layer.events.opacity.callbacks)
    steps[1]()  # its visual listens to the layer's events...
    assert staged._visual is not None and len(staged.layer.events.opacity.callbacks) > listeners
    staged.complete()  # ...until it is disposed of
    assert got == [] and "staged" not in viewer.layers and staged._visual is None
    assert len(staged.layer.events.opacity.callbacks) == listeners


def _inserted_not_complete(make_napari_viewer):
    """A viewer with an image and a staged layer that is built and inserted, nothing more yet."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 40)), name="img")
    staged, _ = _staged(viewer)
    steps = staged.steps()
    for step in steps[:3]:  # build, its visual, insert
        step()
    return viewer, staged, steps[3:]


def test_selecting_the_layer_early_completes_it_at_once(make_napari_viewer):
    viewer, staged, rest = _inserted_not_complete(make_napari_viewer)
    assert not set(DEFERRED_OVERLAYS) & set(staged.layer._overlays)
    from napari._qt.layer_controls.qt_labels_controls import QtLabelsControls

    controls = viewer.window._qt_viewer.controls
    viewer.layers.selection.active = staged.layer  # the user clicks it in the layer list: no error
    assert set(DEFERRED_OVERLAYS) <= set(staged.layer._overlays)
    assert isinstance(controls.widgets[staged.layer], QtLabelsControls)
    assert controls.currentWidget() is controls.widgets[staged.layer]
    staged.layer.mode = "paint"
    for step in rest:  # the remaining steps are harmless
        step()
    assert set(DEFERRED_OVERLAYS) <= set(staged.layer._overlays)


def test_a_layer_asked_for_hidden_stays_hidden(make_napari_viewer):
    viewer = make_napari_viewer()
    staged = StagedLabels(viewer, np.zeros((8, 8), np.uint8), on_inserted=lambda layer: None, name="h", visible=False)
    for step in staged.steps():
        step()
    assert viewer.layers["h"].visible is False


def test_removing_the_layer_early_is_harmless(make_napari_viewer):
    viewer, staged, rest = _inserted_not_complete(make_napari_viewer)
    viewer.layers.remove(staged.layer)  # before its controls were built: napari finds the placeholder
    for step in rest:
        step()
    assert "staged" not in viewer.layers and staged.layer not in viewer.window._qt_viewer.controls.widgets


def test_through_naparis_plugin_proxy_without_warnings(make_napari_viewer):
    """napari hands plugin widgets a proxy that warns on private access: the steps stay quiet."""
    import warnings

    from napari.utils._proxies import PublicOnlyProxy
    from napari._qt.layer_controls.qt_labels_controls import QtLabelsControls

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 40)), name="img")
    proxy = PublicOnlyProxy(viewer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        staged, _ = _staged(proxy)
        steps = staged.steps()
        for step in steps[:3]:  # build, its visual, insert
            step()
        controls = viewer.window._qt_viewer.controls
        assert not isinstance(controls.widgets[viewer.layers["staged"]], QtLabelsControls)  # deferred
        for step in steps[3:]:
            step()
    layer = viewer.layers["staged"]
    assert isinstance(controls.widgets[layer], QtLabelsControls)
    assert set(DEFERRED_OVERLAYS) <= set(layer._overlays) and layer.visible


def test_where_napari_refuses_private_access_it_inserts_the_plain_way(make_napari_viewer, monkeypatch):
    from napari.utils._proxies import PublicOnlyProxy
    from napari._qt.layer_controls.qt_labels_controls import QtLabelsControls

    def refuse(name, typ):
        raise AttributeError(f"private attribute {name} of {typ} is not available to plugins")

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 40)), name="img")
    monkeypatch.setattr(PublicOnlyProxy, "_private_attr_warning", staticmethod(refuse))
    staged, got = _staged(PublicOnlyProxy(viewer))
    for step in staged.steps():
        step()
    layer = viewer.layers["staged"]
    assert got and viewer.layers.selection.active is layer  # napari's own insert selects it
    assert isinstance(viewer.window._qt_viewer.controls.widgets[layer], QtLabelsControls)
    assert set(DEFERRED_OVERLAYS) <= set(layer._overlays) and layer.visible


def test_selection_switch_is_restored_and_optional():
    """The no-selection switch is put back even after an error, and is skipped where napari lacks it."""
    from types import SimpleNamespace

    from napari_cuts._staged_layers import _inserted_without_selecting

    layers = SimpleNamespace(_activate_on_insert=True)
    with pytest.raises(RuntimeError), _inserted_without_selecting(layers):
        assert layers._activate_on_insert is False
        raise RuntimeError("insert failed")
    assert layers._activate_on_insert is True
    bare = SimpleNamespace()
    with _inserted_without_selecting(bare):
        pass
    assert not hasattr(bare, "_activate_on_insert")


def test_where_napari_lacks_a_factory_it_builds_that_view_itself(make_napari_viewer, monkeypatch):
    """Another napari without one of the factories: nothing is prebuilt, napari builds the views as usual."""
    from napari._qt.layer_controls.qt_labels_controls import QtLabelsControls

    import napari_cuts._staged_layers as staged_layers

    monkeypatch.setitem(staged_layers._FACTORIES, "visual", ("napari._qt.qt_viewer", "no_such_factory"))
    monkeypatch.setitem(staged_layers._FACTORIES, "overlay", ("napari._no_such_module", "create_vispy_overlay"))
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 40)), name="img")
    staged, got = _staged(viewer)
    steps = staged.steps()
    steps[0]()
    steps[1]()
    assert staged._visual is None  # nothing prebuilt...
    for step in steps[2:6]:
        step()
    assert not staged._overlay_visuals  # ...for either of the two
    for step in steps[6:]:
        step()
    layer = viewer.layers["staged"]
    canvas = viewer.window._qt_viewer.canvas
    assert layer in canvas.layer_to_visual and got == [layer]
    assert isinstance(viewer.window._qt_viewer.controls.widgets[layer], QtLabelsControls)
    assert set(DEFERRED_OVERLAYS) <= set(layer._overlays) and layer.visible
    viewer.layers.selection.active = layer
    layer.mode = "paint"
    layer.mode = "polygon"


def test_the_factory_swap_is_undone_even_when_napari_fails(monkeypatch):
    """The prebuilt object goes to its own layer only, once; the original factory is back after an error."""
    import sys
    import types

    import napari_cuts._staged_layers as staged_layers

    module = types.ModuleType("fake_napari_views")
    module.make_view = lambda obj, **kw: ("fresh", obj)
    monkeypatch.setitem(sys.modules, "fake_napari_views", module)
    monkeypatch.setitem(staged_layers._FACTORIES, "visual", ("fake_napari_views", "make_view"))
    original = module.make_view
    ours, other = object(), object()
    with staged_layers._adopting("visual", ours, "prebuilt") as state:
        assert module.make_view(other) == ("fresh", other)  # another layer: napari's own
        assert module.make_view(ours) == "prebuilt" and state.used
        assert module.make_view(ours) == ("fresh", ours)  # handed over once only
    assert module.make_view is original
    with pytest.raises(RuntimeError), staged_layers._adopting("visual", ours, "prebuilt"):
        raise RuntimeError("napari failed while inserting")
    assert module.make_view is original
    with staged_layers._adopting("visual", ours, None) as state:  # nothing prebuilt: nothing swapped
        assert module.make_view is original and not state.used
