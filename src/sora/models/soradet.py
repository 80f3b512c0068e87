"""SoraDet: video object detection with a convolutional recurrent memory at every scale.

Shapes (B batch, T frames, L pyramid levels, A anchor points over all levels, K classes)::

    clip      (B, T, 3, H, W)      float, normalized
    backbone  per frame -> {s: (B*T, C_s, H/s, W/s)} for s in strides (8, 16, 32)
    FPN       torchvision.ops.FeaturePyramidNetwork -> L maps (B*T, D, H/s, W/s)
    temporal  per level a ConvGRU / ConvLSTM cell (depthwise-separable 3x3 gates, the
              Bottleneck-LSTM idea of Liu & Zhu, CVPR 2018) run over T; the level's output
              is ``x + gate * h``: its input plus the new hidden state times a per-channel
              gate that starts at 0, so the untrained network equals the per-frame one, and
              ``temporal: none`` (identity) is the per-frame ablation
    head      torchvision's FCOSClassificationHead and FCOSRegressionHead (its ReLU made a
              floor of ``detect.min_side``), shared by the levels -> cls_logits (B, T, A, K),
              bbox_regression (B, T, A, 4) (distances to the box sides in units of the
              level's stride), bbox_ctrness (B, T, A, 1)

Anchor points sit at the centres of each level's cells: ``((j + 0.5) s, (i + 0.5) s)``.
Boxes are ``xyxy`` pixels of the input frame.

Streaming: ``state = model.init_state(B)``, then ``out, state = model.step(frame, state)`` per
frame ``(B, 3, H, W)``; ``out`` holds the same keys without the ``T`` axis and equals the
offline ``forward`` at that frame (tested). The state is one hidden map per level (two for
the LSTM): constant memory, whatever the length of the video.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSRegressionHead
from torchvision.ops import (
    FeaturePyramidNetwork,
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou_loss,
    roi_align,
    sigmoid_focal_loss,
)

from sora.config import DetectConfig, ModelConfig
from sora.models.backbones import build_backbone
from sora.models.streaming import Outputs, RunStreaming, State

TEMPORAL = ("convgru", "convlstm", "none")
FIELDS = ("cls_logits", "bbox_regression", "bbox_ctrness")
#: A forecast box joins the output only where it overlaps no detection (of its class) by more
#: than this IoU. Measured (benchmarks/detection.py, 1,700 steps, forecast 1): test mAP50
#: 0.328 at 0.6 (NMS's IoU: shifted duplicates of seen objects), 0.347 at 0.3, 0.345 at 0.1,
#: against 0.344 without the forecast; wholly hidden boxes found 11%, 13%, 9%.
#: Covered by a detection of any class instead (the same default model): mAP50 the same
#: (0.348), 38% fewer forecast boxes, hidden boxes found 13.4% instead of 16.5%.
FORECAST_OVERLAP = 0.3
DET_STRIDES = (4, 8, 16, 32)


def _separable(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1: ``(N, cin, h, w)`` -> ``(N, cout, h, w)``."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1)
    )


class ConvGRUCell(nn.Module):
    """``x, h`` ``(N, C, h, w)`` -> new ``h``: a GRU whose gates are separable convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.gates = _separable(2 * channels, 2 * channels)
        self.candidate = _separable(2 * channels, channels)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * n


