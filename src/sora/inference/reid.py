"""Re-identification: an object that comes back after the tracker has lost it keeps its id.

Motion trackers (SORT, ByteTrack, OC-SORT, BoT-SORT) start a new id when an object comes
back after a gap longer than their lost-track buffer, or after its Kalman prediction has
drifted off it: it left the frame and came back, or it was hidden for a while. On
MotionShapes-Det that is every ID switch on ground-truth boxes (docs/track.md). ``trackers``
2.6.1 takes no appearance input, so Sora adds it **after** the tracker, through its outputs
alone: :class:`ReIdentifier` keeps one appearance embedding per output id, and when the
tracker confirms a new id, matches it (Hungarian, on cosine distance) to the ids that
disappeared less than ``window`` seconds ago, within ``max_distance``, whose last box was
less than ``max_shift`` of the frame's diagonal away. Classes are not required to agree
(``same_class=False``, as the tracker itself is class-agnostic): a detector's class for an
object flips from frame to frame, and requiring it lost 4.3 IDF1 points on average on
MotionShapes-Det's val split (docs/track.md). A matched new id is
reported under the old one for as long as it lives.

Embeddings (``(n, E)``, unit length), from :class:`~sora.inference.detector.Detector`:

* ``"colour"``: :func:`colour_embeddings`, the mean colour of the box's four quarters, minus
  their overall mean (a darker or brighter frame moves it less);
* ``"features"``: SoraDet's fused stride-8 map (backbone, FPN and ConvGRU memory) pooled over
  the box on a 2x2 grid (:meth:`~sora.models.soradet.SoraDet.box_embeddings`);
* ``"both"``: the two joined, each at half weight.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torchvision.ops import roi_align

#: The appearance embeddings ``sora track --reid`` accepts.
EMBEDDINGS = ("colour", "features", "both")
#: Default re-identification window, seconds: ids lost longer ago are not matched again.
WINDOW = 10.0
#: Default largest cosine distance at which a new id takes a lost one (chosen on
#: MotionShapes-Det's val split, docs/track.md).
MAX_DISTANCE = 0.4
#: Default farthest a lost object may have moved, as a fraction of the frame's diagonal
#: (centre to centre; MotionShapes-Det's val split, colour: mean IDF1 0.765 with it, 0.754
#: without; on the surveillance scene it keeps walkers apart, docs/watch.md).
MAX_SHIFT = 0.25


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-9)


def colour_embeddings(frame: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """uint8 ``(3, H, W)`` frame, ``(n, 4)`` xyxy boxes in its pixels -> ``(n, 12)`` unit
    vectors: the mean RGB of each box quarter (2x2 RoIAlign), centred on their mean."""
    if not len(boxes):
        return torch.zeros(0, 12)
    pooled = roi_align(
        frame[None].float() / 255, [boxes.float()], output_size=2, spatial_scale=1.0, aligned=True
    ).flatten(1)
    return unit(pooled - pooled.mean(1, keepdim=True))


def join_embeddings(colour: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``"both"``: two sets of unit rows side by side, each at half weight (unit again)."""
    return torch.cat([colour, features], 1) / 2**0.5


