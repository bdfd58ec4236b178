"""Checkpoint I/O shared by every stage: backbone export and the evaluation intake.

The intake reads the files the field publishes, by their layout (:mod:`lewel_bench.layouts`: one declared entry
per code, e.g. MoCo's ``state_dict.module.encoder_q``, DINO's ``teacher``, VISSL's nested trunk, a detectron2
``.pkl``), and this suite's own formats:

* ``backbone.pth`` written by pretraining: ``{"state_dict": <torchvision ResNet keys, no fc>,
  "parts": {<part>: <state dict>}, "meta": {"format": "lewel-bench/backbone", "arch", "method", "epochs",
  "parts": {<part>: <tensor count>}, ...}}`` (``parts``: the method's transfer bundle, if it has one);
* a full pretraining checkpoint: ``{"model": <online network>, "target": <target network>, "meta": {"format":
  "lewel-bench/pretrain", "backbone_prefix": "online.backbone.", "transfer_parts": {<part>: {<model key>: <part
  key>}}, "arch", ...}, "epoch", "iteration", "config", ...}``: the backbone is found from the checkpoint's own
  ``backbone_prefix``, never from a hard-coded one, and a part from its own key map;
* a plain torchvision ResNet state dict, bare or under ``state_dict`` / ``model``.

Which encoder (:func:`choose_encoder`): the one ``prefix=`` names (``--ckpt-prefix``; a full dotted key prefix
such as ``state_dict.module.encoder_k.``, or one inside the state dict such as ``module.``), else the one the
layout's authors evaluate (``--layout NAME`` names the layout when the file matches several), else the only ResNet
trunk of a file no layout matches; the choice is said in one log line, and a file with several trunks and no
layout is refused naming them and the flag. The :class:`Backbone` says which (``layout``, ``encoder``,
``prefix``): the records carry them (``source_layout``, ``prefix``) and the run identity covers them.

The intake never evaluates a random network or a broken one: missing backbone tensors, shape mismatches and
non-finite (NaN / inf) values raise :class:`BackboneError` naming the layout, the counts and the first keys.
Transfer-bundle parts (:mod:`lewel_bench.transfer`) are read only when asked for (``parts=``; the default transfer
is the trunk alone, the LEWEL / MoCo protocol), from the chosen encoder as its layout declares them (the official
MCL checkpoint's FPN and box-head convs, CGH's hypercolumn conv, ``backbone.pth``'s ``parts``); a part asked for
that the checkpoint does not carry is an error naming it.

How far the checkpoint trained (:attr:`Backbone.epochs_trained`, ``iterations_trained``, ``complete``): the
suite's ``backbone.pth`` meta (``epochs_trained``, ``iterations_trained``, ``complete``; ``iteration`` in older
files), its full checkpoint's ``epoch`` / ``iteration`` against its config's epochs, a published file's own
``epoch`` field where its code writes the epochs done; None when the file does not say.

:func:`describe_checkpoint` (``make inspect``) says what is in any file without loading it into a model.

Baselines by spec (:func:`resolve_backbone`): ``random:<arch>`` (an explicit random init, method ``random``)
and ``supervised:<file>`` (a torchvision ImageNet classifier's weights the user provides, method
``supervised``; nothing is downloaded).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import LewelError
from .io import atomic_torch_save
from .layouts import (
    BACKBONE_FORMAT,
    LAYOUTS,
    PRETRAIN_FORMAT,
    Flat,
    Found,
    Layout,
    apply_renames,
    flatten,
    recognise,
    resnet_prefixes,
)
from .layouts import names as layout_names
from .models import build_backbone, infer_arch

log = logging.getLogger(__name__)

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
            elif torch.is_tensor(v) and v.is_floating_point() and not _finite(v):
                bad.append(key)
    return sorted(bad)


def _finite(t: torch.Tensor) -> bool:
    """No NaN / inf in ``t``: its min and max are finite (NaN propagates through both; one reduction, no
    elementwise mask: an order of magnitude faster than ``isfinite(t).all()`` on a ResNet's tensors)."""
    if t.numel() == 0:
        return True
    if 0 in t.stride():  # an expanded tensor: every value along a stride-0 dim is the same element
        t = t[tuple(0 if s == 0 else slice(None) for s in t.stride())]
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def require_finite(state: Mapping[str, Any], what: str) -> None:
    """:class:`BackboneError` naming the first non-finite tensor of ``state`` (``what`` says whose)."""
    bad = non_finite_keys(state)
    if bad:
        raise BackboneError(f"{what}: {len(bad)} tensor(s) hold NaN or inf values (first: {', '.join(bad[:3])}); "
                            f"refusing to use it")


@dataclass
class Backbone:
    """What the intake found: a torchvision state dict without ``fc`` and where it came from (``layout``: the
    checkpoint layout's name, ``encoder``: its role there, ``prefix``: its full key prefix in the file)."""

    state_dict: dict[str, torch.Tensor]
    arch: str
    meta: dict[str, Any] = field(default_factory=dict)
    source_format: str = "torchvision"
    prefix: str = ""
    unexpected: list[str] = field(default_factory=list)
    path: str = ""
    sha256: str = ""
    parts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    layout: str = ""
    encoder: str = ""
    epochs_trained: int | None = None
    iterations_trained: int | None = None
    complete: bool | None = None

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
    empty, truncated or not a torch file. A plain pickle (a detectron2 ``.pkl``: ``pickle.dump`` of numpy arrays)
    is read with ``pickle`` when ``torch.load`` cannot read it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise error(f"{what} {path} is empty (0 bytes): a copy or a write that did not finish")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        with open(path, "rb") as f:
            if f.read(1) == b"\x80":  # a pickle of protocol 2 or later, not torch's own format
                f.seek(0)
                with contextlib.suppress(Exception):  # the torch error below says more
                    return pickle.load(f, encoding="latin1")
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{what} {path} ({size} bytes) cannot be read: {type(e).__name__}: {detail} "
                    f"(truncated, or not a torch file)") from None


