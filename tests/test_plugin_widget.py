"""The CUTS dock widget driven end to end in a real napari viewer (Xvfb via pytest-xvfb)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_cuts._widget import (  # noqa: E402
    KEY_COARSER,
    KEY_FINER,
    MASK_NAME,
    OWN_LAYERS,
    PERSISTENT_NAME,
    SEGMENTS_NAME,
    CutsWidget,
)
from napari_cuts._staged_layers import DEFERRED_OVERLAYS  # noqa: E402

TIMEOUT = 120_000  # ms; 2 CPU cores are slow


def make_widget(make_napari_viewer, data, **kwargs):
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="img", **kwargs)
    widget = CutsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CUTS")
    return viewer, layer, widget


def wait_training(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.training, timeout=TIMEOUT)


def wait_segmenting(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.segmenting, timeout=TIMEOUT)


def press(layer, position, modifiers=(), drag=False):
    """Drive the layer's mouse-drag callbacks like napari does: press, (move), release."""
    event = SimpleNamespace(type="mouse_press", position=tuple(position), pos=np.array([100.0, 100.0]),
                            modifiers=set(modifiers), button=1)
    gens = []
    for cb in list(layer.mouse_drag_callbacks):
        gen = cb(layer, event)
        if gen is not None:
            try:
                next(gen)
                gens.append(gen)
            except StopIteration:
                pass
    if drag:
        event.type = "mouse_move"
        event.pos = np.array([140.0, 130.0])
        for gen in gens:
            next(gen)
    event.type = "mouse_release"
    for gen in gens:
        with pytest.raises(StopIteration):
            next(gen)


def key(viewer, qtbot, qt_key, modifier=None):
    from qtpy.QtCore import Qt

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, qt_key, modifier or Qt.KeyboardModifier.NoModifier)


def test_widget_lists_images_and_refreshes(make_napari_viewer, rgb_image):
    viewer, layer, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["img"]
    assert "64x64 px, RGB" in widget.image_info.text()
    assert "embeddings ~2.0 MiB" in widget.memory_label.text()
    viewer.add_image(np.zeros((3, 40, 40)), name="stack")
    viewer.add_labels(np.zeros((40, 40), np.uint8), name="not an image")
    names = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert names == ["img", "stack"]
    viewer.layers["stack"].name = "renamed"
    names = [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())]
    assert "renamed" in names
    del viewer.layers["img"]
    assert widget.image_combo.count() == 1
    # large images default to a reduced working resolution, with the memory estimate shown
    viewer.add_image(np.zeros((2048, 2048), np.uint8), name="big")
    widget.set_image_layer("big")
    assert widget.max_side == 512
    assert "512x512 px (from 2048x2048)" in widget.memory_label.text()
    assert "128.0 MiB" in widget.memory_label.text()
    # the user's working resolution stays when a non-image layer comes or goes (e.g. CUTS's own layers)
    widget.resolution_combo.setCurrentIndex(1)
    chosen = widget.max_side
    viewer.add_labels(np.zeros((40, 40), np.uint8), name="another label layer")
    del viewer.layers["not an image"]
    assert widget.max_side == chosen and widget.resolution_combo.currentIndex() == 1
    assert widget.image_layer is viewer.layers["big"]


