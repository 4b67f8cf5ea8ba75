"""Saving and loading models: safetensors weights plus JSON metadata, one file.

The file is a standard ``.safetensors`` file: tensors are stored as raw data and
the metadata as a JSON string in its header under the key ``"cuts"``. Loading
never unpickles anything, so a foreign or malicious file cannot run code; it is
checked for the architecture, channel count and tensor shapes before use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from cuts.atomic import atomic_path
from cuts.model import ARCHITECTURE, CutsModel

#: Where the bundled default encoders live.
DEFAULT_MODEL_DIR = Path(__file__).parent / "data"
_META_KEY = "cuts"


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: the message says why and what to do."""


def save_model(model: CutsModel, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``model`` to ``path`` atomically (a temp file, then a rename).

    Parameters
    ----------
    model : CutsModel
    path : path-like
        Destination, conventionally ending in ``.safetensors``.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        The written path.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("encoder.", model.encoder), ("head.", model.head)):
        for name, value in module.state_dict().items():
            tensors[prefix + name] = value.detach().to("cpu").contiguous()
    meta = json.dumps(model.metadata, sort_keys=True, default=str)
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: meta})
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types, or OSError
        raise CheckpointError(
            f"{path} is not a readable CUTS checkpoint (not a safetensors file, or it is "
            f"truncated or corrupt: {exc}). Save models with cuts.save_model / 'cuts train'."
        ) from None
    if _META_KEY not in header:
        raise CheckpointError(
            f"{path} is a safetensors file but not a CUTS checkpoint (no '{_META_KEY}' metadata)."
        )
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} has corrupt CUTS metadata ({exc}).") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has corrupt CUTS metadata (not a JSON object).")
    return tensors, meta


def load_model(
    path: str | os.PathLike,
    *,
    in_channels: int | None = None,
    device: str | torch.device | None = "cpu",
) -> CutsModel:
    """Load a model saved by :func:`save_model`.

    Parameters
    ----------
    path : path-like
    in_channels : int, optional
        If given, the channel count the caller's images have; a mismatch raises
        :class:`CheckpointError` with a clear message.
    device : str or torch.device
        Where to put the weights (``"auto"`` allowed).

    Raises
    ------
    CheckpointError
        For missing, truncated, corrupt, foreign or wrong-architecture files.
    """
    from cuts.device import resolve_device

    path = Path(path)
    tensors, meta = _read(path)
    arch = meta.get("architecture")
    if arch != ARCHITECTURE:
        raise CheckpointError(
            f"{path} holds architecture {arch!r}, but this version of CUTS reads {ARCHITECTURE!r}."
        )
    channels = meta.get("in_channels")
    if type(channels) is not int or channels < 1:
        raise CheckpointError(f"{path} has an invalid 'in_channels' in its metadata: {channels!r}.")
    if in_channels is not None and in_channels != channels:
        kinds = {1: "grey (1-channel)", 3: "colour (3-channel)"}
        raise CheckpointError(
            f"{path} is an encoder for {kinds.get(channels, f'{channels}-channel')} images, but the image "
            f"is {kinds.get(in_channels, f'{in_channels}-channel')}; load or train an encoder for this kind of image."
        )
    model = CutsModel.create(channels)
    model.metadata = meta
    for prefix, module in (("encoder.", model.encoder), ("head.", model.head)):
        expected = module.state_dict()
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"{path} does not match the CUTS {prefix[:-1]} architecture "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]})."
            )
        module.load_state_dict(state)
    model.encoder.eval()
    model.head.eval()
    return model.to(resolve_device(device))


def default_model_path(in_channels: int) -> Path:
    """Path of the bundled default encoder for 1- or 3-channel images."""
    if in_channels not in (1, 3):
        raise CheckpointError(f"there is a bundled encoder for 1- and 3-channel images, not {in_channels}.")
    return DEFAULT_MODEL_DIR / f"default_encoder_{'grey' if in_channels == 1 else 'rgb'}.safetensors"


def load_default_model(in_channels: int = 3, *, device: str | torch.device | None = "cpu") -> CutsModel:
    """Load the encoder shipped with the package for grey (1) or colour (3) images.

    They were trained by ``python benchmarks/train_default_encoders.py`` on the
    sample images the package ships (see ``docs/training.md``).
    """
    path = default_model_path(in_channels)
    if not path.is_file():
        raise CheckpointError(f"the bundled encoder {path.name} is missing from the installation.")
    return load_model(path, device=device)
