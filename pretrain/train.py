"""Pretraining: a run's set-up around the loop of :mod:`pretrain.loop` (one :func:`~pretrain.loop.train_step`,
hooks around it: :mod:`pretrain.hooks`).

A run follows the stage contract (:mod:`lewel_bench.stage`): its identity is its config (overrides included,
minus the ``_neutral_`` keys), the fingerprint of its data and :data:`~pretrain.state.CODE_VERSION`; it holds its
folder (``--out``) while it runs; a folder that holds another run is refused naming what differs, ``--fresh``
discards the folder's state (:mod:`pretrain.state`). Everything a run reads (the training split, the kNN
monitor's split, the images' split, the records folder) is checked before its first step, and an epoch
without a single batch is refused.

Outputs in ``out_dir``: ``checkpoint.pth`` (atomic; every ``ckpt.every_iters`` iterations, at every epoch end and
when a signal stops the run), ``metrics.jsonl`` (one line per ``log_every`` iterations and per kNN pass),
``backbone.pth`` (torchvision ResNet state dict without fc, written when the run completes), ``config.yaml``,
``identity.json``, ``result.json`` (the finished run: a re-run reports it). Running again with the same
``out_dir`` resumes from the checkpoint; lines of ``metrics.jsonl`` after the checkpoint's iteration are dropped,
so the log reads as one unbroken run, and the per-iteration losses are those of an unbroken run.

Stopping: SIGINT (Ctrl-C), SIGTERM and SIGUSR2 (:mod:`lewel_bench.signals`) finish the step in progress (every
DDP process stops at the same one), write the checkpoint and end the command with one line and the status
128 + the signal (under submitit, after submitit's own handler has requeued the job). A NaN or inf loss, or a
NaN or inf tensor in the state at a checkpoint, stops the run and leaves the last finite checkpoint in place.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from lewel_bench import dist as ldist
from lewel_bench.config import ConfigError
from lewel_bench.data.identity import data_identity
from lewel_bench.data.layout import DataLayoutError
from lewel_bench.io import atomic_write_text, require_writable_dir
from lewel_bench.records import default_records_dir
from lewel_bench.signals import StopRequest
from lewel_bench.stage import RunFolder, on_main_rank
from lewel_bench.tblog import MetricWriter, log_options
from lewel_bench.threads import ThreadTuner, candidates
from lewel_bench.utils import (
    channels_last_default,
    keep_freed_memory,
    resolve_auto,
    seed_everything,
)

from .augment import build_views, eval_transform, view_specs
from .data import ImageFolderList, MultiViewDataset, loader_workers
from .hooks import (
    AlignmentImages,
    BackboneExport,
    Checkpointer,
    KnnMonitor,
    MetricLog,
    SpeedRecord,
    ThreadTuning,
)
from .loop import Hook, Loop, build_step
from .methods import METHODS, SSLMethod
from .state import (
    BACKBONE,
    CHECKPOINT,
    METRICS,
    open_run,
    pretrain_identity,
    restore,
    run_folder,
    truncate_metrics,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------------------
def _set_threads(cfg: dict, device: torch.device, world: int) -> ThreadTuner | None:
    """``num_threads``: auto = on CPU, the cores of this process minus its loader workers (at least 1);
    with ``data.cache`` the workers only augment decoded in-memory images and get no core of their own.

    On a small shared CPU machine, more compute threads than free cores makes every OpenMP barrier
    wait for a descheduled thread: a step is then several times SLOWER than with one thread. A cached
    loader worker is light enough to share: mini LEWEL_M on 2 quiet cores runs at 2.69 it/s with 2
    compute threads, 1.92 it/s with 1.

    ``threads_adapt`` (auto = on for one CPU process with ``num_threads: auto``) returns a
    :class:`ThreadTuner` that keeps whichever count is fastest while other programs share the cores."""
    n = cfg.get("num_threads", "auto")
    auto = n in (None, "auto")
    if auto:
        if device.type != "cpu":
            return None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        reserved = 0 if cfg["data"].get("cache") else loader_workers(cfg)
        n = max(1, cores // max(world, 1) - reserved)
    torch.set_num_threads(int(n))
    log.info("torch compute threads: %d", torch.get_num_threads())
    if resolve_auto(cfg.get("threads_adapt", "auto"), device.type == "cpu" and world == 1 and auto) and int(n) > 1:
        log.info("compute threads adapt to the load: the fastest of %s, measured during the run",
                 ", ".join(map(str, candidates(int(n)))))
        return ThreadTuner(int(n))
    return None


def compile_networks(method: SSLMethod, mode: bool | str) -> list[str]:
    """``compile``: true = ``torch.compile`` every network of the method (online encoder, target, predictors;
    ``nn.Module.compile`` in place, so state dicts and checkpoints are unchanged); false / auto = eager (auto is
    eager until a device is measured where compiling pays for itself). Returns the compiled names."""
    if mode is not True:
        return []
    names = []
    for name, child in method.named_children():
        if any(True for _ in child.parameters()):
            child.compile()
            names.append(name)
    return names


@dataclass
class Data:
    """What a run reads, opened (and so checked) before its first step: the training views, the kNN monitor's
    bank and queries, the images' split (None where the run does not read them)."""

    base: ImageFolderList
    train: MultiViewDataset
    batched: bool
    knn_bank: ImageFolderList | None
    knn_val: ImageFolderList | None
    images: ImageFolderList | None


