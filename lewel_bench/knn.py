"""Weighted k-nearest-neighbour classifier on L2-normalised features (Wu et al. 2018; k=20, T=0.07).

Shared by the pretraining monitor and the kNN evaluation stage. Each of the k nearest training
features (cosine similarity) votes for its class with weight exp(sim / T); the prediction is the
class with the largest total vote.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_features(model: nn.Module | Callable, loader: Iterable, device: torch.device | str = "cpu",
                     channels_last: bool = False, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` (images -> (B, D) features) over ``loader`` of (images, labels); on CPU, L2-normalised
    unless ``normalize=False``."""
    feats, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f = model(x)
        f = f.float().flatten(1)
        feats.append((F.normalize(f, dim=1) if normalize else f).cpu())
        labels.append(torch.as_tensor(y).cpu())
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                num_classes: int, k: int = 20, t: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Predicted class of every test feature (all features already L2-normalised)."""
    k = min(k, train_feats.shape[0])
    preds = []
    for i in range(0, test_feats.shape[0], chunk):
        sim = test_feats[i:i + chunk] @ train_feats.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes, dtype=sim.dtype, device=sim.device)
        votes.scatter_add_(1, train_labels[top_idx], (top_sim / t).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_top1(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
             test_labels: torch.Tensor, num_classes: int | None = None, k: int = 20, t: float = 0.07) -> float:
    """Top-1 accuracy in percent."""
    n = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(train_feats, train_labels, test_feats, n, k=k, t=t)
    return 100.0 * (pred == test_labels).float().mean().item()
