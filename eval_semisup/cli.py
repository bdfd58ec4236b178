"""Semi-supervised fine-tuning on a labelled subset (LEWEL Sec. 4.2, Table 2).

    python -m eval_semisup --config 1pct --ckpt runs/lewel_b/backbone.pth --data /imagenet \
        --subset /path/to/imagenet_subsets/1percent.txt
    python -m eval_semisup --config mini_1pct --ckpt random:resnet18 --data data/mini/imagenet

The whole network is fine-tuned (BN in train mode) with SGD momentum 0.9, wd 1e-4, batch 256,
50 epochs, lr / 10 at epochs 30 and 40; backbone / classifier lr 1e-4 / 1.0 for 1% and 0.01 / 0.1 for
10% (official scripts). The subset is a SimCLR split file (one training file name per line, e.g.
``n01440764_10026.JPEG``): the official ``1percent.txt`` / ``10percent.txt`` come from the SimCLR
repository's ``imagenet_subsets`` folder; a relative path is looked up under the data root (the mini
data writes its own). Every name must exist in the training set, or the run stops naming the first
missing ones. Top-1 / top-5 on the full val set; one record, eval ``semisup``, protocol ``1pct``/``10pct``.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from lewel_bench import classification as C
from lewel_bench.args import PathArg, check_path
from lewel_bench.checkpoint import sha256_file
from lewel_bench.data.layout import DataError, DataLayoutError
from lewel_bench.dist import cleanup
from lewel_bench.errors import PathError
from lewel_bench.optim import build_optimizer
from lewel_bench.optim import param_groups as shared_param_groups
from lewel_bench.stage import cli_entry, parse_stage_args, stage_parser, yaml_config

from .declaration import PROTOCOL_VERSION

log = logging.getLogger("eval_semisup")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def param_groups(model: torch.nn.Module, backbone_lr: float, classifier_lr: float,
                 weight_decay: float = 0.0) -> list[dict]:
    """Two groups (:func:`lewel_bench.optim.param_groups`): every backbone tensor at ``backbone_lr``, the
    classifier ``fc`` at ``classifier_lr``."""
    groups = shared_param_groups(model, weight_decay, lr_scale={r"re:^fc\.": classifier_lr / backbone_lr})
    for g in groups:
        g["lr"] = backbone_lr * g["lr_scale"]
    return sorted(groups, key=lambda g: g["lr_scale"])


def resolve_subset(subset: str | None, data_root: Path) -> Path:
    """``--subset`` / ``data.subset``: an absolute path, or relative to the data root, that must exist."""
    if not subset:
        raise DataLayoutError("no subset file: pass --subset PATH (e.g. SimCLR's 1percent.txt)")
    p = Path(subset)
    if not p.is_absolute() and not p.exists():
        p = data_root / p
    if not p.is_file():
        try:
            check_path(p, "file", "subset file")
        except PathError as e:
            raise DataLayoutError(f"{e}{f' (also tried {subset})' if p != Path(subset) else ''}. The official "
                                  "1percent.txt / 10percent.txt are in the SimCLR repository's imagenet_subsets "
                                  "folder") from None
    return p


class SubsetArg(PathArg):
    """``--subset``: a file (checked when the line is parsed), or a bare file name looked up in the data root."""

    def __init__(self) -> None:
        super().__init__("file")

    def __call__(self, text: str) -> str:
        if os.sep not in text and not Path(text).exists():
            return text  # a name in the data root (resolve_subset)
        return super().__call__(text)


def build_parser():
    parser = stage_parser("python -m eval_semisup", __doc__.split("\n")[0], "1pct", yaml_config(CONFIG_DIR))
    parser.add_argument("--subset", default=None, type=SubsetArg(),
                        help="SimCLR split file, or a file name in the data root (default: config data.subset)")
    return parser


@cli_entry("eval_semisup")
def main(argv: list[str] | None = None) -> None:
    args = parse_stage_args(build_parser(), argv)

    found: list[Path] = []

    def subset_identity(cfg: dict, root: Path) -> dict:
        found.append(resolve_subset(args.subset or cfg["data"].get("subset"), root))
        return {"subset_sha256": sha256_file(found[0])}  # the subset's contents, wherever the file is

    st = C.setup_stage("eval_semisup", args, CONFIG_DIR, PROTOCOL_VERSION, prepare=subset_identity)
    cfg, dev = st.cfg, st.info.device
    subset = found[0]
    if st.finished():
        return
    t0 = time.time()
    train_tf, val_tf = C.transforms_from_config(cfg["data"])
    try:
        train_set = C.build_imagenet(st.data_root, "train", train_tf, subset_file=subset)
    except DataError as e:
        raise DataError(f"bad subset file {subset}: {e}") from None
    val_set = C.build_imagenet(st.data_root, "val", val_tf)
    log.info("subset %s: %d labelled training images; %d val images", subset, len(train_set), len(val_set))
    nw = cfg["data"].get("num_workers")
    train_loader = C.make_loader(train_set, cfg["batch_size"], True, st.seed, nw)
    val_loader = C.make_loader(val_set, cfg["batch_size"], False, st.seed, nw)

    model = C.build_finetune_model(st.bb, C.num_classes_of(val_set), cfg.get("head_norm", "none")).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ocfg = cfg["optim"]
    opt = build_optimizer(param_groups(model, ocfg["backbone_lr"], ocfg["classifier_lr"], ocfg["weight_decay"]),
                          {**ocfg, "lr": ocfg["backbone_lr"]})
    history = C.fit(st, model, opt, train_loader, val_loader, model.state_dict, ("lr_backbone", "lr_classifier"))
    epochs = int(cfg["epochs"])
    amp = bool(cfg.get("amp", True)) and dev.type == "cuda"

    res = C.evaluate(model, val_loader, dev, amp)
    metrics = {"top1": res["top1"], "top5": res["top5"]}
    st.finish("semisup", cfg["protocol"], metrics, args.records_dir, epochs=epochs, n_val=res["n"],
              n_train=len(train_set), subset_file=str(subset), wall_time_s=round(time.time() - t0, 1),
              history=history)
    cleanup()


if __name__ == "__main__":
    main()
