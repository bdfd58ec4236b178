"""Segmentation transfer through mmsegmentation's own Runner: FCN-R50-D8 on VOC12 (train + aug).

Usage::

    python -m eval_segmentation --ckpt runs/lewel_b/backbone.pth --work-dir runs/lewel_b/eval_segmentation/voc12aug \
        --config voc12aug --data /datasets/VOCdevkit
    python -m eval_segmentation --ckpt random:resnet50 --work-dir /tmp/seg --config mini   # data/mini
    python -m eval_segmentation --ckpt runs/lewel_m/backbone.pth --work-dir /tmp/seg18 --config mini  # ResNet-18
    torchrun --nproc_per_node 4 -m eval_segmentation ...                                  # DDP

Steps (each resumable):

1. rank 0 converts ``--ckpt`` (through :func:`lewel_bench.checkpoint.resolve_backbone`) to
   ``<work-dir>/backbone_mmseg.pth`` with :mod:`tools.convert_to_mmseg` (kept while the source's sha256
   is unchanged);
2. builds the mmseg config: the config file (a name in :data:`CONFIGS` picks the file for the converted
   backbone's depth; a config file whose depth differs from the checkpoint's is refused), ``--cfg-options key=value`` (mmengine's), then the
   checkpoint (``model.backbone.init_cfg``), the data root (``--data``), the per-process batch
   (``total_batch_size / world size``), the seed, the launcher, and ``resume=True`` when the work dir
   holds an mmengine checkpoint;
3. ``Runner.from_cfg(cfg).train()`` then ``.test()`` (mmseg's ``IoUMetric`` on val);
4. rank 0 writes the result record (eval ``voc_seg``, protocol ``fcn_d8_20k``, mIoU / aAcc in %,
   ``per_class_iou``, ``dataset``) and ``<work-dir>/record.json``; running again with the same
   checkpoint / config / overrides / data / seed after that does nothing (``--force`` evaluates
   again); with other overrides (e.g. a longer ``train_cfg.max_iters``) mmengine resumes and a new
   record is written.

Distributed: torchrun's or SLURM's environment (:func:`lewel_bench.dist.init_distributed`, NCCL on
CUDA, gloo on CPU) and mmengine's ``pytorch`` launcher; SyncBN on CUDA, BN on CPU processes.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lewel_bench import dist
from lewel_bench.checkpoint import Backbone, torch_load
from lewel_bench.io import atomic_write_json
from lewel_bench.records import now_iso, record_for_backbone, write_record
from lewel_bench.utils import REPO_ROOT, setup_logging
from tools.convert_to_mmseg import DEPTHS

log = logging.getLogger("eval_segmentation")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: config name -> {ResNet depth: file}: the backbone's depth picks the file (the mini pretraining trains
#: ResNet-18, the protocol is ResNet-50).
CONFIGS: dict[str, dict[int, str]] = {
    "voc12aug": {50: "fcn_r50-d8_voc12aug-512x512_20k.py"},
    "mini": {50: "fcn_r50-d8_mini.py", 18: "fcn_r18-d8_mini.py"},
}
EVAL, PROTOCOL = "voc_seg", "fcn_d8_20k"
CONVERTED = "backbone_mmseg.pth"
DONE = "record.json"


class SegmentationError(RuntimeError):
    """Bad input for the segmentation evaluation (config, data layout, work dir)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(prog="python -m eval_segmentation", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="backbone.pth, pretraining checkpoint, torchvision state dict, "
                                                 "or random:resnet50 (explicit random-init baseline)")
    p.add_argument("--work-dir", required=True, help="mmengine work dir (checkpoints, logs; resumed when present)")
    p.add_argument("--config", default="voc12aug",
                   help=f"{' | '.join(CONFIGS)} (files in {CONFIG_DIR}) or a path to an mmseg config file")
    p.add_argument("--data", default=None,
                   help="VOCdevkit root (or its VOC2012 folder); replaces every data_root of the config")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="mmengine config overrides key=value (e.g. train_cfg.max_iters=100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", default=None, help="backbone key prefix inside --ckpt (default: found)")
    p.add_argument("--arch", default=None, help="backbone arch (default: from the checkpoint)")
    p.add_argument("--records-dir", default=None, help="default: results/records or $LEWEL_RESULTS_DIR/records")
    p.add_argument("--force", action="store_true", help="evaluate again even if this work dir has a record")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                   help="mixed precision (mmengine AmpOptimWrapper); auto = on CUDA only")
    return p.parse_args(argv)


