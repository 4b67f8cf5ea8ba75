"""Tests for cuts.metrics (synthetic masks, hand-computed values)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from cuts.metrics import (
    METRIC_NAMES,
    dice,
    ergas,
    evaluate_mask,
    hausdorff,
    mask_ssim,
    rmse,
)

ALL = [dice, hausdorff, mask_ssim, rmse, ergas, evaluate_mask]


def _rect(shape, r0, r1, c0, c1, value=1, dtype=np.uint8):
    m = np.zeros(shape, dtype=dtype)
    m[r0:r1, c0:c1] = value
    return m


# --------------------------------------------------------------------- dice
def test_dice_hand_value():
    pred = np.array([[1, 1], [0, 0]])
    truth = np.array([[1, 0], [1, 0]])
    assert dice(pred, truth) == pytest.approx(0.5)


def test_dice_three_quarters():
    pred = _rect((4, 4), 0, 2, 0, 4)  # 8 px
    truth = _rect((4, 4), 0, 1, 0, 4)  # 4 px, inside pred
    assert dice(pred, truth) == pytest.approx(2 * 4 / 12)


def test_dice_edge_cases():
    z = np.zeros((5, 5), bool)
    o = np.ones((5, 5), bool)
    assert dice(z, z) == 1.0
    assert dice(z, o) == 0.0
    assert dice(o, z) == 0.0
    assert dice(o, o) == 1.0


def test_mask_scales_are_equivalent():
    rng = np.random.default_rng(1)
    t = rng.random((20, 24)) < 0.4
    p = rng.random((20, 24)) < 0.4
    ref = evaluate_mask(p, t)
    for a, b in [
        (p.astype(np.uint8), t.astype(np.uint8)),
        (p.astype(np.uint8) * 255, t.astype(np.uint8) * 255),
        (p.astype(np.float32) * 255.0, t.astype(np.float64)),
    ]:
        got = evaluate_mask(a, b)
        for k in METRIC_NAMES:
            assert got[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-12), k


# ---------------------------------------------------------------- hausdorff
def test_hausdorff_single_pixels():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0, 0] = True
    b[3, 4] = True
    assert hausdorff(a, b) == pytest.approx(5.0)


def test_hausdorff_uses_all_foreground_and_is_symmetric():
    truth = _rect((20, 20), 5, 10, 5, 10)
    pred = truth.copy()
    pred[5, 17] = 1  # stray pixel 8 px right of the square's corner (5, 9)
    assert hausdorff(pred, truth) == pytest.approx(8.0)
    assert hausdorff(truth, pred) == pytest.approx(8.0)
    # pred strictly inside truth: distance is from the truth pixel farthest
    # from pred -- an interior-aware value contours alone would not give.
    inner = np.zeros((20, 20), bool)
    inner[7, 7] = True
    assert hausdorff(inner, truth) == pytest.approx(math.hypot(2, 2))


def test_hausdorff_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = rng.random((15, 13)) < 0.1
        t = rng.random((15, 13)) < 0.1
        p[0, 0] = t[14, 12] = True
        pp = np.argwhere(p)
        tt = np.argwhere(t)
        d = np.sqrt(((pp[:, None, :] - tt[None, :, :]) ** 2).sum(-1))
        ref = max(d.min(axis=1).max(), d.min(axis=0).max())
        assert hausdorff(p, t) == pytest.approx(ref)


def test_hausdorff_empty_masks():
    z = np.zeros((30, 40), bool)
    o = _rect((30, 40), 1, 3, 1, 3)
    assert hausdorff(z, z) == 0.0
    assert hausdorff(z, o) == pytest.approx(50.0)
    assert hausdorff(o, z) == pytest.approx(50.0)


def test_hausdorff_large_is_fast():
    t = _rect((1024, 1024), 100, 700, 200, 900, dtype=bool)
    p = np.roll(t, 5, axis=1)
    p[1000, 1000] = True
    start = time.perf_counter()
    d = hausdorff(p, t)
    assert time.perf_counter() - start < 5.0
    assert d == pytest.approx(math.hypot(1000 - 699, 1000 - 899))


# --------------------------------------------------------------------- ssim
def _ssim_one_window(x, y, data_range=1.0):
    """SSIM of a single window covering the whole image (sample covariance)."""
    x = x.astype(float).ravel()
    y = y.astype(float).ravel()
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = np.cov(x, y, ddof=1)[0, 1]
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_ssim_identical_is_one():
    t = _rect((32, 32), 4, 20, 6, 30)
    assert mask_ssim(t, t) == pytest.approx(1.0)
    assert mask_ssim(np.zeros((8, 8)), np.zeros((8, 8))) == pytest.approx(1.0)


def test_ssim_single_window_hand_value():
    # 7x7 masks: the 7x7 window fits exactly once, so SSIM is the formula on
    # the whole image.
    t = _rect((7, 7), 0, 3, 0, 7)
    p = _rect((7, 7), 0, 4, 0, 5)
    assert mask_ssim(p, t) == pytest.approx(_ssim_one_window(t, p), rel=1e-9)
    # smaller than 7 px: the window shrinks to 5 and fits once again
    t5 = _rect((5, 5), 0, 2, 0, 5)
    p5 = _rect((5, 5), 1, 3, 0, 4)
    assert mask_ssim(p5, t5) == pytest.approx(_ssim_one_window(t5, p5), rel=1e-9)


def test_ssim_disjoint_is_low():
    t = _rect((32, 32), 0, 16, 0, 32)
    p = 1 - t
    assert mask_ssim(p, t) < 0.0
    assert mask_ssim(p, t) < mask_ssim(np.roll(t, 2, axis=0), t) < 1.0


# ---------------------------------------------------------------------- rmse
def test_rmse_hand_value():
    t = np.zeros((4, 4), np.uint8)
    p = np.zeros((4, 4), np.uint8)
    p[0, :] = 255  # 4 of 16 pixels disagree
    assert rmse(p, t) == pytest.approx(0.5)
    assert rmse(t, t) == 0.0
    assert rmse(np.ones((4, 4)), np.zeros((4, 4))) == pytest.approx(1.0)


# --------------------------------------------------------------------- ergas
def test_ergas_hand_values():
    ones = np.ones((16, 16), np.uint8)
    zeros = np.zeros((16, 16), np.uint8)
    # local RMSE 1, local mean 1/64 -> 100 * 4 * 64 = 25600
    assert ergas(zeros, ones) == pytest.approx(25600.0)
    # checkerboard prediction: local MSE 0.5 in every interior 8x8 window
    checker = (np.indices((16, 16)).sum(axis=0) % 2).astype(np.uint8)
    assert ergas(checker, ones) == pytest.approx(25600.0 * math.sqrt(0.5))
    assert ergas(ones, ones) == 0.0
    # empty expert mask: every window mean is 0 -> 0 (sewar convention)
    assert ergas(ones, zeros) == 0.0


def test_ergas_matches_sewar_045_reference():
    # values produced by sewar 0.4.5: ergas(GT=truth, P=pred), rmse(GT, P)
    t = _rect((32, 32), 8, 24, 6, 20)
    p = _rect((32, 32), 10, 26, 8, 24)
    assert ergas(p, t) == pytest.approx(40310.3884678989, rel=1e-10)
    assert ergas(t, p) == pytest.approx(36602.052003959965, rel=1e-10)  # not symmetric
    assert rmse(p, t) == pytest.approx(0.375)


def test_ergas_too_small_is_nan():
    assert math.isnan(ergas(np.ones((8, 20)), np.ones((8, 20))))


# ---------------------------------------------------------- evaluate / errors
def test_evaluate_mask_keys_and_values():
    t = _rect((32, 32), 8, 24, 8, 24)
    out = evaluate_mask(t, t)
    assert tuple(out) == METRIC_NAMES == ("dice", "hausdorff", "ssim", "ergas", "rmse")
    assert out["dice"] == 1.0
    assert out["hausdorff"] == 0.0
    assert out["ssim"] == pytest.approx(1.0)
    assert out["ergas"] == 0.0
    assert out["rmse"] == 0.0
    assert all(isinstance(v, float) for v in out.values())


@pytest.mark.parametrize("fn", ALL)
def test_shape_mismatch_raises(fn):
    with pytest.raises(ValueError, match="shape"):
        fn(np.zeros((4, 5)), np.zeros((5, 4)))


@pytest.mark.parametrize("fn", ALL)
def test_non_2d_raises(fn):
    with pytest.raises(ValueError, match="2-D"):
        fn(np.zeros((2, 4, 5)), np.zeros((2, 4, 5)))
