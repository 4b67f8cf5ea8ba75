"""Tests for cuts.clicks (simulated segment clicking)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cuts.clicks import ClickResult, simulate_clicks
from cuts.metrics import dice


def _naive_greedy(levels, truth, max_clicks):
    """Reference: try every add/remove explicitly with full masks."""
    truth = truth != 0
    mask = np.zeros(truth.shape, bool)
    current = 1.0 if not truth.any() else 0.0
    out = []
    for _ in range(max_clicks):
        best, best_mask = current + 1e-12, None
        for lv in levels:
            for v in np.unique(lv):
                seg = lv == v
                for cand in (mask | seg, mask & ~seg):
                    d = dice(cand, truth)
                    if d > best:
                        best, best_mask = d, cand
        if best_mask is None:
            break
        mask, current = best_mask, best
        out.append(current)
    return out, mask


def test_single_perfect_segment():
    truth = np.zeros((4, 4), bool)
    truth[:, :2] = True
    level = np.where(truth, 1, 2)
    res = simulate_clicks([level], truth, max_clicks=5)
    assert isinstance(res, ClickResult)
    assert res.dice_after == [1.0] * 5
    assert res.clicks_to_target == 1
    assert res.n_clicks == 1
    np.testing.assert_array_equal(res.mask, truth)
    assert res.clicks[0].add and res.clicks[0].label == 1 and res.clicks[0].level == 0


def test_add_then_remove():
    # truth = rows 0-2 of a 4x4 image (12 px)
    truth = np.zeros((4, 4), np.uint8)
    truth[:3] = 255
    whole = np.ones((4, 4), int)  # one segment: Dice 24/28
    rows = np.repeat(np.arange(1, 5)[:, None], 4, axis=1)  # one label per row
    res = simulate_clicks([rows, whole], truth, max_clicks=4, target_dice=0.85)
    assert res.dice_after[0] == pytest.approx(24 / 28)
    assert res.clicks[0].add and res.clicks[0].level == 1
    assert res.dice_after[1] == 1.0
    assert not res.clicks[1].add and res.clicks[1].level == 0 and res.clicks[1].label == 4
    assert res.dice_after == pytest.approx([24 / 28, 1.0, 1.0, 1.0])
    assert res.clicks_to_target == 1
    np.testing.assert_array_equal(res.mask, truth > 0)
    assert res.n_clicks == 2
    # a higher target needs the second click
    assert simulate_clicks([rows, whole], truth, target_dice=0.9).clicks_to_target == 2


def test_matches_naive_greedy():
    rng = np.random.default_rng(0)
    for trial in range(4):
        h, w = 12, 10
        truth = np.zeros((h, w), bool)
        truth[2:9, 3:8] = True
        truth ^= rng.random((h, w)) < 0.1
        levels = [rng.integers(1, k, (h, w)) for k in (3, 6, 12)]
        # add some blocky levels so that several clicks are useful
        levels.append((np.arange(h)[:, None] // 3) * 4 + (np.arange(w)[None, :] // 3) + 1)
        res = simulate_clicks(levels, truth, max_clicks=8)
        ref, ref_mask = _naive_greedy(levels, truth, 8)
        assert [c.dice for c in res.clicks] == pytest.approx(ref)
        assert res.n_clicks == len(ref) and len(ref) >= 2
        np.testing.assert_array_equal(res.mask, ref_mask)
        assert dice(res.mask, truth) == pytest.approx(res.dice_after[-1])


def test_never_reaching_target_is_capped():
    rng = np.random.default_rng(2)
    truth = rng.random((16, 16)) < 0.5
    levels = [rng.integers(1, 30, (16, 16)) for _ in range(3)]
    res = simulate_clicks(levels, truth, max_clicks=3, target_dice=0.99)
    assert len(res.dice_after) == 3
    assert res.clicks_to_target == 3
    assert res.dice_after[-1] < 0.99
    assert all(b > a for a, b in zip(res.dice_after, res.dice_after[1:]))


def test_early_stop_pads_with_last_value():
    truth = np.zeros((6, 6), bool)
    truth[0, 0] = True
    level = np.ones((6, 6), int)  # only candidate: whole image, Dice 2/37
    res = simulate_clicks([level], truth, max_clicks=20)
    assert res.n_clicks == 1
    assert len(res.dice_after) == 20
    assert res.dice_after == pytest.approx([2 / 37] * 20)
    assert res.clicks_to_target == 20
    assert res.dice_at(0) == 0.0 and res.dice_at(5) == pytest.approx(2 / 37)


def test_tiny_exact_segment_found_among_levels():
    truth = np.zeros((4, 4), bool)
    truth[0, 0] = True
    coarse = np.ones((4, 4), int)
    fine = np.ones((4, 4), int)
    fine[0, 0] = 2
    res = simulate_clicks([coarse, fine], truth, max_clicks=3)
    assert res.clicks[0].level == 1 and res.clicks[0].label == 2
    assert res.dice_after == [1.0, 1.0, 1.0]
    assert res.clicks_to_target == 1


def test_empty_truth():
    rng = np.random.default_rng(0)
    levels = [rng.integers(1, 5, (8, 8)) for _ in range(3)]
    res = simulate_clicks(levels, np.zeros((8, 8)), max_clicks=20)
    assert res.clicks_to_target == 0
    assert res.n_clicks == 0
    assert res.initial_dice == 1.0
    assert res.dice_after == [1.0] * 20
    assert not res.mask.any()


def test_accepts_stacked_array_and_float_labels():
    truth = np.zeros((5, 5), bool)
    truth[1:4, 1:4] = True
    stack = np.stack([np.where(truth, 1, 2), np.ones((5, 5), int)]).astype(np.float32)
    res = simulate_clicks(stack, truth, max_clicks=2)
    assert res.dice_after == [1.0, 1.0]


def test_errors():
    truth = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match="shape"):
        simulate_clicks([np.ones((4, 5), int)], truth)
    with pytest.raises(ValueError):
        simulate_clicks([], truth)
    with pytest.raises(ValueError):
        simulate_clicks(np.ones((4, 4), int), truth)
    with pytest.raises(ValueError):
        simulate_clicks([np.full((4, 4), 0.5)], truth)
    with pytest.raises(ValueError):
        simulate_clicks([np.ones((4, 4), int)], np.zeros((2, 4, 4)))
    with pytest.raises(ValueError):
        simulate_clicks([np.ones((4, 4), int)], truth, max_clicks=-1)


def test_speed_128_twenty_levels():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    truth = (yy - 60) ** 2 + (xx - 70) ** 2 < 30**2
    levels = []
    for k in np.linspace(4, 100, 20).astype(int):
        # blocky partitions with ~k segments, plus label noise
        n = int(np.ceil(np.sqrt(k)))
        lv = (yy * n // 128) * n + (xx * n // 128) + 1
        noise = rng.random(lv.shape) < 0.02
        lv[noise] = rng.integers(1, n * n + 1, int(noise.sum()))
        levels.append(lv)
    start = time.perf_counter()
    res = simulate_clicks(levels, truth, max_clicks=20)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert res.n_clicks >= 3
    assert res.dice_after[-1] > 0.85
