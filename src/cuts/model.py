"""The CUTS encoder and its patch-reconstruction head.

The encoder is the paper's: four 5x5 convolutions with 16, 32, 64 and 128
channels, each followed by batch normalisation and a leaky ReLU, no pooling.
Its receptive field is 17x17, so a pixel's embedding depends only on the 17x17
window around it.

One deliberate difference from the official code, which pads every layer
('same', replicate): here the *input* is padded once by 8 pixels (replicate) and
the four convolutions are 'valid'. Inside the image both are the same; at the
borders ours is a function of the replicated 17x17 window, which makes every
embedding computable from its own window alone. That is what lets training
compute only the few pixels the loss uses, and lets :func:`cuts.embed` work in
tiles whose result is identical to a single pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURE = "cuts-encoder-v1"
CHANNELS = (16, 32, 64, 128)
KERNEL_SIZE = 5
#: Pixels of context needed on each side of a pixel (half the receptive field).
HALO = len(CHANNELS) * (KERNEL_SIZE // 2)
#: Side of the patch the reconstruction head predicts.
PATCH_SIZE = 5


class Encoder(nn.Module):
    """Per-pixel embedding network.

    Parameters
    ----------
    in_channels : int
        1 (grey, MRI) or 3 (colour).
    channels : tuple of int
        Output channels of the four convolutions; the last is the embedding size.
    """

    def __init__(self, in_channels: int = 3, *, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        self.in_channels = in_channels
        self.channels = tuple(channels)
        layers: list[nn.Module] = []
        previous = in_channels
        for out in self.channels:
            layers += [
                nn.Conv2d(previous, out, KERNEL_SIZE, padding=0),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.01),
            ]
            previous = out
        self.layers = nn.Sequential(*layers)
        self.halo = len(self.channels) * (KERNEL_SIZE // 2)

    @property
    def embedding_dim(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed an input that already carries ``halo`` pixels of context on each side.

        ``(B, C, h + 2*halo, w + 2*halo)`` -> ``(B, 128, h, w)``.
        """
        return self.layers(x)

    def embed_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad ``(B, C, H, W)`` by ``halo`` and embed: ``(B, 128, H, W)``."""
        h = self.halo
        return self(F.pad(x, (h, h, h, h), mode="replicate"))


class ReconstructionHead(nn.Module):
    """Predicts the 5x5xC input patch around a pixel from its embedding."""

    def __init__(self, in_channels: int = 3, *, embedding_dim: int = CHANNELS[-1]) -> None:
        super().__init__()
        n = PATCH_SIZE * PATCH_SIZE * in_channels
        self.in_channels = in_channels
        self.net = nn.Sequential(nn.Linear(embedding_dim, n), nn.LeakyReLU(0.01), nn.Linear(n, n))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, 128)`` -> ``(N, C, 5, 5)``."""
        return self.net(z).view(z.shape[0], self.in_channels, PATCH_SIZE, PATCH_SIZE)


@dataclass
class CutsModel:
    """A trained (or untrained) encoder with its head and metadata.

    Attributes
    ----------
    encoder : Encoder
    head : ReconstructionHead
    metadata : dict
        JSON-serialisable facts: architecture, input channels, intensity scaling,
        training settings and results, package version. Saved with the weights.
    """

    encoder: Encoder
    head: ReconstructionHead
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, in_channels: int, *, seed: int | None = None) -> CutsModel:
        """A freshly initialised model (deterministic when ``seed`` is given)."""
        if seed is not None:
            torch.manual_seed(seed)
        from cuts import __version__
        from cuts.images import DEFAULT_PERCENTILES

        model = cls(Encoder(in_channels), ReconstructionHead(in_channels))
        model.metadata = {
            "architecture": ARCHITECTURE,
            "in_channels": in_channels,
            "channels": list(CHANNELS),
            "kernel_size": KERNEL_SIZE,
            "padding": "input replicate-padded by 8, valid convolutions",
            "scaling": {"method": "percentile", "percentiles": list(DEFAULT_PERCENTILES), "range": [-1, 1]},
            "cuts_version": __version__,
        }
        return model

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def percentiles(self) -> tuple[float, float]:
        lo, hi = self.metadata.get("scaling", {}).get("percentiles", (0.5, 99.5))
        return float(lo), float(hi)

    def to(self, device: str | torch.device) -> CutsModel:
        """Move to ``device`` in place and return ``self``."""
        self.encoder.to(device)
        self.head.to(device)
        return self

    def copy(self) -> CutsModel:
        """A deep copy (weights included) on the same device."""
        import copy

        return CutsModel(copy.deepcopy(self.encoder), copy.deepcopy(self.head), copy.deepcopy(self.metadata))