def _meta_of(obj: Any) -> dict:
    m = obj.get("meta") if isinstance(obj, Mapping) else None
    return dict(m) if isinstance(m, Mapping) else {}


def _listing(flat: Flat) -> str:
    """The ResNet trunks anywhere in a file, for an error message."""
    found = resnet_prefixes(flat)
    if not found:
        return f"no torchvision-named ResNet trunk in it ({len(flat.tensors)} tensors, first: " \
               f"{', '.join(list(flat.tensors)[:4])})"
    return "ResNet trunks in it: " + ", ".join(f"{p!r} ({len(flat.under(p))} tensors)" for p in found)


@dataclass
class Choice:
    """Which encoder of a file the intake takes, and why (``how``: said in the log line)."""

    layout: Layout | None
    root: str
    role: str
    prefix: str
    parts: Mapping[str, Any]
    others: list[Found]
    how: str

    @property
    def layout_name(self) -> str:
        return self.layout.name if self.layout is not None else GENERIC

    def where(self, path: str) -> str:
        """``<path>: layout <name> (<title>), <role> at '<prefix>'`` for messages."""
        if self.layout is None:
            return f"{path}: prefix {self.prefix!r}"
        return f"{path}: layout {self.layout.name} ({self.layout.title}), {self.role} at {self.prefix!r}"


#: the ``source_layout`` of a file that no listed layout matches and that holds exactly one ResNet trunk
GENERIC = "generic"
PREFIX_FLAG = "--ckpt-prefix PREFIX (make: CKPT_PREFIX=PREFIX)"
LAYOUT_FLAG = "--layout NAME (make: CKPT_LAYOUT=NAME)"


def layout_of(flat: Flat, obj: Any, path: str, layout: str | None = None) -> tuple[Layout | None, str]:
    """The file's layout and its root: the one named (``--layout``), else the one recognised (none: ``(None,
    "")``); a file recognised by two layouts is refused naming both."""
    if layout is not None:
        if layout not in LAYOUTS:
            raise BackboneError(f"--layout {layout}: unknown checkpoint layout (known: {', '.join(layout_names())})")
        lay = LAYOUTS[layout]
        root = lay.root_in(flat)
        if root is None:
            root = next((r for r in lay.roots if lay.found(flat, r, obj)), None)
        if root is None:
            where = ", ".join(f"{e.role} at {' / '.join(repr(r + a) for a in e.at)}" for e in lay.encoders
                              for r in lay.roots[:1]) or "its meta's backbone"
            raise BackboneError(f"{path}: --layout {layout}: none of its encoders is in this file ({where}); "
                                f"{_listing(flat)}")
        return lay, root
    hits = recognise(flat)
    if len(hits) > 1:
        raise BackboneError(f"{path}: the file matches several checkpoint layouts: "
                            f"{'; '.join(f'{lay.name} ({lay.title})' for lay, _ in hits)}; pass {LAYOUT_FLAG} to say "
                            f"which one it is (or {PREFIX_FLAG} to name the encoder)")
    return hits[0] if hits else (None, "")


