"""CGH (cross-context learning between global and hypercolumn features): its equations and settings against hand
computations on tiny tensors, and one short run through the real loop."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lewel_bench.checkpoint import load_backbone
from lewel_bench.config import ConfigError, load_config
from lewel_bench.models import hypercolumn
from lewel_bench.optim import optimizer_for, schedule_from_config
from pretrain.augment import build_views, seeded, view_specs
from pretrain.cli import CONFIG_DIR
from pretrain.methods import METHODS
from pretrain.methods.cgh import (
    CGH,
    cross_context_ce,
    info_nce_from_rows,
    loss_weights,
    queue_similarities,
)

TINY = ["arch=resnet18", "model.dim=8", "model.hyper_dim=6", "model.hidden=16", "model.queue_size=20"]


def _cgh(*overrides: str, config: str = "cgh") -> CGH:
    torch.manual_seed(0)
    m = METHODS.get("cgh")(load_config(config, CONFIG_DIR, [*TINY, *overrides]))
    m.iters_per_epoch = 10
    return m.train()


def _np_ce(student: np.ndarray, teacher: np.ndarray, tau_s: float, tau_t: float) -> float:
    """CE(student / tau_s, softmax(teacher / tau_t)) row by row, written out."""
    total = 0.0
    for a, b in zip(student, teacher):
        p = np.exp(b / tau_t) / np.exp(b / tau_t).sum()
        log_q = a / tau_s - np.log(np.exp(a / tau_s).sum())
        total += -(p * log_q).sum()
    return total / len(student)


# --------------------------------------------------------------------------------------------------
# hypercolumn and heads
# --------------------------------------------------------------------------------------------------
def test_hypercolumn_resize_is_a_2x2_average_pool_and_keeps_the_channel_order() -> None:
    torch.manual_seed(0)
    res4, res5 = torch.randn(2, 1024, 14, 14), torch.randn(2, 2048, 7, 7)
    h = hypercolumn([res4, res5])
    assert h.shape == (2, 3072, 7, 7)
    torch.testing.assert_close(h[:, :1024], F.avg_pool2d(res4, 2), rtol=0, atol=1e-6)  # bilinear 14 -> 7 = 2x2 mean
    assert torch.equal(h[:, 1024:], res5)  # [res4, res5]: the deepest map last, unchanged
    # hence the hypercolumn's GAP is concat(GAP(res4), GAP(res5)) (the backbone-only probe)
    torch.testing.assert_close(h.mean((2, 3)), torch.cat([res4.mean((2, 3)), res5.mean((2, 3))], 1), rtol=0, atol=1e-6)


def test_heads_of_the_resnet50_config_have_the_code_shapes() -> None:
    m = METHODS.get("cgh")(load_config("cgh", CONFIG_DIR, ["model.queue_size=16"]))
    sd = {k: tuple(v.shape) for k, v in m.online.head.state_dict().items()}
    assert sd == {
        "glob.fc1.weight": (4096, 2048, 1), "glob.fc1.bias": (4096,),          # 2048-4096-512, biases, no BN
        "glob.fc2.weight": (512, 4096, 1), "glob.fc2.bias": (512,),
        "hyper.reduce.0.weight": (2048, 3072, 1, 1),                            # 1x1 conv 3072 -> 2048, no bias
        "hyper.reduce.1.weight": (2048,), "hyper.reduce.1.bias": (2048,), "hyper.reduce.1.running_mean": (2048,),
        "hyper.reduce.1.running_var": (2048,), "hyper.reduce.1.num_batches_tracked": (),
        "hyper.mlp.fc1.weight": (4096, 2048, 1), "hyper.mlp.fc1.bias": (4096,),  # 2048-4096-512
        "hyper.mlp.fc2.weight": (512, 4096, 1), "hyper.mlp.fc2.bias": (512,),
    }
    assert isinstance(m.online.head.glob.bn, torch.nn.Identity) and isinstance(m.online.head.hyper.mlp.bn, torch.nn.Identity)
    assert m.queue.glob.shape == (16, 512) == m.queue.hyper.shape
    # the key side is a copy of the encoder and both heads, without gradient
    assert set(m.target.state_dict()) == set(m.online.state_dict())
    assert not any(p.requires_grad for p in m.target.parameters())
    with torch.no_grad():
        z, z_h = m.online.eval()(torch.randn(2, 3, 224, 224))
    assert z.shape == (2, 512) and z_h.shape == (2, 512)


def test_hyper_stages_must_run_shallow_to_deep() -> None:
    with pytest.raises(ConfigError, match="model.hyper_stages"):
        _cgh("model.hyper_stages=[res5, res4]")
    with pytest.raises(ConfigError, match=r"model.hyper_stages must be"):
        _cgh("model.hyper_stages=[res4, res6]")


# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------
def test_cross_context_ce_against_a_hand_computation() -> None:
    """K = 4 queue entries in 2-d, two images; the four temperatures of the code."""
    Q = np.array([[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8], [0.8, -0.6]])
    Q_h = np.array([[0.6, 0.8], [-1.0, 0.0], [0.0, -1.0], [0.28, 0.96]])
    q = np.array([[0.6, 0.8], [1.0, 0.0]])
    k = np.array([[0.8, 0.6], [0.0, 1.0]])
    q_h = np.array([[0.0, 1.0], [-0.8, 0.6]])
    k_h = np.array([[0.6, -0.8], [1.0, 0.0]])
    s_q, s_k, s_qh, s_kh = q @ Q.T, k @ Q.T, q_h @ Q_h.T, k_h @ Q_h.T
    # row 0 of s_qh / 0.08 against softmax(s_k / 0.04), by hand: s_qh[0] = [0.8, 0, -1, 0.96], s_k[0] = [0.8, 0.6, 0, 0.28]
    p0 = np.exp(np.array([0.8, 0.6, 0.0, 0.28]) / 0.04)
    p0 /= p0.sum()
    a0 = np.array([0.8, 0.0, -1.0, 0.96]) / 0.08
    row0 = -(p0 * (a0 - np.log(np.exp(a0).sum()))).sum()
    t = torch.tensor
    got_hyper = cross_context_ce(t(s_qh), t(s_k), 0.08, 0.04)
    got_csist = cross_context_ce(t(s_q), t(s_kh), 0.1, 0.08)
    assert float(got_hyper) == pytest.approx(_np_ce(s_qh, s_k, 0.08, 0.04), rel=1e-6)
    assert float(got_csist) == pytest.approx(_np_ce(s_q, s_kh, 0.1, 0.08), rel=1e-6)
    assert _np_ce(s_qh[:1], s_k[:1], 0.08, 0.04) == pytest.approx(row0, rel=1e-12)
    # a student equal to its teacher at the same temperature is at the teacher's entropy
    ent = -(p0 * np.log(p0)).sum()
    assert float(cross_context_ce(t(s_k[:1]), t(s_k[:1]), 0.04, 0.04)) == pytest.approx(ent, rel=1e-6)


def test_queue_product_gradient_is_exact_after_the_enqueue_overwrites_its_rows() -> None:
    """The product against the live queue: after the step's enqueue overwrites rows in place (wrapping around,
    or more keys than rows), the student's gradient is still g . Q as it was in the forward pass."""
    torch.manual_seed(0)
    for K, ptr, n in ((8, 6, 4), (8, 0, 8), (8, 3, 20)):
        Q = F.normalize(torch.randn(K, 3), dim=1)
        before = Q.clone()
        q, k = torch.randn(2, 3, requires_grad=True), torch.randn(5, 3)
        written = (ptr + torch.arange(n)) % K
        s_q, s_k = queue_similarities(q, k, Q, torch.unique(written))
        torch.testing.assert_close(s_q, q @ before.t())
        torch.testing.assert_close(s_k, k @ before.t())
        assert not s_k.requires_grad
        Q[written] = torch.randn(n, 3)  # the enqueue, in place, before the backward pass
        w = torch.randn(2, K)
        (s_q * w).sum().backward()
        torch.testing.assert_close(q.grad, w @ before, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(q.grad, w @ Q)  # the queue did change


def test_loss_gradients_in_float64() -> None:
    """torch.autograd.gradcheck (float64) of the cross-context CE (student side; the teacher is detached), the
    InfoNCE from the queue rows, and the queue product whose rows the enqueue overwrites before the backward
    pass (each call from the same queue; the backward's correction makes the gradient the forward's)."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    s, t = r(3, 5).requires_grad_(), r(3, 5)
    assert cross_context_ce(s, t, 0.1, 0.04).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda a: cross_context_ce(a, t, 0.1, 0.04), (s,))
    assert torch.autograd.gradcheck(lambda a, b: info_nce_from_rows(a, b, 0.2), (r(3).requires_grad_(), s))
    Q0, new, teacher = F.normalize(r(6, 4), dim=1), r(3, 4), r(2, 4)
    rows = torch.tensor([4, 5, 0])

    def product(student: torch.Tensor) -> torch.Tensor:
        Q = Q0.clone()
        out, _ = queue_similarities(student, teacher, Q, rows)
        Q[rows] = new  # the step's enqueue, in place, before the backward pass
        return out

    assert torch.autograd.gradcheck(product, (r(2, 4).requires_grad_(),))


def test_method_loss_pairs_each_student_with_the_other_context_teacher() -> None:
    """After the loss warm-up: 0.5 CE(s_qh / tau_hs, softmax(s_k / tau_gt)) + 0.5 CE(s_q / tau_gs, softmax(s_kh /
    tau_ht)), computed here from the method's own embeddings and queues (four distinct temperatures)."""
    m = _cgh("model.tau_hyper_student=0.3", "model.tau_global_teacher=0.05", "model.tau_global_student=0.2",
             "model.tau_hyper_teacher=0.07", "model.shuffle_bn_splits=1")
    m.iteration = 1000
    x_k, x_q = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    Q, Q_h = m.queue.glob.clone().numpy(), m.queue.hyper.clone().numpy()
    with torch.no_grad():
        z, z_h = (F.normalize(e, dim=1).numpy() for e in m.online(x_q))
        k, k_h = (F.normalize(e, dim=1).numpy() for e in m.target(x_k))
    loss, logs = m([x_k, x_q])
    loss = loss.detach()
    want = 0.5 * _np_ce(z_h @ Q_h.T, k @ Q.T, 0.3, 0.05) + 0.5 * _np_ce(z @ Q.T, k_h @ Q_h.T, 0.2, 0.07)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert "loss_cl" not in logs  # L_cl is not computed after the warm-up
    # the keys were enqueued after the logits: column 0 of each queue holds the first image's keys
    torch.testing.assert_close(m.queue.glob[:4], torch.from_numpy(k), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.queue.hyper[:4], torch.from_numpy(k_h), rtol=1e-5, atol=1e-6)


def test_warmup_term_is_the_sum_of_two_infonce_and_the_cross_fade_weights() -> None:
    assert loss_weights(0, 50) == (1.0, 0.0, 0.0)
    assert loss_weights(25, 50) == (0.5, 0.25, 0.25)  # 2.5 of 5 epochs of 10 iterations
    assert loss_weights(50, 50) == (0.0, 0.5, 0.5) == loss_weights(5000, 50)
    assert loss_weights(0, 0) == (0.0, 0.5, 0.5)  # no loss warm-up
    m = _cgh("model.shuffle_bn_splits=1", "model.temperature=0.2")
    assert m.warmup_iters() == 50  # 5 epochs x 10 iterations
    m.iteration = 25
    x_k, x_q = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    Q, Q_h = m.queue.glob.clone(), m.queue.hyper.clone()
    with torch.no_grad():
        q, q_h = (F.normalize(e, dim=1) for e in m.online(x_q))
        k, k_h = (F.normalize(e, dim=1) for e in m.target(x_k))
    loss, logs = m([x_k, x_q])

    def infonce(a, b, queue):
        logits = torch.cat([(a * b).sum(1, keepdim=True), a @ queue.t()], 1) / 0.2
        return F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long))

    l_cl = infonce(q, k, Q) + infonce(q_h, k_h, Q_h)
    assert float(logs["loss_cl"]) == pytest.approx(float(l_cl), rel=1e-5)
    want = 0.5 * l_cl + 0.25 * logs["loss_cl_hyper"] + 0.25 * logs["loss_csist"]
    assert float(loss) == pytest.approx(float(want), rel=1e-5)


