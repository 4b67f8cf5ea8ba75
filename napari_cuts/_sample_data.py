"""Sample data for File > Open Sample > CUTS (nothing is downloaded; see data/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
FUNDUS_GA = DATA_DIR / "fundus_0009.png"
FUNDUS_GA_MASK = DATA_DIR / "fundus_0009_mask.png"
BRAIN_SLICE = DATA_DIR / "brain_epi_slice.nii.gz"


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)


def load_fundus_ga() -> np.ndarray:
    """The 128x128 RGB fundus photograph with geographic atrophy (as an array)."""
    return _read_png(FUNDUS_GA)


def load_fundus_ga_mask() -> np.ndarray:
    """Its expert mask as uint8 0/1."""
    return (_read_png(FUNDUS_GA_MASK) > 0).astype(np.uint8)


def fundus_ga() -> list[tuple]:
    """npe2 sample: fundus with GA (the expert mask comes as a hidden Labels layer)."""
    return [
        (load_fundus_ga(), {"name": "fundus GA", "rgb": True}, "image"),
        (
            load_fundus_ga_mask(),
            {"name": "fundus GA expert mask", "visible": False, "opacity": 0.5},
            "labels",
        ),
    ]


def retina_path() -> Path:
    """Location of scikit-image's bundled ``retina.jpg`` (raises if it is not bundled)."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / "retina.jpg"
    if not path.exists():
        raise FileNotFoundError(
            "scikit-image's retina.jpg is not bundled with this installation, and "
            "napari-cuts never downloads data; use the 'Fundus with GA' sample instead."
        )
    return path


def retina_large() -> list[tuple]:
    """npe2 sample: scikit-image's 1411x1411 RGB fundus photograph (CC0)."""
    from PIL import Image

    with Image.open(retina_path()) as im:
        data = np.asarray(im.convert("RGB"))
    return [(data, {"name": "retina (large)", "rgb": True}, "image")]


def brain_mri_slice() -> list[tuple]:
    """npe2 sample: one axial EPI MRI slice with 2 mm spacing and its NIfTI affine."""
    from napari_cuts._io import read_nifti

    data, kwargs = read_nifti(BRAIN_SLICE)
    kwargs["name"] = "brain MRI slice"
    return [(data, kwargs, "image")]
