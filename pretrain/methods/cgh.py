"""CGH (Gao, Feng, Patras, WACV 2024): cross-context learning between global and hypercolumn features.

A MoCo v2 base in one direction: the query is a strong MoCo v2 view (``views[1]``), the key a weak view (crop
and flip only, ``views[0]``); any further views are multi-crop local views ("CGH (Multi)"). Both encoders
carry two heads (:class:`CGHHead`):

* the global head g: GAP(res5) -> MLP D-4096-512 (biases, no BN): the global embedding z;
* the hypercolumn branch (:class:`HypercolumnBranch`): res4 resized bilinearly to res5's size and concatenated
  with res5 (:func:`lewel_bench.models.hypercolumn`; 3072 channels for a ResNet-50), 1x1 conv to D + BN +
  ReLU, GAP, MLP D-4096-512: the hypercolumn embedding z_h.

The key encoder is a momentum copy of both (fixed m = 0.999, ShuffleBN). Two queues of K keys (global and
hypercolumn keys of the same images at the same indices, one pointer) give four similarity rows over the
queue: s_q = q.Q, s_k = k.Q, s_qh = q_h.Q_h, s_kh = k_h.Q_h (no positive column). With
CE(a, p) = mean over the batch of -sum_j p_j log softmax(a)_j:

* L_cl_hyper = CE(s_qh / tau_hs, softmax(s_k / tau_gt)): the hypercolumn student, the sharpened global teacher;
* L_csist = CE(s_q / tau_gs, softmax(s_kh / tau_ht)): the global student, the hypercolumn teacher; with local
  views, each local view's global embedding adds CE(s_local / tau_gs, softmax(s_kh / tau_ht)) and the sum is
  divided by (n_local + 1);
* L_cl (loss warm-up only) = InfoNCE(q, k, Q) + InfoNCE(q_h, k_h, Q_h) at temperature tau.

Total (:func:`loss_weights`): during the first ``loss_warmup_epochs`` a per-iteration linear cross-fade
(1 - a) L_cl + a/2 L_cl_hyper + a/2 L_csist with a = t / (warm-up iterations); afterwards
0.5 L_cl_hyper + 0.5 L_csist (L_cl is no longer computed). Teacher distributions carry no gradient.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lewel_bench import dist as ldist
from lewel_bench.config import ConfigError
from lewel_bench.models import STAGES, backbone_features, feature_dim, hypercolumn

from ..heads import MLP
from .base import METHODS, Encoder, FIFOQueue, SSLMethod

#: The transfer-bundle part holding the learned hypercolumn reduction (1x1 conv + BN) for the linear probe's
#: ``feature: hypercolumn_learned`` (``eval_linear``); detectors do not take it.
HYPERCOLUMN_PART = "hypercolumn"


class HypercolumnBranch(nn.Module):
    """Hypercolumn of the given maps -> 1x1 conv (no bias) -> BN -> ReLU -> GAP -> MLP (biases, no BN).

    ``reduce`` is the learned 1x1 conv + BN + ReLU ("reg_conv" of the official code); :meth:`pooled` its
    global average pool (the 2048-d vector of the ``hypercolumn_learned`` probe).
    """

    def __init__(self, in_dim: int, width: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_dim, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.mlp = MLP(width, hidden, dim, bn=False, bias=True)

    def pooled(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.reduce(hypercolumn(maps)).mean((2, 3))

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.mlp(self.pooled(maps))


class CGHHead(nn.Module):
    """Global head on GAP(res5) and the hypercolumn branch on ``hyper_stages``; ``{stage: map}`` -> (z, z_h)."""

    def __init__(self, arch: str, hyper_stages: Sequence[str], hidden: int, dim: int, hyper_dim: int,
                 width: int) -> None:
        super().__init__()
        D = feature_dim(arch)
        self.hyper_stages = tuple(hyper_stages)
        self.glob = MLP(D, hidden, dim, bn=False, bias=True)
        self.hyper = HypercolumnBranch(sum(feature_dim(arch, s) for s in self.hyper_stages), width, hidden, hyper_dim)

    def global_embedding(self, res5: torch.Tensor) -> torch.Tensor:
        return self.glob(res5.mean((2, 3)))

    def forward(self, f: dict[str, torch.Tensor] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = f if isinstance(f, dict) else {"res5": f}  # the encoder passes the map alone when it reads one stage
        return self.global_embedding(f["res5"]), self.hyper([f[s] for s in self.hyper_stages])


class _QueueProduct(torch.autograd.Function):
    """[student; teacher] @ Q^T against the live queue buffer Q (see :func:`queue_similarities`)."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor | None, queue: torch.Tensor,
                rows: torch.Tensor) -> torch.Tensor:
        ctx.queue, ctx.rows, ctx.n, ctx.dtype = queue, rows, student.shape[0], student.dtype
        ctx.old = queue[rows].clone()  # the rows this step's enqueue overwrites before the backward pass
        x = student if teacher is None else torch.cat([student, teacher.to(student.dtype)])
        return x @ queue.t().to(x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        q_now, rows = ctx.queue, ctx.rows
        g = g[: ctx.n]  # the student rows (no gradient to the teacher or the queue)
        # in the promoted dtype of the gradient and the queue (float64 stays float64; AMP's half-precision
        # gradient meets the float32 queue in float32)
        dt = torch.promote_types(g.dtype, q_now.dtype)
        g = g.to(dt)
        dx = g @ q_now.to(dt) + g[:, rows] @ (ctx.old - q_now[rows]).to(dt)  # = g @ Q as it was in forward
        return dx.to(ctx.dtype), None, None, None


def queue_similarities(student: torch.Tensor, teacher: torch.Tensor | None, queue: torch.Tensor,
                       rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Similarity rows over the queue, s = e . Q^T, of the student (with gradient) and the teacher (without) in
    ONE product, against the queue buffer itself: ``rows`` are the queue rows the step's enqueue will overwrite
    before the backward pass; the product keeps their old values (B x d) instead of a copy of the queue (K x d),
    and the student's gradient g . Q_old = g . Q_now + g[:, rows] . (Q_old - Q_now)[rows] is exact."""
    s = _QueueProduct.apply(student, teacher, queue, rows)
    n = student.shape[0]
    return (s, None) if teacher is None else (s[:n], s[n:].detach())


def cross_context_ce(student: torch.Tensor, teacher: torch.Tensor, tau_s: float, tau_t: float) -> torch.Tensor:
    """CE(student / tau_s, softmax(teacher / tau_t)): mean over rows of -sum_j p_j log softmax(student / tau_s)_j,
    p = softmax(teacher / tau_t) without gradient (similarity rows over the queue, (N, K)); in the inputs' dtype
    (under AMP, autocast runs the softmaxes in float32)."""
    p = F.softmax(teacher.detach() / tau_t, dim=1)
    return -(p * F.log_softmax(student / tau_s, dim=1)).sum(1).mean()


def info_nce_from_rows(l_pos: torch.Tensor, s_neg: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo's InfoNCE from the positive similarities (N,) and the queue rows (N, K): CE([l_pos, s_neg] / tau, 0)
    (the queue rows are the ones the cross terms use, so the warm-up term costs no further product)."""
    logits = torch.cat([l_pos[:, None], s_neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def loss_weights(it: int, warmup_iters: int) -> tuple[float, float, float]:
    """(w_cl, w_cl_hyper, w_csist) at iteration ``it``: (1 - a, a / 2, a / 2) with a = it / warmup_iters during
    the loss warm-up, then (0, 0.5, 0.5)."""
    if it >= warmup_iters:
        return 0.0, 0.5, 0.5
    a = it / warmup_iters
    return 1.0 - a, 0.5 * a, 0.5 * a


@METHODS.register("cgh")
class CGH(SSLMethod):
    """Key = target(views[0], the weak view), query = online(views[1], strong), local views = views[2:]."""

    n_views = None  # 2, or more with multi-crop local views (checked in check_views)

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        mc = cfg["model"]
        stages = list(mc["hyper_stages"])
        order = list(STAGES)
        if len(set(stages)) != len(stages) or stages != sorted(stages, key=order.index):
            raise ConfigError(f"model.hyper_stages must list distinct backbone stages from shallow to deep "
                              f"(the hypercolumn is resized to the last one), got {stages}")
        self.tau = float(mc["temperature"])
        self.tau_hs, self.tau_gt = float(mc["tau_hyper_student"]), float(mc["tau_global_teacher"])
        self.tau_gs, self.tau_ht = float(mc["tau_global_student"]), float(mc["tau_hyper_teacher"])
        self.loss_warmup_epochs = float(mc["loss_warmup_epochs"])
        width = mc.get("hyper_width") or self.D
        head = CGHHead(self.arch, stages, mc["hidden"], mc["dim"], mc["hyper_dim"], width)
        self.online = Encoder(self.arch, head, pooled=False, stages=sorted({*stages, "res5"}, key=order.index))
        self.target = self.make_target(self.online)
        self.queue = FIFOQueue(mc["queue_size"], {"glob": mc["dim"], "hyper": mc["hyper_dim"]})

    def check_views(self, n: int) -> None:
        if n < 2:
            raise ConfigError(f"method 'cgh' takes a weak key view and a strong query view (then any local "
                              f"views); aug.views gives {n}")

    def transfer_parts(self) -> dict[str, dict[str, str]]:
        """The learned hypercolumn reduction (for the ``hypercolumn_learned`` linear probe)."""
        prefix = "online.head.hyper.reduce."
        return {HYPERCOLUMN_PART: {prefix + k: "reduce." + k for k in self.online.head.hyper.reduce.state_dict()}}

    def warmup_iters(self) -> int:
        """Iterations of the loss warm-up (the loop sets ``iters_per_epoch`` before training)."""
        if self.loss_warmup_epochs <= 0:
            return 0
        if self.iters_per_epoch <= 0:
            raise RuntimeError("CGH: iters_per_epoch is not set (the training loop sets it before the first step)")
        return round(self.loss_warmup_epochs * self.iters_per_epoch)

    def _rows_written(self, n_local: int, device: torch.device) -> torch.Tensor:
        """The queue rows this step's enqueue (the gathered keys of every process) overwrites."""
        n = n_local * ldist.get_world_size()
        return torch.unique((self.queue.ptr + torch.arange(n, device=device)) % self.queue.size)

    def _global(self, x: torch.Tensor) -> torch.Tensor:
        """Online global embedding of a local view (res5 only, no hypercolumn)."""
        return self.online.head.global_embedding(backbone_features(self.online.backbone, x, ("res5",))["res5"])

    def forward(self, views: list[torch.Tensor]):
        x_k, x_q, *local = views
        z, z_h = self.online_split(x_q)
        q, q_h = F.normalize(z, dim=1), F.normalize(z_h, dim=1)
        k, k_h = (F.normalize(t, dim=1) for t in self.target_shuffled(x_k))
        Q, Q_h = self.queue.glob, self.queue.hyper  # before this step's enqueue (see queue_similarities)
        rows = self._rows_written(k.shape[0], k.device)
        s_q, s_k = queue_similarities(q, k, Q, rows)
        s_qh, s_kh = queue_similarities(q_h, k_h, Q_h, rows)
        w_cl, w_hyper, w_csist = loss_weights(self.iteration, self.warmup_iters())
        l_hyper = cross_context_ce(s_qh, s_k, self.tau_hs, self.tau_gt)
        l_csist = cross_context_ce(s_q, s_kh, self.tau_gs, self.tau_ht)
        logs = {}
        if local:
            net: Callable[[torch.Tensor], torch.Tensor] = self._global
            terms = [cross_context_ce(queue_similarities(F.normalize(self.online_split(x, net), dim=1), None, Q, rows)[0],
                                      s_kh, self.tau_gs, self.tau_ht) for x in local]
            logs["loss_csist_global"] = l_csist.detach()
            l_csist = (l_csist + sum(terms)) / (len(terms) + 1)
        loss = w_hyper * l_hyper + w_csist * l_csist
        if w_cl > 0:
            l_cl = (info_nce_from_rows((q * k).sum(1), s_q, self.tau)
                    + info_nce_from_rows((q_h * k_h).sum(1), s_qh, self.tau))
            loss = loss + w_cl * l_cl
            logs["loss_cl"] = l_cl.detach()
        self.queue.push(glob=ldist.all_gather_nograd(k), hyper=ldist.all_gather_nograd(k_h))
        logs.update(loss_cl_hyper=l_hyper.detach(), loss_csist=l_csist.detach(),
                    w_cl=loss.new_tensor(w_cl), w_cross=loss.new_tensor(w_hyper))
        return loss, logs
