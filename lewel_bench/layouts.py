"""Checkpoint layouts: where the ResNet trunk is in the files the field publishes, and which encoder is the one
its authors evaluate.

A checkpoint is read as one flat key space (:func:`flatten`): nested mappings joined with dots, e.g.
``state_dict.module.encoder_q.conv1.weight``, ``teacher.module.backbone.conv1.weight`` or
``classy_state_dict.base_model.model.trunk._feature_blocks.conv1.weight``. Tensors (and the numpy arrays of a
detectron2 pickle) are its keys; the other leaves (``meta.format``, ``arch``, ``epoch``, an ``argparse``
namespace's fields) its values. An encoder is a key prefix in that space (what ``--ckpt-prefix`` names and a
record's ``prefix`` says).

A :class:`Layout` is one code's way of saving, declared once in :data:`LAYOUTS` with:

* how to recognise it: under one of its ``roots`` every key or prefix of ``markers`` is present (a tuple in
  ``markers``: any one of them), none of ``forbids``, and the ``values`` it requires;
* its ``encoders``: every network holding a ResNet trunk, by its role in the code (``encoder_q``, ``teacher``, ...),
  at a prefix under the root (the first of the alternatives present), with the transfer parts it carries
  (:class:`Part`: detectron2's names inside the part, as :mod:`lewel_bench.transfer` defines them);
* ``evaluated``: the role the authors' own evaluation and conversion code takes (the first present);
* ``renames``: its trunk's names -> torchvision's (regular expressions, applied in order);
* where its files say the arch and how far they trained (``arch_key``, ``epochs_key``, ``iterations_key``).

Matching is exclusive: a file recognised by two layouts is ambiguous, unless one declares that it ``refines``
the other (MCL's checkpoint is an OpenSelfSup checkpoint with more in it: MCL's rule wins). Every entry's
docstring field ``source`` names the public code whose save / convert / evaluate functions the keys come from.
The intake (:mod:`lewel_bench.checkpoint`) chooses, validates and logs; this module only declares and matches.
"""
from __future__ import annotations

import argparse
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Rename = tuple[str, str]

#: torchvision ResNet depths the suite evaluates (an ``arch`` a file names outside this set is not taken)
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


# --------------------------------------------------------------------------------------------------
# the flat key space
# --------------------------------------------------------------------------------------------------
@dataclass
class Flat:
    """A loaded checkpoint as one flat key space (see the module docstring)."""

    tensors: dict[str, Any]
    values: dict[str, Any]
    prefixes: set[str]

    def has(self, key: str) -> bool:
        """``key`` is a tensor or value key, or (ending with ``.``) the prefix of some tensor key (``""``: the file
        holds a tensor)."""
        if not key:
            return bool(self.tensors)
        return key in self.prefixes if key.endswith(".") else key in self.tensors or key in self.values

    def under(self, prefix: str) -> dict[str, Any]:
        """The tensors under ``prefix``, keyed by the rest of their names."""
        n = len(prefix)
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def flatten(obj: Any) -> Flat:
    """The flat key space of a loaded checkpoint: mappings and ``argparse.Namespace`` objects are walked, numpy
    arrays become tensors, lists and other objects are left out."""
    import numpy as np
    import torch

    tensors: dict[str, Any] = {}
    values: dict[str, Any] = {}
    queue: deque[tuple[str, Any]] = deque([("", obj)])
    seen: set[int] = set()
    while queue:
        prefix, node = queue.popleft()
        if id(node) in seen:  # a mapping reached twice (or a cycle): its tensors are under its first path
            continue
        seen.add(id(node))
        items = vars(node).items() if isinstance(node, argparse.Namespace) else node.items()
        for k, v in items:
            key = f"{prefix}{k}"
            if torch.is_tensor(v):
                tensors[key] = v
            elif isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
                tensors[key] = torch.from_numpy(np.array(v))
            elif isinstance(v, (Mapping, argparse.Namespace)):
                queue.append((key + ".", v))
            elif isinstance(v, (str, int, float, bool)) or v is None:
                values[key] = v
    prefixes = set()
    for k in tensors:
        parts = k.split(".")
        prefixes.update(".".join(parts[:i]) + "." for i in range(1, len(parts)))
    return Flat(tensors, values, prefixes)


def apply_renames(key: str, renames: Sequence[Rename]) -> str:
    """``key`` with every ``(pattern, replacement)`` of ``renames`` applied in order (``re.sub``)."""
    for pattern, repl in renames:
        key = re.sub(pattern, repl, key)
    return key


