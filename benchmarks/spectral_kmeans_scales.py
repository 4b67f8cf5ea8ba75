"""How the defaults of spectral k-means were chosen: its bandwidth and its number of atoms.

Spectral k-means (the paper's "CUTS + k-means", ``cuts.spectral_kmeans``) quantises the
pixels into weighted atoms and builds a Gaussian affinity between them. This script
compares, on a folder with masks:

* **bandwidths**, on the default atoms:

  * ``global``: one bandwidth for all atoms, ``4 x`` the median squared distance of an
    atom to its 10th neighbour (the rule used before the local scales);
  * ``local s/n``: atom ``i`` gets its own width ``s x`` (distance to its ``n``-th nearest
    atom), ``K_ij = exp(-d_ij^2 / (w_i w_j))`` (self-tuning spectral clustering);

* **atom counts**, at the default width: the hierarchy's 1000 atoms (what spectral
  k-means used before it had atoms of its own), and finer ones.

For every training seed an encoder is trained with the default recipe (no labels), and
each setting is scored by mean Dice (k = 10, ground-truth-hint binarisation) at every
clustering seed. Two last columns check each setting on synthetic embeddings with four
known regions (the test suite's nested image, three noise seeds): the smallest Dice of a
region, which must stay near 1 (a width too small splits a plain region into pieces), and
at how many of 12 atom counts (100 to 320 atoms on this 48x48 image) every region is found
(Dice >= 0.9 at all three noise seeds): the first column can flip with the atom count alone.

A third kind of setting, ``t``, raises the eigenvalues that scale the diffusion map to the
power ``t`` (``diffusion_time``; default 1).

    python benchmarks/spectral_kmeans_scales.py --images ../shared/data/retina_dev/images \\
        --masks ../shared/data/retina_dev/masks
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

#: (label, spectral_kmeans keyword arguments); ``global`` stands for the former single bandwidth.
#: ``n_atoms`` is given for 128x128 images (the retina set, 2000 atoms by default); other images get
#: the same multiple of their default count.
BANDWIDTHS: list[tuple[str, dict]] = [
    ("global (4 x median, before)", {"global": True}),
    ("local 0.4 / 10th", {"local_scale": 0.4, "n_neighbors": 10}),
    ("local 0.5 / 10th", {"local_scale": 0.5, "n_neighbors": 10}),
    ("local 0.6 / 10th (default)", {"local_scale": 0.6, "n_neighbors": 10}),
    ("local 0.5 / 20th", {"local_scale": 0.5, "n_neighbors": 20}),
    ("local 0.6 / 20th", {"local_scale": 0.6, "n_neighbors": 20}),
    ("local 1.0 / 10th", {"local_scale": 1.0, "n_neighbors": 10}),
    ("local 0.6 / 10th, t = 2", {"local_scale": 0.6, "n_neighbors": 10, "diffusion_time": 2.0}),
    ("local 0.6 / 10th, t = 4", {"local_scale": 0.6, "n_neighbors": 10, "diffusion_time": 4.0}),
]
ATOM_COUNTS: list[tuple[str, dict]] = [
    ("1000 (the hierarchy's, before)", {"n_atoms": 1000}),
    ("1500", {"n_atoms": 1500}),
    ("2000 (default)", {"n_atoms": 2000}),
    ("2500", {"n_atoms": 2500}),
    ("2500, width from 13th", {"n_atoms": 2500, "n_neighbors": 13}),
]
#: the retina images' pixel count, for which ATOM_COUNTS are written
_REFERENCE_PIXELS = 128 * 128


def _atoms_for(n_pixels: int, kwargs: dict) -> int:
    """Atoms for an image of ``n_pixels``: the setting's count, scaled like the default count."""
    from cuts.clustering import default_spectral_atoms

    default = default_spectral_atoms(n_pixels)
    if "n_atoms" not in kwargs:
        return default
    return max(2, int(round(kwargs["n_atoms"] * default / default_spectral_atoms(_REFERENCE_PIXELS))))


def _segment(emb: np.ndarray, k: int, kwargs: dict, *, seed: int, atoms) -> np.ndarray:
    """Spectral k-means with these settings on these atoms."""
    from cuts.clustering import diffusion_map_kmeans, spectral_kmeans
    from cuts.condensation import pairwise_sq_dists

    if kwargs.get("global"):
        x = atoms.coords.astype(np.float64)
        d2 = pairwise_sq_dists(x)
        eps = max(float(np.median(np.partition(d2, 10, axis=1)[:, 10])) * 4.0, 1e-12)
        labels = diffusion_map_kmeans(np.exp(-d2 / eps), atoms.counts.astype(np.float64), k, seed=seed)
        return labels[atoms.atom_map].astype(np.int32)
    options = {key: v for key, v in kwargs.items() if key in ("local_scale", "n_neighbors", "diffusion_time")}
    return spectral_kmeans(emb, k, seed=seed, atoms=atoms, **options)


