"""Responsiveness of the CUTS napari widget.

1. Event-loop gaps: train and segment in the widget while a 10 ms QTimer
   records the time between its ticks. A gap is how long the GUI could not
   react; the goal is that no gap exceeds 100 ms. Also shown: the main-thread
   time of each layer step of a Segment (napari builds each new Labels layer on
   the main thread) and the longest full garbage collection of each phase (it
   holds the GIL over the whole heap, so it is a gap of its own). Last, a large
   photo (scikit-image's 1411x1411 retina) is segmented at the widget's automatic
   working size and shown at full size (``--skip-large`` leaves it out).
2. Slider: time of one granularity-level change at 512x512 (goal <= 16 ms),
   measured in the widget's handler (``set_level``: label-map lookup, in-place
   copy into the layer, layer refresh) and, separately, including the redraw
   that follows (``processEvents``), which depends on the OpenGL renderer
   (software llvmpipe under Xvfb is far slower than any GPU).

Run under a display, e.g.::

    xvfb-run -s "-screen 0 1400x900x24" python benchmarks/bench_responsiveness.py
    python benchmarks/bench_responsiveness.py --steps 50 --size 128
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _gap_stats(ticks: list[float]) -> dict[str, float]:
    if len(ticks) < 2:
        return {"n": len(ticks), "max": float("nan"), "p99": float("nan"), "over100": 0}
    gaps = np.diff(np.asarray(ticks)) * 1000
    return {
        "n": len(gaps),
        "max": float(gaps.max()),
        "p99": float(np.percentile(gaps, 99)),
        "over100": int((gaps > 100).sum()),
    }


class _FullCollections:
    """Start and length of every full (generation-2) garbage collection, in any thread.

    A full collection walks the whole heap (napari + torch: millions of objects)
    while holding the GIL, so it pauses the GUI too; the table shows the longest
    one in each phase to tell those pauses from the widget's own.
    """

    def __init__(self) -> None:
        import gc
        import threading

        self.done: list[tuple[float, float]] = []
        self._started: dict[int, float] = {}
        self._ident = threading.get_ident
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started[self._ident()] = time.perf_counter()
        elif (t0 := self._started.pop(self._ident(), None)) is not None:
            self.done.append((t0, time.perf_counter() - t0))

    def longest_ms(self, since: float) -> float:
        return max((d * 1000 for t0, d in self.done if t0 >= since), default=0.0)


def _synthetic_hierarchy(size: int, n_atoms: int = 1000, n_levels: int = 24, seed: int = 0):
    """A real :class:`cuts.Hierarchy` with a blocky atom map (condensing 512x512 on a CPU takes long)."""
    import cuts
    from skimage.segmentation import slic

    rng = np.random.default_rng(seed)
    img = rng.random((size // 8, size // 8))
    # atoms: superpixels of a smooth random field, upsampled to size x size
    from scipy.ndimage import gaussian_filter, zoom

    field = gaussian_filter(img, 2)
    atoms_small = slic(field, n_segments=n_atoms, compactness=0.1, channel_axis=None, start_label=0)
    atom_map = zoom(atoms_small, 8, order=0).astype(np.int32)
    n = int(atom_map.max()) + 1
    counts = np.geomspace(80, 2, n_levels).round().astype(int)
    order = rng.permutation(n)
    luts = np.stack([(order * c // n) + 1 for c in counts]).astype(np.int32)
    # make labels contiguous per level
    for lv in range(n_levels):
        present = np.unique(luts[lv][np.unique(atom_map)])
        remap = np.zeros(luts[lv].max() + 1, np.int32)
        remap[present] = np.arange(1, present.size + 1)
        luts[lv] = remap[luts[lv]]
    persistence = np.ones((n_levels, int(luts.max()) + 1), np.int64)
    return cuts.Hierarchy(atom_map, luts, persistence)


def bench_event_loop(steps: int, size: int, device: str, large: bool = True) -> tuple[list[tuple[str, dict, float, float, float]], dict[str, list[float]]]:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_cuts._sample_data import load_fundus_ga
    from napari_cuts._widget import CutsWidget, wait_for_warm_up

    collections = _FullCollections()
    viewer = napari.Viewer(show=True)
    img = load_fundus_ga()
    if size != img.shape[0]:
        from napari_cuts._resample import downsample

        img = downsample(img, (size, size))
    viewer.add_image(img, name="fundus", rgb=True)
    widget = CutsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CUTS")
    app = QApplication.instance()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    rows = []

    def run(name: str, start, busy) -> None:
        ticks.clear()
        timer.start()
        t0 = time.perf_counter()
        ticks.append(t0)
        start()  # the click itself (main thread)
        click_ms = (time.perf_counter() - t0) * 1000
        ticks.clear()  # background phase: from the first event-loop turn after the click
        ticks.append(time.perf_counter())
        while busy():
            app.processEvents()
            time.sleep(0.002)
        timer.stop()
        rows.append((name, _gap_stats(ticks), time.perf_counter() - t0, click_ms, collections.longest_ms(t0)))

    # engine warm-up: the widget imports torch in a background thread when it opens
    ticks.clear()
    timer.start()
    ticks.append(time.perf_counter())
    t0 = time.perf_counter()
    while not _warm_done(wait_for_warm_up):
        app.processEvents()
        time.sleep(0.002)
    timer.stop()
    rows.append(("engine warm-up (torch import, once)", _gap_stats(ticks), time.perf_counter() - t0, 0.0, collections.longest_ms(t0)))

    widget.steps_spin.setValue(steps)
    widget.device_combo.setCurrentText(device)
    run(f"train ({steps} steps, {size}x{size})", widget.start_training, lambda: widget.training)
    layer_steps = {}
    run(f"segment ({size}x{size}, first run)", widget.start_segmentation, lambda: widget.segmenting)
    layer_steps["first"] = list(widget.layer_step_ms)
    run(f"segment ({size}x{size}, again)", widget.start_segmentation, lambda: widget.segmenting)
    layer_steps["again"] = list(widget.layer_step_ms)
    if large:
        # a large photo (scikit-image's retina, 1411x1411): segmented at the widget's automatic
        # working size (512) and shown at full size; its label maps are 8 times the pixels
        from napari_cuts._sample_data import retina_large

        data, meta, _ = retina_large()[0]
        big = viewer.add_image(data, **meta)
        widget.set_image_layer(big)
        for _ in range(30):  # its first draw: a user sees the photo before clicking Segment
            app.processEvents()
            time.sleep(0.01)
        h, w = data.shape[:2]
        run(f"segment ({h}x{w} photo at {widget.max_side})", widget.start_segmentation, lambda: widget.segmenting)
        times = []
        for lv in range(widget.level_slider.maximum() + 1):  # every level once (the worker prepared them at full size)
            t0 = time.perf_counter()
            widget.set_level(lv)
            times.append((time.perf_counter() - t0) * 1000)
        layer_steps["large photo"] = list(widget.layer_step_ms)
        layer_steps["large photo, level change (handler)"] = times
    viewer.close()
    return rows, layer_steps


def _warm_done(wait) -> bool:
    wait(0)
    import napari_cuts._widget as w

    return w._WARM_UP_THREAD is None or not w._WARM_UP_THREAD.is_alive()


def bench_slider(size: int, repeats: int = 3) -> dict[str, float]:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cuts._resample import NearestUpsampler
    from napari_cuts._session import Segmentation
    from napari_cuts._widget import CutsWidget

    viewer = napari.Viewer(show=True)
    rng = np.random.default_rng(0)
    layer = viewer.add_image(rng.random((size, size)).astype(np.float32), name="image")
    widget = CutsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CUTS")
    app = QApplication.instance()
    hier = _synthetic_hierarchy(size)
    # what start_segmentation + the worker's first result do, without condensing 512x512 on a CPU
    widget._source_layer = layer
    widget.segmentation = Segmentation((size, size), 1, NearestUpsampler.create((size, size), (size, size)))
    widget._shown_levels = {}
    widget._ensure_layers(layer, (size, size))
    widget.segmentation.add(0, hier)
    widget.segmentation.precompute(0)
    widget.level_slider.setRange(0, hier.n_levels - 1)
    for _ in range(10):
        app.processEvents()

    handler, total = [], []
    for _ in range(repeats):
        for lv in list(range(hier.n_levels)) + list(range(hier.n_levels - 1, -1, -1)):
            t0 = time.perf_counter()
            widget.level_slider.setValue(lv)  # as a user dragging the slider
            t1 = time.perf_counter()
            app.processEvents()
            t2 = time.perf_counter()
            if widget.last_level_change_ms is not None:
                handler.append((t1 - t0) * 1000)
                total.append((t2 - t0) * 1000)
    # uncached path: first visit of each level (cache cleared)
    widget.segmentation._cache.clear()
    widget._shown_levels = {}
    cold = []
    for lv in range(hier.n_levels):
        t0 = time.perf_counter()
        widget.set_level(lv)
        cold.append((time.perf_counter() - t0) * 1000)
    viewer.close()
    h, t, c = np.asarray(handler), np.asarray(total), np.asarray(cold)
    return {
        "levels": hier.n_levels,
        "handler_median": float(np.median(h)),
        "handler_p99": float(np.percentile(h, 99)),
        "handler_max": float(h.max()),
        "cold_max": float(c.max()),
        "with_redraw_median": float(np.median(t)),
        "with_redraw_max": float(t.max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    p.add_argument("--size", type=int, default=128, help="side of the image trained and segmented (default 128)")
    p.add_argument("--slider-size", type=int, default=512, help="side of the slider benchmark image (default 512)")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-loop", action="store_true", help="only run the slider benchmark")
    p.add_argument("--skip-slider", action="store_true", help="only run the event-loop benchmark")
    p.add_argument("--skip-large", action="store_true", help="skip segmenting the large photo (1411x1411)")
    args = p.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPU cores, 1-minute load average {load:.1f} at start "
          "(a load above the core count means other work competes for the CPU and inflates every gap)")

    if not args.skip_loop:
        rows, layer_steps = bench_event_loop(args.steps, args.size, args.device, large=not args.skip_large)
        print("\nEvent-loop gaps while working in the background (10 ms timer; goal: max gap <= 100 ms)")
        print(f"{'phase':<38} {'seconds':>8} {'click ms':>9} {'ticks':>6} {'max gap ms':>11} {'p99 ms':>8} {'>100 ms':>8} {'full gc ms':>11}")
        for name, st, secs, click, gc_ms in rows:
            gc_text = f"{gc_ms:.0f}" if gc_ms else "-"
            print(f"{name:<38} {secs:8.1f} {click:9.0f} {st['n']:6d} {st['max']:11.1f} {st['p99']:8.1f} {st['over100']:8d} {gc_text:>11}")
        print("click ms: time the button's handler blocks the GUI; the gap columns cover everything after it:")
        print("the layer steps (the first Segment adds 3 Labels layers, which napari builds on the main thread;")
        print("each is put in over 10 steps: model, vispy visual, insert, Qt controls built, put in, polygon")
        print("overlay built, put back, brush overlay built, put back, first draw; then one step hooks the")
        print("mouse; one step per event-loop turn) and the background work.")
        levels = layer_steps.pop("large photo, level change (handler)", None)
        for which, ms in layer_steps.items():
            print(f"  layer steps, {which + ' run':<9}  " + ", ".join(f"{t:.0f}" for t in ms) + " ms")
        if levels:
            print(f"  large photo, each of its {len(levels)} levels once (slider handler, full size): "
                  f"median {np.median(levels):.1f} ms, max {max(levels):.1f} ms")
        print("full gc ms: the longest full garbage collection in the phase (it holds the GIL: a gap of its own).")

    if args.skip_slider:
        return
    s = bench_slider(args.slider_size)
    print(f"\nGranularity slider at {args.slider_size}x{args.slider_size} ({s['levels']} levels; goal <= 16 ms)")
    print(f"  level change (handler)       median {s['handler_median']:.2f} ms, p99 {s['handler_p99']:.2f} ms, max {s['handler_max']:.2f} ms")
    print(f"  first visit of a level       max {s['cold_max']:.2f} ms (label-map lookup not cached yet)")
    print(f"  handler + redraw             median {s['with_redraw_median']:.2f} ms, max {s['with_redraw_max']:.2f} ms (renderer-dependent)")


if __name__ == "__main__":
    main()
