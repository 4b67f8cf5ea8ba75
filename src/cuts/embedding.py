"""Per-pixel embeddings of whole images, in tiles of bounded memory.

:func:`embed` returns the embedding as an array; :func:`embed_to_file` streams it to a
``.npy`` file tile by tile, so its memory does not grow with the image. Both run the
same tile loop, so they give the same values.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cuts.atomic import atomic_path
from cuts.cancel import CancelToken, check_cancelled
from cuts.device import resolve_device
from cuts.images import as_image_list, check_channels, scale_intensity
from cuts.model import HALO, CutsModel

#: Default tile side: a 512x512 tile needs about 0.6 GB of activations on the CPU.
DEFAULT_TILE = 512

#: ``callback(done, total, message)``: tiles done so far out of ``total``.
ProgressCallback = Callable[[int, int, str], None]


@dataclass
class _Tiler:
    """An image made ready for the encoder, embedded one tile at a time."""

    encoder: torch.nn.Module
    device: torch.device
    padded: np.ndarray  # (C, H + 2 HALO, W + 2 HALO) scaled image
    height: int
    width: int
    tile_size: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.encoder.embedding_dim)

    def tiles(
        self, *, callback: ProgressCallback | None = None, cancel: CancelToken = None
    ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(y, x, tile)`` row by row of tiles; ``tile`` is a ``(th, tw, D)`` float32 view."""
        t = self.tile_size
        ys, xs = range(0, self.height, t), range(0, self.width, t)
        total, done = len(ys) * len(xs), 0
        for y in ys:
            th = min(t, self.height - y)
            for x in xs:
                check_cancelled(cancel, "embedding")
                tw = min(t, self.width - x)
                block = self.padded[:, y : y + th + 2 * HALO, x : x + tw + 2 * HALO]
                with torch.inference_mode():
                    z = self.encoder(torch.from_numpy(np.ascontiguousarray(block))[None].to(self.device))[0]
                    tile = z.permute(1, 2, 0).cpu().numpy()  # (th, tw, D)
                yield y, x, tile
                done += 1
                if callback is not None:
                    callback(done, total, f"tile {done}/{total}")


