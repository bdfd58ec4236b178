"""The pretraining loop (moco-v3 style): per-iteration lr and EMA momentum, AMP on CUDA, resumable.

Outputs in ``out_dir``: ``checkpoint.pth`` (atomic; every ``ckpt.every_iters`` iterations and at every
epoch end), ``metrics.jsonl`` (one line per ``log_every`` iterations and per kNN evaluation),
``backbone.pth`` (torchvision ResNet state dict without fc, written at the end), ``config.yaml``,
``identity.json``.
Running again with the same ``out_dir`` resumes from the checkpoint; lines of ``metrics.jsonl`` after
the checkpoint's iteration are dropped, so the log reads as one unbroken run.

A run's identity is its config (overrides included, minus the ``_neutral_`` keys), the fingerprint of its
data (:mod:`lewel_bench.data.identity`) and :data:`CODE_VERSION`; a folder that holds a run of another
identity is refused, naming what differs (never resumed with other settings). Every checkpoint is checked
before it is written: a state with a NaN or inf tensor stops the run and leaves the last finite
checkpoint in place.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from lewel_bench import dist as ldist
from lewel_bench.checkpoint import PRETRAIN_FORMAT, non_finite_keys, save_backbone, torch_load
from lewel_bench.data.identity import data_identity
from lewel_bench.errors import LewelError, NonFiniteError
from lewel_bench.io import append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text, remove_stale_temp
from lewel_bench.knn import extract_features, knn_top1
from lewel_bench.optim import optimizer_for, schedule_from_config, set_lr
from lewel_bench.stage import differences, digest, identity_config
from lewel_bench.tblog import MetricWriter, alignment_grid, log_options
from lewel_bench.threads import ThreadTuner, candidates
from lewel_bench.utils import (amp_autocast, amp_step, channels_last_default, default_num_workers, get_rng_state,
                               git_commit, keep_freed_memory, resolve_auto, seed_everything, set_rng_state)

from .augment import build_views, eval_transform, view_specs, views_to_device
from .data import EpochBatchSampler, ImageFolderList, MultiViewDataset
from .methods import METHODS, SSLMethod
from .methods.base import FIFOQueue

log = logging.getLogger(__name__)


#: Bump when a change of the pretraining code changes what a config computes (part of every run's identity).
CODE_VERSION = 1


class NonFiniteLoss(NonFiniteError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


class ResumeError(LewelError, RuntimeError):
    """The output folder holds a checkpoint that cannot be resumed (another run, unreadable); it is left as it is."""


def run_identity(cfg: dict, data: dict) -> dict:
    """What determines a pretraining run's result (see the module docstring)."""
    return {"stage": "pretrain", "code_version": CODE_VERSION, "config": identity_config(cfg),
            "data": {"name": data["name"], "fingerprint": data["fingerprint"]}}


def identity_group(identity: dict) -> str:
    """The identity without the seed: runs of one recipe that the tables may average over seeds."""
    cfg = {k: v for k, v in identity["config"].items() if k != "seed"}
    return digest({**identity, "config": cfg})


