"""Weighted atoms and the diffusion-condensation engine (internal).

Two steps, both sub-quadratic in the number of pixels ``N``:

1. :func:`build_atoms` L2-normalises each pixel embedding, projects it on its
   leading principal components (fitted on a subsample) and quantises the
   pixels into ``M`` weighted *atoms* (k-means fitted on a subsample,
   assignment of all pixels in chunks). Atoms carry their pixel counts.
2. :func:`condense_atoms` runs diffusion condensation (paper eq. 1-4) on the
   weighted atoms: Gaussian affinities ``K``, count-weighted diffusion operator
   ``P = D^-1 K W``, ``X <- P X`` with ``K`` recomputed from the moved points;
   points closer than the merge distance merge (their weights add up, which is
   exactly what identical pixels would do); the bandwidth grows when nothing
   merged. Only ``M x M`` matrices are ever formed (``M`` ≈ 1000), and no
   per-step operator is stored.

:mod:`cuts.hierarchy` turns the recorded partitions into a :class:`Hierarchy`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cuts.cancel import CancelToken, check_cancelled

ProgressCallback = Callable[[int, int, str], None]

#: rows per chunk for pixel-wise passes (normalise, project, assign)
_ROW_CHUNK = 32768


def default_n_atoms(n_pixels: int) -> int:
    """Default number of atoms for an image of ``n_pixels`` pixels."""
    return int(np.clip(n_pixels // 16, 2, 1000))


def pairwise_sq_dists(x: np.ndarray) -> np.ndarray:
    """Dense squared Euclidean distances of the rows of a small ``(m, d)`` array."""
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def validate_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Check an ``(H, W, D)`` embedding array; returns it as an ndarray (no copy)."""
    arr = np.asarray(embeddings)
    if arr.ndim != 3:
        hint = " For a stack use condense_stack()." if arr.ndim == 4 else ""
        raise ValueError(
            f"embeddings must have shape (H, W, D) with the feature axis last; got shape {arr.shape}.{hint}"
        )
    if min(arr.shape) < 1:
        raise ValueError(f"embeddings must not be empty; got shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"embeddings must be a numeric array; got dtype {arr.dtype}.")
    return arr


@dataclass
class Atoms:
    """Pixels quantised into weighted atoms."""

    atom_map: np.ndarray  #: (H, W) int32 atom index per pixel, 0..M-1
    coords: np.ndarray  #: (M, c) float32 mean PCA coordinates of each atom
    counts: np.ndarray  #: (M,) int64 pixels per atom (all > 0)


def _report(callback, span, frac, msg):
    if callback is not None:
        lo, hi = span
        callback(int(round(lo + (hi - lo) * min(max(frac, 0.0), 1.0))), 100, msg)


def _normalised_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit L2 norm (zero rows stay zero); raises on NaN/inf."""
    xf = np.asarray(x, dtype=np.float32)
    if not np.isfinite(xf).all():
        raise ValueError(
            "embeddings contain NaN or infinite values; re-compute them (check the image for NaNs) "
            "before condensing."
        )
    norms = np.sqrt(np.einsum("ij,ij->i", xf, xf))
    norms[norms < 1e-12] = 1.0
    return xf / norms[:, None]


def build_atoms(
    embeddings: np.ndarray,
    *,
    seed: int = 0,
    n_atoms: int | None = None,
    n_components: int = 32,
    pca_samples: int = 5000,
    fit_samples: int = 10000,
    kmeans_iter: int = 6,
    callback: ProgressCallback | None = None,
    progress_span: tuple[int, int] = (0, 100),
    cancel: CancelToken = None,
) -> Atoms:
    """Quantise ``(H, W, D)`` embeddings into weighted atoms.

    Memory: the input is read in chunks (never copied as a whole); the only
    ``N``-sized arrays are the ``(N, c)`` float32 projection and the atom map.
    """
    import torch

    from cuts.clustering import _lloyd, assign_nearest, group_sum

    arr = validate_embeddings(embeddings)
    h, w, d = arr.shape
    n = h * w
    flat = arr.reshape(n, d)
    if n_atoms is None:
        n_atoms = default_n_atoms(n)
    if n_atoms < 1:
        raise ValueError(f"n_atoms must be >= 1; got {n_atoms}.")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1; got {n_components}.")
    rng = np.random.default_rng(seed)
    span_lo, span_hi = progress_span

    def sub(a, b):
        return (span_lo + (span_hi - span_lo) * a, span_lo + (span_hi - span_lo) * b)

    # --- PCA of the normalised embeddings, fitted on a subsample -----------------
    _report(callback, progress_span, 0.0, "fitting PCA")
    n_fit = min(n, pca_samples)
    fit_idx = np.sort(rng.choice(n, size=n_fit, replace=False)) if n_fit < n else np.arange(n)
    sample = _normalised_rows(flat[fit_idx])
    mean = sample.mean(0, dtype=np.float64)
    c = min(n_components, d)
    if c < d:
        centred = sample - mean.astype(np.float32)
        # right singular vectors via the small (d, d) covariance
        cov = (centred.T @ centred).astype(np.float64)
        vals, vecs = np.linalg.eigh(cov)
        comps = vecs[:, np.argsort(vals)[::-1][:c]]
        # deterministic sign: largest-magnitude loading positive
        signs = np.sign(comps[np.abs(comps).argmax(0), np.arange(c)])
        signs[signs == 0] = 1.0
        comps = comps * signs
    else:
        comps = np.eye(d)
    check_cancelled(cancel, "condensation")

    # --- project all pixels in chunks ---------------------------------------------
    proj = np.empty((n, c), dtype=np.float32)
    comps32 = comps.astype(np.float32)
    mean32 = mean.astype(np.float32)
    for s in range(0, n, _ROW_CHUNK):
        check_cancelled(cancel, "condensation")
        blk = _normalised_rows(flat[s : s + _ROW_CHUNK])
        blk -= mean32
        np.matmul(blk, comps32, out=proj[s : s + _ROW_CHUNK])
        _report(callback, sub(0.0, 0.2), (s + _ROW_CHUNK) / n, "projecting embeddings")

    # --- k-means atoms on a subsample, then assign every pixel --------------------
    m = min(n_atoms, n)
    fit_n = min(n, max(10 * m, fit_samples))
    fit_idx = np.sort(rng.choice(n, size=fit_n, replace=False)) if fit_n < n else np.arange(n)
    _report(callback, sub(0.2, 0.2), 0.0, "quantising into atoms")
    fit = torch.from_numpy(proj[fit_idx])
    centres, _, _ = _lloyd(
        fit,
        m,
        rng=np.random.default_rng(int(rng.integers(2**31))),
        max_iter=kmeans_iter,
        tol=1e-4,
        init="k-means++" if m <= 256 else "random",
        cancel=cancel,
        final_assign=False,  # only the centres are needed: every pixel is assigned below
    )
    del fit
    centres = centres.numpy()
    _report(callback, sub(0.2, 0.7), 1.0, "assigning pixels to atoms")
    projt = torch.from_numpy(proj)
    labels = assign_nearest(projt, torch.from_numpy(centres), cancel=cancel)
    labels_np = labels.numpy()
    del labels
    counts = np.bincount(labels_np, minlength=centres.shape[0])
    sums = group_sum(labels_np, proj, centres.shape[0]).astype(np.float64)
    del proj, projt
    keep = counts > 0
    remap = (np.cumsum(keep) - 1).astype(np.int32)
    atom_map = remap[labels_np].reshape(h, w)
    coords = (sums[keep] / counts[keep, None]).astype(np.float32)
    counts_np = counts[keep].astype(np.int64)
    _report(callback, sub(0.7, 1.0), 1.0, "atoms ready")
    return Atoms(atom_map=atom_map, coords=coords, counts=counts_np)


@dataclass
class CondensationResult:
    """What :func:`condense_atoms` recorded."""

    #: (L, M) int32: node id of every atom at each recorded partition, finest first
    partitions: np.ndarray
    #: (L,) iteration at which each partition was reached
    iterations: np.ndarray
    #: (L,) bandwidth at which each partition was reached
    epsilons: np.ndarray
    #: birth / death iteration of every node id (death = last iteration + 1 for the root)
    birth: np.ndarray
    death: np.ndarray
    n_iterations: int = 0
    log: list[str] = field(default_factory=list)


def _components(pairs_i: np.ndarray, pairs_j: np.ndarray, m: int) -> tuple[int, np.ndarray]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(pairs_i.size, dtype=np.int8), (pairs_i, pairs_j)), shape=(m, m))
    return connected_components(g, directed=False)


def _close_groups(d2, thr: float) -> tuple[int, np.ndarray] | None:
    """``(n_groups, labels)``: connected components of the pairs with ``d2 < thr``; None if there are none."""
    import torch

    close = torch.triu(d2 < thr, diagonal=1)
    if not bool(close.any()):
        return None
    ij = torch.nonzero(close).numpy()
    return _components(ij[:, 0], ij[:, 1], d2.shape[0])


def condense_atoms(
    coords: np.ndarray,
    counts: np.ndarray,
    *,
    max_segments: int = 80,
    min_size: float = 0.0,
    knn: int = 5,
    bandwidth_scale: float = 1.0,
    merge_ratio: float = 0.1,
    growth: float = 1.25,
    weight_power: float = 1.0,
    alpha: float = 0.0,
    max_drop: float | None = None,
    max_iter: int = 5000,
    callback: ProgressCallback | None = None,
    progress_span: tuple[int, int] = (0, 100),
    cancel: CancelToken = None,
) -> CondensationResult:
    """Diffusion condensation of weighted points.

    Parameters
    ----------
    coords, counts
        ``(M, c)`` atom positions and their (pixel) weights.
    max_segments
        Partitions are recorded once at most this many clusters remain.
    min_size
        Within the recorded range, clusters lighter than this (in pixels) are
        absorbed into their nearest cluster as part of the merge step.
    knn, bandwidth_scale
        Initial bandwidth ``eps = bandwidth_scale * median_i d2(i, knn-th neighbour)``.
    merge_ratio
        Points closer than ``merge_ratio * sqrt(eps)`` merge.
    growth
        ``eps *= growth`` after an iteration without any merge.
    alpha
        Density normalisation: the kernel is ``K_ij / q_j**alpha`` (``q`` the weighted degree).
    max_drop
        Within the recorded range, a diffusion step that would cut the number of
        clusters by more than this factor is replaced by the lazy step
        ``x + tau (P x - x)``, ``tau`` halved (at most 7 times) until it does not, so
        that one step does not jump from dozens of segments to a few. ``None``:
        always the full step ``P x``.
    """
    import torch

    x = torch.as_tensor(np.asarray(coords, dtype=np.float64)).clone()
    wts = torch.as_tensor(np.asarray(counts, dtype=np.float64)).clone()
    m0 = x.shape[0]
    # node bookkeeping: nodes 0..m0-1 are the atoms
    atom_node = np.arange(m0, dtype=np.int64)  # atom -> current cluster node id
    cluster_node = np.arange(m0, dtype=np.int64)  # cluster row -> node id
    birth = np.zeros(2 * m0 + 1, dtype=np.int64)  # merges only ever create < m0 new nodes
    death = np.full(2 * m0 + 1, -1, dtype=np.int64)
    next_node = m0

    partitions: list[np.ndarray] = []
    iterations: list[int] = []
    epsilons: list[float] = []
    last_multi: tuple[np.ndarray, int, float] | None = None

    def sqd(a):
        sq = (a * a).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)
        d2.clamp_min_(0.0)
        d2.fill_diagonal_(0.0)
        return d2

    d2 = sqd(x)
    if m0 > 1:
        k = min(knn, m0 - 1)
        kth = torch.kthvalue(d2, k + 1, dim=1).values  # +1: self at 0
        pos = kth[kth > 0]
        eps = float(pos.median()) if pos.numel() else float(d2.max())
        if eps <= 0:
            eps = 1.0
        eps *= bandwidth_scale
    else:
        eps = 1.0

    def record(t):
        nonlocal last_multi
        part = atom_node.astype(np.int32)
        if x.shape[0] <= max_segments and x.shape[0] >= 2:
            partitions.append(part)
            iterations.append(t)
            epsilons.append(eps)
        if x.shape[0] >= 2:
            last_multi = (part, t, eps)

    def merge_groups(labels: np.ndarray, n_groups: int, t: int, keep_identity: np.ndarray | None = None):
        """Merge cluster rows by ``labels``; rows with the same label become one cluster.

        With ``keep_identity`` (row index per group), the group keeps that row's
        node id (used when tiny clusters are absorbed) instead of a new node.
        """
        nonlocal x, wts, cluster_node, next_node, atom_node
        from cuts.clustering import group_sum

        w_np = wts.numpy()
        new_w_np = np.bincount(labels, weights=w_np, minlength=n_groups)
        new_x_np = group_sum(labels, x.numpy(), n_groups, w_np) / new_w_np[:, None]
        sizes = np.bincount(labels, minlength=n_groups)
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        new_nodes = cluster_node[order[starts[:-1]]].copy()  # singletons keep their node
        node_map = np.arange(next_node + n_groups, dtype=np.int64)
        for g in np.flatnonzero(sizes > 1):
            old = cluster_node[order[starts[g] : starts[g + 1]]]
            if keep_identity is not None:
                target = cluster_node[keep_identity[g]]
            else:
                target = next_node
                next_node += 1
                birth[target] = t
            dying = old[old != target]
            death[dying] = t
            node_map[dying] = target
            new_nodes[g] = target
        atom_node = node_map[atom_node]
        x = torch.from_numpy(new_x_np)
        wts = torch.from_numpy(new_w_np)
        cluster_node = new_nodes

    t = 0
    m_start = max(m0, 2)
    record(0)
    log: list[str] = []
    while x.shape[0] > 1 and t < max_iter:
        check_cancelled(cancel, "condensation")
        wk = wts if weight_power == 1.0 else wts**weight_power
        kern = torch.exp(-d2 / eps)
        if alpha > 0:
            q = (kern @ wk) ** alpha
            kern = kern / q[None, :]  # row scaling by q_i cancels in the row normalisation
        kern = kern * wk[None, :]
        moved = (kern @ x) / kern.sum(1, keepdim=True)
        del kern
        t += 1
        thr = (merge_ratio**2) * eps
        n = x.shape[0]
        d2 = sqd(moved)
        groups = _close_groups(d2, thr)
        # within the recorded range, a step that would cut the number of clusters by more than
        # max_drop is replaced by a lazy one, x + tau (P x - x), tau halved (at most 7 times)
        tau, cand = 1.0, moved
        limited = max_drop is not None and 2 < n <= max_segments
        while limited and groups is not None and groups[0] * max_drop < n and tau >= 1.0 / 64:
            tau /= 2
            cand = x + tau * (moved - x)
            d2 = sqd(cand)
            groups = _close_groups(d2, thr)
        x = cand
        changed = False
        if groups is not None:
            merge_groups(groups[1], groups[0], t)
            changed = True
        else:
            eps *= growth
        # absorb clusters that are too small to be useful segments
        if min_size > 0 and 1 < x.shape[0] <= max_segments:
            while x.shape[0] > 1:
                small = (wts < min_size).numpy()
                if not small.any():
                    break
                d2s = sqd(x).numpy()
                big = ~small
                if not big.any():
                    # everything small: merge the lightest into its nearest neighbour
                    big = np.ones_like(small)
                    small = np.zeros_like(small)
                    small[int(np.argmin(wts.numpy()))] = True
                    big[small] = False
                rows_small = np.flatnonzero(small)
                rows_big = np.flatnonzero(big)
                target = rows_big[np.argmin(d2s[np.ix_(rows_small, rows_big)], axis=1)]
                labels_rows = np.arange(x.shape[0])
                labels_rows[rows_small] = target
                uniq, labels = np.unique(labels_rows, return_inverse=True)
                keep = uniq.astype(np.int64)  # every group is led by a big cluster, which keeps its node
                merge_groups(labels.astype(np.int64), uniq.size, t, keep_identity=keep)
                changed = True
        if changed:
            d2 = sqd(x)
            record(t)
        if callback is not None and t % 5 == 0:
            frac = np.log(m_start / max(x.shape[0], 1)) / np.log(m_start)
            _report(callback, progress_span, frac, f"condensing: {x.shape[0]} clusters")
    root_death = t + 1
    birth = birth[:next_node].copy()
    death = death[:next_node].copy()
    death[death < 0] = root_death
    if not partitions and last_multi is not None:
        partitions.append(last_multi[0])
        iterations.append(last_multi[1])
        epsilons.append(last_multi[2])
    if partitions:
        parts = np.stack(partitions)
    else:  # a single atom / all identical: one level with one segment
        parts = atom_node.astype(np.int32)[None, :]
        iterations.append(t)
        epsilons.append(eps)
    _report(callback, progress_span, 1.0, "condensation finished")
    return CondensationResult(
        partitions=parts,
        iterations=np.asarray(iterations, dtype=np.int64),
        epsilons=np.asarray(epsilons, dtype=np.float64),
        birth=birth,
        death=death,
        n_iterations=t,
        log=log,
    )
