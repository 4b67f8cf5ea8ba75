"""How far single-level clustering of the CUTS embeddings can go on a folder with masks.

Trains the default encoder on the images (or loads one with ``--model``), embeds
them, then scores, with the paper's ground-truth-hint binarisation and k = 10:

* ``kmeans``: what ``cuts evaluate`` reports as CUTS + k-means;
* ``kmeans, best cluster (oracle)``: the same partition, but the cluster that
  gives the highest Dice is chosen per image: an upper bound for any way of
  choosing one k-means cluster;
* ``gaussian mixture (PCA 8)``: full-covariance Gaussian mixture (EM, 30
  iterations, k-means++ start, a ridge of ``1e-2`` times the mean variance on
  each covariance) on the 8 leading principal components of the embeddings,
  each pixel to its most likely component.

Each method is run with clustering seeds 0, 1, 2; the table gives the mean Dice
of each seed and their mean.

    python benchmarks/single_level_clustering.py --images ../shared/data/retina_dev/images \
        --masks ../shared/data/retina_dev/masks
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_cluster_dice(labels: np.ndarray, truth: np.ndarray) -> float:
    """The highest Dice any single label of ``labels`` reaches against ``truth``."""
    from cuts.metrics import dice

    return max(dice(labels == value, truth) for value in np.unique(labels))


def pca(x: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` leading principal components of the rows of ``x`` (float64)."""
    x = x.astype(np.float64) - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:n].T


def gaussian_mixture(x: np.ndarray, k: int, *, seed: int, iters: int = 30, ridge: float = 1e-2) -> np.ndarray:
    """Hard labels of a full-covariance Gaussian mixture fitted by EM, started from k-means."""
    from cuts.clustering import weighted_kmeans

    n, d = x.shape
    _, labels = weighted_kmeans(x.astype(np.float32), k, seed=seed, n_init=3)
    resp = np.eye(k)[labels]
    reg = ridge * x.var(0).mean() * np.eye(d)
    for _ in range(iters):
        nk = resp.sum(0) + 1e-10
        means = (resp.T @ x) / nk[:, None]
        loglik = np.empty((n, k))
        for j in range(k):
            xc = x - means[j]
            chol = np.linalg.cholesky((resp[:, j, None] * xc).T @ xc / nk[j] + reg)
            z = np.linalg.solve(chol, xc.T)
            loglik[:, j] = -0.5 * (z * z).sum(0) - np.log(np.diag(chol)).sum() + np.log(nk[j] / n)
        loglik -= loglik.max(1, keepdims=True)
        resp = np.exp(loglik)
        resp /= resp.sum(1, keepdims=True)
    return resp.argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--masks", required=True)
    parser.add_argument("--model", help="encoder checkpoint to use instead of training one")
    parser.add_argument("--seeds", default="0,1,2", help="clustering seeds (comma-separated)")
    args = parser.parse_args()

    import cuts
    from cuts.clustering import kmeans
    from cuts.evaluation import load_pairs
    from cuts.masks import binarize_by_hint
    from cuts.metrics import dice

    pairs = load_pairs(args.images, args.masks)
    images = [image for _, image, _ in pairs]
    t0 = time.perf_counter()
    if args.model:
        model = cuts.load_model(args.model)
        print(f"encoder: {args.model}")
    else:
        model = cuts.train(images, seed=0, device="cpu")
        print(f"encoder: default recipe, seed 0, trained in {time.perf_counter() - t0:.1f} s")
    embeddings = [cuts.embed(model, image) for image in images]
    seeds = [int(s) for s in args.seeds.split(",")]

    def km(emb: np.ndarray, seed: int) -> np.ndarray:
        return kmeans(emb, 10, seed=seed)

    def gmm(emb: np.ndarray, seed: int) -> np.ndarray:
        return gaussian_mixture(pca(emb.reshape(-1, emb.shape[-1]), 8), 10, seed=seed).reshape(emb.shape[:2])

    rows = [
        ("kmeans", km, lambda lab, m: dice(binarize_by_hint(lab, m), m)),
        ("kmeans, best cluster (oracle)", km, best_cluster_dice),
        ("gaussian mixture (PCA 8)", gmm, lambda lab, m: dice(binarize_by_hint(lab, m), m)),
    ]
    print(f"{len(pairs)} images; mean Dice per clustering seed ({', '.join(map(str, seeds))}) and their mean")
    print(f"{'method':<32}{'seeds':>22}{'mean':>8}{'s/image':>9}")
    cache: dict[tuple[str, int, int], np.ndarray] = {}
    for name, cluster, score in rows:
        t = time.perf_counter()
        clustered = 0
        per_seed = []
        for seed in seeds:
            values = []
            for i, ((_, _, mask), emb) in enumerate(zip(pairs, embeddings)):
                key = (cluster.__name__, seed, i)
                if key not in cache:
                    cache[key] = cluster(emb, seed)
                    clustered += 1
                values.append(score(cache[key], mask))
            per_seed.append(float(np.mean(values)))
        secs = f"{(time.perf_counter() - t) / clustered:.2f}" if clustered else "same"  # oracle: same labels
        text = " ".join(f"{v:.3f}" for v in per_seed)
        print(f"{name:<32}{text:>22}{np.mean(per_seed):>8.3f}{secs:>9}", flush=True)


if __name__ == "__main__":
    main()
