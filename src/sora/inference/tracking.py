"""Multi-object tracking: SoraDet's detections associated into tracks by Roboflow's ``trackers``.

Sora does not implement association: :func:`make_tracker` builds one of the ``trackers``
package's SORT, ByteTrack, OC-SORT, BoT-SORT or C-BIoU (ByteTrack's two stages matched on
boxes enlarged by a buffer, Yang et al., WACV 2023), and :func:`track_detections` feeds it one
frame at a time, with the frame's **timestamp** (so a variable frame rate or a dropped
stretch of a live source moves the Kalman filters by the time that passed, not by one step).

Thresholds follow the detector, not YOLO's defaults: the tracker's "high confidence" and
"start a track" thresholds are the run's best-F1 score threshold (``sora eval`` stores it),
and detections down to ``conf`` (default :data:`LOW_FRACTION` of it) are fed to it so
ByteTrack-style second-stage association can keep a track alive through a low-score
stretch (an occlusion). Before association the detections go through **class-agnostic**
NMS (IoU ``nms_iou``, default 0.5): SoraDet's NMS is per class, and one object scored as two
classes would otherwise start two tracks (on MotionShapes-Det val this is worth +8 HOTA
points; docs/track.md).

Track ids in Sora's output are 1-based (MOTChallenge); finished tracks are released by the
tracker after ``lost_track_buffer`` (default 30 frames at 30 fps = 1 s without a match).
An object that comes back later gets a new id from the tracker; :class:`VideoTracker`
re-identifies it after the tracker by appearance (:mod:`sora.inference.reid`, on by
default), so it keeps its old one.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch and the trackers package load when used: `sora --help` stays fast
    from sora.inference.detector import FrameDetections
    from sora.inference.reid import ReIdentifier

#: Default lowest score fed to the tracker, as a fraction of the high threshold. Chosen on
#: MotionShapes-Det's val split (0.5, 0.75 and 1.0 tried; docs/track.md): lower lets ByteTrack
#: and BoT-SORT keep tracks alive on clutter, higher loses their second stage.
LOW_FRACTION = 0.75
#: Default IoU of the class-agnostic NMS applied before association.
NMS_IOU = 0.5

#: The association methods ``sora track --tracker`` accepts (all from ``trackers``).
TRACKERS = ("bytetrack", "ocsort", "botsort", "sort", "cbiou")
#: ``sora watch``'s association (``sora track``'s is ByteTrack). On the surveillance scene's
#: line crossings C-BIoU was as precise or more than ByteTrack with every detector measured,
#: and with the detector trained on the most footage it reached the 0.95 targets where
#: ByteTrack's recall did not (benchmarks/intrusion.py --trackers; docs/watch.md).
WATCH_TRACKER = "cbiou"


@dataclass
class FrameTracks:
    """Tracked objects of one frame: ``boxes (n, 4)`` xyxy source pixels, ``scores (n,)``,
    ``labels (n,)`` 0-based classes, ``ids (n,)`` 1-based track ids; ``image`` as in
    :class:`~sora.inference.detector.FrameDetections`."""

    index: int
    time: float
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    image: np.ndarray | None = None
    actions: np.ndarray | None = None  # (n,) action indices, with an action run
    action_probs: np.ndarray | None = None  # (n,) their probabilities


def _tracker_class(name: str | type) -> type:
    """The ``trackers`` class of ``name`` (one of :data:`TRACKERS`); a class is returned as
    it is."""
    if isinstance(name, type):
        return name
    import trackers  # 0.7 s to import: only when tracking

    match name:
        case "bytetrack":
            return trackers.ByteTrackTracker
        case "ocsort":
            return trackers.OCSORTTracker
        case "botsort":
            return trackers.BoTSORTTracker
        case "sort":
            return trackers.SORTTracker
        case "cbiou":
            return trackers.CBIoUTracker
    raise ValueError(f"unknown tracker {name!r} (choose from {', '.join(TRACKERS)})")


def tracker_options(name: str | type) -> list[str]:
    """The keyword arguments ``name``'s tracker class accepts (for ``--tracker-set``)."""
    params = inspect.signature(_tracker_class(name).__init__).parameters
    return [p for p in params if p != "self"]


