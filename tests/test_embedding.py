"""Stage-1 embedding: cuts.embed (tiles, out=, dtype, errors) and cuts.embed_to_file."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import cuts
from cuts.embedding import DEFAULT_TILE
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


# --------------------------------------------------------------------------- embed_to_file
def test_callback_and_cancel(grey):
    im = _img(40, 40)
    calls = []
    cuts.embed(grey, im, tile_size=16, callback=lambda d, t, m: calls.append((d, t)))
    assert calls == [(i, 9) for i in range(1, 10)]
    stop = threading.Event()
    stop.set()
    with pytest.raises(cuts.Cancelled):
        cuts.embed(grey, im, cancel=stop)


@pytest.mark.parametrize("tile", [16, 24, DEFAULT_TILE])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_to_file_equals_embed(rgb, tmp_path, tile, dtype):
    im = _img(70, 53, 3, seed=7)  # 5x4 tiles of 16: several bands, ragged last row and column
    path = cuts.embed_to_file(rgb, im, tmp_path / "e.npy", tile_size=tile, dtype=dtype)
    assert path == tmp_path / "e.npy"
    back = np.load(path)
    ref = cuts.embed(rgb, im, tile_size=tile, dtype=dtype)
    assert back.dtype == ref.dtype == np.dtype(dtype) and back.shape == (70, 53, 128)
    assert back.tobytes() == ref.tobytes()  # the very same values
    assert path.stat().st_size == np.lib.format.open_memmap(path, mode="r").offset + ref.nbytes
    assert [p.name for p in tmp_path.iterdir()] == ["e.npy"]  # no temp file left


def test_to_file_default_tiles_grey_and_mmap(grey, tmp_path):
    im = _img(45, 19)
    path = cuts.embed_to_file(grey, im, str(tmp_path / "grey.NPY"))
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), cuts.embed(grey, im))


def test_to_file_progress(grey, tmp_path):
    calls = []
    cuts.embed_to_file(grey, _img(40, 20), tmp_path / "e.npy", tile_size=16,
                       callback=lambda d, t, m: calls.append((d, t, m)))
    assert [c[:2] for c in calls] == [(i, 6) for i in range(1, 7)] and calls[-1][2] == "tile 6/6"


def _old_file(tmp_path):
    path = tmp_path / "e.npy"
    np.save(path, np.arange(3))
    return path


def test_to_file_cancel_leaves_nothing(grey, tmp_path):
    path = _old_file(tmp_path)
    stop = threading.Event()

    def progress(done, total, message):
        if done == 2:  # part of the file is written by now
            stop.set()

    with pytest.raises(cuts.Cancelled, match="embedding was cancelled"):
        cuts.embed_to_file(grey, _img(40, 40), path, tile_size=16, callback=progress, cancel=stop)
    assert [p.name for p in tmp_path.iterdir()] == ["e.npy"]
    np.testing.assert_array_equal(np.load(path), np.arange(3))  # the old file is untouched
    new = tmp_path / "new.npy"
    with pytest.raises(cuts.Cancelled):
        cuts.embed_to_file(grey, _img(40, 40), new, cancel=lambda: True)
    assert not new.exists() and len(list(tmp_path.iterdir())) == 1


def test_to_file_error_leaves_nothing(grey, tmp_path):
    path = _old_file(tmp_path)

    def fail(done, total, message):
        if done == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cuts.embed_to_file(grey, _img(40, 40), path, tile_size=16, callback=fail)
    assert [p.name for p in tmp_path.iterdir()] == ["e.npy"]
    np.testing.assert_array_equal(np.load(path), np.arange(3))
    with pytest.raises(ImageError):  # a bad image fails before any file is created
        cuts.embed_to_file(grey, _img(10, 30), tmp_path / "bad.npy")
    assert [p.name for p in tmp_path.iterdir()] == ["e.npy"]


def test_to_file_bad_paths_and_options(grey, tmp_path):
    im = _img(20, 20)
    for name in ("e.npz", "e", "e.npy.tmp"):
        with pytest.raises(ValueError, match=r"writes \.npy files; .* does not end in \.npy"):
            cuts.embed_to_file(grey, im, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cuts.embed_to_file(grey, im, tmp_path / "missing" / "e.npy")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        cuts.embed_to_file(grey, im, tmp_path / "dir.npy")
    path = _old_file(tmp_path)
    with pytest.raises(FileExistsError):
        cuts.embed_to_file(grey, im, path, overwrite=False)
    with pytest.raises(ValueError, match="floating dtype"):
        cuts.embed_to_file(grey, im, tmp_path / "int.npy", dtype=np.int16)
    with pytest.raises(ValueError, match="tile_size"):
        cuts.embed_to_file(grey, im, tmp_path / "t.npy", tile_size=8)
    with pytest.raises(ValueError, match="embed_to_file takes one 2-D image"):
        cuts.embed_to_file(grey, np.stack([im, im, im]), tmp_path / "s.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.npy", "e.npy"]


def test_to_file_restores_training_mode(tmp_path):
    m = CutsModel.create(1, seed=0)
    cuts.embed_to_file(m, _img(20, 20), tmp_path / "e.npy")
    assert m.encoder.training
    assert "embed_to_file" in dir(cuts)