@contextlib.contextmanager
def _tiler(
    model: CutsModel,
    image: Any,
    *,
    tile_size: int,
    device: str | torch.device | None,
    rgb: bool | None,
    what: str,
) -> Iterator[_Tiler]:
    """Check and scale ``image``; yield a :class:`_Tiler` with the encoder in eval mode."""
    images = as_image_list(image, rgb=rgb)
    if len(images) != 1:
        raise ValueError(
            f"{what} takes one 2-D image but got a stack of {len(images)} slices; "
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
        encoder = copy.deepcopy(encoder).to(dev)
    was_training = encoder.training
    encoder.eval()
    try:
        scaled = scale_intensity(img, percentiles=model.percentiles)
        height, width = scaled.shape[1:]
        padded = np.pad(scaled, ((0, 0), (HALO, HALO), (HALO, HALO)), mode="edge")
        del scaled
        yield _Tiler(encoder, dev, padded, height, width, tile_size)
    finally:
        if was_training and not moved:
            encoder.train()


def embed(
    model: CutsModel,
    image: Any,
    *,
    tile_size: int = DEFAULT_TILE,
    device: str | torch.device | None = None,
    rgb: bool | None = None,
    out: np.ndarray | None = None,
    dtype: Any = np.float32,
    callback: ProgressCallback | None = None,
    cancel: CancelToken = None,
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
        Preallocated ``(H, W, D)`` destination, e.g. a :class:`numpy.memmap`. To write a
        large embedding to disk, :func:`cuts.embed_to_file` is simpler and safer.
    dtype : numpy dtype
        Result dtype when ``out`` is not given (``float32``; ``float16`` halves memory).
    callback : callable, optional
        ``callback(done, total, message)`` after every tile.
    cancel : CancelToken, optional
        A :class:`threading.Event` or callable; when it fires, :class:`cuts.Cancelled` is
        raised before the next tile (``out``, if given, is then partly filled).

    Returns
    -------
    ndarray
        ``(H, W, 128)`` embeddings.

    Raises
    ------
    cuts.ImageError
        If the image is unusable or its channel count differs from the model's.
    cuts.Cancelled
        If ``cancel`` fired.
    """
    with _tiler(model, image, tile_size=tile_size, device=device, rgb=rgb, what="embed") as tiler:
        if out is None:
            out = np.empty(tiler.shape, dtype=dtype)
        elif out.shape != tiler.shape:
            raise ValueError(f"out has shape {out.shape}, expected {tiler.shape}.")
        for y, x, tile in tiler.tiles(callback=callback, cancel=cancel):
            out[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return out


def embed_to_file(
    model: CutsModel,
    image: Any,
    path: str | os.PathLike,
    *,
    dtype: Any = np.float32,
    tile_size: int = DEFAULT_TILE,
    device: str | torch.device | None = None,
    rgb: bool | None = None,
    overwrite: bool = True,
    callback: ProgressCallback | None = None,
    cancel: CancelToken = None,
) -> Path:
    """Embed every pixel of one 2-D image straight into a ``.npy`` file.

    The ``(H, W, 128)`` embedding is written tile by tile and never held in memory as a
    whole: besides the scaled input image (4 bytes per pixel and channel), memory stays at
    what one tile needs (its activations), whatever the image size. The values are exactly those of :func:`cuts.embed` with the
    same ``tile_size`` and ``dtype``; read the file with :func:`numpy.load`
    (``mmap_mode="r"`` to keep it on disk).

    The file is written atomically: to a temporary file in the same folder, renamed to
    ``path`` only when complete. On an error or a cancellation nothing is left behind
    and an existing ``path`` is untouched.

    Parameters
    ----------
    model : CutsModel
        A trained model (see :func:`cuts.train`, :func:`cuts.load_model`).
    image : ndarray
        ``(H, W)`` grey or ``(H, W, C)`` colour image, any size of at least 17x17.
    path : path-like
        Destination; must end in ``.npy`` and its folder must exist.
    dtype : numpy dtype
        A floating dtype for the file: ``float32`` (default) or ``float16`` (half the size).
    tile_size : int
        Side of the square tiles the image is processed in (see :func:`cuts.embed`).
    device : str or torch.device, optional
        Where to compute; the model's device by default.
    rgb : bool, optional
        Whether the last axis is colour (guessed when ``None``).
    overwrite : bool
        If ``False``, an existing ``path`` raises :class:`FileExistsError`.
    callback : callable, optional
        ``callback(done, total, message)`` after every tile.
    cancel : CancelToken, optional
        A :class:`threading.Event` or callable; when it fires, :class:`cuts.Cancelled` is
        raised before the next tile and no file is written.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.npy`` or ``dtype`` is not a floating dtype.
    FileNotFoundError
        If the folder of ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a folder.
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    cuts.ImageError
        If the image is unusable or its channel count differs from the model's.
    cuts.Cancelled
        If ``cancel`` fired.
    """
    final = Path(path)
    if final.suffix.lower() != ".npy":
        raise ValueError(f"embed_to_file writes .npy files; {str(final)!r} does not end in .npy.")
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating dtype such as numpy.float32 or numpy.float16, got {dt}.")
    with _tiler(model, image, tile_size=tile_size, device=device, rgb=rgb, what="embed_to_file") as tiler:
        _, width, dim = tiler.shape
        header = {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False, "shape": tiler.shape}
        pixel_bytes = dim * dt.itemsize
        with atomic_path(final, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            start = f.tell()
            for y, x, tile in tiler.tiles(callback=callback, cancel=cancel):
                for r in range(tile.shape[0]):  # one image row of the tile: contiguous in the file
                    f.seek(start + ((y + r) * width + x) * pixel_bytes)
                    f.write(np.ascontiguousarray(tile[r], dtype=dt))
    return final
