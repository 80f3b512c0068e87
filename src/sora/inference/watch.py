"""``sora watch``: detection + tracking + zone rules + anomaly scoring on one stream, with
alerts as they happen.

The loop (one per source, bounded memory)::

    grabber thread: source -> frames (a live source reconnects with backoff)
        live, or a file with ``realtime``: only the newest frame waits; when processing falls
        behind, the older one is dropped (counted), never queued without bound
        a file otherwise: every frame, as fast as it can be processed
    main thread: SoraDet step -> class-agnostic NMS -> tracker (``trackers``) -> ZoneMonitor
        -> SoraAnomaly step -> events (EventLog, snapshots, webhook) -> annotated video
    at the end of the stream (not on an interruption): ZoneMonitor.finish, the zone and line
        changes still pending on the last frame

Latency is measured from the moment a frame is grabbed to the moment its processing (and any
alert it raises, written and fsynced) is done.
"""

from __future__ import annotations

import io
import queue
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from sora.errors import CheckpointError
from sora.inference.detector import prepare_frames
from sora.inference.events import put_dropping_oldest
from sora.inference.tracking import NMS_IOU, WATCH_TRACKER
from sora.io.files import atomic_write_bytes
from sora.io.video import Frame, VideoReader, reconnecting

#: seconds the anomaly score must stay under the threshold before a new anomaly alert can fire
ANOMALY_CLEAR = 1.0
#: seconds the anomaly score must stay over the threshold before the alert fires (default of
#: ``anomaly_hold``): single spikes do not alert
ANOMALY_HOLD = 0.5


class Grabber:
    """Reads ``frames`` in a thread. ``latest``: a one-frame slot, the older frame dropped
    when a new one comes before it was taken; else a blocking hand-over (no drops).
    ``pace``: sleep to each frame's timestamp (a file played as if it were a camera).
    Iterating yields ``(frame or None for a gap, grab wall time)``."""

    _END = object()

    def __init__(self, frames: Iterator[Frame | None], *, latest: bool, pace: bool):
        self.frames, self.latest, self.pace = frames, latest, pace
        self.slot: queue.Queue = queue.Queue(maxsize=1)
        self.read = self.dropped = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sora-grabber")
        self._thread.start()

    def _put(self, item) -> None:
        if not self.latest or item is self._END:
            while not self._stop.is_set():
                try:
                    self.slot.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        # a gap marker ``(None, t)`` pushed out is not a dropped frame
        self.dropped += sum(fr is not None for fr, _ in put_dropping_oldest(self.slot, item))

    def _run(self) -> None:
        start, t0 = time.perf_counter(), None
        try:
            for fr in self.frames:
                if self._stop.is_set():
                    break
                if fr is not None:
                    self.read += 1
                    if self.pace:
                        t0 = fr.time if t0 is None else t0
                        delay = start + (fr.time - t0) - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                self._put((fr, time.perf_counter()))
        except BaseException as err:  # handed to the main thread
            self.error = err
        self._put(self._END)

    def __iter__(self):
        while True:
            item = self.slot.get()
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def stop(self) -> None:
        self._stop.set()


class AnomalyAlarm:
    """When a stream of frame scores raises an anomaly alert: ``update(t, score)`` (stream
    time in seconds) returns True on the frame the alert fires. It fires once the score has
    stayed over ``threshold`` for ``hold`` seconds, and can fire again only after the score
    has stayed at or under it for ``clear`` seconds; ``on`` says whether the alarm is on."""

    def __init__(self, threshold: float, hold: float = 0.5, clear: float = 1.0):
        self.threshold, self.hold, self.clear = threshold, hold, clear
        self.on = False
        self.over_since: float | None = None
        self.calm_since: float | None = None

    def update(self, t: float, score: float) -> bool:
        if score > self.threshold:
            self.calm_since = None
            self.over_since = t if self.over_since is None else self.over_since
            if not self.on and t - self.over_since >= self.hold - 1e-9:
                self.on = True
                return True
            return False
        self.over_since = None
        if self.on:
            self.calm_since = t if self.calm_since is None else self.calm_since
            if t - self.calm_since >= self.clear - 1e-9:
                self.on = False
        return False


