"""Segmentation transfer through mmsegmentation's own Runner: FCN-R50-D8 on VOC12 (train + aug).

Usage::

    python -m eval_segmentation --config voc12aug --ckpt runs/lewel_b/backbone.pth --data /datasets/VOCdevkit
    python -m eval_segmentation --config mini --ckpt random:resnet50          # data/mini, explicit random init
    python -m eval_segmentation --config mini --ckpt runs/lewel_m/backbone.pth train_cfg.max_iters=400
    torchrun --nproc_per_node 4 -m eval_segmentation ...                     # DDP

Arguments, run identity and output folder follow the stage contract of :mod:`lewel_bench.stage`
(``--out`` is the mmengine work dir; default ``runs/<checkpoint>/eval_segmentation/<config>-<data>-s<seed>-
<run id>``). ``key=value`` overrides apply to the mmseg config (mmengine's dotted keys); each must name a
key the config has, with a value of the same type. The run's identity holds the resolved mmseg config,
so a longer schedule is another run in its own folder, never a resumed shorter one.

Steps (each resumable):

1. builds the mmseg config: the config file (a name in :data:`CONFIGS` picks the file for the checkpoint's
   ResNet depth; a config file whose depth differs from the checkpoint's is refused), the overrides, the
   data root (``--data``); this is the config the identity holds;
2. rank 0 converts ``--ckpt`` (through :func:`lewel_bench.checkpoint.resolve_backbone`) to
   ``<out>/backbone_mmseg.pth`` with :mod:`lewel_bench.transfer.mmseg`;
3. completes it for this run: the checkpoint (``model.backbone.init_cfg``), the per-process batch
   (``total_batch_size / world size``), the seed, the launcher, and ``resume=True`` when the work dir
   holds an mmengine checkpoint, and the checking loaders in every pipeline (:func:`checked_pipelines`: a mask
   of another size than its image or with labels outside 0..C-1 and 255 is refused naming the file, in
   training and in the test); ``Runner.from_cfg(cfg).train()`` then ``.test()`` (``IoUMetric`` on val);
4. rank 0 writes the result record (eval ``voc_seg``, protocol ``fcn_d8_20k``, mIoU / aAcc in %,
   ``per_class_iou``) and ``result.json``; running again after that does nothing (``--fresh`` runs again).

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lewel_bench import dist
from lewel_bench.args import ConfigArg
from lewel_bench.checkpoint import Backbone, torch_load
from lewel_bench.config import ConfigError, check_python_config, override_values
from lewel_bench.errors import LewelError
from lewel_bench.records import now_iso
from lewel_bench.stage import cli_entry, open_stage, parse_stage_args, stage_parser
from lewel_bench.tblog import log_options
from lewel_bench.transfer.mmseg import DEPTHS
from lewel_bench.utils import REPO_ROOT, setup_logging

from .declaration import PROTOCOL_VERSION

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
STATE_FILES = (CONVERTED, "iter_*.pth", "epoch_*.pth", "last_checkpoint", "record.json")
#: The parts of a VOC2012 folder the segmentation data reads (for the data fingerprint).
DATA_PARTS = ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass", "SegmentationClassAug")


class SegmentationError(LewelError, RuntimeError):
    """Bad input for the segmentation evaluation (config, data layout, work dir)."""


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser("python -m eval_segmentation", __doc__.split("\n\n")[0], "voc12aug", CONFIG_ARG)
    p.add_argument("--prefix", dest="ckpt_prefix", default=None, help=argparse.SUPPRESS)  # older name of --ckpt-prefix
    p.add_argument("--arch", default=None, help="backbone arch (default: from the checkpoint)")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                   help="mixed precision (mmengine AmpOptimWrapper); auto = on CUDA only")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_stage_args(build_parser(), argv)


def parse_overrides(cfg: Any, items: list[str], source: str) -> dict[str, Any]:
    """``key=value`` items as mmengine's ``merge_from_dict`` mapping (dotted leaves), read by the suite's one
    override parser (:func:`lewel_bench.config.override_values`): every key must exist in ``cfg`` and keep its
    type (an int may become a float; a list stays a list); a mapping sets the keys it names."""
    return override_values(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg, items, source)


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


def read_config(name: str, overrides: list[str] | tuple[str, ...] = (), depth: int = 50) -> Any:
    """The mmengine config of ``name`` (a key of :data:`CONFIGS` or a file) for a ResNet of ``depth``, with the
    overrides: a syntax error, a key given twice, an unknown key or a value of another type is a
    :class:`~lewel_bench.config.ConfigError` naming the file or the override."""
    from mmengine.config import Config

    path = config_path(name, depth)
    check_python_config(path)
    try:
        cfg = Config.fromfile(str(path))  # custom_imports: mmcv.ops shim + PerClassIoUMetric
    except Exception as e:  # noqa: BLE001 - a user's config: its errors are bad input, named with the file
        raise ConfigError(f"config file {path} cannot be read by mmengine ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:300]})") from None
    if overrides:
        cfg.merge_from_dict(parse_overrides(cfg, list(overrides), str(path)))
    return cfg


#: ``--config``: a name of :data:`CONFIGS` or a ``.py`` config file.
CONFIG_ARG = ConfigArg(CONFIG_DIR, suffixes=(".py",), loader=lambda spec, ov: read_config(spec, ov))


def protocol_cfg(args: argparse.Namespace, depth: int) -> Any:
    """The mmseg config of this protocol run (step 1 of the module docstring): what the run's identity holds."""
    path = config_path(args.config, depth)
    cfg = read_config(args.config, args.overrides, depth)
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
    cfg.model.backbone.pop("pretrained", None)
    cfg.model.pretrained = None
    return cfg