# --------------------------------------------------------------------------------------------------
# declarations
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """A transfer part an encoder carries: the tensors under ``prefix`` (relative to the layout's root), renamed
    by ``renames`` into the part's own names (detectron2's, :mod:`lewel_bench.transfer`); a renamed key that
    ``keep`` does not match entirely is not part of it."""

    prefix: str
    renames: tuple[Rename, ...] = ()
    keep: str = r".+"

    def take(self, flat: Flat, root: str) -> dict[str, Any]:
        out = {}
        for k, v in flat.under(root + self.prefix).items():
            name = apply_renames(k, self.renames)
            if re.fullmatch(self.keep, name):
                out[name] = v
        return out


@dataclass(frozen=True)
class MappedPart:
    """A transfer part given key by key: ``keys`` maps a flat key of the file to the part's name."""

    keys: Mapping[str, str]

    def take(self, flat: Flat, root: str) -> dict[str, Any]:
        return {dst: flat.tensors[src] for src, dst in self.keys.items() if src in flat.tensors}


@dataclass(frozen=True)
class Encoder:
    """A network of a layout that holds a ResNet trunk: its ``role`` in the code, its prefix (the first of
    ``at`` present, relative to the root) and the transfer ``parts`` it carries."""

    role: str
    at: tuple[str, ...]
    parts: Mapping[str, Part | MappedPart] = field(default_factory=dict)


@dataclass(frozen=True)
class Found:
    """An encoder of a layout present in a file: the full prefix of its trunk."""

    role: str
    prefix: str
    parts: Mapping[str, Part | MappedPart]


@dataclass(frozen=True)
class Layout:
    """One code's checkpoint layout (see the module docstring)."""

    name: str
    title: str
    source: str
    encoders: tuple[Encoder, ...]
    evaluated: tuple[str, ...]
    roots: tuple[str, ...] = ("",)
    markers: tuple[Any, ...] = ()
    forbids: tuple[str, ...] = ()
    values: Mapping[str, Any] = field(default_factory=dict)
    renames: tuple[Rename, ...] = ()
    refines: str | None = None
    arch_key: str | None = None
    epochs_key: str | None = None
    iterations_key: str | None = None

    def root_in(self, flat: Flat) -> str | None:
        """The root under which ``flat`` is a file of this layout, or None."""
        if any(flat.values.get(k) != v for k, v in self.values.items()):
            return None
        for root in self.roots:
            if all(_present(flat, root, m) for m in self.markers) and not any(flat.has(root + f) for f in self.forbids):
                return root
        return None

    def found(self, flat: Flat, root: str, obj: Any = None) -> list[Found]:
        """This layout's encoders present in ``flat`` (under ``root``), in declaration order."""
        out = []
        for enc in self.encoders:
            for at in enc.at:
                if flat.has(root + at):
                    out.append(Found(enc.role, root + at, enc.parts))
                    break
        return out

    def missing(self, root: str, obj: Any = None) -> str:
        """Why the encoder its authors evaluate is not found (for messages): where it would be."""
        enc = {e.role: e for e in self.encoders}
        where = [root + a for r in self.evaluated if r in enc for a in enc[r].at]
        return f"no key starts with {' or '.join(map(repr, where))} (the {' / '.join(self.evaluated)} its authors " \
               f"evaluate)"

    def chosen(self, found: Sequence[Found]) -> Found | None:
        """The encoder the authors evaluate: the first role of ``evaluated`` that is present."""
        by_role = {f.role: f for f in found}
        return next((by_role[r] for r in self.evaluated if r in by_role), None)

    def arch(self, flat: Flat) -> str | None:
        """The ResNet arch the file names (``arch_key``), if it is one the suite evaluates."""
        a = flat.values.get(self.arch_key) if self.arch_key else None
        return a if a in ARCHS else None

    def progress(self, flat: Flat, obj: Any = None) -> tuple[int | None, int | None, bool | None]:
        """(epochs trained, iterations trained, complete) as far as the file says (None: unknown)."""
        return _int(flat.values.get(self.epochs_key)), _int(flat.values.get(self.iterations_key)), None


def _present(flat: Flat, root: str, marker: Any) -> bool:
    return any(flat.has(root + m) for m in marker) if isinstance(marker, tuple) else flat.has(root + marker)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


# --------------------------------------------------------------------------------------------------
# this suite's own formats (self-describing: their meta says where the backbone is)
# --------------------------------------------------------------------------------------------------
BACKBONE_FORMAT = "lewel-bench/backbone"
PRETRAIN_FORMAT = "lewel-bench/pretrain"
MMSEG_FORMAT = "lewel-bench/mmseg-resnet"


