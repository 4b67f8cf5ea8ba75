"""Tests for cuts.baselines on synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from cuts.baselines import BASELINES, felzenszwalb_labels, otsu_labels, slic_labels
from cuts.metrics import dice


def _disk_image(seed: int = 0, size: int = 64):
    """Grey image in [0, 1]: a bright disk on a dark noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = (yy - size * 0.45) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.25) ** 2
    img = 0.2 + 0.6 * truth + rng.normal(0.0, 0.03, truth.shape)
    return np.clip(img, 0.0, 1.0), truth


def _binarise(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Keep the label most frequent inside the expert mask."""
    return labels == np.bincount(labels[truth]).argmax()


def _check_label_map(labels: np.ndarray, shape) -> None:
    assert labels.shape == shape
    assert labels.dtype == np.int32
    values = np.unique(labels)
    assert values[0] == 1
    np.testing.assert_array_equal(values, np.arange(1, values.size + 1))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_grey_disk_is_recovered(name):
    img, truth = _disk_image()
    labels = BASELINES[name](img)
    _check_label_map(labels, truth.shape)
    assert dice(_binarise(labels, truth), truth) > 0.85


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_rgb_uint8_input(name):
    img, truth = _disk_image(seed=3)
    rgb = np.stack([img, 0.5 * img, 0.25 * img], axis=-1)
    rgb8 = np.round(rgb * 255).astype(np.uint8)
    labels = BASELINES[name](rgb8)
    _check_label_map(labels, truth.shape)
    assert dice(_binarise(labels, truth), truth) > 0.85


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_dtype_and_range_invariance(name):
    img, _ = _disk_image(seed=5)
    img8 = np.round(img * 255).astype(np.uint8)
    ref = BASELINES[name](img8)
    np.testing.assert_array_equal(BASELINES[name](img8.astype(np.uint16) * 257), ref)
    np.testing.assert_array_equal(BASELINES[name](img8.astype(np.float32) / 127.5 - 1), ref)


def test_otsu_two_labels_bright_is_two():
    img, truth = _disk_image()
    labels = otsu_labels(img)
    assert set(np.unique(labels)) == {1, 2}
    np.testing.assert_array_equal(labels == 2, truth)
    # without smoothing the same clean split holds
    np.testing.assert_array_equal(otsu_labels(img, sigma=0) == 2, truth)


def test_otsu_constant_image():
    labels = otsu_labels(np.full((10, 12), 7, np.uint8))
    assert labels.dtype == np.int32
    assert np.all(labels == 1)


def test_felzenszwalb_min_size_and_scale():
    rng = np.random.default_rng(0)
    img = rng.random((48, 48))
    fine = felzenszwalb_labels(img, scale=1.0, sigma=0.0, min_size=1)
    coarse = felzenszwalb_labels(img, scale=500.0, sigma=0.5, min_size=100)
    assert coarse.max() < fine.max()
    assert np.bincount(coarse.ravel())[1:].min() >= 100


def test_slic_segment_count_follows_parameter():
    img, _ = _disk_image()
    few = slic_labels(img, n_segments=4)
    many = slic_labels(img, n_segments=50)
    assert few.max() < many.max()
    assert many.max() >= 20


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("shape", [(8,), (8, 8, 4), (8, 8, 1)])
def test_bad_shape_raises(name, shape):
    with pytest.raises(ValueError, match="shape"):
        BASELINES[name](np.zeros(shape))


def test_bad_parameters_raise():
    img, _ = _disk_image()
    with pytest.raises(ValueError):
        otsu_labels(img, sigma=-1.0)
    with pytest.raises(ValueError):
        slic_labels(img, n_segments=0)
    with pytest.raises(ValueError):
        otsu_labels(np.full((4, 4), np.nan))
