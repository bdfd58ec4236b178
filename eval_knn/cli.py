"""kNN evaluation of a frozen backbone: weighted k-nearest neighbours on L2-normalised pooled features.

    python -m eval_knn --config k20 --ckpt runs/lewel_b/backbone.pth --data /imagenet
    python -m eval_knn --config mini --ckpt random:resnet18 --data data/mini/imagenet

The training set (val transform, no augmentation) is the memory bank; every val image takes the
class with the largest vote sum over its k=20 most similar training features, each weighted by
exp(sim / 0.07) (:func:`lewel_bench.knn.knn_predict`, shared with the pretraining monitor).
Writes one record: eval ``knn``, protocol ``k20``, metric top1 (percent).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from lewel_bench import classification as C
from lewel_bench.dist import cleanup
from lewel_bench.knn import knn_predict
from lewel_bench.stage import cli_entry, parse_stage_args, stage_parser, yaml_config

from .declaration import PROTOCOL_VERSION

log = logging.getLogger("eval_knn")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def build_parser():
    return stage_parser("python -m eval_knn", __doc__.split("\n")[0], "k20", yaml_config(CONFIG_DIR))


@cli_entry("eval_knn")
def main(argv: list[str] | None = None) -> None:
    args = parse_stage_args(build_parser(), argv)
    st = C.setup_stage("eval_knn", args, CONFIG_DIR, PROTOCOL_VERSION)
    cfg, dev = st.cfg, st.info.device
    if st.finished():
        return
    t0 = time.time()
    _, val_tf = C.transforms_from_config(cfg["data"])
    train_set = C.build_imagenet(st.data_root, "train", val_tf)
    val_set = C.build_imagenet(st.data_root, "val", val_tf)
    nw = cfg["data"].get("num_workers")
    model = C.build_feature_extractor(st.bb).to(dev)
    train_f, train_y = C.extract_features_all_ranks(model, C.make_loader(train_set, cfg["batch_size"], False, 0, nw), dev)
    val_f, val_y = C.extract_features_all_ranks(model, C.make_loader(val_set, cfg["batch_size"], False, 0, nw), dev)
    log.info("features: train %s, val %s (%.1fs)", tuple(train_f.shape), tuple(val_f.shape), time.time() - t0)
    pred = knn_predict(train_f, train_y, val_f, C.num_classes_of(train_set), k=cfg["k"], t=cfg["temperature"])
    metrics = {"top1": 100.0 * (pred == val_y).double().mean().item()}
    st.finish("knn", cfg["protocol"], metrics, args.records_dir, k=cfg["k"], temperature=cfg["temperature"],
              n_train=int(train_f.shape[0]), n_val=int(val_f.shape[0]), wall_time_s=round(time.time() - t0, 1))
    cleanup()


if __name__ == "__main__":
    main()