def test_train_segment_slider_click_undo_export(make_napari_viewer, qtbot, rgb_image, tmp_path, monkeypatch, notes):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMessageBox

    viewer, image, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)

    # --- train briefly in the widget (the Train button turns into Cancel while it runs)
    widget.steps_spin.setValue(3)
    widget.seed_spin.setValue(1)
    widget.device_combo.setCurrentText("cpu")
    worker = widget.start_training()
    assert worker is not None and widget.train_button.text() == "Cancel training"
    wait_training(qtbot, widget)
    assert widget.train_button.text() == "Train on image"
    assert widget.model is not None and widget.model.in_channels == 3
    assert widget.model_source.startswith("trained here")
    assert widget.last_train_progress.step == 3 and widget.last_train_progress.device == "cpu"
    assert "cpu" in widget.train_status.text() and widget.train_progress.value() == 100

    # --- segment
    widget.start_segmentation()
    assert widget.segment_button.text() == "Cancel"
    wait_segmenting(qtbot, widget)
    assert not [n for n in notes if n[0] == "error"], notes
    for name in (SEGMENTS_NAME, PERSISTENT_NAME, MASK_NAME):
        assert name in viewer.layers
    seg_layer, mask_layer = viewer.layers[SEGMENTS_NAME], viewer.layers[MASK_NAME]
    hier = widget.segmentation.hierarchies[0]
    assert seg_layer.data.shape == (64, 64) and mask_layer.data.dtype == np.uint8
    assert viewer.layers[PERSISTENT_NAME].data.max() >= 1
    assert f"{hier.n_segments[widget.level]} segments" in widget.level_label.text()

    # --- slider: every level shows that level's label map, instantly
    assert widget.level_slider.maximum() == hier.n_levels - 1
    times = []
    for lv in range(hier.n_levels):
        widget.last_level_change_ms = None
        widget.level_slider.setValue(lv)
        if widget.last_level_change_ms is not None:
            times.append(widget.last_level_change_ms)
        np.testing.assert_array_equal(seg_layer.data, hier.label_map(lv))
        assert widget.level_label.text().startswith(f"Level {lv + 1}/{hier.n_levels}: {hier.n_segments[lv]} segments")
    assert times and max(times) < 100  # generous under a software renderer; see benchmarks for the 16 ms check

    # --- keyboard: ',' finer, '.' coarser
    # (the hierarchy of a 3-step encoder can be shallow; start one below the coarsest level)
    assert hier.n_levels >= 2, hier.n_levels
    start = hier.n_levels - 2
    widget.set_level(start)
    key(viewer, qtbot, Qt.Key.Key_Period)
    assert widget.level == start + 1 and widget.level_slider.value() == start + 1
    key(viewer, qtbot, Qt.Key.Key_Comma)
    assert widget.level == start
    assert KEY_FINER == "," and KEY_COARSER == "."

    # --- click on the bright blob: the mask becomes that segment at the current level
    level = min(1, hier.n_levels - 1)
    widget.set_level(level)
    assert mask_layer.mode == "pan_zoom"
    press(mask_layer, (22, 22))
    expected = hier.mask_at(level, (22, 22))
    np.testing.assert_array_equal(widget.editor.mask, expected.astype(np.uint8))
    assert mask_layer.data is widget.editor.mask
    assert f"Mask: {int(expected.sum())} px" in widget.area_label.text()

    # a drag (pan) is not a click
    before = widget.editor.mask.copy()
    press(image, (50, 50), drag=True)
    np.testing.assert_array_equal(widget.editor.mask, before)

    # shift+click adds another segment (through the image layer's callback too)
    other = (45, 42)
    if expected[other]:
        other = (5, 60)
    press(image, other, modifiers={"Shift"})
    added = expected | hier.mask_at(level, other)
    np.testing.assert_array_equal(widget.editor.mask, added.astype(np.uint8))

    # the mask keeps its content when the slider moves
    widget.set_level(hier.n_levels - 1)
    np.testing.assert_array_equal(widget.editor.mask, added.astype(np.uint8))
    widget.set_level(level)

    # alt+click removes
    press(mask_layer, other, modifiers={"Alt"})
    np.testing.assert_array_equal(widget.editor.mask, (added & ~hier.mask_at(level, other)).astype(np.uint8))

    # undo / redo with buttons and with Ctrl+Z / Ctrl+Shift+Z
    widget.undo_button.click()
    np.testing.assert_array_equal(widget.editor.mask, added.astype(np.uint8))
    viewer.layers.selection.active = mask_layer
    key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(widget.editor.mask, expected.astype(np.uint8))
    key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    np.testing.assert_array_equal(widget.editor.mask, added.astype(np.uint8))
    viewer.layers.selection.active = image  # viewer-level binding when an image is active
    key(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    np.testing.assert_array_equal(widget.editor.mask, expected.astype(np.uint8))
    widget.redo_button.click()
    final = added.astype(np.uint8)
    np.testing.assert_array_equal(widget.editor.mask, final)

    # --- export: PNG, then never overwrite without asking
    from PIL import Image as PILImage

    png = tmp_path / "mask.png"
    assert widget.export_mask(str(png)) == str(png)
    np.testing.assert_array_equal(np.asarray(PILImage.open(png)) > 0, final > 0)
    stamp = png.read_bytes()
    widget.clear_mask()
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.StandardButton.No)
    assert widget.export_mask(str(png)) is None
    assert asked and png.read_bytes() == stamp
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert widget.export_mask(str(png)) == str(png)
    assert np.asarray(PILImage.open(png)).max() == 0
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temp files left

    widget.undo()  # bring the mask back, export TIFF
    import tifffile

    tif = widget.export_mask(str(tmp_path / "mask.tif"))
    back = tifffile.imread(tif)
    assert back.shape == (64, 64) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, final)

    # --- npe2 writer behind File > Save
    saved = viewer.layers[MASK_NAME].save(str(tmp_path / "via_save.tif"), plugin="napari-cuts")
    assert saved and os.path.exists(saved[0])
    np.testing.assert_array_equal(tifffile.imread(saved[0]), final)

    # --- save and reload the trained encoder
    path = widget.save_encoder(str(tmp_path / "enc.safetensors"))
    assert path and os.path.exists(path)
    widget.model = None
    assert widget.load_encoder(path) and widget.model.in_channels == 3