def _split(what: str, root: str, split: str, **kw) -> ImageFolderList:
    try:
        return ImageFolderList(root, split, **kw)
    except DataLayoutError as e:
        raise DataLayoutError(f"{what}: {e}") from None


def open_data(cfg: dict, batched: bool, images: bool) -> Data:
    """Every split the run reads (the monitor's and the images' only when they run); an epoch without a single
    batch (``batch_size`` over all processes, the remainder dropped) is refused."""
    dc, kc, ac = cfg["data"], cfg["knn"], cfg["aug"]
    base = _split("training data", dc["root"], dc["train_split"], cache=dc.get("cache", False),
                  max_images=dc.get("max_images"), bad_images=dc.get("bad_images", "error"))
    if len(base) < cfg["batch_size"]:
        world = ldist.get_world_size()
        subset = f" (data.max_images={dc['max_images']})" if dc.get("max_images") else ""
        raise ConfigError(f"{len(base)} training images in {Path(dc['root']) / dc['train_split']}{subset} make no "
                          f"batch of batch_size {cfg['batch_size']} ({cfg['batch_size'] // world} per process x "
                          f"{world} process(es); the remainder is dropped): an epoch would train no iteration. "
                          f"Lower batch_size or give more images")
    tf = eval_transform(ac["size"])
    knn = bool(kc.get("every"))
    why = f"the kNN monitor (knn.every={kc.get('every')}; knn.every=0 turns it off) reads it"
    bank = _split(f"{why}: its bank", dc["root"], dc["train_split"], transform=tf,
                  max_images=kc.get("max_train_images"), bad_images=dc.get("bad_images", "error")) if knn else None
    val = _split(why, dc["root"], kc["split"], transform=tf, max_images=kc.get("max_val_images"),
                 bad_images=dc.get("bad_images", "error")) if knn else None
    img = _split(f"the alignment-map images (log.images_every={log_options(cfg)['images_every']}) read it",
                 dc["root"], kc["split"], transform=tf) if images else None
    return Data(base, MultiViewDataset(base, build_views(view_specs(ac), batched), int(cfg["seed"])), batched, bank,
                val, img)


def build_method(cfg: dict, device: torch.device, world: int, channels_last: bool, ipe: int) -> SSLMethod:
    """The method of ``cfg`` on ``device`` (SyncBN under CUDA DDP when asked; channels_last)."""
    method = METHODS.get(cfg["method"])(cfg)
    method.check_views(len(view_specs(cfg["aug"])))
    method.iters_per_epoch = ipe
    if cfg.get("sync_bn"):
        if device.type == "cuda" and world > 1:
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        else:
            log.warning("sync_bn ignored: SyncBatchNorm needs CUDA and several processes")
    method.to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    return method


