"""Working resolution for large images, without Qt.

Embedding and condensation cost memory and time in proportion to the number of
pixels (the embeddings alone are ``H * W * 128 * 4`` bytes), so large images
(e.g. 2048x2048 fundus photographs) are processed at a reduced *working
resolution*: the image is downsampled (area-averaged) before training,
embedding and condensation, and the resulting label maps are mapped back to the
full image with nearest-neighbour lookups, so masks and exports always have the
image's own size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EMBEDDING_DIM = 128
BYTES_PER_FLOAT = 4


def working_shape(shape: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """Shape after limiting the longer side to ``max_side`` (``None``/0: full resolution)."""
    h, w = int(shape[0]), int(shape[1])
    if not max_side or max(h, w) <= max_side:
        return h, w
    f = max_side / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def embedding_bytes(shape: tuple[int, int]) -> int:
    """Bytes of the float32 embeddings of one slice at ``shape``."""
    return int(shape[0]) * int(shape[1]) * EMBEDDING_DIM * BYTES_PER_FLOAT


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def downsample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D ``(H, W)`` or ``(H, W, C)`` image to ``shape`` (area averaging when shrinking).

    Returns the input unchanged if it already has ``shape``. The dtype is kept
    (float images stay float; integers are rounded back).
    """
    image = np.asarray(image)
    if tuple(image.shape[:2]) == tuple(shape):
        return image
    from skimage.transform import resize

    out = resize(
        image.astype(np.float32, copy=False),
        tuple(shape) + image.shape[2:],
        order=1,
        mode="edge",
        anti_aliasing=True,
        preserve_range=True,
    )
    if image.dtype.kind in "iub":
        info = np.iinfo(image.dtype) if image.dtype.kind in "iu" else None
        out = np.rint(out)
        if info is not None:
            out = np.clip(out, info.min, info.max)
        return out.astype(image.dtype)
    return out.astype(image.dtype, copy=False)


@dataclass(frozen=True)
class NearestUpsampler:
    """Maps arrays at working resolution ``small`` back to ``full`` by nearest neighbour.

    Pixel ``(r, c)`` of the full image takes the value of working pixel
    ``(rows[r], cols[c])`` (pixel centres aligned).
    """

    full: tuple[int, int]
    small: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def create(cls, full: tuple[int, int], small: tuple[int, int]) -> NearestUpsampler:
        full = (int(full[0]), int(full[1]))
        small = (int(small[0]), int(small[1]))
        rows = _nearest_index(full[0], small[0])
        cols = _nearest_index(full[1], small[1])
        return cls(full, small, rows, cols)

    @property
    def identity(self) -> bool:
        return self.full == self.small

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        """Upsample a ``(h, w)`` array to ``(H, W)`` (no copy when sizes match)."""
        if self.identity:
            return arr
        return arr[self.rows[:, None], self.cols[None, :]]

    def to_small(self, r: float, c: float) -> tuple[int, int]:
        """Working-resolution pixel that full-resolution pixel ``(r, c)`` maps to."""
        ri = min(max(int(r), 0), self.full[0] - 1)
        ci = min(max(int(c), 0), self.full[1] - 1)
        return int(self.rows[ri]), int(self.cols[ci])


def _nearest_index(n_full: int, n_small: int) -> np.ndarray:
    if n_full == n_small:
        return np.arange(n_full, dtype=np.intp)
    centres = (np.arange(n_full, dtype=np.float64) + 0.5) * (n_small / n_full) - 0.5
    return np.clip(np.rint(centres), 0, n_small - 1).astype(np.intp)


def describe_working_resolution(full: tuple[int, int], max_side: int | None, n_slices: int = 1) -> str:
    """One line for the widget: working size and the memory its embeddings need."""
    small = working_shape(full, max_side)
    per_slice = embedding_bytes(small)
    text = f"{small[0]}x{small[1]} px"
    if small != tuple(full):
        text += f" (from {full[0]}x{full[1]})"
    text += f"; embeddings ~{format_bytes(per_slice)}"
    if n_slices > 1:
        text += " per slice, one slice at a time"
    return text


def suggested_max_side(full: tuple[int, int], budget_bytes: float = 512 * 2**20) -> int | None:
    """Largest side (multiple of 64) whose embeddings fit ``budget_bytes``; ``None`` if full size fits."""
    if embedding_bytes(full) <= budget_bytes:
        return None
    h, w = full
    f = math.sqrt(budget_bytes / embedding_bytes(full))
    side = int(max(h, w) * f) // 64 * 64
    return max(64, side)
