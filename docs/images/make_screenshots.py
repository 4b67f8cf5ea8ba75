"""Regenerate the user-guide screenshots (run under a display or Xvfb).

    xvfb-run -s "-screen 0 1400x900x24" python docs/images/make_screenshots.py

Uses the bundled default encoder when it is installed, otherwise trains one
briefly on the sample (``--steps``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args()
    out = Path(args.out)

    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from napari_cuts._sample_data import load_fundus_ga_mask
    from napari_cuts.launch import setup_viewer

    viewer = napari.Viewer(title="CUTS")
    viewer.window._qt_window.resize(1400, 860)
    app = QApplication.instance()

    def settle(n: int = 30) -> None:
        for _ in range(n):
            app.processEvents()
            time.sleep(0.01)

    def close_toasts() -> None:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for w in app.topLevelWidgets() + viewer.window._qt_window.findChildren(NapariQtNotification):
            if isinstance(w, NapariQtNotification):
                w.close()

    def shot(name: str) -> None:
        settle()
        close_toasts()
        settle(5)
        img = viewer.screenshot(canvas_only=False, flash=False)
        Image.fromarray(img).save(out / name)
        print("wrote", out / name)

    def wait(busy) -> None:
        while busy():
            app.processEvents()
            time.sleep(0.01)

    widget = setup_viewer(viewer, (), segment=False)
    viewer.layers["fundus GA expert mask"].visible = False
    viewer.layers.selection.active = viewer.layers["fundus GA"]
    settle()
    viewer.reset_view()
    shot("01_widget_open.png")

    if widget.model is None:  # no bundled encoder installed: train briefly
        widget.steps_spin.setValue(args.steps)
        widget.start_training()
        wait(lambda: widget.training)
    widget.start_segmentation()
    wait(lambda: widget.segmenting)
    viewer.reset_view()
    shot("02_segmented.png")

    seg = widget.segmentation
    hier = seg.hierarchies[0]
    widget.set_level(0)
    shot("03_level_fine.png")
    widget.set_level(hier.n_levels - 2)
    shot("04_level_coarse.png")

    # click the lesion: the level whose segment under the lesion centre best matches the expert mask
    truth = load_fundus_ga_mask().astype(bool)
    rows, cols = np.nonzero(truth)
    r, c = int(np.median(rows)), int(np.median(cols))
    if not truth[r, c]:
        r, c = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])

    def dice(a, b):
        return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)

    best = max(range(hier.n_levels), key=lambda lv: dice(hier.mask_at(lv, (r, c)), truth))
    widget.set_level(best)
    widget.click(r, c)
    viewer.layers["CUTS segments"].opacity = 0.25
    shot("05_mask_clicked.png")

    with tempfile.TemporaryDirectory() as tmp:
        path = widget.export_mask(os.path.join(tmp, "fundus_GA_mask.png"))
        settle()
        exported = np.asarray(Image.open(path))
    viewer.layers["CUTS segments"].visible = False
    viewer.add_labels((exported > 0).astype(np.uint8), name="exported fundus_GA_mask.png", opacity=0.7)
    viewer.layers["CUTS mask"].visible = False
    shot("06_exported.png")
    print(f"lesion click at {(r, c)}, level {best}, Dice vs expert {dice(widget.editor.mask > 0, truth):.3f}")
    viewer.close()


if __name__ == "__main__":
    main()