def default_hooks(cfg: dict, data: Data, tuner: ThreadTuner | None, records_dir: str | Path | None,
                  sweep: dict | None) -> list[Hook]:
    """The loop's hooks, in calling order (the metrics line of an iteration before its checkpoint; the epoch
    end's kNN pass and images before its checkpoint; the backbone before the record that hashes it)."""
    hooks: list[Hook] = [ThreadTuning(tuner)] if tuner is not None else []
    hooks.append(MetricLog(int(cfg.get("log_every", 1))))
    if data.knn_bank is not None:
        hooks.append(KnnMonitor(data.knn_bank, data.knn_val))
    if data.images is not None:
        hooks.append(AlignmentImages(data.images, log_options(cfg)["images_every"]))
    return hooks + [Checkpointer(int(cfg["ckpt"].get("every_iters", 0) or 0)), BackboneExport(sweep),
                    SpeedRecord(records_dir, sweep)]


def train(cfg: dict, out_dir: Path, exp: str, dist_info: ldist.DistInfo, records_dir: str | Path | None = None,
          sweep: dict | None = None, fresh: bool = False, stop: StopRequest | None = None) -> Path:
    """Train (or resume) the experiment; returns the path of ``checkpoint.pth``. ``sweep`` (``{"key", "value"}``:
    the run is one point of a sweep over that config key) goes into the backbone's meta and the records;
    ``fresh`` discards the folder's saved state first; ``stop``: the caller's stop request (default: its own)."""
    stop = stop or StopRequest()
    with stop:
        stop.immediate = "before the first training step: nothing new to save"
        tuner = _compute_settings(cfg, dist_info)
        folder = _run_folder(cfg, Path(out_dir), dist_info)
        try:
            if not fresh and folder.finished() and (folder.out / BACKBONE).is_file():
                log.info("%s: already finished (%s); pass --fresh to train it again", exp, folder.out / "result.json")
            else:
                data, ck = _open_inputs(cfg, folder, exp, dist_info, records_dir, fresh)
                loop = _start(cfg, folder, exp, dist_info, data, ck, stop,
                              default_hooks(cfg, data, tuner, records_dir, sweep))
                with stop.deferred():
                    try:
                        loop.run()
                    finally:
                        loop.bar.close()  # before the line that ends the command
                stop.immediate = "while writing the outputs of the finished training: the same command writes them"
                loop.finish()
                _write_result(loop, folder)
            ldist.barrier()
        finally:
            folder.lock.release()
    return folder.out / CHECKPOINT


def _compute_settings(cfg: dict, info: ldist.DistInfo) -> ThreadTuner | None:
    """Compute threads (and their tuner), the CPU allocator policy, the seeds (seed + rank)."""
    tuner = _set_threads(cfg, info.device, info.world_size)
    if info.device.type == "cpu" and keep_freed_memory():
        log.info("allocator: freed memory kept for reuse (LEWEL_MALLOC=system: glibc's defaults)")
    seed_everything(int(cfg["seed"]) + info.rank, deterministic=cfg.get("deterministic", False))
    return tuner


def _run_folder(cfg: dict, out_dir: Path, info: ldist.DistInfo) -> RunFolder:
    """The run's identity (its data fingerprinted on the main process) and folder."""
    if cfg["batch_size"] % info.world_size:
        raise ConfigError(f"batch_size {cfg['batch_size']} is not divisible by the {info.world_size} processes")
    dc = cfg["data"]
    data_id = on_main_rank(info.is_main, lambda: data_identity(dc["root"], [dc["train_split"], cfg["knn"]["split"]]))
    return run_folder(out_dir, pretrain_identity(cfg, data_id))


