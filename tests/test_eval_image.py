"""Image-level evaluations: kNN, linear probe, semi-supervised fine-tuning, records, intake.

Everything runs on tiny data on CPU: hand-made feature extractors with a known answer, a tiny
ImageNet-layout folder (3 classes, 32 px JPEGs) for the command lines, random-init ResNet-18s.
"""
from __future__ import annotations

import functools
import json
import operator
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

import eval_knn.cli as knn_cli
import eval_linear.cli as linear_cli
import eval_semisup.cli as semisup_cli
from lewel_bench import classification as C
from lewel_bench.checkpoint import random_backbone, save_backbone
from lewel_bench.dist import DistInfo
from lewel_bench.knn import knn_predict
from lewel_bench.models import build_backbone
from lewel_bench.optim import build_optimizer, schedule_from_config, set_lr
from lewel_bench.stage import RunFolder, RunIdentity, default_out_dir
from lewel_bench.utils import REPO_ROOT

TINY_DATA = ["batch_size=8", "data.crop_size=32", "data.resize_size=36", "data.num_workers=0"]
TINY = ["epochs=2", *TINY_DATA]
STAGES = [(linear_cli, "mini", TINY), (semisup_cli, "mini_1pct", TINY), (knn_cli, "mini", TINY_DATA)]


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes (one colour each, plus noise), 8 train + 4 val 40 px JPEGs each, and a 1percent.txt."""
    root = tmp_path_factory.mktemp("tiny_imagenet")
    rng = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    subset = []
    for split, n in (("train", 8), ("val", 4)):
        for c, colour in enumerate(colours):
            wnid = f"n0000000{c}"
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(colour)[None, None] + rng.normal(0, 30, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(root / split / wnid / f"{wnid}_{i}.JPEG", quality=90)
                if split == "train" and i < 2:
                    subset.append(f"{wnid}_{i}.JPEG")
    (root / "1percent.txt").write_text("\n".join(subset) + "\n")
    return root


def _records(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def _run(cli, config: str, ckpt: str, data: Path, tmp: Path, *extra: str) -> None:
    cli.main(["--config", config, "--ckpt", ckpt, "--data", str(data), "--out", str(tmp / "out"),
              "--records-dir", str(tmp / "records"), *extra])


# --------------------------------------------------------------------------------------------------
# known answers from hand-made feature extractors
# --------------------------------------------------------------------------------------------------
class OneHotOfCode(nn.Module):
    """Features = one-hot of the class code written in the input's first value (a fixed, known extractor)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x.flatten(1)[:, 0].round().long(), self.num_classes).float()


def test_knn_with_one_hot_extractor_gives_expected_accuracy() -> None:
    ncls = 4
    train_y = torch.arange(ncls).repeat_interleave(5)
    train = TensorDataset(train_y.float()[:, None, None, None].expand(-1, 3, 2, 2).clone(), train_y)
    test_y = torch.arange(ncls).repeat(3)                       # 12 test images
    code = test_y.clone()
    code[:3] = (code[:3] + 1) % ncls                             # 3 of 12 look like the next class
    test = TensorDataset(code.float()[:, None, None, None].expand(-1, 3, 2, 2).clone(), test_y)
    model, dev = OneHotOfCode(ncls), torch.device("cpu")
    tf, ty = C.extract_features_all_ranks(model, C.make_loader(train, 7, False, num_workers=0), dev)
    vf, vy = C.extract_features_all_ranks(model, C.make_loader(test, 5, False, num_workers=0), dev)
    assert tf.shape == (20, ncls) and torch.equal(ty, train_y) and torch.equal(vy, test_y)
    pred = knn_predict(tf, ty, vf, ncls, k=20, t=0.07)
    assert 100.0 * (pred == vy).double().mean().item() == pytest.approx(75.0)
    assert torch.equal(pred, code)  # every image takes the class its features encode


