"""Images in, tensors out: input validation, layout and intensity scaling.

Accepted inputs
---------------
* 2-D grey ``(H, W)``;
* colour ``(H, W, C)`` with ``C`` in 1..4 (RGBA and grey+alpha lose their alpha channel);
* stacks of slices ``(Z, H, W)`` and ``(Z, H, W, C)`` (each slice is one image);
* a list/tuple of such arrays (sizes may differ);
* dtypes ``uint8``, ``uint16``, ``int16`` (MRI), other integers, ``float32``/``float64``, ``bool``.

Intensity scaling
-----------------
Every image is scaled on its own to ``[-1, 1]`` by :func:`scale_intensity`: the
``low``-th and ``high``-th percentiles (0.5 and 99.5 by default) of all its values
(all channels together, so colour ratios are kept) map to -1 and 1, and values
outside are clipped. Percentiles rather than min/max make the scaling robust to
a few hot pixels, which MRI often has; a constant image maps to 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Receptive field of the CUTS encoder (4 conv layers of 5x5): one embedding sees a 17x17 window.
RECEPTIVE_FIELD = 17

#: Default percentiles used by :func:`scale_intensity`.
DEFAULT_PERCENTILES = (0.5, 99.5)


class ImageError(ValueError):
    """An image cannot be used: the message says what was wrong and what to do."""


def _describe(arr: np.ndarray) -> str:
    return f"array of shape {arr.shape} and dtype {arr.dtype}"


def _check_values(arr: np.ndarray, where: str) -> None:
    if arr.size == 0:
        raise ImageError(f"{where} is empty ({_describe(arr)}); give an image with pixels.")
    if arr.dtype.kind not in "biuf":
        raise ImageError(
            f"{where} has dtype {arr.dtype}, which is not an image type; "
            "use an integer, float or bool array."
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ImageError(
            f"{where} contains {n_bad} NaN or infinite value(s); "
            "replace them (e.g. numpy.nan_to_num) before segmenting."
        )


def _check_size(height: int, width: int, where: str, min_size: int) -> None:
    if height < min_size or width < min_size:
        raise ImageError(
            f"{where} is {height}x{width} pixels, smaller than the {min_size}x{min_size} "
            f"needed (the encoder's receptive field is {RECEPTIVE_FIELD}x{RECEPTIVE_FIELD}); "
            f"use images of at least {min_size}x{min_size} pixels."
        )


def _drop_alpha(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[-1] in (2, 4):
        img = img[..., :-1]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return img


def as_image_list(
    data: np.ndarray | Sequence[np.ndarray],
    *,
    rgb: bool | None = None,
    min_size: int = RECEPTIVE_FIELD,
) -> list[np.ndarray]:
    """Split ``data`` into a list of validated 2-D images.

    Parameters
    ----------
    data : array or sequence of arrays
        One image, a stack of slices, or a list of images (see module docs).
    rgb : bool, optional
        Whether the last axis holds colour channels. ``None`` (default) guesses:
        a last axis of length 1-4 after at least two larger axes is taken as channels.
        napari's ``Image.rgb`` is the right value to pass from a viewer.
    min_size : int
        Smallest allowed height/width (the receptive field by default).

    Returns
    -------
    list of ndarray
        Each ``(H, W)`` (grey) or ``(H, W, 3)`` (colour, alpha dropped), with
        the original dtype.

    Raises
    ------
    ImageError
        For empty arrays, more than 4 dimensions, NaN/Inf, non-numeric dtypes, or
        images smaller than ``min_size``.
    """
    if isinstance(data, (list, tuple)):
        if len(data) == 0:
            raise ImageError("no images were given (an empty list); give at least one image.")
        out: list[np.ndarray] = []
        for item in data:
            out.extend(as_image_list(item, rgb=rgb, min_size=min_size))
        return out

    arr = np.asarray(data)
    if arr.ndim == 0 or arr.size == 0:
        raise ImageError(f"the image is empty ({_describe(arr)}); give an image with pixels.")
    if arr.ndim == 1:
        raise ImageError(f"got a 1-D {_describe(arr)}; an image needs at least 2 dimensions (H, W).")
    if arr.ndim > 4:
        raise ImageError(
            f"got a {_describe(arr)} with {arr.ndim} dimensions; CUTS takes 2-D images "
            "(H, W) or (H, W, C) and stacks (Z, H, W) or (Z, H, W, C). Select or squeeze "
            "the extra axes (e.g. time or channels) first."
        )
    if rgb is None:
        rgb = arr.ndim >= 3 and arr.shape[-1] <= 4 and min(arr.shape[-3:-1]) > 4
    if arr.ndim == 4 and not rgb:
        raise ImageError(
            f"got a 4-D {_describe(arr)} whose last axis is not colour channels; "
            "CUTS takes stacks (Z, H, W) or (Z, H, W, C) with C <= 4."
        )
    if rgb and arr.ndim == 2:
        raise ImageError(f"rgb=True needs a channel axis, but got a 2-D {_describe(arr)}.")
    if rgb and arr.shape[-1] > 4:
        raise ImageError(
            f"the last axis of the {_describe(arr)} has {arr.shape[-1]} channels; "
            "colour images need 1-4 channels (grey, grey+alpha, RGB, RGBA)."
        )
    _check_values(arr, "the image")

    if (arr.ndim == 3 and not rgb) or arr.ndim == 4:
        slices = [arr[i] for i in range(arr.shape[0])]
    else:
        slices = [arr]
    images = []
    for i, img in enumerate(slices):
        img = _drop_alpha(img)
        where = "the image" if len(slices) == 1 else f"slice {i} of the stack"
        _check_size(img.shape[0], img.shape[1], where, min_size)
        images.append(img)
    return images


def n_channels(image: np.ndarray) -> int:
    """Number of channels of a 2-D image returned by :func:`as_image_list`."""
    return 1 if image.ndim == 2 else int(image.shape[-1])


def scale_intensity(
    image: np.ndarray,
    *,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Scale one image to ``[-1, 1]``, channels first.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` or ``(H, W, C)``, as returned by :func:`as_image_list`.
    percentiles : (float, float)
        The low and high percentiles (0-100) of all values that map to -1 and 1.
        ``(0, 100)`` is plain min/max scaling.

    Returns
    -------
    ndarray
        ``float32`` array of shape ``(C, H, W)`` with values in ``[-1, 1]``.
    """
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise ImageError(f"scale_intensity takes one 2-D image, got {_describe(arr)}.")
    values = arr.astype(np.float32, copy=False)
    sample = values
    if values.size > 4_000_000:  # percentiles of a strided sample: same answer for large photos, far cheaper
        step = int(np.ceil(np.sqrt(values.size / 4_000_000)))
        sample = values[:, ::step, ::step]
    lo, hi = np.percentile(sample, [lo_p, hi_p])
    if not hi > lo:  # constant (or nearly constant) image
        return np.zeros(values.shape, dtype=np.float32)
    out = (values - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    np.clip(out, -1.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)


def check_channels(image: np.ndarray, expected: int, *, what: str = "the encoder") -> None:
    """Raise :class:`ImageError` if ``image`` does not have ``expected`` channels."""
    got = n_channels(image)
    if got != expected:
        kind = {1: "grey (1 channel)", 3: "colour (3 channels)"}
        raise ImageError(
            f"the image is {kind.get(got, f'{got}-channel')} but {what} was trained on "
            f"{kind.get(expected, f'{expected}-channel')} images; train a new encoder on "
            "these images or load one made for this kind of image."
        )

