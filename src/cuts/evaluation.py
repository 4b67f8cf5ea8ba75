"""Evaluating CUTS against expert masks, as the paper does.

:func:`evaluate_folder` trains one encoder on all images of a folder (no labels
are used for training), segments every image with each method, binarises each
segmentation with the paper's ground-truth hint (the label most frequent inside
the expert mask), and scores it with :func:`cuts.metrics.evaluate_mask`.

Methods (JSON keys)
-------------------
``kmeans``        CUTS embeddings + k-means (k=10).
``spectral_kmeans`` CUTS embeddings + spectral k-means (the paper's single-level variant).
``persistent``    CUTS + diffusion condensation, persistent structures.
``best_level``    CUTS + diffusion condensation, the best level per image chosen with the
                  expert mask: an *oracle*, not something a user gets.
``otsu``, ``felzenszwalb``, ``slic``  classic baselines, binarised the same way.
``clicks_1``, ``clicks_3``, ``clicks_5``  Dice after 1/3/5 simulated clicks on the hierarchy.
``noc85``         mean clicks to reach Dice 0.85 (capped at 20).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cuts.cancel import CancelToken, check_cancelled
from cuts.images import as_image_list
from cuts.io import IMAGE_SUFFIXES, list_images, read_image, stem

#: Segmentation methods evaluated by default, in table order.
DEFAULT_METHODS = ("kmeans", "spectral_kmeans", "persistent", "best_level", "otsu", "felzenszwalb", "slic")
#: Rows describing the click workflow.
CLICK_KEYS = ("clicks_1", "clicks_3", "clicks_5", "noc85")
METHOD_TITLES = {
    "kmeans": "CUTS + k-means",
    "spectral_kmeans": "CUTS + spectral k-means",
    "persistent": "CUTS + diffusion (persistent)",
    "best_level": "CUTS + diffusion (best level, oracle)",
    "otsu": "Otsu threshold",
    "felzenszwalb": "Felzenszwalb",
    "slic": "SLIC",
}


def find_mask(image_path: str | os.PathLike, masks_dir: str | os.PathLike) -> Path | None:
    """The mask of ``NAME.ext``: a file in ``masks_dir`` with stem ``NAME_seg`` or ``NAME``.

    ``NAME_seg`` wins when both exist; the image itself never counts as its mask
    (the two folders may be the same).
    """
    image_path = Path(image_path)
    name = stem(image_path)
    masks_dir = Path(masks_dir)
    for wanted in (f"{name}_seg", name):
        for candidate in sorted(masks_dir.iterdir()):
            if candidate.is_file() and candidate.name.lower().endswith(IMAGE_SUFFIXES) and stem(candidate) == wanted:
                if candidate.resolve() != image_path.resolve():
                    return candidate
    return None


def load_pairs(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Read every image of ``images_dir`` that has a mask, as ``(name, image, mask)``.

    Raises ``ValueError`` if an image has no mask, is not 2-D, or its mask's shape differs.
    """
    pairs = []
    files = list_images(images_dir)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}.")
    for path in files:
        mask_path = find_mask(path, masks_dir)
        if mask_path is None:
            raise ValueError(
                f"no mask for {path.name} in {masks_dir}: expected a file named "
                f"{stem(path)}.<ext> or {stem(path)}_seg.<ext>."
            )
        image = read_image(path).data
        mask = read_image(mask_path).data
        slices = as_image_list(image)
        if len(slices) != 1:
            raise ValueError(f"{path.name} holds {len(slices)} slices; evaluation takes 2-D images.")
        if mask.ndim == 3 and mask.shape[-1] in (3, 4):
            mask = mask[..., 0]
        if mask.shape != slices[0].shape[:2]:
            raise ValueError(f"the mask of {path.name} is {mask.shape}, the image {slices[0].shape[:2]}.")
        pairs.append((path.name, slices[0], mask != 0))
    return pairs


def _segmentations(
    image: np.ndarray, emb: np.ndarray, methods: Sequence[str], seed: int, cancel: CancelToken = None
) -> dict[str, Any]:
    from cuts import baselines
    from cuts.clustering import kmeans, spectral_kmeans

    out: dict[str, Any] = {}
    if "kmeans" in methods:
        out["kmeans"] = kmeans(emb, 10, seed=seed, cancel=cancel)
    if "spectral_kmeans" in methods:  # on atoms of its own, finer than the hierarchy's
        out["spectral_kmeans"] = spectral_kmeans(emb, 10, seed=seed, cancel=cancel)
    if {"persistent", "best_level"} & set(methods) or "clicks" in methods:
        from cuts.hierarchy import condense

        h = condense(emb, seed=seed, cancel=cancel)
        out["_hierarchy"] = h
        out["persistent"] = h.persistent()
    for name in ("otsu", "felzenszwalb", "slic"):
        if name in methods:
            check_cancelled(cancel, "evaluation")
            out[name] = baselines.BASELINES[name](image)
    return out

