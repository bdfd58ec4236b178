"""What the pretraining loop does besides the step, as hooks (detectron2 / mmengine style).

:class:`pretrain.loop.Loop` calls every hook's (:class:`pretrain.loop.Hook`) ``before_train``, ``before_epoch``,
``before_step``, ``after_step(out)``, ``after_epoch`` and ``after_train``, in the order of its list
(:func:`pretrain.train.default_hooks`): thread tuning, the metrics log, the kNN monitor, the alignment-map
images, checkpointing, the backbone export and the training-speed record. A hook reads the loop's state
(``loop.it``: iterations done, ``loop.epoch``, ``loop.method``, ``loop.cfg``, ``loop.writer``, ...) and changes
nothing the step computes: a run logs the same losses with any set of them.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lewel_bench import dist as ldist
from lewel_bench.checkpoint import save_backbone, sha256_file
from lewel_bench.io import append_jsonl, atomic_write_json
from lewel_bench.knn import extract_features, knn_top1
from lewel_bench.tblog import MetricWriter, alignment_grid
from lewel_bench.threads import ThreadTuner
from lewel_bench.utils import git_commit, resolve_auto

from .augment import IMAGENET_MEAN, IMAGENET_STD
from .data import ImageFolderList, loader_workers
from .loop import Hook, Loop, StepOutput
from .methods import SSLMethod
from .state import BACKBONE, RECORD_MARKER, progress

log = logging.getLogger(__name__)


def _due(loop: Loop, every: int) -> bool:
    """The epoch just finished is a multiple of ``every`` epochs, or the last one."""
    return bool(every) and ((loop.it // loop.ipe) % every == 0 or loop.it == loop.total)


# --------------------------------------------------------------------------------------------------
class ThreadTuning(Hook):
    """Times each step for the :class:`~lewel_bench.threads.ThreadTuner` (``threads_adapt``), which sets the
    compute threads of the next ones."""

    def __init__(self, tuner: ThreadTuner) -> None:
        self.tuner, self._t = tuner, 0.0

    def before_step(self, loop: Loop) -> None:
        self._t = time.perf_counter()

    def after_step(self, loop: Loop, out: StepOutput) -> None:
        self.tuner.step(time.perf_counter() - self._t)


class MetricLog(Hook):
    """Every ``log_every`` iterations and at the last: a ``metrics.jsonl`` line (iteration, epoch, loss and the
    method's terms averaged over processes, lr, EMA momentum, images/s since the last line, compute threads),
    the same as TensorBoard scalars, and the progress bar's figures."""

    def __init__(self, every: int) -> None:
        self.every, self._t0, self._n = every, 0.0, 0

    def before_epoch(self, loop: Loop) -> None:
        self._t0, self._n = time.perf_counter(), 0

    def after_step(self, loop: Loop, out: StepOutput) -> None:
        self._n += out.images * loop.info.world_size
        loop.bar.update(1)
        if loop.it % self.every and loop.it != loop.total:
            return
        dt = time.perf_counter() - self._t0
        lr = loop.lr(out.iteration)
        rec = {"iter": loop.it, "epoch": loop.epoch, "loss": out.loss_value, "lr": lr, "momentum": out.momentum,
               "images_per_s": self._n / dt if dt > 0 else None, "threads": out.threads}
        rec.update({k: ldist.all_reduce_mean(v.float()).item() for k, v in out.logs.items()})
        if loop.info.is_main:
            append_jsonl(loop.metrics_path, rec)
            loop.writer.scalars({k: v for k, v in rec.items() if k not in ("iter", "epoch")}, loop.it, "train")
        loop.bar.set_postfix(loss=f"{out.loss_value:.4f}", lr=f"{lr:.3g}")
        self._t0, self._n = time.perf_counter(), 0


# --------------------------------------------------------------------------------------------------
class _Cut(Exception):
    """A stop request during a kNN pass."""


def _until(batches: Iterable, stop: Callable[[], bool]) -> Iterator:
    for b in batches:
        if stop():
            raise _Cut
        yield b


@torch.no_grad()
def knn_monitor(method: SSLMethod, bank: ImageFolderList, val: ImageFolderList, cfg: dict, device: torch.device,
                channels_last: bool, stop: Callable[[], bool] = lambda: False) -> float | None:
    """kNN top-1 (k, temperature of ``knn``; cosine, weighted) of the online backbone: ``bank`` (the train split)
    as the memory bank, ``val`` as the queries. None when ``stop()`` turns true during the pass (cut short)."""
    kc = cfg["knn"]
    mk = dict(batch_size=kc.get("batch_size", 256), num_workers=loader_workers(cfg), shuffle=False)
    was = method.training
    method.eval()
    bb = method.backbone
    try:
        ftr, ytr = extract_features(bb, _until(DataLoader(bank, **mk), stop), device, channels_last)
        fva, yva = extract_features(bb, _until(DataLoader(val, **mk), stop), device, channels_last)
    except _Cut:
        return None
    finally:
        method.train(was)
    return knn_top1(ftr, ytr, fva, yva, num_classes=len(bank.classes), k=kc["k"], t=kc["t"])


class KnnMonitor(Hook):
    """kNN top-1 every ``knn.every`` epochs and after the last (main process): a ``metrics.jsonl`` line, a
    TensorBoard scalar, a log line. A stop request cuts the pass short and marks the epoch end as cut
    (``loop.epoch_end_cut``): the checkpoint then keeps the state from before it, and the resumed run does it
    again."""

    def __init__(self, bank: ImageFolderList, val: ImageFolderList) -> None:
        self.bank, self.val = bank, val

    def after_epoch(self, loop: Loop) -> None:
        kc = loop.cfg["knn"]
        if not _due(loop, kc.get("every", 0)):
            return
        if loop.info.is_main:
            acc = knn_monitor(loop.method, self.bank, self.val, loop.cfg, loop.step.device, loop.step.channels_last,
                              stop=lambda: loop.stop.requested)
            done = loop.it // loop.ipe
            if acc is None:
                loop.epoch_end_cut = True
                log.info("epoch %d: kNN pass cut short by a stop request (it runs again on resume)", done)
            else:
                append_jsonl(loop.metrics_path, {"iter": loop.it, "epoch": done, "knn_top1": acc})
                loop.writer.scalars({"knn_top1": acc}, loop.it, "monitor")
                loop.bar.write(f"epoch {done}: kNN top-1 {acc:.2f}%")
                log.info("epoch %d: kNN top-1 (k=%d) on %s: %.2f%%", done, kc["k"], kc["split"], acc)
        ldist.barrier()


# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def log_alignment_maps(writer: MetricWriter, method: SSLMethod, val: ImageFolderList, device: torch.device,
                       step: int, n_images: int = 4) -> None:
    """TensorBoard image of the online alignment maps W of the first ``n_images`` images of ``val`` (one per
    class where it can). Runs in eval mode under a forked RNG, so training (BN statistics, random maps,
    augmentation) is exactly what it would have been without it."""
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
    img = x.cpu() * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    writer.image("alignment_maps", alignment_grid(img.clamp(0, 1), maps), step)