def test_linear_training_on_separable_features_gives_expected_accuracy() -> None:
    """A frozen linear map of well-separated blobs: the probe learns them; flipped test labels cost exactly 25%."""
    torch.manual_seed(0)
    ncls, dim = 6, 8
    centres = 4.0 * torch.eye(ncls, dim)
    y = torch.arange(ncls).repeat(20)
    x = centres[y] + 0.3 * torch.randn(len(y), dim)
    yt = torch.arange(ncls).repeat(4)
    xt = centres[yt] + 0.3 * torch.randn(len(yt), dim)
    frozen = nn.Linear(dim, dim)
    with torch.no_grad():
        frozen.weight.copy_(torch.linalg.qr(torch.randn(dim, dim))[0])  # a fixed rotation
        frozen.bias.zero_()
    frozen.requires_grad_(False)
    model = nn.Sequential(frozen, nn.Linear(dim, ncls))
    opt = build_optimizer([{"params": model[1].parameters()}], {"name": "sgd", "lr": 0.4, "momentum": 0.9,
                                                                 "weight_decay": 0.0})
    loader = C.make_loader(TensorDataset(x, y), 16, True, num_workers=0)
    dev, sched = torch.device("cpu"), schedule_from_config({"name": "step", "milestones": [15, 20]}, 25)
    for epoch in range(25):
        set_lr(opt, sched, epoch)
        C.train_one_epoch(model, loader, opt, dev, epoch, log_every=0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.004)
    clean = C.evaluate(model, C.make_loader(TensorDataset(xt, yt), 7, False, num_workers=0), dev)
    assert clean["top1"] == 100.0 and clean["top5"] == 100.0 and clean["n"] == len(yt)
    flipped = yt.clone()
    flipped[::4] = (flipped[::4] + 1) % ncls                     # 6 of 24 labels wrong
    res = C.evaluate(model, C.make_loader(TensorDataset(xt, flipped), 7, False, num_workers=0), dev)
    assert res["top1"] == pytest.approx(75.0) and res["top5"] == 100.0


