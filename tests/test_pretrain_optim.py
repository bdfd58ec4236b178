"""EMA momentum schedule, EMA / EMAN updates, the MoCo queue, LARS exclusions, lr schedule."""
import math

import pytest
import torch
from torch import nn

from lewel_bench.optim import LARS, Schedule, optimizer_for, param_groups
from pretrain.ema import cosine_momentum, ema_update
from pretrain.methods.base import FIFOQueue


def test_momentum_schedule_endpoints():
    assert cosine_momentum(0.98, 0, 1000) == pytest.approx(0.98)
    assert cosine_momentum(0.98, 1000, 1000) == pytest.approx(1.0)
    assert cosine_momentum(0.98, 500, 1000) == pytest.approx(0.99)
    assert all(cosine_momentum(0.99, t, 100) <= cosine_momentum(0.99, t + 1, 100) for t in range(100))


def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_ema_params_vs_eman():
    torch.manual_seed(0)
    online, target = _net(), _net()
    online(torch.randn(8, 3))  # online BN stats move
    t_stats = target[1].running_mean.clone()
    t_w, o_w = target[0].weight.clone(), online[0].weight.clone()
    ema_update(target, online, 0.9, "params")
    torch.testing.assert_close(target[0].weight, 0.9 * t_w + 0.1 * o_w)
    torch.testing.assert_close(target[1].running_mean, t_stats)  # buffers untouched
    ema_update(target, online, 0.9, "eman")
    torch.testing.assert_close(target[1].running_mean, 0.9 * t_stats + 0.1 * online[1].running_mean)
    assert target[1].num_batches_tracked == online[1].num_batches_tracked
    ema_update(target, online, 0.0, "params")
    torch.testing.assert_close(target[0].weight, online[0].weight)


def test_queue_fifo():
    q = FIFOQueue(6, 2)
    batches = [torch.full((2, 2), float(i)) for i in range(1, 5)]
    for b in batches[:3]:
        q.push(keys=b)
    assert q.keys[:, 0].tolist() == [1, 1, 2, 2, 3, 3] and int(q.ptr) == 0
    q.push(keys=batches[3])  # the oldest entries (batch 1) are replaced first
    assert q.keys[:, 0].tolist() == [4, 4, 2, 2, 3, 3] and int(q.ptr) == 2
    q.push(keys=torch.full((5, 2), 9.0))  # wraps around
    assert q.keys[:, 0].tolist() == [9, 4, 9, 9, 9, 9] and int(q.ptr) == 1  # slots 2,3,4,5,0


def test_queues_sharing_one_pointer_stay_aligned():
    """Two queues of one FIFOQueue are written at the same indices: column j of both holds image j's keys."""
    q = FIFOQueue(5, {"glob": 2, "hyper": 3})
    for step in range(4):
        ids = torch.arange(3) + 3 * step  # the ids of this batch's images
        q.push(glob=ids[:, None].float().expand(-1, 2), hyper=-ids[:, None].float().expand(-1, 3))
        assert int(q.ptr) == (3 * (step + 1)) % 5
    assert torch.equal(q.glob[:, 0], -q.hyper[:, 0]) and q.glob[:, 0].tolist() == [10, 11, 7, 8, 9]
    with pytest.raises(ValueError, match="same number"):
        q.push(glob=torch.zeros(2, 2), hyper=torch.zeros(3, 3))


def test_lars_excludes_bn_and_bias():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    groups = param_groups(net, 0.1, no_decay=["norm", "bias"])
    excluded = {id(p) for g in groups if g["lars_exclude"] for p in g["params"]}
    assert excluded == {id(net[0].bias), id(net[1].weight), id(net[1].bias)}
    assert all(g["weight_decay"] == 0 for g in groups if g["lars_exclude"])
    opt = optimizer_for(net, {"name": "lars", "lr": 0.5, "momentum": 0.9, "weight_decay": 0.1,
                              "no_decay": ["norm", "bias"], "trust_coefficient": 1e-3})
    assert isinstance(opt, LARS)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net(torch.randn(8, 4)).pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    opt.step()
    for n, p in net.named_parameters():
        if n == "0.weight":  # adapted: step = lr * trust * ||w|| / ||g + wd w|| * (g + wd w)
            d = grads[n] + 0.1 * before[n]
            step = 0.5 * 1e-3 * before[n].norm() / d.norm() * d
        else:  # excluded: plain SGD step, no decay, no trust ratio
            step = 0.5 * grads[n]
        torch.testing.assert_close(before[n] - p.detach(), step, rtol=1e-4, atol=1e-7)


def test_sgd_groups_without_exclusion_decay_everything():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    groups = param_groups(net, 1e-4, no_decay=[])
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4


def cosine_lr(base: float, it: int, total: int, warmup: int) -> float:
    """The pretraining schedule: linear warm-up counting the current iteration, then cosine to 0."""
    return Schedule("cosine", total, warmup=warmup, warmup_offset=1).lr(base, it)


def test_cosine_lr_with_warmup():
    assert cosine_lr(1.0, 0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(1.0, 9, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(1.0, 10, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(1.0, 55, 100, 10) == pytest.approx(0.5)
    assert cosine_lr(1.0, 100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(2.0, 0, 100, 0) == 2.0
    assert math.isclose(cosine_lr(1.0, 50, 100, 0), 0.5)


def test_lars_variants_against_a_hand_computation():
    """standard: d = g + wd w, d *= trust ||w|| / ||d||, buf = m buf + d, w -= lr buf;
    official (the LEWEL code): r = trust ||w|| / (||g|| + wd ||w||), buf = m buf + lr r (g + wd w), w -= buf.
    Two steps with a changed lr show the folding: the official buffer carries the old lr."""
    torch.manual_seed(0)
    w0 = torch.randn(5, 3, dtype=torch.float64)
    g1, g2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    wd, m, eta, lr1, lr2 = 0.1, 0.9, 1e-3, 0.5, 0.2
    for variant in ("standard", "official"):
        p = nn.Parameter(w0.clone())
        opt = LARS([{"params": [p], "weight_decay": wd, "lars_exclude": False}], lr=lr1, momentum=m,
                   trust_coefficient=eta, variant=variant)
        w, buf = w0.clone(), None
        for g, lr in ((g1, lr1), (g2, lr2)):
            for group in opt.param_groups:
                group["lr"] = lr
            p.grad = g.clone()
            opt.step()
            d = g + wd * w
            if variant == "standard":
                d = d * (eta * w.norm() / (d.norm() + 1e-8))
                buf = d if buf is None else m * buf + d
                w = w - lr * buf
            else:
                d = d * (lr * eta * w.norm() / (g.norm() + wd * w.norm()))
                buf = d if buf is None else m * buf + d
                w = w - buf
            torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-14)
    # an excluded tensor: plain SGD momentum in both (the official one with the lr inside the buffer)
    p = nn.Parameter(w0.clone())
    opt = LARS([{"params": [p], "weight_decay": 0.0, "lars_exclude": True}], lr=lr1, momentum=m, variant="official")
    p.grad = g1.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), w0 - lr1 * g1)
    with pytest.raises(Exception, match="optim.lars 'fast'"):
        LARS([p], lr=0.1, variant="fast")