def test_cancel_training_keeps_previous_encoder(make_napari_viewer, qtbot, rgb_image, rgb_model):
    viewer, image, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)
    widget.model, widget.model_source = rgb_model, "previous"
    widget.budget_time.setChecked(True)
    widget.seconds_spin.setValue(600)
    widget.start_training()
    qtbot.waitUntil(lambda: widget.last_train_progress is not None, timeout=TIMEOUT)
    assert widget.segment_button.isEnabled() is False  # no segmenting while training
    widget.train_button.click()  # the Cancel button
    wait_training(qtbot, widget)
    assert widget.model is rgb_model and widget.model_source == "previous"
    assert "cancelled" in widget.train_status.text()
    assert widget.train_button.text() == "Train on image" and widget.segment_button.isEnabled()


def test_cancel_segmentation(make_napari_viewer, qtbot, rgb_image, rgb_model):
    viewer, image, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)
    widget.model, widget.model_source = rgb_model, "test"
    widget.start_segmentation()
    widget.segment_button.click()  # Cancel, while the layers are still being put in
    wait_segmenting(qtbot, widget)
    assert widget.segment_button.text() == "Segment"
    assert "cancel" in widget.segment_status.text().lower()
    assert all(name in viewer.layers for name in OWN_LAYERS)  # the layers come as a set


def test_segment_click_puts_the_layers_in_over_several_turns(make_napari_viewer, qtbot, rgb_image, rgb_model, notes):
    """napari builds each new Labels layer on the main thread (0.2-0.3 s in one go): the click itself
    builds none, later event-loop turns build them in short steps (model, vispy visual, insert, Qt
    controls built and put in, each painting-tool overlay built and put back, first draw), and the
    worker starts once all three are complete."""
    viewer, image, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)
    widget.model, widget.model_source = rgb_model, "test"
    inserted = []  # (layer name, layer steps finished when it was inserted)
    viewer.layers.events.inserted.connect(lambda e: inserted.append((e.value.name, len(widget.layer_step_ms))))
    worker = widget.start_segmentation()
    assert worker is not None and widget.segmenting and widget.segment_button.text() == "Cancel"
    assert inserted == [] and not any(name in viewer.layers for name in OWN_LAYERS)
    present_at_start = []
    worker.started.connect(lambda: present_at_start.append([n for n in OWN_LAYERS if n in viewer.layers]))
    wait_segmenting(qtbot, widget)
    assert not [n for n in notes if n[0] == "error"], notes
    per_layer = 6 + 2 * len(DEFERRED_OVERLAYS)  # model, visual, insert, 2 for controls, 2 per overlay, show
    assert inserted == [(PERSISTENT_NAME, 2), (SEGMENTS_NAME, 2 + per_layer), (MASK_NAME, 2 + 2 * per_layer)]
    assert present_at_start == [list(OWN_LAYERS)]
    assert len(widget.layer_step_ms) == 3 * per_layer + 1
    assert viewer.layers.selection.active is viewer.layers[MASK_NAME]
    for name in OWN_LAYERS:  # the painting tools are back and work
        layer = viewer.layers[name]
        assert set(DEFERRED_OVERLAYS) <= set(layer._overlays)
        layer.mode = "polygon"
        layer.mode = "paint"
        layer.mode = "pan_zoom"
    assert viewer.layers[PERSISTENT_NAME].visible is False and viewer.layers[SEGMENTS_NAME].data.max() >= 1

    # segmenting again reuses the three layers (no new layer, same objects, new content)
    before = {name: viewer.layers[name] for name in OWN_LAYERS}
    viewer.layers[SEGMENTS_NAME].data[...] = 0
    widget.start_segmentation()
    wait_segmenting(qtbot, widget)
    assert len(inserted) == 3 and all(viewer.layers[name] is layer for name, layer in before.items())
    assert viewer.layers[SEGMENTS_NAME].data.max() >= 1 and widget.segmentation.complete


