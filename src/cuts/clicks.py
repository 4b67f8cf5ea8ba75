"""Simulated user building a mask by clicking segments of a hierarchy.

Protocol (see ``docs/metrics.md``): the user starts from an empty mask.  At
each click they choose, over every granularity level and every segment of
that level, the single segment whose *addition* (union with the mask) or
*removal* (difference from the mask) raises the Dice coefficient against the
expert mask the most, and apply it.  They stop when no click raises Dice or
after ``max_clicks`` clicks.

Each candidate's Dice is O(1) from per-segment counts obtained with
:func:`numpy.bincount`: segment area ``a``, segment-truth overlap ``g``,
segment-mask overlap ``c`` and segment-mask-truth overlap ``ct``.  With
``M = |mask|``, ``I = |mask & truth|`` and ``T = |truth|``:

* add: ``Dice = 2 (I + g - ct) / (M + a - c + T)``
* remove: ``Dice = 2 (I - ct) / (M - c + T)``

(1.0 when the denominator is 0, i.e. both masks empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Click", "ClickResult", "simulate_clicks"]

# A click must raise Dice by more than this to count as an improvement.
_EPS = 1e-12


@dataclass(frozen=True)
class Click:
    """One simulated click.

    Attributes
    ----------
    level : int
        Index of the granularity level in ``levels``.
    label : int
        Label value of the clicked segment in that level.
    add : bool
        True for an addition (union), False for a removal (difference).
    dice : float
        Dice coefficient after the click.
    """

    level: int
    label: int
    add: bool
    dice: float


@dataclass
class ClickResult:
    """Outcome of :func:`simulate_clicks`.

    Attributes
    ----------
    dice_after : list of float
        ``dice_after[k]`` is the Dice after ``k + 1`` clicks, for
        ``k < max_clicks``.  If the user stopped early, the remaining
        entries repeat the last value (the initial Dice, 0.0 for a non-empty
        expert mask, if no click was made), so the list always has
        ``max_clicks`` entries.
    clicks_to_target : int
        Fewest clicks after which Dice >= ``target_dice`` (0 if the empty
        mask already reaches it, e.g. an empty expert mask); ``max_clicks``
        if it is never reached.
    mask : numpy.ndarray
        Final ``(H, W)`` boolean mask.
    clicks : list of Click
        The clicks actually made, in order (at most ``max_clicks``).
    initial_dice : float
        Dice of the empty starting mask (1.0 if the expert mask is empty,
        else 0.0).
    """

    dice_after: list[float]
    clicks_to_target: int
    mask: np.ndarray
    clicks: list[Click] = field(default_factory=list)
    initial_dice: float = 0.0

    @property
    def n_clicks(self) -> int:
        """Number of clicks actually made."""
        return len(self.clicks)

    def dice_at(self, n: int) -> float:
        """Dice after ``n`` clicks (``n = 0`` gives :attr:`initial_dice`).

        Parameters
        ----------
        n : int
            Number of clicks, ``0 <= n <= len(dice_after)``.

        Returns
        -------
        float
            The Dice coefficient.

        Raises
        ------
        ValueError
            If ``n`` is out of range.
        """
        if not 0 <= n <= len(self.dice_after):
            raise ValueError(f"n must be in [0, {len(self.dice_after)}], got {n}")
        return self.initial_dice if n == 0 else self.dice_after[n - 1]


def _dice_from_counts(inter: np.ndarray, size: np.ndarray, t: int) -> np.ndarray:
    """Vectorised Dice from intersection and mask sizes (1.0 if both empty)."""
    denom = size + t
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)
    return out


def simulate_clicks(
    levels: Sequence[ArrayLike] | ArrayLike,
    truth: ArrayLike,
    *,
    max_clicks: int = 20,
    target_dice: float = 0.85,
) -> ClickResult:
    """Simulate greedy segment clicks that build a mask matching ``truth``.

    Parameters
    ----------
    levels : sequence of array_like or array_like
        Label maps of one image, one per granularity level, each ``(H, W)``
        integer array (labels >= 1 by convention; every distinct value is
        one segment).  A ``(L, H, W)`` array is accepted too.
    truth : array_like
        ``(H, W)`` expert mask; non-zero is foreground.
    max_clicks : int, optional
        Maximum number of clicks (default 20).
    target_dice : float, optional
        Dice at which :attr:`ClickResult.clicks_to_target` is measured
        (default 0.85).

    Returns
    -------
    ClickResult
        Dice after each click, clicks needed to reach ``target_dice``
        (capped at ``max_clicks``), the final mask and the clicks made.

    Raises
    ------
    ValueError
        If ``levels`` is empty, a level or ``truth`` is not 2-D, the shapes
        differ, a level is not integer-valued, or ``max_clicks < 0``.

    Notes
    -----
    Ties are broken deterministically: the earlier level wins; within a
    level an addition beats a removal; then the smallest label wins.
    """
    if max_clicks < 0:
        raise ValueError(f"max_clicks must be >= 0, got {max_clicks}")
    t = np.asarray(truth)
    if t.ndim != 2:
        raise ValueError(f"truth must be 2-D, got shape {t.shape}")
    t = t != 0
    if isinstance(levels, np.ndarray) and levels.ndim == 2:
        raise ValueError("levels must be a sequence of (H, W) label maps, got one 2-D array")
    level_list = [np.asarray(lv) for lv in levels]
    if not level_list:
        raise ValueError("levels must contain at least one label map")

    t_flat = t.ravel()
    n_truth = int(t_flat.sum())

    # Per level: dense segment index per pixel, original label values, and
    # the fixed per-segment counts (area, overlap with truth).
    idx_list: list[np.ndarray] = []
    values_list: list[np.ndarray] = []
    area_list: list[np.ndarray] = []
    gt_list: list[np.ndarray] = []
    for i, lv in enumerate(level_list):
        if lv.shape != t.shape:
            raise ValueError(
                f"level {i} has shape {lv.shape}, but truth has shape {t.shape}; "
                "shapes must match"
            )
        if lv.dtype.kind not in "biu":
            if lv.dtype.kind == "f" and np.all(np.isfinite(lv)) and np.all(lv == np.round(lv)):
                lv = lv.astype(np.int64)
            else:
                raise ValueError(f"level {i} must hold integer labels, got dtype {lv.dtype}")
        values, inverse = np.unique(lv.ravel(), return_inverse=True)
        inverse = inverse.ravel().astype(np.intp)
        k = values.size
        idx_list.append(inverse)
        values_list.append(values)
        area_list.append(np.bincount(inverse, minlength=k).astype(np.int64))
        gt_list.append(np.bincount(inverse, weights=t_flat, minlength=k).astype(np.int64))

    mask = np.zeros(t_flat.shape, dtype=bool)
    n_mask = 0
    n_inter = 0
    current = 1.0 if n_truth == 0 else 0.0
    initial = current
    clicks: list[Click] = []

    while len(clicks) < max_clicks:
        best_gain = current + _EPS
        best: tuple[int, int, bool, float] | None = None
        mask_t = mask & t_flat
        for li, inv in enumerate(idx_list):
            k = values_list[li].size
            c = np.bincount(inv, weights=mask, minlength=k).astype(np.int64)
            ct = np.bincount(inv, weights=mask_t, minlength=k).astype(np.int64)
            a = area_list[li]
            g = gt_list[li]
            d_add = _dice_from_counts(n_inter + g - ct, n_mask + a - c, n_truth)
            d_rem = _dice_from_counts(n_inter - ct, n_mask - c, n_truth)
            j_add = int(np.argmax(d_add))
            j_rem = int(np.argmax(d_rem))
            if d_add[j_add] > best_gain:
                best_gain = float(d_add[j_add])
                best = (li, j_add, True, best_gain)
            if d_rem[j_rem] > best_gain:
                best_gain = float(d_rem[j_rem])
                best = (li, j_rem, False, best_gain)
        if best is None:
            break
        li, j, add, d = best
        seg = idx_list[li] == j
        if add:
            mask |= seg
        else:
            mask &= ~seg
        n_mask = int(mask.sum())
        n_inter = int((mask & t_flat).sum())
        current = _dice_from_counts(np.array(n_inter), np.array(n_mask), n_truth).item()
        clicks.append(Click(level=li, label=int(values_list[li][j]), add=add, dice=current))

    dice_after = [c.dice for c in clicks]
    last = dice_after[-1] if dice_after else initial
    dice_after += [last] * (max_clicks - len(dice_after))

    if initial >= target_dice:
        to_target = 0
    else:
        to_target = max_clicks
        for n, d in enumerate(dice_after[: len(clicks)], start=1):
            if d >= target_dice:
                to_target = n
                break

    return ClickResult(
        dice_after=dice_after,
        clicks_to_target=to_target,
        mask=mask.reshape(t.shape),
        clicks=clicks,
        initial_dice=initial,
    )
