"""Training, evaluation and feature-extraction loops (counts all-reduced over ranks)."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..dist import get_world_size, is_dist
from ..knn import extract_features
from ..utils import amp_autocast, amp_step

log = logging.getLogger(__name__)


def topk_correct(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the k highest logits, for each k (k capped at #classes)."""
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices  # (B, maxk)
    hit = pred.eq(target[:, None])
    return torch.stack([hit[:, : min(k, maxk)].any(dim=1).sum() for k in topk]).to(torch.float64)


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Top-k accuracies in percent (single process)."""
    c = topk_correct(logits, target, topk)
    return [float(x) * 100.0 / max(len(target), 1) for x in c]


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if is_dist():
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device,
                    epoch: int, amp: bool = False, scaler: torch.amp.GradScaler | None = None,
                    log_every: int = 50) -> dict[str, float]:
    """One epoch of cross-entropy training; ``model.train()`` (a :class:`LinearProbe` keeps its backbone in eval)."""
    model.train()
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    channels_last = device.type == "cuda"
    tot_loss, tot_n, correct = torch.zeros((), dtype=torch.float64), 0, torch.zeros(2, dtype=torch.float64)
    t0 = time.time()
    for it, (images, target) in enumerate(loader):
        images, target = _to_device(images, device, channels_last), target.to(device, non_blocking=True)
        with amp_autocast(device, amp):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), target)
        amp_step(loss, optimizer, scaler)
        n = target.shape[0]
        tot_loss += loss.detach().double().cpu() * n
        tot_n += n
        correct += topk_correct(logits.detach(), target).cpu()
        if log_every and (it + 1) % log_every == 0:
            log.info("epoch %d it %d/%d loss %.4f (%.1fs)", epoch, it + 1, len(loader), loss.item(), time.time() - t0)
    stats = all_reduce_sum(torch.cat([tot_loss.view(1), torch.tensor([float(tot_n)], dtype=torch.float64), correct])
                           .to(device)).cpu()
    n = max(stats[1].item(), 1.0)
    return {"loss": stats[0].item() / n, "train_top1": 100.0 * stats[2].item() / n,
            "train_top5": 100.0 * stats[3].item() / n, "time_s": time.time() - t0}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False) -> dict[str, float]:
    """Top-1 / top-5 in percent over the whole (sharded) set: correct counts summed over ranks."""
    model.eval()
    t0 = time.time()
    channels_last = device.type == "cuda"
    counts = torch.zeros(3, dtype=torch.float64)  # top1, top5, n
    for images, target in loader:
        images, target = _to_device(images, device, channels_last), target.to(device, non_blocking=True)
        with amp_autocast(device, amp):
            logits = model(images)
        counts[:2] += topk_correct(logits.float(), target).cpu()
        counts[2] += target.shape[0]
    counts = all_reduce_sum(counts.to(device)).cpu()
    n = counts[2].item()
    if n == 0:
        raise ValueError("evaluation set is empty")
    log.info("evaluated %d images in %.1fs", int(n), time.time() - t0)
    return {"top1": 100.0 * counts[0].item() / n, "top5": 100.0 * counts[1].item() / n, "n": int(n)}


def gather_variable(x: torch.Tensor) -> torch.Tensor:
    """Concatenate tensors of different lengths (dim 0) from every rank."""
    if not is_dist():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    pad = torch.zeros((m - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    out = [torch.empty((m, *x.shape[1:]), dtype=x.dtype, device=x.device) for _ in sizes]
    dist.all_gather(out, torch.cat([x, pad]).contiguous())
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)])


def extract_features_all_ranks(model: nn.Module, loader: DataLoader, device: torch.device,
                               normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (L2-normalised unless ``normalize=False``) and labels of the whole (sharded) set,
    gathered over ranks.

    Each rank runs :func:`lewel_bench.knn.extract_features` on its shard; the shards are concatenated.
    """
    model.eval()
    f, y = extract_features(model, loader, device, channels_last=device.type == "cuda", normalize=normalize)
    return gather_variable(f.to(device)), gather_variable(y.to(device))
