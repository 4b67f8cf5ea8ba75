"""Choosing the torch device: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device to use.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "mps"} or torch.device, optional
        ``"auto"`` (or ``None``) picks CUDA if available, then Apple MPS, then CPU.

    Raises
    ------
    ValueError
        If an explicit device is not available on this machine.
    """
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available here; use 'auto' or 'cpu'.")
    if base == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' was asked for but Apple MPS is not available here; use 'auto' or 'cpu'.")
    return torch.device(name)