class AlignmentImages(Hook):
    """Every ``log.images_every`` epochs and after the last (main process, TensorBoard on, methods that have
    alignment maps): the maps W of a few images of the kNN split."""

    def __init__(self, val: ImageFolderList, every: int) -> None:
        self.val, self.every = val, every

    def after_epoch(self, loop: Loop) -> None:
        if loop.info.is_main and loop.writer.active and not loop.epoch_end_cut and _due(loop, self.every):
            log_alignment_maps(loop.writer, loop.method, self.val, loop.step.device, loop.it)


# --------------------------------------------------------------------------------------------------
class Checkpointer(Hook):
    """``checkpoint.pth`` every ``ckpt.every_iters`` iterations within an epoch and at every epoch end (an epoch
    end cut short by a stop request saves the state from before it, marked pending)."""

    def __init__(self, every_iters: int) -> None:
        self.every = every_iters

    def after_step(self, loop: Loop, out: StepOutput) -> None:
        if self.every and loop.it % self.every == 0 and loop.it % loop.ipe:
            loop.save()

    def after_epoch(self, loop: Loop) -> None:
        cut = loop.epoch_end_cut
        loop.save(epoch_end_pending=cut, rng=loop.boundary_rng if cut else None)


class BackboneExport(Hook):
    """After the last step (main process): ``backbone.pth``, the online backbone as a torchvision state dict
    with the method's transfer parts and a meta that says what it is and how far it trained."""

    def __init__(self, sweep: dict | None = None) -> None:
        self.sweep = sweep

    def after_train(self, loop: Loop) -> None:
        if not loop.info.is_main:
            return
        cfg, ident, method = loop.cfg, loop.identity, loop.method
        meta = {"method": cfg["method"], "epochs": cfg["epochs"], "arch": cfg["arch"], "exp": loop.exp,
                "iteration": loop.it, **progress(loop.it, loop.ipe, loop.total), "seed": int(cfg["seed"]),
                "git": git_commit(), "run_id": ident.run_id, "group": ident.group, "data": ident.data,
                **({"sweep": self.sweep} if self.sweep else {})}
        sd = method.state_dict()
        parts = {p: {dst: sd[src] for src, dst in keys.items()} for p, keys in method.transfer_parts().items()}
        save_backbone(loop.out_dir / BACKBONE, method.backbone.state_dict(), meta, parts)


