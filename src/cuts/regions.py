"""Spatially connected segments on top of an embedding-space hierarchy.

Diffusion condensation groups pixels by their embeddings alone, so one "segment"
of it can be scattered over the image (every bright speck of a fundus photo in one
cluster). What a user clicks, and what the paper's figures show, is a region. This
module turns each level's clusters into connected regions while keeping the
hierarchy nested:

1. *Base regions*: the 4-connected components of the finest level's clusters;
   components smaller than ``min_size`` pixels are merged into the neighbour they
   share the longest border with (repeatedly, smallest first), so noise specks do
   not become segments.
2. Each base region takes the cluster of most of its pixels at the finest level,
   and that cluster's ancestor at every coarser level.
3. At every level, a segment is a connected component of the region adjacency
   graph restricted to edges whose two regions are in the same cluster at that
   level. An edge kept at one level is kept at every coarser level, so every
   coarser segment is a union of finer ones (monotone coarsening).
"""

from __future__ import annotations

import numpy as np


def _edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique undirected 4-neighbour pairs ``(u, v)`` (u < v) of different labels, with border lengths."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    diff = a != b
    a, b = a[diff].astype(np.int64), b[diff].astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    n = int(labels.max()) + 1
    keys, counts = np.unique(lo * n + hi, return_counts=True)
    return keys // n, keys % n, counts


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int32)


def base_regions(clusters: np.ndarray, min_size: int, *, max_rounds: int = 20) -> np.ndarray:
    """Connected components of ``clusters`` with components under ``min_size`` merged away.

    Returns an ``(H, W)`` int32 map of regions ``0..R-1``.
    """
    from skimage.measure import label as cc_label

    regions = cc_label(clusters + 1, connectivity=1, background=0).astype(np.int32) - 1
    regions = _relabel(regions)
    for _ in range(max_rounds):
        sizes = np.bincount(regions.ravel())
        small = sizes < min_size
        if not small.any() or sizes.size == 1:
            break
        u, v, border = _edges(regions)
        # directed candidates: a small region moves into a neighbour, longest border first,
        # preferring larger neighbours on ties
        src = np.concatenate([u, v])
        dst = np.concatenate([v, u])
        bl = np.concatenate([border, border])
        keep = small[src]
        src, dst, bl = src[keep], dst[keep], bl[keep]
        if src.size == 0:
            break
        order = np.lexsort((-sizes[dst], -bl, src))
        src, dst = src[order], dst[order]
        first = np.r_[True, src[1:] != src[:-1]]
        target = np.arange(sizes.size)
        target[src[first]] = dst[first]
        # two small regions pointing at each other: the smaller one moves
        mutual = target[target] == np.arange(sizes.size)
        mutual &= target != np.arange(sizes.size)
        loser = mutual & ((sizes < sizes[target]) | ((sizes == sizes[target]) & (np.arange(sizes.size) > target)))
        target[mutual & ~loser] = np.flatnonzero(mutual & ~loser)
        # follow chains to a fixed point
        for _ in range(64):
            nxt = target[target]
            if np.array_equal(nxt, target):
                break
            target = nxt
        regions = _relabel(target[regions])
    return regions


def _components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(u.size, dtype=np.int8), (u, v)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def connected_levels(
    pixel_clusters: np.ndarray,
    parents: list[np.ndarray],
    min_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Connected segments of every level, as region lookup tables.

    Parameters
    ----------
    pixel_clusters : ndarray
        ``(H, W)`` cluster id ``0..K0-1`` of each pixel at the finest level.
    parents : list of ndarray
        ``parents[l][c]`` is the cluster at level ``l + 1`` containing cluster ``c`` of level ``l``.
    min_size : int
        Smallest base region, in pixels.

    Returns
    -------
    regions : ndarray
        ``(H, W)`` int32 base-region map ``0..R-1``.
    components : ndarray
        ``(L, R)`` component id of every region at every level (not yet contiguous labels).
    """
    regions = base_regions(pixel_clusters, max(1, int(min_size)))
    n_regions = int(regions.max()) + 1
    # majority finest-level cluster of each region
    k0 = int(pixel_clusters.max()) + 1
    pairs = regions.ravel().astype(np.int64) * k0 + pixel_clusters.ravel()
    counts = np.bincount(pairs, minlength=n_regions * k0).reshape(n_regions, k0)
    cluster = counts.argmax(axis=1)
    u, v, _ = _edges(regions)
    comps = np.empty((len(parents) + 1, n_regions), dtype=np.int64)
    for lv in range(len(parents) + 1):
        if lv:
            cluster = parents[lv - 1][cluster]
        same = cluster[u] == cluster[v]
        comps[lv] = _components(n_regions, u[same], v[same])
    return regions, comps
