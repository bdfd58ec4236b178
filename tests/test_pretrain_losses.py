"""Losses Eq. (3)-(5) and view symmetry of the symmetric methods."""
import copy

import pytest
import torch
import torch.nn.functional as F

from lewel_bench.config import load_config
from pretrain.augment import view_specs
from pretrain.losses import info_nce, info_nce_in_batch, lewel_total, normalized_mse
from pretrain.methods import METHODS

CFG_DIR = "pretrain/configs"


def tiny_cfg(method: str) -> dict:
    cfg = load_config(f"{method}_mini", CFG_DIR, ["arch=resnet18"])
    cfg["model"].update({k: v for k, v in {"hidden": 64, "dim": 32, "pred_hidden": 64}.items() if k in cfg["model"]})
    if "queue_size" in cfg["model"]:
        cfg["model"]["queue_size"] = 64
    return cfg


def test_info_nce_matches_eq4():
    torch.manual_seed(0)
    q, k, queue = torch.randn(4, 8), torch.randn(4, 8), torch.randn(10, 8)
    tau = 0.2
    qn, kn, nn_ = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    pos = ((qn * kn).sum(1) / tau).exp()
    neg = ((qn @ nn_.t()) / tau).exp().sum(1)
    ref = -(pos / (pos + neg)).log().mean()
    torch.testing.assert_close(info_nce(q, k, queue, tau), ref)


def test_in_batch_info_nce_uses_same_index_negatives():
    torch.manual_seed(0)
    B, c, K, tau = 4, 8, 3, 0.2
    q, k = torch.randn(B, K, c), torch.randn(B, K, c)
    losses = []
    for j in range(K):
        qj, kj = F.normalize(q[:, j], dim=1), F.normalize(k[:, j], dim=1)
        logits = qj @ kj.t() / tau  # negatives: other images at the same aligned index j
        losses.append(F.cross_entropy(logits, torch.arange(B), reduction="none"))
    torch.testing.assert_close(info_nce_in_batch(q, k, tau), torch.stack(losses).mean())
    # a global batch of 2B with this rank's block at offset B
    k2 = torch.cat([torch.randn(B, K, c), k])
    assert info_nce_in_batch(q, k2, tau, offset=B) > 0