#: Above this many pixels per image, :func:`default_workers` scores one image at a time.
PARALLEL_MAX_PIXELS = 1024 * 1024


def default_workers(images: Sequence[np.ndarray]) -> int:
    """Images scored at once by default: one per CPU core, at most 4.

    One at a time when an image has more than :data:`PARALLEL_MAX_PIXELS` pixels:
    each image's embeddings (128 floats per pixel) and segmentations are held while
    it is scored, so large images in parallel would multiply the peak memory.
    """
    if any(im.shape[0] * im.shape[1] > PARALLEL_MAX_PIXELS for im in images):
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _score_image(
    model: Any,
    name: str,
    image: np.ndarray,
    truth: np.ndarray,
    *,
    methods: Sequence[str],
    seed: int,
    clicks: bool,
    cancel: CancelToken = None,
) -> dict[str, Any]:
    """Embed one image, segment it with every method and score each against ``truth``."""
    from cuts.clicks import simulate_clicks
    from cuts.embedding import embed
    from cuts.masks import binarize_by_hint
    from cuts.metrics import dice, evaluate_mask

    emb = embed(model, image)
    segs = _segmentations(image, emb, list(methods) + (["clicks"] if clicks else []), seed, cancel)
    del emb
    row: dict[str, Any] = {"name": name}
    for key in methods:
        if key == "best_level":
            h = segs["_hierarchy"]
            scores = [dice(binarize_by_hint(h.label_map(lv), truth), truth) for lv in range(h.n_levels)]
            best = int(np.argmax(scores))
            row[key] = evaluate_mask(binarize_by_hint(h.label_map(best), truth), truth)
            row[key]["level"] = best
        else:
            row[key] = evaluate_mask(binarize_by_hint(segs[key], truth), truth)
    if clicks:
        h = segs["_hierarchy"]
        res = simulate_clicks([h.label_map(lv) for lv in range(h.n_levels)], truth, max_clicks=20, target_dice=0.85)
        row["clicks"] = {
            "clicks_1": res.dice_after[0], "clicks_3": res.dice_after[2],
            "clicks_5": res.dice_after[4], "noc85": res.clicks_to_target,
        }
    return row


def _score_in_threads(
    score: Callable[..., dict[str, Any]],
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
    n_workers: int,
    progress: Callable[[str, int, int], Any] | None,
    cancel: CancelToken = None,
) -> list[dict[str, Any]]:
    """``[score(*pair) for pair in pairs]`` in ``n_workers`` threads, in input order.

    numpy, scipy and torch release the GIL in their kernels, so the threads share the
    cores; with more than one worker torch is set to one thread each meanwhile (restored
    after). The first error, or ``cancel``, stops what has not started; the images being
    scored stop at their next cancel check (``cancel`` is passed to them), and the error
    is raised.
    """
    import torch

    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    previous = torch.get_num_threads()
    if n_workers > 1:
        torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="cuts-evaluate")
    try:
        futures = [pool.submit(score, *pair) for pair in pairs]
        pending = set(futures)
        done_count = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                fut.result()  # raises the worker's error
            done_count += len(done)
            if progress is not None:
                progress("segment", done_count, len(pairs))
            check_cancelled(cancel, "evaluation")
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(previous)


