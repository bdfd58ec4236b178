"""Linear evaluation of a frozen backbone (LEWEL Sec. 4.1, Table 1).

    python -m eval_linear --config lewel_b_sgd --ckpt runs/lewel_b/backbone.pth --data /imagenet
    python -m eval_linear --config mini --ckpt random:resnet18 --data data/mini/imagenet epochs=2

Recipes (``configs/``): ``lewel_b_sgd`` (SGD momentum 0.9, lr 0.4, batch 256, 50 epochs, lr / 10 at 30
and 40, wd 0) and ``lewel_m_lars`` (LARS, batch 4096, lr 3.2, 90 epochs, cosine, wd 0); ``auto`` takes the
one the paper uses for the checkpoint's method (``configs/_recipes.yaml``); ``mini`` is the
first scaled to the embedded mini data, on cached features (``cached_views``). The backbone stays in eval
mode without gradient; the train view is RandomResizedCrop + flip (re-drawn every epoch, as in the paper,
or with ``cached_views: K`` the centre crop and K - 1 draws extracted once), the val view resize + center
crop. The run keeps ``<out>/checkpoint.pth`` every ``save_every`` epochs and resumes from it when run again.
``feature`` picks the classifier's input (``lewel_bench.classification.PROBE_FEATURES``): ``gap`` (GAP of the
last stage, the paper's probe), ``hypercolumn`` (CGH's hypercolumn of res4 and res5, pooled; backbone only) or
``hypercolumn_learned`` (CGH's pretrained 1x1 conv + BN + ReLU on it, from the checkpoint's ``hypercolumn``
part); ``cgh_sgd`` is CGH's own recipe. Writes one record: eval ``linear``, protocol from the config, metrics
top1 / top5 (percent), ``feature`` and ``feature_dim``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lewel_bench import classification as C
from lewel_bench.checkpoint import resolve_backbone
from lewel_bench.dist import cleanup
from lewel_bench.optim import build_optimizer, param_groups
from lewel_bench.stage import cli_entry, parse_stage_args, stage_parser, yaml_config
from lewel_bench.utils import amp_autocast

from .declaration import PROTOCOL_VERSION

log = logging.getLogger("eval_linear")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def recipe_for(bb: C.Backbone) -> str:
    """``--config auto``: the paper's linear recipe for the checkpoint's method (``configs/_recipes.yaml``)."""
    from lewel_bench.config import load_yaml_file

    recipes = load_yaml_file(CONFIG_DIR / "_recipes.yaml")
    return recipes["by_method"].get(bb.meta.get("method"), recipes["default"])


def cached_feature_loaders(model: C.LinearProbe, train_set: Dataset, val_set: Dataset, center_tf: Any, views: int,
                           cfg: dict, seed: int, device: torch.device, amp: bool) -> tuple[DataLoader, DataLoader]:
    """Loaders over frozen features extracted once (``cached_views: K``), for a probe trained to convergence cheaply.

    Training features: the centre crop of every training image plus ``K - 1`` draws of the train view
    (RandomResizedCrop + flip, seeded); val features: the val view. Each rank extracts its shard; the
    shards are gathered, and the head is trained over them like the images (global batch, shuffled).
    """
    def extract(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        loader = C.make_loader(ds, cfg["batch_size"], False, seed, cfg["data"].get("num_workers"))
        with amp_autocast(device, amp):
            f, y = C.extract_features_all_ranks(model.backbone, loader, device, normalize=False)
        return f.cpu(), y.cpu()

    t0 = time.time()
    parts = [extract(C.build_imagenet(train_set.root, train_set.split, center_tf))]
    parts += [extract(train_set) for _ in range(views - 1)]
    train_feats = TensorDataset(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    val_feats = TensorDataset(*extract(val_set))
    log.info("cached features: %d training rows (%d views of %d images), %d val rows, dim %d (%.1fs)",
             len(train_feats), views, len(train_set), len(val_feats), train_feats.tensors[0].shape[1],
             time.time() - t0)
    return (C.make_loader(train_feats, cfg["batch_size"], True, seed, 0),
            C.make_loader(val_feats, cfg["batch_size"], False, seed, 0))


def build_parser():
    return stage_parser("python -m eval_linear", __doc__.split("\n")[0], "lewel_b_sgd", yaml_config(CONFIG_DIR))


@cli_entry("eval_linear")
def main(argv: list[str] | None = None) -> None:
    args = parse_stage_args(build_parser(), argv)
    st = C.setup_stage("eval_linear", args, CONFIG_DIR, PROTOCOL_VERSION, choose_config=recipe_for)
    cfg, dev = st.cfg, st.info.device
    if st.finished():
        return
    views = int(cfg.get("cached_views", 0))
    t0 = time.time()
    train_tf, val_tf = C.transforms_from_config(cfg["data"])
    train_set = C.build_imagenet(st.data_root, "train", train_tf)
    val_set = C.build_imagenet(st.data_root, "val", val_tf)
    amp = bool(cfg.get("amp", True)) and dev.type == "cuda"

    feature = cfg.get("feature", "gap")
    needed = [p for p in C.PROBE_FEATURES.get(feature).parts if p not in st.bb.parts]
    if needed:  # e.g. CGH's learned hypercolumn reduction, read from the same checkpoint (the record lists it)
        st.bb.parts.update(resolve_backbone(st.bb.path, arch=st.bb.arch, parts=needed, prefix=st.bb.prefix,
                                            layout=st.bb.layout).parts)
    model = C.LinearProbe(st.bb, C.num_classes_of(train_set), cfg.get("head_norm", "none"), feature).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if views:
        train_loader, val_loader = cached_feature_loaders(model, train_set, val_set, val_tf, views, cfg, st.seed,
                                                          dev, amp)
        net = C.ProbeHead(model)
    else:
        nw = cfg["data"].get("num_workers")
        train_loader = C.make_loader(train_set, cfg["batch_size"], True, st.seed, nw)
        val_loader = C.make_loader(val_set, cfg["batch_size"], False, st.seed, nw)
    ocfg = cfg["optim"]
    opt = build_optimizer(param_groups(model.fc, ocfg["weight_decay"], ocfg["no_decay"]), ocfg)
    history = C.fit(st, net, opt, train_loader, val_loader, model.trainable_state_dict, ("lr",))
    epochs = int(cfg["epochs"])

    res = C.evaluate(net, val_loader, dev, amp)
    metrics = {"top1": res["top1"], "top5": res["top5"]}
    st.finish("linear", cfg["protocol"], metrics, args.records_dir, epochs=epochs, n_val=res["n"],
              n_train=len(train_set), wall_time_s=round(time.time() - t0, 1), history=history, feature=feature,
              feature_dim=model.fc.in_features)
    cleanup()


if __name__ == "__main__":
    main()
