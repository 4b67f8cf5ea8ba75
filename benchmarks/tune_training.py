"""Measure training settings by the Dice of CUTS + k-means on a folder with masks.

Prints one row per setting: training seconds and mean Dice / Hausdorff of k-means (k=10)
on the embeddings, binarised with the paper's ground-truth hint. This is how the defaults
in cuts.TrainConfig were chosen (docs/training.md).

    python benchmarks/tune_training.py --images ../shared/data/retina_dev/images \
        --masks ../shared/data/retina_dev/masks
"""

from __future__ import annotations

import argparse
import json

from cuts.evaluation import evaluate_folder

GRID = [
    {},  # the defaults: 1200 steps, batch 8, lam 0.01, tau 0.5
    {"steps": 500, "batch_size": 16, "temperature": 0.1},  # the official code's tau and batch, 500 steps
    {"steps": 500, "batch_size": 16},  # same, paper's tau 0.5
]


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


if __name__ == "__main__":
    main()
