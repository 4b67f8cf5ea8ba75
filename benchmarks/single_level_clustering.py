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
  each pixel to its most likely component;
* k-means on transformed embeddings: L2-normalised (cosine geometry, as the
  contrastive loss sees them), the 4 leading principal components whitened,
  and the embeddings blurred with a Gaussian of sigma 1 pixel.

Then, per image, what the k-means cluster chosen by the hint gets wrong:
its precision and recall against the mask, and the share of the mask's pixels
in the two clusters that hold most of it. A lesion split over two clusters
shows as precision near 1 with recall near 1/2; a lesion that shares its
cluster with look-alikes elsewhere shows as low precision.

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

    def km_cosine(emb: np.ndarray, seed: int) -> np.ndarray:
        return kmeans(emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-6), 10, seed=seed)

    def km_whitened(emb: np.ndarray, seed: int) -> np.ndarray:
        z = pca(emb.reshape(-1, emb.shape[-1]), 4)
        z /= np.maximum(z.std(0), 1e-12)
        return kmeans(z.astype(np.float32).reshape(*emb.shape[:2], 4), 10, seed=seed)

    def km_blurred(emb: np.ndarray, seed: int) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        return kmeans(gaussian_filter(emb, (1.0, 1.0, 0.0)), 10, seed=seed)

    def hint_dice(lab: np.ndarray, m: np.ndarray) -> float:
        return dice(binarize_by_hint(lab, m), m)

    rows = [
        ("kmeans", km, hint_dice),
        ("kmeans, best cluster (oracle)", km, best_cluster_dice),
        ("gaussian mixture (PCA 8)", gmm, hint_dice),
        ("kmeans, L2-normalised", km_cosine, hint_dice),
        ("kmeans, 4 whitened PCs", km_whitened, hint_dice),
        ("kmeans, blurred (sigma 1)", km_blurred, hint_dice),
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

    print(f"\nk-means (seed {seeds[0]}) per image: the hint's cluster against the mask")
    print(f"{'image':<24}{'dice':>6}{'prec':>6}{'recall':>7}{'mask %':>7}  mask share of its top 2 clusters")
    for i, (name, _, mask) in enumerate(pairs):
        labels = cache[("km", seeds[0], i)]
        truth = np.asarray(mask, dtype=bool)
        chosen = binarize_by_hint(labels, truth).astype(bool)
        tp = int((chosen & truth).sum())
        share = np.sort(np.bincount(labels[truth].ravel(), minlength=10))[::-1][:2] / max(int(truth.sum()), 1)
        print(f"{str(name)[-24:]:<24}{dice(chosen, truth):6.3f}{tp / max(int(chosen.sum()), 1):6.2f}"
              f"{tp / max(int(truth.sum()), 1):7.2f}{100 * truth.mean():7.1f}  {share[0]:.2f} + {share[1]:.2f}")


if __name__ == "__main__":
    main()
