"""CUTS: label-free, multi-granular segmentation of medical images.

The engine behind napari-cuts. It never imports Qt.

Stage 1 learns a 128-d embedding per pixel with a small convolutional encoder
(:func:`train`, :func:`embed`, :func:`embed_to_file`); stage 2 coarse-grains those
embeddings into a hierarchy of segmentations by diffusion condensation (:func:`condense`).

Heavy modules (torch) are imported lazily: ``import cuts`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # input handling
    "as_image_list": "cuts.images",
    "scale_intensity": "cuts.images",
    "ImageError": "cuts.images",
    "RECEPTIVE_FIELD": "cuts.images",
    # model, training, checkpoints, embedding
    "Encoder": "cuts.model",
    "ReconstructionHead": "cuts.model",
    "CutsModel": "cuts.model",
    "train": "cuts.training",
    "iter_train": "cuts.training",
    "TrainConfig": "cuts.training",
    "TrainProgress": "cuts.training",
    "Cancelled": "cuts.cancel",
    "resolve_device": "cuts.device",
    "save_model": "cuts.checkpoint",
    "load_model": "cuts.checkpoint",
    "load_default_model": "cuts.checkpoint",
    "CheckpointError": "cuts.checkpoint",
    "embed": "cuts.embedding",
    "embed_to_file": "cuts.embedding",
    # positives and losses
    "mine_positives": "cuts.mining",
    "patch_ssim": "cuts.mining",
    "nt_xent_loss": "cuts.losses",
    "reconstruction_loss": "cuts.losses",
    # single-level segmentation and evaluation helpers
    "kmeans": "cuts.clustering",
    "spectral_kmeans": "cuts.clustering",
    "binarize_by_hint": "cuts.masks",
    # stage 2
    "condense": "cuts.hierarchy",
    "condense_stack": "cuts.hierarchy",
    "Hierarchy": "cuts.hierarchy",
    # file I/O
    "read_image": "cuts.io",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cuts' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from cuts.cancel import Cancelled
    from cuts.checkpoint import CheckpointError, load_default_model, load_model, save_model
    from cuts.clustering import kmeans, spectral_kmeans
    from cuts.device import resolve_device
    from cuts.embedding import embed, embed_to_file
    from cuts.hierarchy import Hierarchy, condense, condense_stack
    from cuts.images import RECEPTIVE_FIELD, ImageError, as_image_list, scale_intensity
    from cuts.io import read_image
    from cuts.losses import nt_xent_loss, reconstruction_loss
    from cuts.masks import binarize_by_hint
    from cuts.mining import mine_positives, patch_ssim
    from cuts.model import CutsModel, Encoder, ReconstructionHead
    from cuts.training import TrainConfig, TrainProgress, iter_train, train
