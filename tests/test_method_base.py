"""The general method base, exercised by a throwaway method defined here and nowhere else.

The method reads two backbone stages (res4 and res5), keeps two queues written at one pointer, and trains
on a weak / strong view pair. With nothing but this module and a config it writes to a temporary folder,
it trains through the real loop, checkpoints, is interrupted and resumes to the same state as an unbroken
run, and exports its backbone. The views of the config are checked too: the weak view of a flat image
keeps its colour, views of several resolutions come out in the configured order.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lewel_bench import dist as ldist
from lewel_bench.checkpoint import load_backbone
from lewel_bench.config import ConfigError, load_config
from lewel_bench.models import feature_dim
from lewel_bench.utils import REPO_ROOT
from pretrain.augment import build_views, seeded, view_specs
from pretrain.losses import info_nce
from pretrain.methods import METHODS
from pretrain.methods.base import Encoder, FIFOQueue, SSLMethod

NAME = "test_two_stage_two_queue"


class TwoStageHead(nn.Module):
    """One projection of pooled res4 and one of pooled res5."""

    def __init__(self, c4: int, c5: int, dim: int) -> None:
        super().__init__()
        self.p4, self.p5 = nn.Linear(c4, dim), nn.Linear(c5, dim)

    def forward(self, f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.p4(f["res4"]), self.p5(f["res5"])


class TwoQueueMethod(SSLMethod):
    """Query: the strong view (views[1]); key: the weak view (views[0]); one InfoNCE per stage and queue."""

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        mc = cfg["model"]
        head = TwoStageHead(feature_dim(self.arch, "res4"), feature_dim(self.arch, "res5"), mc["dim"])
        self.online = Encoder(self.arch, head, pooled=True, stages=("res4", "res5"))
        self.target = self.make_target(self.online)
        self.queue = FIFOQueue(mc["queue_size"], {"res4": mc["dim"], "res5": mc["dim"]})
        self.tau = float(mc["temperature"])

    def forward(self, views: list[torch.Tensor]):
        weak, strong = views
        q4, q5 = self.online_split(strong)
        k4, k5 = (F.normalize(k, dim=1) for k in self.target_shuffled(weak))
        l4 = info_nce(q4, k4, self.queue.res4.clone(), self.tau)
        l5 = info_nce(q5, k5, self.queue.res5.clone(), self.tau)
        self.queue.push(res4=ldist.all_gather_nograd(k4), res5=ldist.all_gather_nograd(k5))
        return l4 + l5, {"loss_res4": l4.detach(), "loss_res5": l5.detach()}


if NAME not in METHODS:
    METHODS.register(NAME)(TwoQueueMethod)

CONFIG = f"""_base_: [{REPO_ROOT}/pretrain/configs/_base.yaml, {REPO_ROOT}/pretrain/configs/_mini.yaml]
method: {NAME}
aug:
  views: [{{recipe: weak}}, {{recipe: mocov2}}]   # a weak / strong pair
model:
  dim: 16
  queue_size: 40
  temperature: 0.2
  momentum: 0.99
  momentum_schedule: constant
  target: params
_schema_:
  model.dim: int >= 1
  model.queue_size: int >= 1
  model.temperature: float > 0
  model.momentum: float >= 0 <= 1
  model.momentum_schedule: constant | cosine
  model.target: params | eman
