"""Checkpoint I/O shared by every stage: backbone export and the evaluation intake.

Formats understood by :func:`load_backbone`:

* ``backbone.pth`` written by pretraining: ``{"state_dict": <torchvision ResNet keys, no fc>,
  "parts": {<part>: <state dict>}, "meta": {"format": "lewel-bench/backbone", "arch", "method", "epochs",
  "parts": {<part>: <tensor count>}, ...}}`` (``parts``: the method's transfer bundle, if it has one);
* a full pretraining checkpoint: ``{"model": <online network>, "meta": {"format":
  "lewel-bench/pretrain", "backbone_prefix": "backbone.", "transfer_parts": {<part>: {<model key>: <part
  key>}}, "arch", ...}, ...}``: the backbone is found from the checkpoint's own ``backbone_prefix``, never
  from a hard-coded one, and a part from its own key map;
* a plain torchvision ResNet state dict, bare or under ``state_dict`` / ``model``, optionally with a
  prefix such as ``module.`` (found automatically when unambiguous, or given as ``prefix=``).

The intake never evaluates a random network or a broken one: missing backbone tensors, shape
mismatches and non-finite (NaN / inf) values raise :class:`BackboneError` naming the counts and the
first keys. Transfer-bundle parts (:mod:`lewel_bench.transfer`) are read only when asked for
(``parts=``; the default transfer is the trunk alone, the LEWEL / MoCo protocol); a part asked for that
the checkpoint does not carry is an error naming it.

Baselines by spec (:func:`resolve_backbone`): ``random:<arch>`` (an explicit random init, method ``random``)
and ``supervised:<file>`` (a torchvision ImageNet classifier's weights the user provides, method
``supervised``; nothing is downloaded).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .errors import LewelError
from .io import atomic_torch_save
from .models import build_backbone, infer_arch

log = logging.getLogger(__name__)

BACKBONE_FORMAT = "lewel-bench/backbone"
PRETRAIN_FORMAT = "lewel-bench/pretrain"
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


class BackboneError(LewelError, ValueError):
    """A checkpoint holds no usable backbone (missing keys, wrong shapes, non-finite values, unknown layout)."""


def non_finite_keys(state: Mapping[str, Any]) -> list[str]:
    """Keys of floating-point tensors in ``state`` (nested mappings included, dotted) holding NaN or inf."""
    bad: list[str] = []
    stack: list[tuple[str, Any]] = [("", state)]
    while stack:
        prefix, node = stack.pop()
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping):
                stack.append((key + ".", v))
            elif torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                bad.append(key)
    return sorted(bad)


def require_finite(state: Mapping[str, Any], what: str) -> None:
    """:class:`BackboneError` naming the first non-finite tensor of ``state`` (``what`` says whose)."""
    bad = non_finite_keys(state)
    if bad:
        raise BackboneError(f"{what}: {len(bad)} tensor(s) hold NaN or inf values (first: {', '.join(bad[:3])}); "
                            f"refusing to use it")


@dataclass
class Backbone:
    """What the intake found: a torchvision state dict without ``fc`` and where it came from."""

    state_dict: dict[str, torch.Tensor]
    arch: str
    meta: dict[str, Any] = field(default_factory=dict)
    source_format: str = "torchvision"
    prefix: str = ""
    unexpected: list[str] = field(default_factory=list)
    path: str = ""
    sha256: str = ""
    parts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def transfer(self) -> dict[str, int]:
        """What this backbone gives a downstream model: ``{"trunk": n, <part>: n}`` tensor counts."""
        return {"trunk": len(self.state_dict), **{p: len(sd) for p, sd in sorted(self.parts.items())}}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_backbone(path: str | Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                  parts: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> Path:
    """Write ``backbone.pth`` atomically: torchvision keys (``fc`` dropped), tensors on CPU, the transfer
    bundle's ``parts`` (if any), plus meta."""
    sd = {k: v.detach().cpu().clone() for k, v in state_dict.items() if not k.startswith("fc.")}
    require_finite(sd, f"backbone to write to {path}")
    out_parts = {name: {k: v.detach().cpu().clone() for k, v in p.items()} for name, p in (parts or {}).items()}
    for name, p in out_parts.items():
        require_finite(p, f"transfer part {name!r} to write to {path}")
    arch = meta.get("arch") or infer_arch(sd)
    full = {**meta, "arch": arch, "format": BACKBONE_FORMAT, "parts": {n: len(p) for n, p in out_parts.items()}}
    return atomic_torch_save({"state_dict": sd, "parts": out_parts, "meta": full}, path)