class ConvLSTMCell(nn.Module):
    """``x, (h, c)`` ``(N, C, h, w)`` -> new ``(h, c)``: an LSTM with separable-conv gates."""

    def __init__(self, channels: int):
        super().__init__()
        self.gates = _separable(2 * channels, 4 * channels)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class SignedRegressionHead(FCOSRegressionHead):
    """torchvision's FCOS regression head with its ReLU replaced by ``clamp_min(floor)``:
    side distances down to ``floor`` strides (``floor = 0`` is the ReLU, FCOS as published).
    ``[(N, D, h_l, w_l)]`` -> ``(N, A, 4)`` side distances, ``(N, A, 1)`` centre-ness."""

    def __init__(self, dim: int, convs: int, norm_layer, floor: float = 0.0):
        super().__init__(dim, 1, convs, norm_layer=norm_layer)
        self.floor = float(floor)

    def forward(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        reg, ctr = [], []
        for features in x:
            f = self.conv(features)
            # (N, 4, h, w) -> (N, h * w, 4); (N, 1, h, w) -> (N, h * w, 1)
            reg.append(self.bbox_reg(f).clamp_min(self.floor).flatten(2).transpose(1, 2))
            ctr.append(self.bbox_ctrness(f).flatten(2).transpose(1, 2))
        return torch.cat(reg, 1), torch.cat(ctr, 1)


class ForecastHead(nn.Module):
    """The boxes a level's hidden state expects on the next frame, from the state alone.

    Shared by the levels: ``convs`` separable 3x3 layers (GroupNorm, ReLU), then one 3x3
    convolution to ``K + 4 + 1`` channels; a tenth or less of the FCOS towers' cost.
    ``[(N, D, h_l, w_l)]`` -> ``(N, A, K)`` logits, ``(N, A, 4)`` side distances (at least
    ``floor`` strides, as :class:`SignedRegressionHead`),
    ``(N, A, 1)`` centre-ness, in the main head's anchor order.
    """

    def __init__(self, dim: int, num_classes: int, convs: int = 2, floor: float = 0.0):
        super().__init__()
        self.floor = float(floor)
        layers: list[nn.Module] = []
        for _ in range(convs):
            layers += [_separable(dim, dim), nn.GroupNorm(8, dim), nn.ReLU()]
        self.tower = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.out = nn.Conv2d(dim, num_classes + 5, 3, padding=1)
        nn.init.normal_(self.out.weight, std=0.01)
        bias = torch.zeros(num_classes + 5)
        bias[:num_classes] = -math.log(99)  # the focal loss's prior of 0.01
        bias[num_classes : num_classes + 4] = 1.0  # as the main head's sides (see SoraDet)
        with torch.no_grad():
            self.out.bias.copy_(bias)

    def forward(self, levels: list[torch.Tensor]):
        y = torch.cat(
            [self.out(self.tower(x)).permute(0, 2, 3, 1).flatten(1, 2) for x in levels], 1
        )  # (N, A, K + 5)
        k = self.num_classes
        return y[..., :k], y[..., k : k + 4].clamp_min(self.floor), y[..., k + 4 :]


class SoraDet(RunStreaming, nn.Module):
    """Multi-scale CNN + FPN + convolutional RNN per level + FCOS head.

    Args:
        model: the backbone (``backbone``, ``backbone_weights``, ``widths``) and
            ``num_classes``.
        cfg: the detection settings (:class:`~sora.config.DetectConfig`).
    """

    def __init__(self, model: ModelConfig, cfg: DetectConfig):
        super().__init__()
        if cfg.temporal not in TEMPORAL:
            raise ValueError(f"detect.temporal must be one of {TEMPORAL}, got {cfg.temporal!r}")
        bad = [s for s in cfg.strides if s not in DET_STRIDES]
        if bad or not cfg.strides:
            raise ValueError(f"detect.strides must be a non-empty subset of {DET_STRIDES}")
        if cfg.fpn_dim % 8:
            raise ValueError(f"detect.fpn_dim must be a multiple of 8, got {cfg.fpn_dim}")
        if not 0 <= cfg.memory_warmup < 1:
            raise ValueError(f"detect.memory_warmup must be in [0, 1), got {cfg.memory_warmup}")
        if model.num_classes < 1:
            raise ValueError(f"model.num_classes must be >= 1, got {model.num_classes}")
        if cfg.forecast < 0:
            raise ValueError(f"detect.forecast must be >= 0, got {cfg.forecast}")
        if not 0 <= cfg.forecast_class <= 1:
            raise ValueError(f"detect.forecast_class must be in [0, 1], got {cfg.forecast_class}")
        if not -1 <= cfg.min_side <= 0:
            raise ValueError(f"detect.min_side must be in [-1, 0], got {cfg.min_side}")
        self.cfg = cfg
        self.num_classes = model.num_classes
        self.strides = tuple(sorted(cfg.strides))
        self.backbone = build_backbone(
            model.backbone,
            weights=model.backbone_weights,
            widths=model.widths,
            strides=self.strides,
            in_channels=3,
        )
        dim = cfg.fpn_dim
        self.fpn = FeaturePyramidNetwork([self.backbone.channels[s] for s in self.strides], dim)
        cell = {"convgru": ConvGRUCell, "convlstm": ConvLSTMCell}.get(cfg.temporal)
        self.cells = None if cell is None else nn.ModuleList(cell(dim) for _ in self.strides)
        # A level's output is ``x + gate * h``, the gate per channel and zero at the start
        # (ReZero / LayerScale): the untrained network is the per-frame one, and the memory
        # comes in as far as training finds it useful. Measured (benchmarks/detection.py,
        # 240 s): test mAP50 0.269 with the plain ``x + h``, 0.297 and 0.309 with the gate.
        self.gates = (
            None
            if cell is None
            else nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in self.strides)
        )
        norm = partial(nn.GroupNorm, 8)
        self.cls_head = FCOSClassificationHead(
            dim, 1, model.num_classes, cfg.head_convs, norm_layer=norm
        )
        self.reg_head = SignedRegressionHead(dim, cfg.head_convs, norm, floor=cfg.min_side)
        # The head's distances are clamped at ``min_side``: with torchvision's zero bias, the
        # sides that start below it get no gradient and stay there (seen: boxes stuck to the
        # anchor's left/top). Starting every side at one stride keeps all four alive.
        nn.init.constant_(self.reg_head.bbox_reg.bias, 1.0)
        # The forecast: without a loss of its own the state carries nothing (measured: the
        # same mAP with the state reset every frame); with one it carries the hidden objects.
        self.forecast = (
            ForecastHead(dim, model.num_classes, floor=cfg.min_side)
            if cell is not None and cfg.forecast
            else None
        )
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.min_size = max(self.strides)
        self._anchor_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, list[int]]] = {}

    # -- geometry ------------------------------------------------------------------------
    def anchors(self, height: int, width: int, device=None):
        """Anchor points of an ``height x width`` input: ``(A, 4)`` boxes of one stride's side
        centred on each cell, ``(A,)`` the stride of each, and the count per level."""
        key = (height, width, str(device))
        if key not in self._anchor_cache:
            boxes, strides, counts = [], [], []
            for s in self.strides:
                h, w = math.ceil(height / s), math.ceil(width / s)
                ys, xs = torch.meshgrid(
                    (torch.arange(h, device=device) + 0.5) * s,
                    (torch.arange(w, device=device) + 0.5) * s,
                    indexing="ij",
                )
                c = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 4)
                boxes.append(c + torch.tensor([-s, -s, s, s], device=device) / 2)
                strides.append(torch.full((h * w,), float(s), device=device))
                counts.append(h * w)
            self._anchor_cache[key] = (torch.cat(boxes), torch.cat(strides), counts)
        return self._anchor_cache[key]

    def _check(self, x: torch.Tensor, rank: int, name: str) -> None:
        expected = "(B, T, 3, H, W)" if rank == 5 else "(B, 3, H, W)"
        if x.dim() != rank or x.shape[-3] != 3:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise ValueError(
                f"{name} frames must be at least {self.min_size}x{self.min_size}, got {h}x{w}"
            )

    # -- the network ---------------------------------------------------------------------
    def init_state(self, batch: int = 1, device=None) -> State:
        """An empty state: the first step fills each level's hidden map with zeros (the map
        sizes depend on the frame size)."""
        device = device or self.cls_head.cls_logits.weight.device
        if self.cells is None:
            return {}
        names = [f"h{i}" for i in range(len(self.strides))]
        if self.cfg.temporal == "convlstm":
            names += [f"c{i}" for i in range(len(self.strides))]
        return {n: torch.zeros(0, device=device) for n in names}

    def run(
        self,
        clip: torch.Tensor,
        state: State | None = None,
        *,
        memory: bool = True,
        features: bool = False,
    ) -> tuple[Outputs, State]:
        """``(B, T, 3, H, W)`` from ``state`` (``None``: a fresh one) -> outputs with a ``T``
        axis, and the state after the last frame.

        ``memory=False`` skips the recurrent cells: the outputs are the per-frame network's
        (what the cells give while their gates are 0) and the state is returned empty. Training
        uses it for its first ``detect.memory_warmup`` share of steps. ``features=True`` adds
        ``"features"``: the finest fused map ``(B, T, D, H/8, W/8)`` the heads see (FPN plus
        memory), for :meth:`box_embeddings`."""
        self._check(clip, 5, "clip")
        b, t = clip.shape[:2]
        feats = self.backbone(clip.flatten(0, 1))
        pyramid = self.fpn(OrderedDict((str(s), feats[s]) for s in self.strides))
        levels = list(pyramid.values())  # (B*T, D, h_l, w_l), finest first
        new: State = {}
        before: list[torch.Tensor] = []  # per level, the hidden state before each frame
        fresh = True
        if self.cells is not None and memory:
            state = state if state is not None else self.init_state(b, clip.device)
            fresh = not state["h0"].numel()
            for i, cell in enumerate(self.cells):
                x = levels[i].view(b, t, *levels[i].shape[1:])
                h = state[f"h{i}"] if state[f"h{i}"].numel() else torch.zeros_like(x[:, 0])
                c = None
                if self.cfg.temporal == "convlstm":
                    c = state[f"c{i}"] if state[f"c{i}"].numel() else torch.zeros_like(h)
                outs, prior = [], []
                for k in range(t):
                    prior.append(h)
                    if c is None:
                        h = cell(x[:, k], h)
                    else:
                        h, c = cell(x[:, k], h, c)
                    outs.append(x[:, k] + self.gates[i].view(1, -1, 1, 1) * h)
                levels[i] = torch.stack(outs, 1).flatten(0, 1)
                before.append(torch.stack(prior, 1).flatten(0, 1))
                new[f"h{i}"] = h
                if c is not None:
                    new[f"c{i}"] = c
        cls_logits = self.cls_head(levels)  # (B*T, A, K)
        bbox_regression, bbox_ctrness = self.reg_head(levels)
        out = {
            "cls_logits": cls_logits,
            "bbox_regression": bbox_regression,
            "bbox_ctrness": bbox_ctrness,
        }
        if features:
            out["features"] = levels[0]
        if self.forecast is not None and before:
            fc = self.forecast(before)
            out.update(zip(("forecast_" + k for k in FIELDS), fc, strict=True))
            valid = torch.ones(b, t, dtype=torch.bool, device=clip.device)
            valid[:, 0] = not fresh
            out["forecast_valid"] = valid.flatten()
        return {k: v.view(b, t, *v.shape[1:]) for k, v in out.items()}, new

    def box_embeddings(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """One frame's fused map ``(D, h, w)`` (``run(..., features=True)``) and ``(n, 4)``
        xyxy boxes in the model's input pixels -> ``(n, 4 * D)``: the map pooled over each box
        on a 2x2 grid (RoIAlign), for re-identification (:mod:`sora.inference.reid` scales
        the rows to unit length)."""
        if not len(boxes):
            return features.new_zeros(0, 4 * features.shape[0])
        stride = self.strides[0]
        return roi_align(
            features[None].float(), [boxes.float()], 2, spatial_scale=1 / stride, aligned=True
        ).flatten(1)

    # -- decoding ------------------------------------------------------------------------
    def _candidates(self, logits, reg, ctr, anchors, height, width, thresh, top=1000):
        """One frame's ``(A, K)``, ``(A, 4)``, ``(A, 1)`` -> boxes, scores, labels above
        ``thresh`` (the ``top`` best), after NMS (at most ``detect.max_detections``)."""
        cfg = self.cfg
        flat = torch.sqrt(torch.sigmoid(logits.float()) * torch.sigmoid(ctr.float())).flatten()
        keep = torch.nonzero(flat > thresh).flatten()
        if keep.numel() > top:
            keep = keep[flat[keep].topk(top).indices]
        idx, labels = keep // self.num_classes, keep % self.num_classes
        boxes = self.box_coder.decode(reg[idx].float(), anchors[idx])
        boxes = clip_boxes_to_image(boxes, (height, width))
        # with sides below 0 a point's box can be empty or turned over: never a detection
        real = torch.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).flatten()
        boxes, keep, labels = boxes[real], keep[real], labels[real]
        groups = torch.zeros_like(labels) if cfg.agnostic_nms else labels
        kept = batched_nms(boxes, flat[keep], groups, cfg.nms_iou)[: cfg.max_detections]
        return boxes[kept], flat[keep][kept], labels[kept]

    @torch.no_grad()
    def detect(
        self, out: Outputs, height: int, width: int, score_thresh: float | None = None
    ) -> list[dict]:
        """Per-frame outputs (``(N, A, ...)``, no ``T`` axis) -> N dicts of ``boxes (n, 4)``
        xyxy pixels, ``scores (n,)``, ``labels (n,)`` 0-based, ``forecast (n,)`` bool, after
        NMS (class-wise, or over all classes with ``detect.agnostic_nms``).

        The score is ``sqrt(sigmoid(cls) * sigmoid(ctrness))`` as in FCOS. With a forecast,
        its boxes that overlap no detection of the frame by more than :data:`FORECAST_OVERLAP`
        (of their class, or of any with ``agnostic_nms``) are added, marked ``forecast``, with
        their score times ``detect.forecast_score``: the objects the memory carries while
        nothing of them is seen. With ``detect.forecast_class`` the main detections' class
        scores lean on the memory's class too (:func:`memory_class`).
        """
        cfg = self.cfg
        thresh = cfg.score_thresh if score_thresh is None else score_thresh
        anchors, _, _ = self.anchors(height, width, out["cls_logits"].device)
        forecast = "forecast_valid" in out
        results = []
        for n in range(out["cls_logits"].shape[0]):
            past = forecast and bool(out["forecast_valid"][n])  # one host sync per frame
            logits = out["cls_logits"][n]
            if past and cfg.forecast_class > 0:
                logits = memory_class(logits, out["forecast_cls_logits"][n], cfg.forecast_class)
            boxes, scores, labels = self._candidates(
                logits, *(out[k][n] for k in FIELDS[1:]), anchors, height, width, thresh
            )
            from_memory = torch.zeros_like(labels, dtype=torch.bool)
            if past and cfg.forecast_score > 0:
                fb, fs, fl = self._candidates(
                    *(out["forecast_" + k][n] for k in FIELDS),
                    anchors,
                    height,
                    width,
                    thresh / cfg.forecast_score,
                    top=4 * cfg.max_detections,  # they only fill in: fewer suffice
                )
                if len(fb) and len(boxes):
                    overlap = box_iou(fb, boxes)
                    if not cfg.agnostic_nms:
                        overlap = overlap * (fl[:, None] == labels[None])
                    new = overlap.max(1).values <= FORECAST_OVERLAP
                    fb, fs, fl = fb[new], fs[new], fl[new]
                boxes = torch.cat([boxes, fb])
                scores = torch.cat([scores, fs * cfg.forecast_score])
                labels = torch.cat([labels, fl])
                from_memory = torch.cat([from_memory, torch.ones_like(fl, dtype=torch.bool)])
                order = scores.argsort(descending=True)
                boxes, scores, labels = boxes[order], scores[order], labels[order]
                from_memory = from_memory[order]
            m = cfg.max_detections
            results.append(
                {
                    "boxes": boxes[:m],
                    "scores": scores[:m],
                    "labels": labels[:m],
                    "forecast": from_memory[:m],
                }
            )
        return results


