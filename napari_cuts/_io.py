"""File I/O for napari: turns :mod:`cuts.io` results into layers, writes masks, npe2 hooks.

The file formats themselves live in the engine: :func:`cuts.io.read_nifti` and
:func:`cuts.io.write_nifti` (NIfTI, including the orientation convention),
:func:`cuts.io.read_image` (PNG/JPEG/TIFF/BMP) and :func:`cuts.atomic.atomic_path`
(atomic writes). This module only translates to napari.

Layout of NIfTI data in napari
------------------------------
:func:`cuts.io.read_nifti` returns a volume in the layout ``"k,-j,i"``: slices
first, rows = ``j`` reversed, columns = ``i`` (voxel ``(i, j, k)`` is
``data[k, H - 1 - j, i]``), so that for the usual RAS+-oriented scans anterior is
up and each axial slice is one ``(H, W)`` image; a single slice is a 2-D layer.
The voxel spacing goes into the layer's ``scale`` (in the file's spatial unit,
normally mm) and the affine, on-disk shape, zooms, unit and header codes are kept
in ``layer.metadata["nifti"]``; :func:`write_nifti` hands them back to
:func:`cuts.io.write_nifti`, which applies the inverse layout, so a mask exported
from a NIfTI image lines up voxel for voxel with its source in any NIfTI viewer.

Writing
-------
Every writer here goes through :func:`cuts.atomic.atomic_path` (a temporary file
in the destination folder, then :func:`os.replace`), so a crash never leaves a
half-written file, and refuses to replace an existing file unless
``overwrite=True`` (the widget asks the user first).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cuts import io as cio
from cuts.atomic import atomic_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)

#: Metadata key under which the reader keeps NIfTI geometry.
NIFTI_KEY = "nifti"

#: Facts from :attr:`cuts.io.ImageFile.meta` kept in ``layer.metadata["nifti"]``.
_NIFTI_META_KEYS = ("affine", "shape", "shape_on_disk", "zooms", "unit", "sform_code", "qform_code", "layout")


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


def _abspath(path: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(path))


def _as_label_array(data: Any) -> np.ndarray:
    try:
        return cio.as_mask_array(data)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


# ----------------------------------------------------------------------------- NIfTI


def is_nifti_path(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and cio.is_nifti(os.fspath(path))


def layer_from_image_file(image: cio.ImageFile, path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """``(data, layer_kwargs)`` for napari from an :class:`cuts.io.ImageFile`.

    ``layer_kwargs`` has ``name``; for NIfTI also ``scale`` (the spacing, slices
    first) and ``metadata["nifti"]`` (geometry for :func:`write_nifti`).
    """
    kwargs: dict[str, Any] = {"name": cio.stem(path)}
    if image.meta.get("format") == "nifti":
        info = {k: image.meta[k] for k in _NIFTI_META_KEYS if k in image.meta}
        info["source"] = os.fspath(path)
        kwargs["scale"] = list(image.spacing or (1.0,) * image.data.ndim)
        kwargs["metadata"] = {NIFTI_KEY: info}
    return image.data, kwargs


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a NIfTI file with :func:`cuts.io.read_nifti`; return ``(data, layer_kwargs)``.

    ``layer_kwargs`` has ``name``, ``scale`` (voxel spacing, slices first) and
    ``metadata`` with the affine and header facts under ``metadata["nifti"]``.
    """
    return layer_from_image_file(cio.read_nifti(path), path)


def nifti_geometry(metadata: dict | None, scale: Sequence[float] | None, ndim: int) -> dict[str, Any]:
    """Keyword arguments for :func:`cuts.io.write_nifti` for a mask of ``ndim`` layer dimensions.

    Uses the source's geometry from ``metadata["nifti"]`` when present (affine,
    on-disk shape, zooms, unit, header codes); otherwise a diagonal affine from
    the layer ``scale`` (spacing in mm).
    """
    info = (metadata or {}).get(NIFTI_KEY)
    if info and "affine" in info:
        geometry: dict[str, Any] = {"affine": np.asarray(info["affine"], dtype=float)}
        for key in ("shape", "zooms", "unit", "sform_code", "qform_code"):
            if info.get(key) is not None:
                geometry[key] = info[key]
        return geometry
    spacing = [float(s) for s in list(scale)[-ndim:]] if scale is not None else None
    return {"spacing": spacing}


