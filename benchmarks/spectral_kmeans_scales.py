"""How the bandwidth of spectral k-means was chosen (its defaults in cuts.spectral_kmeans).

Spectral k-means (the paper's "CUTS + k-means") builds a Gaussian affinity between the
weighted atoms. This script compares bandwidths on a folder with masks:

* ``global``: one bandwidth for all atoms, ``4 x`` the median squared distance of an atom
  to its 10th neighbour (the rule used before the local scales);
* ``local s/n``: atom ``i`` gets its own width ``s x`` (distance to its ``n``-th nearest
  atom), ``K_ij = exp(-d_ij^2 / (w_i w_j))`` (self-tuning spectral clustering).

For every training seed an encoder is trained with the default recipe (no labels), and
each setting is scored by mean Dice (k = 10, ground-truth-hint binarisation) at every
clustering seed. A last column checks each setting on synthetic embeddings with four
known regions (the test suite's nested image, three noise seeds): the smallest Dice of a
region, which must stay near 1 (a width too small splits a plain region into pieces).

    python benchmarks/spectral_kmeans_scales.py --images ../shared/data/retina_dev/images \\
        --masks ../shared/data/retina_dev/masks
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

#: (label, spectral_kmeans keyword arguments); ``None`` stands for the former global bandwidth
SETTINGS: list[tuple[str, dict | None]] = [
    ("global (4 x median, before)", None),
    ("local 0.4 / 10th", {"local_scale": 0.4, "n_neighbors": 10}),
    ("local 0.5 / 10th", {"local_scale": 0.5, "n_neighbors": 10}),
    ("local 0.6 / 10th (default)", {"local_scale": 0.6, "n_neighbors": 10}),
    ("local 0.5 / 20th", {"local_scale": 0.5, "n_neighbors": 20}),
    ("local 0.6 / 20th", {"local_scale": 0.6, "n_neighbors": 20}),
    ("local 1.0 / 10th", {"local_scale": 1.0, "n_neighbors": 10}),
]


def _global_bandwidth(embeddings: np.ndarray, k: int, *, seed: int, atoms) -> np.ndarray:
    """Spectral k-means with the former single bandwidth (same atoms, eigenvectors and k-means)."""
    from cuts.clustering import diffusion_map_kmeans
    from cuts.condensation import pairwise_sq_dists

    x = atoms.coords.astype(np.float64)
    d2 = pairwise_sq_dists(x)
    eps = max(float(np.median(np.partition(d2, 10, axis=1)[:, 10])) * 4.0, 1e-12)
    labels = diffusion_map_kmeans(np.exp(-d2 / eps), atoms.counts.astype(np.float64), k, seed=seed)
    return labels[atoms.atom_map].astype(np.int32)


def _segment(emb: np.ndarray, kwargs: dict | None, *, seed: int, atoms) -> np.ndarray:
    from cuts.clustering import spectral_kmeans

    if kwargs is None:
        return _global_bandwidth(emb, 10, seed=seed, atoms=atoms)
    return spectral_kmeans(emb, 10, seed=seed, atoms=atoms, **kwargs)


def _synthetic_worst(kwargs: dict | None) -> float:
    """Smallest per-region Dice on the nested four-region image (tests/test_hierarchy.py), 3 noise seeds."""
    from cuts.clustering import spectral_kmeans
    from cuts.condensation import build_atoms
    from cuts.masks import binarize_by_hint
    from cuts.metrics import dice

    worst = 1.0
    for noise_seed in range(3):
        rng = np.random.default_rng(noise_seed)
        h = w = 48
        gt = np.zeros((h, w), dtype=int)
        gt[:, w // 2 :] = 1
        yy, xx = np.mgrid[:h, :w]
        gt[(yy - h // 2) ** 2 + (xx - w // 4) ** 2 < (h // 6) ** 2] = 2
        gt[(yy - h // 2) ** 2 + (xx - 3 * w // 4) ** 2 < (h // 6) ** 2] = 3
        base = rng.normal(size=(2, 16))
        centres = np.stack([base[0], base[1], base[0] + 0.6 * rng.normal(size=16), base[1] + 0.6 * rng.normal(size=16)])
        emb = (centres[gt] + 0.15 * rng.normal(size=(h, w, 16))).astype(np.float32)
        if kwargs is None:
            lab = _global_bandwidth(emb, 4, seed=0, atoms=build_atoms(emb, seed=0))
        else:
            lab = spectral_kmeans(emb, 4, seed=0, **kwargs)
        worst = min(worst, *(dice(binarize_by_hint(lab, gt == r), gt == r) for r in range(4)))
    return float(worst)


def main() -> None:
    import cuts
    from cuts.condensation import build_atoms
    from cuts.evaluation import load_pairs
    from cuts.masks import binarize_by_hint
    from cuts.metrics import dice

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--masks", required=True)
    parser.add_argument("--train-seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--cluster-seeds", default="0,1,2", help="clustering seeds (default 0,1,2)")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    train_seeds = [int(s) for s in args.train_seeds.split(",")]
    cluster_seeds = [int(s) for s in args.cluster_seeds.split(",")]
    pairs = load_pairs(args.images, args.masks)
    images = [im for _, im, _ in pairs]

    scores: dict[str, dict[str, list[float]]] = {label: {} for label, _ in SETTINGS}
    for ts in train_seeds:
        t0 = time.perf_counter()
        model = cuts.train(images, seed=ts, device="cpu")
        embs = [cuts.embed(model, im) for im in images]
        print(f"encoder, training seed {ts}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        for cs in cluster_seeds:
            atoms = [build_atoms(e, seed=cs) for e in embs]  # as cuts evaluate: one quantisation per seed
            for label, kwargs in SETTINGS:
                d = [
                    dice(binarize_by_hint(_segment(e, kwargs, seed=cs, atoms=a), m), m)
                    for e, a, (_, _, m) in zip(embs, atoms, pairs)
                ]
                scores[label].setdefault(str(ts), []).append(float(np.mean(d)))

    head = "  ".join(f"train {ts}" for ts in train_seeds)
    print(f"\n{len(pairs)} images; mean Dice of spectral k-means (k = 10) per training seed (mean over clustering "
          f"seeds {args.cluster_seeds}), overall mean, and the worst region Dice on synthetic embeddings")
    print(f"{'bandwidth':<30}{head}   mean  synthetic")
    table = {}
    for label, kwargs in SETTINGS:
        per_train = [float(np.mean(scores[label][str(ts)])) for ts in train_seeds]
        overall = float(np.mean([x for ts in train_seeds for x in scores[label][str(ts)]]))
        synth = _synthetic_worst(kwargs)
        table[label] = {"per_training_seed": per_train, "mean": overall, "synthetic_worst": synth,
                        "all": scores[label]}
        cells = "  ".join(f"{x:7.3f}" for x in per_train)
        print(f"{label:<30}{cells}  {overall:5.3f}  {synth:9.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main()
