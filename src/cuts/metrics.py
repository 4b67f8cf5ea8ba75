"""Segmentation metrics used in the CUTS paper (Table 1).

All functions compare a predicted binary mask with an expert ("true") mask.
Masks are 2-D arrays of any numeric or boolean dtype; every non-zero pixel is
foreground.  Before any metric is computed both masks are converted to
``float64`` arrays holding **0 and 1** -- the scale at which the official CUTS
evaluation (``src/scripts_analysis/run_metrics.py`` and ``src/utils/metrics.py``
of ChenLiu-1996/CUTS) feeds masks to its metrics: its expert labels are
``uint8`` arrays of 0/1 and its binarised predictions are boolean arrays.  A
mask stored as 0/255 therefore gives exactly the same numbers as its 0/1
version.

The conventions, which follow the official code except where noted, are:

* :func:`dice` -- ``2|P & T| / (|P| + |T|)``; 1.0 when both masks are empty.
* :func:`hausdorff` -- symmetric Hausdorff distance (pixels) over *all*
  foreground pixels (as :func:`skimage.metrics.hausdorff_distance`); the image
  diagonal when exactly one mask is empty.  Unlike the official code, which
  also returns the diagonal when *both* are empty, we return 0.0 then.
* :func:`mask_ssim` -- :func:`skimage.metrics.structural_similarity` of the
  0/1 masks, 7x7 uniform window, ``data_range = max(T) - min(T)`` (1.0 when
  that is 0), expert mask first.
* :func:`rmse` and :func:`ergas` -- exactly ``sewar.full_ref.rmse`` and
  ``sewar.full_ref.ergas`` of sewar 0.4.5 (``ergas(GT, P, r=4, ws=8)``, a
  sliding-window ERGAS) with the expert mask as ``GT``.

See ``docs/metrics.md`` for the formulas.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = [
    "dice",
    "hausdorff",
    "mask_ssim",
    "rmse",
    "ergas",
    "evaluate_mask",
    "METRIC_NAMES",
    "ERGAS_RATIO",
    "ERGAS_WINDOW",
    "SSIM_WINDOW",
]

#: Keys of the dictionary returned by :func:`evaluate_mask`, in Table 1 order.
METRIC_NAMES: tuple[str, ...] = ("dice", "hausdorff", "ssim", "ergas", "rmse")

#: sewar 0.4.5 default ``r`` (ratio of high to low resolution) of ``ergas``.
ERGAS_RATIO: float = 4.0
#: sewar 0.4.5 default sliding-window size ``ws`` of ``ergas``.
ERGAS_WINDOW: int = 8
#: scikit-image default SSIM window (used unless the image is smaller).
SSIM_WINDOW: int = 7


def _as_binary_pair(pred: ArrayLike, truth: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate two masks and return them as boolean arrays.

    Parameters
    ----------
    pred, truth : array_like
        2-D masks; non-zero pixels are foreground.

    Returns
    -------
    tuple of numpy.ndarray
        ``(pred, truth)`` as boolean arrays.

    Raises
    ------
    ValueError
        If the masks are not 2-D or their shapes differ.
    """
    p = np.asarray(pred)
    t = np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(
            f"pred and truth must have the same shape, got {p.shape} and {t.shape}"
        )
    if p.ndim != 2:
        raise ValueError(f"masks must be 2-D, got shape {p.shape}")
    return p != 0, t != 0


def dice(pred: ArrayLike, truth: ArrayLike) -> float:
    """Dice coefficient of two binary masks.

    Parameters
    ----------
    pred, truth : array_like
        2-D masks of the same shape (bool, 0/1, 0/255, ...; non-zero is
        foreground).

    Returns
    -------
    float
        ``2 |pred & truth| / (|pred| + |truth|)`` in [0, 1]; 1.0 when both
        masks are empty.

    Raises
    ------
    ValueError
        If the shapes differ or the masks are not 2-D.
    """
    p, t = _as_binary_pair(pred, truth)
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def hausdorff(pred: ArrayLike, truth: ArrayLike) -> float:
    """Symmetric Hausdorff distance between the foregrounds of two masks.

    The distance is taken over all foreground pixels (not only contours), in
    pixel units: ``max(max_{p in P} d(p, T), max_{t in T} d(t, P))`` with
    Euclidean ``d``.  It is computed with two Euclidean distance transforms,
    so it is fast even for 1024x1024 masks.

    Parameters
    ----------
    pred, truth : array_like
        2-D masks of the same shape; non-zero is foreground.

    Returns
    -------
    float
        The Hausdorff distance.  When exactly one mask is empty the image
        diagonal ``sqrt(H**2 + W**2)`` is returned (as in the official CUTS
        code); when both are empty, 0.0.

    Raises
    ------
    ValueError
        If the shapes differ or the masks are not 2-D.
    """
    p, t = _as_binary_pair(pred, truth)
    p_any, t_any = bool(p.any()), bool(t.any())
    if not p_any and not t_any:
        return 0.0
    if not p_any or not t_any:
        h, w = p.shape
        return float(math.sqrt(h * h + w * w))
    # distance_transform_edt gives, for each non-zero input pixel, the distance
    # to the nearest zero pixel; with input ~t that is the distance to t.
    to_truth = ndimage.distance_transform_edt(~t)
    to_pred = ndimage.distance_transform_edt(~p)
    return float(max(to_truth[p].max(), to_pred[t].max()))


