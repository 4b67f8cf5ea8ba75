"""Stage-1 file input: cuts.io (PNG/TIFF/NIfTI, list_images)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile
from skimage import io as skio

from cuts.io import list_images, read_image, stem


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
    assert f.data.shape == (5, 24, 20)  # (Z, Y, X)
    for k in range(5):
        np.testing.assert_array_equal(f.data[k], vol[..., k].T)
    assert f.spacing == pytest.approx((3.0, 0.8, 0.5))
    np.testing.assert_allclose(f.affine, affine)
    assert f.meta["format"] == "nifti"
    assert f.meta["axes"] == [2, 1, 0]
    assert f.data.dtype == np.int16


def test_nifti_singleton_slice_squeezed(tmp_path):
    vol = _img((20, 24, 1), np.float32)
    affine = np.diag([0.5, 0.8, 3.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "s.nii.gz"))
    f = read_image(tmp_path / "s.nii.gz")
    assert f.data.shape == (24, 20)
    np.testing.assert_array_equal(f.data, vol[..., 0].T)
    assert f.spacing == pytest.approx((0.8, 0.5))
    np.testing.assert_allclose(f.affine, affine)


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