def config_path(name: str, depth: int = 50) -> Path:
    """The config file of ``name`` (a key of :data:`CONFIGS` or a path) for a ResNet of ``depth``."""
    if name in CONFIGS:
        if depth not in CONFIGS[name]:
            raise SegmentationError(f"config {name!r} has no ResNet-{depth} variant (it has ResNet-"
                                    f"{', '.join(map(str, CONFIGS[name]))}); pass a config file with --config")
        return CONFIG_DIR / CONFIGS[name][depth]
    path = Path(name)
    if not path.is_file():
        raise SegmentationError(f"config {name!r} not found: expected one of {', '.join(CONFIGS)} or an existing file")
    return path


def converted_depth(converted: Path) -> int:
    """ResNet depth recorded in the converted checkpoint's meta (written by ``convert_backbone``)."""
    return int(torch_load(converted).get("meta", {}).get("depth", 50))


def walk_dicts(obj: Any) -> Iterator[dict]:
    """Every dict nested in ``obj`` (dicts and lists), ``obj`` itself included."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk_dicts(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from walk_dicts(v)


def dataset_cfgs(cfg: Any) -> Iterator[dict]:
    """The leaf dataset dicts (those with a ``data_root``) of the train / val / test loaders."""
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for d in walk_dicts(cfg.get(key)):
            if "data_root" in d:
                yield d


def resolve_data_root(data: str | Path) -> Path:
    """A VOCdevkit root (with VOC2012/) or the VOC2012 folder itself."""
    root = Path(data).expanduser().resolve()
    if (root / "VOC2012").is_dir():
        root = root / "VOC2012"
    if not root.is_dir():
        raise SegmentationError(f"--data {data}: no such folder (expected a VOCdevkit root or its VOC2012 folder)")
    return root


def check_data(cfg: Any) -> None:
    """Every dataset's list file and image / label folders exist (a clear error before the Runner)."""
    problems = []
    for d in dataset_cfgs(cfg):
        root = Path(d["data_root"])
        wanted = [root / d.get("ann_file", "")] + [root / v for v in (d.get("data_prefix") or {}).values()]
        problems += [str(p) for p in wanted if not p.exists()]
    if problems:
        hint = (" (SegmentationClassAug + ImageSets/Segmentation/aug.txt is the SBD aug set: training without it "
                "costs about 20 mIoU)") if any("Aug" in p or "aug.txt" in p for p in problems) else ""
        raise SegmentationError(f"segmentation data missing: {', '.join(sorted(set(problems))[:6])}{hint}")


def set_norm(cfg: Any, norm_type: str) -> None:
    """Replace every SyncBN/BN ``norm_cfg`` type in the model by ``norm_type``."""
    for d in walk_dicts(cfg.model):
        nc = d.get("norm_cfg")
        if isinstance(nc, dict) and nc.get("type") in ("SyncBN", "BN"):
            nc["type"] = norm_type


