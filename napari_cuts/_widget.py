"""The CUTS dock widget (thin Qt layer over :mod:`napari_cuts._session` and friends).

Workflow: pick an image -> choose an encoder (bundled default, trained here, or
loaded) -> Segment -> move the granularity slider -> click segments into the
mask -> export. Training and segmentation run in napari ``thread_worker``
generators; the worker functions (in ``_session``) never touch Qt.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_cuts._io import export_mask, format_from_path, physical_pixel_area, physical_voxel_volume
from napari_cuts._mask_editor import MaskEditor, mode_from_modifiers
from napari_cuts._resample import describe_working_resolution
from napari_cuts._staged_layers import StagedLabels
from napari_cuts._session import (
    ProgressBox,
    Segmentation,
    SegmentSettings,
    SliceResult,
    ModelReady,
    image_channels,
    make_upsampler,
    segment_job,
    slice_order,
    train_job,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

SEGMENTS_NAME = "CUTS segments"
PERSISTENT_NAME = "CUTS persistent"
MASK_NAME = "CUTS mask"
OWN_LAYERS = (SEGMENTS_NAME, PERSISTENT_NAME, MASK_NAME)

#: Keyboard shortcuts (none of them is bound by napari's defaults).
KEY_FINER = ","
KEY_COARSER = "."
KEY_UNDO = "Control-Z"
KEY_REDO = "Control-Shift-Z"

WORKING_RESOLUTIONS: list[tuple[str, int | None]] = [
    ("full", None),
    ("max 1024 px", 1024),
    ("max 512 px", 512),
    ("max 256 px", 256),
]
#: Images with a longer side above this start at "max 512 px".
AUTO_FULL_LIMIT = 512

DEVICES = ("auto", "cpu", "cuda", "mps")

#: Drag distance (screen pixels) below which a press-release is a click, not a pan.
CLICK_TOLERANCE = 4


_WARMED_UP = False
_WARM_UP_THREAD: threading.Thread | None = None


def wait_for_warm_up(timeout: float | None = None) -> None:
    """Block until the background engine import has finished (benchmarks, tests)."""
    if _WARM_UP_THREAD is not None:
        _WARM_UP_THREAD.join(timeout)


def _warm_up_engine() -> None:
    """Import torch and the engine in a background thread once, while the user looks at the widget.

    Loading torch's libraries (and the modules torch, scipy and scikit-image load
    lazily on first use) holds the GIL for a few hundred milliseconds; doing it now
    keeps those pauses out of the first Train/Segment click. The Qt-free part of
    napari's first Labels layer is warmed here too, and a full garbage collection
    ends it (so that Python's next one is not due during the first Segment).
    """
    global _WARMED_UP, _WARM_UP_THREAD
    if _WARMED_UP:
        return
    _WARMED_UP = True

    def _imports() -> None:
        try:
            # first what napari's first Labels layer would otherwise do on the main thread (short,
            # so that it is ready even for a quick first Segment): import pandas (for the features
            # table), fill the label-colour cache and vispy's dash-pattern cache (numpy loops behind
            # the antialiased lines of each Labels layer's polygon and brush overlays); all Qt-free
            import pandas  # noqa: F401
            from napari.utils.colormaps.colormap_utils import label_colormap
            from vispy.visuals.line.dash_atlas import DashAtlas

            label_colormap(49, 0.5, background_value=0)
            DashAtlas()
        except Exception:  # pragma: no cover - another napari/vispy: only the first layer is slower
            pass
        try:
            import numpy as np

            import cuts

            # a tiny run of each stage loads what torch, scipy and scikit-image import lazily
            # (optimisers, sparse graphs, labelling), which would otherwise pause the GUI later
            tiny = np.random.default_rng(0).random((24, 24)).astype(np.float32)
            model = cuts.train([tiny], steps=2, batch_size=1, device="cpu")
            cuts.condense(cuts.embed(model, tiny))
        except Exception:  # pragma: no cover - reported later, when the user asks for work
            pass
        # the imports leave ~0.5 million new long-lived objects; Python's next full garbage collection
        # (it holds the GIL over the whole heap: 0.3-0.4 s here) would come during the user's first
        # Segment, while napari builds the new layers. Collect now, while the user reads the panel
        # and the imports pause the GUI anyway: the next one is then far off.
        import gc

        gc.collect()

    _WARM_UP_THREAD = threading.Thread(target=_imports, name="cuts-warm-up", daemon=True)
    _WARM_UP_THREAD.start()


class _PanelScrollArea(QScrollArea):
    """The panel's vertical scroll area: never narrower than its content plus a scroll bar.

    On a short screen the vertical scroll bar appears; as there is no horizontal
    scrolling, the panel must then keep room for the bar rather than cut off its
    right edge. Computed when asked, so it follows napari's style sheet.
    """

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        inner = self.widget()
        if inner is None:
            return hint
        width = inner.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()
        return QSize(max(hint.width(), width), hint.height())


class CutsWidget(QWidget):
    """Dock widget: train/load an encoder, segment, pick granularity, click to mask, export."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model: Any = None  # cuts.CutsModel or None (= bundled default, loaded on demand)
        self.model_source = "default"
        self.segmentation: Segmentation | None = None
        self.editor: MaskEditor | None = None
        self.level = 0
        self._source_layer: Image | None = None
        self._shown_levels: dict[int, int] = {}
        self._train_worker = None
        self._segment_worker = None
        self._segment_cancel = threading.Event()
        self._progress_box = ProgressBox()
        self._hooked_layers: list[Any] = []
        self.last_train_progress: Any = None
        self.last_level_change_ms: float | None = None
        self.layer_step_ms: list[float] = []  # main-thread time of each layer step of the last Segment

        self._build_ui()
        self._poll = QTimer(self)
        self._poll.setInterval(100)
        self._poll.timeout.connect(self._poll_progress)
        self._layer_steps: deque[Callable[[], None]] = deque()
        self._staged: list[StagedLabels] = []  # the new layers of the current layer steps
        self._layer_timer = QTimer(self)
        self._layer_timer.setSingleShot(True)
        self._layer_timer.setInterval(0)
        self._layer_timer.timeout.connect(self._next_layer_step)

        layers = self.viewer.layers
        layers.events.inserted.connect(self._refresh_image_choices)
        layers.events.removed.connect(self._on_layer_removed)
        layers.events.moved.connect(self._refresh_image_choices)
        self.viewer.dims.events.current_step.connect(self._on_dims_step)
        self._bind_keys()
        _warm_up_engine()
        self._refresh_image_choices()
        self._update_encoder_label()
        self._update_level_ui()
        self._update_mask_ui()

    # ================================================================== UI
    def _build_ui(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(0, 0, 0, 0)
        scroll = _PanelScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        outer = QVBoxLayout(inner)
        scroll.setWidget(inner)
        root.addWidget(scroll)

        # ---- image
        box = QGroupBox("1. Image")
        form = QFormLayout(box)
        self.image_combo = QComboBox()
        self.image_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.image_combo.setMinimumContentsLength(12)
        self.image_combo.setToolTip("Image layer to segment (2-D grey or RGB, or a stack of slices).")
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        form.addRow("Layer", self.image_combo)
        self.image_info = QLabel("")
        self.image_info.setWordWrap(True)
        form.addRow(self.image_info)
        self.resolution_combo = QComboBox()
        for text, _ in WORKING_RESOLUTIONS:
            self.resolution_combo.addItem(text)
        self.resolution_combo.setToolTip(
            "Large images are downsampled for training, embedding and condensation;\n"
            "segments are mapped back to full resolution (nearest neighbour)."
        )
        self.resolution_combo.currentIndexChanged.connect(self._update_memory_label)
        form.addRow("Working res.", self.resolution_combo)
        self.memory_label = QLabel("")
        self.memory_label.setWordWrap(True)
        form.addRow(self.memory_label)
        outer.addWidget(box)

        # ---- encoder
        box = QGroupBox("2. Encoder")
        v = QVBoxLayout(box)
        self.encoder_label = QLabel("")
        self.encoder_label.setWordWrap(True)
        v.addWidget(self.encoder_label)
        row = QHBoxLayout()
        self.default_button = QPushButton("Use default")
        self.default_button.setToolTip("Use the encoder bundled with CUTS (no training needed).")
        self.default_button.clicked.connect(self.use_default_encoder)
        self.load_button = QPushButton("Load…")
        self.load_button.clicked.connect(lambda: self.load_encoder())
        self.save_button = QPushButton("Save…")
        self.save_button.clicked.connect(lambda: self.save_encoder())
        for b in (self.default_button, self.load_button, self.save_button):
            row.addWidget(b)
        v.addLayout(row)

        form = QFormLayout()
        budget_row = QGridLayout()
        self.budget_steps = QRadioButton("steps")
        self.budget_time = QRadioButton("seconds")
        self.budget_steps.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.budget_steps)
        group.addButton(self.budget_time)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(300)
        self.seconds_spin = QDoubleSpinBox()
        self.seconds_spin.setRange(1, 86_400)
        self.seconds_spin.setValue(60)
        self.seconds_spin.setSuffix(" s")
        budget_row.addWidget(self.budget_steps, 0, 0)
        budget_row.addWidget(self.steps_spin, 0, 1)
        budget_row.addWidget(self.budget_time, 1, 0)
        budget_row.addWidget(self.seconds_spin, 1, 1)
        budget_row.setColumnStretch(1, 1)
        form.addRow("Budget", budget_row)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setMinimumWidth(self.seed_spin.fontMetrics().horizontalAdvance("0000000") + 40)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto: CUDA if available, then Apple MPS, then CPU.")
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_spin, 1)
        seed_row.addWidget(QLabel("Device"))
        seed_row.addWidget(self.device_combo, 1)
        form.addRow("Seed", seed_row)
        v.addLayout(form)
        self.train_button = QPushButton("Train on image")
        self.train_button.setToolTip("Train a new encoder on the selected layer (all slices of a stack).")
        self.train_button.clicked.connect(self._on_train_clicked)
        v.addWidget(self.train_button)
        self.train_progress = QProgressBar()
        self.train_progress.setRange(0, 100)
        self.train_progress.setValue(0)
        v.addWidget(self.train_progress)
        self.train_status = QLabel("")
        self.train_status.setWordWrap(True)
        v.addWidget(self.train_status)
        outer.addWidget(box)

        # ---- hierarchy
        box = QGroupBox("3. Segments")
        v = QVBoxLayout(box)
        self.segment_button = QPushButton("Segment")
        self.segment_button.setToolTip("Embed the image and build the hierarchy of segmentations.")
        self.segment_button.clicked.connect(self._on_segment_clicked)
        v.addWidget(self.segment_button)
        self.segment_progress = QProgressBar()
        self.segment_progress.setRange(0, 100)
        self.segment_progress.setValue(0)
        v.addWidget(self.segment_progress)
        self.segment_status = QLabel("")
        self.segment_status.setWordWrap(True)
        v.addWidget(self.segment_status)
        row = QHBoxLayout()
        row.addWidget(QLabel("fine"))
        self.level_slider = QSlider(Qt.Orientation.Horizontal)
        self.level_slider.setRange(0, 0)
        self.level_slider.setPageStep(1)
        self.level_slider.setToolTip(f"Granularity: '{KEY_FINER}' finer, '{KEY_COARSER}' coarser")
        self.level_slider.valueChanged.connect(self.set_level)
        row.addWidget(self.level_slider, 1)
        row.addWidget(QLabel("coarse"))
        v.addLayout(row)
        self.level_label = QLabel("")
        v.addWidget(self.level_label)
        outer.addWidget(box)

        # ---- mask
        box = QGroupBox("4. Mask")
        v = QVBoxLayout(box)
        hint = QLabel(
            "Click a segment: mask = segment. Shift+click: add. Alt+click: remove.\n"
            f"Keys: '{KEY_FINER}' finer, '{KEY_COARSER}' coarser, Ctrl+Z undo, Ctrl+Shift+Z redo."
        )
        hint.setWordWrap(True)
        v.addWidget(hint)
        row = QHBoxLayout()
        row.addWidget(QLabel("Plain click"))
        self.click_mode_combo = QComboBox()
        self.click_mode_combo.addItems(["replace", "add", "remove"])
        self.click_mode_combo.setToolTip(
            "What a click without Shift/Alt does (useful where the desktop takes Alt+click)."
        )
        row.addWidget(self.click_mode_combo, 1)
        v.addLayout(row)
        row = QHBoxLayout()
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button = QPushButton("Redo")
        self.redo_button.clicked.connect(self.redo)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear_mask)
        for b in (self.undo_button, self.redo_button, self.clear_button):
            row.addWidget(b)
        v.addLayout(row)
        self.area_label = QLabel("")
        self.area_label.setWordWrap(True)
        v.addWidget(self.area_label)
        self.export_button = QPushButton("Export mask…")
        self.export_button.setToolTip("PNG (2-D), TIFF (2-D or stack) or NIfTI (.nii/.nii.gz, keeps the affine).")
        self.export_button.clicked.connect(lambda: self.export_mask())
        v.addWidget(self.export_button)
        outer.addWidget(box)
        outer.addStretch(1)

    # ================================================================== image choice
    def _image_layers(self) -> list[Image]:
        return [ly for ly in self.viewer.layers if isinstance(ly, Image) and ly.name not in OWN_LAYERS]

    def _refresh_image_choices(self, event: Any = None) -> None:
        current = self.image_layer
        names = [ly.name for ly in self._image_layers()]
        shown = [self.image_combo.itemText(i) for i in range(self.image_combo.count())]
        if names == shown and (current is not None or not names):
            # e.g. a Labels layer came in (our own, at the first Segment): nothing to refresh, and the
            # user's choices for the current image (working resolution) stay as they are
            return
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current is not None and current.name in names:
            self.image_combo.setCurrentIndex(names.index(current.name))
        self.image_combo.blockSignals(False)
        for ly in self._image_layers():
            try:
                ly.events.name.disconnect(self._refresh_image_choices)
            except (TypeError, ValueError, RuntimeError):
                pass
            ly.events.name.connect(self._refresh_image_choices)
        self._on_image_changed()

    def _on_layer_removed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and layer is self._source_layer:
            self._cancel_segmentation(silent=True)
            self._source_layer = None
        self._refresh_image_choices()

    @property
    def image_layer(self) -> Image | None:
        """The layer chosen in the Image box (``None`` if there is none)."""
        name = self.image_combo.currentText() if hasattr(self, "image_combo") else ""
        if not name or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def set_image_layer(self, layer: Any) -> bool:
        """Choose ``layer`` (or a layer name) as the image; notifies and returns False if unusable."""
        if isinstance(layer, str):
            if layer not in self.viewer.layers:
                show_error(f"CUTS: there is no layer called {layer!r}.")
                return False
            layer = self.viewer.layers[layer]
        if not isinstance(layer, Image):
            kind = type(layer).__name__
            show_error(
                f"CUTS: '{getattr(layer, 'name', layer)}' is a {kind} layer; "
                "CUTS segments Image layers (grey, RGB or a stack of slices)."
            )
            return False
        names = [ly.name for ly in self._image_layers()]
        if layer.name not in names:
            self._refresh_image_choices()
            names = [ly.name for ly in self._image_layers()]
        self.image_combo.setCurrentIndex(names.index(layer.name))
        return True

    def _on_image_changed(self, *args: Any) -> None:
        layer = self.image_layer
        if layer is None:
            self.image_info.setText("Add an image layer (File > Open, or File > Open Sample > CUTS).")
            self.memory_label.setText("")
            return
        shape, n_slices, channels = self._describe_layer(layer)
        kind = {1: "grey", 3: "RGB"}.get(channels, f"{channels}-channel")
        text = f"{shape[0]}x{shape[1]} px, {kind}"
        if n_slices > 1:
            text += f", stack of {n_slices} slices"
        area = physical_pixel_area(layer.metadata, layer.scale, getattr(layer, "units", None))
        if area is not None:
            text += f", pixel {layer.scale[-2]:.3g}x{layer.scale[-1]:.3g} mm"
        self.image_info.setText(text)
        self.resolution_combo.blockSignals(True)
        self.resolution_combo.setCurrentIndex(0 if max(shape) <= AUTO_FULL_LIMIT else 2)
        self.resolution_combo.blockSignals(False)
        self._update_memory_label()

    @staticmethod
    def _describe_layer(layer: Image) -> tuple[tuple[int, int], int, int]:
        shape = tuple(layer.data.shape)
        if layer.rgb:
            hw, channels = shape[-3:-1], shape[-1]
            n_slices = int(np.prod(shape[:-3])) if len(shape) > 3 else 1
        else:
            hw, channels = shape[-2:], 1
            n_slices = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        channels = 3 if channels in (3, 4) else 1 if channels in (1, 2) else channels
        return (int(hw[0]), int(hw[1])), n_slices, int(channels)

    @property
    def max_side(self) -> int | None:
        return WORKING_RESOLUTIONS[self.resolution_combo.currentIndex()][1]

    def _update_memory_label(self, *args: Any) -> None:
        layer = self.image_layer
        if layer is None:
            self.memory_label.setText("")
            return
        shape, n_slices, _ = self._describe_layer(layer)
        self.memory_label.setText("Working size: " + describe_working_resolution(shape, self.max_side, n_slices))

    def _slices(self, layer: Any) -> list[np.ndarray] | None:
        """Validated 2-D slices of ``layer`` (notifies and returns None if unusable)."""
        import cuts

        if layer is None:
            show_warning("CUTS: add an image layer first (File > Open Sample > CUTS has examples).")
            return None
        if not isinstance(layer, Image):
            show_error(f"CUTS: '{layer.name}' is a {type(layer).__name__} layer, not an image.")
            return None
        if getattr(layer, "multiscale", False):
            show_error("CUTS: multiscale (pyramid) images are not supported; open the full-resolution level.")
            return None
        try:
            slices = cuts.as_image_list(np.asarray(layer.data), rgb=bool(layer.rgb))
        except Exception as exc:  # cuts.ImageError and friends: tell the user, no traceback
            show_error(f"CUTS cannot use '{layer.name}': {exc}")
            return None
        if not slices:
            show_error(f"CUTS: '{layer.name}' has no slices.")
            return None
        return slices

    # ================================================================== encoder
    def _update_encoder_label(self) -> None:
        if self.model is None:
            text = "Encoder: bundled default (grey or RGB, picked for the image)"
        else:
            kind = {1: "grey", 3: "RGB"}.get(self.model.in_channels, f"{self.model.in_channels}-channel")
            text = f"Encoder: {self.model_source} ({kind}, on {self.model.device})"
        self.encoder_label.setText(text)
        self.save_button.setEnabled(self.model is not None)

    def use_default_encoder(self) -> bool:
        """Use the bundled default encoder (for the chosen image's channel count)."""
        import cuts

        self.model = None
        self.model_source = "default"
        layer = self.image_layer
        channels = self._describe_layer(layer)[2] if layer is not None else 3
        if channels in (1, 3):
            try:
                self.model = cuts.load_default_model(in_channels=channels)
                self.model_source = "bundled default"
            except Exception as exc:
                show_error(f"CUTS could not load the bundled encoder: {exc}")
                self._update_encoder_label()
                return False
        self._update_encoder_label()
        return True

    def load_encoder(self, path: str | None = None) -> bool:
        """Load an encoder checkpoint (asks for a file when ``path`` is None)."""
        import cuts

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load CUTS encoder", "", "CUTS encoder (*.safetensors *.pt *.pth);;All files (*)")
            if not path:
                return False
        try:
            model = cuts.load_model(path)
        except Exception as exc:
            show_error(f"CUTS could not load the encoder: {exc}")
            return False
        layer = self.image_layer
        if layer is not None:
            _, _, channels = self._describe_layer(layer)
            if channels != model.in_channels:
                show_warning(
                    f"CUTS: the loaded encoder takes {model.in_channels}-channel images but "
                    f"'{layer.name}' has {channels}; it will only work on matching images."
                )
        self.model = model
        self.model_source = f"loaded from {os.path.basename(path)}"
        self._update_encoder_label()
        return True

    def save_encoder(self, path: str | None = None) -> str | None:
        """Save the current (trained or loaded) encoder."""
        import cuts

        if self.model is None:
            show_warning("CUTS: the bundled default encoder is already saved with the package; train one first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save CUTS encoder", "cuts_encoder.safetensors", "CUTS encoder (*.safetensors)")
            if not path:
                return None
        try:
            out = cuts.save_model(self.model, path)
        except Exception as exc:
            show_error(f"CUTS could not save the encoder: {exc}")
            return None
        show_info(f"CUTS: encoder saved to {out}")
        return str(out)

    # ---------------------------------------------------------------- training
    @property
    def training(self) -> bool:
        return self._train_worker is not None

    def _on_train_clicked(self) -> None:
        if self.training:
            self.cancel_training()
        else:
            self.start_training()

    def start_training(self) -> Any:
        """Start training on the chosen layer; returns the worker (or None if refused)."""
        if self.training:
            return self._train_worker
        slices = self._slices(self.image_layer)
        if slices is None:
            return None
        use_time = self.budget_time.isChecked()
        device = self.device_combo.currentText()  # checked in the worker (importing torch here would block the GUI)
        worker = create_worker(
            train_job,
            slices,
            steps=None if use_time else self.steps_spin.value(),
            max_seconds=self.seconds_spin.value() if use_time else None,
            seed=self.seed_spin.value(),
            device=device,
            max_side=self.max_side,
            rgb=bool(self.image_layer.rgb),
            _start_thread=False,
        )
        self._train_budget = ("time", self.seconds_spin.value()) if use_time else ("steps", self.steps_spin.value())
        worker.yielded.connect(self._on_train_progress)
        worker.returned.connect(self._on_train_done)
        worker.errored.connect(self._on_train_error)
        worker.aborted.connect(self._on_train_aborted)
        worker.finished.connect(self._on_train_finished)
        self._train_worker = worker
        self.train_button.setText("Cancel training")
        self.train_progress.setValue(0)
        self.train_status.setText("Training: starting…")
        self._set_busy(training=True)
        worker.start()
        return worker

    def cancel_training(self) -> None:
        """Stop training; the previous encoder is kept."""
        if self._train_worker is not None:
            self.train_status.setText("Training: cancelling…")
            self._train_worker.quit()

    def _on_train_progress(self, p: Any) -> None:
        self.last_train_progress = p
        kind, budget = self._train_budget
        frac = min(1.0, p.elapsed / budget) if kind == "time" else p.step / max(p.total_steps, 1)
        self.train_progress.setValue(int(round(100 * frac)))
        total = f"/{p.total_steps}" if kind == "steps" else ""
        self.train_status.setText(
            f"Training on {p.device}: step {p.step}{total}, loss {p.loss:.4f}, {p.elapsed:.1f} s"
        )

    def _on_train_done(self, model: Any) -> None:
        self.model = model
        run = (model.metadata or {}).get("training", {})
        steps = run.get("steps_done", "?")
        self.model_source = f"trained here ({steps} steps)"
        self.train_progress.setValue(100)
        self.train_status.setText(
            f"Trained {steps} steps on {run.get('device', model.device)} in {run.get('seconds', 0):.1f} s, "
            f"final loss {run.get('final_loss', float('nan')):.4f}. Press Segment."
        )
        self._update_encoder_label()

    def _on_train_error(self, exc: Exception) -> None:
        show_error(f"CUTS training failed: {exc}")
        self.train_status.setText(f"Training failed: {exc}")

    def _on_train_aborted(self) -> None:
        self.train_status.setText("Training cancelled; the previous encoder is kept.")
        self.train_progress.setValue(0)

    def _on_train_finished(self) -> None:
        self._train_worker = None
        self.train_button.setText("Train on image")
        self._set_busy()
        self._update_encoder_label()

    # ================================================================== segmentation
    @property
    def segmenting(self) -> bool:
        return self._segment_worker is not None

    def _on_segment_clicked(self) -> None:
        if self.segmenting:
            self._cancel_segmentation()
        else:
            self.start_segmentation()

    def start_segmentation(self) -> Any:
        """Embed + condense the chosen image (current slice first); returns the worker or None."""
        if self.segmenting:
            return self._segment_worker
        layer = self.image_layer
        slices = self._slices(layer)
        if slices is None:
            return None
        channels = image_channels(slices[0])
        if self.model is not None and self.model_source == "bundled default" and self.model.in_channels != channels:
            self.model = None  # the other bundled encoder is loaded by the worker
        if self.model is not None and self.model.in_channels != channels:
            kind = {1: "grey", 3: "colour"}
            show_error(
                f"CUTS: the encoder ({self.model_source}) takes {kind.get(self.model.in_channels, self.model.in_channels)} "
                f"images but '{layer.name}' is {kind.get(channels, channels)}. Train on this image, load a "
                "matching encoder, or press 'Use default'."
            )
            return None
        if self.model is None and channels not in (1, 3):
            show_error(f"CUTS: no bundled encoder for {channels}-channel images; train one on this image.")
            return None
        full = tuple(slices[0].shape[:2])
        n = len(slices)
        stack = n > 1
        self._source_layer = layer
        self.segmentation = Segmentation(full, n, make_upsampler(full, self.max_side))
        self._shown_levels = {}
        # napari builds a new Labels layer (vispy visuals and overlays, layer controls) on the main
        # thread, 0.2-0.3 s in one go: the click returns at once, the layers are put in over several
        # short steps, one per event-loop turn (_next_layer_step); the worker starts after the last
        self._layer_steps = deque(self._layer_steps_for(layer, (n, *full) if stack else full))
        self.layer_step_ms = []
        order = slice_order(n, self._current_z())
        self._segment_cancel = threading.Event()
        self._progress_box = ProgressBox()
        settings = SegmentSettings(max_side=self.max_side, seed=self.seed_spin.value(), rgb=channels == 3)
        worker = create_worker(
            segment_job, slices, order, self.model, settings, self._progress_box, self._segment_cancel,
            _start_thread=False,
        )
        worker.yielded.connect(self._on_segment_yield)
        worker.errored.connect(self._on_segment_error)
        worker.aborted.connect(self._on_segment_aborted)
        worker.finished.connect(self._on_segment_finished)
        self._segment_worker = worker
        self._segment_started = time.perf_counter()
        self.segment_button.setText("Cancel")
        self.segment_progress.setValue(0)
        self.segment_status.setText("Segmenting…")
        self._set_busy(segmenting=True)
        self._poll.start()
        self._layer_timer.start()  # -> _next_layer_step, then worker.start()
        return worker

    def _next_layer_step(self) -> None:
        """Run one pending layer step (one event-loop turn each); after the last, start the worker."""
        worker = self._segment_worker
        t0 = time.perf_counter()
        try:
            if self._layer_steps:
                self._layer_steps.popleft()()
                self.layer_step_ms.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:  # napari refused a layer: report it, nothing was started
            self._layer_steps.clear()
            show_error(f"CUTS could not create its layers: {exc}")
            self.segment_status.setText(f"Failed: {exc}")
            self._on_segment_finished()
            return
        if self._layer_steps:
            self._layer_timer.start()
        elif worker is not None:
            worker.start()  # a cancelled worker starts, sees the request and finishes at once

    def _cancel_segmentation(self, silent: bool = False) -> None:
        if self._segment_worker is not None:
            self._segment_cancel.set()
            self._segment_worker.quit()
            if not silent:
                self.segment_status.setText("Cancelling…")

    def _poll_progress(self) -> None:
        box = self._progress_box
        self.segment_progress.setValue(int(round(100 * box.fraction)))
        if box.message:
            self.segment_status.setText(box.message)

    def _on_segment_yield(self, item: Any) -> None:
        if isinstance(item, ModelReady):
            self.model = item.model
            self.model_source = "bundled default"
            self._update_encoder_label()
            return
        if not isinstance(item, SliceResult) or self.segmentation is None:
            return
        seg = self.segmentation
        first = not seg.hierarchies
        seg.add(item.z, item.hierarchy, label_maps=item.label_maps, persistent=item.persistent)
        if first:
            self.level_slider.blockSignals(True)
            self.level_slider.setRange(0, max(seg.n_levels - 1, 0))
            self.level = seg.default_level(item.z)
            self.level_slider.setValue(self.level)
            self.level_slider.blockSignals(False)
        else:
            self.level_slider.blockSignals(True)
            self.level_slider.setRange(0, max(seg.n_levels - 1, 0))
            self.level_slider.blockSignals(False)
        self._write_persistent(item.z)
        if item.z == self._current_z() and item.label_maps is None:  # else the worker made them
            seg.precompute(item.z)
        self._show_level(item.z)
        self._update_level_ui()
        self._update_mask_ui()

    def _on_segment_error(self, exc: Exception) -> None:
        import cuts

        if isinstance(exc, cuts.Cancelled):
            self.segment_status.setText("Segmentation cancelled.")
            return
        show_error(f"CUTS segmentation failed: {exc}")
        self.segment_status.setText(f"Failed: {exc}")

    def _on_segment_aborted(self) -> None:
        self.segment_status.setText("Segmentation cancelled.")

    def _on_segment_finished(self) -> None:
        self._poll.stop()
        self._segment_worker = None
        self.segment_button.setText("Segment")
        self._set_busy()
        seg = self.segmentation
        if seg is not None and seg.hierarchies:
            self.segment_progress.setValue(100 if seg.complete else self.segment_progress.value())
            secs = time.perf_counter() - self._segment_started
            done = f"{len(seg.hierarchies)}/{seg.n_slices} slices" if seg.n_slices > 1 else "image"
            if seg.complete:
                self.segment_status.setText(f"Segmented {done} in {secs:.1f} s. Click segments to build the mask.")

    def _set_busy(self, training: bool = False, segmenting: bool = False) -> None:
        training = training or self.training
        segmenting = segmenting or self.segmenting
        self.segment_button.setEnabled(not training)
        self.train_button.setEnabled(not segmenting)
        for w in (self.default_button, self.load_button, self.image_combo, self.resolution_combo):
            w.setEnabled(not (training or segmenting))
        self.save_button.setEnabled(self.model is not None and not training)

    # ================================================================== layers
    def _ensure_layers(self, src: Image, shape: tuple[int, ...]) -> None:
        """Create or reset the segments/persistent/mask layers for ``src`` (all at once)."""
        for step in self._layer_steps_for(src, shape):
            step()

    def _layer_steps_for(self, src: Image, shape: tuple[int, ...]) -> list[Callable[[], None]]:
        """The persistent, segments and mask layers for ``src`` as steps, in that order.

        The mask editor is chosen now (kept when the mask layer already belongs to
        ``src`` and has this shape). An existing layer is reset in one step; a new
        one is built and inserted in several (:class:`StagedLabels`), so that each
        step is short and the steps can run in separate event-loop turns. The last
        step hooks the mouse/keys and selects the mask layer.
        """
        scale = tuple(src.scale)[-len(shape):]
        translate = tuple(src.translate)[-len(shape):]
        self._staged = []
        meta = {"cuts_source": src.name}
        if "nifti" in src.metadata:
            meta["nifti"] = src.metadata["nifti"]

        def put(name: str, data: np.ndarray, on_ready: Callable[[Labels], None], **kwargs: Any) -> list[Callable[[], None]]:
            """Steps that reset layer ``name`` to ``data``, or create it if it is not there."""
            if name not in self.viewer.layers:
                # napari builds a new layer's views in one go: split over several turns
                staged = StagedLabels(
                    self.viewer, data, on_inserted=on_ready, name=name, scale=scale, translate=translate,
                    metadata=dict(meta), **kwargs,
                )
                self._staged.append(staged)
                return staged.steps()

            def reset() -> None:
                if name not in self.viewer.layers:  # removed since the steps were planned: in one go
                    on_ready(self.viewer.add_labels(data, name=name, scale=scale, translate=translate,
                                                    metadata=dict(meta), **kwargs))
                    return
                layer = self.viewer.layers[name]
                same = layer.data.shape == data.shape and layer.data.dtype == data.dtype
                if same and tuple(layer.scale) == scale and tuple(layer.translate) == translate:
                    if layer.data is not data:  # reuse the buffer: far cheaper than a new layer.data
                        layer.data[...] = data
                        layer.refresh()
                else:  # each assignment makes napari update its dims and every layer's transforms: only what changed
                    layer.data = data
                    if tuple(layer.scale) != scale:
                        layer.scale = scale
                    if tuple(layer.translate) != translate:
                        layer.translate = translate
                layer.metadata = dict(meta)
                on_ready(layer)

            return [reset]

        keep_mask = (
            self.editor is not None
            and self.editor.mask.shape == tuple(shape)
            and MASK_NAME in self.viewer.layers
            and self.viewer.layers[MASK_NAME].metadata.get("cuts_source") == src.name
        )
        if not keep_mask:
            self.editor = MaskEditor(tuple(shape))
        editor = self.editor

        def set_persistent(layer: Labels) -> None:
            self._persistent_layer = layer

        def set_segments(layer: Labels) -> None:
            self._segments_layer = layer

        def set_mask(layer: Labels) -> None:
            self._mask_layer = layer
            if layer.data is not editor.mask:
                layer.data = editor.mask

        def finish() -> None:
            for layer in (self._persistent_layer, self._segments_layer, self._mask_layer, src):
                self._hook_layer(layer)
            self.viewer.layers.selection.active = self._mask_layer

        from napari.utils.colormaps import DirectLabelColormap

        cmap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "#ffd700"})
        return [
            *put(PERSISTENT_NAME, np.zeros(shape, np.uint8), set_persistent, opacity=0.5, visible=False),
            *put(SEGMENTS_NAME, np.zeros(shape, np.uint8), set_segments, opacity=0.45),
            *put(MASK_NAME, editor.mask, set_mask, opacity=0.6, colormap=cmap),
            finish,
        ]

    def _own(self, name: str) -> Labels | None:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _hook_layer(self, layer: Any) -> None:
        if any(ly is layer for ly in self._hooked_layers):
            return
        layer.mouse_drag_callbacks.append(self._mouse_callback)
        if isinstance(layer, Labels):
            layer.bind_key(KEY_UNDO, lambda _ly: self.undo(), overwrite=True)
            layer.bind_key(KEY_REDO, lambda _ly: self.redo(), overwrite=True)
        self._hooked_layers.append(layer)

    def _bind_keys(self) -> None:
        self.viewer.bind_key(KEY_FINER, lambda _v: self.step_level(-1), overwrite=True)
        self.viewer.bind_key(KEY_COARSER, lambda _v: self.step_level(+1), overwrite=True)
        self.viewer.bind_key(KEY_UNDO, lambda _v: self.undo(), overwrite=True)
        self.viewer.bind_key(KEY_REDO, lambda _v: self.redo(), overwrite=True)

    def _current_z(self) -> int:
        """Slice index shown in the viewer (0 for 2-D images)."""
        seg = self.segmentation
        layer = self._source_layer or self.image_layer
        if layer is None:
            return 0
        n_slices = self._describe_layer(layer)[1]
        if n_slices <= 1:
            return 0
        ndim = layer.ndim
        point = np.asarray(self.viewer.dims.point)[-ndim:]
        data = np.asarray(layer.world_to_data(point))
        z = int(np.round(data[0]))
        total = seg.n_slices if seg is not None else n_slices
        return min(max(z, 0), total - 1)

    def _write_into(self, layer: Labels, z: int, labels: np.ndarray) -> None:
        """Copy ``labels`` into slice ``z`` of ``layer``'s buffer in place, then redraw.

        In-place copies plus a refresh without extent/highlight recomputation
        are several times faster than assigning ``layer.data`` (no dims,
        extent or layer-list updates), which keeps level changes instant.
        """
        buffer = layer.data
        if np.iinfo(buffer.dtype).max < int(labels.max(initial=0)):
            buffer = buffer.astype(labels.dtype)  # more labels than the buffer holds: widen it once
            if buffer.ndim == 3:
                buffer[z] = labels
            else:
                buffer = labels.copy()
            layer.data = buffer
            return
        np.copyto(buffer[z] if buffer.ndim == 3 else buffer, labels, casting="unsafe")
        try:
            layer.refresh(extent=False, highlight=False)
        except TypeError:  # napari without refresh() options
            layer.refresh()

    def _write_persistent(self, z: int) -> None:
        layer = self._own(PERSISTENT_NAME)
        if layer is None or self.segmentation is None:
            return
        self._write_into(layer, z, self.segmentation.persistent(z))

    def _show_level(self, z: int) -> None:
        """Put slice ``z``'s label map at the current level into the segments layer."""
        seg = self.segmentation
        layer = self._own(SEGMENTS_NAME)
        if seg is None or layer is None or not seg.has(z):
            return
        lv = seg.level_for(z, self.level)
        if self._shown_levels.get(z) == lv:
            return
        self._write_into(layer, z, seg.label_map(z, lv))
        self._shown_levels[z] = lv

    def _on_dims_step(self, event: Any = None) -> None:
        seg = self.segmentation
        if seg is None or seg.n_slices <= 1:
            return
        z = self._current_z()
        if seg.has(z):
            seg.precompute(z)
            self._show_level(z)
        self._update_level_ui()
        self._update_mask_ui()

    # ================================================================== granularity
    def set_level(self, level: int) -> None:
        """Show ``level`` (0 = finest) of the hierarchy; instant (a cached label map swap)."""
        t0 = time.perf_counter()
        seg = self.segmentation
        if seg is None or not seg.hierarchies:
            return
        level = int(min(max(level, 0), seg.n_levels - 1))
        self.level = level
        if self.level_slider.value() != level:
            self.level_slider.blockSignals(True)
            self.level_slider.setValue(level)
            self.level_slider.blockSignals(False)
        self._show_level(self._current_z())
        self._update_level_ui()
        self.last_level_change_ms = (time.perf_counter() - t0) * 1000

    def step_level(self, delta: int) -> None:
        """Finer (``-1``) or coarser (``+1``)."""
        self.set_level(self.level + int(delta))

    def _update_level_ui(self) -> None:
        seg = self.segmentation
        z = self._current_z()
        if seg is None or not seg.has(z):
            self.level_label.setText("No segments yet: press Segment." if seg is None else "This slice is not segmented yet.")
            self.level_slider.setEnabled(seg is not None and bool(seg.hierarchies))
            return
        self.level_slider.setEnabled(True)
        lv = seg.level_for(z, self.level)
        n_levels = seg.hierarchies[z].n_levels
        self.level_label.setText(f"Level {lv + 1}/{n_levels}: {seg.n_segments(z, lv)} segments")

    # ================================================================== clicks & mask
    def _mouse_callback(self, layer: Any, event: Any):
        """Press-release without dragging on an image/segment layer = click to mask."""
        if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
            return
        if getattr(layer, "mode", "pan_zoom") != "pan_zoom":
            return  # painting, picking, transforming: leave the click to napari
        start_pos = np.asarray(getattr(event, "pos", (0, 0)), dtype=float)
        position = tuple(event.position)
        modifiers = set(getattr(event, "modifiers", ()) or ())
        dragged = False
        yield
        while event.type == "mouse_move":
            pos = np.asarray(getattr(event, "pos", start_pos), dtype=float)
            if np.abs(pos - start_pos).max() > CLICK_TOLERANCE:
                dragged = True
            yield
        if not dragged:
            self.click_world(position, modifiers)

    def click_world(self, position: tuple[float, ...], modifiers: Any = ()) -> bool:
        """Handle a click at world ``position`` (as napari reports it)."""
        layer = self._own(SEGMENTS_NAME)
        if layer is None or self.segmentation is None:
            show_info("CUTS: press Segment first, then click a segment.")
            return False
        pos = np.asarray(position, dtype=float)[-layer.ndim:]
        coords = np.round(np.asarray(layer.world_to_data(pos))).astype(int)
        if layer.ndim == 3:
            z, r, c = (int(v) for v in coords[-3:])
        else:
            z, (r, c) = 0, (int(v) for v in coords[-2:])
        return self.click(r, c, modifiers=modifiers, z=z)

    def click(self, row: int, col: int, modifiers: Any = (), z: int | None = None, mode: str | None = None) -> bool:
        """Mask the segment under pixel ``(row, col)`` of slice ``z`` at the current level.

        No modifier: the mask becomes the segment (or the 'Plain click' mode);
        Shift: add it; Alt: remove it. Returns whether the mask changed.
        """
        seg = self.segmentation
        if seg is None or self.editor is None:
            show_info("CUTS: press Segment first, then click a segment.")
            return False
        z = self._current_z() if z is None else int(z)
        if not (0 <= z < seg.n_slices) or not seg.has(z):
            show_info("CUTS: this slice is not segmented yet.")
            return False
        region = seg.region_at(z, self.level, int(row), int(col))
        if region is None:
            return False  # outside the image
        if mode is None:
            mode = mode_from_modifiers(modifiers)
            if mode == "replace":
                mode = self.click_mode_combo.currentText()
        changed = self.editor.apply(region, mode, z if self.editor.is_stack else None)
        if changed:
            self._refresh_mask()
        return changed

    def _refresh_mask(self) -> None:
        layer = self._own(MASK_NAME)
        if layer is not None and self.editor is not None:
            if layer.data is not self.editor.mask:
                layer.data = self.editor.mask
            else:
                layer.refresh()
        self._update_mask_ui()

    def undo(self) -> None:
        if self.editor is not None and self.editor.undo() != -1:
            self._refresh_mask()

    def redo(self) -> None:
        if self.editor is not None and self.editor.redo() != -1:
            self._refresh_mask()

    def clear_mask(self) -> None:
        if self.editor is None:
            return
        z = self._current_z() if self.editor.is_stack else None
        if self.editor.clear(z):
            self._refresh_mask()

    def _physical(self, measure: Callable[..., float | None]) -> float | None:
        """``measure(metadata, scale, units)`` of the layer the mask belongs to (mm² or mm³ per element)."""
        layer = self._source_layer or self._own(MASK_NAME)
        if layer is None:
            return None
        return measure(layer.metadata, layer.scale, getattr(layer, "units", None))

    def mask_area(self) -> tuple[int, float | None]:
        """(pixels, mm² or None) of the mask on the current slice."""
        if self.editor is None:
            return 0, None
        px = self.editor.area(self._current_z() if self.editor.is_stack else None)
        per_px = self._physical(physical_pixel_area)
        return px, (px * per_px if per_px is not None else None)

    def mask_volume(self) -> tuple[int, float | None]:
        """(voxels, mm³ or None) of the mask over the whole stack (a volume only for real scans)."""
        if self.editor is None:
            return 0, None
        total = self.editor.area()
        per_voxel = self._physical(physical_voxel_volume) if self.editor.is_stack else None
        return total, (total * per_voxel if per_voxel is not None else None)

    def _update_mask_ui(self) -> None:
        ed = self.editor
        self.undo_button.setEnabled(bool(ed and ed.can_undo))
        self.redo_button.setEnabled(bool(ed and ed.can_redo))
        self.clear_button.setEnabled(ed is not None)
        self.export_button.setEnabled(ed is not None)
        if ed is None:
            self.area_label.setText("Mask: empty")
            return
        px, mm2 = self.mask_area()
        text = f"Mask: {px} px"
        if mm2 is not None:
            text += f" = {mm2:.2f} mm²"
        if ed.is_stack:
            total, mm3 = self.mask_volume()
            text += f" on this slice; {total} px" + (f" = {mm3:.1f} mm³" if mm3 is not None else "") + " in the stack"
        self.area_label.setText(text)

    # ================================================================== export
    def export_mask(self, path: str | None = None, overwrite: bool | None = None) -> str | None:
        """Write the mask (PNG for 2-D, TIFF, or NIfTI with the source's affine).

        Without ``path`` a save dialog asks for one (it confirms overwriting).
        With ``path`` an existing file is only replaced after a yes from the
        user (or ``overwrite=True``). Returns the written path or None.
        """
        if self.editor is None:
            show_warning("CUTS: there is no mask yet; segment the image and click a segment.")
            return None
        stack = self.editor.is_stack
        if path is None:
            src = self._source_layer.name if self._source_layer is not None else "mask"
            filters = "TIFF (*.tif *.tiff);;NIfTI (*.nii.gz *.nii)" if stack else "PNG (*.png);;TIFF (*.tif *.tiff);;NIfTI (*.nii.gz *.nii)"
            is_nifti = "nifti" in (self._own(MASK_NAME).metadata if self._own(MASK_NAME) else {})
            default = f"{src}_mask" + (".nii.gz" if is_nifti else ".tif" if stack else ".png")
            path, _ = QFileDialog.getSaveFileName(self, "Export CUTS mask", default, filters)
            if not path:
                return None
            overwrite = True  # the dialog already asked
        try:
            fmt = format_from_path(path)
        except ValueError as exc:
            show_error(f"CUTS: {exc}")
            return None
        if fmt == "png" and stack:
            show_error("CUTS: PNG holds one 2-D image; export a stack as TIFF (.tif) or NIfTI (.nii.gz).")
            return None
        if os.path.exists(path) and not overwrite:
            answer = QMessageBox.question(
                self, "Overwrite?", f"{path} already exists. Replace it?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                return None
            overwrite = True
        layer = self._own(MASK_NAME)
        meta = dict(layer.metadata) if layer is not None else {}
        scale = tuple(layer.scale) if layer is not None else None
        try:
            out = export_mask(path, self.editor.mask, metadata=meta, scale=scale, overwrite=bool(overwrite))
        except Exception as exc:
            show_error(f"CUTS could not export the mask: {exc}")
            return None
        show_info(f"CUTS: mask written to {out}")
        return out

    # ================================================================== teardown
    def closeEvent(self, event: Any) -> None:  # pragma: no cover - GUI close
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop background work (used when the widget or viewer closes)."""
        if self._train_worker is not None:
            self._train_worker.quit()
        self._cancel_segmentation(silent=True)
        if self._layer_steps:  # closed while the layers were being put in: the worker never started
            self._layer_timer.stop()
            self._layer_steps.clear()
            for staged in self._staged:  # a layer already in the viewer is left complete
                staged.complete()
            self._segment_worker = None
        self._poll.stop()