def _open_inputs(cfg: dict, folder: RunFolder, exp: str, info: ldist.DistInfo, records_dir: str | Path | None,
                 fresh: bool) -> tuple[Data, dict | None]:
    """What the run reads and where it writes, checked in the order that refuses bad input before a file is
    written: the splits, the records folder, then the run folder (held; its checkpoint read and checked).
    Returns the data and the checkpoint to resume from (None: a fresh start)."""
    opts = log_options(cfg)
    images = bool(opts["images_every"] and (opts["tensorboard"] or opts["wandb"])
                  and METHODS.get(cfg["method"]).has_alignment_maps)
    data = open_data(cfg, resolve_auto(cfg["aug"].get("batched", "auto"), info.device.type == "cuda"), images)
    on_main_rank(info.is_main, lambda: require_writable_dir(records_dir or default_records_dir(),
                                                            "the records folder (--records-dir)"))
    neutral = list((cfg.get("_meta") or {}).get("neutral", []))
    return data, open_run(folder, exp, fresh, info.is_main, neutral)


def _start(cfg: dict, folder: RunFolder, exp: str, info: ldist.DistInfo, data: Data, ck: dict | None,
           stop: StopRequest, hooks: list[Hook]) -> Loop:
    """The method and its step (restored from ``ck``), the folder's first files, the loop."""
    device, world, out_dir = info.device, info.world_size, folder.out
    cuda = device.type == "cuda"
    amp = resolve_auto(cfg["amp"], cuda)
    channels_last = resolve_auto(cfg["channels_last"], channels_last_default(device.type, cfg["aug"]["size"]))
    ipe = len(data.train) // cfg["batch_size"]
    method = build_method(cfg, device, world, channels_last, ipe)
    step = build_step(method, cfg, device, ipe * cfg["epochs"], ipe, amp, channels_last, data.batched)
    compiled = compile_networks(method, cfg.get("compile", "auto"))
    if compiled:
        log.info("torch.compile: %s (compiled on first use)", ", ".join(compiled))
    _log_run(cfg, exp, folder, info, data, ipe)
    it = 0
    if ck is not None:
        it = restore(ck, out_dir / CHECKPOINT, method, step.optimizer, step.scaler)
        log.info("resuming %s from %s at iteration %d/%d (epoch %d)", exp, out_dir / CHECKPOINT, it, step.total,
                 it // ipe)
    if info.is_main:
        truncate_metrics(out_dir / METRICS, it)
        if ck is None:
            atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    ldist.barrier()
    if world > 1:
        step.model = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if cuda else None, broadcast_buffers=False)
    # TensorBoard under the run folder; on resume, the events after the checkpoint's iteration are dropped
    writer = MetricWriter.for_run(out_dir, cfg, info.is_main, exp, purge_step=it + 1 if it else None)
    return Loop(cfg, exp, out_dir, info, folder.identity, step, data.train, ipe, it, stop, writer, hooks,
                epoch_end_pending=bool(ck and ck.get("epoch_end_pending")))


def _log_run(cfg: dict, exp: str, folder: RunFolder, info: ldist.DistInfo, data: Data, ipe: int) -> None:
    specs, world, ident = view_specs(cfg["aug"]), info.world_size, folder.identity.data
    log.info("%s: %s (%s, %s), %d epochs x %d iterations, batch %d (%d per process), %d views (%s px), data %s "
             "(%s, %d images, fingerprint %s), out %s, %d process(es) on %s, %d compute threads, %d loader workers",
             exp, cfg["method"], cfg["arch"], cfg["_meta"]["config_path"], cfg["epochs"], ipe, cfg["batch_size"],
             cfg["batch_size"] // world, len(specs), "/".join(str(v.size) for v in specs), cfg["data"]["root"],
             ident["name"], len(data.base), ident["fingerprint"][:12], folder.out, world, info.device,
             torch.get_num_threads(), loader_workers(cfg))


def _write_result(loop: Loop, folder: RunFolder) -> None:
    """``result.json`` of the finished run (main process): a re-run reports it."""
    if loop.info.is_main:
        speed = next((h for h in loop.hooks if isinstance(h, SpeedRecord)), None)
        record = str(speed.path) if speed is not None and speed.path else None
        folder.write_result({"iterations": loop.it, "epochs": loop.cfg["epochs"]}, record,
                            backbone=str(folder.out / BACKBONE))