def parse_options(name: str, pairs: Iterable[str]) -> dict:
    """``["lost_track_buffer=60", "enable_cmc=false"]`` -> keyword arguments for ``name``'s
    tracker; an unknown key or unreadable value raises ``ValueError`` naming it."""
    known = tracker_options(name)
    out: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ValueError(
                f"--tracker-set {pair!r}: {name} takes {', '.join(k for k in known if k != 'iou')}"
            )
        low = text.strip().lower()
        if low in ("true", "false"):
            out[key] = low == "true"
            continue
        try:
            number = float(text)
        except ValueError:
            out[key] = text.strip()
            continue
        out[key] = int(number) if number.is_integer() and "." not in text else number
    return out


def make_tracker(name: str | type, *, fps: float, high: float = 0.5, **options) -> object:
    """A fresh ``trackers`` tracker: ``name`` one of :data:`TRACKERS` (or any tracker class
    of the ``trackers`` package, for experiments), ``fps`` the nominal frame rate, ``high``
    the score above which a detection is "confident" (first-stage association, and the score
    a new track must reach). ``options`` override any of the tracker's own keyword arguments
    (:func:`tracker_options`)."""
    cls = _tracker_class(name)
    known = tracker_options(name)
    kwargs = {"frame_rate": float(fps)}
    for key in ("track_activation_threshold", "high_conf_det_threshold"):
        if key in known:
            kwargs[key] = float(high)
    if name == "botsort":
        kwargs["enable_cmc"] = False  # camera-motion compensation: opt in with enable_cmc=true
    kwargs.update(options)
    return cls(**kwargs)


def _uses_frame(tracker) -> bool:
    """BoT-SORT with camera-motion compensation reads the image."""
    return bool(getattr(tracker, "enable_cmc", False))


def track_detections(
    frames: Iterable[FrameDetections | None],
    tracker,
    *,
    conf: float = 0.1,
    nms_iou: float | None = NMS_IOU,
    forecast: bool = False,
    reid: ReIdentifier | None = None,
) -> Iterator[FrameTracks]:
    """Associate per-frame detections into tracks, in order. Detections scored below
    ``conf`` are not shown to the tracker, nor those suppressed by class-agnostic NMS at
    ``nms_iou`` (``None``: off), nor SoraDet's forecast boxes unless ``forecast``
    (measured: the same IDF1 without them, 0.609 against 0.611, and better line crossings
    in ``sora watch``, precision 1.000 against 0.925, recall 0.839 against 0.790). Only
    confirmed tracks are returned (a new track needs the tracker's
    ``minimum_consecutive_frames``). With ``reid``, a new track that is an object the tracker
    lost takes its old id back (:class:`~sora.inference.reid.ReIdentifier`, on the frames'
    ``embeddings``). ``None`` (a gap in a live source)
    is skipped: the tracker sees the gap through the next frame's timestamp."""
    import supervision as sv
    import torch
    from torchvision.ops import nms

    needs_frame = _uses_frame(tracker)
    for fd in frames:
        if fd is None:
            continue
        shown = fd.scores >= conf
        if fd.forecast is not None and not forecast:
            shown &= ~fd.forecast
        keep = np.flatnonzero(shown)
        if nms_iou is not None and len(keep) > 1:
            kept = nms(torch.from_numpy(fd.boxes[keep]), torch.from_numpy(fd.scores[keep]), nms_iou)
            keep = keep[kept.numpy()]
        embedded = fd.embeddings is not None
        det = sv.Detections(
            xyxy=np.asarray(fd.boxes[keep], np.float32).reshape(-1, 4),
            confidence=np.asarray(fd.scores[keep], np.float32),
            class_id=np.asarray(fd.labels[keep], int),
            data={"embedding": fd.embeddings[keep]} if embedded else {},
        )
        image = fd.image[..., ::-1].copy() if needs_frame and fd.image is not None else None
        out = tracker.update(det, frame=image, timestamp=float(fd.time))
        ok = out.tracker_id >= 0 if len(out) else np.zeros(0, bool)
        ids = out.tracker_id[ok].astype(int) + 1
        labels = out.class_id[ok].astype(int)
        boxes = out.xyxy[ok].astype(np.float32)
        if reid is not None:  # the tracker's rows carry their embeddings along (sv data)
            emb = out.data.get("embedding") if embedded else None  # (an empty result has none)
            ids = reid(fd.time, ids, labels, None if emb is None else emb[ok], boxes, fd.frame_size)
        yield FrameTracks(
            index=fd.index,
            time=fd.time,
            boxes=boxes,
            scores=out.confidence[ok].astype(np.float32),
            labels=labels,
            ids=ids,
            image=fd.image,
        )