def memory_class(logits: torch.Tensor, memory: torch.Tensor, weight: float) -> torch.Tensor:
    """The main head's class logits ``(A, K)`` with the class the memory expects at each
    point blended in: the forecast's logits ``(A, K)`` give a split over the classes
    (``q_k = p_k / sum_j p_j`` of their sigmoids), which times the main head's own best
    class probability ``max_j m_j`` is what the memory would score. The result is the
    geometric blend ``m_k^(1 - w) (q_k max_j m_j)^w``, returned as logits ``(A, K)``:
    ``w = 0`` gives ``logits`` back; the best class's score is never raised above
    ``max_j m_j``, so the memory can re-rank the classes of what the frame shows but not make
    an object where the frame has none."""
    log_main = nn.functional.logsigmoid(logits.float())
    log_mem = nn.functional.logsigmoid(memory.float())
    split = log_mem - torch.logsumexp(log_mem, -1, keepdim=True)
    blended = (1 - weight) * log_main + weight * (split + log_main.max(-1, keepdim=True).values)
    blended = blended.clamp(max=-1e-7)  # a probability below 1: finite logits
    return (blended - torch.log(-torch.expm1(blended))).to(logits.dtype)


# -- training targets and loss ---------------------------------------------------------------

#: Frames per chunk of :func:`assign_frames` are capped so that ``frames x A x M`` stays under
#: this (the ``(n, A, M, 4)`` side distances then take at most 64 MB).
ASSIGN_ELEMENTS = 1 << 22