def _no_mapping(obj: Any, key: str) -> str:
    top = ", ".join(map(str, list(obj)[:10])) if isinstance(obj, Mapping) else type(obj).__name__
    return f"its meta says format {_meta(obj).get('format')!r}, but it has no {key!r} mapping (top-level keys: {top})"


def _meta(obj: Any) -> Mapping[str, Any]:
    m = obj.get("meta") if isinstance(obj, Mapping) else None
    return m if isinstance(m, Mapping) else {}


@dataclass(frozen=True)
class SuiteBackbone(Layout):
    """``backbone.pth``: the trunk under ``state_dict``, each transfer part under ``parts.<part>``."""

    def found(self, flat: Flat, root: str, obj: Any = None) -> list[Found]:
        if not flat.has(root + "state_dict."):
            return []
        names = sorted({p.split(".")[1] for p in flat.prefixes if p.startswith(root + "parts.") and p.count(".") == 2})
        return [Found("trunk", root + "state_dict.", {n: Part(f"parts.{n}.") for n in names})]

    def missing(self, root: str, obj: Any = None) -> str:
        return _no_mapping(obj, "state_dict")

    def progress(self, flat: Flat, obj: Any = None) -> tuple[int | None, int | None, bool | None]:
        meta = _meta(obj)
        complete = meta.get("complete")
        return (_int(meta.get("epochs_trained")), _int(meta.get("iterations_trained", meta.get("iteration"))),
                complete if isinstance(complete, bool) else None)


@dataclass(frozen=True)
class SuitePretrain(Layout):
    """A full pretraining checkpoint: the online network under ``model`` (its backbone at the meta's
    ``backbone_prefix``, its transfer parts by the meta's ``transfer_parts`` key maps), the target network under
    ``target`` (a copy of the online network, so its backbone is at the same place without ``online.``)."""

    def found(self, flat: Flat, root: str, obj: Any = None) -> list[Found]:
        meta = _meta(obj)
        bp = str(meta.get("backbone_prefix") or "")
        parts = {p: MappedPart({f"{root}model.{src}": dst for src, dst in keys.items()})
                 for p, keys in (meta.get("transfer_parts") or {}).items() if isinstance(keys, Mapping)}
        out = [Found("online", f"{root}model.{bp}", parts)] if bp and flat.has(f"{root}model.{bp}") else []
        if bp.startswith("online.") and flat.has(f"{root}target.{bp[len('online.'):]}"):
            out.append(Found("target", f"{root}target.{bp[len('online.'):]}", {}))
        return out

    def missing(self, root: str, obj: Any = None) -> str:
        if not isinstance(obj, Mapping) or not isinstance(obj.get("model"), Mapping):
            return _no_mapping(obj, "model")
        return f"no key starts with '{root}model.{_meta(obj).get('backbone_prefix') or ''}' (the meta's backbone_prefix)"

    def progress(self, flat: Flat, obj: Any = None) -> tuple[int | None, int | None, bool | None]:
        meta, ck = _meta(obj), (obj if isinstance(obj, Mapping) else {})
        epochs = _int(meta.get("epochs_trained", ck.get("epoch")))
        iters = _int(meta.get("iterations_trained", ck.get("iteration")))
        complete = meta.get("complete")
        if not isinstance(complete, bool):
            planned = _int((ck.get("config") or {}).get("epochs")) if isinstance(ck.get("config"), Mapping) else None
            complete = epochs >= planned if epochs is not None and planned is not None else None
        return epochs, iters, complete


# --------------------------------------------------------------------------------------------------
# renames shared by several layouts
# --------------------------------------------------------------------------------------------------
#: detectron2's trunk names -> torchvision's (the inverse of MoCo's detection converter: ``stem.`` prefix,
#: ``res2..5`` = ``layer1..4``, ``conv{1,2,3}.norm`` = ``bn{1,2,3}``, ``shortcut(.norm)`` = ``downsample.0 (.1)``)
DETECTRON2_TO_TORCHVISION: tuple[Rename, ...] = (
    (r"shortcut\.norm\.", "downsample.1."), (r"shortcut\.", "downsample.0."), (r"conv([123])\.norm\.", r"bn\1."),
    (r"^res2\.", "layer1."), (r"^res3\.", "layer2."), (r"^res4\.", "layer3."), (r"^res5\.", "layer4."),
    (r"^stem\.", ""))

