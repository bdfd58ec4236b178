"""DDP with 2 gloo processes: the first step's loss and gradients equal one process on the same global batch.

Validity: without SyncBN (it needs CUDA), each process normalises its half of the global batch with
that half's BN statistics. The single-process reference therefore computes the loss separately on the
two halves (each a BN batch of its own) and averages them: mathematically the same objective DDP
optimises (DDP averages the per-process gradients), so loss and gradients must agree up to float
rounding. (With SyncBN on CUDA the reference would be the plain global batch.)
LEWEL_M additionally runs one DDP step with ShuffleBN and the gathered queue: the queues must agree.
"""
import os

import pytest
import torch
import torch.multiprocessing as mp

from lewel_bench.config import load_config
from lewel_bench.launch import _free_port
from pretrain.methods import METHODS

B, SIZE = 4, 48  # per process; 48 px -> a 2 x 2 layer4 map for LEWEL


def _cfg(method: str) -> dict:
    cfg = load_config(f"{method}_mini", "pretrain/configs", ["arch=resnet18"])
    cfg["model"].update({k: v for k, v in {"hidden": 64, "dim": 32, "pred_hidden": 64}.items() if k in cfg["model"]})
    if "queue_size" in cfg["model"]:
        cfg["model"]["queue_size"] = 32
    return cfg


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2 * B, 3, SIZE, SIZE, generator=g), torch.randn(2 * B, 3, SIZE, SIZE, generator=g)


def _build(method: str):
    torch.manual_seed(0)
    return METHODS.get(method)(_cfg(method)).train()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from lewel_bench import dist as ldist

    ldist.init_distributed()
    x1, x2 = _data()
    sl = slice(rank * B, (rank + 1) * B)
    res = {}
    for method in ("byol", "lewel_b"):
        m = _build(method)
        ddp = torch.nn.parallel.DistributedDataParallel(m, broadcast_buffers=False)
        loss, _ = ddp([x1[sl], x2[sl]])
        loss.backward()
        res[method] = {"loss": ldist.all_reduce_mean(loss.detach()),
                       "grads": {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}}
    m = _build("lewel_m")
    m.iteration = 3
    ddp = torch.nn.parallel.DistributedDataParallel(m, broadcast_buffers=False)
    loss, _ = ddp([x1[sl], x2[sl]])
    loss.backward()
    res["lewel_m_queues"] = ldist.all_gather_nograd(m.queue.keys.unsqueeze(0))
    res["lewel_m_loss"] = loss.detach()
    if rank == 0:
        torch.save(res, out)
    ldist.cleanup()


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    res = torch.load(out, weights_only=False)
    x1, x2 = _data()
    for method in ("byol", "lewel_b"):
        m = _build(method)
        la, _ = m([x1[:B], x2[:B]])
        lb, _ = m([x1[B:], x2[B:]])
        loss = 0.5 * (la + lb)
        loss.backward()
        torch.testing.assert_close(res[method]["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        ref = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
        worst = (0.0, "")
        assert set(ref) == set(res[method]["grads"]) and len(ref) > 50
        for n, g in ref.items():
            rel = (res[method]["grads"][n] - g).norm() / g.norm().clamp_min(1e-12)
            worst = max(worst, (rel.item(), f"{method} {n}"))
        assert worst[0] < 1e-4, worst
    q = res["lewel_m_queues"]
    torch.testing.assert_close(q[0], q[1])  # both ranks enqueued the same gathered keys
    assert torch.isfinite(res["lewel_m_loss"])