def test_topk_and_schedules() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 2, 0])
    assert C.topk_accuracy(logits, target, (1, 2, 5)) == pytest.approx([100 / 3, 200 / 3, 100.0])
    step = schedule_from_config({"name": "step", "milestones": [30, 40]}, 50)
    assert [step(e) for e in (0, 29, 30, 40, 49)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    cosine = schedule_from_config({"name": "cosine"}, 90)
    assert cosine(0) == 1.0 and cosine(45) == pytest.approx(0.5)


def test_linear_probe_keeps_backbone_frozen_in_eval_mode() -> None:
    bb = random_backbone("resnet18", seed=1)
    probe = C.LinearProbe(bb, 3)
    before = {k: v.clone() for k, v in probe.backbone.state_dict().items()}
    fc_before = probe.fc.weight.detach().clone()
    opt = build_optimizer([{"params": probe.fc.parameters()}], {"name": "lars", "lr": 1.0})
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    C.train_one_epoch(probe, C.make_loader(data, 4, True, num_workers=0), opt, torch.device("cpu"), 0, log_every=0)
    assert probe.training and not probe.backbone.training
    assert all(torch.equal(before[k], v) for k, v in probe.backbone.state_dict().items())  # incl. BN running stats
    assert not torch.equal(fc_before, probe.fc.weight)
    assert set(probe.trainable_state_dict()) == {"fc.weight", "fc.bias"}
    bn = C.LinearProbe(bb, 3, norm="bn").train()
    assert {"norm.running_mean", "norm.running_var"} <= set(bn.trainable_state_dict())
    assert not any(k.startswith("backbone.") for k in bn.trainable_state_dict())
    assert [n for n, p in bn.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_cached_probe_features_are_the_frozen_backbone_on_each_view(tiny_imagenet: Path) -> None:
    """``cached_views: K``: K rows per training image (centre crop first, then K - 1 random crops) equal to the
    frozen backbone on those views; the head on cached features computes what the probe computes on images."""
    torch.manual_seed(0)
    probe = C.LinearProbe(random_backbone("resnet18", seed=2), 3, norm="bn").eval()
    center_tf, crop_tf = C.val_transform(32, 36), C.train_transform(32)
    train_set = C.build_imagenet(tiny_imagenet, "train", crop_tf)
    val_set = C.build_imagenet(tiny_imagenet, "val", center_tf)
    cfg = {"batch_size": 8, "data": {"num_workers": 0}}
    train_loader, val_loader = linear_cli.cached_feature_loaders(probe, train_set, val_set, center_tf, 3, cfg, 0,
                                                                 torch.device("cpu"), False)
    feats, labels = train_loader.dataset.tensors
    n = len(train_set)
    assert feats.shape == (3 * n, 512) and torch.equal(labels, torch.tensor(train_set.targets).repeat(3))
    center = torch.stack([center_tf(Image.open(p).convert("RGB")) for p, _ in train_set.samples])
    with torch.no_grad():
        expected = probe.backbone(center)
    torch.testing.assert_close(feats[:n], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(feats[n:2 * n], feats[:n]) and not torch.allclose(feats[2 * n:], feats[n:2 * n])
    head = C.ProbeHead(probe).eval()
    assert set(head.state_dict()) == set(probe.trainable_state_dict())
    (vx, vy), = [(x, y) for x, y in C.make_loader(val_set, len(val_set), False, num_workers=0)]
    vfeats, vlabels = val_loader.dataset.tensors
    assert torch.equal(vlabels, vy)
    with torch.no_grad():
        torch.testing.assert_close(head(vfeats), probe(vx), rtol=1e-4, atol=1e-5)


def test_shard_sampler_covers_every_sample_once() -> None:
    shards = [list(C.ShardSampler(10, r, 3)) for r in range(3)]
    assert sorted(functools.reduce(operator.iadd, shards, [])) == list(range(10)) and [len(s) for s in shards] == [4, 3, 3]


# --------------------------------------------------------------------------------------------------
# checkpoint intake refusal, through the command lines
# --------------------------------------------------------------------------------------------------
def _bad_checkpoints(tmp: Path) -> dict[str, tuple[Path, str]]:
    sd = build_backbone("resnet18").state_dict()
    empty = tmp / "empty.pth"
    torch.save({}, empty)
    partial = tmp / "partial.pth"
    save_backbone(partial, {k: v for k, v in sd.items() if not k.startswith("layer4.")}, {"arch": "resnet18"})
    wrong = tmp / "wrong_shape.pth"
    bad = dict(sd)
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(bad, wrong)
    return {"empty": (empty, "no state dict found"),
            "partial": (partial, r"\d+ of \d+ backbone tensors missing \(first: layer4\."),
            "mismatch": (wrong, r"1 shape mismatches \(first: layer1\.0\.conv1\.weight")}


@pytest.mark.parametrize("cli,config,overrides", STAGES, ids=["linear", "semisup", "knn"])
def test_stages_refuse_empty_or_mismatched_checkpoints(cli, config: str, overrides: list[str], tiny_imagenet: Path,
                                                       tmp_path: Path) -> None:
    for name, (path, msg) in _bad_checkpoints(tmp_path).items():
        with pytest.raises(SystemExit) as e:
            _run(cli, config, str(path), tiny_imagenet, tmp_path, *overrides)
        text = str(e.value.code)
        assert "checkpoint refused" in text and str(path) in text, name
        assert re.search(msg, text), (name, text)
    assert not (tmp_path / "records").exists()  # nothing was evaluated


def test_refusal_exits_non_zero_from_the_shell(tiny_imagenet: Path, tmp_path: Path) -> None:
    path, _ = _bad_checkpoints(tmp_path)["partial"]
    p = subprocess.run([sys.executable, "-m", "eval_linear", "--config", "mini", "--ckpt", str(path), "--data",
                        str(tiny_imagenet), "--records-dir", str(tmp_path / "rec"), "--out", str(tmp_path / "o")],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode != 0
    assert "refusing to use this checkpoint" in p.stderr and "backbone tensors missing" in p.stderr, p.stderr[-2000:]


# --------------------------------------------------------------------------------------------------
# records, subset files
# --------------------------------------------------------------------------------------------------
def test_concurrent_records_all_survive(tmp_path: Path) -> None:
    bb = random_backbone("resnet18")
    n = 8
    go = threading.Barrier(n)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            cfg = {"protocol": "k20", "i": i}
            ident = RunIdentity("eval_knn", 1, cfg, {"name": "mini", "fingerprint": "f" * 64}, bb.sha256, i)
            st = C.Stage(name="eval_knn", cfg=cfg, bb=bb, info=DistInfo(), out=tmp_path / f"run{i}",
                         data_root=tmp_path, seed=i, start_time="2026-01-01T00:00:00+00:00", identity=ident,
                         folder=RunFolder(tmp_path / f"run{i}", ident))
            st.folder.open(fresh=False)
            go.wait()
            st.finish("knn", "k20", {"top1": float(i)}, tmp_path / "records")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    recs = _records(tmp_path / "records")
    assert len(recs) == n and sorted(r["seed"] for r in recs) == list(range(n))
    assert all(r["eval"] == "knn" and r["method"] == "random" and r["dataset"] == "mini" for r in recs)
    assert len({r["run_id"] for r in recs}) == n and len({r["group"] for r in recs}) == n  # config "i" differs
    assert not list((tmp_path / "records").glob(".*"))  # no temporary files left


def test_subset_file_with_unknown_name_is_rejected(mini_data: Path, tmp_path: Path) -> None:
    root = mini_data / "imagenet"
    good = (root / "1percent.txt").read_text().split()[0]
    bad = tmp_path / "1percent.txt"
    bad.write_text(f"{good}\nn01440764_10026.JPEG\n")  # a real ImageNet name, absent from this copy
    with pytest.raises(SystemExit) as e:
        _run(semisup_cli, "mini_1pct", "random:resnet18", root, tmp_path, "--subset", str(bad), *TINY)
    assert f"{bad}:2" in str(e.value.code) and "'n01440764_10026.JPEG' is not an image of" in str(e.value.code)
    with pytest.raises(SystemExit, match=r"subset file: .*nope\.txt: no such file"):
        _run(semisup_cli, "mini_1pct", "random:resnet18", root, tmp_path, "--subset", "nope.txt", *TINY)
    assert not (tmp_path / "records").exists()


# --------------------------------------------------------------------------------------------------
# end to end on tiny data
# --------------------------------------------------------------------------------------------------
def test_linear_cli_end_to_end_resumes_after_interruption(tiny_imagenet: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = C.train_one_epoch

    def flaky(*a, **k):
        calls.append(a[4])
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated preemption during epoch 2")
        return real(*a, **k)

    monkeypatch.setattr(C.run, "train_one_epoch", flaky)  # the loop fit() calls
    with pytest.raises(SystemExit, match=r"eval_linear: interrupted \(Ctrl-C\)") as e:  # one line, status 130
        _run(linear_cli, "mini", "random:resnet18", tiny_imagenet, tmp_path, *TINY, "save_every=1")
    assert e.value.code == 130
    assert torch.load(tmp_path / "out" / "checkpoint.pth", weights_only=False)["epoch"] == 1
    _run(linear_cli, "mini", "random:resnet18", tiny_imagenet, tmp_path, *TINY, "save_every=1")
    assert calls == [0, 1, 1]  # epoch 0 was not trained again
    (rec,) = _records(tmp_path / "records")
    assert (rec["eval"], rec["protocol"], rec["dataset"], rec["method"]) == ("linear", "mini", tiny_imagenet.name,
                                                                              "random")
    assert rec["data"]["files"] == 36 and rec["status"] == "ok"
    assert set(rec["metrics"]) == {"top1", "top5"} and 0 <= rec["metrics"]["top1"] <= rec["metrics"]["top5"] <= 100
    assert rec["n_val"] == 12 and len(rec["history"]) == 2
    _run(linear_cli, "mini", "random:resnet18", tiny_imagenet, tmp_path, *TINY, "save_every=1")  # finished: no new record
    assert len(_records(tmp_path / "records")) == 1


def test_linear_lars_recipe_and_pretrained_backbone(tiny_imagenet: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "lewel_x" / "backbone.pth"
    save_backbone(ckpt, build_backbone("resnet18").state_dict(),
                  {"arch": "resnet18", "method": "lewel_m", "exp": "lewel_x", "epochs": 3})
    _run(linear_cli, "lewel_m_lars", str(ckpt), tiny_imagenet, tmp_path, *TINY)
    (rec,) = _records(tmp_path / "records")
    assert (rec["protocol"], rec["method"], rec["pretrain_exp"], rec["pretrain_epochs"]) == \
        ("lewel_m_lars", "lewel_m", "lewel_x", 3)
    assert rec["config"]["optim"]["name"] == "lars" and rec["config"]["schedule"]["name"] == "cosine"
    assert len(rec["checkpoint_sha256"]) == 64


def test_semisup_cli_end_to_end_on_mini_data(mini_data: Path, tmp_path: Path) -> None:
    """The mini generator's own 1percent.txt (found in the data root), full val set."""
    root = mini_data / "imagenet"
    n_subset = len((root / "1percent.txt").read_text().split())
    n_val = sum(1 for _ in (root / "val").glob("*/*.JPEG"))
    _run(semisup_cli, "mini_1pct", "random:resnet18", root, tmp_path, *TINY)
    (rec,) = _records(tmp_path / "records")
    assert (rec["eval"], rec["protocol"], rec["dataset"]) == ("semisup", "1pct", "mini")
    assert rec["n_train"] == n_subset and rec["n_val"] == n_val and set(rec["metrics"]) == {"top1", "top5"}
    assert rec["subset_file"] == str(root / "1percent.txt")
    assert rec["config"]["optim"]["backbone_lr"] == 1e-4 and rec["config"]["optim"]["classifier_lr"] == 1.0


def test_knn_cli_end_to_end_on_mini_data(mini_data: Path, tmp_path: Path) -> None:
    root = mini_data / "imagenet"
    _run(knn_cli, "mini", "random:resnet18", root, tmp_path, "batch_size=200", *TINY_DATA[1:])
    (rec,) = _records(tmp_path / "records")
    assert (rec["eval"], rec["protocol"], rec["dataset"], rec["k"]) == ("knn", "k20", "mini", 20)
    assert set(rec["metrics"]) == {"top1"} and 0 <= rec["metrics"]["top1"] <= 100
    assert rec["n_train"] == sum(1 for _ in (root / "train").glob("*/*.JPEG")) and rec["n_val"] > 0


def test_linear_cli_ddp_two_ranks_gloo(tiny_imagenet: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU ranks (gloo): sharded data, all-reduced counts, one record from rank 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "eval_linear", "--config", "mini", "--ckpt", "random:resnet18", "--data",
                        str(tiny_imagenet), "--out", str(tmp_path / "out"), "--records-dir", str(tmp_path / "records"),
                        *TINY, "epochs=1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, env=env, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    (rec,) = _records(tmp_path / "records")
    assert rec["world_size"] == 2 and rec["n_val"] == 12 and rec["n_train"] == 24


def test_default_output_folder_follows_the_experiment() -> None:
    """runs/<checkpoint>/<stage>/<config>-<data>-s<seed>-<run id>: the run's identity picks its folder."""
    from lewel_bench.checkpoint import Backbone
    from lewel_bench.utils import runs_dir

    runs = runs_dir()
    ident = RunIdentity("eval_knn", 1, {"k": 20}, {"name": "mini", "fingerprint": "a" * 64}, "s" * 64, 3)
    rid = ident.run_id[:8]
    assert default_out_dir(random_backbone("resnet18"), "eval_knn", "mini", ident) == \
        runs / f"random_resnet18/eval_knn/mini-mini-s3-{rid}"
    bb = Backbone({}, "resnet50", meta={"exp": "other"}, path=str(runs / "lewel_m" / "backbone.pth"))
    assert default_out_dir(bb, "eval_linear", "lewel_m_lars", ident) == runs / f"lewel_m/eval_linear/lewel_m_lars-mini-s3-{rid}"
    bb = Backbone({}, "resnet50", meta={}, path="/models/r50_torchvision.pth")
    assert default_out_dir(bb, "eval_semisup", "1pct", ident) == runs / f"r50_torchvision/eval_semisup/1pct-mini-s3-{rid}"
    other = RunIdentity("eval_knn", 1, {"k": 20}, {"name": "mini", "fingerprint": "b" * 64}, "s" * 64, 3)
    assert other.run_id != ident.run_id  # other data: another folder


@pytest.mark.parametrize("norm", ["none", "bn"])
def test_finetune_model_groups_backbone_and_classifier_lrs(norm: str) -> None:
    net = C.build_finetune_model(random_backbone("resnet18"), 7, norm=norm)
    back, cls = semisup_cli.param_groups(net, 1e-4, 1.0)
    assert (back["lr"], cls["lr"]) == (1e-4, 1.0)
    assert {id(p) for p in cls["params"]} == {id(p) for n, p in net.named_parameters() if n.startswith("fc.")}
    assert len(cls["params"]) == 2 and len(back["params"]) == len(list(net.parameters())) - 2
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


# --------------------------------------------------------------------------------------------------
# the probe's input: GAP or CGH's hypercolumn
# --------------------------------------------------------------------------------------------------
def _hyper_part(seed: int = 3) -> dict[str, torch.Tensor]:
    """A 'hypercolumn' transfer part for a ResNet-18 (res4 256 + res5 512 channels -> 512), BN with statistics."""
    g = torch.Generator().manual_seed(seed)
    return {"reduce.0.weight": torch.randn(512, 768, 1, 1, generator=g) * 0.05,
            "reduce.1.weight": torch.rand(512, generator=g) + 0.5, "reduce.1.bias": torch.randn(512, generator=g),
            "reduce.1.running_mean": torch.randn(512, generator=g), "reduce.1.running_var": torch.rand(512, generator=g) + 0.5,
            "reduce.1.num_batches_tracked": torch.tensor(7)}


def test_hypercolumn_probe_features_are_the_pooled_hypercolumn() -> None:
    """``hypercolumn``: concat(GAP(res4), GAP(res5)) at a factor-2 size (64 px: res4 4x4, res5 2x2), 256 + 512 = 768-d;
    ``hypercolumn_learned``: GAP(ReLU(BN(1x1 conv(hypercolumn)))) with the checkpoint part's weights and statistics."""
    from lewel_bench.checkpoint import BackboneError
    from lewel_bench.models import backbone_features

    bb = random_backbone("resnet18", seed=4)
    x = torch.randn(3, 3, 64, 64)
    net = build_backbone("resnet18").eval()
    net.load_state_dict(bb.state_dict)
    with torch.no_grad():
        f = backbone_features(net, x, ("res4", "res5"))
        want = torch.cat([f["res4"].mean((2, 3)), f["res5"].mean((2, 3))], 1)
        probe = C.LinearProbe(bb, 5, feature="hypercolumn").eval()
        assert probe.fc.in_features == 768 and probe.backbone.dim == 768
        torch.testing.assert_close(probe.backbone(x), want, rtol=1e-5, atol=1e-6)
        assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
        part = _hyper_part()
        bb.parts = {"hypercolumn": part}
        learned = C.LinearProbe(bb, 5, feature="hypercolumn_learned").eval()
        h = torch.cat([F.interpolate(f["res4"], size=(2, 2), mode="bilinear", align_corners=False), f["res5"]], 1)
        y = F.conv2d(h, part["reduce.0.weight"])
        y = (y - part["reduce.1.running_mean"][:, None, None]) / torch.sqrt(part["reduce.1.running_var"][:, None, None] + 1e-5)
        y = torch.relu(y * part["reduce.1.weight"][:, None, None] + part["reduce.1.bias"][:, None, None])
        assert learned.fc.in_features == 512
        torch.testing.assert_close(learned.backbone(x), y.mean((2, 3)), rtol=1e-4, atol=1e-5)
        gap = C.LinearProbe(bb, 5).eval()
        torch.testing.assert_close(gap.backbone(x), f["res5"].mean((2, 3)), rtol=1e-5, atol=1e-6)
    bb.parts = {}
    with pytest.raises(BackboneError, match="needs the checkpoint's 'hypercolumn' part"):
        C.LinearProbe(bb, 5, feature="hypercolumn_learned")
    bb.parts = {"hypercolumn": {**part, "reduce.0.weight": torch.zeros(512, 100, 1, 1)}}
    with pytest.raises(BackboneError, match="reduces 100 channels"):
        C.LinearProbe(bb, 5, feature="hypercolumn_learned")


def test_linear_cli_hypercolumn_features_are_recorded(tiny_imagenet: Path, tmp_path: Path) -> None:
    """The record says which input the probe read; the learned variant takes the part from the checkpoint file
    (and says so in ``transfer``); a checkpoint without it, or a random init, is refused in one line."""
    _run(linear_cli, "mini", "random:resnet18", tiny_imagenet, tmp_path, *TINY, "feature=hypercolumn")
    (rec,) = _records(tmp_path / "records")
    assert (rec["feature"], rec["feature_dim"], rec["config"]["feature"]) == ("hypercolumn", 768, "hypercolumn")
    ckpt = tmp_path / "cgh_x" / "backbone.pth"
    save_backbone(ckpt, build_backbone("resnet18").state_dict(),
                  {"arch": "resnet18", "method": "cgh", "exp": "cgh_x", "epochs": 2}, {"hypercolumn": _hyper_part()})
    out = tmp_path / "learned"
    _run(linear_cli, "cgh_sgd", str(ckpt), tiny_imagenet, out, *TINY, "feature=hypercolumn_learned")
    (rec,) = _records(out / "records")
    assert (rec["protocol"], rec["feature"], rec["feature_dim"], rec["method"]) == ("cgh_sgd", "hypercolumn_learned", 512, "cgh")
    assert rec["transfer"] == {"trunk": len(build_backbone("resnet18").state_dict()), "hypercolumn": 6}
    assert rec["config"]["optim"]["lr"] == 0.3 and rec["config"]["schedule"]["name"] == "cosine"
    plain = tmp_path / "plain" / "backbone.pth"
    save_backbone(plain, build_backbone("resnet18").state_dict(), {"arch": "resnet18", "method": "mocov2", "exp": "p"})
    for i, (ck, msg) in enumerate(((str(plain), "no transfer part 'hypercolumn'"),
                                   ("random:resnet18", "has no transfer parts"))):
        with pytest.raises(SystemExit, match=msg):
            _run(linear_cli, "mini", ck, tiny_imagenet, tmp_path / f"bad{i}", *TINY, "feature=hypercolumn_learned")
    with pytest.raises(SystemExit, match="feature must be gap | hypercolumn | hypercolumn_learned"):
        _run(linear_cli, "mini", "random:resnet18", tiny_imagenet, tmp_path / "bad2", *TINY, "feature=hyper")


def test_auto_recipe_of_a_cgh_checkpoint_is_its_own() -> None:
    from lewel_bench.checkpoint import Backbone

    assert linear_cli.recipe_for(Backbone({}, "resnet50", meta={"method": "cgh"})) == "cgh_sgd"
    assert linear_cli.recipe_for(Backbone({}, "resnet50", meta={"method": "mocov2"})) == "lewel_m_lars"
