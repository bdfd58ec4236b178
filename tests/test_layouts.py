"""Checkpoint layouts of the field's published codes (lewel_bench.layouts): one file per layout made here with the
real key names and wrappers (ResNet-18 trunks, random weights), each through an evaluation CLI (eval_knn), both
converters and the inspect tool: the encoder its authors evaluate comes out exactly, and the record names the
layout; the official MCL bundle into the torchvision RetinaNet, CGH's hypercolumn conv into its part; the
refusals (missing / misshapen trunk tensors, two layouts, several trunks and no layout, non-finite values).

The files are built from modules laid out as each code lays them out (attribute names from the public code, the
DistributedDataParallel wrapper as a ``module`` attribute); every tensor is replaced by a compact random one (one
random value per leading index, expanded), so each file is a few kilobytes and a wrong encoder or a swapped
tensor cannot pass unnoticed."""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import pickle
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import eval_knn.cli as knn_cli
from helpers import make_imagenet, records_in
from lewel_bench import layouts as L
from lewel_bench.checkpoint import BackboneError, describe_checkpoint, load_backbone, resolve_backbone
from lewel_bench.utils import REPO_ROOT

with torch.device("meta"):
    TRUNK = [k for k in torchvision.models.resnet18().state_dict() if not k.startswith("fc.")]
KNN_TINY = ["k=3", "batch_size=8", "data.crop_size=32", "data.resize_size=36", "data.num_workers=0"]


# ------------------------------------------------------------------------------------------------
# building blocks: modules named as the public codes name them
# ------------------------------------------------------------------------------------------------
class Tree(nn.Module):
    """A module with the given attribute names: modules, parameters and (persistent) buffers."""

    def __init__(self, **children: Any) -> None:
        super().__init__()
        for name, v in children.items():
            if isinstance(v, nn.Parameter):
                self.register_parameter(name, v)
            elif torch.is_tensor(v):
                self.register_buffer(name, v)
            else:
                self.add_module(name, v)


def ddp(m: nn.Module) -> nn.Module:
    """DistributedDataParallel's state-dict prefix: the wrapped model under ``module``."""
    return Tree(module=m)


_RESNET18: list[nn.Module] = []


def resnet(fc: nn.Module | None = None) -> nn.Module:
    """A torchvision ResNet-18 (the trunk every fixture's evaluated encoder is), on the meta device (no memory: the
    values are :class:`Compact`'s); ``fc`` replaces its classifier."""
    if not _RESNET18:
        with torch.device("meta"):
            _RESNET18.append(torchvision.models.resnet18())
    r = copy.deepcopy(_RESNET18[0])
    if fc is not None:
        r.fc = fc
    return r


def mlp(*dims: int, bn: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(a, b, bias=not bn))
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(b), nn.ReLU()] if bn else [nn.ReLU()]
    return nn.Sequential(*layers)


def conv_module(cin: int, cout: int, k: int) -> nn.Module:
    """mmcv's ConvModule with a BN: ``conv`` (no bias) and ``bn``."""
    return Tree(conv=nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), bn=nn.BatchNorm2d(cout))


class Compact:
    """Replaces every tensor of state dicts by a compact random one (``rand(n0)`` expanded over the other dims),
    the same replacement for the same parameter or buffer (aliased modules stay aliased: state dicts are taken with
    ``keep_vars``); shapes and dtypes are kept, and the values keep a ResNet's activations bounded (positive conv
    weights over their fan-in, BN variances near 1)."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def tensor(self, name: str, t: torch.Tensor) -> torch.Tensor:
        key = id(t)
        if key in self.memo:
            return self.memo[key][1]
        if not t.is_floating_point():
            out = torch.randint(0, 1000, t.shape, generator=self.g, dtype=t.dtype, device="cpu")
        else:
            n = t.shape[0] if t.ndim else 1
            base = torch.rand(n, generator=self.g, device="cpu")
            if name.endswith("running_var"):
                base = base + 0.5
            elif t.ndim >= 2:
                base = (base + 0.5) / max(1, t[0].numel())
            elif name.endswith("weight"):
                base = base + 0.5
            else:
                base = (base - 0.5) * 0.2
            out = base.reshape(()) if t.ndim == 0 else base.reshape(n, *([1] * (t.ndim - 1))).expand(t.shape)
        self.memo[key] = (t, out)  # t kept alive: its id is never reused while this memo lives
        return out

    def sd(self, m: nn.Module | dict) -> dict[str, torch.Tensor]:
        sd = m.state_dict(keep_vars=True) if isinstance(m, nn.Module) else m
        return {k: self.tensor(k, v) for k, v in sd.items()}

    def trunk(self, r: nn.Module) -> dict[str, torch.Tensor]:
        """The ResNet ``r``'s trunk in torchvision names, as written into the file (its tensors' replacements)."""
        return {k: self.tensor(k, v) for k, v in r.state_dict(keep_vars=True).items() if k in TRUNK}


@dataclass
class Case:
    """A layout fixture: the file, the layout and prefix the intake must report, the trunk it must take, the
    transfer parts that trunk's encoder carries, and what the file says of its training."""

    name: str
    path: Path
    layout: str
    prefix: str
    trunk: dict[str, torch.Tensor]
    parts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    epochs: int | None = None
    others: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # prefix -> trunk of another encoder


def _save(path: Path, obj: Any) -> Path:
    torch.save(obj, path)
    return path


# ------------------------------------------------------------------------------------------------
# one builder per published layout
# ------------------------------------------------------------------------------------------------
def torchvision_plain(d: Path, c: Compact) -> Case:
    """torchvision / timm / BYOL-convert: the bare state dict with fc (BYOL's conversion: no num_batches_tracked)."""
    r = resnet()
    sd = {k: v for k, v in c.sd(r).items() if not k.endswith("num_batches_tracked")}
    return Case("torchvision_plain", _save(d / "resnet18.pth", sd), "torchvision", "",
                {k: v for k, v in c.trunk(r).items() if not k.endswith("num_batches_tracked")})


def torchvision_wrapped(d: Path, c: Compact) -> Case:
    """DenseCL / OpenSelfSup extracted backbone, SimCLR conversion: torchvision names under 'state_dict'."""
    r = resnet(nn.Identity())
    return Case("torchvision_wrapped", _save(d / "extracted.pth", {"state_dict": c.sd(r), "author": "DenseCL"}),
                "torchvision", "state_dict.", c.trunk(r))