def _layout_with(flat: Flat, obj: Any, prefix: str) -> tuple[Layout | None, str]:
    """For a file matching several layouts, given a full encoder prefix: the one layout that declares an encoder
    there (none: the prefix alone says what to take)."""
    hits = [(lay, root) for lay, root in recognise(flat)
            if any(f.prefix == prefix for f in lay.found(flat, root, obj))]
    return hits[0] if len(hits) == 1 else (None, "")


def choose_encoder(flat: Flat, obj: Any, path: str, prefix: str | None = None, layout: str | None = None) -> Choice:
    """The encoder to take (see :mod:`lewel_bench.layouts`): the one given (``prefix``: a full dotted prefix, or
    one inside the layout's root or a top-level mapping such as ``state_dict``), else the one the layout's authors
    evaluate, else the only ResNet trunk of a file no layout matches; several trunks and no layout is refused
    naming them and the flag that picks one."""
    try:
        lay, root = layout_of(flat, obj, path, layout)
    except BackboneError:
        if prefix is None or layout is not None:
            raise
        lay, root = _layout_with(flat, obj, prefix if prefix.endswith(".") else prefix + ".")
    found = lay.found(flat, root, obj) if lay is not None else []
    if prefix is not None:
        p = prefix if prefix == "" or prefix.endswith(".") else prefix + "."
        tops = sorted({q for q in flat.prefixes if q.count(".") == 1})
        cands = list(dict.fromkeys([p, root + p, *(t + p for t in tops)]))
        hit = next((c for c in cands if flat.has(c)), None)
        if hit is None:
            raise BackboneError(f"{path}: --ckpt-prefix {prefix}: no tensor key starts with "
                                f"{' or '.join(repr(c) for c in cands[:3])}{' ...' if len(cands) > 3 else ''}; "
                                f"{_listing(flat)}")
        same = next((f for f in found if f.prefix == hit), None)
        return Choice(lay, root, same.role if same else "given", hit, same.parts if same else {},
                      [f for f in found if f.prefix != hit], "given by --ckpt-prefix")
    if lay is not None:
        chosen = lay.chosen(found)
        if chosen is None:
            raise BackboneError(f"{path}: layout {lay.name} ({lay.title}): {lay.missing(root, obj)}; "
                                f"{_listing(flat)}; pass {PREFIX_FLAG} to take another")
        return Choice(lay, root, chosen.role, chosen.prefix, chosen.parts, [f for f in found if f is not chosen],
                      "the encoder its authors evaluate" if len(found) > 1 else "the layout's only encoder")
    cands = resnet_prefixes(flat)
    if not flat.tensors:
        top = ", ".join(map(str, list(obj)[:10])) if isinstance(obj, Mapping) else type(obj).__name__
        raise BackboneError(f"{path}: no state dict found: not one tensor in it (top-level keys: {top or 'none'})")
    if not cands:
        raise BackboneError(f"{path}: no ResNet backbone found: no key ends with 'conv1.weight' beside "
                            f"'layer1.0.conv1.weight' and no known layout matches ({len(flat.tensors)} tensors, "
                            f"first: {', '.join(list(flat.tensors)[:5])}); `make inspect CKPT=<file>` shows what is "
                            f"in it")
    if len(cands) > 1:
        raise BackboneError(f"{path}: several backbones found and no known checkpoint layout matches (candidates: "
                            f"{', '.join(f'{c!r} ({len(flat.under(c))} tensors)' for c in cands)}); pass "
                            f"{PREFIX_FLAG} to choose one, e.g. --ckpt-prefix {cands[0]}")
    return Choice(None, "", "trunk", cands[0], {}, [], "the only ResNet trunk in the file (no listed layout)")