"""
RUN = ["arch=resnet18", "epochs=1", "batch_size=8", "data.max_images=32", "data.num_workers=0", "num_threads=1",
       "ckpt.every_iters=1", "knn.every=0", "aug.size=32", "tqdm_interval=60"]


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    p = tmp_path / "two_queue.yaml"
    p.write_text(CONFIG)
    return p


def _run(config: Path, data: Path, out: Path, *extra: str) -> None:
    from pretrain.cli import main

    main([str(config), "--data", str(data), "--out", str(out), *RUN, *extra])


def test_a_new_method_trains_checkpoints_resumes_and_exports(config: Path, mini_data: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = mini_data / "imagenet"
    ref = tmp_path / "ref"
    _run(config, data, ref)  # 32 images / 8 = 4 iterations
    ck = torch.load(ref / "checkpoint.pth", weights_only=False)
    assert ck["iteration"] == 4 and ck["meta"]["method"] == NAME
    assert set(ck["queue"]) == {"queue.res4", "queue.res5", "queue.ptr"}  # both queues, one pointer
    assert int(ck["queue"]["queue.ptr"]) == (4 * 8) % 40
    assert any(k.startswith("online.head.p4.") for k in ck["model"]) and "online.backbone.layer3.0.conv1.weight" in ck["model"]
    bb = load_backbone(ref / "backbone.pth")
    assert bb.arch == "resnet18" and bb.meta["method"] == NAME and not bb.parts
    assert torch.equal(bb.state_dict["layer4.0.conv1.weight"], ck["model"]["online.backbone.layer4.0.conv1.weight"])

    # interrupted after the checkpoint of iteration 2, then run again: resumes to the unbroken run's state
    run = tmp_path / "run"
    real = TwoQueueMethod.forward

    def interrupted(self, views):
        if self.iteration == 2:
            raise KeyboardInterrupt("preempted")
        return real(self, views)

    monkeypatch.setattr(TwoQueueMethod, "forward", interrupted)
    with pytest.raises(SystemExit, match="interrupted") as e:  # Ctrl-C: one line, status 130
        _run(config, data, run)
    assert e.value.code == 130
    assert torch.load(run / "checkpoint.pth", weights_only=False)["iteration"] == 2
    monkeypatch.setattr(TwoQueueMethod, "forward", real)
    _run(config, data, run)
    got = torch.load(run / "checkpoint.pth", weights_only=False)
    for part in ("model", "target", "queue"):
        assert set(got[part]) == set(ck[part])
        assert all(torch.equal(got[part][k], ck[part][k]) for k in ck[part]), part


def test_the_method_refuses_views_it_does_not_take(config: Path, mini_data: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=f"method '{NAME}' takes 2 views; aug.views gives 3"):
        _run(config, mini_data / "imagenet", tmp_path / "o", "aug.views=[{recipe: weak}, {recipe: mocov2, count: 2}]")


def test_views_from_config() -> None:
    cfg = load_config("mocov2_mini", "pretrain/configs", [
        "aug.views=[{recipe: weak, size: 48}, {recipe: mocov2}, {recipe: mocov2, size: 16, scale: [0.05, 0.2], count: 2}]"])
    specs = view_specs(cfg["aug"])
    assert [s.size for s in specs] == [48, 64, 16, 16] and specs[2].scale == (0.05, 0.2) == specs[3].scale
    assert specs[0].jitter_p == specs[0].gray_p == specs[0].blur_p == specs[0].solarize_p == 0.0
    flat = Image.new("RGB", (96, 96), (37, 140, 201))
    for batched in (False, True):
        views = build_views(specs, batched)
        out = seeded(lambda views=views: [v(flat) for v in views], 3)
        weak = out[0][0].float() / 255.0 if batched else out[0]
        assert weak.shape[-2:] == (48, 48)
        if batched:
            assert torch.equal(out[0][0][:, 0, 0], torch.tensor([37, 140, 201], dtype=torch.uint8))
            assert float(out[0][1][0]) == 0 and float(out[0][1][9:].abs().sum()) == 0  # no photometric op drawn
        else:  # normalised: every pixel the flat colour
            mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
            std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
            rgb = (weak * std + mean) * 255
            torch.testing.assert_close(rgb, torch.tensor([37., 140., 201.])[:, None, None].expand_as(rgb), atol=0.5, rtol=0)
        assert [tuple((o[0] if batched else o).shape[-2:]) for o in out] == [(48, 48), (64, 64), (16, 16), (16, 16)]
    for bad, msg in (("[{recipe: strongest}]", r"aug.views\[0\].recipe 'strongest' is not in aug.recipes"),
                     ("[{recipe: weak, blur_p: 2}]", r"aug.views\[0\].blur_p must be a probability"),
                     ("[{recipe: weak, colour: 1}]", r"aug.views\[0\]: unknown key\(s\) colour")):
        with pytest.raises(ConfigError, match=msg):
            view_specs(load_config("mocov2_mini", "pretrain/configs", [f"aug.views={bad}"])["aug"])
