"""Tests of stage 2 (diffusion condensation hierarchy), clustering and mask helpers.

Synthetic data only; small images so that the whole file runs in seconds.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cuts.cancel import Cancelled
from cuts.clustering import kmeans, spectral_kmeans
from cuts.hierarchy import Hierarchy, HierarchyFileError, condense, condense_stack
from cuts.masks import binarize_by_hint, dice, difference, union


def nested_image(h: int = 48, w: int = 48, d: int = 16, noise: float = 0.15, seed: int = 0):
    """Two halves, each with a nested blob whose embedding is close to its half's."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((h, w), dtype=int)
    gt[:, w // 2 :] = 1
    yy, xx = np.mgrid[:h, :w]
    gt[(yy - h // 2) ** 2 + (xx - w // 4) ** 2 < (h // 6) ** 2] = 2
    gt[(yy - h // 2) ** 2 + (xx - 3 * w // 4) ** 2 < (h // 6) ** 2] = 3
    base = rng.normal(size=(2, d))
    centres = np.stack([base[0], base[1], base[0] + 0.6 * rng.normal(size=d), base[1] + 0.6 * rng.normal(size=d)])
    emb = centres[gt] + noise * rng.normal(size=(h, w, d))
    return emb.astype(np.float32), gt


@pytest.fixture(scope="module")
def data():
    return nested_image()


@pytest.fixture(scope="module")
def hier(data):
    return condense(data[0], seed=0)


def _recovers(labels: np.ndarray, gt: np.ndarray, region: int, min_dice: float = 0.95) -> bool:
    truth = gt == region
    return dice(binarize_by_hint(labels, truth), truth) >= min_dice


def test_nested_structure_recovered(hier, data):
    _, gt = data
    # the two blobs are found at some level, and the two halves at a coarser one
    for blob in (2, 3):
        assert any(_recovers(hier.label_map(lv), gt, blob) for lv in range(hier.n_levels))
    halves = (gt == 1) | (gt == 3)
    assert any(
        dice(binarize_by_hint(hier.label_map(lv), halves), halves) > 0.95 for lv in range(hier.n_levels)
    )


def test_shape_levels_and_contiguous_labels(hier):
    assert hier.shape == (48, 48)
    assert hier.n_levels >= 2
    n = hier.n_segments
    assert len(n) == hier.n_levels
    assert np.all(np.diff(n) < 0), "each level must have fewer segments than the finer one"
    assert n[-1] >= 2
    for lv in range(hier.n_levels):
        lm = hier.label_map(lv)
        assert lm.dtype == np.int32 and lm.shape == hier.shape
        assert np.array_equal(np.unique(lm), np.arange(1, n[lv] + 1))
    assert np.array_equal(hier.label_map(-1), hier.label_map(hier.n_levels - 1))


def test_distinct_levels(hier):
    maps = [hier.label_map(lv) for lv in range(hier.n_levels)]
    for a, b in zip(maps, maps[1:]):
        assert len(np.unique(a)) != len(np.unique(b))


def test_monotone_coarsening_and_parents(hier):
    for lv in range(hier.n_levels - 1):
        fine, coarse = hier.label_map(lv), hier.label_map(lv + 1)
        par = hier.parents(lv)
        assert par.shape == (hier.n_segments[lv] + 1,)
        assert par[0] == 0
        # every fine segment lies inside exactly one coarse segment, the one parents() names
        assert np.array_equal(par[fine], coarse)
    assert np.all(hier.parents(hier.n_levels - 1) == 0)


def test_level_errors(hier):
    with pytest.raises(IndexError):
        hier.label_map(hier.n_levels)
    with pytest.raises(TypeError):
        hier.label_map(1.5)


def test_mask_at(hier):
    for lv in (0, hier.n_levels - 1):
        lm = hier.label_map(lv)
        m = hier.mask_at(lv, (3, 40))
        assert m.dtype == bool and m.shape == hier.shape
        assert np.array_equal(m, lm == lm[3, 40])
    with pytest.raises(IndexError):
        hier.mask_at(0, (100, 0))


def test_persistent_map(hier, data):
    _, gt = data
    p = hier.persistent()
    assert p.dtype == np.int32 and p.shape == hier.shape
    assert p.min() >= 1
    assert np.array_equal(np.unique(p), np.arange(1, p.max() + 1))
    # built from whole segments of the hierarchy
    for lab in np.unique(p):
        region = p == lab
        assert any(
            np.array_equal(region, hier.label_map(lv) == hier.label_map(lv)[region][0])
            or (region <= (hier.label_map(lv) == hier.label_map(lv)[region][0])).all()
            for lv in range(hier.n_levels)
        )
    assert np.array_equal(p, hier.persistent())  # cached, stable


def test_determinism(data):
    a = condense(data[0], seed=3)
    b = condense(data[0], seed=3)
    assert a.n_levels == b.n_levels
    for lv in range(a.n_levels):
        assert np.array_equal(a.label_map(lv), b.label_map(lv))
    assert np.array_equal(a.persistent(), b.persistent())


def test_save_load_roundtrip(hier, tmp_path):
    path = tmp_path / "h.npz"
    hier.save(path)
    assert not [p for p in tmp_path.iterdir() if p.name != "h.npz"], "temporary file left behind"
    h2 = Hierarchy.load(path)
    assert h2.shape == hier.shape and h2.n_levels == hier.n_levels
    assert np.array_equal(h2.n_segments, hier.n_segments)
    for lv in range(hier.n_levels):
        assert np.array_equal(h2.label_map(lv), hier.label_map(lv))
    assert np.array_equal(h2.persistent(), hier.persistent())


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(HierarchyFileError):
        Hierarchy.load(bad)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.arange(3))
    with pytest.raises(ValueError, match="not a readable CUTS hierarchy"):
        Hierarchy.load(foreign)
    with pytest.raises(FileNotFoundError):
        Hierarchy.load(tmp_path / "missing.npz")


def test_truncated_file(hier, tmp_path):
    path = tmp_path / "h.npz"
    hier.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HierarchyFileError):
        Hierarchy.load(path)


def test_cancel(data):
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        condense(data[0], cancel=ev)
    calls = {"n": 0}

    def later() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        condense(data[0], cancel=later)


def test_callback(data):
    seen = []
    condense(data[0], callback=lambda d, t, m: seen.append((d, t, m)))
    assert seen and seen[-1][0] == seen[-1][1] == 100
    assert all(isinstance(m, str) for _, _, m in seen)
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)


def test_condense_stack(data):
    emb = data[0][:24, :24]
    stack = np.stack([emb, emb[::-1]])
    seen = []
    hs = condense_stack(stack, callback=lambda d, t, m: seen.append((d, t)))
    assert len(hs) == 2 and all(isinstance(h, Hierarchy) for h in hs)
    assert hs[0].shape == (24, 24)
    assert seen[-1] == (200, 200)
    with pytest.raises(ValueError, match="Z, H, W, D"):
        condense_stack(emb)


def test_bad_inputs(data):
    with pytest.raises(ValueError, match="H, W, D"):
        condense(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="condense_stack"):
        condense(np.zeros((2, 4, 4, 3)))
    bad = data[0].copy()
    bad[5, 5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        condense(bad)
    with pytest.raises(ValueError, match="unknown condense option"):
        condense(data[0], not_an_option=1)
    with pytest.raises(ValueError):
        condense(data[0], growth=0.5)


def test_constant_input_gives_single_level():
    h = condense(np.ones((8, 8, 4), dtype=np.float32))
    assert h.n_levels >= 1
    assert np.all(h.label_map(0) >= 1)


def test_kmeans_basic():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 0.1, (50, 3)), rng.normal(5, 0.1, (30, 3))])
    lab = kmeans(pts, 2, seed=0)
    assert lab.dtype == np.int32 and lab.shape == (80,)
    assert set(np.unique(lab)) == {1, 2}
    assert len(set(lab[:50])) == 1 and len(set(lab[50:])) == 1
    assert lab[0] == 1  # largest cluster first
    img = pts[:64].reshape(8, 8, 3)
    assert kmeans(img, 3).shape == (8, 8)
    assert np.array_equal(kmeans(pts, 2, seed=1), kmeans(pts, 2, seed=1))
    with pytest.raises(ValueError):
        kmeans(pts, 0)
    with pytest.raises(ValueError):
        kmeans(pts, 500)
    with pytest.raises(ValueError):
        kmeans(np.zeros(5), 2)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.full((4, 2), np.nan), 2)