def moco(d: Path, c: Compact) -> Case:
    q, k = resnet(), resnet()
    for e in (q, k):
        e.fc = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))
    model = ddp(Tree(encoder_q=q, encoder_k=k, queue=torch.randn(128, 16), queue_ptr=torch.zeros(1, dtype=torch.long)))
    obj = {"epoch": 200, "arch": "resnet18", "state_dict": c.sd(model), "optimizer": {"state": {}, "param_groups": []}}
    return Case("moco", _save(d / "moco_v2.pth.tar", obj), "moco", "state_dict.module.encoder_q.", c.trunk(q),
                epochs=200, others={"state_dict.module.encoder_k.": c.trunk(k)})


def mocov3(d: Path, c: Compact) -> Case:
    b, m = resnet(mlp(512, 64, 32)), resnet(mlp(512, 64, 32))
    model = ddp(Tree(base_encoder=b, momentum_encoder=m, predictor=mlp(32, 64, 32)))
    obj = {"epoch": 100, "arch": "resnet18", "state_dict": c.sd(model), "optimizer": {}, "scaler": {}}
    return Case("mocov3", _save(d / "mocov3.pth.tar", obj), "mocov3", "state_dict.module.base_encoder.", c.trunk(b),
                epochs=100, others={"state_dict.module.momentum_encoder.": c.trunk(m)})


def simsiam(d: Path, c: Compact) -> Case:
    e = resnet(mlp(512, 512, 512, 64))
    model = ddp(Tree(encoder=e, predictor=mlp(64, 32, 64)))
    obj = {"epoch": 100, "arch": "resnet18", "state_dict": c.sd(model), "optimizer": {}}
    return Case("simsiam", _save(d / "simsiam.pth.tar", obj), "simsiam", "state_dict.module.encoder.", c.trunk(e),
                epochs=100)


def swav(d: Path, c: Compact) -> Case:
    r = resnet(nn.Identity())
    r.projection_head = mlp(512, 64, 16)
    r.prototypes = nn.Linear(16, 30, bias=False)
    return Case("swav", _save(d / "swav_800ep_pretrain.pth.tar", c.sd(ddp(r))), "swav", "module.", c.trunk(r))


def dino(d: Path, c: Compact) -> Case:
    def wrapper() -> tuple[nn.Module, nn.Module]:
        r = resnet(nn.Identity())
        return ddp(Tree(backbone=r, head=Tree(mlp=mlp(512, 64, 16, bn=False), last_layer=nn.Linear(16, 30)))), r

    student, rs = wrapper()
    teacher, rt = wrapper()
    obj = {"student": c.sd(student), "teacher": c.sd(teacher), "optimizer": {}, "epoch": 100,
           "args": argparse.Namespace(arch="resnet18", out_dim=30), "dino_loss": c.sd({"center": torch.zeros(1, 30)})}
    return Case("dino", _save(d / "dino_resnet18_full_checkpoint.pth", obj), "dino", "teacher.module.backbone.",
                c.trunk(rt), epochs=100, others={"student.module.backbone.": c.trunk(rs)})


def barlowtwins(d: Path, c: Compact) -> Case:
    r = resnet(nn.Identity())
    model = ddp(Tree(backbone=r, projector=mlp(512, 64, 64), bn=nn.BatchNorm1d(64, affine=False)))
    obj = {"epoch": 300, "model": c.sd(model), "optimizer": {}}
    return Case("barlowtwins", _save(d / "barlowtwins_checkpoint.pth", obj), "barlowtwins", "model.module.backbone.",
                c.trunk(r), epochs=300)


def vicreg(d: Path, c: Compact) -> Case:
    r = resnet(nn.Identity())
    obj = {"epoch": 100, "model": c.sd(ddp(Tree(backbone=r, projector=mlp(512, 64, 64)))), "optimizer": {}}
    return Case("vicreg", _save(d / "model.pth", obj), "vicreg", "model.module.backbone.", c.trunk(r), epochs=100)


def _lewel_encoder() -> tuple[nn.Module, nn.Module]:
    """LEWEL's EncoderObj: backbone (no fc) and its ObjectNeck (1x1 Conv1d MLPs)."""
    r = resnet(nn.Identity())
    def conv_mlp() -> nn.Module:
        return Tree(mlp=nn.Sequential(nn.Conv1d(512, 64, 1), nn.BatchNorm1d(64), nn.ReLU(), nn.Conv1d(64, 32, 1)))

    return Tree(backbone=r, neck=Tree(proj=conv_mlp(), proj_obj=conv_mlp())), r


def lewel_official(d: Path, c: Compact) -> Case:
    (on, ron), (tg, rtg) = _lewel_encoder(), _lewel_encoder()
    model = ddp(Tree(online_net=on, target_net=tg, predictor=Tree(mlp=nn.Sequential(nn.Conv1d(32, 32, 1))),
                     predictor_obj=Tree(mlp=nn.Sequential(nn.Conv1d(32, 32, 1)))))
    obj = {"epoch": 100, "arch": "resnet18", "state_dict": c.sd(model), "best_acc1": 0.0, "optimizer": {},
           "scaler": None}
    return Case("lewel_official", _save(d / "lewelb_eman_100ep.pth.tar", obj), "lewel_official",
                "state_dict.module.online_net.backbone.", c.trunk(ron), epochs=100,
                others={"state_dict.module.target_net.backbone.": c.trunk(rtg)})


def lewel_official_m(d: Path, c: Compact) -> Case:
    """A MoCo-style LEWEL (encoder_q.backbone): MoCo's layout matches too; this one refines it."""
    (q, rq), (k, _) = _lewel_encoder(), _lewel_encoder()
    model = ddp(Tree(encoder_q=q, encoder_k=k, queue=torch.randn(32, 16), queue_ptr=torch.zeros(1, dtype=torch.long)))
    obj = {"epoch": 200, "arch": "resnet18", "state_dict": c.sd(model), "optimizer": {}}
    return Case("lewel_official_m", _save(d / "lewelm.pth.tar", obj), "lewel_official_m",
                "state_dict.module.encoder_q.backbone.", c.trunk(rq), epochs=200)


