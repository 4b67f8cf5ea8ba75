"""Stage 2 of CUTS: a multi-granular hierarchy of segmentations by diffusion condensation.

>>> h = condense(embeddings)            # embeddings: (H, W, D) float array
>>> h.n_levels, h.n_segments            # level 0 = finest, n_levels-1 = coarsest
>>> labels = h.label_map(3)             # (H, W) int32, labels 1..n_segments[3]
>>> single = h.persistent()             # the paper's "persistent structures" map

How it works (see ``docs/hierarchy.md``): pixel embeddings are L2-normalised,
PCA-projected and quantised into about a thousand weighted *atoms*
(:func:`cuts.condensation.build_atoms`); diffusion condensation runs on the
atoms (:func:`cuts.condensation.condense_atoms`); every recorded partition of
the atoms is one level, stored as a lookup table applied to the per-pixel atom
map, so a level's label map costs one ``take``.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cuts.cancel import CancelToken, check_cancelled
from cuts.condensation import (
    Atoms,
    build_atoms,
    condense_atoms,
    default_n_atoms,
    validate_embeddings,
)

__all__ = ["Hierarchy", "HierarchyFileError", "condense", "condense_stack"]

ProgressCallback = Callable[[int, int, str], None]

_FORMAT = "cuts-hierarchy"
_FORMAT_VERSION = 1

#: default options of :func:`condense` (documented there)
DEFAULTS: dict[str, Any] = {
    "n_atoms": None,
    "n_components": 32,
    "max_segments": 80,
    "max_levels": 24,
    "min_segment_fraction": 0.001,
    "knn": 5,
    "bandwidth_scale": 1.0,
    "merge_ratio": 0.1,
    "growth": 1.25,
    "alpha": 0.5,
    "max_drop": 1.25,
    "persistence": "iterations",
    "connected": True,
}


class HierarchyFileError(ValueError):
    """A file is not a readable CUTS hierarchy (corrupt, truncated or foreign)."""


class Hierarchy:
    """A stack of nested segmentations of one image, finest (level 0) to coarsest.

    Each level is a lookup table over a per-pixel base map (connected base
    regions by default, embedding-space atoms with ``connected=False``; the
    ``atom_map`` attribute), so every coarser segment is by construction a
    union of finer ones. Labels are
    contiguous ``1..n_segments[level]`` (0 is never used). Where possible, a
    segment keeps the label of its parent (the largest child inherits it) so
    colours stay stable when stepping through levels.

    Build one with :func:`condense`; reload one with :meth:`load`.
    """

    def __init__(
        self,
        atom_map: np.ndarray,
        luts: np.ndarray,
        persistence: np.ndarray,
        *,
        iterations: np.ndarray | None = None,
        epsilons: np.ndarray | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        atom_map = np.asarray(atom_map)
        luts = np.asarray(luts)
        persistence = np.asarray(persistence)
        if atom_map.ndim != 2 or luts.ndim != 2 or persistence.ndim != 2:
            raise ValueError("atom_map must be 2-D, luts (levels, atoms) and persistence (levels, labels+1)")
        if luts.shape[0] < 1 or persistence.shape[0] != luts.shape[0]:
            raise ValueError("luts and persistence must have the same (non-zero) number of levels")
        if atom_map.size and (atom_map.min() < 0 or atom_map.max() >= luts.shape[1]):
            raise ValueError("atom_map refers to atoms that have no entry in the lookup tables")
        self._atom_map = np.ascontiguousarray(atom_map, dtype=np.int32)
        self._luts = np.ascontiguousarray(luts, dtype=np.int32)
        self._persistence = np.ascontiguousarray(persistence, dtype=np.int64)
        n_seg = self._luts.max(axis=1)
        for lv in range(self._luts.shape[0]):
            present = np.unique(self._luts[lv][np.unique(self._atom_map)] if self._atom_map.size else [])
            if self._luts[lv].min() < 1 or (present.size and not np.array_equal(present, np.arange(1, n_seg[lv] + 1))):
                raise ValueError(f"level {lv}: labels are not contiguous 1..n")
        self._n_segments = n_seg.astype(np.int64)
        n_levels = self._luts.shape[0]
        self._iterations = (
            np.asarray(iterations, dtype=np.int64) if iterations is not None else np.arange(n_levels)
        )
        self._epsilons = (
            np.asarray(epsilons, dtype=np.float64) if epsilons is not None else np.zeros(n_levels)
        )
        self.options: dict[str, Any] = dict(options or {})
        self._persistent_cache: np.ndarray | None = None

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return tuple(self._atom_map.shape)  # type: ignore[return-value]

    @property
    def n_levels(self) -> int:
        """Number of levels (level 0 finest, ``n_levels - 1`` coarsest)."""
        return int(self._luts.shape[0])

    @property
    def n_segments(self) -> np.ndarray:
        """Number of segments per level (decreasing with the level index)."""
        return self._n_segments.copy()

    @property
    def iterations(self) -> np.ndarray:
        """Condensation iteration at which each level was reached."""
        return self._iterations.copy()

    @property
    def epsilons(self) -> np.ndarray:
        """Kernel bandwidth at which each level was reached."""
        return self._epsilons.copy()

    @property
    def atom_map(self) -> np.ndarray:
        """``(H, W)`` int32 map of the atoms the levels are built on (read-only view)."""
        v = self._atom_map.view()
        v.flags.writeable = False
        return v

    def _level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise TypeError(f"level must be an integer; got {type(level).__name__}")
        lv = int(level)
        if lv < 0:
            lv += self.n_levels
        if not 0 <= lv < self.n_levels:
            raise IndexError(
                f"level {level} is out of range; this hierarchy has levels 0..{self.n_levels - 1} "
                "(0 = finest)"
            )
        return lv

    def label_map(self, level: int) -> np.ndarray:
        """``(H, W)`` int32 labels of ``level`` (contiguous ``1..n_segments[level]``).

        Negative levels count from the coarsest end, like Python indexing.
        """
        return self._luts[self._level(level)].take(self._atom_map)

    def segment_sizes(self, level: int) -> np.ndarray:
        """Pixels per label at ``level``; index = label (entry 0 is 0)."""
        lv = self._level(level)
        counts = np.bincount(self._atom_map.ravel(), minlength=self._luts.shape[1])
        return np.bincount(self._luts[lv], weights=counts, minlength=self._n_segments[lv] + 1).astype(np.int64)

    def parents(self, level: int) -> np.ndarray:
        """Merge tree: ``parents(level)[i]`` is the label at ``level + 1`` containing label ``i``.

        The array has ``n_segments[level] + 1`` entries (index = label; entry 0 is 0).
        At the coarsest level every entry is 0 (no parent).
        """
        lv = self._level(level)
        out = np.zeros(self._n_segments[lv] + 1, dtype=np.int32)
        if lv + 1 < self.n_levels:
            out[self._luts[lv]] = self._luts[lv + 1]
        return out

    def persistence(self, level: int) -> np.ndarray:
        """Persistence of each label at ``level`` (index = label; entry 0 is 0)."""
        lv = self._level(level)
        return self._persistence[lv, : self._n_segments[lv] + 1].copy()

    def mask_at(self, level: int, position: tuple[int, int]) -> np.ndarray:
        """Boolean ``(H, W)`` mask of the segment under pixel ``(row, col)`` at ``level``."""
        lv = self._level(level)
        try:
            row, col = (int(v) for v in position)
        except (TypeError, ValueError):
            raise ValueError(f"position must be a (row, col) pair of integers; got {position!r}") from None
        h, w = self.shape
        if not (0 <= row < h and 0 <= col < w):
            raise IndexError(f"position {(row, col)} is outside the image of shape {(h, w)}")
        lut = self._luts[lv]
        sel = lut == lut[self._atom_map[row, col]]
        return sel.take(self._atom_map)

    # ------------------------------------------------------------ persistence
    def persistent(self) -> np.ndarray:
        """Persistent structures (paper section 3.2.2) as an ``(H, W)`` int32 label map.

        Every segment of every level is ranked by its persistence: the number
        of consecutive condensation iterations it stayed intact before being
        merged (see ``docs/hierarchy.md``). Segments are painted from the least
        to the most persistent, so more persistent segments override less
        persistent ones (on ties, larger segments are painted first so that
        nested smaller ones stay visible). Labels are contiguous from 1,
        largest region first.
        """
        if self._persistent_cache is None:
            self._persistent_cache = self._compute_persistent()
        return self._persistent_cache.take(self._atom_map)

    def _compute_persistent(self) -> np.ndarray:
        from cuts.clustering import _relabel_by_size

        n_atoms = self._luts.shape[1]
        atom_counts = np.bincount(self._atom_map.ravel(), minlength=n_atoms).astype(np.float64)
        segs = []  # (persistence, size, level, label)
        seen: set[bytes] = set()
        for lv in range(self.n_levels - 1, -1, -1):  # coarsest first: dedupe keeps coarsest copy
            lut = self._luts[lv]
            sizes = np.bincount(lut, weights=atom_counts, minlength=self._n_segments[lv] + 1)
            for lab in range(1, self._n_segments[lv] + 1):
                members = np.flatnonzero(lut == lab)
                key = members.tobytes()
                if key in seen:
                    continue
                seen.add(key)
                segs.append((int(self._persistence[lv, lab]), float(sizes[lab]), lv, lab))
        # least persistent first; on ties larger first (smaller nested ones paint over them)
        segs.sort(key=lambda s: (s[0], -s[1], -s[2], s[3]))
        paint = np.zeros(n_atoms, dtype=np.int64)
        for i, (_, _, lv, lab) in enumerate(segs, start=1):
            paint[self._luts[lv] == lab] = i
        used = paint > 0
        out = np.zeros(n_atoms, dtype=np.int32)
        if used.any():
            out[used] = _relabel_by_size(paint[used], atom_counts[used])
        return out

    # ------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the hierarchy to one compressed ``.npz`` file, atomically.

        A temporary file is written in the target directory and moved into
        place with :func:`os.replace`, so readers never see a half-written file.
        Returns the path written.
        """
        path = Path(path)
        directory = path.parent if str(path.parent) else Path(".")
        if not directory.is_dir():
            raise FileNotFoundError(f"cannot save hierarchy: directory {str(directory)!r} does not exist")
        meta = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "options": self.options,
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(
                    fh,
                    meta=np.array(json.dumps(meta, default=str)),
                    atom_map=self._atom_map,
                    luts=self._luts,
                    persistence=self._persistence,
                    iterations=self._iterations,
                    epsilons=self._epsilons,
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Hierarchy:
        """Read a hierarchy written by :meth:`save` (never unpickles anything).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        HierarchyFileError
            (a ``ValueError``) if the file is corrupt, truncated or not a CUTS hierarchy.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no hierarchy file at {str(path)!r}")
        what = f"{str(path)!r} is not a readable CUTS hierarchy file"
        try:
            with np.load(path, allow_pickle=False) as z:
                if not isinstance(z, np.lib.npyio.NpzFile):
                    raise HierarchyFileError(f"{what} (it is a plain .npy array, not a .npz archive)")
                names = set(z.files)
                needed = {"meta", "atom_map", "luts", "persistence"}
                if not needed <= names:
                    raise HierarchyFileError(f"{what} (missing entries: {sorted(needed - names)})")
                meta = json.loads(str(z["meta"][()]))
                if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                    raise HierarchyFileError(f"{what} (unknown format tag)")
                if int(meta.get("version", -1)) > _FORMAT_VERSION:
                    raise HierarchyFileError(
                        f"{what}: it was written by a newer napari-cuts (format version "
                        f"{meta.get('version')}); upgrade napari-cuts to read it"
                    )
                arrays = {k: z[k] for k in ("atom_map", "luts", "persistence")}
                iterations = z["iterations"] if "iterations" in names else None
                epsilons = z["epsilons"] if "epsilons" in names else None
        except HierarchyFileError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, json.JSONDecodeError, TypeError) as exc:
            raise HierarchyFileError(f"{what} ({type(exc).__name__}: {exc}); re-run condensation to rebuild it") from exc
        for k, a in arrays.items():
            if not np.issubdtype(a.dtype, np.integer):
                raise HierarchyFileError(f"{what} (entry {k!r} has dtype {a.dtype})")
        try:
            return cls(
                arrays["atom_map"],
                arrays["luts"],
                arrays["persistence"],
                iterations=iterations,
                epsilons=epsilons,
                options=meta.get("options") or {},
            )
        except ValueError as exc:
            raise HierarchyFileError(f"{what} (inconsistent content: {exc})") from exc

    def __repr__(self) -> str:
        segs = ", ".join(str(int(s)) for s in self._n_segments)
        return f"Hierarchy(shape={self.shape}, n_levels={self.n_levels}, n_segments=[{segs}])"


# ---------------------------------------------------------------------- build
def _atom_levels(parts, atom_counts, res, opts):
    """Levels of embedding-space clusters (not necessarily connected), over atoms."""
    n_levels = parts.shape[0]
    luts = _relabel_levels(parts, atom_counts)
    n_seg = luts.max(axis=1)
    pers = np.zeros((n_levels, int(n_seg.max()) + 1), dtype=np.int64)
    for lv in range(n_levels):
        nodes = np.zeros(n_seg[lv] + 1, dtype=np.int64)
        nodes[luts[lv]] = parts[lv]
        if opts["persistence"] == "iterations":
            pers[lv, 1 : n_seg[lv] + 1] = res.death[nodes[1:]] - res.birth[nodes[1:]]
        else:
            # consecutive kept levels in which the same node appears
            for lab in range(1, n_seg[lv] + 1):
                node = nodes[lab]
                run = 0
                for other in range(n_levels):
                    present = bool(np.any(parts[other] == node))
                    if present:
                        run += 1
                    elif other > lv:
                        break
                    else:
                        run = 0
                pers[lv, lab] = run
    return luts, pers


def _connected(atom_map, parts, iters, eps, min_size):
    """Connected segments per level (see :mod:`cuts.regions`); drops levels that repeat."""
    from cuts.regions import connected_levels

    ids = [np.unique(p, return_inverse=True)[1] for p in parts]  # atom -> cluster index per level
    clusters0 = ids[0][atom_map]
    parents = []
    for lv in range(len(ids) - 1):
        par = np.zeros(int(ids[lv].max()) + 1, dtype=np.int64)
        par[ids[lv]] = ids[lv + 1]
        parents.append(par)
    regions, comps = connected_levels(clusters0, parents, max(1, min_size))
    counts = np.array([np.unique(c).size for c in comps])
    keep = [0]
    for lv in range(1, len(counts)):
        if counts[lv] < counts[keep[-1]]:
            keep.append(lv)
    keep = np.array(keep)
    region_px = np.bincount(regions.ravel(), minlength=comps.shape[1]).astype(np.float64)
    luts = _relabel_levels(comps[keep], region_px)
    return regions, luts, np.asarray(iters)[keep], np.asarray(eps)[keep]


def _run_persistence(luts: np.ndarray, iters: np.ndarray, end: int) -> np.ndarray:
    """Persistence of every (level, label): iterations from its birth to its merge.

    A segment is the same segment at the next level when its parent has no other
    child. Birth is the iteration of the first level of such a run; death the
    iteration of the level where it merges (``end`` for segments alive at the
    coarsest level).
    """
    n_levels = luts.shape[0]
    nseg = luts.max(axis=1)
    links = []
    for lv in range(n_levels - 1):
        par = np.zeros(nseg[lv] + 1, dtype=np.int64)
        par[luts[lv]] = luts[lv + 1]
        nchild = np.bincount(par[1:], minlength=nseg[lv + 1] + 1)
        ident = nchild[par] == 1
        ident[0] = False
        links.append((par, ident))
    birth = [np.zeros(nseg[0] + 1, dtype=np.int64)]
    for lv in range(1, n_levels):
        par, ident = links[lv - 1]
        b = np.full(nseg[lv] + 1, lv, dtype=np.int64)
        child = np.flatnonzero(ident)
        b[par[child]] = birth[lv - 1][child]
        birth.append(b)
    death: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * n_levels
    death[-1] = np.full(nseg[-1] + 1, n_levels, dtype=np.int64)
    for lv in range(n_levels - 2, -1, -1):
        par, ident = links[lv]
        d = np.full(nseg[lv] + 1, lv + 1, dtype=np.int64)
        d[ident] = death[lv + 1][par[ident]]
        death[lv] = d
    it = np.append(np.asarray(iters, dtype=np.int64), end)
    pers = np.zeros((n_levels, int(nseg.max()) + 1), dtype=np.int64)
    for lv in range(n_levels):
        pers[lv, : nseg[lv] + 1] = it[death[lv]] - it[birth[lv]]
        pers[lv, 0] = 0
    return pers


def _select_levels(counts: np.ndarray, max_levels: int) -> np.ndarray:
    """Indices into the (strictly decreasing) ``counts`` keeping at most ``max_levels``.

    Keeps the finest and coarsest and spreads the rest evenly in log(count).
    """
    n = counts.size
    if n <= max_levels:
        return np.arange(n)
    logc = np.log(counts.astype(np.float64))
    targets = np.linspace(logc[0], logc[-1], max_levels)
    chosen = {0, n - 1}
    for tv in targets[1:-1]:
        order = np.argsort(np.abs(logc - tv), kind="stable")
        for idx in order:
            if int(idx) not in chosen:
                chosen.add(int(idx))
                break
    return np.array(sorted(chosen))


def _relabel_levels(parts: np.ndarray, atom_counts: np.ndarray) -> np.ndarray:
    """Turn node-id partitions (L, M) into label LUTs 1..n, parents' labels inherited top-down."""
    n_levels, m = parts.shape
    luts = np.zeros((n_levels, m), dtype=np.int32)
    # coarsest: by size
    from cuts.clustering import _relabel_by_size

    luts[-1] = _relabel_by_size(parts[-1], atom_counts)
    for lv in range(n_levels - 2, -1, -1):
        uniq, inv = np.unique(parts[lv], return_inverse=True)
        sizes = np.bincount(inv, weights=atom_counts, minlength=uniq.size)
        parent_of = np.zeros(uniq.size, dtype=np.int64)
        parent_of[inv] = luts[lv + 1]
        n_par = int(luts[lv + 1].max())
        new = np.zeros(uniq.size, dtype=np.int32)
        # largest child of each parent inherits the parent's label
        order = np.lexsort((np.arange(uniq.size), -sizes))
        taken = np.zeros(n_par + 1, dtype=bool)
        nxt = n_par + 1
        rest = []
        for s in order:
            p = parent_of[s]
            if not taken[p]:
                taken[p] = True
                new[s] = p
            else:
                rest.append(s)
        for s in rest:  # already in size order
            new[s] = nxt
            nxt += 1
        luts[lv] = new[inv]
    return luts


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown condense option(s) {sorted(unknown)}; valid options are {sorted(DEFAULTS)}"
        )
    opts = {**DEFAULTS, **options}
    if opts["n_atoms"] is not None and int(opts["n_atoms"]) < 2:
        raise ValueError(f"n_atoms must be >= 2 (or None for automatic); got {opts['n_atoms']!r}")
    for name in ("n_components", "max_segments", "max_levels", "knn"):
        if int(opts[name]) < (2 if name in ("max_segments", "max_levels") else 1):
            raise ValueError(f"option {name} is too small: {opts[name]!r}")
    for name in ("bandwidth_scale", "merge_ratio"):
        if not float(opts[name]) > 0:
            raise ValueError(f"option {name} must be positive; got {opts[name]!r}")
    if not 0.0 <= float(opts["alpha"]) <= 1.0:
        raise ValueError(f"option alpha must be in [0, 1]; got {opts['alpha']!r}")
    if opts["max_drop"] is not None and not float(opts["max_drop"]) > 1.0:
        raise ValueError(f"option max_drop must be > 1 (or None for full steps); got {opts['max_drop']!r}")
    if not float(opts["growth"]) > 1.0:
        raise ValueError(f"option growth must be > 1; got {opts['growth']!r}")
    if not 0.0 <= float(opts["min_segment_fraction"]) < 0.5:
        raise ValueError(f"option min_segment_fraction must be in [0, 0.5); got {opts['min_segment_fraction']!r}")
    if not isinstance(opts["connected"], (bool, np.bool_)):
        raise ValueError(f"option connected must be True or False; got {opts['connected']!r}")
    if opts["persistence"] not in ("iterations", "levels"):
        raise ValueError(f"option persistence must be 'iterations' or 'levels'; got {opts['persistence']!r}")
    return opts