class VideoTracker:
    """A detection run plus a tracker choice: ``track_video(source)`` streams SoraDet over a
    file, frame folder, webcam or URL and yields :class:`FrameTracks` per frame.

    ``high`` defaults to the run's best-F1 threshold, ``conf`` to ``LOW_FRACTION * high``,
    ``nms_iou`` (class-agnostic NMS before association; ``None`` off) to :data:`NMS_IOU`;
    ``options`` go to the tracker's constructor (:func:`tracker_options`). ``reid``: the
    appearance that gives a lost object its id back (``"colour"``, the default,
    ``"features"``, ``"both"``; ``None``: off), within ``reid_window`` seconds and
    ``reid_distance`` (:class:`~sora.inference.reid.ReIdentifier`). ``actions``: a
    classify run trained on action tubes; every track then gets an action
    (:class:`~sora.inference.actions.ActionTagger`). ``forecast_class``: the detector decodes
    with that ``detect.forecast_class`` instead of the run's
    (:meth:`~sora.inference.detector.Detector.set_forecast_class`)."""

    def __init__(
        self,
        run,
        tracker: str = "bytetrack",
        *,
        high: float | None = None,
        conf: float | None = None,
        nms_iou: float | None = NMS_IOU,
        options: dict | None = None,
        device: str | None = None,
        actions=None,
        reid: str | None = "colour",
        reid_window: float | None = None,
        reid_distance: float | None = None,
        forecast_class: float | None = None,
    ):
        from sora.inference.detector import Detector
        from sora.inference.reid import EMBEDDINGS, MAX_DISTANCE, WINDOW, ReIdentifier

        _tracker_class(tracker)  # unknown names fail before the model loads
        if reid is not None and reid not in EMBEDDINGS:
            raise ValueError(
                f"unknown re-identification {reid!r} (choose from {', '.join(EMBEDDINGS)}, or none)"
            )
        self.reid = reid
        self.reid_window = WINDOW if reid_window is None else float(reid_window)
        self.reid_distance = MAX_DISTANCE if reid_distance is None else float(reid_distance)
        ReIdentifier(self.reid_window, self.reid_distance)  # bad values fail here too
        self.detector = Detector(run, device=device, forecast_class=forecast_class)
        self.classes = self.detector.classes
        self.name = tracker
        self.high = float(high) if high is not None else self.detector.operating_threshold()
        self.conf = float(conf) if conf is not None else LOW_FRACTION * self.high
        self.nms_iou = nms_iou
        self.options = dict(options or {})
        self.tagger = None
        if actions is not None:
            from sora.inference.actions import ActionTagger

            self.tagger = ActionTagger(actions, device=device)

    def new_tracker(self, fps: float):
        """A fresh tracker for one video at nominal rate ``fps``."""
        return make_tracker(self.name, fps=fps, high=self.high, **self.options)

    def new_reid(self) -> ReIdentifier | None:
        """A fresh re-identifier for one video (``None`` with ``reid`` off)."""
        from sora.inference.reid import ReIdentifier

        return None if self.reid is None else ReIdentifier(self.reid_window, self.reid_distance)

    def track_video(
        self, source, *, fps: float = 25.0, keep_images: bool = False, **kwargs
    ) -> Iterator[FrameTracks]:
        """Tracks for every frame of ``source`` (``fps``: its nominal rate when the run does
        not resample; the tracker works on timestamps either way)."""
        tracker = self.new_tracker(self.detector.config.detect.fps or fps)
        frames = self.detector.detect_video(
            source,
            score_thresh=self.conf,
            keep_images=keep_images or bool(self.tagger),
            embed=self.reid,
            **kwargs,
        )
        for ft in track_detections(
            frames, tracker, conf=self.conf, nms_iou=self.nms_iou, reid=self.new_reid()
        ):
            if self.tagger is not None:
                ft.actions, ft.action_probs = self.tagger.update(
                    ft.time, ft.image, ft.ids, ft.boxes
                )
                if not keep_images:
                    ft.image = None
            yield ft