class SpeedRecord(Hook):
    """After the last step (main process): the run's training-speed record (:func:`training_record`)."""

    def __init__(self, records_dir: str | Path | None, sweep: dict | None = None) -> None:
        self.records_dir, self.sweep, self.path = records_dir, sweep, None

    def after_train(self, loop: Loop) -> None:
        if loop.info.is_main:
            self.path = training_record(loop, self.records_dir, self.sweep)


def training_record(loop: Loop, records_dir: str | Path | None, sweep: dict | None = None) -> Path | None:
    """The run's training-speed record (eval ``pretrain``, protocol ``time_per_epoch``: seconds per epoch from
    the median images/s of ``metrics.jsonl``, on this device), written once per run (``pretrain_record.json``
    remembers it; its path is returned again); LEWEL's Table 9 compares it."""
    from lewel_bench.records import make_record, now_iso, write_record

    cfg, ident, out_dir, device = loop.cfg, loop.identity, loop.out_dir, loop.step.device
    marker = out_dir / RECORD_MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("run_id") == ident.run_id:
            return Path(done["record"]) if done.get("record") else None
    ips = []
    for line in loop.metrics_path.read_text().splitlines():
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
    hardware = f"{loop.info.world_size}x {name}"
    data = ident.data
    rec = make_record(method=cfg["method"], pretrain_exp=loop.exp, pretrain_epochs=cfg["epochs"], eval="pretrain",
                      protocol="time_per_epoch", seed=int(cfg["seed"]),
                      metrics={"time_per_epoch_s": round(loop.ipe * cfg["batch_size"] / median, 2),
                               "images_per_s": round(median, 2)},
                      checkpoint_sha256=sha256_file(out_dir / BACKBONE), config=ident.config,
                      start_time=now_iso(), dataset=data["name"], data=data, run_id=ident.run_id,
                      group=ident_group_with(ident.group, hardware), hardware=hardware, pretrain_group=ident.group,
                      amp=bool(resolve_auto(cfg["amp"], device.type == "cuda")), status="ok",
                      pretrain_data=data["name"],
                      **({"pretrain_sweep": sweep} if sweep else {}))
    path = write_record(rec, records_dir)
    atomic_write_json(marker, {"run_id": ident.run_id, "record": str(path)})
    log.info("training speed: %.1f images/s, %.1f s per epoch on %s -> %s", median,
             rec["metrics"]["time_per_epoch_s"], hardware, path)
    return path


def ident_group_with(group: str, hardware: str) -> str:
    """A speed record's group: the pretraining recipe on one hardware (speeds are compared per hardware)."""
    from lewel_bench.stage import digest

    return digest({"group": group, "hardware": hardware})