@functools.cache
def trunk_reference(arch: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of a torchvision ``arch`` trunk without ``fc`` (built on the meta device: no
    memory, no initialisation)."""
    with torch.device("meta"):
        sd = build_backbone(arch).state_dict()
    return {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}


def check_trunk(stripped: Mapping[str, Any], arch: str) -> tuple[list[str], list[str]]:
    """(missing, mismatched) torchvision names of an ``arch`` trunk in ``stripped`` (``num_batches_tracked`` may
    be missing); mismatches read ``name: shape vs expected shape``."""
    ref = trunk_reference(arch)
    missing = [k for k in ref if k not in stripped and not k.endswith(_OPTIONAL_SUFFIXES)]
    mismatched = [f"{k}: {tuple(stripped[k].shape)} vs expected {ref[k][0]}"
                  for k in ref if k in stripped and tuple(stripped[k].shape) != ref[k][0]]
    return missing, mismatched


def _trunk_of(flat: Flat, choice: Choice) -> dict[str, Any]:
    """The chosen encoder's tensors under torchvision names (the layout's renames applied)."""
    renames = choice.layout.renames if choice.layout is not None else ()
    return {apply_renames(k, renames): v for k, v in flat.under(choice.prefix).items()}


def _take_parts(flat: Flat, choice: Choice, wanted: Sequence[str], path: str) -> dict[str, dict[str, torch.Tensor]]:
    """The transfer-bundle parts asked for, as the chosen encoder of the layout carries them."""
    if not wanted:
        return {}
    have = {p: part.take(flat, choice.root) for p, part in choice.parts.items()}
    have = {p: sd for p, sd in have.items() if sd}
    out = {}
    for p in wanted:
        if p not in have:
            raise BackboneError(f"{path}: no transfer part {p!r} (this checkpoint carries "
                                f"{', '.join(sorted(have)) or 'the trunk only'}); transfer the trunk alone, or use "
                                f"a checkpoint of a method with that part")
        require_finite(have[p], f"{path}: transfer part {p!r}")
        out[p] = dict(have[p])
    return out


def extract_backbone(obj: Any, prefix: str | None = None, arch: str | None = None, path: str = "<memory>",
                     parts: Sequence[str] = (), layout: str | None = None) -> Backbone:
    """Find (:func:`choose_encoder`), rename, validate the ResNet backbone (and the transfer ``parts`` asked for)
    inside a loaded checkpoint object (a whole pickled ``nn.Module`` is read by its state dict); the choice is said
    in one log line."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise BackboneError(f"{path}: expected a dict-like checkpoint, got {type(obj).__name__}")
    flat = flatten(obj)
    choice = choose_encoder(flat, obj, path, prefix, layout)
    others = "; ".join(f"{f.role} at {f.prefix!r}" for f in choice.others)
    log.info("%s: layout %s: taking %s at %r, %s%s", path,
             f"{choice.layout.name} ({choice.layout.title})" if choice.layout else GENERIC, choice.role,
             choice.prefix, choice.how, f" (also in the file: {others}; {PREFIX_FLAG} takes another)" if others else "")
    stripped = _trunk_of(flat, choice)
    if not stripped:
        raise BackboneError(f"{choice.where(path)}: no tensor under this prefix ({len(flat.tensors)} tensors in the "
                            f"checkpoint)")
    arch = arch or (choice.layout.arch(flat) if choice.layout else None) or infer_arch(stripped)
    if arch is None:
        raise BackboneError(f"{choice.where(path)}: cannot tell the ResNet depth from its keys (first: "
                            f"{', '.join(list(stripped)[:3])}); pass arch=")
    missing, mismatched = check_trunk(stripped, arch)
    if missing or mismatched:
        n = sum(1 for k in trunk_reference(arch) if not k.endswith(_OPTIONAL_SUFFIXES))
        # keys relative to the prefix (torchvision's names where the layout renames its own)
        names = " (torchvision names)" if choice.layout is not None and choice.layout.renames else ""
        why = []
        if missing:
            why.append(f"{len(missing)} of {n} backbone tensors missing (first: {', '.join(missing[:5])}){names}")
        if mismatched:
            why.append(f"{len(mismatched)} shape mismatches (first: {'; '.join(mismatched[:3])}){names}")
        raise BackboneError(f"{choice.where(path)}: refusing to use this checkpoint as a {arch} backbone: "
                            + "; ".join(why))
    ref = trunk_reference(arch)
    require_finite({k: stripped[k] for k in ref if k in stripped}, f"{choice.where(path)}: {arch} backbone")
    unexpected = [k for k in stripped if k not in ref]
    if [k for k in unexpected if not k.startswith("fc.")]:  # a layout's heads are expected; in an unlisted file, odd
        log.log(logging.INFO if choice.layout is not None else logging.WARNING,
                "%s: %d tensors under the prefix besides the trunk not used (first: %s)", path, len(unexpected),
                ", ".join(unexpected[:5]))
    clean = {k: stripped[k] if k in stripped else torch.zeros(ref[k][0], dtype=ref[k][1]) for k in ref}
    epochs, iters, complete = choice.layout.progress(flat, obj) if choice.layout else (None, None, None)
    fmt = {"lewel_bench_backbone": "backbone", "lewel_bench_pretrain": "pretrain"}.get(choice.layout_name,
                                                                                       "torchvision")
    return Backbone(state_dict=clean, arch=arch, meta=_meta_of(obj), source_format=fmt, prefix=choice.prefix,
                    unexpected=unexpected, path=path, parts=_take_parts(flat, choice, parts, path),
                    layout=choice.layout_name, encoder=choice.role, epochs_trained=epochs, iterations_trained=iters,
                    complete=complete)


