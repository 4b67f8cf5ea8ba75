"""Training the CUTS encoder on the images themselves (no labels).

Only what the loss needs is computed: each step draws a few anchor pixels per
image, mines their positives, and runs the encoder on the 17x17 window of each
of those pixels alone (a pixel's embedding depends on nothing else, see
:mod:`cuts.model`). The official recipe convolves whole images to use 8 pixels
of each; the results are the same embeddings for a fraction of the work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from cuts.cancel import CancelToken, Cancelled, is_cancelled
from cuts.device import resolve_device
from cuts.images import as_image_list, check_channels, n_channels, scale_intensity
from cuts.losses import nt_xent_loss, reconstruction_loss
from cuts.mining import PatchSource, choose_positives, draw_offsets
from cuts.model import HALO, PATCH_SIZE, CutsModel


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (all have measured defaults, see docs/training.md).

    Attributes
    ----------
    steps : int
        Optimiser updates. Training stops after ``steps`` or ``max_seconds``, whichever comes first.
    max_seconds : float or None
        Time budget in seconds. With a budget the learning-rate schedule follows
        elapsed time, so results depend on machine speed; without one, training is
        deterministic for a seed on a given device.
    batch_size : int
        Images per step (drawn in shuffled passes over the input).
    anchors_per_image : int
        Anchor pixels per image per step; each gets one mined positive.
    lam : float
        Weight of the contrastive loss: ``lam * contrastive + (1 - lam) * recon``.
    temperature : float
        NT-Xent temperature.
    lr, weight_decay : float
        AdamW settings.
    warmup_fraction : float
        Fraction of the run with linear learning-rate warm-up before the cosine decay.
    ssim_threshold : float
        SSIM a candidate positive must exceed.
    n_tries : int
        Candidate positives drawn per anchor.
    seed : int
        Seed of initialisation, sampling and mining.
    """

    steps: int = 1200
    max_seconds: float | None = None
    batch_size: int = 8
    anchors_per_image: int = 8
    lam: float = 0.01
    temperature: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    ssim_threshold: float = 0.5
    n_tries: int = 20
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot work."""
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}.")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0 (or None), got {self.max_seconds}.")
        if self.batch_size < 1 or self.anchors_per_image < 2:
            raise ValueError("batch_size must be >= 1 and anchors_per_image >= 2 (negatives come from other anchors).")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")


@dataclass(frozen=True)
class TrainProgress:
    """One report from training: after ``step`` of ``total_steps`` updates."""

    step: int
    total_steps: int
    loss: float
    contrastive: float
    reconstruction: float
    elapsed: float
    device: str

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps


def _lr_factor(progress: float, warmup: float) -> float:
    if warmup > 0 and progress < warmup:
        return (progress + 1e-3) / warmup
    rest = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, rest))))


def _prepare(images: Any, rgb: bool | None, model: CutsModel | None) -> tuple[list[np.ndarray], int]:
    imgs = as_image_list(images, rgb=rgb)
    channels = {n_channels(im) for im in imgs}
    if len(channels) > 1:
        raise ValueError(
            f"the images mix channel counts {sorted(channels)}; train one encoder per kind "
            "(grey or colour), or convert them to the same kind first."
        )
    c = channels.pop()
    if model is not None:
        check_channels(imgs[0], model.in_channels)
    return imgs, c


def sample_step(
    padded: PatchSource | Sequence[np.ndarray],
    order: np.ndarray,
    rng: np.random.Generator,
    config: TrainConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Windows and reconstruction targets for one step.

    ``padded`` holds the training images padded by ``HALO`` (a :class:`PatchSource`,
    or a list of ``(C, H + 2*HALO, W + 2*HALO)`` arrays); ``order`` picks the
    step's images. Random draws are made image by image (anchors, then candidate
    offsets); positives and windows of all images are then found at once.

    Returns ``windows`` of shape ``(B, 2n, C, 17, 17)`` (anchors first, then their
    positives) and ``targets`` of shape ``(B, 2n, C, 5, 5)``.
    """
    source = padded if isinstance(padded, PatchSource) else PatchSource(padded, HALO)
    n = config.anchors_per_image
    side = 2 * HALO + 1
    order = np.asarray(order, dtype=np.int64)
    anchors = np.empty((order.size, n, 2), dtype=np.int64)
    offsets = np.empty((order.size, n, config.n_tries, 2), dtype=np.int64)
    for i, idx in enumerate(order):
        anchors[i, :, 0] = rng.integers(0, source.height[idx], n)
        anchors[i, :, 1] = rng.integers(0, source.width[idx], n)
        offsets[i] = draw_offsets(n, rng, n_tries=config.n_tries)
    image = np.repeat(order, n)
    pos, _ = choose_positives(
        source, image, anchors.reshape(-1, 2), offsets.reshape(-1, config.n_tries, 2),
        threshold=config.ssim_threshold,
    )
    pts = np.concatenate([anchors, pos.reshape(order.size, n, 2)], axis=1)  # (B, 2n, 2)
    win = source.patches(order[:, None], pts[..., 0], pts[..., 1], side)
    lo = HALO - PATCH_SIZE // 2
    targets = win[..., lo : lo + PATCH_SIZE, lo : lo + PATCH_SIZE]
    return win, np.ascontiguousarray(targets)


