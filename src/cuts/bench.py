"""Benchmarks behind ``cuts bench``: speed and memory, printed as a table.

* ``train``: seconds per update of the default recipe (only the pixels the loss
  uses) against a faithful reproduction of the official step (whole 128x128
  images through 'same'-padded convolutions, one SSIM call per candidate
  positive), same batch, same number of updates.
* ``embed``: seconds and peak memory to embed 128², 512², 1024² and 2048² images
  into a ``.npy`` file with :func:`cuts.embed_to_file` (what ``cuts embed`` does);
  ``embed_in_memory``: the same with :func:`cuts.embed` returning a float32 array;
  ``embed_float16``: :func:`cuts.embed` with a float16 result at the largest size.
* ``hierarchy``: seconds, peak memory and level count of :func:`cuts.condense`
  on the embeddings of 128², 256², 512² and 1024² images.

Each embed/hierarchy size runs in a fresh Python process so peaks do not mix.
``peak_mb`` is the growth of the process's resident memory during the measured
call (its high-water mark, reset just before the call, minus the memory in use
just before), so it leaves out the interpreter and torch themselves, but
includes an in-memory result (a 2048x2048x128 float32 embedding alone is 2048 MB).
A streamed file lives in the page cache, not in the process; it is written to a
temporary folder and deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

EMBED_SIZES = (128, 512, 1024, 2048)
HIERARCHY_SIZES = (128, 256, 512, 1024)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> None:
    """Reset the process's resident-memory high-water mark (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not allowed: the peak then covers the whole process
        pass


