"""Detection transfer: ``python -m eval_detection --config voc_c4_24k --ckpt runs/lewel_b/backbone.pth``.

Configs (``eval_detection/configs/torchvision/<name>.yaml``): ``voc_c4_24k`` (Table 3), ``coco_c4_1x``,
``coco_fpn_1x``, ``coco_fpn_2x`` (Table 4 / 8) and their ``mini_*`` versions for the embedded mini data.
Backends: ``detectron2`` (the paper's code base; ``configs/detectron2/*.yaml`` + ``train_net.py``),
``torchvision`` (runs anywhere; same layout, schedule and metrics), ``auto`` = detectron2 when it can be
imported, else torchvision (logged). Every run writes ``metrics.json`` in ``--out`` and one result record
(eval ``voc_det`` / ``coco``). Running again with the same ``--out`` resumes training from ``last.pth``
and does not write a second record for a finished run.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch

from lewel_bench.checkpoint import Backbone, resolve_backbone
from lewel_bench.config import load_config
from lewel_bench.data.layout import require_layout
from lewel_bench.dist import init_distributed
from lewel_bench.io import atomic_write_json
from lewel_bench.records import now_iso, record_for_backbone, write_record
from lewel_bench.utils import REPO_ROOT, default_num_workers, resolve_auto, seed_everything, setup_logging

log = logging.getLogger("eval_detection")

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "torchvision"
D2_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "detectron2"
METRIC_KEYS = {"voc_det": ("AP", "AP50", "AP75"),
               "coco": ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75")}


def detectron2_available() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def choose_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    if detectron2_available():
        return "detectron2"
    log.warning("detectron2 is not importable: using the torchvision backend (same layout, schedule and "
                "metrics; see eval_detection/train_net.py for how to install detectron2 on a cluster)")
    return "torchvision"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval_detection", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="config name (voc_c4_24k, coco_fpn_1x, mini_voc_c4_24k, ...) or path")
    p.add_argument("--ckpt", required=True, help="backbone.pth / pretraining checkpoint / torchvision state dict, "
                                                 "or random:resnet50 for the random-init baseline")
    p.add_argument("--data", default=None, help="VOCdevkit root (VOC) or COCO root (annotations/, train2017/, val2017/)")
    p.add_argument("--out", default=None, help="output folder (default runs/<exp>/detection/<config>-<backend>-s<seed>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["auto", "torchvision", "detectron2"], default="auto")
    p.add_argument("--no-record", action="store_true", help="do not write a result record (smoke runs)")
    p.add_argument("--opts", nargs="*", default=[], help="config overrides key=value (e.g. solver.max_iter=10)")
    p.add_argument("--d2-opts", nargs="*", default=[], help="detectron2 backend only: extra KEY VALUE overrides")
    return p.parse_args(argv)


def default_data_root(cfg: dict) -> Path:
    fmt = cfg["data"]["format"]
    return REPO_ROOT / "data" / "mini" / ("VOCdevkit" if fmt == "voc" else "coco")


def _limit(samples: list, cfg: dict) -> list:
    n = cfg.get("test", {}).get("max_images")
    if n:
        log.warning("evaluating on the first %d of %d test images only (test.max_images)", n, len(samples))
        return samples[: int(n)]
    return samples


def build_datasets(cfg: dict, root: Path) -> tuple[Any, Any, tuple[str, ...], Any]:
    """(train dataset, test dataset, class names, COCO gt or VOC gt dict)."""
    from .datasets import (DetectionDataset, coco_class_names, load_coco, load_voc_splits,
                           resolve_class_names)

    d = cfg["data"]
    if d["format"] == "voc":
        years = sorted({y for y, _ in d["train"]} | {d["test"][0]})
        require_layout(root, "VOCdevkit", {f"VOC{y}/Annotations/*.xml": f"VOC{y}/Annotations/*.xml" for y in years})
        names = resolve_class_names(d["classes"])
        train, _ = load_voc_splits(root, d["train"], names, train=True)
        test, _ = load_voc_splits(root, [d["test"]], names, train=False)
        test = _limit(test, cfg)
        gt = {s.image_id: {"boxes": s.gt_boxes, "labels": s.gt_labels, "difficult": s.difficult} for s in test}
        return DetectionDataset(train, train=True), DetectionDataset(test, train=False), names, gt
    require_layout(root, "COCO", {d["train"]["ann"]: d["train"]["ann"], d["test"]["ann"]: d["test"]["ann"]})
    train, _, coco_train = load_coco(root / d["train"]["ann"], root / d["train"]["images"], train=True)
    test, _, coco_test = load_coco(root / d["test"]["ann"], root / d["test"]["images"], train=False)
    names = coco_class_names(coco_train)
    if coco_class_names(coco_test) != names:
        raise ValueError("COCO train and val annotation files have different categories")
    mask = bool(cfg["mask"])
    test = _limit(test, cfg)
    return (DetectionDataset(train, train=True, masks=mask, coco=coco_train),
            DetectionDataset(test, train=False, masks=False, coco=coco_test), names, coco_test)


def evaluate(cfg: dict, model: torch.nn.Module, test_ds: Any, names: tuple[str, ...], gt: Any, device: torch.device,
             rank: int, world: int, amp: bool) -> dict[str, Any] | None:
    from .engine import predict

    batch = int(cfg.get("test", {}).get("batch", 1))
    if cfg["data"]["format"] == "voc":
        preds = predict(model, test_ds, device, rank, world, batch, amp)
        preds = {test_ds.samples[i].image_id: p for i, p in preds.items()}
    else:
        from .coco_eval import to_coco_results

        cat_ids = gt.lewel_cat_ids
        preds = predict(model, test_ds, device, rank, world, batch, amp,
                        convert=lambda i, p: to_coco_results(test_ds.samples[i].image_id, p, cat_ids))
    if world > 1:
        parts: list[Any] = [None] * world
        torch.distributed.all_gather_object(parts, preds)
        preds = {k: v for part in parts for k, v in part.items()}
    if rank != 0:
        return None
    if cfg["data"]["format"] == "voc":
        from .voc_eval import evaluate_voc

        return evaluate_voc(gt, preds, names, use_07_metric=bool(cfg["data"].get("use_07_metric", True)))
    from .coco_eval import evaluate_coco

    results = [r for v in preds.values() for r in v]
    types = ("bbox", "segm") if cfg["mask"] else ("bbox",)
    return evaluate_coco(gt, results, types, image_ids=[s.image_id for s in test_ds.samples])


def run_torchvision(cfg: dict, bb: Backbone, root: Path, out: Path, seed: int) -> dict[str, Any] | None:
    from .tv_models import build_model, convert_sync_bn

    info = init_distributed()
    seed_everything(seed + info.rank)
    amp = resolve_auto(cfg.get("amp", "auto"), info.device.type == "cuda")
    nw = default_num_workers() if cfg.get("num_workers", "auto") == "auto" else int(cfg["num_workers"])
    train_ds, test_ds, names, gt = build_datasets(cfg, root)
    model = build_model(cfg["arch"], bb, len(names), bool(cfg["mask"]), **cfg["model"])
    model = convert_sync_bn(model).to(info.device)
    net: torch.nn.Module = model
    if info.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None,
                                                      find_unused_parameters=True)
    from .engine import precise_bn, train

    train(net, train_ds, cfg["solver"], out, info.device, seed, info.rank, info.world_size, nw, amp)
    batch = int(cfg["solver"]["ims_per_batch"]) // info.world_size
    precise_bn(net, train_ds, int(cfg.get("test", {}).get("precise_bn_iters", 0)), batch, info.device, seed,
               info.rank, info.world_size, amp)
    return evaluate(cfg, net, test_ds, names, gt, info.device, info.rank, info.world_size, amp)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(rank=int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))))
    start = now_iso()
    cfg = load_config(args.config, CONFIG_DIR, args.opts)
    backend = choose_backend(args.backend)
    bb = resolve_backbone(args.ckpt, seed=args.seed)
    exp = (bb.meta or {}).get("exp") or "random"
    out = Path(args.out) if args.out else REPO_ROOT / "runs" / str(exp) / "detection" / f"{Path(args.config).stem}-{backend}-s{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    done = out / "metrics.json"
    if done.is_file():
        log.info("%s exists: this run is finished (%s)", done, done.read_text().strip())
        return
    root = Path(args.data) if args.data else default_data_root(cfg)
    log.info("detection transfer: config %s, backend %s, protocol %s, data %s, checkpoint %s (%s), out %s",
             args.config, backend, cfg["protocol"], root, args.ckpt, bb.meta.get("method", "?"), out)
    if backend == "detectron2":
        from .train_net import run_detectron2

        metrics = run_detectron2(cfg, args, bb, root, out, args.d2_opts)
    else:
        metrics = run_torchvision(cfg, bb, root, out, args.seed)
    if metrics is None:  # not the main process
        return
    keys = METRIC_KEYS[cfg["eval"]]
    main_metrics = {k: round(float(metrics[k]), 3) for k in keys if k in metrics}
    extra = {k: v for k, v in metrics.items() if k not in keys}
    log.info("%s %s (%s, %s): %s", cfg["eval"], cfg["protocol"], backend, cfg["dataset"], main_metrics)
    result = {"metrics": main_metrics, **extra, "backend": backend, "config": args.config, "seed": args.seed}
    if not args.no_record:
        cfg_rec = {k: v for k, v in cfg.items() if k != "_meta"}
        rec = record_for_backbone(bb, eval=cfg["eval"], protocol=cfg["protocol"], metrics=main_metrics, seed=args.seed,
                                  config={**cfg_rec, "config_name": args.config, "data_root": str(root)},
                                  start_time=start, backend=backend, dataset=cfg["dataset"], **extra)
        result["record"] = str(write_record(rec))
        log.info("record: %s", result["record"])
    atomic_write_json(done, result)