class AnomalyScorer:
    """A SoraAnomaly run streamed one frame at a time: ``step(image)`` with an ``(H, W, 3)``
    uint8 frame -> (smoothed score, heat map ``(h, w)``)."""

    def __init__(self, run, device: str | None = None):
        from sora.models.store import load_model, resolve_model_dir

        self.model, self.config, _ = load_model(resolve_model_dir(run))
        if self.config.task != "anomaly":
            raise CheckpointError(
                f"--anomaly needs an anomaly run, got a {self.config.task} run", run
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.threshold = float(self.model.threshold)
        self.size = tuple(self.config.anomaly.size)
        self.mean = torch.tensor(self.config.data.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.config.data.std, device=self.device).view(1, 3, 1, 1)
        self.reset()

    def reset(self) -> None:
        self.state = self.model.init_state(1, self.device)

    @torch.no_grad()
    def step(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None]
        x = prepare_frames(x, self.size, self.mean, self.std)
        out, self.state = self.model.step(x, self.state)
        return float(out["score"][0]), out["cells"][0].cpu().numpy()


def _snapshot(image: np.ndarray, box, label: str) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.fromarray(image)
    if box is not None:
        d = ImageDraw.Draw(img)
        d.rectangle(box, outline=(255, 40, 40), width=max(1, img.width // 160))
        d.text((box[0], max(0, box[1] - 11)), label, fill=(255, 40, 40))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def ms_text(seconds: float | None) -> str:
    """A latency for people: ``"12 ms"``, or ``"n/a"`` when there was none."""
    return "n/a" if seconds is None else f"{1000 * seconds:.0f} ms"


def _quantiles(values) -> dict:
    v = sorted(values)
    if not v:
        return {"median": None, "p95": None}
    return {"median": statistics.median(v), "p95": v[min(len(v) - 1, int(0.95 * len(v)))]}


def watch(
    source,
    *,
    model=None,
    anomaly=None,
    anomaly_threshold: float | None = None,
    anomaly_hold: float = ANOMALY_HOLD,
    zones: str | Path | None = None,
    events: str | Path | None = None,
    save_video: str | Path | None = None,
    tracker: str = WATCH_TRACKER,
    reid: str | None = "colour",
    reid_window: float | None = None,
    nms_iou: float | None = NMS_IOU,
    forecast_class: float | None = None,
    realtime: bool | None = None,
    webhook: str | None = None,
    snapshots: bool = True,
    max_frames: int | None = None,
    on_event: Callable[[dict], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    device: str | None = None,
) -> dict:
    """Watch ``source`` (file, frame folder, webcam index, RTSP/HTTP URL) and return a
    summary. ``model``: a detection run (needed for ``zones``); ``anomaly``: an anomaly run,
    alerting when its score has stayed over ``anomaly_threshold`` (default: the run's) for
    ``anomaly_hold`` seconds.
    ``tracker``, ``reid`` (the appearance that gives a lost object its id back; ``None``
    off), ``reid_window`` and ``nms_iou`` (class-agnostic NMS before association; ``None``
    off) as in :class:`~sora.inference.tracking.VideoTracker`, and ``forecast_class`` (the
    detector decodes with that ``detect.forecast_class``; ``None``: the run's own).
    ``realtime`` (default: on for live sources): drop frames when behind. Events go to
    ``events`` (JSON lines; snapshots in ``<events>_snapshots/``), to ``on_event`` and to
    ``webhook``.
    """
    from sora.inference.events import EventLog, Webhook

    if zones is not None and model is None:
        raise ValueError("--zones needs --model: zone rules apply to tracked objects")
    if model is None and anomaly is None:
        raise ValueError("sora watch needs --model (detection) and/or --anomaly")
    if forecast_class is not None and model is None:
        raise ValueError("--forecast-class needs --model: it is how the detector decodes")
    vt = None
    if model is not None:
        from sora.inference.tracking import VideoTracker

        vt = VideoTracker(
            model,
            tracker,
            device=device,
            reid=reid,
            reid_window=reid_window,
            nms_iou=nms_iou,
            forecast_class=forecast_class,
        )
    scorer = alarm = None
    if anomaly is not None:
        scorer = AnomalyScorer(anomaly, device=device)
        threshold = scorer.threshold if anomaly_threshold is None else float(anomaly_threshold)
        alarm = AnomalyAlarm(threshold, anomaly_hold, ANOMALY_CLEAR)
    fps = vt.detector.config.detect.fps if vt is not None else None
    reader = VideoReader(source, fps=fps)
    live = reader.live
    realtime = live if realtime is None else realtime
    frames = reconnecting(lambda: iter(reader), name=reader.name) if live else iter(reader)
    meta_fps = 25.0 if live else float(reader.meta.fps or 25.0)
    log = EventLog(events)
    shots = (
        None
        if events is None or not snapshots
        else Path(events).with_name(Path(events).stem + "_snapshots")
    )
    hook = Webhook(webhook) if webhook else None
    writer = monitor = annotator = None
    grabber = Grabber(frames, latest=realtime, pace=realtime and not live)
    counts: Counter = Counter()
    frame_latency: deque = deque(maxlen=100_000)
    alert_latency: deque = deque(maxlen=100_000)
    score_max = None
    processed = 0
    start = time.perf_counter()
    grab_times: deque = deque()  # of the frames in the pipeline, oldest first

    def grabbed_frames() -> Iterator[Frame | None]:
        for fr, grabbed in grabber:
            if fr is None:  # a gap in a live source: the recurrent states start afresh
                if scorer is not None:
                    scorer.reset()
            else:
                grab_times.append(grabbed)
            yield fr

    # one frame in, one out: SoraDet's stream (which restarts at a gap) and the tracker, or
    # the frames themselves when only the anomaly run watches
    if vt is not None:
        from sora.inference.tracking import track_detections

        detections = vt.detector.detect_frames(
            grabbed_frames(), score_thresh=vt.conf, keep_images=True, chunk=1, embed=vt.reid
        )
        tracker_ = vt.new_tracker(vt.detector.config.detect.fps or meta_fps)
        items = track_detections(
            detections, tracker_, conf=vt.conf, nms_iou=vt.nms_iou, reid=vt.new_reid()
        )
    else:
        items = (fr for fr in grabbed_frames() if fr is not None)

    def emit(new_events: list[dict], image: np.ndarray, grabbed: float) -> None:
        """Log, count, snapshot and send the events raised on ``image``."""
        for ev in new_events:
            ev = {"source": str(source), "wall": now().isoformat(timespec="milliseconds"), **ev}
            ev["snapshot"] = None
            if shots is not None:
                name = f"{log.next_id:06d}.jpg"
                label = f"{ev['rule']} {ev['zone'] or ''} #{ev['track'] or ''}".strip()
                atomic_write_bytes(shots / name, _snapshot(image, ev["box"], label))
                ev["snapshot"] = f"{shots.name}/{name}"
            ev = log.append(ev)
            counts[ev["rule"]] += 1
            alert_latency.append(time.perf_counter() - grabbed)
            if hook is not None:
                hook.post(ev)
            if on_event is not None:
                on_event(ev)

    try:
        for fr in items:
            grabbed = grab_times.popleft()
            image = fr.image
            h, w = image.shape[:2]
            new_events: list[dict] = []
            ft = fr if vt is not None else None
            if vt is not None:
                if zones is not None and monitor is None:
                    from sora.inference.zones import ZoneMonitor, load_zones

                    monitor = ZoneMonitor(
                        load_zones(zones, w, h), vt.detector.config.detect.fps or meta_fps
                    )
                if monitor is not None:
                    new_events += monitor.update(
                        fr.time, ft.boxes, ft.ids, ft.labels, ft.scores, vt.classes, now().time()
                    )
            heat = None
            if scorer is not None:
                score, heat = scorer.step(image)
                score_max = score if score_max is None else max(score_max, score)
                if alarm.update(fr.time, score):
                    gy, gx = np.unravel_index(int(np.argmax(heat)), heat.shape)
                    ch, cw = h / heat.shape[0], w / heat.shape[1]
                    new_events.append(
                        {
                            "time": round(float(fr.time), 3),
                            "zone": None,
                            "rule": "anomaly",
                            "track": None,
                            "class": None,
                            "score": round(score, 3),
                            "box": [
                                round(gx * cw, 1),
                                round(gy * ch, 1),
                                round((gx + 1) * cw, 1),
                                round((gy + 1) * ch, 1),
                            ],
                        }
                    )
            emit(new_events, image, grabbed)
            if save_video is not None:
                if writer is None:
                    from sora.inference.draw import Annotator
                    from sora.io.video import VideoWriter

                    annotator = Annotator(vt.classes if vt else [])
                    writer = VideoWriter(save_video, meta_fps)
                writer.write(_draw(annotator, image, ft, monitor, heat, alarm))
            processed += 1
            frame_latency.append(time.perf_counter() - grabbed)
            if max_frames is not None and processed >= max_frames:
                break
        if monitor is not None:  # the stream has ended (and had a frame, which made the
            # monitor): the changes pending on its last frame, with that frame's image
            emit(monitor.finish(), image, grabbed)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        grabber.stop()
        log.close()
    if writer is not None:
        writer.close()
    if hook is not None:
        hook.close()
    seconds = time.perf_counter() - start
    return {
        "source": str(source),
        "frames_read": grabber.read,
        "frames_processed": processed,
        "frames_dropped": grabber.dropped,
        "seconds": seconds,
        "frames_per_second": processed / max(seconds, 1e-9),
        "latency_frame_s": _quantiles(frame_latency),
        "latency_alert_s": _quantiles(alert_latency),
        "events": dict(counts),
        "next_event_id": log.next_id,
        "anomaly_threshold": None if alarm is None else alarm.threshold,
        "anomaly_score_max": score_max,
        "webhook": None
        if hook is None
        else {"sent": hook.sent, "failed": hook.failed, "dropped": hook.dropped},
    }


def _draw(annotator, image, ft, monitor, heat, alarm) -> np.ndarray:
    """The frame with tracks, zones and lines, and the anomaly heat map (in units of the
    alarm's threshold) with a red border while the alarm is on."""
    import cv2

    canvas = annotator.draw_frame_tracks(ft) if ft is not None else annotator.canvas(image)[0]
    if canvas.shape[:2] != image.shape[:2]:
        s = canvas.shape[0] / image.shape[0]
    else:
        s = 1.0
    if monitor is not None:
        for z in monitor.rules.zones:
            cv2.polylines(
                canvas, [np.round(z.polygon * s).astype(np.int32)], True, (255, 200, 0), 1
            )
        for ln in monitor.rules.lines:
            a = tuple(int(v * s) for v in ln.start)
            b = tuple(int(v * s) for v in ln.end)
            cv2.line(canvas, a, b, (0, 220, 255), 1)
    if heat is not None:
        hmap = cv2.resize(
            np.clip(heat / max(alarm.threshold, 1e-6), 0, 1).astype(np.float32),
            (canvas.shape[1], canvas.shape[0]),
            interpolation=cv2.INTER_LINEAR,
        )
        red = canvas.astype(np.float32)
        red[..., 0] = red[..., 0] * (1 - 0.5 * hmap) + 255 * 0.5 * hmap
        canvas = red.astype(np.uint8)
        if alarm.on:
            cv2.rectangle(
                canvas, (0, 0), (canvas.shape[1] - 1, canvas.shape[0] - 1), (255, 0, 0), 3
            )
    return np.ascontiguousarray(canvas)
