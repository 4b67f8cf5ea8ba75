"""Shared fixtures of the test suite."""

from __future__ import annotations

import numpy as np
import pytest


def synthetic_image(n: int = 64, *, rgb: bool = True, seed: int = 0, shift: int = 0) -> np.ndarray:
    """Two blobs of different brightness on a dark background, with mild noise."""
    yy, xx = np.mgrid[:n, :n]
    img = np.full((n, n), 40.0)
    img[(yy - n * 0.35 - shift) ** 2 + (xx - n * 0.35) ** 2 < (n * 0.18) ** 2] = 200
    img[(yy - n * 0.7) ** 2 + (xx - n * 0.65 - shift) ** 2 < (n * 0.15) ** 2] = 120
    img += np.random.default_rng(seed).normal(0, 5, (n, n))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rgb:
        return np.stack([img, img // 2, 255 - img], axis=-1)
    return img


@pytest.fixture
def rgb_image() -> np.ndarray:
    return synthetic_image(64, rgb=True)


@pytest.fixture
def grey_stack() -> np.ndarray:
    return np.stack([synthetic_image(48, rgb=False, seed=s, shift=2 * s) for s in range(3)])


@pytest.fixture(scope="session")
def rgb_model():
    """A briefly trained 3-channel encoder (the real engine, 3 steps)."""
    import cuts

    return cuts.train([synthetic_image(64, rgb=True)], steps=3, seed=0, device="cpu")


@pytest.fixture(scope="session")
def grey_model():
    """A briefly trained 1-channel encoder (the real engine, 3 steps)."""
    import cuts

    return cuts.train([synthetic_image(48, rgb=False)], steps=3, seed=0, device="cpu")


@pytest.fixture
def notes(monkeypatch):
    """Capture the widget's napari notifications as (kind, message) pairs."""
    import napari_cuts._widget as widget_module

    captured: list[tuple[str, str]] = []
    for kind in ("show_error", "show_warning", "show_info"):
        monkeypatch.setattr(
            widget_module, kind, lambda msg, _k=kind: captured.append((_k.removeprefix("show_"), str(msg)))
        )
    return captured


@pytest.fixture
def make_image():
    """The :func:`synthetic_image` factory."""
    return synthetic_image


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one thread (steadier and faster on a busy 2-core machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