def test_shutdown_while_layers_are_put_in(make_napari_viewer, qtbot, rgb_image, rgb_model):
    viewer, image, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)
    widget.model, widget.model_source = rgb_model, "test"
    worker = widget.start_segmentation()
    started = []
    worker.started.connect(lambda: started.append(True))
    widget.shutdown()  # the widget or viewer closes before the next event-loop turn
    assert not widget.segmenting
    qtbot.wait(300)
    assert started == [] and not any(name in viewer.layers for name in OWN_LAYERS)


def test_shutdown_midway_leaves_the_layers_already_in_complete(make_napari_viewer, qtbot, rgb_image, rgb_model):
    """The widget closes after the first layer went in but before its controls and tools came: that
    layer is completed (painting tools, controls, shown as asked) and no further layer comes."""
    from napari._qt.layer_controls.qt_labels_controls import QtLabelsControls

    viewer, image, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)
    widget.model, widget.model_source = rgb_model, "test"
    widget.start_segmentation()
    widget._layer_timer.stop()  # drive the steps by hand: build and insert the first layer only
    for _ in range(3):  # model, vispy visual, insert
        widget._next_layer_step()
        widget._layer_timer.stop()
    assert PERSISTENT_NAME in viewer.layers and SEGMENTS_NAME not in viewer.layers
    layer = viewer.layers[PERSISTENT_NAME]
    assert not set(DEFERRED_OVERLAYS) & set(layer._overlays)
    widget.shutdown()
    qtbot.wait(100)
    assert set(DEFERRED_OVERLAYS) <= set(layer._overlays)
    assert isinstance(viewer.window._qt_viewer.controls.widgets[layer], QtLabelsControls)
    assert layer.visible is False  # the persistent layer is asked for hidden
    assert SEGMENTS_NAME not in viewer.layers and MASK_NAME not in viewer.layers and not widget.segmenting


def test_a_layer_removed_before_its_reset_step_is_made_again(make_napari_viewer, qtbot, rgb_image, rgb_model, notes):
    viewer, image, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)
    widget.model, widget.model_source = rgb_model, "test"
    widget.start_segmentation()
    wait_segmenting(qtbot, widget)
    widget.start_segmentation()  # plans "reset" steps for the three existing layers
    del viewer.layers[SEGMENTS_NAME]  # the user deletes one before its step runs
    wait_segmenting(qtbot, widget)
    assert not [n for n in notes if n[0] == "error"], notes
    assert SEGMENTS_NAME in viewer.layers and viewer.layers[SEGMENTS_NAME].data.max() >= 1


def test_segmenting_another_image_resizes_the_layers_to_it(make_napari_viewer, qtbot, rgb_image, rgb_model, notes):
    """The three layers are reused for the next image: its size, pixel scale and offset, its labels."""
    viewer, image, widget = make_widget(make_napari_viewer, rgb_image, rgb=True)
    widget.model, widget.model_source = rgb_model, "test"
    widget.start_segmentation()
    wait_segmenting(qtbot, widget)
    before = {name: viewer.layers[name] for name in OWN_LAYERS}
    other = viewer.add_image(rgb_image[:40, :56], name="other", rgb=True, scale=(0.5, 0.25), translate=(3, 4))
    assert widget.set_image_layer(other)
    widget.start_segmentation()
    wait_segmenting(qtbot, widget)
    assert not [n for n in notes if n[0] == "error"], notes
    for name, layer in before.items():
        assert viewer.layers[name] is layer and layer.data.shape == (40, 56)
        np.testing.assert_allclose(layer.scale, [0.5, 0.25])
        np.testing.assert_allclose(layer.translate, [3, 4])
    assert viewer.layers[SEGMENTS_NAME].data.max() >= 1
    assert viewer.layers[MASK_NAME].data.max() == 0  # a new image starts with an empty mask


