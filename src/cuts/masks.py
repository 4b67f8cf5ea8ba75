"""Binary-mask helpers: the paper's ground-truth-hint binarisation and set operations."""

from __future__ import annotations

import numpy as np

__all__ = ["binarize_by_hint", "union", "difference", "dice"]


def _as_bool(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{name} must be a boolean or numeric mask; got dtype {arr.dtype}.")
        arr = arr != 0
    return arr


def binarize_by_hint(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Binarise a label map with a ground-truth hint (paper section 3.2.3).

    The foreground is the label that occurs most often inside the true mask;
    every pixel carrying that label becomes foreground. Ties go to the
    smallest label. An empty ``truth`` gives an empty mask.

    Parameters
    ----------
    labels : np.ndarray
        Integer label map of any shape.
    truth : np.ndarray
        Mask of the same shape (bool, or numbers where non-zero is foreground).

    Returns
    -------
    np.ndarray
        Boolean mask of the shape of ``labels``.
    """
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be an integer label map; got dtype {lab.dtype}.")
    t = _as_bool(truth, "truth")
    if lab.shape != t.shape:
        raise ValueError(f"labels and truth must have the same shape; got {lab.shape} and {t.shape}.")
    inside = lab[t]
    if inside.size == 0:
        return np.zeros(lab.shape, dtype=bool)
    values, counts = np.unique(inside, return_counts=True)
    best = values[int(np.argmax(counts))]
    return lab == best


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixel-wise union of two masks of the same shape (boolean result)."""
    x, y = _as_bool(a, "a"), _as_bool(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"masks must have the same shape; got {x.shape} and {y.shape}.")
    return x | y


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels in ``a`` but not in ``b`` (boolean result; same shapes required)."""
    x, y = _as_bool(a, "a"), _as_bool(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"masks must have the same shape; got {x.shape} and {y.shape}.")
    return x & ~y


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two masks; 1.0 when both are empty."""
    x, y = _as_bool(a, "a"), _as_bool(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"masks must have the same shape; got {x.shape} and {y.shape}.")
    s = int(x.sum()) + int(y.sum())
    if s == 0:
        return 1.0
    return 2.0 * int((x & y).sum()) / s