def pad_targets(targets: list[dict], device=None) -> dict[str, torch.Tensor]:
    """N frames' targets (``boxes`` ``(M_i, 4)``, ``labels`` ``(M_i,)``, ``ignore``) as
    ``(N, M, ...)`` tensors padded to the largest ``M``, with ``real`` ``(N, M)`` marking the
    boxes that are there; box ``m`` of frame ``n`` keeps its index ``m``. The padding happens
    where the targets are (no copy back to the host when they are on a GPU), then the result
    moves to ``device``."""
    from torch.nn.utils.rnn import pad_sequence

    if device is None and targets:
        device = targets[0]["boxes"].device
    sizes = [len(t["boxes"]) for t in targets]
    m = max(sizes, default=0)

    def pad(key: str, dtype, shape) -> torch.Tensor:
        rows = [t[key].detach().to(dtype=dtype).reshape(-1, *shape) for t in targets]
        if not rows:
            return torch.zeros(0, m, *shape, dtype=dtype, device=device)
        return pad_sequence(rows, batch_first=True).to(device)

    real = torch.arange(m)[None] < torch.tensor(sizes, dtype=torch.long).reshape(-1, 1)
    return {
        "boxes": pad("boxes", torch.float32, (4,)),
        "labels": pad("labels", torch.long, ()),
        "ignore": pad("ignore", torch.bool, ()),
        "real": real.to(device),
    }