def test_stack_current_slice_first_and_stack_export(make_napari_viewer, qtbot, grey_stack, grey_model, tmp_path, notes):
    viewer, image, widget = make_widget(make_napari_viewer, grey_stack)
    widget.model, widget.model_source = grey_model, "test"
    viewer.dims.set_current_step(0, 2)
    assert widget._current_z() == 2
    order = []
    widget.start_segmentation()
    widget._segment_worker.yielded.connect(lambda item: order.append(getattr(item, "z", None)))
    wait_segmenting(qtbot, widget)
    assert [z for z in order if z is not None] == [2, 1, 0]
    seg = viewer.layers[SEGMENTS_NAME]
    assert seg.data.shape == (3, 48, 48)
    assert widget.segmentation.complete
    hier2 = widget.segmentation.hierarchies[2]
    np.testing.assert_array_equal(seg.data[2], hier2.label_map(widget.segmentation.level_for(2, widget.level)))

    # click on slice 2 only changes slice 2 (world coordinates include z)
    widget.set_level(0)
    press(viewer.layers[MASK_NAME], (2, 16, 16))
    assert widget.editor.area(2) > 0 and widget.editor.area(0) == 0 == widget.editor.area(1)
    assert "in the stack" in widget.area_label.text()
    assert "mm³" not in widget.area_label.text()  # a bare stack of slices has no physical volume

    # moving to another slice shows its own labels at the current level
    viewer.dims.set_current_step(0, 0)
    np.testing.assert_array_equal(seg.data[0], widget.segmentation.label_map(0, widget.level))

    import tifffile

    out = widget.export_mask(str(tmp_path / "stack.tif"))
    back = tifffile.imread(out)
    assert back.shape == (3, 48, 48) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, widget.editor.mask)
    assert widget.export_mask(str(tmp_path / "stack.png")) is None
    assert any(k == "error" and "PNG" in m for k, m in notes)


def test_nifti_image_area_in_mm2_and_nifti_export(make_napari_viewer, qtbot, grey_model, tmp_path, make_image):
    synthetic_image = make_image
    import nibabel as nib

    vol = synthetic_image(48, rgb=False).T[:, ::-1, None].astype(np.int16)  # (i, j, 1)
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    affine[:3, 3] = [-10, 4, 7]
    src = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), src)

    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(src), plugin="napari-cuts")
    assert layer.data.shape == (48, 48)
    np.testing.assert_allclose(layer.scale, [0.5, 0.5])
    np.testing.assert_array_equal(layer.data, synthetic_image(48, rgb=False))
    widget = CutsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert "pixel 0.5x0.5 mm" in widget.image_info.text()
    widget.model, widget.model_source = grey_model, "test"
    widget.start_segmentation()
    wait_segmenting(qtbot, widget)
    # world coordinates are in mm: pixel (16, 16) is at (8, 8) mm
    widget.click_world((8.0, 8.0))
    px = widget.editor.area()
    assert px > 0
    assert f"Mask: {px} px = {px * 0.25:.2f} mm²" in widget.area_label.text()
    out = widget.export_mask(str(tmp_path / "mask.nii.gz"))
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert img.shape == (48, 48, 1) and img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj)[:, ::-1, 0].T, widget.editor.mask)