def iter_train(
    images: Any,
    *,
    model: CutsModel | None = None,
    config: TrainConfig | None = None,
    device: str | torch.device | None = "auto",
    rgb: bool | None = None,
    **settings: Any,
) -> Generator[TrainProgress, None, CutsModel]:
    """Train an encoder, yielding progress after every step.

    A generator: iterate it for :class:`TrainProgress` reports; its return value
    (``model = yield from iter_train(...)``, or ``StopIteration.value``) is the
    trained :class:`~cuts.model.CutsModel`. Stopping iteration early (closing
    the generator) returns nothing, and a ``model`` passed in is never changed:
    training works on a copy.

    Parameters
    ----------
    images : array or list of arrays
        2-D images of any sizes, or stacks (see :func:`cuts.as_image_list`).
    model : CutsModel, optional
        Continue training this model (a copy of it) instead of a new one.
    config : TrainConfig, optional
        Settings; keyword ``settings`` override single fields (e.g. ``steps=200``).
    device : {"auto", "cpu", "cuda", "mps"}
        Where to train; ``"auto"`` prefers CUDA, then MPS, then CPU.
    rgb : bool, optional
        Whether the images' last axis is colour (guessed when ``None``).
    """
    config = replace(config or TrainConfig(), **settings)
    config.validate()
    imgs, channels = _prepare(images, rgb, model)
    dev = resolve_device(device)

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if model is None:
        work = CutsModel.create(channels, seed=config.seed)
    else:
        work = model.copy()
    work.to(dev)
    percentiles = work.percentiles
    padded = PatchSource(
        [
            np.pad(scale_intensity(im, percentiles=percentiles), ((0, 0), (HALO, HALO), (HALO, HALO)), mode="edge")
            for im in imgs
        ],
        HALO,
    )
    params = list(work.encoder.parameters()) + list(work.head.parameters())
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    work.encoder.train()
    work.head.train()

    start = time.perf_counter()
    queue: list[int] = []
    loss_value = float("nan")
    step = 0
    for step in range(1, config.steps + 1):
        elapsed = time.perf_counter() - start
        progress = (step - 1) / config.steps
        if config.max_seconds is not None:
            if elapsed >= config.max_seconds:
                step -= 1
                break
            progress = max(progress, elapsed / config.max_seconds)
        for group in optimiser.param_groups:
            group["lr"] = config.lr * _lr_factor(progress, config.warmup_fraction)

        order = []
        while len(order) < config.batch_size:
            if not queue:
                queue = list(rng.permutation(len(padded)))
            order.append(queue.pop())
        win, targets = sample_step(padded, np.asarray(order), rng, config)
        b, m = win.shape[:2]
        x = torch.from_numpy(win.reshape(b * m, *win.shape[2:])).to(dev)
        t = torch.from_numpy(targets.reshape(b * m, *targets.shape[2:])).to(dev)
        z = work.encoder(x).flatten(1)  # (b*m, 128)
        recon = reconstruction_loss(work.head(z), t)
        zz = z.view(b, m, -1)
        n = config.anchors_per_image
        contrast = nt_xent_loss(zz[:, :n], zz[:, n:], temperature=config.temperature)
        loss = config.lam * contrast + (1.0 - config.lam) * recon
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"training diverged at step {step} (loss {loss_value}); try a lower lr or check the images."
            )
        yield TrainProgress(
            step, config.steps, loss_value, float(contrast.detach()), float(recon.detach()),
            time.perf_counter() - start, dev.type,
        )

    work.encoder.eval()
    work.head.eval()
    meta = dict(work.metadata)
    history = list(meta.get("training_runs", []))
    history.append(
        {
            **asdict(config),
            "steps_done": step,
            "final_loss": loss_value,
            "seconds": round(time.perf_counter() - start, 3),
            "device": str(dev),
            "n_images": len(imgs),
        }
    )
    meta["training_runs"] = history
    meta["training"] = history[-1]
    work.metadata = meta
    return work


def train(
    images: Any,
    *,
    model: CutsModel | None = None,
    config: TrainConfig | None = None,
    device: str | torch.device | None = "auto",
    rgb: bool | None = None,
    callback: Callable[[TrainProgress], Any] | None = None,
    cancel: CancelToken = None,
    **settings: Any,
) -> CutsModel:
    """Train a CUTS encoder on ``images`` and return it.

    Same parameters as :func:`iter_train`, plus:

    callback : callable, optional
        Called with a :class:`TrainProgress` after every step.
    cancel : threading.Event or callable, optional
        Checked after every step (well under a second apart); when set,
        :class:`cuts.Cancelled` is raised and nothing is returned. A ``model``
        passed in is left as it was.

    Examples
    --------
    >>> import numpy as np, cuts
    >>> model = cuts.train([np.random.rand(64, 64)], steps=5, device="cpu")
    >>> model.metadata["training"]["steps_done"]
    5
    """
    gen = iter_train(images, model=model, config=config, device=device, rgb=rgb, **settings)
    while True:
        if is_cancelled(cancel):
            gen.close()
            raise Cancelled("training was cancelled; the previous model is unchanged")
        try:
            report = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(report)