def _synthetic_embeddings(noise_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The nested four-region image of tests/test_hierarchy.py: (48, 48, 16) embeddings, labels 0-3."""
    rng = np.random.default_rng(noise_seed)
    h = w = 48
    gt = np.zeros((h, w), dtype=int)
    gt[:, w // 2 :] = 1
    yy, xx = np.mgrid[:h, :w]
    gt[(yy - h // 2) ** 2 + (xx - w // 4) ** 2 < (h // 6) ** 2] = 2
    gt[(yy - h // 2) ** 2 + (xx - 3 * w // 4) ** 2 < (h // 6) ** 2] = 3
    base = rng.normal(size=(2, 16))
    centres = np.stack([base[0], base[1], base[0] + 0.6 * rng.normal(size=16), base[1] + 0.6 * rng.normal(size=16)])
    return (centres[gt] + 0.15 * rng.normal(size=(h, w, 16))).astype(np.float32), gt


def _synthetic_worst(kwargs: dict, n_atoms: int | None = None) -> float:
    """Smallest per-region Dice on the synthetic image over 3 noise seeds (atoms as the setting says)."""
    from cuts.condensation import build_atoms
    from cuts.masks import binarize_by_hint
    from cuts.metrics import dice

    worst = 1.0
    for noise_seed in range(3):
        emb, gt = _synthetic_embeddings(noise_seed)
        n = n_atoms if n_atoms is not None else _atoms_for(gt.size, kwargs)
        lab = _segment(emb, 4, kwargs, seed=0, atoms=build_atoms(emb, seed=0, n_atoms=n))
        worst = min(worst, *(dice(binarize_by_hint(lab, gt == r), gt == r) for r in range(4)))
    return float(worst)


#: atom counts of the synthetic image for the robustness column (its default is 288)
_SYNTHETIC_COUNTS = tuple(range(100, 340, 20))


def _synthetic_counts_ok(kwargs: dict) -> int:
    """At how many of the atom counts :data:`_SYNTHETIC_COUNTS` every synthetic region is found (Dice >= 0.9)."""
    return sum(_synthetic_worst(kwargs, n_atoms=n) >= 0.9 for n in _SYNTHETIC_COUNTS)


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
    parser.add_argument("--json", help="also write the tables here")
    args = parser.parse_args()
    train_seeds = [int(s) for s in args.train_seeds.split(",")]
    cluster_seeds = [int(s) for s in args.cluster_seeds.split(",")]
    pairs = load_pairs(args.images, args.masks)
    images = [im for _, im, _ in pairs]
    tables = {"bandwidth": BANDWIDTHS, "atoms": ATOM_COUNTS}
    settings = [(f"{table}: {label}", kwargs) for table, rows in tables.items() for label, kwargs in rows]

    scores: dict[str, dict[str, list[float]]] = {key: {} for key, _ in settings}
    for ts in train_seeds:
        t0 = time.perf_counter()
        model = cuts.train(images, seed=ts, device="cpu")
        embs = [cuts.embed(model, im) for im in images]
        print(f"encoder, training seed {ts}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
        for cs in cluster_seeds:
            # one quantisation per atom count and seed, shared by the settings that use it
            atoms: dict[tuple[int, int], object] = {}
            for key, kwargs in settings:
                d = []
                for i, (e, (_, _, m)) in enumerate(zip(embs, pairs)):
                    n_atoms = _atoms_for(e.shape[0] * e.shape[1], kwargs)
                    if (i, n_atoms) not in atoms:
                        atoms[i, n_atoms] = build_atoms(e, seed=cs, n_atoms=n_atoms)
                    d.append(dice(binarize_by_hint(_segment(e, 10, kwargs, seed=cs, atoms=atoms[i, n_atoms]), m), m))
                scores[key].setdefault(str(ts), []).append(float(np.mean(d)))

    head = "  ".join(f"train {ts}" for ts in train_seeds)
    out = {}
    for table, rows in tables.items():
        what = "bandwidth, on the default atoms" if table == "bandwidth" else "atoms (128x128 images), default width"
        print(f"\n{len(pairs)} images; mean Dice of spectral k-means (k = 10) per training seed (mean over "
              f"clustering seeds {args.cluster_seeds}), overall mean, and the worst region Dice on synthetic "
              f"embeddings. Varied: {what}")
        print(f"{table:<32}{head}   mean  synthetic  counts ok (of {len(_SYNTHETIC_COUNTS)})")
        out[table] = {}
        for label, kwargs in rows:
            key = f"{table}: {label}"
            per_train = [float(np.mean(scores[key][str(ts)])) for ts in train_seeds]
            overall = float(np.mean([x for ts in train_seeds for x in scores[key][str(ts)]]))
            synth = _synthetic_worst(kwargs)
            counts_ok = _synthetic_counts_ok({key: v for key, v in kwargs.items() if key != "n_atoms"})
            out[table][label] = {"per_training_seed": per_train, "mean": overall, "synthetic_worst": synth,
                                 "synthetic_counts_ok": counts_ok, "all": scores[key]}
            cells = "  ".join(f"{x:7.3f}" for x in per_train)
            print(f"{label:<32}{cells}  {overall:5.3f}  {synth:9.3f}  {counts_ok:>6}", flush=True)
    if args.json:
        from cuts.atomic import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
