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
        ``(H, W)``, ``(H, W, C)`` or, for NIfTI volumes, ``(Z, H, W)`` (see :func:`read_nifti`).
    spacing : tuple of float or None
        Pixel size per axis of ``data`` (NIfTI only, in ``meta["unit"]``, usually mm).
    affine : ndarray or None
        The NIfTI voxel-to-world affine (4x4) of the file, unchanged.
    meta : dict
        Other facts: ``"format"`` always; for NIfTI also the geometry needed to
        write a mask that lines up with the file (see :func:`read_nifti`).
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


# ----------------------------------------------------------------------------- NIfTI

#: How NIfTI voxels ``(i, j, k)`` are laid out in the arrays CUTS works on:
#: slices (``k``) first, then rows = ``j`` reversed, then columns = ``i``.
NIFTI_LAYOUT = "k,-j,i"

#: NIfTI spatial units CUTS understands, with their size in millimetres.
NIFTI_UNIT_TO_MM = {"mm": 1.0, "micron": 1e-3, "meter": 1e3}


def nifti_to_layout(vol: np.ndarray) -> np.ndarray:
    """On-disk voxel order ``(X, Y, Z)`` -> ``(Z, H, W)``, or ``(H, W)`` when ``Z == 1``.

    ``layout[k, H - 1 - j, i] == vol[i, j, k]`` (:data:`NIFTI_LAYOUT`), so that for the
    usual RAS+-oriented scans anterior is up and each axial slice is one image.
    """
    vol = np.asarray(vol)
    if vol.ndim != 3:
        raise ValueError(f"expected a 3-D (X, Y, Z) voxel array, got shape {vol.shape}.")
    out = np.transpose(vol, (2, 1, 0))[:, ::-1, :]
    if out.shape[0] == 1:
        out = out[0]
    return np.ascontiguousarray(out)