def assign_frames(
    anchors: torch.Tensor,
    strides: torch.Tensor,
    counts: list[int],
    targets: dict[str, torch.Tensor],
    radius: float,
    level_scale: float = 8.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS target assignment for N frames at once (:func:`pad_targets`), without a loop
    over frames or boxes, so without host syncs on a GPU.

    An anchor point is a positive for a box when it lies inside the box, within ``radius``
    strides of its centre (centre sampling), and the box's largest side distance from it is in
    the level's range ``(k s / 2, k s]`` (``k = level_scale``; FCOS's 800-pixel inputs use
    ``k = 8``; open-ended on the first and last level). Among several boxes, the smallest
    wins (the first of equal ones). A box that no point matches (tiny or thin) is given the
    points within one stride of its centre (up to 2 x 2, or the nearest one) at the level
    whose range fits it; they can be outside it by up to a stride, which the head reaches
    with ``detect.min_side = -1``; a point two such boxes want goes to the first. Ignored
    boxes (``conf == 0``) get no positives, and the points inside them that are no positive
    are left out of the loss.

    Returns, each ``(N, A)``:
        matched: index of the box per point, -1 for background.
        forced: bool, positives given by the nearest-points rule.
        valid: bool, points that take part in the classification loss.
    """
    n, m = targets["real"].shape
    a = anchors.shape[0]
    if m and n * a * m > ASSIGN_ELEMENTS and n > 1:
        step = max(1, ASSIGN_ELEMENTS // (a * m))
        parts = [
            assign_frames(
                anchors,
                strides,
                counts,
                {k: v[i : i + step] for k, v in targets.items()},
                radius,
                level_scale,
            )
            for i in range(0, n, step)
        ]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]
    device = anchors.device
    matched = torch.full((n, a), -1, dtype=torch.long, device=device)
    if m == 0:
        no = torch.zeros(n, a, dtype=torch.bool, device=device)
        return matched, no, ~no
    boxes, ignore, real = targets["boxes"], targets["ignore"], targets["real"]
    usable = real & ~ignore  # (N, M)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
    gt_centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # (N, M, 2)
    x, y = centres[None, :, 0, None], centres[None, :, 1, None]  # (1, A, 1)
    ltrb = torch.stack(
        [
            x - boxes[:, None, :, 0],
            y - boxes[:, None, :, 1],
            boxes[:, None, :, 2] - x,
            boxes[:, None, :, 3] - y,
        ],
        dim=3,
    )  # (N, A, M, 4)
    inside = ltrb.min(3).values > 0  # (N, A, M)
    dist = (centres[None, :, None] - gt_centres[:, None]).abs().max(3).values  # (N, A, M)
    near = dist < radius * strides[None, :, None]
    lower = strides * level_scale / 2
    lower[: counts[0]] = 0
    upper = strides * level_scale
    upper[-counts[-1] :] = math.inf
    extent = ltrb.max(3).values
    fits = (extent > lower[None, :, None]) & (extent <= upper[None, :, None])
    ok = inside & near & fits & usable[:, None]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (N, M)
    smallest = torch.where(ok, area[:, None], math.inf).argmin(2)  # (N, A), first of ties
    matched = torch.where(ok.any(2), smallest, matched)
    # boxes left without a positive: the points within a stride of the centre at the level
    # that fits their size (2 x 2 of them, or the one it sits on; the points on either side
    # of a box between them both learn it, so both predict the same box, which NMS merges),
    # or the nearest point there when none is that close
    has = (matched[..., None] == torch.arange(m, device=device)).any(1)  # (N, M): won a point
    need = usable & ~has
    level_of = torch.repeat_interleave(
        torch.arange(len(counts), device=device), torch.tensor(counts, device=device)
    )  # (A,)
    starts = [0, *torch.tensor(counts).cumsum(0).tolist()[:-1]]
    level_strides = strides[starts]  # (L,)
    half = (boxes[..., 2:] - boxes[..., :2]).max(2).values / 2  # (N, M)
    fit = half[..., None] <= level_scale * level_strides  # (N, M, L)
    level = torch.where(fit.any(2), fit.int().argmax(2), len(counts) - 1)  # (N, M)
    at_level = level_of[None, :, None] == level[:, None]  # (N, A, M)
    want = at_level & (dist < strides[None, :, None]) & need[:, None]
    lonely = need & ~want.any(1)  # (N, M): no point that close
    nearest = torch.where(at_level, dist, math.inf).argmin(1)  # (N, M)
    want |= torch.zeros_like(want).scatter_(1, nearest[:, None], lonely[:, None])
    first = torch.where(want, torch.arange(m, device=device), m).min(2).values  # (N, A)
    take = (first < m) & (matched < 0)
    matched = torch.where(take, first, matched)
    # points inside an ignored box are not negatives
    in_ignored = (inside & (real & ignore)[:, None]).any(2)
    return matched, take, ~(in_ignored & (matched < 0))


def assign(
    anchors: torch.Tensor,
    strides: torch.Tensor,
    counts: list[int],
    target: dict,
    radius: float,
    level_scale: float = 8.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`assign_frames` for one frame's target (``boxes``, ``labels``, ``ignore``):
    ``matched``, ``forced`` and ``valid``, each ``(A,)``."""
    padded = pad_targets([target], anchors.device)
    matched, forced, valid = assign_frames(anchors, strides, counts, padded, radius, level_scale)
    return matched[0], forced[0], valid[0]