def identity_of(cfg: Any) -> dict:
    """The resolved mmseg config as plain JSON values, without its data roots (the data is fingerprinted) and
    its ``log`` options (TensorBoard: never part of a result)."""
    doc = json.loads(json.dumps(cfg.to_dict(), default=str))
    doc.pop("log", None)
    for d in walk_dicts(doc):
        if "data_root" in d:
            d["data_root"] = "<data>"
    return doc


#: pipeline step -> the step that loads the same way and checks what it read (eval_segmentation/mmseg_ext.py)
CHECKED_STEPS = {"LoadImageFromFile": "CheckedLoadImageFromFile", "LoadAnnotations": "CheckedLoadAnnotations"}


def checked_pipelines(cfg: Any) -> int:
    """Put the checking loaders in place of mmseg's in every pipeline of the train / val / test loaders: an image
    that cannot be decoded, a mask of another size than its image, a colour mask or labels other than the
    config's classes and 255 are refused naming the file, in training and in the test alike (the checks do not
    change what is read: not part of the run's identity). Returns the number of steps replaced."""
    heads = [cfg.model.get("decode_head") or {}]
    num_classes = int(heads[0].get("num_classes", 0))
    ignore = int(heads[0].get("ignore_index", 255))
    n = 0
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for d in walk_dicts(cfg.get(key)):
            for step in d.get("pipeline") or []:
                if isinstance(step, dict) and step.get("type") in CHECKED_STEPS:
                    if step["type"] == "LoadAnnotations":
                        if num_classes < 1:
                            raise SegmentationError("model.decode_head.num_classes is not set: the masks cannot be "
                                                    "checked against the classes")
                        step.update(num_classes=num_classes, ignore_index=ignore)
                    step["type"] = CHECKED_STEPS[step["type"]]
                    n += 1
    return n


def runtime_cfg(cfg: Any, args: argparse.Namespace, converted: Path, work_dir: Path, info: dist.DistInfo) -> Any:
    """Step 3 of the module docstring: the protocol config completed for this process and work dir."""
    from mmengine.runner import find_latest_checkpoint

    checked_pipelines(cfg)

    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(converted))
    if not any(k.startswith("train_dataloader.batch_size") for k in args.overrides):
        total = int(cfg.get("total_batch_size", cfg.train_dataloader.batch_size * info.world_size))
        if total % info.world_size:
            raise SegmentationError(f"total_batch_size {total} is not divisible by {info.world_size} processes")
        cfg.train_dataloader.batch_size = total // info.world_size
    if args.amp == "on" or (args.amp == "auto" and info.device.type == "cuda"):
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=args.seed, diff_rank_seed=False, deterministic=False)
    cfg.resume = find_latest_checkpoint(str(work_dir)) is not None
    cfg.load_from = None
    if cfg.get("visualizer"):
        cfg.visualizer.name = f"seg_visualizer_{os.getpid()}_{time.time_ns()}"  # one per Runner in a process
        if log_options(cfg)["tensorboard"]:  # training losses, lr and val mIoU as TensorBoard scalars
            cfg.visualizer.vis_backends = [*cfg.visualizer.vis_backends,
                                           dict(type="TensorboardVisBackend", save_dir=str(work_dir / "tb"))]
    if info.distributed:
        cfg.launcher = "pytorch"  # process group already made by lewel_bench.dist (mmengine skips init_dist)
        if info.device.type == "cpu":
            set_norm(cfg, "BN")  # torch's SyncBatchNorm needs GPUs
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                         broadcast_buffers=False, find_unused_parameters=False)
    else:
        cfg.launcher = "none"
    return cfg