#: ``nn.Sequential(*list(resnet.children())[:-1])`` indices -> torchvision names (2 relu, 3 maxpool, 8 avgpool
#: hold no tensors)
SEQUENTIAL_RESNET: tuple[Rename, ...] = (
    (r"^0\.", "conv1."), (r"^1\.", "bn1."), (r"^4\.", "layer1."), (r"^5\.", "layer2."), (r"^6\.", "layer3."),
    (r"^7\.", "layer4."))

#: a part's keys in detectron2's names (:mod:`lewel_bench.transfer`)
_FPN_NAMES = r"fpn_(lateral|output)[2-5]\.(norm\.)?\w+"
_BOX_HEAD_NAMES = r"conv[1-4]\.(norm\.)?\w+"


def _mmcv_fpn(levels: int = 4) -> tuple[Rename, ...]:
    """An mmdet-style FPN's ``lateral_convs.i`` / ``fpn_convs.i`` ConvModules (``conv``, ``bn``) with inputs
    res2.. (start level 0) -> ``fpn_lateral{i+2}`` / ``fpn_output{i+2}`` (``.norm``), as MCL's converter
    renames them."""
    out: list[Rename] = []
    for i in range(levels):
        for src, dst in (("lateral_convs", "fpn_lateral"), ("fpn_convs", "fpn_output")):
            out += [(rf"^{src}\.{i}\.conv\.", f"{dst}{i + 2}."), (rf"^{src}\.{i}\.bn\.", f"{dst}{i + 2}.norm.")]
    return tuple(out)


def _mmcv_box_head(convs: int = 4) -> tuple[Rename, ...]:
    """MCL's ``DetConvGpNonLinearHead.cls_convs.i`` ConvModules -> detectron2's box head ``conv{i+1}`` (``.norm``)."""
    out: list[Rename] = []
    for i in range(convs):
        out += [(rf"^cls_convs\.{i}\.conv\.", f"conv{i + 1}."), (rf"^cls_convs\.{i}\.bn\.", f"conv{i + 1}.norm.")]
    return tuple(out)


def _hypercolumn(side: str) -> Part:
    """CGH's ``hypercols_proj_<side>.reg_conv`` (1x1 conv + BN + ReLU) -> the ``hypercolumn`` part's ``reduce``."""
    return Part(f"hypercols_proj_{side}.reg_conv.", ((r"^", "reduce."),), r"reduce\.[01]\.\w+")


# --------------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------------
LAYOUTS: dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise KeyError(f"checkpoint layout {layout.name!r} is already registered")
    if layout.refines is not None and layout.refines not in LAYOUTS:
        raise KeyError(f"checkpoint layout {layout.name!r} refines {layout.refines!r}, which is not registered")
    LAYOUTS[layout.name] = layout
    return layout


def names() -> list[str]:
    return sorted(LAYOUTS)


register(Layout(
    name="torchvision", title="torchvision / timm / torch.hub ResNet state dict",
    source="torchvision.models.resnet names (conv1, bn1, layer1-4, fc; timm's ResNet uses the same); bare, or "
           "under 'state_dict' / 'model'. Also the files of: tonylins/simclr-converter convert.py "
           "({'state_dict': model.state_dict()}, fc = SimCLR's supervised head), ajtejankar/byol-convert convert.py "
           "(the bare state dict, fc = BYOL's classifier, no num_batches_tracked), barlowtwins main.py and "
           "vicreg main_vicreg.py (resnet50.pth = model.module.backbone.state_dict(), fc = Identity), DINO's "
           "released ResNet-50 backbone, DenseCL / OpenSelfSup tools/extract_backbone_weights.py "
           "({'state_dict': the 'backbone.' keys stripped})",
    roots=("", "state_dict.", "model."), markers=("layer1.", "layer4."),
    encoders=(Encoder("resnet", ("",)),), evaluated=("resnet",)))

register(SuiteBackbone(
    name="lewel_bench_backbone", title="lewel-bench backbone.pth",
    source="lewel_bench.checkpoint.save_backbone: {'state_dict': torchvision names without fc, 'parts': "
           "{part: state dict}, 'meta': {'format': 'lewel-bench/backbone', 'arch', 'method', 'epochs', ...}}",
    values={"meta.format": BACKBONE_FORMAT}, encoders=(), evaluated=("trunk",), refines="torchvision",
    arch_key="meta.arch"))

register(SuitePretrain(
    name="lewel_bench_pretrain", title="lewel-bench pretraining checkpoint (checkpoint.pth)",
    source="pretrain/train.py checkpoint_state: {'model': the online network, 'target', 'queue', 'epoch', "
           "'iteration', 'config', 'meta': {'format': 'lewel-bench/pretrain', 'backbone_prefix', "
           "'transfer_parts', ...}}",
    values={"meta.format": PRETRAIN_FORMAT}, encoders=(), evaluated=("online",), arch_key="meta.arch"))

