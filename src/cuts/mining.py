"""Positive mining by proximity and patch similarity (paper section 3.1).

For every anchor pixel, a positive is searched among nearby pixels: candidate
offsets ``(dy, dx)`` are drawn from ``-5..+4`` in each direction (as in the
official code), and the first of ``n_tries`` candidates whose 5x5 patch has an
SSIM above ``threshold`` with the anchor's patch becomes the positive. The
search is vectorised: all candidates of all anchors (of all images of a
training step, see :class:`PatchSource`) are scored at once.

Unlike the official code, the anchor itself is never its own positive: offset
``(0, 0)`` and candidates outside the image are excluded, and when no candidate
passes the threshold the most similar candidate is used.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        ``(..., C, p, p)`` patches with values in ``[-1, 1]``; ``a`` may also have
        fewer leading axes than ``b`` and is then broadcast against it (one anchor
        patch against many candidates), without repeating its own statistics.

    Returns
    -------
    ndarray
        ``(...)`` SSIM of each pair: one global SSIM over the patch's pixels per
        channel (means, variances and covariance of the ``p*p`` values), averaged
        over channels. 1 for identical patches.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape[-3:] != b.shape[-3:] or np.broadcast_shapes(a.shape, b.shape) != b.shape:
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
    return PatchSource([padded], pad).patches(0, rows, cols, size)


class PatchSource:
    """Padded images of any sizes, from which patches of all of them are gathered at once.

    The images are kept as one flat ``(C, total)`` buffer, so that a training step
    gathers the windows of every image it uses with a single indexing operation
    instead of one per image.

    Parameters
    ----------
    padded : sequence of ndarray
        ``(C, H_i + 2*pad, W_i + 2*pad)`` images (replicate-padded), one channel
        count for all.
    pad : int
        Padding on each side; patches of side up to ``2 * pad + 1`` can be taken
        at every pixel.
    """

    def __init__(self, padded: Sequence[np.ndarray], pad: int) -> None:
        if len(padded) == 0:
            raise ValueError("PatchSource needs at least one image.")
        channels = {p.shape[0] for p in padded}
        if len(channels) != 1 or any(p.ndim != 3 for p in padded):
            raise ValueError("padded images must all be (C, H, W) arrays with the same C.")
        self.pad = int(pad)
        self.channels = channels.pop()
        if len(padded) == 1:  # a view, no copy
            self.flat = np.asarray(padded[0]).reshape(self.channels, -1)
        else:
            self.flat = np.concatenate([np.asarray(p).reshape(self.channels, -1) for p in padded], axis=1)
        sizes = np.array([p.shape[1] * p.shape[2] for p in padded], dtype=np.int64)
        self.base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.stride = np.array([p.shape[2] for p in padded], dtype=np.int64)
        self.height = np.array([p.shape[1] - 2 * self.pad for p in padded], dtype=np.int64)
        self.width = np.array([p.shape[2] - 2 * self.pad for p in padded], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def patches(self, image: np.ndarray | int, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
        """Windows of side ``size`` centred on pixels ``(rows, cols)`` of images ``image``.

        ``image`` (an index, or an array broadcastable to ``rows``) says which image
        each pixel belongs to; positions are in unpadded image coordinates. Returns
        ``(*rows.shape, C, size, size)``.
        """
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        image = np.broadcast_to(np.asarray(image), rows.shape).reshape(-1)
        half = size // 2
        stride = self.stride[image]
        centre = self.base[image] + (rows.reshape(-1) + self.pad) * stride + cols.reshape(-1) + self.pad
        offs = np.arange(-half, size - half)
        idx = centre[:, None, None] + offs[None, :, None] * stride[:, None, None] + offs[None, None, :]
        out = np.moveaxis(self.flat[:, idx], 0, 1)  # (n, C, size, size)
        return out.reshape(*rows.shape, self.channels, size, size)


def draw_offsets(
    n: int, rng: np.random.Generator, *, n_tries: int = 20, offset_range: tuple[int, int] = (-5, 4)
) -> np.ndarray:
    """``(n, n_tries, 2)`` random candidate offsets in ``offset_range`` (inclusive) for ``n`` anchors."""
    lo, hi = offset_range
    return rng.integers(lo, hi + 1, size=(n, n_tries, 2))


def choose_positives(
    source: PatchSource,
    image: np.ndarray,
    anchors: np.ndarray,
    offsets: np.ndarray,
    *,
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The positive of every anchor among its candidates ``anchor + offsets``.

    Parameters
    ----------
    source : PatchSource
        The images (padded by at least 2).
    image : ndarray
        ``(n,)`` index of the image of each anchor.
    anchors : ndarray
        ``(n, 2)`` anchor positions ``(row, col)``.
    offsets : ndarray
        ``(n, tries, 2)`` candidate offsets (see :func:`draw_offsets`).
    threshold : float
        The first candidate with an SSIM above it wins; when none passes, the
        most similar valid candidate.

    Returns
    -------
    positives, ssim : ndarray
        ``(n, 2)`` positions, always different from the anchor and inside its
        image; ``(n,)`` their SSIM with the anchor.
    """
    n = anchors.shape[0]
    image = np.broadcast_to(np.asarray(image), (n,))
    height = source.height[image][:, None]
    width = source.width[image][:, None]
    cand = anchors[:, None, :] + offsets
    valid = (
        (offsets != 0).any(axis=-1)
        & (cand[..., 0] >= 0) & (cand[..., 0] < height)
        & (cand[..., 1] >= 0) & (cand[..., 1] < width)
    )
    cand_r = np.clip(cand[..., 0], 0, height - 1)
    cand_c = np.clip(cand[..., 1], 0, width - 1)
    anchor_patches = source.patches(image, anchors[:, 0], anchors[:, 1], PATCH_SIZE)
    cand_patches = source.patches(image[:, None], cand_r, cand_c, PATCH_SIZE)
    scores = patch_ssim(anchor_patches[:, None], cand_patches)
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
            r2 = r + 1 if r + 1 < height[i, 0] else r - 1
            cand_r[i, 0], cand_c[i, 0], choice[i] = r2, c, 0
            scores[i, 0] = np.nan
    positives = np.stack([cand_r[idx, choice], cand_c[idx, choice]], axis=1)
    return positives, scores[idx, choice]


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
    """Find one positive pixel for every anchor of one image.

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
    offsets = draw_offsets(anchors.shape[0], rng, n_tries=n_tries, offset_range=offset_range)
    source = PatchSource([padded], pad)
    return choose_positives(source, np.zeros(anchors.shape[0], dtype=np.int64), anchors, offsets, threshold=threshold)
