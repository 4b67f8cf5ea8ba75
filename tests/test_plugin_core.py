"""Qt-free parts of the plugin: mask editing, resampling, export/atomic writes, NIfTI I/O, samples."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from napari_cuts import _io
from napari_cuts._mask_editor import MaskEditor, mode_from_modifiers
from napari_cuts._resample import (
    NearestUpsampler,
    describe_working_resolution,
    downsample,
    embedding_bytes,
    working_shape,
)
from napari_cuts._session import (
    ProgressBox,
    SegmentSettings,
    Segmentation,
    compact_labels,
    default_level,
    full_resolution_maps,
    segment_job,
    slice_order,
)


# ----------------------------------------------------------------------------- mask editor


def test_mask_editor_replace_add_remove_undo_redo():
    ed = MaskEditor((4, 5))
    a = np.zeros((4, 5), bool)
    a[:2, :2] = True
    b = np.zeros((4, 5), bool)
    b[1:3, 1:4] = True
    assert ed.apply(a, "replace")
    assert ed.area() == 4
    assert ed.apply(b, "add")
    assert ed.area() == int((a | b).sum())
    assert ed.apply(a, "remove")
    np.testing.assert_array_equal(ed.mask, (b & ~a).astype(np.uint8))
    assert not ed.apply(a, "remove")  # nothing changes -> no history entry
    assert ed.undo() is None
    np.testing.assert_array_equal(ed.mask, (a | b).astype(np.uint8))
    ed.undo()
    ed.undo()
    assert ed.area() == 0 and not ed.can_undo
    assert ed.undo() == -1
    ed.redo()
    np.testing.assert_array_equal(ed.mask, a.astype(np.uint8))
    ed.apply(b, "replace")
    assert not ed.can_redo  # a new edit clears the redo stack
    assert ed.mask.dtype == np.uint8 and set(np.unique(ed.mask)) <= {0, 1}


def test_mask_editor_stack_slices_and_history_limit():
    ed = MaskEditor((3, 4, 4), max_history=2)
    region = np.ones((4, 4), bool)
    ed.apply(region, "replace", z=1)
    assert ed.area(1) == 16 and ed.area(0) == 0 and ed.area() == 16
    ed.apply(region, "add", z=2)
    ed.clear(z=1)
    assert ed.area() == 16
    assert ed.undo() == 1 and ed.area(1) == 16
    assert ed.undo() == 2 and ed.area(2) == 0
    assert ed.undo() == -1  # the first edit fell off the 2-entry history
    with pytest.raises(ValueError):
        ed.apply(region, "replace")  # z missing for a stack
    with pytest.raises(ValueError):
        ed.apply(np.ones((2, 2), bool), "add", z=0)


def test_modifier_modes():
    assert mode_from_modifiers(()) == "replace"
    assert mode_from_modifiers({"Shift"}) == "add"
    assert mode_from_modifiers({"Alt"}) == "remove"
    assert mode_from_modifiers(["Shift", "Alt"]) == "remove"


# ----------------------------------------------------------------------------- resampling


def test_working_resolution_and_memory():
    assert working_shape((2048, 2048), 512) == (512, 512)
    assert working_shape((1000, 500), 512) == (512, 256)
    assert working_shape((300, 200), 512) == (300, 200)
    assert working_shape((300, 200), None) == (300, 200)
    assert embedding_bytes((512, 512)) == 512 * 512 * 128 * 4
    text = describe_working_resolution((2048, 2048), 512)
    assert "512x512" in text and "from 2048x2048" in text and "128.0 MiB" in text


def test_downsample_and_nearest_upsample():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:20] = 200
    small = downsample(img, (20, 30))
    assert small.shape == (20, 30, 3) and small.dtype == np.uint8
    up = NearestUpsampler.create((40, 60), (20, 30))
    labels = np.arange(20 * 30, dtype=np.int32).reshape(20, 30)
    full = up(labels)
    assert full.shape == (40, 60)
    assert full[0, 0] == labels[0, 0] and full[39, 59] == labels[19, 29]
    # every full pixel maps to the small pixel containing its centre
    assert full[3, 5] == labels[1, 2]
    assert up.to_small(39.7, 59.2) == (19, 29)
    same = NearestUpsampler.create((5, 5), (5, 5))
    assert same.identity and same(labels[:5, :5]) is not None


class _FakeHierarchy:
    """Minimal stand-in used only for the pure bookkeeping test below."""

    def __init__(self, maps):
        self._maps = [np.asarray(m, np.int32) for m in maps]
        self.n_levels = len(maps)
        self.n_segments = np.array([m.max() for m in maps])

    def label_map(self, level):
        return self._maps[level]

    def persistent(self):
        return self._maps[0]


def test_segmentation_cache_and_regions():
    fine = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    coarse = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    seg = Segmentation((8, 8), 1, NearestUpsampler.create((8, 8), (4, 4)))
    seg.add(0, _FakeHierarchy([fine, coarse]))
    assert seg.n_levels == 2 and seg.n_segments(0, 5) == 2  # clamped to the coarsest
    lm = seg.label_map(0, 0)
    assert lm.shape == (8, 8) and lm.dtype == np.uint8
    assert seg.label_map(0, 0) is lm  # cached
    region = seg.region_at(0, 1, 7, 0)
    assert region.sum() == 32 and region[7, 7] and not region[0, 0]
    assert seg.region_at(0, 0, 8, 0) is None
    assert compact_labels(np.array([0, 300])).dtype == np.uint16


def test_maps_made_ahead_are_what_the_segmentation_serves():
    """The worker makes the full-resolution maps; the main thread then only looks them up."""
    import threading

    import cuts

    fine = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    coarse = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    hier = _FakeHierarchy([fine, coarse])
    up = NearestUpsampler.create((8, 8), (4, 4))
    maps, persistent = full_resolution_maps(hier, up)
    lazy = Segmentation((8, 8), 1, up)
    lazy.add(0, hier)
    assert len(maps) == 2 and all(np.array_equal(m, lazy.label_map(0, lv)) for lv, m in enumerate(maps))
    assert np.array_equal(persistent, lazy.persistent(0)) and persistent.dtype == np.uint8
    ahead = Segmentation((8, 8), 1, up)
    ahead.add(0, hier, label_maps=maps, persistent=persistent)
    assert ahead.label_map(0, 1) is maps[1] and ahead.persistent(0) is persistent
    assert full_resolution_maps(hier, up, levels=False)[0] == []
    stop = threading.Event()
    stop.set()
    with pytest.raises(cuts.Cancelled):
        full_resolution_maps(hier, up, cancel=stop)
    ahead.add(0, _FakeHierarchy([coarse]))  # a new hierarchy for the slice drops the old maps
    assert ahead.n_levels == 1 and ahead.label_map(0, 0).max() == 2 and ahead.persistent(0).max() == 2


def test_segment_job_prepares_the_levels_of_the_slice_in_view(rgb_model):
    """Every level of the first slice (the one in view) at full resolution; only the persistent map
    of the others."""
    import threading

    rng = np.random.default_rng(0)
    stack = [rng.random((40, 48, 3)).astype(np.float32) for _ in range(2)]
    settings = SegmentSettings(max_side=32, seed=0, rgb=True)
    results = list(segment_job(stack, [1, 0], rgb_model, settings, ProgressBox(), threading.Event()))
    first, second = results
    assert first.z == 1 and len(first.label_maps) == first.hierarchy.n_levels
    assert all(m.shape == (40, 48) for m in first.label_maps) and first.persistent.shape == (40, 48)
    assert second.label_maps is None and second.persistent.shape == (40, 48)


def test_default_level_and_slice_order():
    assert default_level([80, 40, 20, 10, 5, 2]) == 3
    assert default_level([80, 40]) == 1
    # nearest by ratio: a big merge step (34 -> 3 segments) does not make the first view almost empty
    assert default_level([103, 59, 34, 3, 2]) == 2
    assert default_level([24, 6]) == 0  # x2 and x1/2 tie: the finer level
    assert default_level([5, 3, 1]) == 0  # all coarser than the target: the finest
    assert default_level([0]) == 0 and default_level([]) == 0
    assert slice_order(5, 2) == [2, 3, 1, 4, 0]
    assert slice_order(1, 0) == [0]


# ----------------------------------------------------------------------------- export & atomic writes


def test_atomic_write_never_overwrites_silently(tmp_path):
    target = tmp_path / "m.png"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        _io.write_png(target, np.ones((20, 20), np.uint8))
    assert target.read_bytes() == b"old"

    # the plugin writes through the engine's atomic_path: a failure leaves the old file
    from cuts.atomic import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["m.png"]  # no temp files left behind
    with pytest.raises(IsADirectoryError):
        _io.write_png(tmp_path, np.ones((20, 20), np.uint8), overwrite=True)
    with pytest.raises(FileNotFoundError):
        _io.write_tiff(tmp_path / "nope" / "m.tif", np.ones((20, 20), np.uint8))
    out = _io.write_png(target, np.ones((20, 20), np.uint8), overwrite=True)
    assert out == str(target) and os.path.isabs(out)
    assert target.read_bytes() != b"old"
    assert sorted(os.listdir(tmp_path)) == ["m.png"]


def test_export_png_tiff_roundtrip(tmp_path):
    from PIL import Image
    import tifffile

    mask = np.zeros((30, 40), np.uint8)
    mask[5:10, 6:20] = 1
    png = _io.export_mask(tmp_path / "m.png", mask)
    back = np.asarray(Image.open(png))
    assert back.dtype == np.uint8 and back.shape == (30, 40)
    np.testing.assert_array_equal(back > 0, mask > 0)
    assert set(np.unique(back)) == {0, 255}

    stack = np.zeros((3, 30, 40), np.uint8)
    stack[1, 2:4, 2:4] = 1
    tif = _io.export_mask(tmp_path / "s.tif", stack)
    back = tifffile.imread(tif)
    assert back.shape == (3, 30, 40) and back.dtype == np.uint8
    np.testing.assert_array_equal(back, stack)
    with pytest.raises(_io.ExportError):
        _io.export_mask(tmp_path / "s.png", stack)
    with pytest.raises(_io.ExportError):
        _io.export_mask(tmp_path / "s.jpg", mask)


def _make_nifti(path, shape=(20, 16, 5), zooms=(0.8, 0.9, 2.5)):
    import nibabel as nib

    rng = np.random.default_rng(0)
    vol = rng.integers(0, 1000, shape).astype(np.int16)
    affine = np.array(
        [[-zooms[0], 0, 0, 10.0], [0, zooms[1], 0, -20.0], [0, 0, zooms[2], 5.0], [0, 0, 0, 1]]
    )
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    nib.save(img, path)
    return vol, affine


def test_nifti_reader_layout_scale_affine(tmp_path):
    path = tmp_path / "vol.nii.gz"
    vol, affine = _make_nifti(path)
    reader = _io.napari_get_reader(str(path))
    assert reader is not None
    assert _io.napari_get_reader(str(tmp_path / "x.png")) is None
    ((data, kwargs, kind),) = reader(str(path))
    assert kind == "image" and data.shape == (5, 16, 20)  # (Z, H, W)
    np.testing.assert_allclose(kwargs["scale"], [2.5, 0.9, 0.8], rtol=1e-6)
    np.testing.assert_allclose(kwargs["metadata"]["nifti"]["affine"], affine)
    # voxel (i, j, k) sits at layer (k, H-1-j, i)
    np.testing.assert_array_equal(data[3, 16 - 1 - 4, 7], vol[7, 4, 3])


def test_nifti_mask_roundtrip_keeps_affine_and_spacing(tmp_path):
    import nibabel as nib

    src = tmp_path / "vol.nii"
    vol, affine = _make_nifti(src)
    data, kwargs = _io.read_nifti(src)
    mask = (data > 500).astype(np.uint8)
    out = _io.write_nifti(tmp_path / "mask.nii.gz", mask, metadata=kwargs["metadata"], scale=kwargs["scale"])
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms()[:3], (0.8, 0.9, 2.5), rtol=1e-5)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), (vol > 500).astype(np.uint8))
    back, kw = _io.read_nifti(out)
    np.testing.assert_array_equal(back, mask)
    assert int(img.header["qform_code"]) == 1  # header codes of the source are kept
    assert kw["metadata"]["nifti"]["layout"] == "k,-j,i"
    # wrong shape for the source geometry is refused
    with pytest.raises(_io.ExportError):
        _io.write_nifti(tmp_path / "bad.nii.gz", mask[:, :3], metadata=kwargs["metadata"])


def test_plugin_nifti_io_is_the_engines(tmp_path):
    """The plugin reader/writer are thin wrappers around cuts.io (one implementation)."""
    import nibabel as nib

    from cuts import io as cio

    path = tmp_path / "vol.nii.gz"
    vol, affine = _make_nifti(path, shape=(12, 10, 4), zooms=(0.5, 0.8, 3.0))
    f = cio.read_nifti(path)
    data, kwargs = _io.read_nifti(path)
    np.testing.assert_array_equal(data, f.data)
    np.testing.assert_allclose(kwargs["scale"], f.spacing)
    info = kwargs["metadata"]["nifti"]
    for key in ("shape", "zooms", "unit", "sform_code", "qform_code", "layout"):
        assert info[key] == f.meta[key]
    assert info["source"] == str(path)
    # one voxel marked in napari's layout lands on the same (i, j, k) on disk
    i, j, k = 9, 2, 1
    mask = np.zeros(data.shape, np.uint8)
    mask[k, 10 - 1 - j, i] = 1
    out = _io.export_mask(tmp_path / "m.nii.gz", mask, metadata=kwargs["metadata"], scale=kwargs["scale"])
    on_disk = np.asarray(nib.load(out).dataobj)
    assert on_disk.shape == vol.shape and on_disk[i, j, k] == 1 and on_disk.sum() == 1
    np.testing.assert_allclose(nib.load(out).affine, affine, atol=1e-6)
    # the launcher's reader gives the same layer for NIfTI, and engine reading for the rest
    d2, kw2 = _io.read_image_file(path)
    np.testing.assert_array_equal(d2, data)
    assert kw2["name"] == "vol" and kw2["scale"] == kwargs["scale"]
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 255, (9, 11, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    d3, kw3 = _io.read_image_file(tmp_path / "c.png")
    np.testing.assert_array_equal(d3, rgb)
    assert kw3 == {"name": "c"}
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown image type"):
        _io.read_image_file(tmp_path / "notes.txt")


def test_nifti_single_slice_is_squeezed_and_2d_mask_without_source(tmp_path):
    path = tmp_path / "slice.nii.gz"
    _make_nifti(path, shape=(20, 16, 1), zooms=(0.5, 0.5, 3.0))
    data, kwargs = _io.read_nifti(path)
    assert data.shape == (16, 20) and list(kwargs["scale"]) == [0.5, 0.5]
    assert _io.physical_pixel_area(kwargs["metadata"], kwargs["scale"]) == pytest.approx(0.25)
    # a mask with no NIfTI source gets a diagonal affine from the scale
    out = _io.write_nifti(tmp_path / "m.nii", np.ones((8, 9), np.uint8), scale=(0.2, 0.3))
    back, kw = _io.read_nifti(out)
    assert back.shape == (8, 9)
    np.testing.assert_allclose(kw["scale"], [0.2, 0.3], rtol=1e-6)


def test_physical_pixel_area_rules():
    assert _io.physical_pixel_area({}, (1.0, 1.0)) is None
    assert _io.physical_pixel_area({}, (0.5, 0.2)) == pytest.approx(0.1)
    meta = {"nifti": {"unit": "micron"}}
    assert _io.physical_pixel_area(meta, (1000.0, 1000.0)) == pytest.approx(1.0)


def test_physical_voxel_volume_only_for_real_volumes():
    # a NIfTI scan: its slice spacing is physical (here in microns)
    assert _io.physical_voxel_volume({"nifti": {"unit": "micron"}}, (3000.0, 500.0, 500.0)) == pytest.approx(0.75)
    assert _io.physical_voxel_volume({"nifti": {"unit": "mm"}}, (3.0, 0.5, 0.5)) == pytest.approx(0.75)
    # napari length units on all three axes
    import pint

    ureg = pint.get_application_registry()
    assert _io.physical_voxel_volume({}, (2.0, 0.1, 0.1), (ureg.mm, ureg.cm, ureg.cm)) == pytest.approx(2.0)
    # a bare scale may be a series of unrelated slices; 2-D layers have no volume
    assert _io.physical_voxel_volume({}, (1.0, 0.5, 0.5)) is None
    assert _io.physical_voxel_volume({}, (1.0, 0.5, 0.5), ("pixel", "pixel", "pixel")) is None
    assert _io.physical_voxel_volume({"nifti": {"unit": "mm"}}, (0.5, 0.5)) is None


def test_npe2_writers_write_atomically(tmp_path):
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:7] = 1
    (p,) = _io.write_labels_tiff(str(tmp_path / "a.tif"), mask, {"metadata": {}, "scale": (1, 1)})
    (q,) = _io.write_labels_png(str(tmp_path / "a.png"), mask, {})
    (r,) = _io.write_labels_nifti(str(tmp_path / "a.nii.gz"), mask, {"metadata": {}, "scale": (0.5, 0.5)})
    for f in (p, q, r):
        assert os.path.getsize(f) > 0
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz", "a.png", "a.tif"]


# ----------------------------------------------------------------------------- samples & manifest


def test_sample_data_is_local():
    from napari_cuts import _sample_data as sd

    ((img, kw, kind), (mask, mkw, mkind)) = sd.fundus_ga()
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and kind == "image"
    assert mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 1} and mkind == "labels"
    ((brain, bkw, _),) = sd.brain_mri_slice()
    assert brain.ndim == 2 and min(brain.shape) >= 64
    np.testing.assert_allclose(bkw["scale"], [2.0, 2.0])
    assert "affine" in bkw["metadata"]["nifti"]
    ((retina, rkw, _),) = sd.retina_large()
    assert retina.shape == (1411, 1411, 3)


def test_npe2_manifest_validates():
    exe = os.path.join(os.path.dirname(sys.executable), "npe2")
    if not os.path.exists(exe):
        pytest.skip("npe2 command line not installed")
    res = subprocess.run([exe, "validate", "napari-cuts"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_import_is_light():
    code = "import sys, napari_cuts; print(any(m in sys.modules for m in ('torch', 'qtpy', 'napari')))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


# ----------------------------------------------------------------------------- launcher window size
class _FakeWindow:
    def __init__(self, geometry):
        self._geometry = tuple(geometry)
        self.calls = []

    def geometry(self):
        return self._geometry

    def set_geometry(self, *geometry):
        self.calls.append(geometry)
        self._geometry = geometry


def test_fit_window_grows_and_centres_but_never_shrinks():
    from napari_cuts.launch import fit_window

    win = _FakeWindow((10, 10, 1089, 633))  # napari's first-launch size
    assert fit_window(win, (0, 0, 1920, 1080)) == (160, 54, 1600, 972)
    assert win.calls == [(160, 54, 1600, 972)]
    # a small screen: 90 % of it, but not narrower than the window already is
    win = _FakeWindow((0, 0, 1089, 633))
    assert fit_window(win, (0, 25, 1024, 768)) == (0, 63, 1089, 691)
    # already large enough (the user's own size, restored by napari): left alone
    win = _FakeWindow((0, 0, 1700, 1050))
    assert fit_window(win, (0, 0, 1920, 1080)) is None and win.calls == []