def cgh_official(d: Path, c: Compact) -> tuple[Case, dict]:
    def distiller() -> nn.Module:  # FeatDistiller on [layer3, layer4] of a ResNet-18: 256 + 512 channels -> 512
        return Tree(reg_conv=nn.Sequential(nn.Conv2d(768, 512, 1, bias=False), nn.BatchNorm2d(512), nn.ReLU()),
                    projector=mlp(512, 64, 32, bn=False), scale=nn.Parameter(torch.tensor([0.25, 1.0])))

    q, k = resnet(mlp(512, 64, 128, bn=False)), resnet(mlp(512, 64, 128, bn=False))
    hq, hk = distiller(), distiller()
    model = ddp(Tree(encoder_q=q, encoder_k=k, hypercols_proj_q=hq, hypercols_proj_k=hk,
                     queue=torch.randn(128, 16), queue_ptr=torch.zeros(1, dtype=torch.long)))
    obj = {"epoch": 200, "arch": "resnet18", "best_acc1": 0.0, "net": c.sd(model), "optimizer0": {}}
    part = {f"reduce.{k}": c.tensor(k, v) for k, v in hq.reg_conv.state_dict(keep_vars=True).items()}
    return Case("cgh_official", _save(d / "cgh_0199.pth.tar", obj), "cgh_official", "net.module.encoder_q.",
                c.trunk(q), parts={"hypercolumn": part}, epochs=200), {"hypercolumn_k": hk}


def _mcl_encoder(c: Compact) -> tuple[nn.Module, nn.Module, dict, dict, list[nn.Module]]:
    """MCL's encoder: nn.Sequential(ResNet, FPN (lateral_convs / fpn_convs ConvModules, res2-res5 -> 256),
    DetConvGpNonLinearHead (cls_convs, mlp)); returns it, the trunk, the FPN and box-head parts as MCL's converter
    names them (detectron2's names), and the FPN module."""
    r = resnet(nn.Identity())
    fpn = Tree(lateral_convs=nn.ModuleList(conv_module(ch, 256, 1) for ch in (64, 128, 256, 512)),
               fpn_convs=nn.ModuleList(conv_module(256, 256, 3) for _ in range(4)))
    head = Tree(cls_convs=nn.ModuleList(conv_module(256, 256, 3) for _ in range(4)), mlp=mlp(256, 64, 32))
    fpn_part, box_part = {}, {}
    for i in range(4):
        for mod, name in ((fpn.lateral_convs[i], f"fpn_lateral{i + 2}"), (fpn.fpn_convs[i], f"fpn_output{i + 2}")):
            fpn_part[f"{name}.weight"] = mod.conv.weight
            fpn_part.update({f"{name}.norm.{k}": v for k, v in mod.bn.state_dict(keep_vars=True).items()})
        box_part[f"conv{i + 1}.weight"] = head.cls_convs[i].conv.weight
        bn = head.cls_convs[i].bn.state_dict(keep_vars=True)
        box_part.update({f"conv{i + 1}.norm.{k}": v for k, v in bn.items()})
    return nn.Sequential(r, fpn, head), r, fpn_part, box_part, fpn


def mcl_official(d: Path, c: Compact) -> tuple[Case, dict]:
    enc_q, rq, fpn_q, box_q, fpn_module = _mcl_encoder(c)
    enc_k, rk, _, _, _ = _mcl_encoder(c)
    model = Tree(encoder_q=enc_q, encoder_k=enc_k, backbone=rq,
                 head=Tree(predictors=nn.ModuleList(mlp(32, 64, 32) for _ in range(4))))
    obj = {"meta": {"epoch": 400, "iter": 4000, "mmcv_version": "1.0.2"}, "state_dict": c.sd(model), "optimizer": {}}
    parts = {"fpn": {k: c.tensor(k, v) for k, v in fpn_q.items()},
             "box_head": {k: c.tensor(k, v) for k, v in box_q.items()}}
    return Case("mcl_official", _save(d / "mcl_400ep.pth", obj), "mcl_official", "state_dict.backbone.", c.trunk(rq),
                parts=parts, epochs=400, others={"state_dict.encoder_k.0.": c.trunk(rk)}), {"fpn": fpn_module}


def densecl_official(d: Path, c: Compact) -> Case:
    def encoder() -> tuple[nn.Module, nn.Module]:
        r = resnet(nn.Identity())
        neck = Tree(mlp=nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128)),
                    mlp2=nn.Sequential(nn.Conv2d(512, 512, 1), nn.ReLU(), nn.Conv2d(512, 128, 1)))
        return nn.Sequential(r, neck), r

    (q, rq), (k, rk) = encoder(), encoder()
    model = Tree(encoder_q=q, encoder_k=k, backbone=rq, queue=torch.randn(128, 16),
                 queue_ptr=torch.zeros(1, dtype=torch.long), queue2=torch.randn(128, 16),
                 queue2_ptr=torch.zeros(1, dtype=torch.long))
    obj = {"meta": {"epoch": 200, "iter": 2000}, "state_dict": c.sd(model), "optimizer": {}}
    return Case("densecl_official", _save(d / "densecl_r18_200ep.pth", obj), "densecl_official", "state_dict.backbone.",
                c.trunk(rq), epochs=200, others={"state_dict.encoder_k.0.": c.trunk(rk)})


def mmpretrain_byol(d: Path, c: Compact) -> Case:
    r, r_target = resnet(nn.Identity()), resnet(nn.Identity())
    neck = lambda: Tree(fc0=nn.Linear(512, 64), bn0=nn.BatchNorm1d(64), fc1=nn.Linear(64, 32))
    ema = Tree(module=nn.Sequential(r_target, neck()), steps=torch.tensor(0))  # mmengine's CosineEMA
    model = Tree(backbone=r, neck=neck(), head=Tree(predictor=neck()), target_net=ema)
    obj = {"meta": {"epoch": 200, "iter": 5000, "mmengine_version": "0.7.0"}, "state_dict": c.sd(model),
           "message_hub": {"log_scalars": {}}, "optimizer": {}}
    return Case("mmselfsup", _save(d / "byol_resnet18_200e.pth", obj), "mmselfsup", "state_dict.backbone.", c.trunk(r),
                epochs=200, others={"state_dict.target_net.module.0.": c.trunk(r_target)})


def pixpro(d: Path, c: Compact) -> Case:
    e, ek = resnet(nn.Identity()), resnet(nn.Identity())
    def proj() -> nn.Module:
        return Tree(linear1=nn.Conv2d(512, 64, 1), bn1=nn.BatchNorm2d(64), linear2=nn.Conv2d(64, 32, 1))

    model = ddp(Tree(encoder=e, encoder_k=ek, projector=proj(), projector_k=proj(), value_transform=nn.Identity()))
    obj = {"opt": argparse.Namespace(arch="resnet18", epochs=400), "model": c.sd(model), "optimizer": {},
           "scheduler": {}, "epoch": 400}
    return Case("pixpro", _save(d / "pixpro_base_r18_400ep.pth", obj), "pixpro", "model.module.encoder.", c.trunk(e),
                epochs=400, others={"model.module.encoder_k.": c.trunk(ek)})