def test_teacher_has_no_gradient_and_the_hypercolumn_student_reaches_layer3_and_layer4() -> None:
    m = _cgh()
    m.iteration = 1000
    loss, _ = m([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    loss.backward()
    assert all(p.grad is None for p in m.target.parameters())
    assert not m.queue.glob.requires_grad and not m.queue.hyper.requires_grad
    # the hypercolumn student term alone: gradients in layer3 AND layer4 (through the hypercolumn), none in the
    # global head
    m.zero_grad(set_to_none=True)
    _, z_h = m.online(torch.randn(4, 3, 32, 32))
    with torch.no_grad():
        k, _ = m.target(torch.randn(4, 3, 32, 32))
    cross_context_ce(F.normalize(z_h, dim=1) @ m.queue.hyper.t(), F.normalize(k, dim=1) @ m.queue.glob.t(),
                     0.08, 0.04).backward()
    bb = m.online.backbone
    assert float(bb.layer3[0].conv1.weight.grad.abs().sum()) > 0 and float(bb.layer4[0].conv1.weight.grad.abs().sum()) > 0
    assert m.online.head.glob.fc1.weight.grad is None and m.online.head.hyper.reduce[0].weight.grad is not None
    # the teacher rows are detached inside the loss too
    s = torch.randn(2, 4, requires_grad=True)
    t = torch.randn(2, 4, requires_grad=True)
    cross_context_ce(s, t, 0.1, 0.04).backward()
    assert t.grad is None and s.grad is not None


# --------------------------------------------------------------------------------------------------
# queues, views, multi-crop
# --------------------------------------------------------------------------------------------------
class _IdKeys(torch.nn.Module):
    """A key encoder whose global and hypercolumn keys encode the image id written in its first pixel."""

    def __init__(self, dim: int, hyper_dim: int) -> None:
        super().__init__()
        self.dim, self.hyper_dim = dim, hyper_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = x[:, 0, 0, 0].round().long()
        return (F.one_hot(ids % self.dim, self.dim).float() * (1 + ids[:, None]),
                F.one_hot(ids % self.hyper_dim, self.hyper_dim).float() * (1 + ids[:, None]))


def test_two_queues_stay_aligned_column_by_column() -> None:
    """Global and hypercolumn keys of one image land in the same column of both queues (ShuffleBN permutation
    undone), one pointer; after s steps of B keys the pointer is (s * B) mod K."""
    m = _cgh("model.shuffle_bn_splits=2", "model.queue_size=10", "model.dim=12", "model.hyper_dim=12")
    m.target = _IdKeys(12, 12)
    B = 4
    for step in range(3):
        m.iteration = 100 + step
        x_k = torch.zeros(B, 3, 32, 32)
        x_k[:, 0, 0, 0] = torch.arange(B) + B * step  # image ids 0..11
        m([x_k, torch.randn(B, 3, 32, 32)])
        assert int(m.queue.ptr) == ((step + 1) * B) % 10
    ids = [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]  # ids 10-11 wrapped around over ids 0-1
    assert m.queue.glob.argmax(1).tolist() == ids == m.queue.hyper.argmax(1).tolist()


def test_views_weak_key_strong_query_and_the_weak_view_keeps_a_flat_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = view_specs(load_config("cgh", CONFIG_DIR)["aug"])
    assert len(specs) == 2 and specs[0].size == specs[1].size == 224
    assert specs[0].scale == specs[1].scale == (0.2, 1.0) and specs[0].flip and specs[1].flip
    assert specs[0].jitter_p == specs[0].gray_p == specs[0].blur_p == specs[0].solarize_p == 0.0
    assert (specs[1].jitter, specs[1].jitter_p, specs[1].gray_p, specs[1].blur_p) == ((0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.5)
    flat = Image.new("RGB", (256, 256), (37, 140, 201))
    for batched in (False, True):
        weak = seeded(lambda batched=batched: build_views(specs[:1], batched)[0](flat), 5)
        if batched:
            assert torch.equal(weak[0][:, 0, 0], torch.tensor([37, 140, 201], dtype=torch.uint8))
            assert bool((weak[0] == weak[0][:, :1, :1]).all()) and float(weak[1][0]) == 0
        else:
            mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
            std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
            torch.testing.assert_close((weak * std + mean) * 255, torch.tensor([37., 140., 201.])[:, None, None]
                                       .expand_as(weak), atol=0.5, rtol=0)
    # views[1] is the query (online), views[0] the key (target)
    m = _cgh()
    m.iteration = 1000
    seen = {}
    real_online, real_target = m.online_split, m.target_shuffled
    monkeypatch.setattr(m, "online_split", lambda x, net=None: (seen.setdefault("online", x), real_online(x, net))[1])
    monkeypatch.setattr(m, "target_shuffled", lambda x, net=None: (seen.setdefault("target", x), real_target(x, net))[1])
    weak_x, strong_x = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    m([weak_x, strong_x])
    assert seen["online"] is strong_x and seen["target"] is weak_x
    with pytest.raises(ConfigError, match="aug.views gives 1"):
        m.check_views(1)


def test_multi_crop_local_views_join_the_global_student_term() -> None:
    """CGH (Multi): each local view's global embedding adds CE(s_local / tau_gs, softmax(s_kh / tau_ht)); the
    global-student sum is divided by n_local + 1."""
    m = _cgh("model.shuffle_bn_splits=1", config="cgh_multi")
    assert [s.size for s in view_specs(m.cfg["aug"])] == [224, 224, 192, 160, 128, 96]
    m.iteration = 1000
    x_k, x_q = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    local = [torch.randn(4, 3, s, s) for s in (28, 24, 20)]
    Q_h = m.queue.hyper.clone()
    Q = m.queue.glob.clone()
    with torch.no_grad():
        _, k_h = (F.normalize(e, dim=1) for e in m.target(x_k))
        locs = [F.normalize(m._global(x), dim=1) for x in local]
    loss, logs = m([x_k, x_q, *local])
    terms = [float(cross_context_ce(e @ Q.t(), k_h @ Q_h.t(), 0.1, 0.08)) for e in locs]
    want_csist = (float(logs["loss_csist_global"]) + sum(terms)) / 4
    assert float(logs["loss_csist"]) == pytest.approx(want_csist, rel=1e-5)
    assert float(loss) == pytest.approx(0.5 * float(logs["loss_cl_hyper"]) + 0.5 * want_csist, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------------
def test_lr_warm_up_cosine_and_the_no_decay_groups_by_name() -> None:
    cfg = load_config("cgh", CONFIG_DIR, ["arch=resnet18", "model.queue_size=8"])
    ipe = 100
    total = cfg["epochs"] * ipe
    s = schedule_from_config(cfg["schedule"], total, ipe, base_lr=cfg["optim"]["lr"])
    lr = lambda t: s.lr(cfg["optim"]["lr"], t)
    assert lr(0) == 0.0 and lr(250) == pytest.approx(0.025) and lr(499) == pytest.approx(0.05 * 499 / 500)
    assert lr(500) == pytest.approx(0.05)  # the end of epoch 5
    assert lr(500 + (total - 500) // 2) == pytest.approx(0.025)  # cosine over the remaining 195 epochs
    assert lr(total) == pytest.approx(0.0, abs=1e-12) and 0 < lr(total - 1) < 1e-6
    m = METHODS.get("cgh")(cfg)
    opt = optimizer_for(m, cfg["optim"])
    name_of = {id(p): n for n, p in m.named_parameters()}
    wd = {name_of[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd["online.backbone.bn1.weight"] == wd["online.backbone.layer1.0.bn2.bias"] == 0.0
    assert wd["online.head.glob.fc1.bias"] == wd["online.head.hyper.mlp.fc2.bias"] == 0.0
    # the code's name test lets these BN weights decay: torchvision's downsample.1 and the hypercolumn BN
    assert wd["online.backbone.layer2.0.downsample.1.weight"] == wd["online.head.hyper.reduce.1.weight"] == 1e-4
    assert wd["online.backbone.conv1.weight"] == wd["online.head.glob.fc1.weight"] == 1e-4
    assert not any(n.startswith("target.") for n in wd)  # the key side takes no gradient step


# --------------------------------------------------------------------------------------------------
# the real loop
# --------------------------------------------------------------------------------------------------
def test_cgh_trains_through_the_loop_with_the_ema_before_each_key_pass(mini_data: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Three iterations of cgh_mini: the key encoder of iteration t + 1 is m * (its iteration t state) +
    (1 - m) * (the online network after step t) for the trunk AND the hypercolumn branch, i.e. the momentum
    update happens before each key pass; the loss warm-up follows the iterations of the loop; the backbone file
    carries the hypercolumn branch's 1x1 conv + BN as its transfer part."""
    from pretrain.cli import main

    seen = []
    real = CGH.forward

    def spy(self, views):
        keys = ("backbone.conv1.weight", "head.hyper.reduce.0.weight", "head.hyper.mlp.fc2.bias")
        seen.append({"it": self.iteration, "ipe": self.iters_per_epoch, "w": self.warmup_iters(),
                     **{f"t.{k}": self.target.state_dict()[k].clone() for k in keys},
                     **{f"o.{k}": self.online.state_dict()[k].clone() for k in keys}})
        return real(self, views)

    monkeypatch.setattr(CGH, "forward", spy)
    out = tmp_path / "run"
    main(["cgh_mini", "--data", str(mini_data / "imagenet"), "--out", str(out), "epochs=1", "batch_size=8",
          "data.max_images=24", "data.num_workers=0", "num_threads=1", "knn.every=0", "aug.size=32",
          "model.loss_warmup_epochs=1", "tqdm_interval=60"])
    assert [s["it"] for s in seen] == [0, 1, 2] and {s["ipe"] for s in seen} == {3} and seen[0]["w"] == 3
    mom = 0.99
    for a, b in itertools.pairwise(seen):
        for k in ("backbone.conv1.weight", "head.hyper.reduce.0.weight", "head.hyper.mlp.fc2.bias"):
            torch.testing.assert_close(b[f"t.{k}"], mom * a[f"t.{k}"] + (1 - mom) * b[f"o.{k}"], rtol=1e-5, atol=1e-7)
    for k in ("backbone.conv1.weight", "head.hyper.reduce.0.weight", "head.hyper.mlp.fc2.bias"):
        assert torch.equal(seen[1][f"o.{k}"], seen[0][f"o.{k}"])  # iteration 0 runs at lr 0 (warm-up from 0)
        assert not torch.equal(seen[2][f"o.{k}"], seen[1][f"o.{k}"])  # then the online network moves
        assert not torch.equal(seen[2][f"t.{k}"], seen[1][f"t.{k}"])  # and the key encoder follows it
    import json
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [round(r["w_cl"], 4) for r in lines] == [1.0, round(2 / 3, 4), round(1 / 3, 4)]
    bb = load_backbone(out / "backbone.pth", parts=("hypercolumn",))
    ck = torch.load(out / "checkpoint.pth", weights_only=False)
    assert bb.meta["method"] == "cgh" and set(ck["queue"]) == {"queue.glob", "queue.hyper", "queue.ptr"}
    assert int(ck["queue"]["queue.ptr"]) == 24
    assert torch.equal(bb.parts["hypercolumn"]["reduce.0.weight"], ck["model"]["online.head.hyper.reduce.0.weight"])
    assert tuple(bb.parts["hypercolumn"]["reduce.0.weight"].shape) == (512, 768, 1, 1)  # ResNet-18: 256 + 512 -> 512


def _ddp_worker(rank: int, port: int, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from lewel_bench import dist as ldist

    ldist.init_distributed()
    m = _cgh("model.queue_size=16", "model.dim=16", "model.hyper_dim=16")
    m.target = _IdKeys(16, 16)
    ddp = torch.nn.parallel.DistributedDataParallel(m, broadcast_buffers=False)
    for step in range(2):
        m.iteration = 100 + step
        x_k = torch.zeros(4, 3, 32, 32)
        x_k[:, 0, 0, 0] = torch.arange(4) + 4 * rank + 8 * step  # global image ids: rank 0 then rank 1
        loss, _ = ddp([x_k, torch.randn(4, 3, 32, 32)])
        loss.backward()
    got = {"glob": ldist.all_gather_nograd(m.queue.glob.argmax(1)[None]),
           "hyper": ldist.all_gather_nograd(m.queue.hyper.argmax(1)[None]), "loss": loss.detach()}
    if rank == 0:
        torch.save(got, out)
    ldist.cleanup()


@pytest.mark.slow
def test_ddp_shufflebn_keeps_both_queues_aligned_and_equal_on_every_rank(tmp_path: Path) -> None:
    """Two gloo processes: the key batch is shuffled across them and back; both ranks enqueue the gathered keys
    of the global batch in its order, the global and hypercolumn queues column by column."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(port, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    assert got["glob"][0].tolist() == got["glob"][1].tolist() == list(range(16))
    assert torch.equal(got["glob"], got["hyper"]) and torch.isfinite(got["loss"])