register(Layout(
    name="lewel_bench_mmseg", title="lewel-bench mmseg ResNet conversion",
    source="lewel_bench.transfer.mmseg.convert_backbone: {'state_dict': torchvision names, 'meta': {'format': "
           "'lewel-bench/mmseg-resnet', the source backbone's meta}}",
    values={"meta.format": MMSEG_FORMAT}, encoders=(Encoder("trunk", ("state_dict.",)),), evaluated=("trunk",),
    refines="torchvision", arch_key="meta.arch"))

register(Layout(
    name="moco", title="MoCo v1 / v2 (facebookresearch/moco)",
    source="main_moco.py save_checkpoint({'epoch', 'arch', 'state_dict': model.state_dict(), 'optimizer'}) of "
           "the DistributedDataParallel MoCo (moco/builder.py: encoder_q, encoder_k with the fc or its MLP, "
           "queue, queue_ptr); main_lincls.py and detection/convert-pretrain-to-detectron2.py take "
           "'module.encoder_q.' without fc",
    roots=("state_dict.",), markers=("module.encoder_q.", "module.encoder_k.", "module.queue"),
    encoders=(Encoder("encoder_q", ("module.encoder_q.",)), Encoder("encoder_k", ("module.encoder_k.",))),
    evaluated=("encoder_q",), arch_key="arch", epochs_key="epoch"))

register(Layout(
    name="mocov3", title="MoCo v3 ResNet (facebookresearch/moco-v3)",
    source="main_moco.py save_checkpoint({'epoch', 'arch', 'state_dict': model.state_dict(), 'optimizer', "
           "'scaler'}) of the DistributedDataParallel MoCo_ResNet (moco/builder.py: base_encoder and "
           "momentum_encoder with the projection MLP as fc, predictor); main_lincls.py takes "
           "'module.base_encoder' without fc",
    roots=("state_dict.",), markers=("module.base_encoder.", "module.momentum_encoder."),
    encoders=(Encoder("base_encoder", ("module.base_encoder.",)),
              Encoder("momentum_encoder", ("module.momentum_encoder.",))),
    evaluated=("base_encoder",), arch_key="arch", epochs_key="epoch"))

register(Layout(
    name="simsiam", title="SimSiam (facebookresearch/simsiam)",
    source="main_simsiam.py save_checkpoint({'epoch', 'arch', 'state_dict': model.state_dict(), 'optimizer'}) "
           "of the DistributedDataParallel SimSiam (simsiam/builder.py: encoder with the projector as fc, "
           "predictor); main_lincls.py takes 'module.encoder' without fc",
    roots=("state_dict.",), markers=("module.encoder.", "module.predictor."),
    encoders=(Encoder("encoder", ("module.encoder.",)),), evaluated=("encoder",), arch_key="arch",
    epochs_key="epoch"))

register(Layout(
    name="swav", title="SwAV / DeepCluster-v2 / SeLa-v2 (facebookresearch/swav)",
    source="main_swav.py save_dict {'epoch', 'state_dict': model.state_dict(), 'optimizer'} of the "
           "DistributedDataParallel src/resnet50.py model (the trunk with projection_head and prototypes); the "
           "released weights are that state dict bare; eval_linear.py and hubconf.py strip 'module.'",
    roots=("", "state_dict."), markers=("module.layer1.", "module.prototypes."),
    encoders=(Encoder("resnet", ("module.",)),), evaluated=("resnet",), epochs_key="epoch"))

register(Layout(
    name="dino", title="DINO full checkpoint (facebookresearch/dino)",
    source="main_dino.py save_dict {'student', 'teacher', 'optimizer', 'epoch', 'args', 'dino_loss'}: "
           "utils.MultiCropWrapper(backbone with fc = Identity, DINOHead), both DistributedDataParallel for a "
           "ResNet (has_batchnorms); eval_linear.py / eval_knn.py read checkpoint_key 'teacher' (default) "
           "through utils.load_pretrained_weights, which strips 'module.' and 'backbone.'",
    markers=("teacher.", "student."),
    encoders=(Encoder("teacher", ("teacher.module.backbone.", "teacher.backbone.")),
              Encoder("student", ("student.module.backbone.", "student.backbone."))),
    evaluated=("teacher",), arch_key="args.arch", epochs_key="epoch"))