def soco(d: Path, c: Compact) -> Case:
    e, ek, ema = resnet(nn.Identity()), resnet(nn.Identity()), resnet(nn.Identity())
    head = lambda: Tree(conv1=nn.Conv2d(256, 256, 3, bias=False), bn1=nn.BatchNorm2d(256))
    neck = lambda: Tree(lateral_convs=nn.ModuleList(conv_module(ch, 256, 1) for ch in (128, 256, 512)))
    model = ddp(Tree(encoder=e, neck=neck(), head=head(), encoder_k=ek, neck_k=neck(), head_k=head()))
    obj = {"opt": argparse.Namespace(arch="resnet18"), "model": c.sd(model),
           "model_ema": c.sd(Tree(encoder=ema, neck=neck(), head=head())), "optimizer": {}, "epoch": 100}
    return Case("soco", _save(d / "soco_fpn_100ep.pth", obj), "pixpro", "model.module.encoder.", c.trunk(e), epochs=100,
                others={"model_ema.encoder.": c.trunk(ema)})


def solo_learn(d: Path, c: Compact) -> Case:
    r, rm = resnet(nn.Identity()), resnet(nn.Identity())
    model = Tree(backbone=r, projector=mlp(512, 64, 32), momentum_backbone=rm, momentum_projector=mlp(512, 64, 32),
                 predictor=mlp(32, 64, 32), classifier=nn.Linear(512, 100))
    obj = {"epoch": 399, "global_step": 1000, "pytorch-lightning_version": "2.0.2", "state_dict": c.sd(model),
           "optimizer_states": [], "lr_schedulers": []}
    return Case("solo_learn", _save(d / "byol-imagenet100-ep=399.ckpt", obj), "solo_learn", "state_dict.backbone.",
                c.trunk(r), others={"state_dict.momentum_backbone.": c.trunk(rm)})


def lightly_example(d: Path, c: Compact) -> Case:
    """lightly's MoCo example: backbone = nn.Sequential(*list(resnet.children())[:-1]) and its momentum copy."""
    r = resnet()
    r_m = copy.deepcopy(r)
    seq = lambda m: nn.Sequential(*list(m.children())[:-1])
    model = Tree(backbone=seq(r), projection_head=Tree(layers=mlp(512, 512, 128, bn=False)), backbone_momentum=seq(r_m),
                 projection_head_momentum=Tree(layers=mlp(512, 512, 128, bn=False)))
    obj = {"epoch": 9, "global_step": 100, "pytorch-lightning_version": "1.9.0", "state_dict": c.sd(model)}
    return Case("lightly_example", _save(d / "lightly_moco.ckpt", obj), "lightly", "state_dict.backbone.", c.trunk(r),
                others={"state_dict.backbone_momentum.": c.trunk(r_m)})


def lightly_dino_example(d: Path, c: Compact) -> Case:
    """lightly's DINO example: student_backbone / teacher_backbone (Sequential): DINO evaluates the teacher."""
    rs = resnet()
    rt = copy.deepcopy(rs)
    seq = lambda m: nn.Sequential(*list(m.children())[:-1])
    model = Tree(student_backbone=seq(rs), student_head=mlp(512, 64, 16, bn=False), teacher_backbone=seq(rt),
                 teacher_head=mlp(512, 64, 16, bn=False))
    return Case("lightly_dino_example", _save(d / "lightly_dino.pth", c.sd(model)), "lightly", "teacher_backbone.",
                c.trunk(rt), others={"student_backbone.": c.trunk(rs)})


def lightly_benchmark(d: Path, c: Compact) -> Case:
    r, rt = resnet(nn.Identity()), resnet(nn.Identity())
    model = Tree(backbone=r, projection_head=mlp(512, 64, 32), prediction_head=mlp(32, 64, 32), teacher_backbone=rt,
                 teacher_projection_head=mlp(512, 64, 32),
                 online_classifier=Tree(classification_head=nn.Linear(512, 10)))
    obj = {"epoch": 99, "global_step": 1000, "pytorch-lightning_version": "2.0.0", "state_dict": c.sd(model)}
    return Case("lightly_benchmark", _save(d / "lightly_byol_r50.ckpt", obj), "lightly_benchmarks",
                "state_dict.backbone.", c.trunk(r), others={"state_dict.teacher_backbone.": c.trunk(rt)})


def vissl(d: Path, c: Compact) -> Case:
    r = resnet()
    blocks = nn.ModuleDict([("conv1", r.conv1), ("bn1", r.bn1), ("conv1_relu", r.relu), ("maxpool", r.maxpool),
                            ("layer1", r.layer1), ("layer2", r.layer2), ("layer3", r.layer3), ("layer4", r.layer4),
                            ("avgpool", r.avgpool), ("flatten", nn.Flatten(1))])
    trunk = Tree(_feature_blocks=blocks)
    obj = {"phase_idx": 199, "iteration": 5000, "train_phase_idx": 199, "type": "checkpoint",
           "classy_state_dict": {"base_model": {"model": {"trunk": c.sd(trunk),
                                                          "heads": c.sd(Tree(fc=nn.Linear(512, 128)))},
                                                "meta": {"model_version": 0.0}}, "loss": {}}}
    return Case("vissl", _save(d / "model_final_checkpoint_phase199.torch", obj), "vissl",
                "classy_state_dict.base_model.model.trunk._feature_blocks.", c.trunk(r))


def d2_name(k: str) -> str:
    """torchvision -> detectron2 trunk name as MoCo's detection converter writes it (stem., res2-5, conv*.norm,
    shortcut), written out here independently of lewel_bench."""
    if not k.startswith("layer"):
        k = "stem." + k
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}.", f"res{t + 1}.")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}.", f"conv{t}.norm.")
    return k.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")


