"""The shared home: atomic I/O, configs and overrides, the checkpoint intake, records."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
import torchvision

from lewel_bench import checkpoint as ck
from lewel_bench.config import ConfigError, apply_overrides, load_config
from lewel_bench.io import atomic_open, atomic_write_json
from lewel_bench.records import (
    RecordError,
    load_records,
    make_record,
    record_for_backbone,
    write_record,
)
from lewel_bench.registry import Registry


def test_atomic_open_keeps_old_file_on_error(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(p, "w") as f:
        f.write("partial")
        raise RuntimeError("crash mid-write")
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_config_base_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.1, wd: 1.0e-4}\nepochs: 10\n")
    (tmp_path / "exp.yaml").write_text("_base_: base.yaml\noptim: {lr: 0.2}\n")
    cfg = load_config("exp", tmp_path, ["epochs=3", "optim.wd=0"])
    assert cfg["optim"] == {"lr": 0.2, "wd": 0} and cfg["epochs"] == 3
    with pytest.raises(ConfigError, match="optim.lr"):
        apply_overrides(cfg, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["epochs"])
    with pytest.raises(ConfigError, match="Did you mean: exp"):
        load_config("exq", tmp_path)
    # scientific notation without a dot is a float (PyYAML alone reads "5e-4" as a string), in files too
    (tmp_path / "sci.yaml").write_text("_base_: base.yaml\noptim: {wd: 5e-4}\n")
    assert load_config("sci", tmp_path, ["optim.lr=1e-2"])["optim"] == {"lr": 0.01, "wd": 0.0005}
    with pytest.raises(ConfigError, match=r"optim.lr is float \(0\.2 in config\), got str 'fast'"):
        apply_overrides(cfg, ["optim.lr=fast"])


def test_registry_suggests_close_names() -> None:
    reg: Registry = Registry("method")
    reg.register("lewel_m")(object)
    assert reg.get("lewel_m") is object
    with pytest.raises(KeyError, match="did you mean lewel_m"):
        reg.get("lewel_n")


def _r50_sd() -> dict:
    torch.manual_seed(0)
    return torchvision.models.resnet50().state_dict()


def test_intake_formats_agree(tmp_path: Path) -> None:
    sd = _r50_sd()
    # plain torchvision (with fc), DDP-prefixed, backbone.pth, full pretraining checkpoint
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    ck.save_backbone(tmp_path / "backbone.pth", sd, {"method": "byol", "epochs": 1, "exp": "byol"})
    full = {"model": {f"online.encoder.{k}": v for k, v in sd.items()} | {"online.head.w": torch.zeros(3)},
            "meta": {"format": ck.PRETRAIN_FORMAT, "backbone_prefix": "online.encoder.", "arch": "resnet50"}}
    torch.save(full, tmp_path / "full.pth")
    loaded = [ck.load_backbone(tmp_path / n) for n in ("plain.pth", "ddp.pth", "backbone.pth", "full.pth")]
    for bb in loaded:
        assert bb.arch == "resnet50" and not any(k.startswith("fc.") for k in bb.state_dict)
        for k, v in bb.state_dict.items():
            assert torch.equal(v, sd[k]), k
    # the prefix taken is the full key path in the file (what --ckpt-prefix takes back), with the layout that chose it
    assert [(b.layout, b.prefix) for b in loaded] == [
        ("torchvision", ""), ("generic", "state_dict.module."), ("lewel_bench_backbone", "state_dict."),
        ("lewel_bench_pretrain", "model.online.encoder.")]
    model = torchvision.models.resnet50()
    missing, unexpected = model.load_state_dict(torch.load(tmp_path / "backbone.pth")["state_dict"], strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected


def test_intake_refuses_partial_empty_and_mismatched(tmp_path: Path) -> None:
    sd = _r50_sd()
    torch.save({k: v for i, (k, v) in enumerate(sd.items()) if i % 7 != 3}, tmp_path / "partial.pth")
    with pytest.raises(ck.BackboneError, match=r"\d+ of \d+ backbone tensors missing"):
        ck.load_backbone(tmp_path / "partial.pth")
    torch.save({}, tmp_path / "empty.pth")
    with pytest.raises(ck.BackboneError, match="no state dict found|no ResNet backbone"):
        ck.load_backbone(tmp_path / "empty.pth")
    bad = dict(sd)
    bad["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ck.BackboneError, match="shape mismatch"):
        ck.load_backbone(tmp_path / "shape.pth", arch="resnet50")
    with pytest.raises(ck.BackboneError, match="not found"):
        ck.load_backbone(tmp_path / "nope.pth")
    two = {f"encoder_q.{k}": v for k, v in sd.items()} | {f"encoder_k.{k}": v for k, v in sd.items()}
    torch.save(two, tmp_path / "two.pth")
    with pytest.raises(ck.BackboneError, match="several backbones"):
        ck.load_backbone(tmp_path / "two.pth")
    assert ck.load_backbone(tmp_path / "two.pth", prefix="encoder_k.").prefix == "encoder_k."


def test_random_backbone_is_labelled() -> None:
    bb = ck.resolve_backbone("random:resnet18", seed=3)
    assert bb.meta["method"] == "random" and bb.arch == "resnet18"
    again = ck.resolve_backbone("random:resnet18", seed=3)
    assert all(torch.equal(bb.state_dict[k], again.state_dict[k]) for k in bb.state_dict)


def _record(i: int) -> dict:
    return make_record(method="lewel_b", pretrain_exp="lewel_b", pretrain_epochs=100, eval="linear",
                       protocol="lewel_b_sgd", metrics={"top1": float(i)}, seed=i, checkpoint_sha256="x",
                       config={}, start_time="2026-01-01T00:00:00+00:00")


def test_records_concurrent_writes_all_survive(tmp_path: Path) -> None:
    threads = [threading.Thread(target=write_record, args=(_record(i), tmp_path)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recs, problems = load_records(tmp_path)
    assert not problems and sorted(r["seed"] for r in recs) == list(range(16))


def test_records_malformed_are_reported(tmp_path: Path) -> None:
    write_record(_record(0), tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "partial.json").write_text(json.dumps({"method": "x"}))
    recs, problems = load_records(tmp_path)
    assert len(recs) == 1 and len(problems) == 2
    assert any("partial.json" in p and "missing fields" in p for p in problems)
    with pytest.raises(RecordError):
        write_record({"method": "x"}, tmp_path)


def test_record_for_backbone_takes_meta(tmp_path: Path) -> None:
    bb = ck.resolve_backbone("random:resnet18")
    rec = record_for_backbone(bb, eval="knn", protocol="k20", metrics={"top1": 10.0}, seed=0, config={},
                              start_time="t")
    assert rec["method"] == "random" and rec["checkpoint_sha256"].startswith("random-init")
