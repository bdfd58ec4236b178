"""The detection transfer pipeline behind ``python -m eval_detection`` (:mod:`eval_detection.cli`): stage set-up,
the torchvision backend's training and evaluation, the detectron2 backend, the record."""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import torch

from lewel_bench.checkpoint import Backbone, resolve_backbone
from lewel_bench.config import ConfigError, load_config
from lewel_bench.data.layout import require_layout
from lewel_bench.dist import init_distributed
from lewel_bench.io import atomic_write_json
from lewel_bench.records import now_iso
from lewel_bench.stage import identity_config, open_stage
from lewel_bench.utils import (
    REPO_ROOT,
    default_num_workers,
    resolve_auto,
    seed_everything,
    setup_logging,
)

from .protocol import (
    CONFIG_DIR,
    METRIC_KEYS,
    PROTOCOL_VERSION,
    STATE_FILES,
    check_overrides,
    choose_backend,
    d2_pairs,
    data_parts,
    resolve_steps,
    transfer_parts,
)

log = logging.getLogger("eval_detection")


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
    from .datasets import (
        DatasetError,
        DetectionDataset,
        coco_class_names,
        load_coco,
        load_voc_splits,
        resolve_class_names,
    )

    d = cfg["data"]
    if d["format"] == "voc":
        years = sorted({y for y, _ in d["train"]} | {d["test"][0]})
        require_layout(root, "VOCdevkit", {f"VOC{y}/Annotations/*.xml": f"VOC{y}/Annotations/*.xml" for y in years})
        names = resolve_class_names(d["classes"])
        train, skips = load_voc_splits(root, d["train"], names, train=True)
        if not train and skips.get("skipped_unknown_class"):
            raise DatasetError(f"{root}: none of the {skips['skipped_unknown_class']} objects of the training split is "
                               f"one of the config's {len(names)} classes ({', '.join(names[:4])}, ...): the data "
                               f"has other classes (the embedded mini data's are its shapes: use a mini_* config, "
                               f"e.g. mini_voc_c4_24k)")
        test, _ = load_voc_splits(root, [d["test"]], names, train=False)
        test = _limit(test, cfg)
        gt = {s.image_id: {"boxes": s.gt_boxes, "labels": s.gt_labels, "difficult": s.difficult} for s in test}
        return DetectionDataset(train, train=True), DetectionDataset(test, train=False), names, gt
    require_layout(root, "COCO", {d["train"]["ann"]: d["train"]["ann"], d["test"]["ann"]: d["test"]["ann"]})
    train, _, coco_train = load_coco(root / d["train"]["ann"], root / d["train"]["images"], train=True)
    test, _, coco_test = load_coco(root / d["test"]["ann"], root / d["test"]["images"], train=False)
    names = coco_class_names(coco_train)
    if coco_class_names(coco_test) != names:
        raise DatasetError(f"{root}: the COCO train and val annotation files have different categories")
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


def run_torchvision(cfg: dict, bb: Backbone, root: Path, out: Path,
                    seed: int) -> tuple[dict[str, Any] | None, dict[str, int]]:
    """Train and evaluate with the torchvision backend: (metrics, None on the other ranks; the tensors the model
    took from the checkpoint per part)."""
    from .tv_models import build_model, convert_sync_bn

    info = init_distributed()
    seed_everything(seed + info.rank)
    amp = resolve_auto(cfg.get("amp", "auto"), info.device.type == "cuda")
    nw = default_num_workers() if cfg.get("num_workers", "auto") == "auto" else int(cfg["num_workers"])
    train_ds, test_ds, names, gt = build_datasets(cfg, root)
    model = build_model(cfg["arch"], bb, len(names), bool(cfg["mask"]), **cfg["model"])
    transfer = dict(model.transfer)
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
    return evaluate(cfg, net, test_ds, names, gt, info.device, info.rank, info.world_size, amp), transfer


def run(args: argparse.Namespace) -> None:
    """The detection transfer of the parsed arguments (see :mod:`eval_detection.cli`)."""
    info = init_distributed()
    setup_logging(rank=info.rank)
    start = now_iso()
    cfg = load_config(args.config, CONFIG_DIR, args.overrides)
    cfg["solver"]["steps"] = resolve_steps(cfg["solver"], f"config {args.config}")
    check_overrides(cfg, f"config {args.config}")
    backend = choose_backend(args.backend)
    if backend == "detectron2":  # what detectron2 cannot run as the config says: refused before any work
        from .detectron2_backend import check_for_detectron2, require_detectron2

        check_for_detectron2(cfg)
        require_detectron2()
    d2_opts = d2_pairs(args.d2_opt)
    if d2_opts and backend != "detectron2":
        raise ConfigError(f"--d2-opt is for the detectron2 backend; this run uses {backend}")
    transfer = args.transfer
    parts = transfer_parts(cfg, transfer, f"config {args.config}")
    bb = resolve_backbone(args.ckpt, seed=args.seed, parts=parts, prefix=args.ckpt_prefix, layout=args.layout)
    root = Path(args.data) if args.data else default_data_root(cfg)
    # the transfer choice changes the result: part of the identity (absent for the default, trunk)
    ident_extra = {"backend": backend, **({"d2_opts": d2_opts} if d2_opts else {}),
                   **({"transfer": transfer} if transfer != "trunk" else {})}
    st = open_stage("eval_detection", args, cfg, bb, info, root, data_parts(cfg), PROTOCOL_VERSION, start,
                    extra=ident_extra, state_files=STATE_FILES)
    if st.finished():
        return
    log.info("detection transfer: config %s, backend %s, protocol %s, transfer %s%s, data %s, checkpoint %s (%s), "
             "out %s", args.config, backend, cfg["protocol"], transfer, f" ({', '.join(parts)})" if parts else "",
             root, args.ckpt, bb.meta.get("method", "?"), st.out)
    if backend == "detectron2":
        from .detectron2_backend import run_detectron2

        metrics, ran, taken = run_detectron2(cfg, args, bb, root, st.out, d2_opts, parts)
    else:
        metrics, taken = run_torchvision(cfg, bb, root, st.out, args.seed)
        ran = identity_config(cfg)
    log.info("weights taken from the checkpoint (tensors per part): %s",
             ", ".join(f"{k} {v}" for k, v in taken.items()))
    if metrics is None:  # not the main process
        return
    keys = METRIC_KEYS[cfg["eval"]]
    main_metrics = {k: float(metrics[k]) for k in keys if k in metrics}
    main_metrics = {k: (round(v, 3) if math.isfinite(v) else v) for k, v in main_metrics.items()}
    extra = {k: v for k, v in metrics.items() if k not in keys}
    log.info("%s %s (%s, %s): %s", cfg["eval"], cfg["protocol"], backend, st.data["name"], main_metrics)
    result = {"metrics": main_metrics, **extra, "backend": backend, "config": args.config, "seed": args.seed,
              "transfer": taken}
    if args.no_record:
        atomic_write_json(st.out / "metrics.json", result)
        return
    path = st.finish(cfg["eval"], cfg["protocol"], main_metrics, args.records_dir,
                     config={**ran, "config_name": args.config}, backend=backend, transfer=taken, **extra)
    atomic_write_json(st.out / "metrics.json", {**result, "record": str(path)})