def detectron2_pkl(d: Path, c: Compact, mcl_parts: dict) -> Case:
    """A converted detectron2 .pkl (numpy arrays) as MCL's converter writes it: trunk, FPN and box-head convs."""
    r = resnet()
    trunk = c.trunk(r)
    model = {d2_name(k): v.numpy() for k, v in trunk.items()}
    model.update({k: v.numpy() for k, v in mcl_parts["fpn"].items()})
    model.update({f"box_head.{k}": v.numpy() for k, v in mcl_parts["box_head"].items()})
    model["stem.fc.weight"] = np.zeros((10, 512), dtype=np.float32)  # CGH's converter keeps its MLP as stem.fc
    path = d / "mcl_converted.pkl"
    path.write_bytes(pickle.dumps({"model": model, "__author__": "OpenSelfSup", "matching_heuristics": True}))
    return Case("detectron2", path, "detectron2", "model.", trunk, parts=mcl_parts)


def suite_backbone(d: Path, c: Compact) -> Case:
    r = resnet(nn.Identity())
    meta = {"format": L.BACKBONE_FORMAT, "arch": "resnet18", "method": "byol", "epochs": 2, "exp": "byol_mini",
            "iteration": 10, "parts": {}}
    return Case("lewel_bench_backbone", _save(d / "backbone.pth", {"state_dict": c.sd(r), "parts": {}, "meta": meta}),
                "lewel_bench_backbone", "state_dict.", c.trunk(r))


def suite_pretrain(d: Path, c: Compact) -> Case:
    r, rt = resnet(nn.Identity()), resnet(nn.Identity())
    online = Tree(online=Tree(backbone=r, head=mlp(512, 32, 16)))
    obj = {"model": c.sd(online), "target": c.sd(Tree(backbone=rt, head=mlp(512, 32, 16))), "queue": {},
           "state_version": 2, "epoch": 1, "iteration": 5, "config": {"epochs": 2, "method": "byol"},
           "meta": {"format": L.PRETRAIN_FORMAT, "backbone_prefix": "online.backbone.", "arch": "resnet18",
                    "method": "byol", "epochs": 2, "exp": "byol_mini", "transfer_parts": {}}}
    return Case("lewel_bench_pretrain", _save(d / "checkpoint.pth", obj), "lewel_bench_pretrain",
                "model.online.backbone.", c.trunk(r), epochs=1, others={"target.backbone.": c.trunk(rt)})


BUILDERS: list[Callable[[Path, Compact], Case]] = [
    torchvision_plain, torchvision_wrapped, moco, mocov3, simsiam, swav, dino, barlowtwins, vicreg, lewel_official,
    lewel_official_m, densecl_official, mmpretrain_byol, pixpro, soco, solo_learn, lightly_example,
    lightly_dino_example, lightly_benchmark, vissl, suite_backbone, suite_pretrain]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("layouts")
    torch.manual_seed(0)
    out: dict[str, Any] = {}
    for i, build in enumerate(BUILDERS):
        out[build.__name__] = build(d, Compact(100 + i))
    out["cgh_official"], out["cgh_extra"] = cgh_official(d, Compact(90))
    out["mcl_official"], out["mcl_extra"] = mcl_official(d, Compact(91))
    out["detectron2_pkl"] = detectron2_pkl(d, Compact(92), out["mcl_official"].parts)
    return out


CASE_NAMES = [b.__name__ for b in BUILDERS] + ["cgh_official", "mcl_official", "detectron2_pkl"]


def _equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(got) == sorted(want), (what, sorted(set(got) ^ set(want))[:5])
    for k, v in want.items():
        assert torch.equal(torch.as_tensor(got[k]), v), (what, k)


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_imagenet(tmp_path_factory.mktemp("tiny") / "imagenet", classes=3, n_train=4, n_val=2)


# ------------------------------------------------------------------------------------------------
# every layout: recognised, its authors' encoder taken exactly, through eval_knn, both converters, inspect
# ------------------------------------------------------------------------------------------------
def test_every_declared_layout_has_a_fixture_here(cases: dict) -> None:
    covered = {cases[n].layout for n in CASE_NAMES} | {"lewel_bench_mmseg"}  # mmseg: test_converter_outputs_...
    assert covered == set(L.names()), set(L.names()) ^ covered


