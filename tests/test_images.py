"""Stage-1 input handling: cuts.images (as_image_list, scale_intensity, check_channels)."""

from __future__ import annotations

import numpy as np
import pytest

from cuts.images import (
    RECEPTIVE_FIELD,
    ImageError,
    as_image_list,
    check_channels,
    n_channels,
    scale_intensity,
)

RNG = np.random.default_rng(0)


def _rand(shape, dtype=np.uint8):
    if dtype == bool:
        return RNG.random(shape) > 0.5
    if np.issubdtype(dtype, np.floating):
        return RNG.random(shape).astype(dtype)
    info = np.iinfo(dtype)
    hi = min(int(info.max), 4000)
    lo = max(int(info.min), -4000)
    return RNG.integers(lo, hi, size=shape).astype(dtype)


# ---------------------------------------------------------------- layouts


def test_grey_2d():
    img = _rand((24, 30))
    out = as_image_list(img)
    assert len(out) == 1
    assert out[0].shape == (24, 30)
    assert out[0].dtype == np.uint8
    np.testing.assert_array_equal(out[0], img)
    assert n_channels(out[0]) == 1


def test_rgb():
    img = _rand((24, 30, 3))
    (out,) = as_image_list(img)
    assert out.shape == (24, 30, 3)
    np.testing.assert_array_equal(out, img)
    assert n_channels(out) == 3


def test_rgba_alpha_dropped():
    img = _rand((24, 30, 4))
    (out,) = as_image_list(img)
    assert out.shape == (24, 30, 3)
    np.testing.assert_array_equal(out, img[..., :3])


def test_grey_alpha_dropped():
    img = _rand((24, 30, 2))
    (out,) = as_image_list(img)
    assert out.shape == (24, 30)
    np.testing.assert_array_equal(out, img[..., 0])
    assert n_channels(out) == 1


def test_single_channel_last_axis_squeezed():
    img = _rand((24, 30, 1))
    (out,) = as_image_list(img)
    assert out.shape == (24, 30)


def test_stack_zhw():
    stack = _rand((3, 24, 30))
    out = as_image_list(stack)
    assert len(out) == 3
    for i, im in enumerate(out):
        assert im.shape == (24, 30)
        np.testing.assert_array_equal(im, stack[i])


def test_stack_zhwc_rgb_and_rgba():
    stack = _rand((2, 24, 30, 3))
    out = as_image_list(stack)
    assert [im.shape for im in out] == [(24, 30, 3)] * 2
    np.testing.assert_array_equal(out[1], stack[1])
    stack4 = _rand((2, 24, 30, 4))
    out4 = as_image_list(stack4)
    assert [im.shape for im in out4] == [(24, 30, 3)] * 2
    np.testing.assert_array_equal(out4[0], stack4[0, ..., :3])


def test_list_of_different_sizes_and_kinds():
    imgs = [_rand((20, 20)), _rand((33, 47)), _rand((2, 18, 25)), _rand((30, 19, 3))]
    out = as_image_list(imgs)
    assert [im.shape for im in out] == [(20, 20), (33, 47), (18, 25), (18, 25), (30, 19, 3)]
    tup = as_image_list(tuple(imgs[:2]))
    assert len(tup) == 2


def test_rgb_flag_explicit():
    # rgb=False forces a stack reading
    stack = _rand((3, 20, 20))
    assert len(as_image_list(stack, rgb=False)) == 3
    with pytest.raises(ImageError):
        as_image_list(_rand((20, 20)), rgb=True)


def test_rgb_true_on_2d_image_message():
    # images.py has a dedicated message for this case, but it is unreachable: the
    # "> 4 channels" check runs first and reports the image *width* as a channel count.
    with pytest.raises(ImageError, match="channel axis"):
        as_image_list(_rand((20, 20)), rgb=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, bool])
def test_dtypes_accepted_and_scaled(dtype):
    img = _rand((32, 32), dtype)
    (out,) = as_image_list(img)
    assert out.dtype == np.dtype(dtype)
    scaled = scale_intensity(out)
    assert scaled.shape == (1, 32, 32)
    assert scaled.dtype == np.float32
    assert np.isfinite(scaled).all()
    assert scaled.min() == pytest.approx(-1.0)
    assert scaled.max() == pytest.approx(1.0)
    # monotone: the scaling preserves the order of values
    flat_in = out.astype(np.float64).ravel()
    flat_out = scaled.ravel()
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order]) >= -1e-6)


def test_bool_maps_to_minus_one_and_one():
    img = np.zeros((20, 20), bool)
    img[:, 10:] = True
    scaled = scale_intensity(img)[0]
    np.testing.assert_allclose(scaled[:, :10], -1.0)
    np.testing.assert_allclose(scaled[:, 10:], 1.0)


# ---------------------------------------------------------------- scaling


