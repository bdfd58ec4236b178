"""Losses of the pretraining methods (LEWEL Sec. 3.3).

* :func:`info_nce` / :func:`info_nce_in_batch`: Eq. (4), InfoNCE with cosine similarity and temperature
  tau; negatives from a FIFO queue (global loss L_g of MoCo v2 / LEWEL_M) or from the other images of the
  mini-batch at the same aligned index k (aligned loss L_a of LEWEL_M).
* :func:`normalized_mse`: Eq. (5), 2 - 2 cos(q(z'), sg(z'')) of BYOL / LEWEL_B.
* :func:`lewel_total`: Eq. (3), L = (1 - beta) L_g + beta L_a.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. (4) with queue negatives: q, k (N, c) (k = positive, no grad), queue (K, c); mean over N."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ F.normalize(queue, dim=1).t()
    logits = torch.cat([l_pos, l_neg], 1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def info_nce_in_batch(q: torch.Tensor, k: torch.Tensor, tau: float, offset: int = 0) -> torch.Tensor:
    """Eq. (4) for the aligned embeddings with in-batch negatives (LEWEL_M's L_a).

    q (B, K, c): online aligned embeddings; k (N, K, c): target ones of the whole (global) batch, N >= B;
    the positive of q[i, j] is k[offset + i, j], its negatives are k[n, j] for the other images n at the
    SAME aligned index j. Averaged over B * K, i.e. L_a = (h/d) sum_k mean_i l(z'_k, z''_k).
    """
    q, k = F.normalize(q, dim=2), F.normalize(k, dim=2)
    logits = torch.bmm(q.transpose(0, 1), k.transpose(0, 1).transpose(1, 2)) / tau  # (K, B, N)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    K = logits.shape[0]
    return F.cross_entropy(logits.reshape(K * q.shape[0], -1), labels.repeat(K))


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Eq. (5): mean over rows of 2 - 2 cos(p, sg(z)); p, z (N, c) or (B, K, c) (channels last)."""
    return (2 - 2 * (F.normalize(p, dim=-1) * F.normalize(z.detach(), dim=-1)).sum(-1)).mean()


def lewel_total(loss_g: torch.Tensor, loss_a: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. (3): L = (1 - beta) L_g + beta L_a (beta = 0.5 throughout the paper)."""
    return (1 - beta) * loss_g + beta * loss_a