def evaluate_folder(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    clicks: bool = True,
    model: Any = None,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[str, int, int], Any] | None = None,
    cancel: CancelToken = None,
    workers: int | None = None,
    **train_settings: Any,
) -> dict[str, Any]:
    """Train on the images, segment them, and score every method.

    Parameters
    ----------
    images_dir, masks_dir : path-like
        Images, and their masks (``NAME`` or ``NAME_seg``, non-zero = foreground).
    methods : sequence of str
        Which methods to score (see module docs).
    clicks : bool
        Also simulate the click workflow on the hierarchy.
    model : CutsModel, optional
        Use this encoder instead of training one.
    seed : int
        Seed of training and clustering.
    device : str
        Training/embedding device.
    progress : callable, optional
        ``progress(stage, done, total)`` with stage ``"train"`` or ``"segment"``.
    cancel : threading.Event or callable, optional
        Stop training or scoring; :class:`cuts.Cancelled` is raised.
    workers : int, optional
        Images segmented and scored at once, in threads (each image's result does
        not depend on it). Default: :func:`default_workers`. While more than one
        runs, torch uses one thread per worker; its thread count is restored after.
    **train_settings
        Overrides of :class:`cuts.TrainConfig` (e.g. ``steps=300``).

    Returns
    -------
    dict
        ``{"n_images", "train_seconds", "segment_seconds", "workers", "device", "methods": {key: {metric: mean}},
        "images": [{"name", key: {metric: value}}...]}``.
    """
    from cuts.metrics import METRIC_NAMES
    from cuts.training import train

    unknown = set(methods) - set(DEFAULT_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {', '.join(DEFAULT_METHODS)}.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValueError(f"workers must be a positive integer (or None for the default); got {workers!r}.")
    pairs = load_pairs(images_dir, masks_dir)
    images = [img for _, img, _ in pairs]
    n_workers = min(default_workers(images) if workers is None else int(workers), len(pairs))

    t0 = time.perf_counter()
    if model is None:
        def report(p: Any) -> None:
            if progress is not None:
                progress("train", p.step, p.total_steps)

        model = train(images, seed=seed, device=device, callback=report, cancel=cancel, **train_settings)
    train_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    def score(name: str, image: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
        check_cancelled(cancel, "evaluation")
        return _score_image(
            model, name, image, truth, methods=methods, seed=seed, clicks=clicks, cancel=cancel
        )

    # embedding switches a training-mode encoder to eval and back per call; with several
    # threads embedding at once, hold it in eval mode for the whole scoring instead
    was_training = model.encoder.training
    model.encoder.eval()
    try:
        rows = _score_in_threads(score, pairs, n_workers, progress, cancel)
    finally:
        if was_training:
            model.encoder.train()
    segment_seconds = time.perf_counter() - t1

    summary: dict[str, dict[str, float]] = {}
    for key in methods:
        summary[key] = {m: float(np.nanmean([r[key][m] for r in rows])) for m in METRIC_NAMES}
    if clicks:
        for key in CLICK_KEYS:
            summary[key] = {"dice" if key != "noc85" else "clicks": float(np.mean([r["clicks"][key] for r in rows]))}
    return {
        "n_images": len(pairs),
        "train_seconds": round(train_seconds, 2),
        "segment_seconds": round(segment_seconds, 2),
        "workers": n_workers,
        "device": str(model.device),
        "training": model.metadata.get("training"),
        "methods": summary,
        "images": rows,
    }


def format_table(result: dict[str, Any], *, per_image: bool = True) -> str:
    """A plain-text table of :func:`evaluate_folder`'s result."""
    from cuts.metrics import METRIC_NAMES

    lines = []
    methods = [k for k in result["methods"] if k not in CLICK_KEYS]
    if per_image:
        header = f"{'image':<24}" + "".join(f"{k[:12]:>13}" for k in methods)
        lines += ["Dice per image", header, "-" * len(header)]
        for row in result["images"]:
            lines.append(f"{row['name'][:24]:<24}" + "".join(f"{row[k]['dice']:>13.3f}" for k in methods))
        lines.append("")
    header = f"{'method (mean of ' + str(result['n_images']) + ' images)':<40}" + "".join(f"{m:>10}" for m in METRIC_NAMES)
    lines += [header, "-" * len(header)]
    for key in methods:
        vals = result["methods"][key]
        lines.append(f"{METHOD_TITLES.get(key, key):<40}" + "".join(f"{vals[m]:>10.3f}" for m in METRIC_NAMES))
    if any(k in result["methods"] for k in CLICK_KEYS):
        lines.append("")
        lines.append("Click workflow on the hierarchy (simulated user, best segment per click):")
        for key in CLICK_KEYS:
            if key in result["methods"]:
                ((metric, value),) = result["methods"][key].items()
                label = "mean clicks to Dice 0.85 (cap 20)" if key == "noc85" else f"mean Dice after {key[7:]} click(s)"
                lines.append(f"  {key:<10} {label:<36} {value:.3f}")
    lines.append("")
    lines.append(
        f"training: {result['train_seconds']:.1f} s on {result['device']}; "
        f"segmentation and scoring: {result['segment_seconds']:.1f} s"
    )
    return "\n".join(lines)