def torch_load(path: str | Path, what: str = "checkpoint", error: type[LewelError] = BackboneError) -> Any:
    """``torch.load`` on CPU with one clear ``error`` (naming ``what`` and the path) when the file is missing,
    empty, truncated or not a torch file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise error(f"{what} {path} is empty (0 bytes): a copy or a write that did not finish")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{what} {path} ({size} bytes) cannot be read: {type(e).__name__}: {detail} "
                    f"(truncated, or not a torch file)") from None


def _candidate_prefixes(sd: Mapping[str, Any]) -> list[str]:
    """Prefixes P such that ``P + 'conv1.weight'`` and ``P + 'layer1.0.conv1.weight'`` are keys."""
    out = []
    for k in sd:
        if k.endswith("layer1.0.conv1.weight"):
            p = k[: -len("layer1.0.conv1.weight")]
            if f"{p}conv1.weight" in sd:
                out.append(p)
    return sorted(set(out))


def _unwrap(obj: Any, path: str) -> tuple[dict, dict, str]:
    """Return (state dict holding the backbone, meta, source format)."""
    if not isinstance(obj, Mapping):
        raise BackboneError(f"{path}: expected a dict-like checkpoint, got {type(obj).__name__}")
    meta = dict(obj.get("meta") or {}) if isinstance(obj.get("meta"), Mapping) else {}
    fmt = meta.get("format", "")
    if fmt in (BACKBONE_FORMAT, PRETRAIN_FORMAT):
        key, kind = ("state_dict", "backbone") if fmt == BACKBONE_FORMAT else ("model", "pretrain")
        if not isinstance(obj.get(key), Mapping):
            raise BackboneError(f"{path}: its meta says format {fmt!r}, but it has no {key!r} mapping "
                                f"(top-level keys: {', '.join(map(str, list(obj)[:10]))})")
        return dict(obj[key]), meta, kind
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping) and any(torch.is_tensor(v) for v in obj[key].values()):
            return dict(obj[key]), meta, "torchvision"
    if any(torch.is_tensor(v) for v in obj.values()):
        return dict(obj), meta, "torchvision"
    raise BackboneError(f"{path}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:10]))})")


def _parts(obj: Mapping[str, Any], sd: Mapping[str, Any], meta: Mapping[str, Any], fmt: str, wanted: Sequence[str],
           path: str) -> dict[str, dict[str, torch.Tensor]]:
    """The transfer-bundle parts asked for, from ``backbone.pth``'s ``parts`` or a full checkpoint's key map."""
    if not wanted:
        return {}
    if fmt == "backbone":
        have = dict(obj.get("parts") or {})
    elif fmt == "pretrain":
        have = {p: {dst: sd[src] for src, dst in keys.items() if src in sd}
                for p, keys in (meta.get("transfer_parts") or {}).items()}
    else:
        have = {}
    out = {}
    for p in wanted:
        if p not in have or not have[p]:
            raise BackboneError(f"{path}: no transfer part {p!r} (this checkpoint carries "
                                f"{', '.join(sorted(k for k, v in have.items() if v)) or 'the trunk only'}); "
                                f"transfer the trunk alone, or use a checkpoint of a method with that part")
        part = {k: v for k, v in have[p].items()}
        require_finite(part, f"{path}: transfer part {p!r}")
        out[p] = part
    return out


def extract_backbone(obj: Any, prefix: str | None = None, arch: str | None = None, path: str = "<memory>",
                     parts: Sequence[str] = ()) -> Backbone:
    """Find, strip and validate the ResNet backbone (and the transfer ``parts`` asked for) inside a loaded
    checkpoint object."""
    sd, meta, fmt = _unwrap(obj, path)
    if prefix is None:
        prefix = meta.get("backbone_prefix")
    if prefix is None:
        cands = _candidate_prefixes(sd)
        if not cands:
            raise BackboneError(
                f"{path}: no ResNet backbone found: no key ends with 'conv1.weight' beside 'layer1.0.conv1.weight' "
                f"({len(sd)} keys, first: {', '.join(list(sd)[:5])})")
        if len(cands) > 1 and "" not in cands:
            raise BackboneError(f"{path}: several backbones found (prefixes {cands}); pass prefix= to choose one")
        prefix = "" if "" in cands else cands[0]
    stripped = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not stripped:
        raise BackboneError(f"{path}: no key starts with backbone prefix {prefix!r} ({len(sd)} keys in the checkpoint)")
    arch = arch or meta.get("arch") or infer_arch(stripped)
    if arch is None:
        raise BackboneError(f"{path}: cannot tell the ResNet depth from keys under prefix {prefix!r}; pass arch=")
    ref = build_backbone(arch).state_dict()
    missing = [k for k in ref if k not in stripped and not k.endswith(_OPTIONAL_SUFFIXES)]
    mismatched = [f"{k}: {tuple(stripped[k].shape)} vs expected {tuple(ref[k].shape)}"
                  for k in ref if k in stripped and tuple(stripped[k].shape) != tuple(ref[k].shape)]
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(ref)} backbone tensors missing (first: {', '.join(missing[:5])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (first: {'; '.join(mismatched[:3])})")
        raise BackboneError(f"{path}: refusing to use this checkpoint as a {arch} backbone: " + "; ".join(parts))
    require_finite({k: stripped[k] for k in ref if k in stripped}, f"{path}: {arch} backbone")
    unexpected = [k for k in stripped if k not in ref]
    if [k for k in unexpected if not k.startswith("fc.")]:
        log.warning("%s: %d unexpected keys ignored (first: %s)", path, len(unexpected), ", ".join(unexpected[:5]))
    clean = {k: stripped[k] if k in stripped else ref[k] for k in ref}
    return Backbone(state_dict=clean, arch=arch, meta=meta, source_format=fmt, prefix=prefix,
                    unexpected=unexpected, path=path, parts=_parts(obj, sd, meta, fmt, parts, path))


def load_backbone(path: str | Path, prefix: str | None = None, arch: str | None = None,
                  parts: Sequence[str] = ()) -> Backbone:
    """Read any accepted checkpoint file and return its validated backbone (see module docstring)."""
    bb = extract_backbone(torch_load(path), prefix=prefix, arch=arch, path=str(path), parts=parts)
    bb.sha256 = sha256_file(path)
    log.info("loaded %s backbone (%s format, prefix %r%s) from %s", bb.arch, bb.source_format, bb.prefix,
             "".join(f", {p} {len(t)} tensors" for p, t in bb.parts.items()), path)
    return bb


def backbone_into(model: torch.nn.Module, bb: Backbone) -> None:
    """Load ``bb`` into a torchvision ResNet ``model``; only ``fc.*`` may be missing (else an error)."""
    missing, unexpected = model.load_state_dict(bb.state_dict, strict=False)
    bad = [k for k in missing if not k.startswith("fc.")]
    if bad or unexpected:
        raise BackboneError(f"{bb.path}: loading into {type(model).__name__}: missing {bad[:5]}, unexpected {unexpected[:5]}")


RANDOM_SPEC = "random:"


def random_backbone(arch: str = "resnet50", seed: int = 0) -> Backbone:
    """An explicitly requested random-init baseline (``--ckpt random:resnet50``), labelled ``random``.

    Evaluations only ever use a random network when asked for it by this spec; it is recorded as
    method ``random`` so it never passes for a pretrained result.
    """
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        sd = build_backbone(arch).state_dict()
    return Backbone(state_dict=sd, arch=arch, meta={"method": "random", "exp": "random", "epochs": 0, "arch": arch},
                    source_format="random", path=f"{RANDOM_SPEC}{arch}", sha256=f"random-init-seed{seed}")


SUPERVISED_SPEC = "supervised:"
#: classes of the ImageNet-1k classifier a ``supervised:`` weights file must hold (its ``fc``)
IMAGENET_CLASSES = 1000


def supervised_backbone(path: str | Path, arch: str | None = None) -> Backbone:
    """The supervised ImageNet baseline (``--ckpt supervised:/path/resnet50.pth``), labelled ``supervised``.

    ``path`` is a torchvision ImageNet classifier's state dict that the user provides (e.g. torchvision's
    ``resnet50-0676ba61.pth``; nothing is downloaded): the trunk is validated as every checkpoint is, and its
    ``fc`` must be a 1000-class ImageNet classifier, the evidence that the file is a supervised model. A
    lewel-bench pretraining output is refused (it is not supervised). The record's method is ``supervised``,
    its pretraining epochs unknown (``None``: the file does not say; the tables' Supervised rows take it).
    """
    obj = torch_load(path, "supervised ImageNet weights")
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    fmt = meta.get("format") if isinstance(meta, Mapping) else None
    if fmt in (BACKBONE_FORMAT, PRETRAIN_FORMAT):
        raise BackboneError(f"{SUPERVISED_SPEC}{path}: this is a lewel-bench {fmt.split('/')[-1]} checkpoint "
                            f"(method {meta.get('method', '?')!r}), not supervised ImageNet weights; pass it "
                            f"without the {SUPERVISED_SPEC} prefix")
    bb = extract_backbone(obj, arch=arch, path=str(path))
    sd, _, _ = _unwrap(obj, str(path))
    w = sd.get(f"{bb.prefix}fc.weight")
    if w is None or w.ndim != 2 or w.shape[0] != IMAGENET_CLASSES:
        got = "no fc.weight" if w is None else f"fc.weight of shape {tuple(w.shape)}"
        raise BackboneError(f"{SUPERVISED_SPEC}{path}: expected a torchvision ImageNet classifier ({bb.arch} with a "
                            f"{IMAGENET_CLASSES}-class fc), found {got}; a backbone without its classifier is not "
                            f"evidence of supervised training: pass it without the {SUPERVISED_SPEC} prefix")
    bb.meta = {"method": "supervised", "exp": "supervised", "epochs": None, "arch": bb.arch,
               "source": "torchvision ImageNet classifier"}
    bb.source_format = "supervised"
    bb.sha256 = sha256_file(path)
    log.info("supervised ImageNet baseline: %s weights from %s (fc %s, dropped)", bb.arch, path, tuple(w.shape))
    return bb


def resolve_backbone(spec: str | Path, prefix: str | None = None, arch: str | None = None, seed: int = 0,
                     parts: Sequence[str] = ()) -> Backbone:
    """``random:<arch>`` gives :func:`random_backbone`, ``supervised:<file>`` :func:`supervised_backbone`;
    anything else is a file for :func:`load_backbone`."""
    s = str(spec)
    for tag in (RANDOM_SPEC, SUPERVISED_SPEC):
        if s.startswith(tag) and parts:
            raise BackboneError(f"{s}: a {'random-init' if tag == RANDOM_SPEC else 'supervised'} baseline has no "
                                f"transfer parts ({', '.join(parts)} asked for); transfer the trunk alone")
    if s.startswith(RANDOM_SPEC):
        return random_backbone(s[len(RANDOM_SPEC):] or arch or "resnet50", seed=seed)
    if s.startswith(SUPERVISED_SPEC):
        return supervised_backbone(s[len(SUPERVISED_SPEC):], arch=arch)
    return load_backbone(spec, prefix=prefix, arch=arch, parts=parts)
