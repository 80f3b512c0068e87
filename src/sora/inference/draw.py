"""Annotated frames for ``--save-video``, drawn with Roboflow's ``supervision``.

Boxes and labels (class and score) use supervision's ``BoxAnnotator`` and ``LabelAnnotator``
with one colour per class; tracks (:meth:`Annotator.draw_tracks`) get one colour per track
id, the id in the label and a trail of the last ``trail`` frames (``TraceAnnotator``, which
keeps a bounded window of points, so memory stays flat). A track back after a gap (its id
kept by the tracker or given back by re-identification) starts a new trail there, rather
than one drawn straight across from where it was lost. Small frames are enlarged first (to
at least ``min_height`` pixels, nearest-neighbour so no detail is invented) so the labels
stay readable.

A detector's NMS is per class, so an object it is unsure of has a box for each class it
might be. :meth:`Annotator.draw` shows one per object: of boxes overlapping by more than
``one_box_iou`` (any classes), the highest-scoring one, one seen in the frame before one
from the memory. The rows written for programs and evaluation keep them all.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

with warnings.catch_warnings():  # supervision warns when OpenCV is absent; its NumPy path is used
    warnings.simplefilter("ignore")
    import supervision as sv


class Annotator:
    """``draw(image, boxes, scores, labels)`` -> a new annotated ``(H', W', 3)`` uint8 frame."""

    def __init__(
        self,
        classes: list[str],
        min_height: int = 360,
        trail: int = 30,
        one_box_iou: float | None = 0.5,
    ):
        self.classes = classes
        self.one_box_iou = one_box_iou
        self.min_height = min_height
        self._scale: int | None = None
        self.boxes = sv.BoxAnnotator(thickness=2)
        self.labels = sv.LabelAnnotator(text_scale=0.45, text_padding=3, smart_position=True)
        by_track = sv.ColorLookup.TRACK
        self.track_boxes = sv.BoxAnnotator(thickness=2, color_lookup=by_track)
        self.track_labels = sv.LabelAnnotator(
            text_scale=0.45, text_padding=3, smart_position=True, color_lookup=by_track
        )
        self.trails = sv.TraceAnnotator(
            trace_length=trail, thickness=2, position=sv.Position.CENTER, color_lookup=by_track
        )
        self._last_ids: set[int] = set()  # the ids of the previous draw_tracks call

    def scale_for(self, height: int) -> int:
        """The integer enlargement for frames ``height`` pixels high."""
        return max(1, math.ceil(self.min_height / height))

    def shown(
        self, boxes: np.ndarray, scores: np.ndarray, forecast: np.ndarray | None = None
    ) -> np.ndarray:
        """Indices of the boxes :meth:`draw` shows: class-agnostic NMS at ``one_box_iou``
        (``None``: all of them), a box seen in the frame before any ``forecast`` one (the
        memory's, of an object not seen), then by score."""
        if self.one_box_iou is None or len(boxes) < 2:
            return np.arange(len(boxes))
        import torch
        from torchvision.ops import nms

        b = torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4)
        rank = np.asarray(scores, np.float32).copy()
        if forecast is not None:
            rank[~np.asarray(forecast, bool)] += 1.0  # scores are in [0, 1]
        return nms(b, torch.as_tensor(rank), self.one_box_iou).numpy()

    def canvas(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """A copy of ``image`` enlarged by ``k`` (:meth:`scale_for`) to draw on, and ``k``."""
        k = self.scale_for(image.shape[0])
        canvas = np.ascontiguousarray(image.repeat(k, 0).repeat(k, 1)) if k > 1 else image.copy()
        return canvas, k

    def draw_tracks(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        ids: np.ndarray,
        notes: list[str] | None = None,
    ) -> np.ndarray:
        """Tracked boxes with ``#id class score`` (then ``notes[i]``, e.g. the action) and
        trails. Call once
        per frame, in order: the trails remember the previous frames."""
        canvas, k = self.canvas(image)
        det = sv.Detections(
            xyxy=np.asarray(boxes, np.float32).reshape(-1, 4) * k,
            confidence=np.asarray(scores, np.float32),
            class_id=np.asarray(labels, int),
            tracker_id=np.asarray(ids, int),
        )
        self._break_trails(det.tracker_id)
        canvas = self.trails.annotate(canvas, det)
        if len(det) == 0:
            return canvas
        text = [
            f"#{i} {self.classes[c]} {s:.2f}"
            for i, c, s in zip(det.tracker_id, det.class_id, det.confidence, strict=True)
        ]
        if notes is not None:
            text = [f"{t} {n}" for t, n in zip(text, notes, strict=True)]
        canvas = self.track_boxes.annotate(canvas, det)
        return self.track_labels.annotate(canvas, det, labels=text)

    def _break_trails(self, ids: np.ndarray) -> None:
        """Drop the remembered trail points of the ids in ``ids`` that were missing from
        the previous frame (supervision's ``Trace`` keeps parallel arrays of frame ids, points
        and tracker ids)."""
        now = {int(i) for i in ids}
        back = now - self._last_ids
        self._last_ids = now
        trace = self.trails.trace
        if not back or not len(trace.tracker_id):
            return
        keep = ~np.isin(trace.tracker_id, list(back))
        trace.frame_id, trace.xy, trace.tracker_id = (
            trace.frame_id[keep],
            trace.xy[keep],
            trace.tracker_id[keep],
        )

    def draw_frame_tracks(self, ft, actions: list[str] | None = None) -> np.ndarray:
        """One :class:`~sora.inference.tracking.FrameTracks` (with its ``image``) drawn by
        :meth:`draw_tracks`, each label followed by the track's action and its probability
        when the frame was tagged (``actions``: the action names)."""
        notes = None
        if ft.actions is not None and actions is not None:
            notes = [
                f"{actions[int(a)]} {p:.2f}"
                for a, p in zip(ft.actions, ft.action_probs, strict=True)
            ]
        return self.draw_tracks(ft.image, ft.boxes, ft.scores, ft.labels, ft.ids, notes)

    def draw(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        forecast: np.ndarray | None = None,
    ) -> np.ndarray:
        """Boxes with ``class score`` labels, one per object (:meth:`shown`); ``forecast``
        boxes (the memory's, nothing of the object seen) are labelled ``class score
        (memory)``."""
        canvas, k = self.canvas(image)
        if len(boxes) == 0:
            return canvas
        keep = self.shown(boxes, scores, forecast)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        forecast = None if forecast is None else np.asarray(forecast)[keep]
        det = sv.Detections(
            xyxy=np.asarray(boxes, np.float32) * k,
            confidence=np.asarray(scores, np.float32),
            class_id=np.asarray(labels, int),
        )
        memory = np.zeros(len(boxes), bool) if forecast is None else np.asarray(forecast, bool)
        text = [
            f"{self.classes[c]} {s:.2f}" + (" (memory)" if m else "")
            for c, s, m in zip(det.class_id, det.confidence, memory, strict=True)
        ]
        canvas = self.boxes.annotate(canvas, det)
        return self.labels.annotate(canvas, det, labels=text)
