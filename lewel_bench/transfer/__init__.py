"""Transfer formats: a pretrained backbone (and its transfer bundle) for the downstream engines.

* :mod:`lewel_bench.transfer.detectron2`: detectron2's pickle (MoCo's renames of the ResNet trunk), with
  the bundle's parts under detectron2's own module names;
* :mod:`lewel_bench.transfer.mmseg`: the checkpoint mmsegmentation's ``ResNet`` loads (torchvision names);
* :mod:`lewel_bench.transfer.mmcv_ops`: a pure-torch ``mmcv.ops`` so mmseg imports under ``mmcv-lite``.

Transfer bundle: besides the trunk (always required, complete), a checkpoint may carry pretrained modules
a detector can take (:data:`PARTS`). A part's tensors are named as detectron2 names them inside the
module that holds them (``fpn``: ``fpn_lateral{2..5}``, ``fpn_output{2..5}`` with ``.norm`` when the FPN
has BatchNorm; ``box_head``: ``conv{1..4}`` with ``.norm``), so the detectron2 converter writes them as
they are (with :data:`PARTS`' prefix) and the torchvision backend maps them to its own modules. A published
checkpoint carries parts where its layout declares them (:mod:`lewel_bench.layouts`: the official MCL release's
FPN and head convs, renamed as MCL's own converter renames them; CGH's hypercolumn conv).
"""
from __future__ import annotations

#: part -> prefix of its tensors in detectron2's checkpoint (detectron2 matches names by suffix)
PARTS: dict[str, str] = {"fpn": "", "box_head": "box_head."}
