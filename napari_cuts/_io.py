"""File I/O without Qt: NIfTI reading, atomic writing, mask export and npe2 hooks.

Layout of NIfTI data in napari
------------------------------
A NIfTI volume is stored in voxel-index order ``(i, j, k)`` with a 4x4 affine
that maps voxel indices to world millimetres. napari (and CUTS) want slices
first: ``(Z, H, W)``. The reader therefore shows a volume ``vol`` as::

    layer = vol.transpose(2, 1, 0)[:, ::-1, :]     # (k, j reversed, i)

so that, for the usual RAS+-oriented scans, anterior is up and each axial slice
is one ``(H, W)`` image. A single slice (``k`` of length 1) is squeezed to a 2-D
``(H, W)`` layer. The voxel spacing goes into the layer's ``scale`` (in the
file's spatial unit, normally mm) and the affine, shape and codes are kept in
``layer.metadata["nifti"]``; :func:`write_nifti` applies the inverse of the
layout above, so a mask exported from a NIfTI image lines up voxel for voxel
with its source in any NIfTI viewer.

Writing
-------
Every writer here writes to a temporary file in the destination folder and then
moves it into place with :func:`os.replace`, so a crash never leaves a
half-written file, and refuses to replace an existing file unless
``overwrite=True`` (the widget asks the user first).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)

#: Metadata key under which the reader keeps NIfTI geometry.
NIFTI_KEY = "nifti"

_UNIT_TO_MM = {"mm": 1.0, "micron": 1e-3, "meter": 1e3}


class ExportError(ValueError):
    """A mask cannot be written in the asked format (message says why and what to do)."""


# ----------------------------------------------------------------------------- helpers


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """Return ``(stem_path, suffix)`` with double suffixes like ``.nii.gz`` kept whole."""
    p = str(path)
    low = p.lower()
    for suf in NIFTI_SUFFIXES + TIFF_SUFFIXES + PNG_SUFFIXES:
        if low.endswith(suf):
            return p[: -len(suf)], p[-len(suf) :]
    root, ext = os.path.splitext(p)
    return root, ext


def format_from_path(path: str | os.PathLike) -> str:
    """``"png"``, ``"tiff"`` or ``"nifti"`` from a file name; raises :class:`ExportError` otherwise."""
    suffix = split_suffix(path)[1].lower()
    if suffix in PNG_SUFFIXES:
        return "png"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    raise ExportError(
        f"cannot tell the format of {os.fspath(path)!r} from its extension; "
        "use .png (2-D), .tif/.tiff, .nii or .nii.gz."
    )


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[str], Any],
    *,
    overwrite: bool = False,
) -> str:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then move it into place.

    The temporary file keeps ``path``'s suffix (writers such as nibabel pick the
    format from it). Raises :class:`FileExistsError` if ``path`` exists and
    ``overwrite`` is false; the temporary file is removed on any error.
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a folder; give a file name.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} already exists; not overwriting it without permission.")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the folder {folder!r} does not exist.")
    stem, suffix = split_suffix(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _as_label_array(data: Any) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise ExportError(f"a mask must hold whole numbers, got dtype {arr.dtype}.")
    if arr.size and arr.min() >= 0 and arr.max() <= 255:
        return arr.astype(np.uint8, copy=False)
    return arr


# ----------------------------------------------------------------------------- NIfTI


def is_nifti_path(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(NIFTI_SUFFIXES)


def _layer_from_volume(vol: np.ndarray) -> np.ndarray:
    """``(X, Y, Z, ...)`` voxel order -> ``(..., Z, H, W)`` layer order (see module docs)."""
    # spatial axes to the back, in (k, j, i) order
    order = list(range(3, vol.ndim)) + [2, 1, 0]
    out = np.transpose(vol, order)[..., ::-1, :]
    if out.shape[-3] == 1:
        out = out[..., 0, :, :]
    return np.ascontiguousarray(out)


def _volume_from_layer(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_layer_from_volume` for 2-D ``(H, W)`` and 3-D ``(Z, H, W)`` arrays."""
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ExportError(f"NIfTI export takes a 2-D or (Z, H, W) mask, got shape {arr.shape}.")
    return np.ascontiguousarray(np.transpose(arr[:, ::-1, :], (2, 1, 0)))


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a NIfTI file; return ``(data, layer_kwargs)`` in napari layout.

    ``layer_kwargs`` has ``name``, ``scale`` (voxel spacing, slices first) and
    ``metadata`` with the affine under ``metadata["nifti"]``.
    """
    import nibabel as nib

    img = nib.load(os.fspath(path))
    vol = np.asanyarray(img.dataobj)
    if vol.ndim < 2:
        raise ValueError(f"{os.fspath(path)!r} holds a {vol.ndim}-D array, not an image.")
    # drop trailing singleton (time/component) axes, pad to three spatial axes
    while vol.ndim > 3 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    while vol.ndim < 3:
        vol = vol[..., None]
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    zooms = [z if z > 0 else 1.0 for z in zooms]
    space_unit = img.header.get_xyzt_units()[0]
    data = _layer_from_volume(vol)
    spatial_scale = [zooms[2], zooms[1], zooms[0]]
    if data.ndim == vol.ndim - 1:  # slice axis squeezed
        spatial_scale = spatial_scale[1:]
    n_extra = data.ndim - len(spatial_scale)
    scale = [1.0] * n_extra + spatial_scale
    sform_code = int(img.header["sform_code"]) if "sform_code" in img.header else 0
    qform_code = int(img.header["qform_code"]) if "qform_code" in img.header else 0
    meta = {
        NIFTI_KEY: {
            "affine": np.asarray(img.affine, dtype=float).tolist(),
            "shape": [int(s) for s in vol.shape],
            "zooms": zooms,
            "unit": space_unit if space_unit in _UNIT_TO_MM else "mm",
            "sform_code": sform_code,
            "qform_code": qform_code,
            "layout": "k,-j,i",
            "source": os.fspath(path),
        }
    }
    name = os.path.basename(split_suffix(os.fspath(path))[0])
    return data, {"name": name, "scale": scale, "metadata": meta}


def nifti_geometry(metadata: dict | None, scale: Sequence[float] | None, ndim: int) -> tuple[np.ndarray, dict]:
    """Affine (and header codes) for writing a mask of ``ndim`` layer dimensions.

    Uses the source's affine from ``metadata["nifti"]`` when present; otherwise a
    diagonal affine from the layer ``scale`` (spacing in mm).
    """
    info = (metadata or {}).get(NIFTI_KEY)
    if info and "affine" in info:
        return np.asarray(info["affine"], dtype=float), info
    sc = list(scale) if scale is not None else [1.0] * ndim
    sc = [float(s) for s in sc[-ndim:]]
    if ndim == 2:
        dz, dy, dx = 1.0, sc[0], sc[1]
    else:
        dz, dy, dx = sc[-3], sc[-2], sc[-1]
    return np.diag([dx, dy, dz, 1.0]), {}


def write_nifti(
    path: str | os.PathLike,
    data: Any,
    *,
    metadata: dict | None = None,
    scale: Sequence[float] | None = None,
    overwrite: bool = False,
) -> str:
    """Write a mask or label image as NIfTI (``.nii`` or ``.nii.gz``), atomically.

    The source's affine (from ``metadata["nifti"]``, as set by the reader) is
    written unchanged, so the mask aligns with its source image.
    """
    import nibabel as nib

    arr = _as_label_array(data)
    vol = _volume_from_layer(arr)
    affine, info = nifti_geometry(metadata, scale, np.asarray(data).ndim)
    shape = info.get("shape")
    if shape is not None and tuple(shape[:3]) != vol.shape:
        raise ExportError(
            f"the mask has shape {vol.shape} in voxel order but its source NIfTI image "
            f"had {tuple(shape[:3])}; export from a mask made on that image."
        )
    img = nib.Nifti1Image(vol, affine)
    img.header.set_data_dtype(vol.dtype)
    unit = info.get("unit", "mm")
    img.header.set_xyzt_units(xyz=unit if unit in _UNIT_TO_MM else "mm")
    sform_code = int(info.get("sform_code", 2) or 0)
    qform_code = int(info.get("qform_code", 0) or 0)
    if sform_code or not qform_code:
        img.set_sform(affine, code=sform_code or 2)
    if qform_code:
        img.set_qform(affine, code=qform_code)
    return atomic_write(path, lambda tmp: nib.save(img, tmp), overwrite=overwrite)


# ----------------------------------------------------------------------------- PNG / TIFF


def write_png(path: str | os.PathLike, data: Any, *, overwrite: bool = False, binary_to_255: bool = True) -> str:
    """Write a 2-D mask as 8-bit PNG, atomically.

    A 0/1 mask is written as 0/255 (``binary_to_255``) so it is visible in any
    image viewer; label images with values above 255 are written as 16-bit.
    """
    from PIL import Image

    arr = _as_label_array(data)
    if arr.ndim != 2:
        raise ExportError(
            f"PNG holds one 2-D image, but the mask has shape {arr.shape}; "
            "export stacks as TIFF (.tif) or NIfTI (.nii.gz)."
        )
    if arr.dtype == np.uint8:
        if binary_to_255 and arr.max(initial=0) <= 1:
            arr = arr * np.uint8(255)
        img = Image.fromarray(arr, mode=None)
    elif arr.min() >= 0 and arr.max() <= 65535:
        img = Image.fromarray(arr.astype(np.uint16))
    else:
        raise ExportError("labels above 65535 do not fit in a PNG; use TIFF or NIfTI.")
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), overwrite=overwrite)


def write_tiff(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> str:
    """Write a 2-D mask or a ``(Z, H, W)`` stack as TIFF (uint8 for masks), atomically.

    Plain multi-page greyscale TIFF: no colour, ImageJ hyperstack or singleton axes.
    """
    import tifffile

    arr = _as_label_array(data)
    if arr.ndim not in (2, 3):
        raise ExportError(f"TIFF export takes a 2-D or (Z, H, W) mask, got shape {arr.shape}.")

    def _write(tmp: str) -> None:
        tifffile.imwrite(tmp, arr, photometric="minisblack", metadata=None)

    return atomic_write(path, _write, overwrite=overwrite)


def export_mask(
    path: str | os.PathLike,
    data: Any,
    *,
    metadata: dict | None = None,
    scale: Sequence[float] | None = None,
    overwrite: bool = False,
) -> str:
    """Write ``data`` in the format given by ``path``'s extension (PNG, TIFF or NIfTI)."""
    fmt = format_from_path(path)
    if fmt == "png":
        return write_png(path, data, overwrite=overwrite)
    if fmt == "tiff":
        return write_tiff(path, data, overwrite=overwrite)
    return write_nifti(path, data, metadata=metadata, scale=scale, overwrite=overwrite)