class ReIdentifier:
    """Online id re-linking over a tracker's output, one video at a time.

    ``__call__(time, ids, labels, embeddings, boxes, frame_size)`` takes one frame's
    confirmed tracks (tracker ids ``(n,)``, classes ``(n,)``, unit embeddings ``(n, E)`` or
    ``None``, xyxy boxes ``(n, 4)``; the frame's ``(height, width)``) and returns the ids to
    report ``(n,)``. A tracker id seen for the first time takes the id of a lost one (not in
    this frame, last seen at most ``window`` s ago, of the same class with ``same_class``,
    its last box's centre at most ``max_shift`` of the frame's diagonal away; without
    ``boxes`` or ``frame_size`` no such limit) at cosine distance at most ``max_distance``,
    one to one (Hungarian); otherwise it keeps its own. Each reported id's embedding is a
    running mean (``momentum`` on the old value). Ids gone longer than ``window`` are
    forgotten, so memory stays bounded.
    """

    def __init__(
        self,
        window: float = WINDOW,
        max_distance: float = MAX_DISTANCE,
        *,
        max_shift: float = MAX_SHIFT,
        same_class: bool = False,
        momentum: float = 0.9,
    ):
        if window < 0 or not 0 <= max_distance <= 2 or max_shift < 0:
            raise ValueError(
                f"re-identification needs window >= 0, 0 <= max_distance <= 2 and "
                f"max_shift >= 0, got {window}, {max_distance} and {max_shift}"
            )
        self.window, self.max_distance = float(window), float(max_distance)
        self.max_shift = float(max_shift)
        self.same_class, self.momentum = same_class, float(momentum)
        self.mapping: dict[int, int] = {}  # tracker id -> reported id
        # reported id -> (embedding, class, time, box centre) when last seen
        self.gallery: dict[int, tuple[np.ndarray, int, float, np.ndarray | None]] = {}
        self.relinked = 0  # how many new ids took a lost one

    def _match(
        self, time: float, new: list[int], labels, embeddings, centres, diagonal, taken: set[int]
    ) -> dict:
        from scipy.optimize import linear_sum_assignment

        lost = [
            i
            for i, (_, _, seen, _) in self.gallery.items()
            if i not in taken and seen < time and time - seen <= self.window
        ]
        if not lost or not new or embeddings is None:
            return {}
        gallery = np.stack([self.gallery[i][0] for i in lost])
        cost = 1.0 - np.asarray(embeddings)[new] @ gallery.T  # cosine distance
        if self.same_class:
            classes = np.array([self.gallery[i][1] for i in lost])
            cost[np.asarray(labels)[new][:, None] != classes[None]] = np.inf
        if centres is not None and diagonal:
            # an id last seen without a box has a NaN centre: no limit (NaN > x is False)
            unknown = np.full(2, np.nan)
            last = np.stack([unknown if (c := self.gallery[i][3]) is None else c for i in lost])
            shift = np.linalg.norm(centres[new][:, None] - last[None], axis=2) / diagonal
            cost[shift > self.max_shift] = np.inf
        cost[cost > self.max_distance] = np.inf
        finite = np.where(np.isfinite(cost), cost, 1e6)
        rows, cols = linear_sum_assignment(finite)
        return {new[r]: lost[c] for r, c in zip(rows, cols, strict=True) if np.isfinite(cost[r, c])}

    def __call__(
        self, time: float, ids, labels, embeddings=None, boxes=None, frame_size=None
    ) -> np.ndarray:
        ids = [int(i) for i in ids]
        centres = None
        if boxes is not None and frame_size is not None:
            b = np.asarray(boxes, np.float64).reshape(-1, 4)
            centres = (b[:, :2] + b[:, 2:]) / 2
        diagonal = float(np.hypot(*frame_size)) if frame_size is not None else 0.0
        new = [k for k, i in enumerate(ids) if i not in self.mapping]
        taken = {self.mapping[i] for i in ids if i in self.mapping}
        matched = self._match(time, new, labels, embeddings, centres, diagonal, taken)
        for k, old in matched.items():
            self.mapping[ids[k]] = old
            self.relinked += 1
        for k in new:
            self.mapping.setdefault(ids[k], ids[k])
        out = [self.mapping[i] for i in ids]
        uses = Counter(out)
        for k, o in enumerate(out):  # the lost track came back itself: it keeps its id
            if uses[o] > 1 and ids[k] != o:
                self.mapping[ids[k]] = out[k] = ids[k]
                uses[o] -= 1
                self.relinked -= 1
        for k, o in enumerate(out if embeddings is not None else []):
            e = np.asarray(embeddings[k], np.float32)
            if o in self.gallery:
                old = self.gallery[o][0]
                e = self.momentum * old + (1 - self.momentum) * e
                e = e / max(float(np.linalg.norm(e)), 1e-9)
            centre = None if centres is None else centres[k]
            self.gallery[o] = (e, int(labels[k]), float(time), centre)
        for i in [i for i, (_, _, seen, _) in self.gallery.items() if time - seen > self.window]:
            del self.gallery[i]
        live = set(ids)
        self.mapping = {t: o for t, o in self.mapping.items() if t in live or o in self.gallery}
        return np.asarray(out, dtype=int)