def condense(
    embeddings: np.ndarray,
    *,
    seed: int = 0,
    atoms: Atoms | None = None,
    callback: ProgressCallback | None = None,
    cancel: CancelToken = None,
    **options: Any,
) -> Hierarchy:
    """Build the multi-granular hierarchy of one image by diffusion condensation.

    Parameters
    ----------
    embeddings : np.ndarray
        ``(H, W, D)`` per-pixel embeddings (feature axis last), any float dtype;
        read in chunks, never copied as a whole.
    seed : int
        Seed for subsampling and atom quantisation; equal seeds give identical hierarchies.
    atoms : Atoms, optional
        These embeddings already quantised by :func:`cuts.condensation.build_atoms`
        (e.g. shared with :func:`cuts.clustering.spectral_kmeans`); ``n_atoms`` and
        ``n_components`` are then those the atoms were built with.
    callback : callable, optional
        ``callback(done, total, message)`` progress reports with ``total == 100``.
    cancel : CancelToken, optional
        A :class:`threading.Event` or callable; when it fires, :class:`cuts.cancel.Cancelled`
        is raised (checked at least every few tens of milliseconds).
    **options
        Keyword-only tuning knobs (defaults in :data:`DEFAULTS`):

        ``n_atoms`` (None = ``clip(N // 16, 2, 1000)``)
            Number of weighted atoms the pixels are quantised into.
        ``n_components`` (32)
            PCA dimensions of the L2-normalised embeddings.
        ``max_segments`` (80)
            The finest level has at most this many segments.
        ``max_levels`` (24)
            At most this many levels are kept, spread evenly in log(segments).
        ``min_segment_fraction`` (0.001)
            Segments smaller than this fraction of the image are absorbed by their
            nearest segment once the hierarchy reaches ``max_segments``.
        ``knn``, ``bandwidth_scale`` (5, 1.0)
            Initial bandwidth: ``bandwidth_scale`` × median squared distance to the
            ``knn``-th nearest atom.
        ``merge_ratio`` (0.1)
            Points closer than ``merge_ratio * sqrt(eps)`` merge.
        ``growth`` (1.25)
            Bandwidth factor applied after an iteration without merges.
        ``alpha`` (0.5)
            Density normalisation of the kernel, ``K_ij / q_j**alpha`` with ``q`` the
            weighted degree (0 = plain Gaussian kernel of the paper; 1 = fully
            density-independent diffusion). 0.5 keeps small dense structures from being
            swallowed by large ones.
        ``max_drop`` (1.25)
            Once at most ``max_segments`` clusters remain, one diffusion step may
            cut their number by at most this factor: a step that would merge more
            (condensation can collapse a large, even region at once, so the slider
            would jump from dozens of segments to a few) is replaced by a lazy step
            ``X + tau (P X - X)``, ``tau`` halved (at most 7 times) until it merges
            less. ``None``: always full steps.
        ``persistence`` ("iterations")
            Unit of persistence for :meth:`Hierarchy.persistent`:
            ``"iterations"`` (paper) or ``"levels"`` (kept levels).
        ``connected`` (True)
            Split every level's clusters into connected regions, keeping the levels
            nested (:mod:`cuts.regions`); ``False`` keeps the embedding-space clusters.

    Returns
    -------
    Hierarchy

    Raises
    ------
    ValueError
        On a wrong shape, a non-numeric dtype, NaN/inf values or bad options.
    cuts.cancel.Cancelled
        If ``cancel`` fired.
    """
    arr = validate_embeddings(embeddings)
    opts = _check_options(options)
    h, w, _ = arr.shape
    n = h * w
    check_cancelled(cancel, "condensation")
    if atoms is None:
        n_atoms = opts["n_atoms"] if opts["n_atoms"] is not None else default_n_atoms(n)
        atoms = build_atoms(
            arr,
            seed=seed,
            n_atoms=int(n_atoms),
            n_components=int(opts["n_components"]),
            callback=callback,
            progress_span=(0, 40),
            cancel=cancel,
        )
    elif atoms.atom_map.shape != (h, w):
        raise ValueError(f"atoms were built for a {atoms.atom_map.shape} image, not {(h, w)}.")
    res = condense_atoms(
        atoms.coords,
        atoms.counts,
        max_segments=int(opts["max_segments"]),
        min_size=float(opts["min_segment_fraction"]) * n,
        knn=int(opts["knn"]),
        bandwidth_scale=float(opts["bandwidth_scale"]),
        merge_ratio=float(opts["merge_ratio"]),
        growth=float(opts["growth"]),
        alpha=float(opts["alpha"]),
        max_drop=None if opts["max_drop"] is None else float(opts["max_drop"]),
        callback=callback,
        progress_span=(40, 95),
        cancel=cancel,
    )
    check_cancelled(cancel, "condensation")
    parts = res.partitions
    counts = np.array([np.unique(p).size for p in parts])
    keep = _select_levels(counts, int(opts["max_levels"]))
    parts = parts[keep]
    iters = res.iterations[keep]
    eps = res.epsilons[keep]
    atom_counts = atoms.counts.astype(np.float64)
    if opts["connected"]:
        base, luts, iters, eps = _connected(atoms.atom_map, parts, iters, eps, int(float(opts["min_segment_fraction"]) * n))
        if opts["persistence"] == "levels":
            pers = _run_persistence(luts, np.arange(luts.shape[0]), luts.shape[0] - 1)
        else:
            pers = _run_persistence(luts, iters, int(res.n_iterations))
    else:
        base = atoms.atom_map
        luts, pers = _atom_levels(parts, atom_counts, res, opts)
    meta = {k: v for k, v in opts.items()}
    meta.update(seed=int(seed), n_atoms=int(atoms.counts.size), n_iterations=int(res.n_iterations))
    hier = Hierarchy(base, luts, pers, iterations=iters, epsilons=eps, options=meta)
    if callback is not None:
        callback(100, 100, f"done: {hier.n_levels} levels")
    return hier


def condense_stack(
    embeddings: np.ndarray,
    *,
    seed: int = 0,
    callback: ProgressCallback | None = None,
    cancel: CancelToken = None,
    **options: Any,
) -> list[Hierarchy]:
    """:func:`condense` every slice of a ``(Z, H, W, D)`` stack.

    Progress is reported as ``callback(done, total, message)`` with
    ``total == 100 * Z``. Options and seed are shared by all slices.
    """
    arr = np.asarray(embeddings)
    if arr.ndim != 4:
        raise ValueError(
            f"condense_stack expects (Z, H, W, D) embeddings; got shape {arr.shape}. "
            "For a single image use condense()."
        )
    _check_options(options)
    z = arr.shape[0]
    out: list[Hierarchy] = []
    for i in range(z):
        check_cancelled(cancel, "condensation")

        def sub(done: int, total: int, msg: str, _i: int = i) -> None:
            if callback is not None:
                callback(_i * 100 + int(done * 100 / max(total, 1)), z * 100, f"slice {_i + 1}/{z}: {msg}")

        out.append(condense(arr[i], seed=seed, callback=sub, cancel=cancel, **options))
    if callback is not None:
        callback(z * 100, z * 100, "done")
    return out