def physical_pixel_area(metadata: dict | None, scale: Sequence[float] | None, units: Any = None) -> float | None:
    """Area of one pixel in mm², or ``None`` when the layer has no physical scale.

    A layer has a physical scale if it came from NIfTI (spacing in the file's
    unit, converted to mm), if napari ``units`` are lengths, or if the user set
    a ``scale`` other than 1 (taken to be in mm).
    """
    if scale is None or len(scale) < 2:
        return None
    sy, sx = float(scale[-2]), float(scale[-1])
    info = (metadata or {}).get(NIFTI_KEY)
    if info:
        factor = _UNIT_TO_MM.get(info.get("unit", "mm"), 1.0)
        return sy * sx * factor * factor
    if units is not None:
        try:
            import pint  # noqa: F401

            uy, ux = units[-2], units[-1]
            if str(uy) not in ("pixel", "") and str(ux) not in ("pixel", ""):
                fy = float((1 * uy).to("mm").magnitude)
                fx = float((1 * ux).to("mm").magnitude)
                return sy * sx * fy * fx
        except Exception:  # units that are not lengths: fall back to the scale rule
            pass
    if sy == 1.0 and sx == 1.0:
        return None
    return sy * sx


# ----------------------------------------------------------------------------- npe2 hooks


def napari_get_reader(path: Any):
    """npe2 reader: NIfTI files (``.nii``, ``.nii.gz``)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(is_nifti_path(p) for p in paths):
        return None
    return read_nifti_layers


def read_nifti_layers(path: Any) -> list[tuple]:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for p in paths:
        data, kwargs = read_nifti(p)
        layers.append((data, kwargs, "image"))
    return layers


def _writer_meta(attributes: dict) -> tuple[dict | None, Any]:
    return attributes.get("metadata"), attributes.get("scale")


def write_labels_png(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 writer: a 2-D Labels layer (e.g. ``CUTS mask``) as PNG."""
    return [write_png(path, data, overwrite=True)]


def write_labels_tiff(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 writer: a 2-D or stacked Labels layer as TIFF."""
    return [write_tiff(path, data, overwrite=True)]


def write_labels_nifti(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 writer: a Labels layer as NIfTI with its source's affine."""
    meta, scale = _writer_meta(attributes)
    return [write_nifti(path, data, metadata=meta, scale=scale, overwrite=True)]


def read_image_file(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read any image the launcher may be given: NIfTI via :func:`read_nifti`, else PNG/JPEG/TIFF."""
    if is_nifti_path(path):
        return read_nifti(path)
    suffix = split_suffix(path)[1].lower()
    name = Path(split_suffix(path)[0]).name
    if suffix in TIFF_SUFFIXES:
        import tifffile

        return tifffile.imread(os.fspath(path)), {"name": name}
    from PIL import Image

    with Image.open(os.fspath(path)) as im:
        return np.asarray(im), {"name": name}