def convert_once(bb: Backbone, work_dir: Path, info: dist.DistInfo) -> Path:
    """Rank 0 converts the backbone into the work dir (kept while it is this checkpoint's); others wait."""
    from lewel_bench.transfer.mmseg import convert_backbone

    converted = work_dir / CONVERTED
    if info.is_main:
        old = torch_load(converted).get("meta", {}).get("source_sha256") if converted.is_file() else None
        if old != bb.sha256:
            convert_backbone(bb, converted)
    dist.barrier()
    return converted


def summarise(cfg: Any, args: argparse.Namespace, info: dist.DistInfo) -> dict[str, Any]:
    """The config facts a record keeps beside the resolved config (what a reader needs to judge the number)."""
    crop = cfg.get("crop_size")
    return {"config_file": str(config_path(args.config, cfg.model.backbone.depth)), "overrides": list(args.overrides),
            "world_size": info.world_size, "batch_per_process": cfg.train_dataloader.batch_size,
            "total_batch_size": cfg.train_dataloader.batch_size * info.world_size,
            "crop_size": list(crop) if crop else None, "max_iters": cfg.train_cfg.max_iters,
            "optimizer": dict(cfg.optim_wrapper.optimizer),
            # mmengine reverts SyncBN to BN in a single process
            "norm": cfg.model.backbone.norm_cfg.type if info.distributed else "BN",
            "backbone_type": cfg.model.backbone.type, "optim_wrapper": cfg.optim_wrapper.type,
            "device": str(info.device)}


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


@cli_entry("eval_segmentation")
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with trusted_torch_load():
        run(args)


def run(args: argparse.Namespace) -> None:
    """Configure, convert, train, test, record (see the module docstring)."""
    from lewel_bench.transfer.mmseg import load_for_mmseg

    info = dist.init_distributed()
    setup_logging(rank=info.rank)
    start = now_iso()
    t0 = time.time()
    bb = load_for_mmseg(args.ckpt, prefix=args.ckpt_prefix, arch=args.arch, seed=args.seed, layout=args.layout)
    cfg = protocol_cfg(args, DEPTHS[bb.arch])
    roots = sorted({d["data_root"] for d in dataset_cfgs(cfg)})
    if len(roots) != 1:
        raise SegmentationError(f"the config reads several data roots {roots}; pass --data to choose one")
    st = open_stage("eval_segmentation", args, {"_meta": {"overrides": list(args.overrides)}}, bb, info, Path(roots[0]), DATA_PARTS,
                    PROTOCOL_VERSION, start, state_files=STATE_FILES, identity_cfg=identity_of(cfg))
    if st.finished():
        return
    work_dir = st.out.resolve()
    converted = convert_once(bb, work_dir, info)
    cfg = runtime_cfg(cfg, args, converted, work_dir, info)
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()

    per_class = {k.split(".", 1)[1]: (None if math.isnan(v) else round(float(v), 2))
                 for k, v in metrics.items() if k.startswith("IoU.")}
    st.finish(EVAL, cfg.get("lewel_protocol", PROTOCOL),
              {"mIoU": round(float(metrics["mIoU"]), 2), "aAcc": round(float(metrics["aAcc"]), 2)},
              args.records_dir, config={**st.identity.config, "lewel_summary": summarise(cfg, args, info)},
              per_class_iou=per_class, mAcc=(round(float(metrics["mAcc"]), 2) if math.isfinite(
                  float(metrics.get("mAcc", float("nan")))) else None),
              wall_time_s=round(time.time() - t0, 1))
    dist.barrier()