def build_cfg(args: argparse.Namespace, converted: Path, info: dist.DistInfo) -> Any:
    """The mmengine Config this run trains with (see the module docstring, step 2)."""
    from mmengine.config import Config
    from mmengine.runner import find_latest_checkpoint

    depth = converted_depth(converted)
    path = config_path(args.config, depth)
    cfg = Config.fromfile(str(path))  # custom_imports: mmcv.ops shim + PerClassIoUMetric
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    for d in dataset_cfgs(cfg):
        if args.data:
            d["data_root"] = str(resolve_data_root(args.data))
        elif not Path(d["data_root"]).is_absolute() and not Path(d["data_root"]).exists():
            d["data_root"] = str(REPO_ROOT / d["data_root"])  # the config's default, relative to the repo
    check_data(cfg)

    if cfg.model.backbone.type != "ResNet" or cfg.model.backbone.get("deep_stem", False):
        raise SegmentationError(
            f"{path}: backbone type {cfg.model.backbone.type!r}; the converted checkpoint is a "
            "torchvision-stem ResNet, which only mmseg's `ResNet` (deep_stem=False) loads (ResNetV1c/V1d have a "
            "deep stem)")
    if cfg.model.backbone.get("depth") != depth:
        raise SegmentationError(f"{path}: backbone depth {cfg.model.backbone.get('depth')}, "
                                f"but {args.ckpt} is a ResNet-{depth}: use a config for that depth")
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(converted))
    cfg.model.backbone.pop("pretrained", None)
    cfg.model.pretrained = None
    if "train_dataloader.batch_size" not in args.cfg_options:
        total = int(cfg.get("total_batch_size", cfg.train_dataloader.batch_size * info.world_size))
        if total % info.world_size:
            raise SegmentationError(f"total_batch_size {total} is not divisible by {info.world_size} processes")
        cfg.train_dataloader.batch_size = total // info.world_size
    if args.amp == "on" or (args.amp == "auto" and info.device.type == "cuda"):
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    cfg.work_dir = str(args.work_dir)
    cfg.randomness = dict(seed=args.seed, diff_rank_seed=False, deterministic=False)
    cfg.resume = find_latest_checkpoint(str(args.work_dir)) is not None
    cfg.load_from = None
    if cfg.get("visualizer"):
        cfg.visualizer.name = f"seg_visualizer_{os.getpid()}_{time.time_ns()}"  # one per Runner in a process
    if info.distributed:
        cfg.launcher = "pytorch"  # process group already made by lewel_bench.dist (mmengine skips init_dist)
        if info.device.type == "cpu":
            set_norm(cfg, "BN")  # torch's SyncBatchNorm needs GPUs
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=False)
    else:
        cfg.launcher = "none"
    return cfg


def prepare_backbone(args: argparse.Namespace, work_dir: Path, info: dist.DistInfo) -> tuple[Path, Backbone | None]:
    """Rank 0 converts ``--ckpt`` into the work dir (reused while the source is the same); others wait."""
    from tools.convert_to_mmseg import convert_backbone, load_for_mmseg

    converted, bb = work_dir / CONVERTED, None
    if info.is_main:
        bb = load_for_mmseg(args.ckpt, prefix=args.prefix, arch=args.arch, seed=args.seed)
        old = torch_load(converted).get("meta", {}).get("source_sha256") if converted.is_file() else None
        if old != bb.sha256:
            from mmengine.runner import find_latest_checkpoint

            if old is not None and find_latest_checkpoint(str(work_dir)):
                raise SegmentationError(
                    f"{work_dir} holds a run started from another checkpoint (sha256 {old[:12]}..., now "
                    f"{bb.sha256[:12]}...): use another --work-dir, or delete this one")
            convert_backbone(bb, converted)
    dist.barrier()
    return converted, bb