def test_bad_inputs_notify_instead_of_raising(make_napari_viewer, qtbot, grey_model, tmp_path, notes, make_image):
    synthetic_image = make_image
    import cuts

    viewer = make_napari_viewer()
    widget = CutsWidget(viewer)
    viewer.window.add_dock_widget(widget)

    widget.start_segmentation()  # no image at all
    assert notes[-1][0] == "warning"

    labels = viewer.add_labels(np.zeros((32, 32), np.uint8), name="labels")
    assert widget.set_image_layer(labels) is False
    assert notes[-1][0] == "error" and "Labels layer" in notes[-1][1]

    viewer.add_image(np.zeros((1, 1)), name="tiny")
    widget.set_image_layer("tiny")
    assert widget.start_segmentation() is None and widget.start_training() is None
    assert notes[-1][0] == "error" and "tiny" in notes[-1][1]

    viewer.add_image(np.zeros((0, 32, 32)), name="empty", contrast_limits=(0, 1))
    widget.set_image_layer("empty")
    assert widget.start_segmentation() is None
    assert notes[-1][0] == "error"

    nan = np.full((32, 32), np.nan)
    viewer.add_image(nan, name="nan")
    widget.set_image_layer("nan")
    assert widget.start_segmentation() is None and "NaN" in notes[-1][1]

    # a grey encoder on an RGB image: a clear error, no worker
    enc = tmp_path / "grey.safetensors"
    cuts.save_model(grey_model, enc)
    viewer.add_image(synthetic_image(32, rgb=True), name="rgb", rgb=True)
    widget.set_image_layer("rgb")
    assert widget.load_encoder(str(enc))
    assert notes[-1][0] == "warning" and "1-channel" in notes[-1][1]
    assert widget.start_segmentation() is None
    assert notes[-1][0] == "error" and "Train on this image" in notes[-1][1]

    # a file that is not a checkpoint
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    before = widget.model
    assert widget.load_encoder(str(junk)) is False
    assert notes[-1][0] == "error" and widget.model is before

    # clicking and exporting before segmenting
    assert widget.click(3, 3) is False
    assert widget.export_mask(str(tmp_path / "m.png")) is None
    assert not widget.training and not widget.segmenting


def test_sample_data_and_default_encoder_launch(make_napari_viewer, qtbot):
    import cuts
    from cuts.checkpoint import default_model_path

    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-cuts", "fundus_ga")
    assert layers[0].data.shape == (128, 128, 3) and layers[0].rgb
    viewer.open_sample("napari-cuts", "brain_mri")
    np.testing.assert_allclose(viewer.layers["brain MRI slice"].scale, [2.0, 2.0])
    viewer.layers.clear()
    if not default_model_path(3).is_file():
        pytest.skip("the bundled default encoder is not in src/cuts/data yet")

    from napari_cuts.launch import setup_viewer

    t0 = time.perf_counter()
    widget = setup_viewer(viewer, (), segment=True)
    assert widget.model_source == "bundled default" and widget.model.in_channels == 3
    assert widget.image_layer.name == "fundus GA"
    wait_segmenting(qtbot, widget)
    assert SEGMENTS_NAME in viewer.layers and widget.segmentation.complete
    assert time.perf_counter() - t0 < 120
    widget.step_level(+1)
    assert cuts is not None


def test_panel_is_not_cut_off_when_its_scroll_bar_appears(make_napari_viewer, qtbot):
    """On a short screen the panel scrolls vertically; its right edge must stay visible."""
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer()
    widget = CutsWidget(viewer)
    qtbot.addWidget(widget)
    widget.resize(widget.minimumSizeHint().width(), 250)
    widget.show()
    scroll = widget.findChild(QScrollArea)
    qtbot.waitUntil(lambda: scroll.verticalScrollBar().isVisible(), timeout=5_000)
    inner = scroll.widget()
    assert inner.width() <= scroll.viewport().width()


def test_nifti_stack_shows_mask_volume_in_mm3(make_napari_viewer, qtbot, grey_stack, grey_model):
    viewer, image, widget = make_widget(
        make_napari_viewer, grey_stack, scale=(3.0, 0.5, 0.5), metadata={"nifti": {"unit": "mm"}}
    )
    widget.model, widget.model_source = grey_model, "test"
    viewer.dims.set_current_step(0, 2)
    widget.start_segmentation()
    wait_segmenting(qtbot, widget)
    widget.set_level(0)
    widget.click_world((6.0, 8.0, 8.0))  # world mm: slice 2, pixel (16, 16)
    px, total = widget.editor.area(2), widget.editor.area()
    assert px > 0 and total == px
    text = widget.area_label.text()
    assert f"Mask: {px} px = {px * 0.25:.2f} mm² on this slice" in text
    assert f"{total} px = {total * 0.75:.1f} mm³ in the stack" in text