def assign_all(model: SoraDet, padded: dict[str, torch.Tensor], height: int, width: int):
    """:func:`assign_frames` of N frames' padded targets (:func:`pad_targets`) with the
    model's anchors and options: ``(matched, forced, valid)``, each ``(N, A)``."""
    anchors, strides, counts = model.anchors(height, width, padded["boxes"].device)
    cfg = model.cfg
    return assign_frames(anchors, strides, counts, padded, cfg.center_sampling, cfg.level_scale)


def detection_loss(
    model: SoraDet,
    out: Outputs,
    targets: list[dict] | dict[str, torch.Tensor],
    height: int,
    width: int,
    assigned: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """FCOS losses over N frames: ``out`` with a leading ``N`` axis (``(N, A, ...)``) and N
    target dicts (``boxes`` xyxy pixels, ``labels`` 0-based, ``ignore``), or the same padded
    (:func:`pad_targets`); ``assigned``: their :func:`assign_all`, when already computed.

    classification: ``torchvision.ops.sigmoid_focal_loss``; boxes:
    ``torchvision.ops.generalized_box_iou_loss`` on the decoded positives; centre-ness:
    binary cross-entropy. Each is summed and divided by the number of positives.
    """
    logits, reg, ctr = out["cls_logits"], out["bbox_regression"], out["bbox_ctrness"]
    device = logits.device
    padded = pad_targets(targets, device) if isinstance(targets, list) else targets
    anchors, _, _ = model.anchors(height, width, device)
    if assigned is None:
        assigned = assign_all(model, padded, height, width)
    matched, forced, valid = assigned  # (N, A) each
    pos_idx = torch.nonzero(matched >= 0)  # (P, 2): frame, point, in the order of frames
    fn, pa = pos_idx[:, 0], pos_idx[:, 1]
    box_of = matched[fn, pa]
    cls_targets = torch.zeros_like(logits)
    cls_targets[fn, pa, padded["labels"][fn, box_of]] = 1.0
    num_pos = max(1, pos_idx.shape[0])
    loss_cls = sigmoid_focal_loss(logits[valid], cls_targets[valid], reduction="sum") / num_pos
    if pos_idx.shape[0] == 0:
        zero = reg.sum() * 0 + ctr.sum() * 0
        return {"cls": loss_cls, "box": zero, "ctr": zero, "loss": loss_cls + zero}
    gt = padded["boxes"][fn, box_of]
    ref = anchors[pa]
    pred = model.box_coder.decode(reg[fn, pa].float(), ref)
    loss_box = generalized_box_iou_loss(pred, gt, reduction="sum") / num_pos
    # centre-ness target from the distances of each positive point to its box's sides
    c = (ref[:, :2] + ref[:, 2:]) / 2
    lr = torch.stack([c[:, 0] - gt[:, 0], gt[:, 2] - c[:, 0]], 1).clamp_min(0)
    tb = torch.stack([c[:, 1] - gt[:, 1], gt[:, 3] - c[:, 1]], 1).clamp_min(0)
    ratio = (lr.min(1).values / lr.max(1).values.clamp_min(1e-6)) * (
        tb.min(1).values / tb.max(1).values.clamp_min(1e-6)
    )
    # the nearest-points positives (maybe outside the box): sqrt((1 - dx)(1 - dy)), d the
    # distance from the box's centre in strides (< 1): highest at the point nearest the centre
    near = (1 - (c - (gt[:, :2] + gt[:, 2:]) / 2).abs() / (ref[:, 2:] - ref[:, :2])).clamp(0, 1)
    ctr_target = torch.where(forced[fn, pa], near.prod(1).sqrt(), ratio.sqrt())
    loss_ctr = (
        nn.functional.binary_cross_entropy_with_logits(
            ctr[fn, pa, 0].float(), ctr_target, reduction="sum"
        )
        / num_pos
    )
    return {
        "cls": loss_cls,
        "box": loss_box,
        "ctr": loss_ctr,
        "loss": loss_cls + loss_box + loss_ctr,
    }


def video_detection_loss(
    model: SoraDet, out: Outputs, targets: list[dict], height: int, width: int
) -> dict[str, torch.Tensor]:
    """:func:`detection_loss` of the outputs of N frames (``(N, A, ...)``: the clips' ``B``
    and ``T`` axes flattened), plus, when there is a forecast, ``detect.forecast`` times the
    same loss of the forecast on the frames that had a state before them (``forecast``).
    The targets are padded and assigned once, for both.
    """
    padded = pad_targets(targets, out["cls_logits"].device)
    assigned = assign_all(model, padded, height, width)
    losses = detection_loss(model, {k: out[k] for k in FIELDS}, padded, height, width, assigned)
    if "forecast_valid" in out:
        keep = out["forecast_valid"]  # (N,) bool
        if bool(keep.any()):
            fc = {k: out["forecast_" + k][keep] for k in FIELDS}
            later = {k: v[keep] for k, v in padded.items()}
            their = tuple(x[keep] for x in assigned)
            part = detection_loss(model, fc, later, height, width, their)["loss"]
            losses["forecast"] = part
            losses["loss"] = losses["loss"] + model.cfg.forecast * part
    return losses


def build_detector(model: ModelConfig, cfg: DetectConfig) -> SoraDet:
    return SoraDet(model, cfg)