def test_kmeans_float32_probabilities_regression():
    # float32 sampling probabilities used to make numpy's choice() raise
    # "Probabilities do not sum to 1" (e.g. on every unweighted 40x40 image)
    from cuts.clustering import weighted_kmeans

    for seed in range(6):
        rng = np.random.default_rng(seed)
        emb = rng.standard_normal((40, 40, 128)).astype(np.float32)
        lab = kmeans(emb, 10, seed=seed, n_init=1)
        assert lab.shape == (40, 40)
        assert np.array_equal(np.unique(lab), np.arange(1, 11))
        pts = emb.reshape(-1, 128)[:997]
        wts = rng.uniform(0.1, 50.0, 997).astype(np.float32)
        centres, labels = weighted_kmeans(pts, 10, weights=wts, seed=seed, n_init=2)
        assert centres.shape == (10, 128) and labels.shape == (997,)
        assert labels.min() >= 0 and labels.max() < 10


def test_kmeans_weights_respected():
    from cuts.clustering import weighted_kmeans

    # zero-weight points are never picked as seeds; a heavy point attracts a centre
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [100.0, 100.0]], dtype=np.float32)
    wts = np.array([1.0, 1.0, 1.0, 0.0], dtype=np.float32)
    for seed in range(5):
        centres, _ = weighted_kmeans(pts, 3, weights=wts, seed=seed, n_init=1)
        assert not np.any(np.all(np.isclose(centres, [100.0, 100.0]), axis=1))


