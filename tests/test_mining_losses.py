"""Stage-1 positive mining and losses: cuts.mining, cuts.losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cuts.losses import nt_xent_loss, reconstruction_loss
from cuts.mining import PatchSource, choose_positives, draw_offsets, gather_patches, mine_positives, patch_ssim
from cuts.model import HALO

PAD = HALO


def _padded(h=24, w=30, c=1, seed=0, const=None):
    rng = np.random.default_rng(seed)
    img = np.full((c, h, w), const, np.float32) if const is not None else rng.uniform(-1, 1, (c, h, w)).astype(np.float32)
    return img, np.pad(img, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="edge")


# ---------------------------------------------------------------- patch_ssim


def test_ssim_identical_is_one():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (10, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(patch_ssim(a, a), 1.0, atol=1e-5)
    const = np.full((2, 1, 5, 5), 0.3, np.float32)
    np.testing.assert_allclose(patch_ssim(const, const), 1.0, atol=1e-6)


def test_ssim_symmetric_bounded_and_shapes():
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (4, 6, 2, 5, 5))
    b = rng.uniform(-1, 1, (4, 6, 2, 5, 5))
    s = patch_ssim(a, b)
    assert s.shape == (4, 6)
    np.testing.assert_allclose(s, patch_ssim(b, a), atol=1e-6)
    assert (s <= 1 + 1e-6).all() and (s >= -1 - 1e-6).all()
    assert (s < 0.99).all()
    # an inverted zero-mean patch is anti-correlated
    a1 = a[0, 0, :1] - a[0, 0, :1].mean()
    assert patch_ssim(a1[None], -a1[None])[0] < 0
    with pytest.raises(ValueError):
        patch_ssim(a, b[..., :4])


def test_ssim_matches_formula():
    rng = np.random.default_rng(2)
    a = rng.uniform(-1, 1, (1, 5, 5))
    b = 0.5 * a + rng.normal(0, 0.1, (1, 5, 5))
    c1, c2 = (0.02) ** 2, (0.06) ** 2
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(), b.var()
    cov = ((a - ma) * (b - mb)).mean()
    expected = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert patch_ssim(a, b) == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------- gather_patches


def test_gather_patches_matches_slicing():
    img, padded = _padded(20, 23, c=2)
    rows = np.array([0, 5, 19, 10])
    cols = np.array([0, 22, 3, 11])
    p = gather_patches(padded, rows, cols, 5, PAD)
    assert p.shape == (4, 2, 5, 5)
    for i, (r, c) in enumerate(zip(rows, cols)):
        np.testing.assert_array_equal(p[i], padded[:, r + PAD - 2 : r + PAD + 3, c + PAD - 2 : c + PAD + 3])
    np.testing.assert_array_equal(p[3, :, 2, 2], img[:, 10, 11])
    w = gather_patches(padded, rows.reshape(2, 2), cols.reshape(2, 2), 17, PAD)
    assert w.shape == (2, 2, 2, 17, 17)


def test_patch_source_gathers_from_images_of_different_sizes():
    imgs = [_padded(20, 23, c=2, seed=1)[1], _padded(31, 17, c=2, seed=2)[1], _padded(18, 18, c=2, seed=3)[1]]
    src = PatchSource(imgs, PAD)
    assert len(src) == 3 and list(src.height) == [20, 31, 18] and list(src.width) == [23, 17, 18]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 3, 40)
    rows = rng.integers(0, src.height[image])
    cols = rng.integers(0, src.width[image])
    for size in (5, 17):
        got = src.patches(image, rows, cols, size)
        assert got.shape == (40, 2, size, size)
        for i in range(40):
            one = gather_patches(imgs[image[i]], rows[i : i + 1], cols[i : i + 1], size, PAD)[0]
            np.testing.assert_array_equal(got[i], one)
    # one image index for a whole grid of positions
    grid = src.patches(1, rows[:6].reshape(2, 3) % 31, cols[:6].reshape(2, 3) % 17, 5)
    assert grid.shape == (2, 3, 2, 5, 5)


def test_patch_source_rejects_mixed_channels():
    with pytest.raises(ValueError, match="same C"):
        PatchSource([_padded(c=1)[1], _padded(c=3)[1]], PAD)
    with pytest.raises(ValueError):
        PatchSource([], PAD)


def test_positives_of_several_images_at_once_match_one_image_at_a_time():
    imgs = [_padded(20, 23, c=3, seed=1)[1], _padded(26, 19, c=3, seed=2)[1]]
    src = PatchSource(imgs, PAD)
    rng = np.random.default_rng(7)
    anchors = [np.stack([rng.integers(0, 20, 9), rng.integers(0, 19, 9)], axis=1) for _ in imgs]
    offsets = [draw_offsets(9, rng) for _ in imgs]
    both, s_both = choose_positives(
        src, np.repeat([0, 1], 9), np.concatenate(anchors), np.concatenate(offsets), threshold=0.3
    )
    for k in range(2):
        alone, s_alone = choose_positives(PatchSource([imgs[k]], PAD), np.zeros(9, int), anchors[k], offsets[k], threshold=0.3)
        np.testing.assert_array_equal(both[9 * k : 9 * k + 9], alone)
        np.testing.assert_array_equal(s_both[9 * k : 9 * k + 9], s_alone)


def test_ssim_broadcasts_one_patch_against_many():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (4, 1, 3, 5, 5)).astype(np.float32)
    b = rng.uniform(-1, 1, (4, 6, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(patch_ssim(a, b), patch_ssim(np.broadcast_to(a, b.shape), b))
    with pytest.raises(ValueError):
        patch_ssim(b, a)


# ---------------------------------------------------------------- mine_positives


def _all_anchors(h, w):
    rr, cc = np.mgrid[:h, :w]
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


@pytest.mark.parametrize("const", [None, 0.25])
@pytest.mark.parametrize("threshold,n_tries", [(0.5, 20), (2.0, 20), (-2.0, 1), (0.5, 1), (0.9, 3)])
def test_positives_valid_everywhere(const, threshold, n_tries):
    h, w = 18, 21
    _, padded = _padded(h, w, c=1, const=const)
    anchors = _all_anchors(h, w)  # includes all corners and edges
    pos, ssim = mine_positives(padded, anchors, np.random.default_rng(0), pad=PAD, n_tries=n_tries, threshold=threshold)
    assert pos.shape == anchors.shape and ssim.shape == (len(anchors),)
    assert (pos != anchors).any(axis=1).all(), "an anchor was its own positive"
    assert (pos[:, 0] >= 0).all() and (pos[:, 0] < h).all()
    assert (pos[:, 1] >= 0).all() and (pos[:, 1] < w).all()
    off = pos - anchors
    assert (off >= -5).all() and (off <= 4).all()


def test_corner_anchors_many_draws():
    h, w = 17, 17
    _, padded = _padded(h, w, c=3, seed=5)
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]] * 50)
    for seed in range(5):
        pos, _ = mine_positives(padded, corners, np.random.default_rng(seed), pad=PAD, n_tries=2)
        assert (pos != corners).any(axis=1).all()
        assert ((pos >= 0) & (pos < 17)).all()


def test_constant_image_positive_ssim_one():
    _, padded = _padded(20, 20, const=-0.4)
    anchors = _all_anchors(20, 20)
    pos, ssim = mine_positives(padded, anchors, np.random.default_rng(1), pad=PAD)
    np.testing.assert_allclose(ssim, 1.0, atol=1e-5)
    assert (pos != anchors).any(axis=1).all()


def test_deterministic_with_seed_and_varies_otherwise():
    _, padded = _padded(30, 30, seed=3)
    anchors = _all_anchors(30, 30)[::7]
    a = mine_positives(padded, anchors, np.random.default_rng(42), pad=PAD)
    b = mine_positives(padded, anchors, np.random.default_rng(42), pad=PAD)
    c = mine_positives(padded, anchors, np.random.default_rng(43), pad=PAD)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_reported_ssim_and_threshold():
    _, padded = _padded(30, 30, seed=4)
    anchors = _all_anchors(30, 30)[::5]
    pos, ssim = mine_positives(padded, anchors, np.random.default_rng(0), pad=PAD, threshold=0.3)
    pa = gather_patches(padded, anchors[:, 0], anchors[:, 1], 5, PAD)
    pp = gather_patches(padded, pos[:, 0], pos[:, 1], 5, PAD)
    np.testing.assert_allclose(ssim, patch_ssim(pa, pp), atol=1e-5)
    # the most-similar fallback means every chosen positive is at least as similar as a fixed neighbour
    # is not guaranteed, but a smooth image must give mostly passing positives
    smooth = np.pad(np.linspace(-1, 1, 30 * 30, dtype=np.float32).reshape(1, 30, 30), ((0, 0), (PAD, PAD), (PAD, PAD)), mode="edge")
    _, s2 = mine_positives(smooth, anchors, np.random.default_rng(0), pad=PAD, threshold=0.3)
    assert (s2 > 0.3).mean() > 0.9


def test_prefers_similar_texture():
    # left: +1, right: -1; anchors near the boundary must pick positives on their own side
    img = np.ones((1, 20, 20), np.float32)
    img[:, :, 10:] = -1
    padded = np.pad(img, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="edge")
    anchors = np.array([[r, 4] for r in range(20)] + [[r, 15] for r in range(20)])
    pos, ssim = mine_positives(padded, anchors, np.random.default_rng(0), pad=PAD, n_tries=20, threshold=0.9)
    same_side = (pos[:, 1] < 10) == (anchors[:, 1] < 10)
    assert same_side.all()
    np.testing.assert_allclose(ssim, 1.0, atol=1e-5)


def test_bad_anchor_shape():
    _, padded = _padded()
    with pytest.raises(ValueError):
        mine_positives(padded, np.array([1, 2, 3]), np.random.default_rng(0), pad=PAD)


# ---------------------------------------------------------------- losses


def test_nt_xent_perfect_vs_random():
    n, d = 8, 16
    anchors = torch.eye(d)[:n][None]  # orthogonal: negatives are far
    perfect = nt_xent_loss(anchors, anchors.clone(), temperature=0.1)
    # exact value: each view sees its positive at cos 1 and 2n-2 negatives at cos 0
    expected = np.log1p((2 * n - 2) * np.exp(-10.0))
    assert float(perfect) == pytest.approx(expected, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    rand_a = torch.randn(1, n, d, generator=g)
    rand_p = torch.randn(1, n, d, generator=g)
    random_loss = nt_xent_loss(rand_a, rand_p, temperature=0.1)
    assert float(random_loss) > float(perfect) + 1.0
    # swapped positives (each anchor matched with another's positive) are worse still than random-ish
    swapped = nt_xent_loss(anchors, anchors.roll(1, dims=1), temperature=0.1)
    assert float(swapped) > 5.0


def test_nt_xent_scale_invariant_and_intra_image():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 6, 8, generator=g)
    p = a + 0.3 * torch.randn(2, 6, 8, generator=g)
    loss = nt_xent_loss(a, p)
    assert float(nt_xent_loss(3.0 * a, 0.5 * p)) == pytest.approx(float(loss), rel=1e-5)
    per_image = (nt_xent_loss(a[:1], p[:1]) + nt_xent_loss(a[1:], p[1:])) / 2
    assert float(loss) == pytest.approx(float(per_image), rel=1e-5)


def test_nt_xent_temperature_and_shapes():
    a = torch.randn(1, 4, 8)
    for t in (0.0, -0.5):
        with pytest.raises(ValueError, match="temperature"):
            nt_xent_loss(a, a, temperature=t)
    with pytest.raises(ValueError):
        nt_xent_loss(a, a[:, :3])
    with pytest.raises(ValueError):
        nt_xent_loss(a[0], a[0])


def test_nt_xent_gradient_finite():
    a = torch.randn(2, 4, 8, requires_grad=True)
    p = torch.randn(2, 4, 8, requires_grad=True)
    nt_xent_loss(a, p).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_reconstruction_loss():
    x = torch.randn(5, 3, 5, 5)
    assert float(reconstruction_loss(x, x.clone())) == 0.0
    y = x + 0.5
    assert float(reconstruction_loss(x, y)) == pytest.approx(0.25, rel=1e-5)
    with pytest.raises(ValueError):
        reconstruction_loss(x, x[:, :1])