def _peak_mb() -> float:
    """The resident-memory high-water mark (VmHWM) since the last :func:`_reset_peak`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_image(size: int) -> np.ndarray:
    """A real RGB fundus photograph resized to ``size`` x ``size``.

    The 1411x1411 photo scikit-image ships (``skimage.data.retina``, CC0).
    """
    from skimage import data
    from skimage.transform import resize

    img = resize(data.retina(), (size, size), order=1, preserve_range=True, anti_aliasing=size < 1411)
    return img.astype(np.uint8)


def _bench_model() -> Any:
    from cuts.checkpoint import CheckpointError, load_default_model
    from cuts.model import CutsModel

    try:
        return load_default_model(3)
    except CheckpointError:
        return CutsModel.create(3, seed=0)


# --------------------------------------------------------------------------- training
class _ReferenceEncoder:
    """The official layout: every conv 'same'-padded with replicate mode."""

    def __new__(cls, in_channels: int):
        from torch import nn

        layers = []
        prev = in_channels
        for out in (16, 32, 64, 128):
            layers += [nn.Conv2d(prev, out, 5, padding=2, padding_mode="replicate"), nn.BatchNorm2d(out), nn.LeakyReLU(0.01)]
            prev = out
        return nn.Sequential(*layers)


def reference_step_seconds(images: list[np.ndarray], n_steps: int, *, batch_size: int = 16, seed: int = 0) -> float:
    """Mean seconds per update of a faithful reproduction of the official training step."""
    import torch
    from skimage.metrics import structural_similarity

    from cuts.images import scale_intensity
    from cuts.losses import nt_xent_loss, reconstruction_loss
    from cuts.model import ReconstructionHead

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc = _ReferenceEncoder(3)
    head = ReconstructionHead(3)
    opt = torch.optim.AdamW(list(enc.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=1e-4)
    scaled = [scale_intensity(im) for im in images]
    times = []
    for step in range(n_steps + 1):
        t0 = time.perf_counter()
        batch = [scaled[i] for i in rng.integers(0, len(scaled), batch_size)]
        x = torch.from_numpy(np.stack(batch))
        z = enc(x)  # (B, 128, H, W): the whole image
        b, _, h, w = z.shape
        anchors, positives, patches = [], [], []
        for i, img in enumerate(batch):
            padded = np.pad(img, ((0, 0), (2, 2), (2, 2)), mode="edge")
            for _ in range(8):
                r, c = int(rng.integers(0, h)), int(rng.integers(0, w))
                a_patch = padded[:, r : r + 5, c : c + 5]
                pr, pc = r, c
                for _try in range(20):  # one SSIM call per candidate, as the official code
                    rr = int(np.clip(r + rng.integers(-5, 5), 0, h - 1))
                    cc = int(np.clip(c + rng.integers(-5, 5), 0, w - 1))
                    p_patch = padded[:, rr : rr + 5, cc : cc + 5]
                    s = structural_similarity(
                        np.moveaxis(a_patch, 0, -1), np.moveaxis(p_patch, 0, -1),
                        win_size=5, channel_axis=-1, data_range=2.0,
                    )
                    if s > 0.5:
                        pr, pc = rr, cc
                        break
                anchors.append(z[i, :, r, c])
                positives.append(z[i, :, pr, pc])
                patches.append(torch.from_numpy(np.ascontiguousarray(a_patch)))
        za = torch.stack(anchors).view(b, 8, -1)
        zp = torch.stack(positives).view(b, 8, -1)
        recon = reconstruction_loss(head(za.reshape(b * 8, -1)), torch.stack(patches))
        loss = 0.01 * nt_xent_loss(za, zp, temperature=0.1) + 0.99 * recon
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    return float(np.mean(times))


def default_step_seconds(images: list[np.ndarray], n_steps: int, *, seed: int = 0, **settings: Any) -> float:
    """Mean seconds per update of the default recipe (:func:`cuts.iter_train`)."""
    from cuts.training import iter_train

    stamps = []
    for p in iter_train(images, steps=n_steps + 1, seed=seed, device="cpu", **settings):
        stamps.append(p.elapsed)
    return float(np.mean(np.diff(stamps)))


# --------------------------------------------------------------------------- subprocess workers
def _worker(kind: str, size: int) -> dict[str, Any]:
    """One measurement: ``embed`` (to a .npy file), ``embed_memory``, ``embed_f16`` or ``hierarchy``."""
    import tempfile

    import torch

    from cuts.embedding import embed, embed_to_file

    model = _bench_model()
    image = bench_image(size)
    if kind == "embed":
        embed(model, bench_image(64))  # warm-up outside the measurement
        with tempfile.TemporaryDirectory(prefix="cuts-bench-") as folder:
            path = os.path.join(folder, "embedding.npy")
            before = _rss_mb()
            _reset_peak()
            t0 = time.perf_counter()
            embed_to_file(model, image, path)
            seconds = time.perf_counter() - t0
            peak = _peak_mb() - before
            size_mb = os.path.getsize(path) / 2**20
        return {"seconds": round(seconds, 3), "peak_mb": round(peak, 1), "result_mb": round(size_mb, 1)}
    if kind in ("embed_memory", "embed_f16"):
        embed(model, bench_image(64))  # warm-up outside the measurement
        dtype = np.float16 if kind == "embed_f16" else np.float32
        before = _rss_mb()
        _reset_peak()
        t0 = time.perf_counter()
        emb = embed(model, image, dtype=dtype)
        seconds = time.perf_counter() - t0
        return {"seconds": round(seconds, 3), "peak_mb": round(_peak_mb() - before, 1), "result_mb": round(emb.nbytes / 2**20, 1)}
    from cuts.hierarchy import condense

    emb = embed(model, image)
    del model
    torch.set_num_threads(torch.get_num_threads())
    before = _rss_mb()
    _reset_peak()
    t0 = time.perf_counter()
    h = condense(emb, seed=0)
    seconds = time.perf_counter() - t0
    peak = _peak_mb() - before
    return {"seconds": round(seconds, 3), "peak_mb": round(max(peak, 0.0), 1), "levels": int(h.n_levels),
            "segments": [int(h.n_segments[-1]), int(h.n_segments[0])]}


def _in_fresh_process(kind: str, size: int) -> dict[str, Any]:
    code = f"import json,sys; from cuts.bench import _worker; print('RESULT'+json.dumps(_worker({kind!r}, {size})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[6:])
    return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}


#: The sections of ``cuts bench`` and the JSON keys each one writes.
SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "embed": ("embed", "embed_in_memory", "embed_float16"),
    "hierarchy": ("hierarchy",),
}


def run_bench(
    *,
    json_path: str | None = None,
    quick: bool = False,
    sections: tuple[str, ...] | list[str] | None = None,
    out=print,
) -> dict[str, Any]:
    """Run the benchmarks, print tables, optionally write JSON; returns the results.

    ``sections`` picks some of ``train``, ``embed`` and ``hierarchy`` (all by default).
    When only some run and ``json_path`` exists already, the keys of the sections that
    did not run are kept from that file, so one section can be measured again alone.
    """
    import platform

    import torch

    chosen = tuple(SECTIONS) if sections is None else tuple(sections)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        raise ValueError(f"unknown bench section(s) {unknown}; choose from {list(SECTIONS)}.")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    out(f"CUTS benchmarks  (cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()})")
    out("")
    if "train" in chosen:
        _train_section(results, quick, out)
    if "embed" in chosen:
        _embed_section(results, quick, out)
    if "hierarchy" in chosen:
        _hierarchy_section(results, quick, out)
    if json_path:
        from cuts.atomic import atomic_path

        data = results
        if len(chosen) < len(SECTIONS) and os.path.isfile(json_path):
            with open(json_path) as f:
                data = json.load(f)
            data["machine"] = results["machine"]
            for name in chosen:
                for key in SECTIONS[name]:
                    data[key] = results[key]
            order = ["machine", *(key for keys in SECTIONS.values() for key in keys)]
            data = {**{k: data[k] for k in order if k in data}, **{k: v for k, v in data.items() if k not in order}}
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(data, indent=2))
        kept = [name for name in SECTIONS if name not in chosen]
        out(f"wrote {json_path}" + (f" (kept its {', '.join(kept)} results)" if data is not results else ""))
    return results


def _row(out, kind: str, size: int, last: str, fmt: str, label: str = "") -> dict[str, Any]:
    """Measure one case in a fresh process and print its table row."""
    res = _in_fresh_process(kind, size)
    cells = (f"{res['seconds']:>10.2f}{res['peak_mb']:>10.0f}{res[last]:{fmt}}"
             if "error" not in res else f"  error: {res['error']}")
    out(f"  {f'{size}x{size}':>10}{label}{cells}")
    return res


def _train_section(results: dict[str, Any], quick: bool, out) -> None:
    images = [bench_image(128)[::-1] if i % 2 else bench_image(128) for i in range(4)]
    # the default step takes tens of milliseconds: time many of them; the reference takes ~30 s
    n_steps = 3 if quick else 100
    d = default_step_seconds(images, n_steps)
    r = reference_step_seconds(images, 2 if quick else 3)
    results["train"] = {"default_seconds_per_step": round(d, 4), "reference_seconds_per_step": round(r, 4),
                        "speedup": round(r / d, 1)}
    d16 = default_step_seconds(images, n_steps, batch_size=16)
    results["train"]["default_batch16_seconds_per_step"] = round(d16, 4)
    out("training on 128x128 fundus images, 8 anchors per image, seconds per update")
    out(f"  {'recipe':<58}{'s/step':>10}")
    out(f"  {'default: 17x17 windows of the used pixels, batch 8':<58}{d:>10.4f}")
    out(f"  {'default windows at the reference batch of 16':<58}{d16:>10.4f}")
    out(f"  {'reference: whole images, per-candidate SSIM, batch 16':<58}{r:>10.4f}")
    out(f"  speed-up per update: {r / d:.0f}x (same batch: {r / d16:.0f}x)")
    out("")


def _embed_section(results: dict[str, Any], quick: bool, out) -> None:
    def row(kind: str, size: int, label: str) -> dict[str, Any]:
        return _row(out, kind, size, "result_mb", ">11.0f", f"  {label:<17}")

    emb_sizes = EMBED_SIZES[:2] if quick else EMBED_SIZES
    out("embedding one RGB image (tiles of 512)")
    out("  file:   cuts.embed_to_file, float32 .npy written tile by tile (what `cuts embed` does)")
    out("  memory: cuts.embed, the whole result in memory")
    out(f"  {'size':>10}  {'result':<17}{'seconds':>10}{'peak MB':>10}{'result MB':>11}")
    results["embed"], results["embed_in_memory"], results["embed_float16"] = {}, {}, {}
    for size in emb_sizes:
        results["embed"][str(size)] = row("embed", size, "file, float32")
        results["embed_in_memory"][str(size)] = row("embed_memory", size, "memory, float32")
    size = emb_sizes[-1]
    results["embed_float16"][str(size)] = row("embed_f16", size, "memory, float16")
    out("")


def _hierarchy_section(results: dict[str, Any], quick: bool, out) -> None:
    h_sizes = HIERARCHY_SIZES[:2] if quick else HIERARCHY_SIZES
    out("hierarchy by diffusion condensation (cuts.condense on the embeddings)")
    out(f"  {'size':>10}{'seconds':>10}{'peak MB':>10}{'levels':>8}")
    results["hierarchy"] = {str(size): _row(out, "hierarchy", size, "levels", ">8d") for size in h_sizes}
    out("")
