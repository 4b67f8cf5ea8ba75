"""Positive mining by proximity and patch similarity (paper section 3.1).

For every anchor pixel, a positive is searched among nearby pixels: candidate
offsets ``(dy, dx)`` are drawn from ``-5..+4`` in each direction (as in the
official code), and the first of ``n_tries`` candidates whose 5x5 patch has an
SSIM above ``threshold`` with the anchor's patch becomes the positive. The
search is vectorised: all candidates of all anchors are scored at once.

Unlike the official code, the anchor itself is never its own positive: offset
``(0, 0)`` and candidates outside the image are excluded, and when no candidate
passes the threshold the most similar candidate is used.
"""

from __future__ import annotations

import numpy as np

from cuts.model import PATCH_SIZE

#: SSIM stabilisers for data in [-1, 1] (data range L = 2): C1 = (0.01 L)^2, C2 = (0.03 L)^2.
SSIM_C1 = (0.01 * 2.0) ** 2
SSIM_C2 = (0.03 * 2.0) ** 2


def patch_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM between corresponding patches, averaged over channels.

    Parameters
    ----------
    a, b : ndarray
        ``(..., C, p, p)`` patches with values in ``[-1, 1]``.

    Returns
    -------
    ndarray
        ``(...)`` SSIM of each pair: one global SSIM over the patch's pixels per
        channel (means, variances and covariance of the ``p*p`` values), averaged
        over channels. 1 for identical patches.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"patch shapes differ: {a.shape} vs {b.shape}.")
    axes = (-2, -1)
    mu_a = a.mean(axis=axes)
    mu_b = b.mean(axis=axes)
    da = a - mu_a[..., None, None]
    db = b - mu_b[..., None, None]
    var_a = (da * da).mean(axis=axes)
    var_b = (db * db).mean(axis=axes)
    cov = (da * db).mean(axis=axes)
    ssim = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    )
    return ssim.mean(axis=-1)


def gather_patches(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int, pad: int) -> np.ndarray:
    """Windows of side ``size`` centred on ``(rows, cols)`` of an image padded by ``pad``.

    ``padded`` is ``(C, H + 2*pad, W + 2*pad)``; the result is ``(*rows.shape, C, size, size)``.
    """
    half = size // 2
    offs = np.arange(size) - half + pad
    r = rows.reshape(-1)[:, None] + offs  # (n, size)
    c = cols.reshape(-1)[:, None] + offs
    out = padded[:, r[:, :, None], c[:, None, :]]  # (C, n, size, size)
    out = np.moveaxis(out, 0, 1)
    return out.reshape(*rows.shape, padded.shape[0], size, size)


def mine_positives(
    padded: np.ndarray,
    anchors: np.ndarray,
    rng: np.random.Generator,
    *,
    pad: int,
    n_tries: int = 20,
    threshold: float = 0.5,
    offset_range: tuple[int, int] = (-5, 4),
) -> tuple[np.ndarray, np.ndarray]:
    """Find one positive pixel for every anchor.

    Parameters
    ----------
    padded : ndarray
        ``(C, H + 2*pad, W + 2*pad)`` replicate-padded image scaled to ``[-1, 1]``;
        ``pad`` must be at least 2 (half the 5x5 patch).
    anchors : ndarray
        ``(n, 2)`` integer ``(row, col)`` anchor positions in image coordinates.
    rng : numpy.random.Generator
        Source of the random candidate offsets.
    n_tries : int
        Candidates drawn per anchor.
    threshold : float
        SSIM a candidate must exceed to be accepted; the first such candidate wins.
    offset_range : (int, int)
        Inclusive range of candidate offsets in each direction.

    Returns
    -------
    positives : ndarray
        ``(n, 2)`` positive positions, always different from the anchor and inside the image.
    ssim : ndarray
        ``(n,)`` SSIM of each chosen positive with its anchor.
    """
    anchors = np.asarray(anchors)
    if anchors.ndim != 2 or anchors.shape[1] != 2:
        raise ValueError(f"anchors must be (n, 2) positions, got shape {anchors.shape}.")
    height = padded.shape[1] - 2 * pad
    width = padded.shape[2] - 2 * pad
    lo, hi = offset_range
    n = anchors.shape[0]
    offsets = rng.integers(lo, hi + 1, size=(n, n_tries, 2))
    cand = anchors[:, None, :] + offsets
    valid = (
        (offsets != 0).any(axis=-1)
        & (cand[..., 0] >= 0) & (cand[..., 0] < height)
        & (cand[..., 1] >= 0) & (cand[..., 1] < width)
    )
    cand_r = np.clip(cand[..., 0], 0, height - 1)
    cand_c = np.clip(cand[..., 1], 0, width - 1)
    anchor_patches = gather_patches(padded, anchors[:, 0], anchors[:, 1], PATCH_SIZE, pad)
    cand_patches = gather_patches(padded, cand_r, cand_c, PATCH_SIZE, pad)
    scores = patch_ssim(np.broadcast_to(anchor_patches[:, None], cand_patches.shape), cand_patches)
    scores = np.where(valid, scores, -np.inf)
    passing = scores > threshold
    first = np.argmax(passing, axis=1)  # first passing try
    best = np.argmax(scores, axis=1)  # fallback: most similar valid candidate
    choice = np.where(passing.any(axis=1), first, best)
    idx = np.arange(n)
    if not np.isfinite(scores[idx, choice]).all():
        # every candidate invalid (only possible for tiny images): pick any neighbour
        for i in np.flatnonzero(~np.isfinite(scores[idx, choice])):
            r, c = anchors[i]
            r2 = r + 1 if r + 1 < height else r - 1
            cand_r[i, 0], cand_c[i, 0], choice[i] = r2, c, 0
            scores[i, 0] = np.nan
    positives = np.stack([cand_r[idx, choice], cand_c[idx, choice]], axis=1)
    return positives, scores[idx, choice]