def mask_ssim(pred: ArrayLike, truth: ArrayLike) -> float:
    """Structural similarity (SSIM) of two binary masks.

    Reproduces ``range_aware_ssim(label_true, label_pred)`` of the official
    CUTS code: :func:`skimage.metrics.structural_similarity` on the 0/1 masks
    (expert mask first) with scikit-image defaults -- a 7x7 uniform window,
    ``K1=0.01``, ``K2=0.03``, sample covariance, mean over the map without
    the 3-pixel border -- and ``data_range = max(truth) - min(truth)``, i.e.
    1.0, or 1.0 as well when the expert mask is constant.  For images
    smaller than 7 pixels on a side the window shrinks to the largest odd
    size that fits, as in the official code.

    Parameters
    ----------
    pred, truth : array_like
        2-D masks of the same shape; non-zero is foreground.

    Returns
    -------
    float
        Mean SSIM in [-1, 1] (1.0 for identical masks).

    Raises
    ------
    ValueError
        If the shapes differ, the masks are not 2-D, or a side is shorter
        than 1 pixel.
    """
    from skimage.metrics import structural_similarity

    p, t = _as_binary_pair(pred, truth)
    h, w = t.shape
    if min(h, w) < 1:
        raise ValueError(f"masks must not be empty arrays, got shape {t.shape}")
    win = SSIM_WINDOW
    if min(h, w) < SSIM_WINDOW:
        win = min(h, w)
        if win % 2 == 0:
            win -= 1
    tf = t.astype(np.float64)
    pf = p.astype(np.float64)
    data_range = float(tf.max() - tf.min())
    if data_range == 0:
        data_range = 1.0
    return float(structural_similarity(tf, pf, win_size=win, data_range=data_range))


def rmse(pred: ArrayLike, truth: ArrayLike) -> float:
    """Root mean squared error of two binary masks at 0/1 scale.

    Equal to ``sewar.full_ref.rmse(truth, pred)`` (sewar 0.4.5) on 0/1 masks:
    ``sqrt(mean((T - P) ** 2))``, which for binary masks is the square root
    of the fraction of disagreeing pixels.

    Parameters
    ----------
    pred, truth : array_like
        2-D masks of the same shape; non-zero is foreground.

    Returns
    -------
    float
        RMSE in [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ or the masks are not 2-D.
    """
    p, t = _as_binary_pair(pred, truth)
    if p.size == 0:
        raise ValueError("masks must not be empty arrays")
    return float(np.sqrt(np.mean(np.not_equal(p, t))))


def ergas(pred: ArrayLike, truth: ArrayLike) -> float:
    """ERGAS of two binary masks, as computed by sewar 0.4.5.

    This is ``sewar.full_ref.ergas(truth, pred)`` of sewar 0.4.5 with its
    defaults ``r=4`` and ``ws=8`` on 0/1 masks (the value is unchanged if
    both masks are scaled by the same factor).  sewar 0.4.5 uses a sliding
    window: with ``U`` the 8x8 mean filter (:func:`scipy.ndimage.uniform_filter`,
    ``mode='reflect'``),

    * ``rmse_map = sqrt(U((T - P) ** 2))``
    * ``means_map = U(T) / ws**2`` (sewar divides the already averaged
      window by ``ws**2`` a second time)
    * ``ergas_map = 100 * r * rmse_map / means_map``, set to 0 where
      ``means_map == 0`` (windows with no expert foreground)

    and the result is the mean of ``ergas_map`` without a border of
    ``s = round(ws / 2) = 4`` pixels.  Hence
    ``ergas_map = 25600 * sqrt(local MSE) / local mean of T`` and values are
    in the thousands, as in Table 1 of the paper.  ERGAS is not symmetric:
    the expert mask sets the normalisation.  An empty expert mask gives 0.0.

    Parameters
    ----------
    pred, truth : array_like
        2-D masks of the same shape; non-zero is foreground.

    Returns
    -------
    float
        ERGAS (>= 0, lower is better); ``nan`` when a side of the masks is at
        most 8 pixels (sewar then averages an empty map).

    Raises
    ------
    ValueError
        If the shapes differ or the masks are not 2-D.
    """
    p, t = _as_binary_pair(pred, truth)
    ws = ERGAS_WINDOW
    s = int(np.round(ws / 2))
    if min(t.shape) <= 2 * s:
        return float("nan")
    tf = t.astype(np.float64)
    pf = p.astype(np.float64)
    rmse_map = np.sqrt(ndimage.uniform_filter((tf - pf) ** 2, ws))
    # sewar filters the (H, W, 1) array over all three axes; on the length-1
    # axis the reflect-padded window only repeats the same value.
    means_map = ndimage.uniform_filter(tf[:, :, None], ws)[:, :, 0] / ws**2
    zero = means_map == 0
    means_map[zero] = 1.0
    rmse_map[zero] = 0.0
    ergas_map = 100.0 * ERGAS_RATIO * np.sqrt(rmse_map**2 / means_map**2)
    return float(np.mean(ergas_map[s:-s, s:-s]))


def evaluate_mask(pred: ArrayLike, truth: ArrayLike) -> dict[str, float]:
    """All Table 1 metrics of one predicted mask.

    Parameters
    ----------
    pred, truth : array_like
        2-D masks of the same shape; non-zero is foreground.

    Returns
    -------
    dict of str to float
        Keys ``dice``, ``hausdorff``, ``ssim``, ``ergas`` and ``rmse`` (see
        :data:`METRIC_NAMES`).

    Raises
    ------
    ValueError
        If the shapes differ or the masks are not 2-D.
    """
    p, t = _as_binary_pair(pred, truth)
    return {
        "dice": dice(p, t),
        "hausdorff": hausdorff(p, t),
        "ssim": mask_ssim(p, t),
        "ergas": ergas(p, t),
        "rmse": rmse(p, t),
    }