register(Layout(
    name="barlowtwins", title="Barlow Twins training checkpoint (facebookresearch/barlowtwins)",
    source="main.py checkpoint.pth = dict(epoch, model=model.state_dict(), optimizer) of the "
           "DistributedDataParallel BarlowTwins (backbone = resnet50 with fc = Identity, projector, bn); its "
           "final resnet50.pth is model.module.backbone.state_dict() (layout torchvision)",
    roots=("model.",), markers=("module.backbone.", "module.projector.", "module.bn."),
    encoders=(Encoder("backbone", ("module.backbone.",)),), evaluated=("backbone",), epochs_key="epoch"))

register(Layout(
    name="vicreg", title="VICReg training checkpoint (facebookresearch/vicreg)",
    source="main_vicreg.py model.pth = dict(epoch, model=model.state_dict(), optimizer) of the "
           "DistributedDataParallel VICReg (backbone from resnet.py, projector); its final resnet50.pth is "
           "model.module.backbone.state_dict() (layout torchvision)",
    roots=("model.",), markers=("module.backbone.", "module.projector."), forbids=("module.bn.",),
    encoders=(Encoder("backbone", ("module.backbone.",)),), evaluated=("backbone",), epochs_key="epoch"))

register(Layout(
    name="lewel_official", title="official LEWEL_B (LayneH/LEWEL)",
    source="main.py utils.save_checkpoint({'epoch', 'arch', 'state_dict': model.state_dict(), 'best_acc1', "
           "'optimizer', 'scaler'}) of the DistributedDataParallel LEWELB_EMAN (models/lewel.py: online_net and "
           "target_net = EncoderObj(backbone, neck), predictor, predictor_obj); utils/extract_backbone.py and "
           "scripts/srun_lin.sh (--model-prefix online_net.backbone) take 'module.online_net.backbone.'",
    roots=("state_dict.",), markers=("module.online_net.backbone.", "module.target_net.backbone."),
    encoders=(Encoder("online_net", ("module.online_net.backbone.",)),
              Encoder("target_net", ("module.target_net.backbone.",))),
    evaluated=("online_net",), arch_key="arch", epochs_key="epoch"))

register(Layout(
    name="lewel_official_m", title="official LEWEL_M (MoCo-style encoder_q.backbone; LayneH/LEWEL)",
    source="utils/extract_backbone.py takes 'module.encoder_q.backbone.' (or 'module.online_net.backbone.') of "
           "the 'state_dict' that main.py saves, dropping fc",
    roots=("state_dict.",), markers=("module.encoder_q.backbone.",), refines="moco",
    encoders=(Encoder("encoder_q", ("module.encoder_q.backbone.",)),
              Encoder("encoder_k", ("module.encoder_k.backbone.",))),
    evaluated=("encoder_q",), arch_key="arch", epochs_key="epoch"))

register(Layout(
    name="cgh_official", title="official CGH (zaczgao/Cross-Context_Learning)",
    source="models/base_model.py save_networks: {'epoch', 'arch', 'best_acc1', 'net': net.state_dict() "
           "('module.' when distributed), 'optimizer0'}; models/cgh.py CGH: encoder_q, encoder_k (fc = MLP), "
           "hypercols_proj_q / _k = FeatDistiller(reg_conv = 1x1 conv + BN + ReLU on [layer3, layer4], "
           "projector), queue; base_model.init_net and detection/convert-pretrain-to-detectron2.py take encoder_q",
    roots=("net.module.", "net."), markers=("encoder_q.", "encoder_k.", "hypercols_proj_q."),
    encoders=(Encoder("encoder_q", ("encoder_q.",), {"hypercolumn": _hypercolumn("q")}),
              Encoder("encoder_k", ("encoder_k.",), {"hypercolumn": _hypercolumn("k")})),
    evaluated=("encoder_q",), arch_key="arch", epochs_key="epoch"))

register(Layout(
    name="mmselfsup", title="OpenSelfSup / mmselfsup / mmpretrain self-supervised checkpoint (open-mmlab)",
    source="mmcv / mmengine save_checkpoint: {'meta': {'epoch', 'iter', ...}, 'state_dict', 'optimizer', ...}; "
           "the models keep backbone / neck / head, their momentum copy as encoder_k or target_net (OpenSelfSup: "
           "nn.Sequential, backbone aliasing encoder_q[0] / online_net[0]; mmselfsup 1.x / mmpretrain: "
           "mmengine's ExponentialMovingAverage / CosineEMA: .module, .steps); OpenSelfSup's "
           "tools/extract_backbone_weights.py and the benchmark configs (init_cfg=dict(type='Pretrained', "
           "prefix='backbone.')) take 'backbone.'",
    roots=("state_dict.",),
    markers=("backbone.", ("neck.", "encoder_q.0.", "online_net.0.", "encoder_k.", "target_net.")),
    encoders=(Encoder("backbone", ("backbone.",)),
              Encoder("encoder_k", ("encoder_k.module.0.", "encoder_k.0.")),
              Encoder("target_net", ("target_net.module.0.", "target_net.0."))),
    evaluated=("backbone",), epochs_key="meta.epoch", iterations_key="meta.iter"))

