"""State of one segmentation run and the background jobs, without Qt.

* :class:`Segmentation` holds one :class:`cuts.Hierarchy` per slice (at working
  resolution), maps label maps back to full resolution, caches them so that a
  level change is a dictionary lookup, and turns a click into a region.
* :func:`train_job` and :func:`segment_job` are plain generators; the widget
  runs them with :func:`napari.qt.threading.thread_worker`. They never touch
  Qt or napari: they only yield progress objects and return results.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_cuts._resample import NearestUpsampler, downsample, working_shape

#: Default level shown after segmenting: the one whose number of segments is nearest this.
DEFAULT_TARGET_SEGMENTS = 12


# ----------------------------------------------------------------------------- levels
def clamp_level(level: int, n_levels: int) -> int:
    return int(min(max(int(level), 0), max(n_levels - 1, 0)))


def default_level(n_segments: Sequence[int], target: int = DEFAULT_TARGET_SEGMENTS) -> int:
    """Level whose number of segments is nearest ``target`` by ratio (the finer one on a tie).

    By ratio, not difference: with levels of 34 and 3 segments (condensation can
    merge many segments in one step) and a target of 12, 34 (x2.8) is nearer than
    3 (x1/4), so the first view is not an almost empty map.
    """
    counts = [max(int(n), 1) for n in n_segments]
    if not counts:
        return 0
    distance = [abs(math.log(n / target)) for n in counts]
    return min(range(len(counts)), key=lambda lv: (distance[lv], lv))


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Labels in the smallest unsigned dtype that holds them (uint8 renders fastest in napari)."""
    top = int(labels.max(initial=0))
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int32
    return labels.astype(dtype, copy=False)


def full_resolution_map(labels: np.ndarray, upsampler: NearestUpsampler) -> np.ndarray:
    """A working-resolution label map at the viewer's resolution, in its most compact dtype."""
    return compact_labels(upsampler(labels))