def test_scaling_robust_to_hot_pixels_int16():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 1000, size=(64, 64)).astype(np.int16)  # MRI-like bulk
    hot = [(3, 4), (30, 50), (60, 10)]
    for r, c in hot:
        img[r, c] = 32000
    scaled = scale_intensity(img)[0]
    bulk = np.ones(img.shape, bool)
    for r, c in hot:
        bulk[r, c] = False
    # the bulk still spans (almost) the full range
    assert scaled[bulk].min() <= -0.95
    assert scaled[bulk].max() >= 0.95
    assert np.ptp(scaled[bulk]) >= 1.9
    # the hot pixels are clipped to 1
    for r, c in hot:
        assert scaled[r, c] == pytest.approx(1.0)
    # plain min/max scaling would have squashed the bulk: the percentiles matter
    minmax = scale_intensity(img, percentiles=(0, 100))[0]
    assert minmax[bulk].max() < -0.9


def test_scaling_range_and_clipping():
    img = np.linspace(0, 1, 100 * 100, dtype=np.float64).reshape(100, 100)
    s = scale_intensity(img)[0]
    assert s.min() == -1.0 and s.max() == 1.0
    # ~0.5% of pixels below the low percentile are clipped to exactly -1
    n_low = int((s == -1.0).sum())
    assert 1 <= n_low <= 0.01 * s.size
    # the middle maps to ~0
    assert abs(float(np.median(s))) < 1e-3


def test_constant_image_gives_zeros():
    for img in (np.full((20, 25), 7, np.uint8), np.full((20, 25, 3), 0.3, np.float32)):
        s = scale_intensity(img)
        assert s.dtype == np.float32
        assert s.shape == ((1, 20, 25) if img.ndim == 2 else (3, 20, 25))
        assert not s.any()


def test_rgb_scaled_jointly_channels_first():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 100, (30, 30)).astype(np.float32)
    img = np.stack([base, base + 50, base + 100], axis=-1)
    s = scale_intensity(img)
    assert s.shape == (3, 30, 30)
    lo, hi = np.percentile(img, [0.5, 99.5])
    expected = np.clip((np.moveaxis(img, -1, 0) - lo) * 2 / (hi - lo) - 1, -1, 1)
    np.testing.assert_allclose(s, expected, atol=1e-5)
    # joint scaling keeps channel differences: blue is brighter than red everywhere it is not clipped
    assert (s[2] >= s[0]).all()
    assert s[2].mean() > s[0].mean() + 0.5


def test_scale_intensity_bad_percentiles_and_ndim():
    img = _rand((20, 20))
    for p in [(50, 50), (60, 40), (-1, 99), (1, 101)]:
        with pytest.raises(ValueError):
            scale_intensity(img, percentiles=p)
    with pytest.raises(ImageError):
        scale_intensity(_rand((2, 20, 20, 3)))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("arr", [np.zeros((0, 20)), np.zeros((20, 0, 3)), np.zeros((0,)), np.array(5.0)])
def test_empty_or_degenerate_arrays(arr):
    with pytest.raises(ImageError, match="empty|1-D"):
        as_image_list(arr)


def test_empty_list():
    with pytest.raises(ImageError, match="no images"):
        as_image_list([])


def test_one_dimensional():
    with pytest.raises(ImageError, match="1-D"):
        as_image_list(np.arange(100))


@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (10, 10), (16, 16, 3)])
def test_too_small(shape):
    with pytest.raises(ImageError) as info:
        as_image_list(_rand(shape))
    msg = str(info.value)
    assert f"{RECEPTIVE_FIELD}x{RECEPTIVE_FIELD}" in msg
    assert f"{shape[0]}x{shape[1]}" in msg


def test_minimum_size_ok():
    (out,) = as_image_list(_rand((17, 17)))
    assert out.shape == (17, 17)


def test_too_small_slice_in_stack_named():
    with pytest.raises(ImageError, match="slice 0 of the stack"):
        as_image_list(_rand((2, 12, 40)))


def test_too_small_in_list():
    with pytest.raises(ImageError):
        as_image_list([_rand((30, 30)), _rand((30, 8))])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_nan_inf(bad, dtype):
    img = RNG.random((24, 24)).astype(dtype)
    img[3, 4] = bad
    img[5, 6] = bad
    with pytest.raises(ImageError, match="NaN or infinite") as info:
        as_image_list(img)
    assert "2 NaN" in str(info.value)


def test_too_many_dims():
    with pytest.raises(ImageError, match="5 dimensions"):
        as_image_list(np.zeros((2, 2, 20, 20, 3)))


def test_4d_without_channels_rejected():
    with pytest.raises(ImageError, match="4-D"):
        as_image_list(np.zeros((2, 3, 20, 20)))


def test_too_many_channels_when_rgb():
    with pytest.raises(ImageError, match="channels"):
        as_image_list(np.zeros((20, 20, 5)), rgb=True)


def test_non_numeric_dtype():
    with pytest.raises(ImageError, match="dtype"):
        as_image_list(np.zeros((20, 20), dtype=np.complex64))
    with pytest.raises(ImageError, match="dtype"):
        as_image_list(np.full((20, 20), "a"))


def test_check_channels():
    grey = _rand((20, 20))
    rgb = _rand((20, 20, 3))
    check_channels(grey, 1)
    check_channels(rgb, 3)
    with pytest.raises(ImageError) as info:
        check_channels(rgb, 1)
    msg = str(info.value)
    assert "colour (3 channels)" in msg and "grey (1 channel)" in msg
    with pytest.raises(ImageError, match="grey .* colour"):
        check_channels(grey, 3)


def test_image_error_is_value_error():
    assert issubclass(ImageError, ValueError)