def test_spectral_kmeans(data):
    emb, gt = data
    lab = spectral_kmeans(emb, 4, seed=0)
    assert lab.shape == gt.shape and lab.dtype == np.int32
    assert np.array_equal(np.unique(lab), np.arange(1, lab.max() + 1))
    assert lab.max() <= 4
    for region in range(4):
        assert _recovers(lab, gt, region, 0.9)
    assert np.array_equal(lab, spectral_kmeans(emb, 4, seed=0))
    for bad in ({"local_scale": 0.0}, {"local_scale": -1.0}, {"n_neighbors": 0}, {"n_neighbors": 2.5},
                {"diffusion_time": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            spectral_kmeans(emb, 4, **bad)


def test_longer_diffusion_keeps_the_regions_at_every_atom_count(data):
    """With diffusion_time = 4 the four regions are found whatever the atom count (docs/hierarchy.md)."""
    emb, gt = data
    for n_atoms in (120, 180, 240, 300):
        lab = spectral_kmeans(emb, 4, seed=0, n_atoms=n_atoms, diffusion_time=4.0)
        for region in range(4):
            assert _recovers(lab, gt, region, 0.9), (n_atoms, region)


def test_spectral_kmeans_uses_finer_atoms_than_the_hierarchy(data, monkeypatch):
    from cuts import condensation
    from cuts.clustering import default_spectral_atoms
    from cuts.condensation import default_n_atoms

    emb, _ = data
    n = emb.shape[0] * emb.shape[1]
    assert default_spectral_atoms(n) == 2 * default_n_atoms(n)
    assert default_spectral_atoms(4096 * 4096) == 2000 and default_spectral_atoms(10) == 2
    asked = []
    real = condensation.build_atoms

    def spy(*args, **kwargs):
        asked.append(kwargs.get("n_atoms"))
        return real(*args, **kwargs)

    monkeypatch.setattr(condensation, "build_atoms", spy)
    spectral_kmeans(emb, 4, seed=0)
    spectral_kmeans(emb, 4, seed=0, n_atoms=50)
    assert asked == [default_spectral_atoms(n), 50]


def test_single_precision_eigenpairs_match_double_precision():
    from scipy.linalg import eigh

    from cuts.clustering import _leading_eigenpairs, local_affinity

    rng = np.random.default_rng(0)
    # four separate groups: the leading eigenvalue 1 is repeated four times
    x = np.concatenate([rng.normal(c, 1.0, (150, 3)) for c in (0.0, 6.0, 12.0, 18.0)])
    kern = local_affinity(x)
    deg = kern.sum(1)
    sym = kern / np.sqrt(deg[:, None] * deg[None, :])
    m = sym.shape[0]
    ref_vals, ref_vecs = eigh(sym, subset_by_index=[m - 6, m - 1])
    vals, vecs = _leading_eigenpairs(sym, 6)
    assert vals.dtype == vecs.dtype == np.float64
    np.testing.assert_allclose(vals, ref_vals, atol=1e-5)
    # the same invariant subspace (within a repeated eigenvalue the basis is arbitrary)
    np.testing.assert_allclose(np.linalg.norm(ref_vecs.T @ vecs, axis=0), 1.0, atol=1e-4)


def test_spectral_kmeans_duplicate_atoms_get_a_finite_width():
    """Many identical embeddings (flat image parts) give atoms at distance 0: no division by zero."""
    emb = np.zeros((24, 24, 4), np.float32)
    emb[:, 12:, 0] = 1.0
    emb[:4, :4, 1] = 3.0
    lab = spectral_kmeans(emb, 3, seed=0)
    assert np.unique(lab).size == 3 and (lab[:, 12:] == lab[0, 20]).all()


def test_masks():
    labels = np.array([[1, 1, 2], [2, 2, 3]])
    truth = np.array([[0, 0, 1], [1, 0, 0]], dtype=bool)
    assert np.array_equal(binarize_by_hint(labels, truth), labels == 2)
    assert not binarize_by_hint(labels, np.zeros_like(truth)).any()
    with pytest.raises(ValueError):
        binarize_by_hint(labels, truth[:, :2])
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 0], bool)
    assert np.array_equal(union(a, b), [1, 1, 1, 0])
    assert np.array_equal(difference(a, b), [1, 0, 0, 0])