def full_resolution_maps(
    hierarchy: Any, upsampler: NearestUpsampler, *, levels: bool = True, cancel: threading.Event | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """``(label maps of every level, persistent map)`` of ``hierarchy`` at full resolution.

    What the slider and the persistent layer show; made by the worker, as for a
    large image it is far too slow for the main thread (22 levels of a 2048x2048
    photo: about 0.7 s). ``levels=False`` makes the persistent map only.
    """
    from cuts.cancel import check_cancelled

    maps = []
    if levels:
        for lv in range(hierarchy.n_levels):
            check_cancelled(cancel, "segmentation")
            maps.append(full_resolution_map(hierarchy.label_map(lv), upsampler))
    return maps, full_resolution_map(hierarchy.persistent(), upsampler)


class Segmentation:
    """Hierarchies of the slices of one image and fast access to their label maps.

    Parameters
    ----------
    full_shape : (H, W)
        Size of each slice of the image in the viewer.
    n_slices : int
        1 for a 2-D image, ``Z`` for a stack.
    upsampler : NearestUpsampler
        Maps working-resolution maps to ``full_shape``.
    cache_size : int
        Full-resolution label maps kept in memory (LRU).
    """

    def __init__(self, full_shape: tuple[int, int], n_slices: int, upsampler: NearestUpsampler, cache_size: int = 48):
        self.full_shape = (int(full_shape[0]), int(full_shape[1]))
        self.n_slices = int(n_slices)
        self.upsampler = upsampler
        self.hierarchies: dict[int, Any] = {}
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._persistent: dict[int, np.ndarray] = {}

    # ---------------------------------------------------------------- contents
    def add(self, z: int, hierarchy: Any, *, label_maps: Sequence[np.ndarray] | None = None,
            persistent: np.ndarray | None = None) -> None:
        """Add slice ``z``'s hierarchy, with its full-resolution maps if they were made already.

        ``label_maps`` (one per level) and ``persistent`` are what :func:`full_resolution_maps`
        makes; the worker makes them, so that the main thread only looks them up.
        """
        z = int(z)
        self.hierarchies[z] = hierarchy
        for key in [k for k in self._cache if k[0] == z]:
            del self._cache[key]
        self._persistent.pop(z, None)
        if persistent is not None:
            self._persistent[z] = persistent
        for lv, labels in enumerate(label_maps or ()):
            self._cache[(z, lv)] = labels
        self._trim_cache()

    def _trim_cache(self) -> None:
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def has(self, z: int) -> bool:
        return int(z) in self.hierarchies

    @property
    def complete(self) -> bool:
        return len(self.hierarchies) == self.n_slices

    @property
    def n_levels(self) -> int:
        """Levels of the slider: the most any computed slice has (0 if none yet)."""
        return max((h.n_levels for h in self.hierarchies.values()), default=0)

    def level_for(self, z: int, level: int) -> int:
        """``level`` clamped to the levels slice ``z`` has."""
        return clamp_level(level, self.hierarchies[int(z)].n_levels)

    def n_segments(self, z: int, level: int) -> int:
        h = self.hierarchies[int(z)]
        return int(h.n_segments[self.level_for(z, level)])

    def default_level(self, z: int) -> int:
        return default_level(self.hierarchies[int(z)].n_segments)

    # ---------------------------------------------------------------- maps
    def label_map(self, z: int, level: int) -> np.ndarray:
        """Full-resolution ``(H, W)`` int32 labels of slice ``z`` at ``level`` (cached; do not modify)."""
        z = int(z)
        lv = self.level_for(z, level)
        key = (z, lv)
        out = self._cache.get(key)
        if out is not None:
            self._cache.move_to_end(key)
            return out
        out = full_resolution_map(self.hierarchies[z].label_map(lv), self.upsampler)
        self._cache[key] = out
        self._trim_cache()
        return out

    def precompute(self, z: int) -> None:
        """Fill the cache with every level of slice ``z`` (makes later level changes lookups)."""
        if not self.has(z):
            return
        for lv in range(self.hierarchies[int(z)].n_levels):
            self.label_map(z, lv)

    def persistent(self, z: int) -> np.ndarray:
        """Full-resolution persistent map of slice ``z`` (do not modify)."""
        z = int(z)
        if z not in self._persistent:
            self._persistent[z] = full_resolution_map(self.hierarchies[z].persistent(), self.upsampler)
        return self._persistent[z]

    def region_at(self, z: int, level: int, row: int, col: int) -> np.ndarray | None:
        """Boolean full-resolution mask of the segment under ``(row, col)``; ``None`` outside the image."""
        h, w = self.full_shape
        if not (0 <= row < h and 0 <= col < w) or not self.has(z):
            return None
        labels = self.label_map(z, level)
        return labels == labels[int(row), int(col)]


# ----------------------------------------------------------------------------- jobs


@dataclass
class ProgressBox:
    """Latest progress of a job, written by the worker thread and read by a GUI timer.

    Plain attribute assignment of immutable values is atomic in CPython, so no
    lock is needed.
    """

    done: float = 0.0
    total: float = 100.0
    message: str = ""

    def set(self, done: float, total: float, message: str) -> None:
        self.message = message
        self.total = float(total)
        self.done = float(done)

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, max(0.0, self.done / self.total))


@dataclass
class SliceResult:
    """One slice segmented: yielded by :func:`segment_job`."""

    z: int
    hierarchy: Any
    seconds: float
    index: int  # how many slices are done, counting this one
    total: int
    label_maps: list[np.ndarray] | None = None  # every level at full resolution (first slice only)
    persistent: np.ndarray | None = None  # the persistent map at full resolution


@dataclass
class ModelReady:
    """The default encoder had to be loaded: yielded by :func:`segment_job`."""

    model: Any
    source: str


@dataclass
class SegmentSettings:
    max_side: int | None = None
    seed: int = 0
    rgb: bool | None = None
    options: dict = field(default_factory=dict)


def image_channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else int(image.shape[-1])