def test_normalized_mse_eq5_and_total_eq3():
    p, z = torch.randn(5, 6), torch.randn(5, 6)
    ref = (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()
    torch.testing.assert_close(normalized_mse(p, z), ref)
    assert normalized_mse(z, z).abs() < 1e-6
    assert lewel_total(torch.tensor(2.0), torch.tensor(4.0), 0.5) == 3.0
    assert lewel_total(torch.tensor(2.0), torch.tensor(4.0), 0.25) == 2.5


@pytest.mark.parametrize("method,target", [("byol", "params"), ("lewel_b", "eman"), ("lewel_b", "params")])
def test_losses_symmetric_in_the_two_views(method, target):
    torch.manual_seed(0)
    cfg = tiny_cfg(method)
    cfg["model"]["target"] = target
    m = METHODS.get(cfg["method"])(cfg).train()
    x1, x2 = torch.randn(4, 3, 48, 48), torch.randn(4, 3, 48, 48)  # layer4: 2 x 2
    m2 = copy.deepcopy(m)  # BN running stats are updated by a forward: use twin copies
    l12, logs12 = m([x1, x2])
    l21, logs21 = m2([x2, x1])
    torch.testing.assert_close(l12, l21, rtol=1e-5, atol=1e-6)
    for key in logs12:
        torch.testing.assert_close(logs12[key], logs21[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["mocov2", "lewel_m"])
def test_single_process_shuffle_bn_emulation(method):
    """``model.shuffle_bn_splits`` = n: the key batch is permuted, normalised in n chunks and put back in
    order (with BN in eval mode the result equals a plain forward exactly, so every key is its own
    sample's); in train mode each chunk has its own BN statistics, so keys differ from a plain forward."""
    torch.manual_seed(0)
    cfg = tiny_cfg(method)
    cfg["model"]["shuffle_bn_splits"] = 4
    m = METHODS.get(cfg["method"])(cfg)
    x = torch.randn(8, 3, 48, 48)
    m.iteration = 3
    m.target.eval()
    plain, shuffled = m.target(x), m.target_shuffled(x)
    for a, b in zip(plain if isinstance(plain, tuple) else (plain,), shuffled if isinstance(shuffled, tuple) else (shuffled,)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    m.target.train()
    a, b = m.target(x), m.target_shuffled(x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-4)
    q = m.online_split(x)  # the query side is split the same way (no shuffle): n chunks of 2
    q0 = q[0] if isinstance(q, tuple) else q
    ref = m.online(x[:2])
    torch.testing.assert_close(q0[:2], ref[0] if isinstance(ref, tuple) else ref, rtol=1e-5, atol=1e-6)


# --- float64: the losses and every method's gradient ---------------------------------------------------
def _f64(*shape: int, seed: int, grad: bool = False) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.requires_grad_(grad)


@pytest.mark.parametrize("name", ["info_nce", "info_nce_in_batch", "normalized_mse"])
def test_loss_gradients_in_float64(name: str) -> None:
    """torch.autograd.gradcheck (float64 analytic against numerical Jacobians) of Eq. (4) with queue and with
    in-batch negatives and Eq. (5), with respect to the online side (the target side is detached)."""
    q, k, queue = _f64(3, 4, seed=0, grad=True), _f64(3, 4, seed=1), _f64(5, 4, seed=2)
    fn = {"info_nce": lambda a: info_nce(a, k, queue, 0.2),
          "info_nce_in_batch": lambda a: info_nce_in_batch(a.view(3, 2, 2), _f64(4, 2, 2, seed=3), 0.2, offset=1),
          "normalized_mse": lambda a: normalized_mse(a, k)}[name]
    assert fn(q).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (q,))


def _f64_method(method: str) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """A tiny float64 copy of ``method``'s mini config (ResNet-18, 32 px, narrow heads) and a batch of 16 per view."""
    cfg = tiny_cfg(method)
    cfg["aug"]["size"] = 32
    cfg["model"].update({k: v for k, v in {"hyper_dim": 16, "fpn_dim": 16, "extra_p_hidden": 32,
                                           "extra_p_dim": 16}.items() if k in cfg["model"]})
    torch.manual_seed(0)
    m = METHODS.get(cfg["method"])(cfg).train().double()
    m.iters_per_epoch, m.iteration = 10, 3  # inside a loss warm-up (CGH): every term of the loss is on
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(16, 3, s.size, s.size, generator=g, dtype=torch.float64) for s in view_specs(cfg["aug"])]
    return m, views


#: the suite's methods (a test may register one of its own, without a mini config)
SUITE_METHODS = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("pretrain.methods.")]


@pytest.mark.parametrize("method", SUITE_METHODS)
def test_every_method_loss_in_float64_and_its_gradient(method: str) -> None:
    """Every method of the suite computes its loss in float64 when its network and views are float64 (no cast to
    float32 on the way), and the gradient with respect to all its trainable parameters equals a central
    difference of the whole forward along a random direction: eps 1e-9 keeps every ReLU / max-pool on its side
    (larger steps cross kinks of the 11M-parameter ResNet), float64 keeps the rounding error near 1e-7 of it.
    The forward pushes to queues and updates BN statistics, so every evaluation starts from a copy."""
    m, views = _f64_method(method)
    g = torch.Generator().manual_seed(2)
    direction = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in m.named_parameters()
                 if p.requires_grad}
    params = list(direction)

    @torch.no_grad()
    def loss_at(step: float) -> torch.Tensor:
        w = copy.deepcopy(m)
        for n, p in w.named_parameters():
            if n in direction:
                p.add_(direction[n], alpha=step)
        return w(views)[0]

    w = copy.deepcopy(m)
    loss = w(views)[0]
    assert loss.dtype == torch.float64
    named = dict(w.named_parameters())
    grads = torch.autograd.grad(loss, [named[n] for n in params], allow_unused=True)
    assert sum(gr is not None for gr in grads) > len(params) // 2
    analytic = sum(float((gr * direction[n]).sum()) for n, gr in zip(params, grads) if gr is not None)
    eps = 1e-9
    numeric = float(loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-5)
