"""Linear evaluation of a frozen backbone (LEWEL Sec. 4.1, Table 1).

    python -m eval_linear --config lewel_b_sgd --ckpt runs/lewel_b/backbone.pth --data /imagenet
    python -m eval_linear --config mini --ckpt random:resnet18 --data data/mini/imagenet epochs=2

Recipes (``configs/``): ``lewel_b_sgd`` (SGD momentum 0.9, lr 0.4, batch 256, 50 epochs, lr / 10 at 30
and 40, wd 0) and ``lewel_m_lars`` (LARS, batch 4096, lr 3.2, 90 epochs, cosine, wd 0); ``mini`` is the
first scaled to the embedded mini data. The backbone stays in eval mode without gradient; the train
view is RandomResizedCrop + flip (re-drawn every epoch, as in the paper), the val view resize + center
crop. The run keeps ``<out>/checkpoint.pth`` after every epoch and resumes from it when run again.
Writes one record: eval ``linear``, protocol from the config, metrics top1 / top5 (percent).
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch

from lewel_bench import classification as C
from lewel_bench.dist import cleanup
from pretrain.optim import param_groups

log = logging.getLogger("eval_linear")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def main(argv: list[str] | None = None) -> None:
    args = C.stage_parser("python -m eval_linear", __doc__.split("\n")[0], "lewel_b_sgd").parse_args(
        sys.argv[1:] if argv is None else argv)
    st = C.setup_stage("eval_linear", args, CONFIG_DIR)
    cfg, dev = st.cfg, st.info.device
    fp = C.fingerprint(cfg, st.bb.sha256)
    if C.finished_result(st, fp, args.fresh):
        return
    t0 = time.time()
    train_tf, val_tf = C.transforms_from_config(cfg["data"])
    train_set = C.build_imagenet(st.data_root, "train", train_tf)
    val_set = C.build_imagenet(st.data_root, "val", val_tf)
    nw = cfg["data"].get("num_workers")
    train_loader = C.make_loader(train_set, cfg["batch_size"], True, st.seed, nw)
    val_loader = C.make_loader(val_set, cfg["batch_size"], False, st.seed, nw)

    model = C.LinearProbe(st.bb, C.num_classes_of(train_set), cfg.get("head_norm", "none")).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ocfg = cfg["optim"]
    opt = C.build_optimizer(param_groups(model.fc, ocfg["weight_decay"], ocfg.get("exclude_bias", True)), ocfg)
    history = C.fit(st, model, opt, train_loader, val_loader, fp, args.fresh, model.trainable_state_dict, ("lr",))
    epochs = int(cfg["epochs"])
    amp = bool(cfg.get("amp", True)) and dev.type == "cuda"

    res = C.evaluate(model, val_loader, dev, amp)
    metrics = {"top1": res["top1"], "top5": res["top5"]}
    C.finish(st, "linear", cfg["protocol"], metrics, fp, args.records_dir, epochs=epochs, n_val=res["n"],
             n_train=len(train_set), wall_time_s=round(time.time() - t0, 1), history=history)
    cleanup()


if __name__ == "__main__":
    main()