def prepare_training_images(slices: Sequence[np.ndarray], max_side: int | None) -> list[np.ndarray]:
    """Slices at working resolution for training."""
    return [downsample(s, working_shape(s.shape[:2], max_side)) for s in slices]


def train_job(
    slices: Sequence[np.ndarray],
    *,
    steps: int | None,
    max_seconds: float | None,
    seed: int,
    device: str,
    max_side: int | None,
    rgb: bool | None = None,
) -> Generator[Any, None, Any]:
    """Generator for a worker: yields :class:`cuts.TrainProgress`, returns the trained model.

    With a time budget (``max_seconds``) and no step count, the number of steps
    is effectively unlimited and training stops when the time is up.
    """
    import cuts

    images = prepare_training_images(slices, max_side)
    settings: dict[str, Any] = {"seed": int(seed)}
    if max_seconds:
        settings["max_seconds"] = float(max_seconds)
        settings["steps"] = int(steps) if steps else 1_000_000
    else:
        settings["steps"] = int(steps or 300)
    model = yield from cuts.iter_train(images, device=device, rgb=rgb, **settings)
    return model


def segment_job(
    slices: Sequence[np.ndarray],
    order: Sequence[int],
    model: Any,
    settings: SegmentSettings,
    progress: ProgressBox,
    cancel: threading.Event,
) -> Generator[Any, None, int]:
    """Generator for a worker: embed + condense each slice in ``order``.

    Yields :class:`ModelReady` first if ``model`` is ``None`` (the bundled default
    encoder for the image's channel count is loaded), then a :class:`SliceResult`
    per slice. Fine-grained progress goes to ``progress``. Raises
    :class:`cuts.Cancelled` when ``cancel`` is set; returns the number of slices done.
    """
    import cuts

    total = len(order)
    if model is None:
        progress.set(0, 100, "loading the bundled encoder")
        channels = image_channels(slices[order[0]])
        model = cuts.load_default_model(in_channels=3 if channels == 3 else 1)
        yield ModelReady(model, "default")
    for i, z in enumerate(order):
        if cancel.is_set():
            raise cuts.Cancelled("segmentation was cancelled")
        t0 = time.perf_counter()
        image = slices[z]
        small = downsample(image, working_shape(image.shape[:2], settings.max_side))
        where = f"slice {z + 1} ({i + 1}/{total})" if total > 1 else "image"
        progress.set(i * 100, total * 100, f"{where}: embedding")
        emb = cuts.embed(model, small, rgb=settings.rgb)
        if cancel.is_set():
            raise cuts.Cancelled("segmentation was cancelled")

        def report(done: int, tot: int, msg: str, _i: int = i) -> None:
            progress.set(_i * 100 + 10 + 90 * done / max(tot, 1), total * 100, f"{where}: {msg}")

        progress.set(i * 100 + 10, total * 100, f"{where}: condensing")
        hierarchy = cuts.condense(emb, seed=settings.seed, callback=report, cancel=cancel, **settings.options)
        del emb
        # the maps the viewer shows, at its resolution: every level of the slice in view (for an
        # instant slider), the persistent map of each; here, not on the GUI thread
        progress.set(i * 100 + 99, total * 100, f"{where}: preparing the levels for display")
        maps, persistent = full_resolution_maps(
            hierarchy, make_upsampler(image.shape[:2], settings.max_side), levels=i == 0, cancel=cancel,
        )
        progress.set((i + 1) * 100, total * 100, f"{where}: done")
        yield SliceResult(int(z), hierarchy, time.perf_counter() - t0, i + 1, total,
                          label_maps=maps or None, persistent=persistent)
    return total


def slice_order(n_slices: int, current: int) -> list[int]:
    """Current slice first, then the others outward from it."""
    current = clamp_level(current, n_slices)
    order = [current]
    for d in range(1, n_slices):
        for z in (current + d, current - d):
            if 0 <= z < n_slices:
                order.append(z)
    return order


def make_upsampler(full_shape: tuple[int, int], max_side: int | None) -> NearestUpsampler:
    return NearestUpsampler.create(full_shape, working_shape(full_shape, max_side))
