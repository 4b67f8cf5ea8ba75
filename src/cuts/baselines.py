"""Classic unsupervised segmentation baselines (scikit-image).

Each function takes one image -- 2-D grey ``(H, W)`` or colour ``(H, W, 3)``,
any dtype and intensity range -- and returns an ``(H, W)`` ``int32`` label map
with labels ``1..n``.  Binarisation for evaluation (picking the label most
frequent inside the expert mask) happens elsewhere.

Images are first rescaled to ``[0, 1]`` by their global minimum and maximum
(one range for all channels, so colours keep their balance); this makes the
parameters below independent of the input dtype.

Default parameters, chosen for 128x128 retinal fundus images and close to the
official CUTS comparison script (``src/scripts_analysis/generate_baselines.py``
of ChenLiu-1996/CUTS), were not tuned on any test set:

* :func:`otsu_labels` -- Gaussian smoothing ``sigma=0.8`` (the official
  script's 3x3 ``cv2.GaussianBlur``, whose implied sigma is 0.8), then Otsu's
  threshold of the grey intensity.
* :func:`felzenszwalb_labels` -- ``scale=200``, ``sigma=1.0`` (the official
  "retina" setting) and ``min_size=20`` pixels (official: 10).
* :func:`slic_labels` -- ``n_segments=10`` (official), ``compactness=10``
  (scikit-image default); grey images are repeated to RGB and segmented in
  CIELAB, as in the official script.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "otsu_labels",
    "felzenszwalb_labels",
    "slic_labels",
    "BASELINES",
]


def _as_unit_image(image: ArrayLike) -> np.ndarray:
    """Validate an image and rescale it to float64 in [0, 1].

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey or ``(H, W, 3)`` RGB image of any dtype.

    Returns
    -------
    numpy.ndarray
        The image as float64, globally min-max scaled to [0, 1] (all zeros if
        constant).

    Raises
    ------
    ValueError
        If the shape is not ``(H, W)`` or ``(H, W, 3)``, the image is empty,
        or it holds non-finite values.
    """
    arr = np.asarray(image)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {arr.shape}")
    if arr.size == 0:
        raise ValueError("image must not be empty")
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(out.min()), float(out.max())
    if hi > lo:
        out = (out - lo) / (hi - lo)
    else:
        out = np.zeros_like(out)
    return out


def _grey(unit: np.ndarray) -> np.ndarray:
    """Grey intensity of a [0, 1] image (ITU-R BT.709 luma for RGB)."""
    if unit.ndim == 2:
        return unit
    from skimage.color import rgb2gray

    return rgb2gray(unit)


def _sequential(labels: np.ndarray) -> np.ndarray:
    """Relabel an integer map to consecutive ``int32`` labels ``1..n``."""
    _, inverse = np.unique(labels, return_inverse=True)
    return (inverse.reshape(labels.shape) + 1).astype(np.int32)


def otsu_labels(image: ArrayLike, *, sigma: float = 0.8) -> np.ndarray:
    """Two-class segmentation by Otsu's threshold of the grey intensity.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey or ``(H, W, 3)`` RGB image, any dtype.
    sigma : float, optional
        Standard deviation (pixels) of a Gaussian applied to the grey image
        before thresholding; 0 disables it.  Default 0.8, the sigma of the
        3x3 Gaussian blur in the official CUTS baseline script.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 map: 1 where the (smoothed) grey value is at or
        below the threshold, 2 above it.  A constant image gives all 1.

    Raises
    ------
    ValueError
        If the image shape is invalid or ``sigma`` is negative.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    grey = _grey(_as_unit_image(image))
    if sigma > 0:
        from scipy.ndimage import gaussian_filter

        grey = gaussian_filter(grey, sigma=sigma, mode="nearest")
    labels = np.ones(grey.shape, dtype=np.int32)
    if float(grey.max()) > float(grey.min()):
        from skimage.filters import threshold_otsu

        labels[grey > threshold_otsu(grey)] = 2
    return labels


def felzenszwalb_labels(
    image: ArrayLike,
    *,
    scale: float = 200.0,
    sigma: float = 1.0,
    min_size: int = 20,
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph-based segmentation.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey or ``(H, W, 3)`` RGB image, any dtype (rescaled to
        [0, 1]).
    scale : float, optional
        Observation scale; larger gives larger segments.  Default 200.
    sigma : float, optional
        Gaussian pre-smoothing in pixels.  Default 1.0.
    min_size : int, optional
        Minimum segment size in pixels (enforced by merging).  Default 20.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 label map with labels ``1..n``.

    Raises
    ------
    ValueError
        If the image shape is invalid.
    """
    from skimage.segmentation import felzenszwalb

    unit = _as_unit_image(image)
    channel_axis = None if unit.ndim == 2 else -1
    labels = felzenszwalb(
        unit, scale=scale, sigma=sigma, min_size=int(min_size), channel_axis=channel_axis
    )
    return _sequential(labels)


def slic_labels(
    image: ArrayLike,
    *,
    n_segments: int = 10,
    compactness: float = 10.0,
) -> np.ndarray:
    """SLIC superpixels (k-means in CIELAB + position).

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey or ``(H, W, 3)`` RGB image, any dtype (rescaled to
        [0, 1]; grey is repeated to three channels so that segmentation runs
        in CIELAB, where ``compactness`` has its usual meaning).
    n_segments : int, optional
        Approximate number of segments.  Default 10.
    compactness : float, optional
        Balance of colour and space proximity; higher is more square.
        Default 10.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32 label map with labels ``1..n``.

    Raises
    ------
    ValueError
        If the image shape is invalid or ``n_segments < 1``.
    """
    from skimage.segmentation import slic

    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    unit = _as_unit_image(image)
    if unit.ndim == 2:
        unit = np.repeat(unit[:, :, None], 3, axis=2)
    labels = slic(
        unit,
        n_segments=int(n_segments),
        compactness=float(compactness),
        start_label=1,
        channel_axis=-1,
    )
    return _sequential(labels)


#: name -> baseline function, for iterating over all baselines.
BASELINES = {
    "otsu": otsu_labels,
    "felzenszwalb": felzenszwalb_labels,
    "slic": slic_labels,
}