def layout_to_nifti(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nifti_to_layout`: ``(H, W)`` or ``(Z, H, W)`` -> ``(X, Y, Z)``."""
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"a NIfTI mask must be (H, W) or (Z, H, W), got shape {arr.shape}.")
    return np.ascontiguousarray(np.transpose(arr[:, ::-1, :], (2, 1, 0)))


def read_nifti(path: str | os.PathLike) -> ImageFile:
    """Read a 2-D or 3-D NIfTI file as ``(H, W)`` or ``(Z, H, W)`` with spacing and affine.

    On disk (nibabel's order) a volume is ``(X, Y, Z)`` = voxel ``(i, j, k)``; it is
    returned in the :data:`NIFTI_LAYOUT` ``"k,-j,i"``: voxel ``(i, j, k)`` is
    ``data[k, H - 1 - j, i]`` (a file with one slice, ``k`` of length 1, gives
    ``data[H - 1 - j, i]``). Trailing singleton axes (time, components) are dropped;
    more than three non-singleton axes are refused.

    ``spacing`` follows the returned axes, e.g. ``(dz, dy, dx)``. ``meta`` holds what
    :func:`write_nifti` needs to write a mask that lines up voxel for voxel:
    ``"format"`` (``"nifti"``), ``"layout"``, ``"affine"`` (4x4 nested list),
    ``"shape"`` (the three spatial on-disk sizes), ``"shape_on_disk"`` (the file's
    full shape), ``"zooms"`` (voxel size along ``i, j, k``), ``"unit"`` (a key of
    :data:`NIFTI_UNIT_TO_MM`), ``"sform_code"`` and ``"qform_code"``.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        vol = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ValueError(f"cannot read {path} as NIfTI: {exc}") from None
    shape_on_disk = [int(n) for n in img.shape]
    while vol.ndim > 3 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim > 3 or vol.ndim < 2:
        kept = sum(n != 1 for n in vol.shape)
        raise ValueError(
            f"{path} has shape {tuple(shape_on_disk)} ({kept} non-singleton axes); "
            "CUTS reads 2-D and 3-D NIfTI."
        )
    if vol.ndim == 2:
        vol = vol[..., None]
    header = img.header
    zooms = [float(z) for z in header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    zooms = [z if z > 0 else 1.0 for z in zooms]
    unit = header.get_xyzt_units()[0]
    data = nifti_to_layout(vol)
    spacing = (zooms[2], zooms[1], zooms[0])[3 - data.ndim:]
    affine = np.asarray(img.affine, dtype=float)
    meta = {
        "format": "nifti",
        "layout": NIFTI_LAYOUT,
        "affine": affine.tolist(),
        "shape": [int(n) for n in vol.shape],
        "shape_on_disk": shape_on_disk,
        "zooms": zooms,
        "unit": unit if unit in NIFTI_UNIT_TO_MM else "mm",
        "sform_code": int(header["sform_code"]) if "sform_code" in header else 0,
        "qform_code": int(header["qform_code"]) if "qform_code" in header else 0,
    }
    return ImageFile(data, tuple(spacing), affine, meta)


def as_mask_array(data: Any) -> np.ndarray:
    """A mask or label image as whole numbers: ``uint8`` when the values fit, else ``uint16``/``int32``.

    Raises :class:`ValueError` for fractional or out-of-range values.
    """
    arr = np.asarray(data)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"a mask must hold whole numbers, got dtype {arr.dtype} with fractions.")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"a mask must hold whole numbers, got dtype {arr.dtype}.")
    lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return arr.astype(dtype, copy=False)
    raise ValueError(f"mask values {lo}..{hi} do not fit in 32-bit labels.")


def write_nifti(
    path: str | os.PathLike,
    mask: Any,
    *,
    affine: Any = None,
    spacing: Any = None,
    zooms: Any = None,
    shape: Any = None,
    unit: str = "mm",
    sform_code: int | None = None,
    qform_code: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a mask in :func:`read_nifti`'s layout as NIfTI (``.nii`` or ``.nii.gz``), atomically.

    ``mask`` is ``(H, W)`` or ``(Z, H, W)`` exactly as :func:`read_nifti` returned
    its source, so ``mask[k, H - 1 - j, i]`` is written to voxel ``(i, j, k)`` and
    the file lines up voxel for voxel with the source. A 0/1 mask is stored as
    ``uint8`` (label images with larger values as ``uint16``/``int32``).

    Parameters
    ----------
    path : path-like
        Destination; written through :func:`cuts.atomic.atomic_path`.
    mask : array-like
        Whole-number mask or labels.
    affine : array-like (4, 4), optional
        Voxel-to-world affine, normally the source's (``ImageFile.affine``). Without
        it a diagonal affine is built from ``spacing``.
    spacing : sequence of float, optional
        Pixel size per axis of ``mask`` (like ``ImageFile.spacing``); only used when
        ``affine`` is None (default 1).
    zooms : sequence of float, optional
        Voxel size along ``i, j, k`` for the header (``meta["zooms"]``); by default
        nibabel's, taken from the affine.
    shape : sequence of int, optional
        The source's spatial on-disk shape (``meta["shape"]``); a mask that does
        not match it is refused with :class:`ValueError`.
    unit : str
        Spatial unit for the header (``meta["unit"]``).
    sform_code, qform_code : int, optional
        Header codes (``meta["sform_code"]``, ``meta["qform_code"]``). By default
        the sform is written with code 2 (aligned) and no qform.
    overwrite : bool
        Replace an existing file (else :class:`FileExistsError`).

    Returns
    -------
    Path
        ``path``.
    """
    import nibabel as nib

    from cuts.atomic import atomic_path

    arr = as_mask_array(mask)
    vol = layout_to_nifti(arr)
    if shape is not None and tuple(int(n) for n in shape)[:3] != vol.shape:
        raise ValueError(
            f"the mask has shape {vol.shape} in voxel order but its source NIfTI image "
            f"had {tuple(shape)[:3]}; write a mask made on that image."
        )
    if affine is None:
        sp = [1.0] * arr.ndim if spacing is None else [float(s) for s in spacing]
        if len(sp) != arr.ndim:
            raise ValueError(f"spacing {tuple(sp)} does not match a mask of shape {arr.shape}.")
        dz, dy, dx = ([1.0] + sp) if arr.ndim == 2 else sp
        affine = np.diag([dx, dy, dz, 1.0])
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError(f"the affine must be 4x4, got shape {affine.shape}.")
    img = nib.Nifti1Image(vol, affine)
    img.header.set_data_dtype(vol.dtype)
    img.header.set_xyzt_units(xyz=unit if unit in NIFTI_UNIT_TO_MM else "mm")
    scode = int(sform_code or 0)
    qcode = int(qform_code or 0)
    if sform_code is None and qform_code is None:
        scode = 2
    if scode or not qcode:
        img.set_sform(affine, code=scode or 2)
    else:
        img.set_sform(None, code=0)
    img.set_qform(affine if qcode else None, code=qcode)
    if zooms is not None:
        img.header.set_zooms([float(z) for z in list(zooms)[:3]])
    final = Path(path)
    with atomic_path(final, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return final


# ----------------------------------------------------------------------------- any image


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