register(Layout(
    name="mcl_official", title="official MCL (GuoQiushan/MCL, OpenSelfSup-based)",
    source="openselfsup/models/mcl.py: encoder_q = nn.Sequential(ResNet, FPN, DetConvGpNonLinearHead), encoder_k "
           "the same, backbone = encoder_q[0]; necks.py: FPN lateral_convs / fpn_convs and the head's cls_convs "
           "are ConvModules (conv, bn); benchmarks/detection/convert-sppretrain-to-detectron2.py takes 'backbone.' "
           "(stem, res2-5), lateral_convs.i -> fpn_lateral{i+2}, fpn_convs.i -> fpn_output{i+2}, cls_convs.i -> "
           "box_head.conv{i+1}, bn -> norm",
    roots=("state_dict.",), markers=("backbone.", "encoder_q.1.lateral_convs.", "encoder_q.2.cls_convs."),
    refines="mmselfsup",
    encoders=(Encoder("encoder_q", ("backbone.", "encoder_q.0."),
                      {"fpn": Part("encoder_q.1.", _mmcv_fpn(), _FPN_NAMES),
                       "box_head": Part("encoder_q.2.", _mmcv_box_head(), _BOX_HEAD_NAMES)}),
              Encoder("encoder_k", ("encoder_k.0.",),
                      {"fpn": Part("encoder_k.1.", _mmcv_fpn(), _FPN_NAMES),
                       "box_head": Part("encoder_k.2.", _mmcv_box_head(), _BOX_HEAD_NAMES)})),
    evaluated=("encoder_q",), epochs_key="meta.epoch", iterations_key="meta.iter"))

register(Layout(
    name="densecl_official", title="official DenseCL (WXinlong/DenseCL, OpenSelfSup-based)",
    source="openselfsup/models/densecl.py: encoder_q = nn.Sequential(backbone, DenseCLNeck), encoder_k, backbone "
           "= encoder_q[0], queue / queue2; tools/extract_backbone_weights.py takes 'backbone.' of 'state_dict'",
    roots=("state_dict.",), markers=("backbone.", "encoder_q.0.", "queue2"), refines="mmselfsup",
    encoders=(Encoder("backbone", ("backbone.", "encoder_q.0.")), Encoder("encoder_k", ("encoder_k.0.",))),
    evaluated=("backbone",), epochs_key="meta.epoch", iterations_key="meta.iter"))

register(Layout(
    name="pixpro", title="PixPro / SoCo (zdaxie/PixPro, hologerry/SoCo)",
    source="main_pretrain.py save_checkpoint: {'opt', 'model': model.state_dict() (DistributedDataParallel: "
           "encoder, encoder_k, projector, ...), 'optimizer', 'scheduler', 'epoch'}; PixPro's main_linear.py and "
           "transfer/detection/convert_pretrain_to_d2.py take 'module.encoder.'; SoCo's converter_detectron2 "
           "and converter_mmdetection scripts take 'model' / 'module.encoder.' (with --ema: 'model_ema' / "
           "'encoder.')",
    markers=("model.module.encoder.", "model.module.encoder_k."),
    encoders=(Encoder("encoder", ("model.module.encoder.",)), Encoder("encoder_k", ("model.module.encoder_k.",)),
              Encoder("ema", ("model_ema.encoder.",))),
    evaluated=("encoder",), arch_key="opt.arch", epochs_key="epoch"))

register(Layout(
    name="solo_learn", title="solo-learn Lightning checkpoint (vturrisi/solo-learn)",
    source="solo/methods/base.py: BaseMethod.backbone (torchvision ResNet, fc = Identity), classifier; "
           "BaseMomentumMethod.momentum_backbone; PyTorch Lightning saves the module under 'state_dict'; "
           "main_linear.py keeps the 'backbone' keys ('encoder' in older releases)",
    roots=("state_dict.",), markers=(("backbone.", "encoder."), "classifier.weight"),
    encoders=(Encoder("backbone", ("backbone.", "encoder.")),
              Encoder("momentum_backbone", ("momentum_backbone.", "momentum_encoder."))),
    evaluated=("backbone",)))

