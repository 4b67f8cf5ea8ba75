"""Measure training settings by the Dice of CUTS + k-means on a folder with masks.

Prints one row per setting: training seconds and mean Dice / Hausdorff of k-means (k=10)
on the embeddings, binarised with the paper's ground-truth hint. This is how the defaults
in cuts.TrainConfig were chosen (docs/training.md). A last row gives a reference without
any learning: the same k-means on the image's own colours, blurred (Gaussian, sigma 2 px).

    python benchmarks/tune_training.py --images ../shared/data/retina_dev/images \
        --masks ../shared/data/retina_dev/masks
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cuts.evaluation import evaluate_folder, load_pairs

GRID = [
    {},  # the defaults: 1200 steps, batch 8, lam 0.01, tau 0.5
    {"steps": 500, "batch_size": 16, "temperature": 0.1},  # the official code's tau and batch, 500 steps
    {"steps": 500, "batch_size": 16},  # same, paper's tau 0.5
]


def blurred_colour_kmeans(images: str, masks: str, *, seed: int, sigma: float = 2.0) -> dict[str, float]:
    """Mean Dice and Hausdorff of k-means (k=10) on the blurred, scaled pixel values."""
    from scipy import ndimage as ndi

    from cuts.clustering import kmeans
    from cuts.images import scale_intensity
    from cuts.masks import binarize_by_hint
    from cuts.metrics import evaluate_mask

    scores = []
    for _, image, mask in load_pairs(images, masks):
        scaled = np.moveaxis(scale_intensity(image), 0, -1)  # (H, W, C) in [-1, 1]
        features = ndi.gaussian_filter(scaled, (sigma, sigma, 0))
        pred = binarize_by_hint(kmeans(features, 10, seed=seed), mask)
        scores.append(evaluate_mask(pred, mask))
    return {key: float(np.mean([s[key] for s in scores])) for key in ("dice", "hausdorff")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--masks", required=True)
    parser.add_argument("--grid", help="JSON list of TrainConfig overrides (default: the built-in grid)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grid = json.loads(args.grid) if args.grid else GRID
    print(f"{'settings (overrides of TrainConfig)':<44}{'train s':>9}{'Dice':>8}{'Hausdorff':>11}")
    for overrides in grid:
        res = evaluate_folder(args.images, args.masks, methods=("kmeans",), clicks=False, seed=args.seed,
                              device="cpu", **overrides)
        km = res["methods"]["kmeans"]
        label = json.dumps(overrides) if overrides else "defaults"
        print(f"{label:<44}{res['train_seconds']:>9.1f}{km['dice']:>8.3f}{km['hausdorff']:>11.2f}", flush=True)
    ref = blurred_colour_kmeans(args.images, args.masks, seed=args.seed)
    label = "reference: blurred colours, no encoder"
    print(f"{label:<44}{'-':>9}{ref['dice']:>8.3f}{ref['hausdorff']:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