def _two_blobs_same_embedding(seed: int = 0) -> np.ndarray:
    """Two separate discs with the same embedding on a background with another."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    blobs = ((yy - 12) ** 2 + (xx - 12) ** 2 < 36) | ((yy - 35) ** 2 + (xx - 35) ** 2 < 36)
    emb = np.where(blobs[..., None], 1.0, -1.0) * np.ones(16) + rng.normal(0, 0.05, (48, 48, 16))
    emb[..., 1] += np.where(blobs, 0.0, 2.0)
    return emb.astype(np.float32)


def test_connected_segments_are_connected_and_nested():
    from scipy import ndimage

    h = condense(_two_blobs_same_embedding(), seed=0)
    for lv in range(h.n_levels):
        labels = h.label_map(lv)
        for lab in range(1, h.n_segments[lv] + 1):
            _, n = ndimage.label(labels == lab)
            assert n == 1, f"level {lv} segment {lab} has {n} pieces"
        if lv + 1 < h.n_levels:
            coarse = h.label_map(lv + 1)
            for lab in range(1, h.n_segments[lv] + 1):
                assert np.unique(coarse[labels == lab]).size == 1
    # the two discs are separate segments at every level, since they do not touch
    assert all(h.label_map(lv)[12, 12] != h.label_map(lv)[35, 35] for lv in range(h.n_levels))


def test_unconnected_option_keeps_embedding_clusters():
    h = condense(_two_blobs_same_embedding(), seed=0, connected=False)
    # same embedding -> same cluster at the coarsest level that still separates discs from background
    assert any(
        h.label_map(lv)[12, 12] == h.label_map(lv)[35, 35] != h.label_map(lv)[0, 47] for lv in range(h.n_levels)
    )
    with pytest.raises(ValueError, match="connected"):
        condense(_two_blobs_same_embedding(), connected="yes")


def test_shared_atoms_give_the_same_results(data, hier):
    """condense and spectral_kmeans given prebuilt atoms equal their own quantisation (spectral's is finer)."""
    from cuts.condensation import build_atoms

    emb = data[0]
    atoms = build_atoms(emb, seed=0)
    shared = condense(emb, seed=0, atoms=atoms)
    assert shared.n_levels == hier.n_levels
    for level in range(hier.n_levels):
        assert np.array_equal(shared.label_map(level), hier.label_map(level))
    from cuts.clustering import default_spectral_atoms

    fine = build_atoms(emb, seed=0, n_atoms=default_spectral_atoms(emb.shape[0] * emb.shape[1]))
    assert np.array_equal(spectral_kmeans(emb, 4, seed=0, atoms=fine), spectral_kmeans(emb, 4, seed=0))
    assert spectral_kmeans(emb, 4, seed=0, atoms=atoms).shape == emb.shape[:2]
    with pytest.raises(ValueError, match="atoms were built for"):
        condense(emb[:20], atoms=atoms)
    with pytest.raises(ValueError, match="atoms were built for"):
        spectral_kmeans(emb[:, :20], 4, atoms=atoms)


def test_max_drop_spreads_a_collapse_over_several_levels():
    """Three tight groups of 20 points: full diffusion steps jump from 56 clusters to 3."""
    from cuts.condensation import condense_atoms

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 5
    x = np.concatenate([c + 0.05 * rng.normal(size=(20, 8)) for c in centres])
    counts = [
        [np.unique(p).size for p in condense_atoms(x, np.ones(60), max_segments=80, max_drop=md).partitions]
        for md in (None, 1.25)
    ]
    full, lazy = counts
    assert any(a / b > 10 for a, b in zip(full, full[1:]))  # the collapse
    assert len(lazy) > 3 * len(full)
    # steps are halved at most 7 times, so the cut is not always within 1.25, but no jump is left
    assert max(a / b for a, b in zip(lazy, lazy[1:])) < 2
    assert lazy[0] == full[0] and lazy[-1] == full[-1] == 2
    # the default of condense, and a bad value
    with pytest.raises(ValueError, match="max_drop"):
        condense(nested_image()[0], seed=0, max_drop=1.0)
