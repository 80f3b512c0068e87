"""SoraAnomaly: anomaly scores learned from normal footage only, per grid cell and per frame.

Shapes (B batch, T frames, G = max(strides) the cell size, h = H/G, w = W/G cells,
P = 4 the pixel stride of the predicted frame, D = ``anomaly.dim``)::

    clip      (B, T, 3, H, W)      float, normalized
    input     per frame: RGB, + its difference to the previous frame and the block-matching
              flow (``motion``) -> (B*T, 3 [+5], H, W)
    backbone  -> {s: (B*T, C_s, H/s, W/s)} for s in strides; each level is projected to D
              channels, average-pooled to the cell grid and mixed -> feature (B, T, D, h, w)
    temporal  a ConvGRU over the cell grid (``convgru``) -> state (B, D, h, w), or identity
    decoder   state upsampled to stride P -> prediction (B, T, 3, H/P, W/P) of the **next**
              frame (its P x P average), as this frame plus a predicted change; or, with
              ``target: current``, this frame rebuilt from the feature alone (autoencoder)

Three heat maps, each standardized per cell with its mean and spread on normal frames (the
held-out ones; for the dwell counts, which learn nothing, every training frame):

* **prediction error**: the squared error of the prediction made one frame earlier, averaged
  over the cell. What moves as nobody moved in training (running, walking against the flow,
  a thrown object, a vehicle) is not predicted.
* **persistence** (``persist`` > 0): each cell's mean absolute difference from the scene's
  normal background (``background`` ``(3, H/P, W/P)``, the per-pixel median of the normal
  training frames), averaged causally over ``persist`` frames. Normal objects pass a cell;
  what stays (someone loitering or fallen, a crowd gathering) is predicted well, frame to
  frame, but stays on this map.
* **dwell** (``dwell`` > 0): how many frames in a row each cell has been occupied, a cell
  being occupied while its difference from the background (as above, this frame only) is
  over ``dwell_level``, the ``dwell`` quantile of that difference on held-out normal
  frames. A walker occupies a cell for a second or two; what stays keeps counting, so it
  stands out from normal traffic the longer it stays, where the persistence map levels off
  at a walker's level.

``cells`` ``(B, T, h, w)`` is their per-cell maximum; ``score`` ``(B, T)`` the maximum over
cells, smoothed causally over ``smooth`` frames. The first frame of a stream scores 0 (there
is nothing to compare it with yet).

Streaming: ``state = model.init_state(B)``, then ``out, state = model.step(frame, state)``; the
state holds the previous frame, the recurrent map, the last prediction, the persistence map,
the dwell counts and the smoothed score, so its size is constant and ``step`` equals the
offline forward frame by frame (tested).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sora.config import AnomalyConfig, ModelConfig
from sora.models.backbones import build_backbone
from sora.models.soradet import ConvGRUCell
from sora.models.soranet import block_flow
from sora.models.streaming import Outputs, RunStreaming, State

PIXEL_STRIDE = 4


def smoothing_rate(frames: float) -> float:
    """The weight of the newest value in an exponential average over ``frames`` frames (1:
    no smoothing)."""
    return 1.0 if frames <= 1 else 1 - math.exp(-1 / frames)


def ema_over_time(x: torch.Tensor, rate: float, start: torch.Tensor) -> torch.Tensor:
    """Causal exponential average along the time axis of ``x`` ``(B, T, ...)``: ``y_t =
    y_{t-1} + rate * (x_t - y_{t-1})`` from ``y_{-1} = start`` ``(B, ...)`` -> ``(B, T, ...)``."""
    y, out = start, []
    for i in range(x.shape[1]):
        y = y + rate * (x[:, i] - y)
        out.append(y)
    return torch.stack(out, 1)


def dwell_counts(occupied: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """Bool ``(B, T, h, w)`` -> how many frames in a row each cell has been occupied, up to
    and including each frame ``(B, T, h, w)``, counting on from ``start`` ``(B, h, w)``
    (``None``: from 0)."""
    run = torch.zeros_like(occupied[:, 0], dtype=torch.float) if start is None else start
    counts = []
    for i in range(occupied.shape[1]):
        run = (run + 1) * occupied[:, i]
        counts.append(run)
    return torch.stack(counts, 1)


class SoraAnomaly(RunStreaming, nn.Module):
    """Multi-scale CNN features per cell, a ConvGRU over time and a next-frame decoder. See
    the module docstring for the shapes."""

    def __init__(self, model: ModelConfig, cfg: AnomalyConfig):
        super().__init__()
        if cfg.temporal not in ("convgru", "none"):
            raise ValueError(f"anomaly.temporal must be convgru or none, got {cfg.temporal!r}")
        if cfg.target not in ("next", "current"):
            raise ValueError(f"anomaly.target must be next or current, got {cfg.target!r}")
        if len(cfg.size) != 2:
            raise ValueError(f"anomaly.size must be [height, width], got {cfg.size}")
        if not 0 <= cfg.dwell < 1:
            raise ValueError(f"anomaly.dwell must be in [0, 1), got {cfg.dwell}")
        if not cfg.false_alarms_per_hour >= 0:
            raise ValueError(
                f"anomaly.false_alarms_per_hour must be >= 0, got {cfg.false_alarms_per_hour}"
            )
        self.cfg = cfg
        self.strides = tuple(sorted(cfg.strides))
        self.cell = max(self.strides)
        if self.cell < PIXEL_STRIDE or any(v % self.cell for v in cfg.size):
            raise ValueError(
                f"anomaly.size {cfg.size} must be a multiple of the largest stride {self.cell}"
            )
        self.grid = (cfg.size[0] // self.cell, cfg.size[1] // self.cell)
        in_ch = 3 + 5 * cfg.motion
        self.backbone = build_backbone(
            model.backbone,
            weights=model.backbone_weights,
            widths=model.widths,
            strides=self.strides,
            in_channels=in_ch,
        )
        d = cfg.dim
        self.proj = nn.ModuleList(nn.Conv2d(self.backbone.channels[s], d, 1) for s in self.strides)
        self.mix = nn.Sequential(
            nn.Conv2d(d * len(self.strides), d, 3, padding=1), nn.GroupNorm(4, d), nn.ReLU()
        )
        self.rnn = ConvGRUCell(d) if cfg.temporal == "convgru" else None
        skip = 6 if cfg.target == "next" else 0  # this frame and its change, at stride P
        self.decoder = nn.Sequential(
            nn.Conv2d(d + skip, d, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(d, d, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(d, 3, 3, padding=1),
        )
        h, w = self.grid
        # per cell: mean and spread of the prediction error on normal frames
        self.register_buffer("calibration", torch.stack([torch.zeros(h, w), torch.ones(h, w)]))
        # the normal background at stride P, and the persistence map's mean and spread
        size = (cfg.size[0] // PIXEL_STRIDE, cfg.size[1] // PIXEL_STRIDE)
        self.register_buffer("background", torch.zeros(3, *size))
        self.register_buffer(
            "persist_calibration", torch.stack([torch.zeros(h, w), torch.ones(h, w)])
        )
        if cfg.dwell > 0:  # the occupancy level that counts, and the counts' mean and spread
            self.register_buffer("dwell_level", torch.tensor(float("inf")))
            self.register_buffer(
                "dwell_calibration", torch.stack([torch.zeros(h, w), torch.ones(h, w)])
            )
        # the frame score the val (normal) frames reached: the default alert threshold
        self.register_buffer("threshold", torch.tensor(float("inf")))

    # -- pieces ----------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, rank: int, name: str) -> None:
        expected = "(B, T, 3, H, W)" if rank == 5 else "(B, 3, H, W)"
        if x.dim() != rank or x.shape[-3] != 3 or list(x.shape[-2:]) != list(self.cfg.size):
            raise ValueError(
                f"{name} must have shape {expected} with H, W = {self.cfg.size} "
                f"(anomaly.size), got {tuple(x.shape)}"
            )

    def small(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> the prediction target ``(N, 3, H/P, W/P)``."""
        return F.avg_pool2d(frames, PIXEL_STRIDE)

    def features(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, 3, H, W)`` and their previous ones -> cell features ``(N, D, h, w)``."""
        x = cur
        if self.cfg.motion:
            x = torch.cat([cur, cur - prev, block_flow(prev, cur) / 4], 1)
        maps = self.backbone(x)
        parts = [
            F.adaptive_avg_pool2d(p(maps[s]), self.grid)
            for p, s in zip(self.proj, self.strides, strict=True)
        ]
        return self.mix(torch.cat(parts, 1))

    def decode(self, state: torch.Tensor, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """State ``(N, D, h, w)`` -> prediction ``(N, 3, H/P, W/P)`` (see ``target``)."""
        small = self.small(cur)
        up = F.interpolate(state, size=small.shape[-2:], mode="bilinear", align_corners=False)
        if self.cfg.target == "next":
            return small + self.decoder(torch.cat([up, small, small - self.small(prev)], 1))
        return self.decoder(up)

    def occupancy(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(N, 3, H, W)`` -> mean absolute difference from the background per cell
        ``(N, h, w)``."""
        diff = (self.small(frames) - self.background).abs().mean(1, keepdim=True)
        return F.adaptive_avg_pool2d(diff, self.grid)[:, 0]

    def cell_error(self, pred: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """Squared error of ``pred`` against ``frame`` ``(N, 3, H, W)``, per cell ``(N, h, w)``."""
        err = (pred - self.small(frame)).pow(2).mean(1, keepdim=True)
        return F.adaptive_avg_pool2d(err, self.grid)[:, 0]

    # -- the network -------------------------------------------------------------------------
    def init_state(self, batch: int = 1, device=None) -> State:
        """An empty state; the first step fills it."""
        device = device or self.threshold.device
        keys = ("prev", "h", "pred", "occ", "run", "ema", "seen")
        return {k: torch.zeros(0, device=device) for k in keys}

    def run(self, clip: torch.Tensor, state: State | None = None) -> tuple[Outputs, State]:
        """``(B, T, 3, H, W)`` from ``state`` -> outputs with a ``T`` axis and the new state.

        Outputs: ``pred`` ``(B, T, 3, H/P, W/P)`` (training target: see ``target``),
        ``pred_error``, ``persistence`` and ``dwell`` ``(B, T, h, w)`` raw (the last two
        zeros with ``persist: 0`` / ``dwell: 0``), ``cells`` ``(B, T, h, w)`` the calibrated
        heat map, ``score`` ``(B, T)`` the smoothed frame score.
        """
        self._check(clip, 5, "clip")
        b, t = clip.shape[:2]
        state = state if state is not None else self.init_state(b, clip.device)
        first = state["prev"].numel() == 0
        prev_frame = clip[:, 0] if first else state["prev"]
        prevs = torch.cat([prev_frame[:, None], clip[:, :-1]], 1)
        feats = self.features(prevs.flatten(0, 1), clip.flatten(0, 1))
        feats = feats.view(b, t, *feats.shape[1:])
        h = state["h"] if state["h"].numel() else torch.zeros_like(feats[:, 0])
        hidden = []
        for i in range(t):
            h = self.rnn(feats[:, i], h) if self.rnn is not None else feats[:, i]
            hidden.append(h)
        hidden = torch.stack(hidden, 1)
        pred = self.decode(hidden.flatten(0, 1), clip.flatten(0, 1), prevs.flatten(0, 1))
        pred = pred.view(b, t, *pred.shape[1:])
        # the prediction each frame is judged against: the one made a frame earlier (next),
        # or its own reconstruction (current)
        if self.cfg.target == "next":
            last = pred[:, :1] if first else state["pred"][:, None]
            judged = torch.cat([last, pred[:, :-1]], 1)
        else:
            judged = pred
        err = self.cell_error(judged.flatten(0, 1), clip.flatten(0, 1)).view(b, t, *self.grid)
        cells = (err - self.calibration[0]) / self.calibration[1]
        occ, run = state["occ"], state["run"]
        if self.cfg.persist > 0 or self.cfg.dwell > 0:
            occupancy = self.occupancy(clip.flatten(0, 1)).view(b, t, *self.grid)
        if self.cfg.persist > 0:
            beta = 1 - math.exp(-1 / self.cfg.persist)
            persistence = ema_over_time(occupancy, beta, occupancy[:, 0] if first else occ)
            occ = persistence[:, -1]
            stays = (persistence - self.persist_calibration[0]) / self.persist_calibration[1]
            cells = torch.maximum(cells, stays)
        else:
            persistence = torch.zeros_like(err)
        if self.cfg.dwell > 0:
            dwell = self.dwell_counts(occupancy, None if first else run)
            run = dwell[:, -1]
            cells = torch.maximum(
                cells, (dwell - self.dwell_calibration[0]) / self.dwell_calibration[1]
            )
        else:
            dwell = torch.zeros_like(err)
        seen = torch.zeros(b, device=clip.device) if first else state["seen"]
        steps = seen[:, None] + torch.arange(t, device=clip.device)  # frames seen before each
        cells = cells * (steps > 0)[..., None, None]
        raw = cells.flatten(2).amax(-1)  # (B, T)
        # the smoothing starts at the stream's first frame (which scores 0)
        score = ema_over_time(
            raw, smoothing_rate(self.cfg.smooth), raw[:, 0] if first else state["ema"]
        )
        out = {
            "pred": pred,
            "pred_error": err,
            "persistence": persistence,
            "dwell": dwell,
            "cells": cells,
            "score": score,
        }
        new = {
            "prev": clip[:, -1],
            "h": h,
            "pred": pred[:, -1],
            "occ": occ,
            "run": run,
            "ema": score[:, -1],
            "seen": seen + t,
        }
        return out, new

    # -- calibration on normal frames ----------------------------------------------------------
    @torch.no_grad()
    def set_background(self, frames: torch.Tensor) -> None:
        """The normal background: the per-pixel median of normal frames ``(N, 3, H, W)``
        (normalized), at stride P. Objects that pass do not survive the median."""
        self.background.copy_(self.small(frames).median(0).values)

    def dwell_counts(
        self, occupancy: torch.Tensor, start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`occupancy` ``(B, T, h, w)`` -> the dwell counts ``(B, T, h, w)``: frames in a
        row over ``dwell_level`` (:func:`dwell_counts`, from ``start``)."""
        return dwell_counts(occupancy > self.dwell_level, start)

    @torch.no_grad()
    def set_dwell_level(self, occupancy: torch.Tensor) -> None:
        """The occupancy over which a cell counts as occupied: the ``dwell`` quantile of
        :meth:`occupancy` ``(N, h, w)`` on normal frames (of at most a million values, evenly
        spread)."""
        x = occupancy.flatten().float()
        x = x[:: max(1, x.numel() // 1_000_000)]
        self.dwell_level.fill_(float(torch.quantile(x, self.cfg.dwell)))

    @torch.no_grad()
    def set_calibration(
        self,
        err: torch.Tensor,
        persistence: torch.Tensor | None = None,
        dwell: torch.Tensor | None = None,
    ) -> None:
        """Per-cell mean and spread of the prediction error, the persistence map and the
        dwell counts ``(N, h, w)`` on normal frames; a spread is at least a tenth of the mean
        spread over cells (cells where nothing ever moves would otherwise turn sensor noise
        into alarms)."""
        pairs = [(self.calibration, err), (self.persist_calibration, persistence)]
        if self.cfg.dwell > 0:
            pairs.append((self.dwell_calibration, dwell))
        for buffer, x in pairs:
            if x is None:
                continue
            mu = x.mean(0)
            sd = x.std(0) if x.shape[0] > 1 else torch.ones_like(mu)
            buffer.copy_(torch.stack([mu, sd.clamp_min(0.1 * float(sd.mean()) + 1e-8)]))

    @torch.no_grad()
    def set_threshold(self, value: float) -> None:
        """The alert threshold, a frame score (see :func:`return_level`)."""
        self.threshold.fill_(float(value))


#: fewer whole blocks of normal footage than this and :func:`return_level` is the highest
#: score seen: a fit to so few maxima says nothing about the tail
MIN_BLOCKS = 5


def return_level(scores: list[torch.Tensor], block: int, period: float) -> float:
    """The frame score that normal footage is expected to exceed once every ``period`` blocks
    of ``block`` frames.

    ``scores``: the ``(T,)`` frame scores of each normal video, cut into whole blocks of
    ``block`` frames; a Gumbel distribution fitted to the block maxima by the method of
    moments (scale ``s * sqrt(6) / pi``, location ``mean - 0.5772 * scale``) gives the level
    with exceedance probability ``1 / period`` per block. When the footage is shorter than a
    period, never below the highest score seen (a level it already crossed is too low); that
    score alone with fewer than :data:`MIN_BLOCKS` blocks or ``period <= 1``. ``inf`` without
    any score.
    """
    seen = [s for s in scores if s.numel()]
    if not seen:
        return float("inf")
    top = max(float(s.max()) for s in seen)
    maxima = [
        float(s[i : i + block].max()) for s in seen for i in range(0, len(s) - block + 1, block)
    ]
    if len(maxima) < MIN_BLOCKS or period <= 1:
        return top
    m = torch.tensor(maxima, dtype=torch.float64)
    scale = float(m.std()) * math.sqrt(6) / math.pi
    loc = float(m.mean()) - 0.5772156649 * scale
    level = loc - scale * math.log(-math.log1p(-1 / period))
    return max(top, level) if len(maxima) < period else level


def build_anomaly(model: ModelConfig, cfg: AnomalyConfig) -> SoraAnomaly:
    return SoraAnomaly(model, cfg)