def summarise(cfg: Any, args: argparse.Namespace, info: dist.DistInfo) -> dict[str, Any]:
    """The config facts a record keeps (what the tables / a reader need to judge the number)."""
    crop = cfg.get("crop_size")
    return {"config_file": str(config_path(args.config, cfg.model.backbone.depth)), "cfg_options": dict(args.cfg_options),
            "data_root": sorted({d["data_root"] for d in dataset_cfgs(cfg)}), "world_size": info.world_size,
            "batch_per_process": cfg.train_dataloader.batch_size,
            "total_batch_size": cfg.train_dataloader.batch_size * info.world_size,
            "crop_size": list(crop) if crop else None, "max_iters": cfg.train_cfg.max_iters,
            "optimizer": dict(cfg.optim_wrapper.optimizer),
            # mmengine reverts SyncBN to BN in a single process
            "norm": cfg.model.backbone.norm_cfg.type if info.distributed else "BN",
            "backbone_type": cfg.model.backbone.type, "optim_wrapper": cfg.optim_wrapper.type,
            "work_dir": str(args.work_dir), "device": str(info.device)}


def invocation(args: argparse.Namespace, bb: Backbone | None) -> dict[str, Any]:
    """What makes two runs in one work dir the same evaluation (checkpoint, config, overrides, data, seed)."""
    return json.loads(json.dumps({
        "checkpoint_sha256": bb.sha256 if bb else None,
        "config": str(config_path(args.config, DEPTHS.get(bb.arch, 50) if bb else 50).resolve()),
        "cfg_options": dict(args.cfg_options), "data": str(resolve_data_root(args.data)) if args.data else None,
        "seed": args.seed}, default=str))


def already_done(done: Path, args: argparse.Namespace, bb: Backbone | None, info: dist.DistInfo) -> bool:
    """True (on every rank) when rank 0 finds this work dir's record of the very same invocation."""
    skip = False
    if info.is_main and done.is_file() and not args.force:
        prev = json.loads(done.read_text())
        skip = prev.get("invocation") == invocation(args, bb)
        if skip:
            log.info("already evaluated (%s): mIoU %s; --force to evaluate again", done, prev["metrics"].get("mIoU"))
    if info.distributed:
        import torch.distributed as tdist

        flag = [skip]
        tdist.broadcast_object_list(flag, src=0)
        skip = bool(flag[0])
    return skip


@contextmanager
def trusted_torch_load() -> Iterator[None]:
    """mmengine's resume ``torch.load``s its own work-dir checkpoints (pickled ``HistoryBuffer`` etc.), which
    torch >= 2.6 refuses by default: relax the default for this run only (the Makefile exports it too)."""
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with trusted_torch_load():
        run(args)


def run(args: argparse.Namespace) -> None:
    """Convert, train, test, record (see the module docstring)."""
    info = dist.init_distributed()
    setup_logging(rank=info.rank)
    work_dir = Path(args.work_dir).resolve()
    args.work_dir = work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    start = now_iso()
    t0 = time.time()

    converted, bb = prepare_backbone(args, work_dir, info)
    done = work_dir / DONE
    if already_done(done, args, bb, info):
        return

    cfg = build_cfg(args, converted, info)
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()

    if info.is_main:
        assert bb is not None
        per_class = {k.split(".", 1)[1]: (None if math.isnan(v) else round(float(v), 2))
                     for k, v in metrics.items() if k.startswith("IoU.")}
        rec = record_for_backbone(
            bb, eval=EVAL, protocol=cfg.get("lewel_protocol", PROTOCOL),
            metrics={"mIoU": round(float(metrics["mIoU"]), 2), "aAcc": round(float(metrics["aAcc"]), 2)}, seed=args.seed,
            config=summarise(cfg, args, info), start_time=start, per_class_iou=per_class,
            dataset=cfg.get("lewel_dataset", "unknown"), mAcc=round(float(metrics.get("mAcc", float("nan"))), 2),
            wall_time_s=round(time.time() - t0, 1))
        path = write_record(rec, args.records_dir)
        atomic_write_json(done, {**rec, "record_path": str(path), "invocation": invocation(args, bb)})
        log.info("mIoU %.2f aAcc %.2f -> %s", rec["metrics"]["mIoU"], rec["metrics"]["aAcc"], path)
    dist.barrier()


if __name__ == "__main__":
    main()
