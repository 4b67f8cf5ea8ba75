"""Train the encoders bundled with napari-cuts (src/cuts/data/default_encoder_*.safetensors).

They are trained only on sample images the package ships (see napari_cuts/data/README.md):

* colour: the 128x128 fundus photo with geographic atrophy, and the 1411x1411 fundus photo
  scikit-image ships, at three resolutions (1411, 512 and 256 px);
* grey: the brain MRI slice, and the grey (green-channel) versions of the fundus photos,
  so that grey images other than MRI get a usable first result too.

Run from the repository root:  python benchmarks/train_default_encoders.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import cuts
from cuts.checkpoint import default_model_path
from cuts.io import read_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "napari_cuts" / "data"


def colour_images() -> list[np.ndarray]:
    from skimage import data
    from skimage.transform import resize

    retina = data.retina()
    images = [read_image(SAMPLES / "fundus_0009.png").data[..., :3], retina]
    for size in (512, 256):
        images.append(resize(retina, (size, size), preserve_range=True, anti_aliasing=True).astype(np.uint8))
    return images


def grey_images() -> list[np.ndarray]:
    mri = read_image(SAMPLES / "brain_epi_slice.nii.gz").data
    return [mri, *[im[..., 1] for im in colour_images()]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    args = parser.parse_args()
    settings = {"steps": args.steps}
    for channels, images in ((3, colour_images()), (1, grey_images())):
        t0 = time.perf_counter()
        model = cuts.train(images, seed=0, device="cpu", **settings)
        model.metadata["trained_on"] = "napari-cuts bundled samples (benchmarks/train_default_encoders.py)"
        path = cuts.save_model(model, default_model_path(channels))
        print(f"{path.name}: {len(images)} images, {model.metadata['training']['steps_done']} steps, "
              f"{time.perf_counter() - t0:.1f} s, final loss {model.metadata['training']['final_loss']:.4f}")


if __name__ == "__main__":
    main()
