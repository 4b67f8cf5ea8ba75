"""Stage-1 embedding: cuts.embed (tiles, out=, dtype, errors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cuts
from cuts.images import ImageError
from cuts.model import CutsModel


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _img(h, w, c=None, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (h, w) + ((c,) if c else ())).astype(np.uint8)


@pytest.fixture(scope="module")
def grey():
    return cuts.train([_img(32, 32)], steps=3, batch_size=2, anchors_per_image=4, seed=0, device="cpu")


@pytest.fixture(scope="module")
def rgb():
    return cuts.train([_img(32, 32, 3)], steps=3, batch_size=2, anchors_per_image=4, seed=0, device="cpu")


@pytest.mark.parametrize("shape", [(17, 17), (24, 40), (45, 19)])
def test_shape_dtype(grey, shape):
    e = cuts.embed(grey, _img(*shape))
    assert e.shape == (*shape, 128)
    assert e.dtype == np.float32
    assert np.isfinite(e).all()
    assert e.std() > 0


def test_rgb_and_rgba(rgb):
    im = _img(20, 33, 3)
    e = cuts.embed(rgb, im)
    assert e.shape == (20, 33, 128)
    alpha = np.concatenate([im, np.full((20, 33, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(cuts.embed(rgb, alpha), e)


def test_matches_whole_image_forward(grey):
    im = _img(26, 31)
    e = cuts.embed(grey, im)
    x = torch.from_numpy(cuts.scale_intensity(im))[None]
    with torch.no_grad():
        ref = grey.encoder.eval().embed_padded(x)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(e, ref, atol=1e-5)


@pytest.mark.parametrize("tile", [16, 32, 33])
def test_tiled_equals_untiled(grey, tile):
    im = _img(50, 37, seed=4)
    whole = cuts.embed(grey, im)
    tiled = cuts.embed(grey, im, tile_size=tile)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tiled_equals_untiled_rgb(rgb):
    im = _img(40, 29, 3, seed=5)
    np.testing.assert_allclose(cuts.embed(rgb, im, tile_size=16), cuts.embed(rgb, im), atol=1e-5)


def test_tile_size_too_small(grey):
    with pytest.raises(ValueError, match="tile_size"):
        cuts.embed(grey, _img(30, 30), tile_size=8)


def test_out_memmap(grey, tmp_path):
    im = _img(30, 22)
    out = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=(30, 22, 128))
    res = cuts.embed(grey, im, out=out, tile_size=16)
    assert res is out
    out.flush()
    del out, res
    back = np.load(tmp_path / "e.npy")
    np.testing.assert_allclose(back, cuts.embed(grey, im), atol=1e-5)


def test_out_wrong_shape(grey):
    with pytest.raises(ValueError, match="out has shape"):
        cuts.embed(grey, _img(30, 22), out=np.empty((22, 30, 128), np.float32))


def test_float16(grey):
    im = _img(25, 30)
    e16 = cuts.embed(grey, im, dtype=np.float16)
    assert e16.dtype == np.float16 and e16.shape == (25, 30, 128)
    e32 = cuts.embed(grey, im)
    np.testing.assert_allclose(e16.astype(np.float32), e32, rtol=2e-3, atol=2e-3)


def test_stack_rejected(grey):
    with pytest.raises(ValueError, match="stack of 3 slices"):
        cuts.embed(grey, np.stack([_img(30, 30, seed=s) for s in range(3)]))


def test_channel_mismatch(grey, rgb):
    with pytest.raises(ImageError, match="colour .* grey"):
        cuts.embed(grey, _img(30, 30, 3))
    with pytest.raises(ImageError, match="grey .* colour"):
        cuts.embed(rgb, _img(30, 30))


def test_bad_images(grey):
    with pytest.raises(ImageError):
        cuts.embed(grey, _img(10, 30))
    nan = _img(30, 30).astype(np.float32)
    nan[0, 0] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        cuts.embed(grey, nan)


def test_training_mode_restored_and_device_arg():
    m = CutsModel.create(1, seed=0)
    assert m.encoder.training
    im = _img(20, 20)
    e1 = cuts.embed(m, im)
    assert m.encoder.training  # restored
    e2 = cuts.embed(m, im, device="cpu")
    np.testing.assert_array_equal(e1, e2)
