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
    assert len(steps) == 2 + len(DEFERRED_OVERLAYS)
    steps[0]()  # build: the model exists, not yet in the viewer, its painting-tool overlays set aside
    assert "staged" not in viewer.layers and got == []
    assert not set(DEFERRED_OVERLAYS) & set(staged.layer._overlays)
    steps[1]()  # insert, without taking the selection from the user's layer
    assert viewer.layers["staged"] is staged.layer and got == [staged.layer]
    assert viewer.layers.selection.active is image
    assert staged.layer.opacity == 0.3 and staged.layer.data.shape == (32, 40)
    for step in steps[2:]:
        step()
    assert set(DEFERRED_OVERLAYS) <= set(staged.layer._overlays)
    layer = staged.layer
    viewer.layers.selection.active = layer
    layer.mode = "paint"  # both tools need their overlay
    layer.mode = "polygon"
    layer.mode = "pan_zoom"


def test_selecting_the_layer_early_restores_the_tools_at_once(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 40)), name="img")
    staged, _ = _staged(viewer)
    steps = staged.steps()
    steps[0]()
    steps[1]()
    assert not set(DEFERRED_OVERLAYS) & set(staged.layer._overlays)
    viewer.layers.selection.active = staged.layer  # the user clicks it in the layer list
    assert set(DEFERRED_OVERLAYS) <= set(staged.layer._overlays)
    staged.layer.mode = "paint"
    for step in steps[2:]:  # the remaining steps are harmless
        step()
    assert set(DEFERRED_OVERLAYS) <= set(staged.layer._overlays)


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
