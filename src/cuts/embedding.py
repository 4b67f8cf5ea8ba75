"""Per-pixel embeddings of whole images, in tiles of bounded memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cuts.device import resolve_device
from cuts.images import as_image_list, check_channels, scale_intensity
from cuts.model import HALO, CutsModel

#: Default tile side: a 512x512 tile needs about 0.6 GB of activations on the CPU.
DEFAULT_TILE = 512


def embed(
    model: CutsModel,
    image: Any,
    *,
    tile_size: int = DEFAULT_TILE,
    device: str | torch.device | None = None,
    rgb: bool | None = None,
    out: np.ndarray | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Embed every pixel of one 2-D image.

    Parameters
    ----------
    model : CutsModel
        A trained model (see :func:`cuts.train`, :func:`cuts.load_model`).
    image : ndarray
        ``(H, W)`` grey or ``(H, W, C)`` colour image, any size of at least 17x17.
    tile_size : int
        Side of the square tiles the image is processed in. Each tile is read with
        8 pixels of context on every side, so the result does not depend on the
        tiling; memory for activations is bounded by the tile size.
    device : str or torch.device, optional
        Where to compute; the model's device by default.
    rgb : bool, optional
        Whether the last axis is colour (guessed when ``None``).
    out : ndarray, optional
        Preallocated ``(H, W, D)`` destination, e.g. a :class:`numpy.memmap` so a very
        large result need not live in memory.
    dtype : numpy dtype
        Result dtype when ``out`` is not given (``float32``; ``float16`` halves memory).

    Returns
    -------
    ndarray
        ``(H, W, 128)`` embeddings.

    Raises
    ------
    cuts.ImageError
        If the image is unusable or its channel count differs from the model's.
    """
    images = as_image_list(image, rgb=rgb)
    if len(images) != 1:
        raise ValueError(
            f"embed takes one 2-D image but got a stack of {len(images)} slices; "
            "call it once per slice."
        )
    img = images[0]
    check_channels(img, model.in_channels)
    if tile_size < 16:
        raise ValueError(f"tile_size must be >= 16, got {tile_size}.")
    dev = resolve_device(device) if device is not None else model.device
    encoder = model.encoder
    moved = next(encoder.parameters()).device != dev
    if moved:
        import copy

        encoder = copy.deepcopy(encoder).to(dev)
    was_training = encoder.training
    encoder.eval()

    scaled = scale_intensity(img, percentiles=model.percentiles)
    height, width = scaled.shape[1:]
    padded = np.pad(scaled, ((0, 0), (HALO, HALO), (HALO, HALO)), mode="edge")
    del scaled
    dim = encoder.embedding_dim
    if out is None:
        out = np.empty((height, width, dim), dtype=dtype)
    elif out.shape != (height, width, dim):
        raise ValueError(f"out has shape {out.shape}, expected {(height, width, dim)}.")
    try:
        with torch.inference_mode():
            for y in range(0, height, tile_size):
                th = min(tile_size, height - y)
                for x in range(0, width, tile_size):
                    tw = min(tile_size, width - x)
                    block = padded[:, y : y + th + 2 * HALO, x : x + tw + 2 * HALO]
                    t = torch.from_numpy(np.ascontiguousarray(block))[None].to(dev)
                    z = encoder(t)[0]  # (D, th, tw)
                    out[y : y + th, x : x + tw] = z.permute(1, 2, 0).cpu().numpy()
    finally:
        if was_training and not moved:
            encoder.train()
    return out
