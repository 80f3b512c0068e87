"""A memory of each object for the detections: boxes held on objects that vanish for a while.

SoraDet's recurrent memory is per cell of the feature maps; it finds hidden objects in their
first few hidden frames and loses them after (docs/detect.md). :class:`ObjectHold` keeps
one memory per object instead, with a tracker from Roboflow's ``trackers`` package
(ByteTrack, fed as ``sora track`` feeds it, one frame a step): the frame's detections update the
tracks, and every confirmed track that the frame did not match, lost for 1 to ``frames``
frames, adds its Kalman-predicted box, with the class and score of the last detection it
matched, to the frame's detections. Those boxes are marked ``forecast`` (boxes from a
memory, not from the frame), so ``sora track`` leaves them out of its association as it
does SoraDet's forecast boxes, and ``sora predict`` writes and draws them as such.
A held box gives way to a detection of its class that overlaps it (IoU >= ``iou``) with a
higher score, and removes those of its class it overlaps with a lower one, as NMS would.

It is a decoding rule (``detect.hold``), the same for every model: it needs no memory in the
network, so the per-frame ablation gets it too. Measured on 48 MotionShapes-Det test
sequences (docs/detect.md, "A memory per object"): 4 frames raise the occluded mAP50 of
both SoraDet and its per-frame ablation to the same figure.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_area, box_iou, clip_boxes_to_image

#: The score of a confident detection for the hold's tracker: confident detections update
#: and start its tracks, those down to ``LOW_FRACTION`` of it only keep tracks going
#: (ByteTrack's second stage), as in ``sora track``. A fixed value, so that a run's
#: evaluation does not depend on the threshold an earlier one stored: 0.3, 0.46 and 0.6
#: gave occluded mAP50 within 0.7 points of each other (docs/detect.md).
HOLD_HIGH = 0.45
#: The rate the hold's tracker is run at: one frame a step, whatever the source's rate.
FPS = 30.0


class ObjectHold:
    """Per-stream object memory. Call it on each frame's detections in order; ``reset()`` at
    a gap in the stream (the model's state restarts there too).

    ``frames``: how many frames a lost object's box is held (>= 1). ``size``: the frame's
    ``(height, width)`` in the boxes' pixels; a held box with less than half of its area in
    the frame is dropped (the object went out of view) and the others are clipped to it. ``high``: see
    :data:`HOLD_HIGH`. ``iou``: the overlap at which a held box and a detection of its class
    are the same object. ``min_size``: a predicted box narrower or lower than this (in the
    boxes' pixels) is dropped: the filter's box of an object that left the frame shrinking
    (its boxes clipped at the edge) goes on shrinking. The default, 3, is half the smallest
    MotionShapes-Det object at the model's 96 x 128.
    """

    def __init__(
        self,
        frames: int,
        size: tuple[int, int] | None = None,
        *,
        high: float = HOLD_HIGH,
        iou: float = 0.5,
        min_size: float = 3.0,
    ):
        if frames < 1:
            raise ValueError(f"hold must be at least 1 frame, got {frames}")
        self.frames = int(frames)
        self.size = size
        self.high = float(high)
        self.iou = float(iou)
        self.min_size = float(min_size)
        self.reset()

    def reset(self) -> None:
        """Forget every object (a new stream, or a gap in this one)."""
        from sora.inference.tracking import make_tracker

        self.tracker = make_tracker("bytetrack", fps=FPS, high=self.high)
        self.count = 0  # frames seen: their times are count / FPS
        self.last: dict[int, tuple[int, float]] = {}  # track id -> (class, score) last matched

    def __call__(self, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One frame's detections ``{boxes (n, 4) xyxy, scores (n,), labels (n,), forecast
        (n,) bool}`` -> the same with the held boxes appended (``forecast`` True) and the
        detections they replace removed. Other keys (e.g. ``embeddings``) raise ``ValueError``:
        hold before computing them."""
        from sora.inference.detector import FrameDetections
        from sora.inference.tracking import LOW_FRACTION, NMS_IOU, track_detections

        extra = set(d) - {"boxes", "scores", "labels", "forecast"}
        if extra:
            raise ValueError(f"ObjectHold cannot carry {', '.join(sorted(extra))}")
        boxes, scores, labels = d["boxes"].float(), d["scores"].float(), d["labels"]
        forecast = d["forecast"].bool()
        frame = FrameDetections(  # fed as sora track feeds its tracker, at a fixed rate
            index=self.count,
            time=self.count / FPS,
            boxes=boxes.cpu().numpy().reshape(-1, 4),
            scores=scores.cpu().numpy(),
            labels=labels.cpu().numpy(),
            forecast=forecast.cpu().numpy(),
        )
        self.count += 1
        tracks = next(
            track_detections([frame], self.tracker, conf=LOW_FRACTION * self.high, nms_iou=NMS_IOU)
        )
        for tid, lab, sc in zip(tracks.ids - 1, tracks.labels, tracks.scores, strict=True):
            self.last[int(tid)] = (int(lab), float(sc))  # the tracker's own (0-based) id
        lost = [
            (t.get_state_bbox(), *self.last[t.tracker_id])
            for t in self.tracker.tracks
            if t.tracker_id in self.last and 1 <= t.time_since_update <= self.frames
        ]
        alive = {t.tracker_id for t in self.tracker.tracks}
        self.last = {k: v for k, v in self.last.items() if k in alive}  # finished tracks go
        dev = boxes.device
        hb = torch.tensor(np.array([b for b, _, _ in lost], np.float32)).reshape(-1, 4)
        hl = torch.tensor([lab for _, lab, _ in lost], dtype=labels.dtype)
        hs = torch.tensor([sc for _, _, sc in lost], dtype=torch.float32)
        in_frame = torch.ones(len(hb), dtype=torch.bool)
        if self.size is not None:
            inside = clip_boxes_to_image(hb, self.size)
            in_frame = box_area(inside) >= 0.5 * box_area(hb)  # most of it still in the frame
            hb = inside
        ok = (
            in_frame
            & (hb[:, 2] - hb[:, 0] >= self.min_size)
            & (hb[:, 3] - hb[:, 1] >= self.min_size)
        )
        hb, hl, hs = hb[ok].to(dev), hl[ok].to(dev), hs[ok].to(dev)
        # (m, n): held box i and detection j are the same object
        same = (box_iou(hb, boxes) >= self.iou) & (hl[:, None] == labels[None])
        stronger = same & (scores[None] >= hs[:, None])
        add = ~stronger.any(1)  # no detection of its class on it scores as high
        keep = ~(same & add[:, None]).any(0)  # the weaker ones on an added held box go
        hb, hl, hs = hb[add], hl[add], hs[add]
        m = len(hb)
        return {
            "boxes": torch.cat([boxes[keep], hb]),
            "scores": torch.cat([scores[keep], hs]),
            "labels": torch.cat([labels[keep], hl]),
            "forecast": torch.cat([forecast[keep], torch.ones(m, dtype=torch.bool, device=dev)]),
        }
