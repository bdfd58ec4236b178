"""The ablation options of LEWEL Tables 5-7 change exactly what they claim: uncoupled heads, no global branch,
uniform / random alignment maps, no semantic projector p, MoCo v2 with an extra projector; and every ablation
row of the paper's tables has a config of that name."""
from __future__ import annotations

import csv

import pytest
import torch

from lewel_bench.config import load_config
from lewel_bench.utils import REPO_ROOT
from pretrain.heads import CoupledHead, aligned_aggregate
from pretrain.methods import METHODS

CFG = "pretrain/configs"


def _tiny(exp: str, *extra: str) -> dict:
    over = ["arch=resnet18", "model.hidden=64", "model.dim=16"]
    cfg = load_config(exp, CFG, over + list(extra))
    for k, v in (("queue_size", 64), ("pred_hidden", 64), ("extra_p_hidden", 32), ("extra_p_dim", 16)):
        if k in cfg["model"]:
            cfg["model"][k] = v
    return cfg


def test_uncoupled_heads_share_nothing_and_learn_independently() -> None:
    torch.manual_seed(0)
    head = CoupledHead(8, 16, 4, h=2, coupling="uncoupled")
    ids = lambda m: {id(p) for p in m.parameters()}
    assert ids(head.g).isdisjoint(ids(head.g_w)) and ids(head.g).isdisjoint(ids(head.p))
    feat = torch.randn(3, 8, 2, 2)
    z, za, _maps = head(feat)
    z.sum().backward()  # the global embedding reaches g only
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.g.parameters())
    assert all(p.grad is None for p in head.g_w.parameters()) and all(p.grad is None for p in head.p.parameters())
    head.zero_grad(set_to_none=True)
    _, za, _maps = head(feat)
    za.sum().backward()  # the aligned embeddings reach the map projector and p, never g
    assert all(p.grad is None for p in head.g.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.g_w.parameters())
    # coupled (default): one projector for both
    assert CoupledHead(8, 16, 4, h=2).g_w is None


@pytest.mark.parametrize("method", ["lewel_m", "lewel_b"])
def test_align_only_has_no_global_term(method: str) -> None:
    torch.manual_seed(0)
    cfg = _tiny(f"{method}_mini", "model.global_branch=false", "model.beta=1.0")
    m = METHODS.get(method)(cfg).train()
    assert not hasattr(m, "queue") and getattr(m, "predictor", None) is None
    x1, x2 = torch.randn(4, 3, 48, 48), torch.randn(4, 3, 48, 48)
    loss, logs = m([x1, x2])
    assert set(logs) == {"loss_a"} and torch.equal(loss.detach(), logs["loss_a"])
    z, za, _ = m.online(x1)
    assert z is None and za.shape[1] == 16 // 4
    loss.backward()  # the graph holds the aligned branch only: every trainable parameter the loss reaches
    reached = {n for n, p in m.named_parameters() if p.grad is not None}
    assert reached and all(n.startswith(("online.", "predictor_aligned.")) for n in reached)


def test_random_maps_are_not_a_function_of_the_features_and_follow_the_seed() -> None:
    head = CoupledHead(8, 16, 8, h=2, align="random", temperature=0.5)
    a, b = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    torch.manual_seed(7)
    _, _, wa = head(a)
    torch.manual_seed(7)
    _, _, wb = head(b)                                   # other features, the same draw
    torch.manual_seed(8)
    _, _, wc = head(a)                                   # the same features, another draw
    assert torch.equal(wa, wb) and not torch.allclose(wa, wc)
    assert (wa >= 0).all() and torch.allclose(wa.sum(1), torch.ones(2, 8))
    uniform = CoupledHead(8, 16, 8, h=2, align="uniform")
    _, _za, w = uniform(a)
    assert torch.allclose(w, torch.full_like(w, 1 / 9))


def test_no_p_gives_the_aggregated_representations() -> None:
    torch.manual_seed(0)
    head = CoupledHead(8, 16, 8, h=2, sem_projector=False)
    assert head.p is None
    feat = torch.randn(3, 8, 2, 2)
    _, za, maps = head(feat)
    x = feat.permute(0, 2, 3, 1).reshape(3, 4, 8)
    assert za.shape == (3, 8 // 2, 8)                    # d/h embeddings of width D
    torch.testing.assert_close(za, aligned_aggregate(x, maps, 2))
    m = METHODS.get("lewel_b")(_tiny("lewel_b_mini", "model.sem_projector=false"))
    assert m.predictor_aligned.fc1.weight.shape[1] == 512  # s takes D = 512 (ResNet-18) inputs


def test_mocov2_extra_projector_adds_the_aligned_loss_without_alignment() -> None:
    torch.manual_seed(0)
    m = METHODS.get("mocov2")(_tiny("mocov2_mini", "model.extra_p=true", "model.beta=0.3",
                                   "model.shuffle_bn_splits=1")).train()
    assert hasattr(m.online.head, "p") and m.online.head.p.fc2.weight.shape[0] == 16
    loss, logs = m([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
    assert set(logs) == {"loss_g", "loss_p"}
    torch.testing.assert_close(loss.detach(), 0.7 * logs["loss_g"] + 0.3 * logs["loss_p"])
    plain = METHODS.get("mocov2")(_tiny("mocov2_mini"))
    assert not hasattr(plain.online.head, "p")


def test_every_ablation_row_has_its_config() -> None:
    names = {p.stem for p in (REPO_ROOT / CFG).glob("*.yaml")}
    for table in ("table5_components", "table6_heads", "table7_num_aligned"):
        rows = [r for r in csv.reader(lv for lv in (REPO_ROOT / "results/paper" / f"{table}.csv").read_text().splitlines()
                                      if not lv.startswith("#"))][1:]
        for row in rows:
            assert row[1] in names, f"{table}: row {row[0]!r} has no config pretrain/configs/{row[1]}.yaml"
            load_config(row[1], REPO_ROOT / CFG)                 # and it loads against its schema
    m = load_config("lewel_b_in100_h16", REPO_ROOT / CFG)["model"]
    assert (m["dim"], m["groups"]) == (256, 16)