def _num_workers(cfg: dict) -> int:
    n = cfg["data"].get("num_workers", "auto")
    return default_num_workers() if n in (None, "auto") else int(n)


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
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        reserved = 0 if cfg["data"].get("cache") else _num_workers(cfg)
        n = max(1, cores // max(world, 1) - reserved)
    torch.set_num_threads(int(n))
    log.info("torch compute threads: %d", torch.get_num_threads())
    if resolve_auto(cfg.get("threads_adapt", "auto"), device.type == "cpu" and world == 1 and auto) and int(n) > 1:
        log.info("compute threads adapt to the load: the fastest of %s, measured during the run",
                 ", ".join(map(str, candidates(int(n)))))
        return ThreadTuner(int(n))
    return None


#: Layout version of ``checkpoint_state`` (1: queues were the method's own ``queue`` / ``queue_ptr`` buffers).
STATE_VERSION = 2
#: Version-1 buffer names of a one-queue method -> their names in its ``queue`` :class:`FIFOQueue`.
_V1_QUEUE = {"queue": "queue.keys", "queue_ptr": "queue.ptr"}


def _queue_prefixes(method: SSLMethod) -> list[str]:
    return [f"{name}." for name, m in method.named_modules() if isinstance(m, FIFOQueue)]


def checkpoint_state(method: SSLMethod, optimizer, scaler, cfg: dict, epoch: int, iteration: int, exp: str,
                     identity: dict | None = None) -> dict:
    """Every parameter and buffer by the module tree: ``target`` (the target network's state), ``queue``
    (every :class:`FIFOQueue` submodule's buffers, by their names in the method), ``model`` (all the rest:
    the online network, predictors, ... ; the backbone under ``meta.backbone_prefix``)."""
    sd = method.state_dict()
    queues = _queue_prefixes(method)
    in_queue = {k for k in sd if any(k.startswith(q) for q in queues)}
    return {
        "model": {k: v for k, v in sd.items() if not k.startswith("target.") and k not in in_queue},
        "target": method.target.state_dict(),
        "queue": {k: sd[k] for k in sorted(in_queue)},
        "state_version": STATE_VERSION,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "iteration": iteration,
        "rng": get_rng_state(),
        "config": cfg,
        "meta": {"format": PRETRAIN_FORMAT, "backbone_prefix": method.backbone_prefix, "arch": cfg["arch"],
                 "method": cfg["method"], "epochs": cfg["epochs"], "exp": exp, "git": git_commit(),
                 "transfer_parts": method.transfer_parts(),
                 **({"identity": identity, "run_id": digest(identity), "group": identity_group(identity)}
                    if identity else {})},
    }


def load_checkpoint(path: Path, method: SSLMethod, optimizer, scaler, exp: str,
                    identity: dict | None = None) -> tuple[int, dict]:
    """Resume from ``path``; a file that is unreadable, of another experiment or of another identity is a
    :class:`ResumeError` (the file is left as it is)."""
    ck = torch_load(path, "pretraining checkpoint", ResumeError)
    meta = ck.get("meta", {}) if isinstance(ck, dict) else {}
    if meta.get("format") != PRETRAIN_FORMAT:
        raise ResumeError(f"{path} is not a lewel-bench pretraining checkpoint (meta.format={meta.get('format')!r}); "
                          f"it was left as it is: choose another output folder (OUT=...) or move it away")
    if meta.get("exp") != exp or meta.get("method") != method.cfg["method"]:
        raise ResumeError(f"{path} holds experiment {meta.get('exp')!r} (method {meta.get('method')!r}), not {exp!r}: "
                          f"choose another output folder (OUT=...) or delete it")
    saved = meta.get("identity")
    if identity is not None:
        if saved is None:  # a checkpoint of an older version: compare what it kept (the config)
            saved = {**identity, "config": identity_config({**ck.get("config", {}),
                                                            "_meta": {"neutral": _neutral(method.cfg)}})}
            if saved["config"] == identity["config"]:
                log.warning("%s has no data identity (an older version): its config matches; its data is not checked",
                            path)
        if digest(saved) != digest(identity):
            diff = differences(saved, identity)
            raise ResumeError(f"{path} holds a run with other settings ({'; '.join(diff)}): it is not resumed with "
                              f"these; choose another output folder (OUT=...) or delete it")
    sd = dict(ck["model"])
    sd.update({f"target.{k}": v for k, v in ck["target"].items()})
    queue = dict(ck["queue"])
    if ck.get("state_version", 1) == 1 and set(queue) == set(_V1_QUEUE) and "queue." in _queue_prefixes(method):
        queue = {_V1_QUEUE[k]: v for k, v in queue.items()}  # a checkpoint of the one-queue layout
    sd.update(queue)
    missing, unexpected = method.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ResumeError(f"{path} does not fit this version of {method.cfg['method']!r} (state layout "
                          f"{ck.get('state_version', 1)}, now {STATE_VERSION}; {len(missing)} tensor(s) missing, "
                          f"first {missing[:3]}; {len(unexpected)} unexpected, first {unexpected[:3]}): it was "
                          f"left as it is; start the run in another output folder")
    optimizer.load_state_dict(ck["optimizer"])
    scaler.load_state_dict(ck["scaler"])
    set_rng_state(ck["rng"])
    return int(ck["iteration"]), ck


def _neutral(cfg: dict) -> list[str]:
    return list((cfg.get("_meta") or {}).get("neutral", []))


def check_finite_state(state: dict, iteration: int, last_good: int, path: Path) -> None:
    """Refuse to write a checkpoint holding NaN / inf (model, target or queue); the last finite one stays."""
    bad = non_finite_keys({k: state[k] for k in ("model", "target", "queue")})
    if bad:
        raise NonFiniteError(f"the training state holds NaN or inf at iteration {iteration} ({len(bad)} tensor(s), "
                             f"first: {', '.join(bad[:3])}); stopped without saving. Last good checkpoint: {path} "
                             f"at iteration {last_good}")


def truncate_metrics(path: Path, iteration: int) -> None:
    """Keep only the metric lines of iterations <= ``iteration`` (those the checkpoint has seen)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("iter", 0) <= iteration:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    atomic_write_text(path, "".join(l + "\n" for l in keep))


@torch.no_grad()
def knn_monitor(method: SSLMethod, cfg: dict, device: torch.device, channels_last: bool) -> float:
    """kNN top-1 (k=20, cosine, weighted) of the online backbone: train split bank, held-out val split."""
    kc, dc = cfg["knn"], cfg["data"]
    tf = eval_transform(cfg["aug"]["size"])
    bank = ImageFolderList(dc["root"], dc["train_split"], tf, max_images=kc.get("max_train_images"))
    val = ImageFolderList(dc["root"], kc["split"], tf, max_images=kc.get("max_val_images"))
    mk = dict(batch_size=kc.get("batch_size", 256), num_workers=_num_workers(cfg), shuffle=False)
    was = method.training
    method.eval()
    bb = method.backbone
    ftr, ytr = extract_features(bb, DataLoader(bank, **mk), device, channels_last)
    fva, yva = extract_features(bb, DataLoader(val, **mk), device, channels_last)
    method.train(was)
    return knn_top1(ftr, ytr, fva, yva, num_classes=len(bank.classes), k=kc["k"], t=kc["t"])


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


@torch.no_grad()
def log_alignment_maps(writer: MetricWriter, method: SSLMethod, cfg: dict, device: torch.device, step: int,
                       n_images: int = 4) -> None:
    """TensorBoard image of the online alignment maps W of the first ``n_images`` images of the kNN split
    (one per class where it can), for methods that have them (LEWEL). Runs in eval mode under a forked RNG, so
    training (BN statistics, random maps, augmentation) is exactly what it would have been without it."""
    if not writer.active or not method.has_alignment_maps:
        return
    dc = cfg["data"]
    val = ImageFolderList(dc["root"], cfg["knn"]["split"], eval_transform(cfg["aug"]["size"]))
    first: dict[int, int] = {}
    for i, (_, y) in enumerate(val.samples):
        first.setdefault(y, i)
    idx = (list(first.values()) + list(range(len(val))))[:n_images]
    x = torch.stack([val[i][0] for i in idx]).to(device)
    was = method.training
    method.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        maps = method.alignment_maps(x).float().cpu()
    method.train(was)
    from .augment import IMAGENET_MEAN, IMAGENET_STD

    img = x.cpu() * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    writer.image("alignment_maps", alignment_grid(img.clamp(0, 1), maps), step)


def training_record(out_dir: Path, cfg: dict, exp: str, identity: dict, data: dict, iters_per_epoch: int,
                    device: torch.device, world: int, records_dir: str | Path | None,
                    sweep: dict | None = None) -> Path | None:
    """The run's training-speed record (eval ``pretrain``, protocol ``time_per_epoch``: seconds per epoch from
    the median images/s of ``metrics.jsonl``, on this device), written once per run (``pretrain_record.json``
    remembers it); LEWEL's Table 9 compares it."""
    from lewel_bench.checkpoint import sha256_file
    from lewel_bench.records import make_record, now_iso, write_record

    marker = out_dir / "pretrain_record.json"
    if marker.is_file() and json.loads(marker.read_text()).get("run_id") == digest(identity):
        return None
    ips = []
    for line in (out_dir / "metrics.jsonl").read_text().splitlines():
        try:
            v = json.loads(line).get("images_per_s")
        except json.JSONDecodeError:
            continue
        if isinstance(v, (int, float)) and v > 0:
            ips.append(float(v))
    if not ips:
        return None
    median = sorted(ips)[len(ips) // 2]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    hardware = f"{world}x {name}"
    rec = make_record(method=cfg["method"], pretrain_exp=exp, pretrain_epochs=cfg["epochs"], eval="pretrain",
                      protocol="time_per_epoch", seed=int(cfg["seed"]),
                      metrics={"time_per_epoch_s": round(iters_per_epoch * cfg["batch_size"] / median, 2),
                               "images_per_s": round(median, 2)},
                      checkpoint_sha256=sha256_file(out_dir / "backbone.pth"), config=identity["config"],
                      start_time=now_iso(), dataset=data["name"], data=data, run_id=digest(identity),
                      group=digest({"group": identity_group(identity), "hardware": hardware}), hardware=hardware,
                      pretrain_group=identity_group(identity),
                      amp=bool(resolve_auto(cfg["amp"], device.type == "cuda")), status="ok", pretrain_data=data["name"],
                      **({"pretrain_sweep": sweep} if sweep else {}))
    path = write_record(rec, records_dir)
    atomic_write_json(marker, {"run_id": digest(identity), "record": str(path)})
    log.info("training speed: %.1f images/s, %.1f s per epoch on %s -> %s", median,
             rec["metrics"]["time_per_epoch_s"], hardware, path)
    return path


def train(cfg: dict, out_dir: Path, exp: str, dist_info: ldist.DistInfo, records_dir: str | Path | None = None,
          sweep: dict | None = None) -> Path:
    """Train (or resume) the experiment; returns the path of ``checkpoint.pth``. ``sweep`` (``{"key", "value"}``:
    the run is one point of a sweep over that config key) goes into the backbone's meta and the records."""
    device = dist_info.device
    cuda = device.type == "cuda"
    amp = resolve_auto(cfg["amp"], cuda)
    channels_last = resolve_auto(cfg["channels_last"], channels_last_default(device.type, cfg["aug"]["size"]))
    seed = int(cfg["seed"])
    tuner = _set_threads(cfg, device, dist_info.world_size)
    if device.type == "cpu" and keep_freed_memory():
        log.info("allocator: freed memory kept for reuse (LEWEL_MALLOC=system: glibc's defaults)")
    seed_everything(seed + dist_info.rank, deterministic=cfg.get("deterministic", False))
    ckpt_path, metrics_path = out_dir / "checkpoint.pth", out_dir / "metrics.jsonl"

    world = dist_info.world_size
    if cfg["batch_size"] % world:
        raise ResumeError(f"batch_size {cfg['batch_size']} is not divisible by the {world} processes")
    local_bs = cfg["batch_size"] // world
    dc = cfg["data"]
    data = ldist.broadcast_object(data_identity(dc["root"], [dc["train_split"], cfg["knn"]["split"]])
                                  if dist_info.is_main else None)
    identity = run_identity(cfg, data)
    base = ImageFolderList(dc["root"], dc["train_split"], cache=dc.get("cache", False),
                           max_images=dc.get("max_images"), bad_images=dc.get("bad_images", "error"))
    ac = cfg["aug"]
    batched = resolve_auto(ac.get("batched", "auto"), cuda)
    specs = view_specs(ac)
    ds = MultiViewDataset(base, build_views(specs, batched), seed)
    ipe = len(ds) // cfg["batch_size"]
    total = cfg["epochs"] * ipe
    schedule = schedule_from_config(cfg["schedule"], total, ipe, base_lr=cfg["optim"]["lr"])

    method = METHODS.get(cfg["method"])(cfg)
    method.check_views(len(specs))
    method.iters_per_epoch = ipe
    if cfg.get("sync_bn"):
        if cuda and world > 1:
            method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        else:
            log.warning("sync_bn ignored: SyncBatchNorm needs CUDA and several processes")
    method.to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = optimizer_for(method, cfg["optim"])
    compiled = compile_networks(method, cfg.get("compile", "auto"))
    if compiled:
        log.info("torch.compile: %s (compiled on first use)", ", ".join(compiled))
    scaler = torch.amp.GradScaler("cuda", enabled=amp and cuda)

    log.info("%s: %s (%s, %s), %d epochs x %d iterations, batch %d (%d per process), %d views (%s px), data %s "
             "(%s, %d images, fingerprint %s), out %s, %d process(es) on %s, %d compute threads, %d loader workers",
             exp, cfg["method"], cfg["arch"], cfg["_meta"]["config_path"], cfg["epochs"], ipe, cfg["batch_size"],
             local_bs, len(specs), "/".join(str(v.size) for v in specs), dc["root"], data["name"], len(base),
             data["fingerprint"][:12], out_dir, world, device, torch.get_num_threads(), _num_workers(cfg))
    it = 0
    if ckpt_path.exists():
        it, _ = load_checkpoint(ckpt_path, method, optimizer, scaler, exp, identity)
        log.info("resuming %s from %s at iteration %d/%d (epoch %d)", exp, ckpt_path, it, total, it // ipe)
        if dist_info.is_main:
            remove_stale_temp(out_dir)
            truncate_metrics(metrics_path, it)
    elif dist_info.is_main:  # fresh start (a run killed before its first checkpoint leaves only log lines)
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp(out_dir)
        truncate_metrics(metrics_path, 0)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        atomic_write_json(out_dir / "identity.json", {"run_id": digest(identity), "group": identity_group(identity),
                                                       "identity": identity})
    ldist.barrier()
    last_good = it
    # TensorBoard under the run folder; on resume, events after the checkpoint's iteration are dropped
    writer = MetricWriter.for_run(out_dir, cfg, dist_info.is_main, exp, purge_step=it or None)
    images_every = log_options(cfg)["images_every"]

    model = method
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if cuda else None, broadcast_buffers=False)

    def save(epoch: int) -> None:
        nonlocal last_good
        state = checkpoint_state(method, optimizer, scaler, cfg, epoch, it, exp, identity)
        bad = torch.tensor([float(bool(non_finite_keys({k: state[k] for k in ("model", "target", "queue")})))],
                           device=device)
        if ldist.is_dist():
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bad.item():
            bar.close()
            check_finite_state(state, it, last_good, ckpt_path)  # names the tensor where this rank has one
            raise NonFiniteError(f"another process holds NaN or inf at iteration {it}; stopped without saving. "
                                 f"Last good checkpoint: {ckpt_path} at iteration {last_good}")
        if dist_info.is_main:
            atomic_torch_save(state, ckpt_path)
        last_good = it
        ldist.barrier()

    log_every, ck_every = int(cfg.get("log_every", 1)), int(cfg["ckpt"].get("every_iters", 0) or 0)
    bar = tqdm(total=total, initial=it, disable=not dist_info.is_main, desc=exp, dynamic_ncols=True,
               mininterval=float(cfg.get("tqdm_interval", 2.0)))
    nw = _num_workers(cfg)
    while it < total:
        epoch = it // ipe
        sampler = EpochBatchSampler(len(ds), local_bs, seed, epoch, it % ipe, dist_info.rank, world)
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=nw, pin_memory=cuda)
        method.train()
        t0, n_img = time.perf_counter(), 0
        for batch in loader:
            views = [views_to_device(v, device, batched) for v in batch]
            if channels_last:
                views = [x.contiguous(memory_format=torch.channels_last) for x in views]
            set_lr(optimizer, schedule, it)
            lr = schedule.lr(cfg["optim"]["lr"], it)
            m = method.momentum_at(it, total)
            method.iteration = it
            t_step = time.perf_counter()
            with amp_autocast(device, amp):
                loss, logs = model(views)
            loss_val = ldist.all_reduce_mean(loss.detach().float()).item()
            if not math.isfinite(loss_val):
                bar.close()
                raise NonFiniteLoss(f"{exp}: loss is {loss_val} at iteration {it} (epoch {epoch}, lr {lr:.4g}); "
                                    f"stopped. Last good checkpoint: {ckpt_path} at iteration {last_good}")
            amp_step(loss, optimizer, scaler, cfg["optim"].get("clip_grad_norm"))
            method.update_target(m)
            threads = torch.get_num_threads()
            if tuner is not None:
                tuner.step(time.perf_counter() - t_step)
            it += 1
            n_img += views[0].shape[0] * world
            bar.update(1)
            if it % log_every == 0 or it == total:
                dt = time.perf_counter() - t0
                rec = {"iter": it, "epoch": epoch, "loss": loss_val, "lr": lr, "momentum": m,
                       "images_per_s": n_img / dt if dt > 0 else None, "threads": threads}
                rec.update({k: ldist.all_reduce_mean(v.float()).item() for k, v in logs.items()})
                if dist_info.is_main:
                    append_jsonl(metrics_path, rec)
                    writer.scalars({k: v for k, v in rec.items() if k not in ("iter", "epoch")}, it, "train")
                bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{lr:.3g}")
                t0, n_img = time.perf_counter(), 0
            if ck_every and it % ck_every == 0 and it % ipe:
                save(epoch)
        done = it // ipe
        kc = cfg["knn"]
        if kc.get("every") and (done % kc["every"] == 0 or it == total):
            if dist_info.is_main:
                acc = knn_monitor(method, cfg, device, channels_last)
                append_jsonl(metrics_path, {"iter": it, "epoch": done, "knn_top1": acc})
                writer.scalars({"knn_top1": acc}, it, "monitor")
                bar.write(f"epoch {done}: kNN top-1 {acc:.2f}%")
                log.info("epoch %d: kNN top-1 (k=%d) on %s: %.2f%%", done, kc["k"], kc["split"], acc)
            ldist.barrier()
        if dist_info.is_main and images_every and (done % images_every == 0 or it == total):
            log_alignment_maps(writer, method, cfg, device, it)
        save(done)
        writer.flush()
    bar.close()
    writer.close()
    if dist_info.is_main:
        meta = {"method": cfg["method"], "epochs": cfg["epochs"], "arch": cfg["arch"], "exp": exp,
                "iteration": it, "seed": seed, "git": git_commit(), "run_id": digest(identity),
                "group": identity_group(identity), "data": data, **({"sweep": sweep} if sweep else {})}
        sd = method.state_dict()
        parts = {p: {dst: sd[src] for src, dst in keys.items()} for p, keys in method.transfer_parts().items()}
        save_backbone(out_dir / "backbone.pth", method.backbone.state_dict(), meta, parts)
        training_record(out_dir, cfg, exp, identity, data, ipe, device, world, records_dir, sweep)
    ldist.barrier()
    return ckpt_path