@pytest.mark.parametrize("name", CASE_NAMES)
def test_layout_through_knn_converters_and_inspect(name: str, cases: dict, tiny_imagenet: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from lewel_bench.transfer.detectron2 import convert, load_detectron2_pkl
    from lewel_bench.transfer.mmseg import convert_to_mmseg

    case: Case = cases[name]
    with caplog.at_level(logging.INFO, logger="lewel_bench.checkpoint"):
        bb = load_backbone(case.path)
    assert (bb.layout, bb.prefix, bb.arch) == (case.layout, case.prefix, "resnet18")
    _equal({k: v for k, v in bb.state_dict.items() if k in case.trunk}, case.trunk, f"{name}: intake")
    # one log line says what was taken and why
    said = [r.getMessage() for r in caplog.records if "taking" in r.getMessage()]
    assert len(said) == 1 and f"layout {case.layout}" in said[0] and repr(case.prefix) in said[0], said
    if case.layout not in ("torchvision",) and bb.layout != "generic" and case.others:
        assert "the encoder its authors evaluate" in said[0] and "also in the file" in said[0]
    if case.epochs is not None:
        assert bb.epochs_trained == case.epochs

    # an evaluation CLI: the record names the layout and the encoder taken
    records = tmp_path / "records"
    knn_cli.main(["--config", "mini", "--ckpt", str(case.path), "--data", str(tiny_imagenet), "--records-dir",
                  str(records), "--out", str(tmp_path / "knn"), *KNN_TINY])
    (rec,) = records_in(records)
    assert rec["source_layout"] == case.layout and rec["prefix"] == case.prefix and rec["status"] == "ok"
    ident = json.loads((tmp_path / "knn" / "identity.json").read_text())["identity"]
    assert ident["checkpoint_source"] == {"layout": case.layout, "prefix": case.prefix}
    if case.epochs is not None:
        assert rec["pretrain_epochs"] == case.epochs

    # both converters: the same encoder, exactly
    d2 = convert(case.path, tmp_path / "out_d2.pkl")
    _equal({k: v for k, v in load_detectron2_pkl(d2).items() if k in case.trunk}, case.trunk, f"{name}: detectron2")
    mm, _ = convert_to_mmseg(case.path, tmp_path / "out_mmseg.pth")
    saved = torch.load(mm, weights_only=True)
    _equal({k: v for k, v in saved["state_dict"].items() if k in case.trunk}, case.trunk, f"{name}: mmseg")
    assert saved["meta"]["source_layout"] == case.layout and saved["meta"]["source_prefix"] == case.prefix
    for p in (d2, mm):
        p.unlink()

    # inspect: the layout, the encoder taken, the others with their tensor counts, no non-finite tensor
    lines = describe_checkpoint(case.path)
    text = "\n".join(lines)
    assert len(lines) <= 12, text
    assert f"layout: {case.layout} (" in text and "non-finite tensors: none" in text, text
    taken = [ln for ln in lines if "<- taken" in ln]
    assert len(taken) == 1 and repr(case.prefix) in taken[0] and "resnet18 trunk complete" in taken[0], text
    for other in case.others:
        assert any(repr(other) in ln and "resnet18 trunk complete" in ln for ln in lines), (other, text)
    if case.epochs is not None:
        assert f"epochs trained {case.epochs}" in text, text
    caplog.clear()


def test_inspect_tool_prints_and_lists(cases: dict, capsys: pytest.CaptureFixture) -> None:
    from tools import inspect_checkpoint

    inspect_checkpoint.main([str(cases["moco"].path)])
    out = capsys.readouterr().out
    assert "layout: moco (MoCo v1 / v2" in out and "sha256 " in out
    assert "encoder_q at 'state_dict.module.encoder_q.': 124 tensors, resnet18 trunk complete  <- taken" in out, out
    assert "encoder_k at 'state_dict.module.encoder_k.': 124 tensors, resnet18 trunk complete\n" in out, out
    assert "trained: arch resnet18, code MoCo v1 / v2 (facebookresearch/moco), epochs trained 200" in out, out
    inspect_checkpoint.main(["--list"])
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(L.names()) and any(ln.startswith("dino: ") and "teacher" in ln for ln in listed)


# ------------------------------------------------------------------------------------------------
# transfer parts from published files
# ------------------------------------------------------------------------------------------------
def test_mcl_official_bundle_round_trip_into_torchvision_retinanet_and_detectron2(cases: dict, tmp_path: Path) -> None:
    from eval_detection.tv_models import build_model
    from lewel_bench.transfer.detectron2 import convert
    from test_detection_transfer import TINY

    case: Case = cases["mcl_official"]
    bb = resolve_backbone(case.path, parts=("fpn",))  # what eval_detection --transfer bundle reads for RetinaNet
    _equal(bb.parts["fpn"], case.parts["fpn"], "mcl fpn part")
    model = build_model("retinanet", bb, num_classes=3, mask=False, **TINY)
    assert model.transfer == {"trunk": len(bb.state_dict), "fpn": 36}  # levels 3-5: 2 convs x (weight + 5 BN)
    own = model.state_dict()
    fpn = case.parts["fpn"]
    for i, level in enumerate((3, 4, 5)):  # torchvision's RetinaNet FPN block i = res{i+3} = MCL's lateral_convs[i+1]
        for block, name in (("inner_blocks", "fpn_lateral"), ("layer_blocks", "fpn_output")):
            assert torch.equal(own[f"backbone.fpn.{block}.{i}.0.weight"], fpn[f"{name}{level}.weight"])
            for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                assert torch.equal(own[f"backbone.fpn.{block}.{i}.1.{leaf}"], fpn[f"{name}{level}.norm.{leaf}"])
    for k, v in case.trunk.items():
        assert torch.equal(own[f"backbone.body.{k}"], v), k
    # the detectron2 converter writes MCL's names for both parts (what MCL's own converter writes)
    out = convert(case.path, tmp_path / "mcl_bundle.pkl", parts=("fpn", "box_head"))
    with open(out, "rb") as f:
        written = pickle.load(f)["model"]
    for k, v in case.parts["fpn"].items():
        assert np.array_equal(written[k], v.numpy()), k
    for k, v in case.parts["box_head"].items():
        assert np.array_equal(written[f"box_head.{k}"], v.numpy()), k
    # the key encoder's parts are another encoder's: taken only with it
    bk = resolve_backbone(case.path, prefix="encoder_k.0.", parts=("fpn", "box_head"))
    assert bk.prefix == "state_dict.encoder_k.0." and bk.encoder == "encoder_k"
    assert not torch.equal(bk.parts["fpn"]["fpn_lateral2.weight"], fpn["fpn_lateral2.weight"])


def test_cgh_official_hypercolumn_conv_into_its_part_and_the_learned_probe(cases: dict, tiny_imagenet: Path,
                                                                           tmp_path: Path) -> None:
    import eval_linear.cli as linear_cli
    from lewel_bench.classification import LinearProbe

    case: Case = cases["cgh_official"]
    bb = resolve_backbone(case.path, parts=("hypercolumn",))
    _equal(bb.parts["hypercolumn"], case.parts["hypercolumn"], "cgh hypercolumn part")
    probe = LinearProbe(bb, 3, "none", "hypercolumn_learned")
    _equal({f"reduce.{k}": v for k, v in probe.backbone.reduce.state_dict().items()}, case.parts["hypercolumn"],
           "probe's reduce")
    with pytest.raises(BackboneError, match=r"no transfer part 'fpn' \(this checkpoint carries hypercolumn\)"):
        resolve_backbone(case.path, parts=("fpn",))
    # eval_linear reads the part again for the learned probe: from the same encoder of the same layout
    records = tmp_path / "records"
    linear_cli.main(["--config", "mini", "--ckpt", str(case.path), "--data", str(tiny_imagenet), "--records-dir",
                     str(records), "feature=hypercolumn_learned", "epochs=1", "cached_views=0", "batch_size=8",
                     "data.crop_size=32", "data.resize_size=36", "data.num_workers=0"])
    (rec,) = records_in(records)
    assert rec["transfer"] == {"trunk": len(bb.state_dict), "hypercolumn": 6} and rec["source_layout"] == "cgh_official"


# ------------------------------------------------------------------------------------------------
# choosing another encoder: the flag, the record, the identity
# ------------------------------------------------------------------------------------------------
def test_ckpt_prefix_takes_another_encoder_and_is_part_of_the_run_identity(cases: dict, tiny_imagenet: Path,
                                                                          tmp_path: Path) -> None:
    case: Case = cases["moco"]
    for given in ("state_dict.module.encoder_k.", "module.encoder_k.", "module.encoder_k"):
        bb = load_backbone(case.path, prefix=given)
        assert (bb.layout, bb.encoder, bb.prefix) == ("moco", "encoder_k", "state_dict.module.encoder_k.")
        want = case.others["state_dict.module.encoder_k."]
        _equal({k: v for k, v in bb.state_dict.items() if k in TRUNK}, want, given)
    records = tmp_path / "records"
    for extra in ([], ["--ckpt-prefix", "module.encoder_k."]):
        knn_cli.main(["--config", "mini", "--ckpt", str(case.path), "--data", str(tiny_imagenet), "--records-dir",
                      str(records), *extra, *KNN_TINY])
    recs = sorted(records_in(records), key=lambda r: r["prefix"])
    assert [r["prefix"] for r in recs] == ["state_dict.module.encoder_k.", "state_dict.module.encoder_q."]
    assert len({r["run_id"] for r in recs}) == 2 and len({r["group"] for r in recs}) == 2  # never averaged
    assert recs[0]["checkpoint_sha256"] == recs[1]["checkpoint_sha256"]
    # DINO's student is taken only when asked for
    dino_case: Case = cases["dino"]
    bb = load_backbone(dino_case.path, prefix="student.module.backbone.")
    assert bb.encoder == "student"
    _equal({k: v for k, v in bb.state_dict.items() if k in TRUNK}, dino_case.others["student.module.backbone."], "dino")


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def _moco_obj(cases: dict) -> dict:
    return torch.load(cases["moco"].path, weights_only=False)


def test_a_known_layout_with_a_missing_or_misshapen_trunk_tensor_is_refused_naming_layout_and_key(
        cases: dict, tiny_imagenet: Path, tmp_path: Path) -> None:
    obj = _moco_obj(cases)
    del obj["state_dict"]["module.encoder_q.layer2.0.conv1.weight"]
    torch.save(obj, tmp_path / "missing.pth")
    msg = (r"layout moco \(MoCo v1 / v2 \(facebookresearch/moco\)\), encoder_q at 'state_dict.module.encoder_q.': "
           r"refusing to use this checkpoint as a resnet18 backbone: 1 of 100 backbone tensors missing \(first: "
           r"layer2.0.conv1.weight\)")
    with pytest.raises(SystemExit, match=msg):
        knn_cli.main(["--config", "mini", "--ckpt", str(tmp_path / "missing.pth"), "--data", str(tiny_imagenet),
                      "--records-dir", str(tmp_path / "rec"), *KNN_TINY])
    obj = _moco_obj(cases)
    obj["state_dict"]["module.encoder_q.layer3.1.bn2.weight"] = torch.ones(7)
    torch.save(obj, tmp_path / "shape.pth")
    with pytest.raises(BackboneError, match=r"layout moco .*encoder_q at 'state_dict.module.encoder_q.': .*1 shape "
                                            r"mismatches \(first: layer3.1.bn2.weight: \(7,\) vs expected \(256,\)"):
        load_backbone(tmp_path / "shape.pth")
    # the renamed layouts name the torchvision key
    obj = torch.load(cases["lightly_example"].path, weights_only=False)
    del obj["state_dict"]["backbone.4.1.conv2.weight"]
    torch.save(obj, tmp_path / "lightly.ckpt")
    with pytest.raises(BackboneError,
                       match=r"layout lightly .* missing \(first: layer1.1.conv2.weight\) \(torchvision names\)"):
        load_backbone(tmp_path / "lightly.ckpt")
    assert not records_in(tmp_path / "rec")


def test_a_file_matching_two_layouts_is_refused_naming_both_and_the_flag(cases: dict, tmp_path: Path) -> None:
    obj = _moco_obj(cases)
    v3 = torch.load(cases["mocov3"].path, weights_only=False)
    obj["state_dict"].update(v3["state_dict"])  # MoCo's and MoCo v3's encoders in one file
    torch.save(obj, tmp_path / "both.pth")
    with pytest.raises(BackboneError, match=r"matches several checkpoint layouts: moco \(MoCo v1 / v2.*\); mocov3 \("
                                            r"MoCo v3.*; pass --layout NAME \(make: CKPT_LAYOUT=NAME\)"):
        load_backbone(tmp_path / "both.pth")
    assert load_backbone(tmp_path / "both.pth", layout="mocov3").prefix == "state_dict.module.base_encoder."
    bb = load_backbone(tmp_path / "both.pth", prefix="state_dict.module.encoder_q.")  # a full prefix needs no layout
    _equal({k: v for k, v in bb.state_dict.items() if k in TRUNK}, cases["moco"].trunk, "both: encoder_q")
    assert "AMBIGUOUS between moco" in "\n".join(describe_checkpoint(tmp_path / "both.pth"))
    with pytest.raises(BackboneError, match=r"--layout nope: unknown checkpoint layout \(known: barlowtwins, "):
        load_backbone(tmp_path / "both.pth", layout="nope")
    with pytest.raises(BackboneError, match=r"--layout dino: none of its encoders is in this file"):
        load_backbone(cases["moco"].path, layout="dino")


def test_several_trunks_and_no_layout_is_refused_naming_candidates_and_flag(cases: dict, tmp_path: Path) -> None:
    obj = _moco_obj(cases)
    sd = {k.replace("module.", "net_", 1): v for k, v in obj["state_dict"].items() if k.startswith("module.encoder")}
    torch.save({"weights": sd}, tmp_path / "two.pth")
    with pytest.raises(BackboneError, match=r"several backbones found and no known checkpoint layout matches "
                                            r"\(candidates: 'weights.net_encoder_k.' \(124 tensors\), "
                                            r"'weights.net_encoder_q.' \(124 tensors\)\); pass --ckpt-prefix PREFIX "
                                            r"\(make: CKPT_PREFIX=PREFIX\) to choose one"):
        load_backbone(tmp_path / "two.pth")
    bb = load_backbone(tmp_path / "two.pth", prefix="net_encoder_q.")
    assert (bb.layout, bb.prefix) == ("generic", "weights.net_encoder_q.")
    _equal({k: v for k, v in bb.state_dict.items() if k in TRUNK}, cases["moco"].trunk, "generic q")
    with pytest.raises(BackboneError, match=r"--ckpt-prefix nope: no tensor key starts with 'nope.'"):
        load_backbone(tmp_path / "two.pth", prefix="nope")


def test_non_finite_values_in_the_encoder_taken_are_refused_elsewhere_reported(cases: dict, tmp_path: Path) -> None:
    obj = _moco_obj(cases)
    obj["state_dict"]["module.encoder_k.layer1.0.bn1.running_var"] = torch.full((64,), float("nan"))
    torch.save(obj, tmp_path / "nan_k.pth")
    assert load_backbone(tmp_path / "nan_k.pth").encoder == "encoder_q"  # the key encoder is not evaluated
    assert "non-finite tensors: 1 (first: state_dict.module.encoder_k.layer1.0.bn1.running_var)" in \
        describe_checkpoint(tmp_path / "nan_k.pth")
    with pytest.raises(BackboneError, match=r"encoder_k at 'state_dict.module.encoder_k.': resnet18 backbone: 1 "
                                            r"tensor\(s\) hold NaN or inf values \(first: layer1.0.bn1.running_var\)"):
        load_backbone(tmp_path / "nan_k.pth", prefix="module.encoder_k.")


# ------------------------------------------------------------------------------------------------
# one flag everywhere: every evaluation, both converters, make
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cli", ["eval_linear", "eval_semisup", "eval_knn", "eval_detection", "eval_segmentation",
                                 "convert_to_detectron2", "convert_to_mmseg"])