def write_nifti(
    path: str | os.PathLike,
    data: Any,
    *,
    metadata: dict | None = None,
    scale: Sequence[float] | None = None,
    overwrite: bool = False,
) -> str:
    """Write a mask or label image as NIfTI (``.nii`` or ``.nii.gz``) with :func:`cuts.io.write_nifti`.

    The source's affine (from ``metadata["nifti"]``, as set by the reader) is
    written unchanged, so the mask aligns with its source image.
    """
    arr = _as_label_array(data)
    if arr.ndim not in (2, 3):
        raise ExportError(f"NIfTI export takes a 2-D or (Z, H, W) mask, got shape {arr.shape}.")
    try:
        cio.write_nifti(path, arr, overwrite=overwrite, **nifti_geometry(metadata, scale, arr.ndim))
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    return _abspath(path)


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
    with atomic_path(path, overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG")
    return _abspath(path)


def write_tiff(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> str:
    """Write a 2-D mask or a ``(Z, H, W)`` stack as TIFF (uint8 for masks), atomically.

    Plain multi-page greyscale TIFF: no colour, ImageJ hyperstack or singleton axes.
    """
    import tifffile

    arr = _as_label_array(data)
    if arr.ndim not in (2, 3):
        raise ExportError(f"TIFF export takes a 2-D or (Z, H, W) mask, got shape {arr.shape}.")
    with atomic_path(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, arr, photometric="minisblack", metadata=None)
    return _abspath(path)


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


def _lengths_mm(metadata: dict | None, scale: Sequence[float], units: Any, n: int) -> list[float] | None:
    """Length in mm of one step along each of the last ``n`` axes, from NIfTI or napari units."""
    steps = [float(v) for v in scale[-n:]]
    info = (metadata or {}).get(NIFTI_KEY)
    if info:
        factor = cio.NIFTI_UNIT_TO_MM.get(info.get("unit", "mm"), 1.0)
        return [v * factor for v in steps]
    if units is not None:
        try:
            import pint  # noqa: F401

            axes = list(units)[-n:]
            if len(axes) == n and all(str(u) not in ("pixel", "") for u in axes):
                return [v * float((1 * u).to("mm").magnitude) for v, u in zip(steps, axes)]
        except Exception:  # units that are not lengths
            pass
    return None


def physical_pixel_area(metadata: dict | None, scale: Sequence[float] | None, units: Any = None) -> float | None:
    """Area of one pixel in mm², or ``None`` when the layer has no physical scale.

    A layer has a physical scale if it came from NIfTI (spacing in the file's
    unit, converted to mm), if napari ``units`` are lengths, or if the user set
    a ``scale`` other than 1 (taken to be in mm).
    """
    if scale is None or len(scale) < 2:
        return None
    lengths = _lengths_mm(metadata, scale, units, 2)
    if lengths is not None:
        return lengths[0] * lengths[1]
    sy, sx = float(scale[-2]), float(scale[-1])
    if sy == 1.0 and sx == 1.0:
        return None
    return sy * sx


def physical_voxel_volume(metadata: dict | None, scale: Sequence[float] | None, units: Any = None) -> float | None:
    """Volume of one voxel of a ``(Z, H, W)`` stack in mm³, or ``None`` when that is not known.

    Only for a real volume: a NIfTI scan (its slice spacing is physical) or a
    layer whose napari ``units`` are lengths on all three axes. A stack with a
    bare ``scale`` may be a series of unrelated slices, so it gets no volume.
    """
    if scale is None or len(scale) < 3:
        return None
    lengths = _lengths_mm(metadata, scale, units, 3)
    return None if lengths is None else lengths[0] * lengths[1] * lengths[2]


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
    """Read any image the launcher may be given with :func:`cuts.io.read_image`; return ``(data, layer_kwargs)``."""
    return layer_from_image_file(cio.read_image(path), path)