def load_backbone(path: str | Path, prefix: str | None = None, arch: str | None = None,
                  parts: Sequence[str] = (), layout: str | None = None) -> Backbone:
    """Read any accepted checkpoint file and return its validated backbone (see module docstring)."""
    bb = extract_backbone(torch_load(path), prefix=prefix, arch=arch, path=str(path), parts=parts, layout=layout)
    bb.sha256 = sha256_file(path)
    log.info("loaded %s backbone (layout %s, prefix %r%s) from %s", bb.arch, bb.layout, bb.prefix,
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


def supervised_backbone(path: str | Path, arch: str | None = None, prefix: str | None = None,
                        layout: str | None = None) -> Backbone:
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
    bb = extract_backbone(obj, prefix=prefix, arch=arch, path=str(path), layout=layout)
    w = flatten(obj).tensors.get(f"{bb.prefix}fc.weight")
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
                     parts: Sequence[str] = (), layout: str | None = None) -> Backbone:
    """``random:<arch>`` gives :func:`random_backbone`, ``supervised:<file>`` :func:`supervised_backbone`;
    anything else is a file for :func:`load_backbone` (``prefix`` / ``layout``: ``--ckpt-prefix`` / ``--layout``)."""
    s = str(spec)
    for tag in (RANDOM_SPEC, SUPERVISED_SPEC):
        if s.startswith(tag) and parts:
            raise BackboneError(f"{s}: a {'random-init' if tag == RANDOM_SPEC else 'supervised'} baseline has no "
                                f"transfer parts ({', '.join(parts)} asked for); transfer the trunk alone")
    if s.startswith(RANDOM_SPEC):
        if prefix is not None or layout is not None:
            raise BackboneError(f"{s}: a random-init baseline is no file: --ckpt-prefix / --layout do not apply")
        return random_backbone(s[len(RANDOM_SPEC):] or arch or "resnet50", seed=seed)
    if s.startswith(SUPERVISED_SPEC):
        return supervised_backbone(s[len(SUPERVISED_SPEC):], arch=arch, prefix=prefix, layout=layout)
    return load_backbone(spec, prefix=prefix, arch=arch, parts=parts, layout=layout)


# --------------------------------------------------------------------------------------------------
# what is in a file (make inspect)
# --------------------------------------------------------------------------------------------------
def _trunk_status(stripped: Mapping[str, Any], arch: str | None) -> str:
    arch = arch or infer_arch(stripped)
    if arch is None:
        return "no torchvision-named ResNet trunk recognised"
    missing, mismatched = check_trunk(stripped, arch)
    if not missing and not mismatched:
        return f"{arch} trunk complete"
    why = [f"{len(missing)} tensors missing (first: {missing[0]})"] if missing else []
    why += [f"{len(mismatched)} shape mismatches (first: {mismatched[0]})"] if mismatched else []
    return f"{arch} trunk INCOMPLETE: " + ", ".join(why)