def test_every_cli_takes_ckpt_prefix_and_layout(cli: str, cases: dict, tiny_imagenet: Path, tmp_path: Path) -> None:
    import importlib

    ckpt = str(cases["moco"].path)
    if cli.startswith("convert_"):
        main = importlib.import_module(f"tools.{cli}").main
        base = [ckpt, str(tmp_path / "out.bin")]
    else:
        main = importlib.import_module(f"{cli}.cli").main
        config = {"eval_detection": "mini_voc_c4_24k", "eval_segmentation": "mini", "eval_semisup": "mini_1pct"}
        base = ["--config", config.get(cli, "mini"), "--ckpt", ckpt, "--data", str(tiny_imagenet), "--records-dir",
                str(tmp_path / "rec")]
    with pytest.raises(SystemExit, match=r"--ckpt-prefix nope\.: no tensor key starts with 'nope\.'"):
        main([*base, "--ckpt-prefix", "nope."])
    with pytest.raises(SystemExit, match=r"--layout dino: none of its encoders is in this file"):
        main([*base, "--layout", "dino"])
    if cli in ("eval_segmentation", "convert_to_detectron2", "convert_to_mmseg"):  # the older name still works
        with pytest.raises(SystemExit, match=r"--ckpt-prefix nope\.: no tensor key"):
            main([*base, "--prefix", "nope."])
    assert not records_in(tmp_path / "rec")


