"""The two training objectives of CUTS (paper section 3.1).

* :func:`nt_xent_loss`: the contrastive loss as the official code computes it,
  SimCLR's NT-Xent *within each image*: every anchor must pick its positive out of
  the other anchors and positives of the same image, at a temperature ``tau``.
* :func:`reconstruction_loss`: mean squared error of the predicted 5x5 patch.

They are combined as ``lam * contrastive + (1 - lam) * reconstruction``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def nt_xent_loss(anchors: torch.Tensor, positives: torch.Tensor, *, temperature: float = 0.1) -> torch.Tensor:
    """Intra-image NT-Xent.

    Parameters
    ----------
    anchors, positives : Tensor
        ``(B, n, D)`` embeddings of ``n`` anchors and their positives in each of ``B`` images.
    temperature : float
        Softmax temperature applied to cosine similarities.

    Returns
    -------
    Tensor
        Scalar mean loss over the ``2 * n * B`` views.
    """
    if anchors.shape != positives.shape or anchors.ndim != 3:
        raise ValueError(f"expected two (B, n, D) tensors, got {tuple(anchors.shape)} and {tuple(positives.shape)}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    b, n, _ = anchors.shape
    z = F.normalize(torch.cat([anchors, positives], dim=1), dim=-1)  # (B, 2n, D)
    sim = torch.bmm(z, z.transpose(1, 2)) / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim.reshape(b * 2 * n, 2 * n), target.repeat(b))


def reconstruction_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and true patches."""
    if predicted.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(predicted.shape)} vs {tuple(target.shape)}.")
    return F.mse_loss(predicted, target)
