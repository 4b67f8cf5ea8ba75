"""Stage-1 file I/O: cuts.io (PNG/TIFF/NIfTI reading, NIfTI mask writing, list_images)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile
from skimage import io as skio

from cuts.io import (
    NIFTI_LAYOUT,
    layout_to_nifti,
    list_images,
    nifti_to_layout,
    read_image,
    read_nifti,
    stem,
    write_nifti,
)


def _img(shape, dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)


def test_png_grey_and_rgb(tmp_path):
    grey = _img((20, 27))
    rgb = _img((21, 26, 3), seed=1)
    skio.imsave(tmp_path / "g.png", grey, check_contrast=False)
    skio.imsave(tmp_path / "c.PNG", rgb, check_contrast=False)
    g = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(g.data, grey)
    assert g.meta["format"] == "png" and g.spacing is None and g.affine is None
    c = read_image(tmp_path / "c.PNG")
    np.testing.assert_array_equal(c.data, rgb)


def test_tiff_uint16_and_squeeze(tmp_path):
    data = _img((22, 25), np.uint16) * 300
    tifffile.imwrite(tmp_path / "a.tif", data)
    tifffile.imwrite(tmp_path / "b.tiff", data[None])  # singleton leading axis
    a = read_image(tmp_path / "a.tif")
    b = read_image(tmp_path / "b.tiff")
    assert a.data.dtype == np.uint16
    np.testing.assert_array_equal(a.data, data)
    assert b.data.shape == (22, 25)
    np.testing.assert_array_equal(b.data, data)
    assert a.meta["format"] == "tiff"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_volume_spacing_affine(tmp_path, suffix):
    vol = _img((20, 24, 5), np.int16)  # on disk (X, Y, Z)
    affine = np.diag([0.5, 0.8, 3.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.5]
    path = tmp_path / f"vol{suffix}"
    nib.save(nib.Nifti1Image(vol, affine), str(path))
    f = read_image(path)
    assert f.data.shape == (5, 24, 20)  # (Z, H, W) = (k, j, i)
    for k in range(5):  # layout "k,-j,i": rows are j reversed
        np.testing.assert_array_equal(f.data[k], vol[..., k].T[::-1])
    assert f.data[3, 24 - 1 - 7, 11] == vol[11, 7, 3]
    assert f.spacing == pytest.approx((3.0, 0.8, 0.5))
    np.testing.assert_allclose(f.affine, affine)
    assert f.data.dtype == np.int16
    m = f.meta
    assert m["format"] == "nifti" and m["layout"] == NIFTI_LAYOUT == "k,-j,i"
    np.testing.assert_allclose(m["affine"], affine)
    assert m["shape"] == [20, 24, 5] and m["shape_on_disk"] == [20, 24, 5]
    assert m["zooms"] == pytest.approx([0.5, 0.8, 3.0])
    assert m["unit"] == "mm"
    assert isinstance(m["sform_code"], int) and isinstance(m["qform_code"], int)


def test_nifti_singleton_slice_squeezed(tmp_path):
    vol = _img((20, 24, 1), np.float32)
    affine = np.diag([0.5, 0.8, 3.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "s.nii.gz"))
    f = read_image(tmp_path / "s.nii.gz")
    assert f.data.shape == (24, 20)
    np.testing.assert_array_equal(f.data, vol[..., 0].T[::-1])
    assert f.spacing == pytest.approx((0.8, 0.5))
    np.testing.assert_allclose(f.affine, affine)
    assert f.meta["shape"] == [20, 24, 1]


def test_nifti_2d_file_and_trailing_singleton_axes(tmp_path):
    flat = _img((20, 24), np.uint8)
    nib.save(nib.Nifti1Image(flat, np.diag([0.5, 0.8, 1.0, 1.0])), str(tmp_path / "flat.nii"))
    f = read_nifti(tmp_path / "flat.nii")
    assert f.data.shape == (24, 20) and f.meta["shape"] == [20, 24, 1]
    np.testing.assert_array_equal(f.data, flat.T[::-1])
    t = _img((20, 24, 3, 1), np.int16)  # a time axis of length 1
    nib.save(nib.Nifti1Image(t, np.eye(4)), str(tmp_path / "t1.nii"))
    g = read_nifti(tmp_path / "t1.nii")
    assert g.data.shape == (3, 24, 20) and g.meta["shape_on_disk"] == [20, 24, 3, 1]


def test_layout_helpers_are_inverse():
    vol = _img((7, 6, 4), np.int16)
    lay = nifti_to_layout(vol)
    assert lay.shape == (4, 6, 7)
    np.testing.assert_array_equal(layout_to_nifti(lay), vol)
    one = _img((7, 6, 1))
    assert nifti_to_layout(one).shape == (6, 7)
    np.testing.assert_array_equal(layout_to_nifti(nifti_to_layout(one)), one)
    with pytest.raises(ValueError):
        layout_to_nifti(np.zeros((2, 3, 4, 5)))


def _source(path, shape, zooms=(0.5, 0.8, 3.0), qform_code=1, sform_code=2):
    vol = _img(shape, np.int16, seed=3)
    affine = np.array(
        [[-zooms[0], 0, 0, 12.0], [0, zooms[1], 0, -7.5], [0, 0, zooms[2], 4.0], [0, 0, 0, 1]]
    )
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    nib.save(img, str(path))
    return vol, affine


@pytest.mark.parametrize("shape", [(20, 24, 5), (20, 24, 1)], ids=["volume", "slice"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_mask_round_trip_lines_up_voxel_for_voxel(tmp_path, shape, suffix):
    src = tmp_path / f"src{suffix}"
    vol, affine = _source(src, shape)
    f = read_nifti(src)
    assert f.data.ndim == (3 if shape[2] > 1 else 2)
    # mark one voxel (i, j, k) in the read layout
    i, j, k = 13, 5, shape[2] - 1
    mask = np.zeros(f.data.shape, bool)
    if mask.ndim == 3:
        mask[k, shape[1] - 1 - j, i] = True
    else:
        mask[shape[1] - 1 - j, i] = True
    m = f.meta
    out = write_nifti(
        tmp_path / f"mask{suffix}", mask, affine=f.affine, zooms=m["zooms"], shape=m["shape"],
        unit=m["unit"], sform_code=m["sform_code"], qform_code=m["qform_code"],
    )
    img = nib.load(str(out))
    assert img.shape == shape and img.get_data_dtype() == np.uint8
    on_disk = np.asarray(img.dataobj)
    assert on_disk[i, j, k] == 1 and on_disk.sum() == 1  # the same voxel on disk
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    np.testing.assert_allclose(img.header.get_zooms()[:3], (0.5, 0.8, 3.0), rtol=1e-6)
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 1
    assert img.header.get_xyzt_units()[0] == "mm"
    # same world position as the source voxel
    np.testing.assert_allclose(img.affine @ [i, j, k, 1], affine @ [i, j, k, 1])
    back = read_nifti(out)
    np.testing.assert_array_equal(back.data, mask.astype(np.uint8))
    assert back.spacing == pytest.approx(f.spacing)
    # a mask of another shape is refused; an existing file is not replaced silently
    with pytest.raises(ValueError, match="source NIfTI"):
        write_nifti(tmp_path / f"bad{suffix}", mask[..., :3], affine=f.affine, shape=m["shape"])
    with pytest.raises(FileExistsError):
        write_nifti(out, mask, affine=f.affine)
    write_nifti(out, np.zeros_like(mask), affine=f.affine, overwrite=True)
    assert np.asarray(nib.load(str(out)).dataobj).sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name])


def test_write_nifti_without_source_and_labels(tmp_path):
    out = write_nifti(tmp_path / "m.nii.gz", np.ones((8, 9), np.uint8), spacing=(0.2, 0.3))
    f = read_nifti(out)
    assert f.data.shape == (8, 9) and f.spacing == pytest.approx((0.2, 0.3))
    np.testing.assert_allclose(f.affine, np.diag([0.3, 0.2, 1.0, 1.0]))
    assert f.meta["sform_code"] == 2
    labels = np.zeros((2, 4, 5), np.int64)
    labels[1, 0, 0] = 300
    out = write_nifti(tmp_path / "l.nii", labels, spacing=(3.0, 1.0, 1.0))
    assert nib.load(str(out)).get_data_dtype() == np.uint16
    np.testing.assert_array_equal(read_nifti(out).data, labels)
    with pytest.raises(ValueError, match="whole numbers"):
        write_nifti(tmp_path / "f.nii", np.full((4, 4), 0.5))
    with pytest.raises(IsADirectoryError):
        write_nifti(tmp_path, np.ones((4, 4), np.uint8))


def test_nifti_4d_rejected(tmp_path):
    nib.save(nib.Nifti1Image(_img((18, 18, 3, 2), np.int16), np.eye(4)), str(tmp_path / "t.nii"))
    with pytest.raises(ValueError, match="non-singleton axes"):
        read_image(tmp_path / "t.nii")


def test_nifti_corrupt(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(tmp_path / "bad.nii.gz")


def test_unknown_suffix_and_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unknown image type '.txt'"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_stem():
    assert stem("a/b/brain.nii.gz") == "brain"
    assert stem("x_seg.png") == "x_seg"
    assert stem("scan.TIFF") == "scan"


def test_list_images(tmp_path):
    skio.imsave(tmp_path / "b.png", _img((20, 20)), check_contrast=False)
    skio.imsave(tmp_path / "b_seg.png", _img((20, 20)), check_contrast=False)
    tifffile.imwrite(tmp_path / "a.tif", _img((20, 20)))
    nib.save(nib.Nifti1Image(_img((18, 18, 2), np.int16), np.eye(4)), str(tmp_path / "c.nii.gz"))
    nib.save(nib.Nifti1Image(_img((18, 18, 2), np.int16), np.eye(4)), str(tmp_path / "c_seg.nii.gz"))
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    skio.imsave(tmp_path / "sub" / "d.png", _img((20, 20)), check_contrast=False)
    assert [p.name for p in list_images(tmp_path)] == ["a.tif", "b.png", "c.nii.gz"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")