register(Layout(
    name="lightly", title="lightly examples (lightly-ai/lightly examples/pytorch_lightning)",
    source="examples/pytorch_lightning/*.py: backbone = nn.Sequential(*list(resnet.children())[:-1]) (keys "
           "backbone.0 = conv1, .1 = bn1, .4-.7 = layer1-4), backbone_momentum its copy; dino.py: student_backbone "
           "/ teacher_backbone (DINO evaluates the teacher); Lightning saves the module under 'state_dict'",
    roots=("state_dict.", ""), markers=(("backbone.4.", "teacher_backbone.4."),), renames=SEQUENTIAL_RESNET,
    encoders=(Encoder("backbone", ("backbone.",)), Encoder("backbone_momentum", ("backbone_momentum.",)),
              Encoder("teacher_backbone", ("teacher_backbone.",)), Encoder("student_backbone", ("student_backbone.",))),
    evaluated=("backbone", "teacher_backbone")))

register(Layout(
    name="lightly_benchmarks", title="lightly ImageNet benchmarks (lightly-ai/lightly benchmarks/imagenet/resnet50)",
    source="benchmarks/imagenet/resnet50/*.py: backbone = torchvision resnet50 with fc = Identity, the network "
           "forward() and the online / kNN / linear evaluations use (DINO: the teacher; BYOL: teacher_backbone is "
           "the momentum copy; DINO: student_backbone the student), online_classifier; Lightning 'state_dict'",
    roots=("state_dict.",), markers=("backbone.layer1.", "online_classifier."),
    encoders=(Encoder("backbone", ("backbone.",)), Encoder("teacher_backbone", ("teacher_backbone.",)),
              Encoder("student_backbone", ("student_backbone.",))),
    evaluated=("backbone",)))

register(Layout(
    name="vissl", title="VISSL checkpoint (facebookresearch/vissl)",
    source="extra_scripts/convert_vissl_to_torchvision.py: the trunk is classy_state_dict.base_model.model.trunk "
           "(or model_state_dict, or the file itself), its '_feature_blocks.' prefix stripped; "
           "models/trunks/resnext.py: _feature_blocks = ModuleDict(conv1, bn1, conv1_relu, maxpool, layer1-4, "
           "avgpool, flatten)",
    roots=("classy_state_dict.base_model.model.trunk.", "model_state_dict.", ""), markers=("_feature_blocks.layer1.",),
    encoders=(Encoder("trunk", ("_feature_blocks.",)),), evaluated=("trunk",), iterations_key="iteration"))

register(Layout(
    name="detectron2", title="detectron2 pickle of a pretrained backbone (.pkl)",
    source="MoCo's detection/convert-pretrain-to-detectron2.py: {'model': {name: ndarray}, '__author__', "
           "'matching_heuristics': True} with stem., res2-5, conv{1,2,3}.norm, shortcut(.norm); the same renames "
           "in the PixPro, SoCo, CGH and MCL converters (MCL's adds fpn_lateral / fpn_output and box_head.conv*) "
           "and in tools.convert_to_detectron2",
    roots=("model.", ""), markers=("stem.", "res2."), renames=DETECTRON2_TO_TORCHVISION,
    encoders=(Encoder("trunk", ("",), {"fpn": Part("", (), _FPN_NAMES),
                                       "box_head": Part("box_head.", (), _BOX_HEAD_NAMES)}),),
    evaluated=("trunk",)))


# --------------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------------
def recognise(flat: Flat, among: Iterable[Layout] | None = None) -> list[tuple[Layout, str]]:
    """The layouts ``flat`` is a file of, with their roots; a layout another match ``refines`` is dropped."""
    hits = [(lay, root) for lay in (among if among is not None else LAYOUTS.values())
            if (root := lay.root_in(flat)) is not None]
    refined = {lay.refines for lay, _ in hits}
    return [(lay, root) for lay, root in hits if lay.name not in refined]


def resnet_prefixes(flat: Flat) -> list[str]:
    """Every prefix P with ``P + 'conv1.weight'`` and ``P + 'layer1.0.conv1.weight'`` tensors: the torchvision-named
    ResNet trunks anywhere in the file."""
    out = set()
    for k in flat.tensors:
        if k.endswith("layer1.0.conv1.weight"):
            p = k[: -len("layer1.0.conv1.weight")]
            if f"{p}conv1.weight" in flat.tensors:
                out.add(p)
    return sorted(out)