def describe_checkpoint(path: str | Path, prefix: str | None = None, layout: str | None = None) -> list[str]:
    """A few lines on what ``path`` holds, without loading it into a model: size, sha256 and tensor count; the
    layout recognised (or the ones it is ambiguous between); every encoder candidate with its tensor count and
    trunk (the one the evaluations take marked, or why they refuse the file); arch, method and epochs as far as
    the file says; the chosen encoder's transfer parts; the non-finite tensors."""
    path = Path(path)
    obj = torch_load(path)
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        return [f"{path}: not a dict-like checkpoint ({type(obj).__name__}); nothing to evaluate"]
    flat = flatten(obj)
    size = path.stat().st_size
    lines = [f"{path}: {size / 2**20:.1f} MiB, sha256 {sha256_file(path)}, {len(flat.tensors)} tensors"]
    hits = [(LAYOUTS[layout], LAYOUTS[layout].root_in(flat) or "")] if layout in LAYOUTS else recognise(flat)
    if len(hits) == 1:
        lines.append(f"layout: {hits[0][0].name} ({hits[0][0].title})")
    elif hits:
        lines.append(f"layout: AMBIGUOUS between {'; '.join(f'{h.name} ({h.title})' for h, _ in hits)} "
                     f"(the evaluations refuse it; {LAYOUT_FLAG} says which)")
    else:
        lines.append(f"layout: none of the {len(LAYOUTS)} listed ones (python -m tools.inspect_checkpoint --list)")
    try:
        choice: Choice | None = choose_encoder(flat, obj, str(path), prefix, layout)
    except BackboneError as e:
        choice, refusal = None, str(e)
    found: list[tuple[str, str, Layout | None]] = []
    for lay, root in hits:
        seen = {p for _, p, _ in found}
        found += [(f.role, f.prefix, lay) for f in lay.found(flat, root, obj) if f.prefix not in seen]
    found += [("-", p, None) for p in resnet_prefixes(flat) if p not in {q for _, q, _ in found}]
    if choice is not None and choice.prefix not in {p for _, p, _ in found}:
        found.append((choice.role, choice.prefix, choice.layout))
    conv1s: dict[str, torch.Tensor] = {}
    arch_taken = None
    lines.append("encoders:" if found else "encoders: none found")
    for role, p, lay in found:
        stripped = {apply_renames(k, lay.renames if lay else ()): v for k, v in flat.under(p).items()}
        arch = (lay.arch(flat) if lay else None) or infer_arch(stripped)
        conv1 = stripped.get("conv1.weight")
        same = next((q for q, t in conv1s.items() if conv1 is not None and t.shape == conv1.shape
                     and torch.equal(t, conv1)), None)
        if conv1 is not None:
            conv1s[p] = conv1
        taken = choice is not None and choice.prefix == p
        arch_taken = arch if taken else arch_taken
        lines.append(f"  {role} at {p!r}: {len(stripped)} tensors, {_trunk_status(stripped, arch)}"
                     f"{f' (the same tensors as {same!r})' if same else ''}"
                     f"{'  <- taken: ' + choice.how if taken else ''}")
    if choice is None:
        lines.append(f"the evaluations refuse it: {refusal}")
    meta = _meta_of(obj)
    lay = choice.layout if choice is not None else (hits[0][0] if len(hits) == 1 else None)
    epochs, iters, complete = lay.progress(flat, obj) if lay is not None else (None, None, None)
    said = [f"arch {arch_taken or meta.get('arch') or 'unknown'}"]
    third_party = lay is not None and lay.name not in ("torchvision", GENERIC)
    said.append(f"method {meta['method']}" if meta.get("method") else
                f"code {lay.title}" if third_party else "method unknown")
    said.append(f"epochs trained {epochs}" if epochs is not None else
                f"epochs {meta['epochs']} (planned)" if meta.get("epochs") is not None else "epochs unknown")
    if iters is not None:
        said.append(f"iterations {iters}")
    said.append({True: "complete", False: "INCOMPLETE (training did not finish)", None: "completion unknown"}[complete])
    lines.append("trained: " + ", ".join(said))
    if choice is not None:
        have = {p: len(t) for p, part in choice.parts.items() if (t := part.take(flat, choice.root))}
        lines.append("transfer parts: " + (", ".join(f"{p} {n} tensors" for p, n in sorted(have.items()))
                                           + f" (of {choice.role})" if have else "none (the trunk only)"))
    bad = non_finite_keys(flat.tensors)
    lines.append(f"non-finite tensors: {len(bad)} (first: {', '.join(bad[:3])})" if bad else "non-finite tensors: none")
    return lines
