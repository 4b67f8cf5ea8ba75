"""Reading images from files: PNG/JPEG/TIFF/BMP and NIfTI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: File name endings :func:`read_image` understands.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz")


@dataclass
class ImageFile:
    """An image read from disk.

    Attributes
    ----------
    data : ndarray
        ``(H, W)``, ``(H, W, C)`` or, for NIfTI volumes, ``(Z, H, W)``.
    spacing : tuple of float or None
        Pixel size per axis of ``data`` (NIfTI only, usually mm).
    affine : ndarray or None
        The NIfTI voxel-to-world affine (4x4) of the file, unchanged.
    meta : dict
        Other facts (``"format"``, NIfTI ``"axes"`` permutation, ...).
    """

    data: np.ndarray
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def is_nifti(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_nifti(path: str | os.PathLike) -> ImageFile:
    """Read a NIfTI file as ``(H, W)`` or ``(Z, H, W)`` with spacing and affine.

    Singleton axes are squeezed. On disk (nibabel's order) a volume is ``(X, Y, Z)``;
    it is returned as slices ``(Z, H, W) = (Z, Y, X)``, i.e. each slice is
    ``data[..., k].T``. ``spacing`` follows the returned axes and
    ``meta["axes"]`` records which on-disk axis each returned axis came from.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as NIfTI: {exc}") from None
    zooms = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    keep = [i for i, n in enumerate(data.shape) if n != 1]
    data = data.reshape([data.shape[i] for i in keep])
    zooms = tuple(zooms[i] for i in keep)
    if data.ndim == 2:  # (X, Y) -> rows = Y, cols = X
        order = (1, 0)
    elif data.ndim == 3:  # (X, Y, Z) -> (Z, Y, X)
        order = (2, 1, 0)
    else:
        raise ValueError(f"{path} has {data.ndim} non-singleton axes; CUTS reads 2-D and 3-D NIfTI.")
    data = np.transpose(data, order)
    spacing = tuple(zooms[i] for i in order)
    return ImageFile(
        np.ascontiguousarray(data), spacing, np.asarray(img.affine, dtype=float),
        {"format": "nifti", "axes": [keep[i] for i in order], "shape_on_disk": list(img.shape)},
    )


def read_image(path: str | os.PathLike) -> ImageFile:
    """Read one image file.

    Parameters
    ----------
    path : path-like
        PNG, JPEG, TIFF, BMP or NIfTI (``.nii``, ``.nii.gz``).

    Returns
    -------
    ImageFile
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}.")
    if is_nifti(path):
        return read_nifti(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        data = tifffile.imread(str(path))
        return ImageFile(np.squeeze(data), meta={"format": "tiff"})
    if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        from skimage import io as skio

        return ImageFile(np.asarray(skio.imread(str(path))), meta={"format": suffix[1:]})
    raise ValueError(
        f"{path.name}: unknown image type {suffix!r}; CUTS reads {', '.join(IMAGE_SUFFIXES)}."
    )


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (masks ``*_seg`` excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder.")
    files = [
        p for p in sorted(folder.iterdir())
        if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not stem(p).lower().endswith("_seg")
    ]
    return files