def _make_n(*args: str) -> str:
    r = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                       check=True)
    return r.stdout


@pytest.mark.parametrize("target,stage", [("eval-linear", "eval_linear"), ("eval-semisup", "eval_semisup"),
                                          ("eval-knn", "eval_knn"), ("eval-voc-det", "eval_detection"),
                                          ("eval-coco", "eval_detection"), ("eval-voc-seg", "eval_segmentation"),
                                          ("convert", "tools.convert_to_detectron2"),
                                          ("convert", "tools.convert_to_mmseg")])
def test_make_passes_ckpt_prefix_and_layout(target: str, stage: str) -> None:
    out = _make_n(target, "CKPT=/w/moco.pth", "CKPT_PREFIX=state_dict.module.encoder_k.", "CKPT_LAYOUT=moco")
    (line,) = [ln for ln in out.splitlines() if f" {stage} " in ln]
    assert "--ckpt-prefix 'state_dict.module.encoder_k.' --layout 'moco'" in line, line
    assert "--ckpt-prefix" not in _make_n(target, "CKPT=/w/moco.pth")


def test_make_inspect_describes_a_file(cases: dict) -> None:
    r = subprocess.run(["make", "--no-print-directory", "inspect", f"CKPT={cases['dino'].path}"], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "layout: dino (DINO full checkpoint" in r.stdout
    assert "teacher at 'teacher.module.backbone.': 120 tensors, resnet18 trunk complete  <- taken" in r.stdout
    r = subprocess.run(["make", "--no-print-directory", "inspect"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert r.returncode != 0 and "pass CKPT=FILE" in r.stderr


# ------------------------------------------------------------------------------------------------
# how far the pretraining went
# ------------------------------------------------------------------------------------------------
def test_progress_of_the_suites_own_formats_reaches_the_record(cases: dict, tmp_path: Path) -> None:
    from lewel_bench.records import record_for_backbone

    def rec(path: Path) -> dict:
        return record_for_backbone(load_backbone(path), eval="knn", protocol="k20", metrics={"top1": 1.0}, seed=0,
                                   config={}, start_time="t")

    obj = torch.load(cases["suite_backbone"].path, weights_only=False)
    r = rec(cases["suite_backbone"].path)  # an older backbone.pth: planned epochs, its iteration, completion unknown
    assert (r["pretrain_epochs"], r["pretrain_iters"], r["pretrain_complete"]) == (2, 10, None)
    obj["meta"].update(epochs_trained=1, iterations_trained=5, complete=False)
    torch.save(obj, tmp_path / "backbone.pth")
    r = rec(tmp_path / "backbone.pth")
    assert (r["pretrain_epochs"], r["pretrain_iters"], r["pretrain_complete"]) == (1, 5, False)
    r = rec(cases["suite_pretrain"].path)  # checkpoint.pth after epoch 1 of 2
    assert (r["pretrain_epochs"], r["pretrain_iters"], r["pretrain_complete"]) == (1, 5, False)
    assert (r["source_layout"], r["prefix"], r["method"]) == ("lewel_bench_pretrain", "model.online.backbone.", "byol")
    r = rec(cases["moco"].path)  # a published file: its own epoch field, completion unknown
    assert (r["pretrain_epochs"], r["pretrain_iters"], r["pretrain_complete"]) == (200, None, None)
    assert r["method"] == "unknown"


def test_inspect_and_intake_read_any_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tools import inspect_checkpoint

    model = torchvision.models.resnet18()
    torch.save(model, tmp_path / "whole_module.pth")  # a release that pickled the module itself
    bb = load_backbone(tmp_path / "whole_module.pth")
    assert (bb.layout, bb.prefix) == ("torchvision", "")
    assert all(torch.equal(bb.state_dict[k], v) for k, v in model.state_dict().items() if k in TRUNK)
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with pytest.raises(SystemExit, match=r"^inspect_checkpoint: checkpoint .*notes.txt \(17 bytes\) cannot be read"):
        inspect_checkpoint.main([str(tmp_path / "notes.txt")])
    torch.save({"epoch": 3, "optimizer": {"state": {}}}, tmp_path / "no_weights.pth")
    inspect_checkpoint.main([str(tmp_path / "no_weights.pth")])
    out = capsys.readouterr().out
    assert "0 tensors" in out and "layout: none of the" in out and "encoders: none found" in out
    assert "the evaluations refuse it: " in out and "no state dict found" in out
