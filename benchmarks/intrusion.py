"""Zone intrusion and line crossing on MotionShapes-Anomaly, on ground-truth tracks and on
the tracks ``sora watch`` makes (SoraDet + C-BIoU).

The rules are the scene's ``zones.yaml`` (``synth_anomaly.ZONES``): a **zone** over the lawn
above the walkway (people only come in there in the crowd videos) and a **line** across the
walkway at x = 64 (every walker crosses it). The truth is the geometry of ``objects.csv``: an
entry is the first frame an object's bottom centre is inside the lawn after being outside
(or on first sight; the people of the crowd videos come into view at the frame's top edge,
inside the lawn, so their first sight is a sliver of 1-2 pixels: a second row counts these
entries from the frame they are half in view, ``enter_in_view``); a crossing is a frame
where it changes side of x = 64. Alerts and true events of one kind are matched one to
one, as COCO matches detections to true boxes: an alert can match a true event that came
within 0.5 s of it (before or after: a detector's box can cross before the true bottom
centre does) when its box overlaps that object's true box in the alert's frame by IoU >=
0.1 (since 2026-12-06, when the object has no row in that frame, as a person less than a
pixel in view at the top edge has none though their legs are drawn, its box in the nearest
frame within 0.5 s that has one), and the most pairs are matched. Precision is the share
of alerts matched, recall the share of true events. Until 2026-12-02 an alert was given to
the one object its box overlapped most, so two people crossing together with two alerts
could count one of them twice and the other as missed; a repeated alert now counts as a
false one. Alerts per true event count repeats too. The rules end each video with
``ZoneMonitor.finish``, as ``sora watch`` ends a file.

Two sources of tracks:

* ground truth (every video): the boxes and ids of ``objects.csv`` fed straight to
  ``ZoneMonitor``: the ceiling, the rules alone;
* ``sora watch`` (``--detector``): each video the detector did not train on (the 7 odd
  testing videos, one per anomaly type; 3 of them are its val split, used to pick the
  checkpoint) streamed through ``watch()``: SoraDet, C-BIoU (``sora watch``'s tracker),
  re-identification (``--reid``, default colour, as ``sora watch``), the same rules. The detector
  is trained on ``DATA/detect`` into ``runs/bench-intrusion/SoraDet`` on the first run.
  ``--fresh DIR`` adds more testing videos of the same scene that nothing was trained on:
  ``--fresh-videos FIRST:END`` (default 14:28) watches testing videos FIRST to END - 1 of
  ``generate(DIR, train=0, test=END)`` (the first 14 are the set's own); ``--fresh-types
  crowd`` watches only those of that anomaly type (zone entries happen only in the crowd
  videos, one testing video in 7, so a set for entries needs many). ``--nms`` is
  ``sora watch --nms``, the class-agnostic NMS before association. ``--testing N`` (default
  14) makes the set with N testing videos (``DATA`` then defaults to
  ``runs/motionshapes-anomaly-N`` and the detector run to ``runs/bench-intrusion/SoraDet-N``):
  the detector trains on the 10 normal and the even testing videos, so on more vehicles and
  crowds, and the odd ones are held out; testing video i is the same video in every set, so
  fresh videos from N on are still unseen.

``--trackers`` (with ``--detector``) also compares association methods on the same boxes:
SoraDet runs once per video (:func:`scene_detections`, the calls ``sora watch`` makes), then
each of :func:`tracker_variants` associates them, with colour re-identification after it
as in ``sora watch`` unless the variant says otherwise, and the same rules score the tracks.
Its first row is ``sora watch``'s own setting; that it gives ``sora watch``'s alerts on every
video is checked and printed.

    python benchmarks/intrusion.py [--data runs/motionshapes-anomaly] [--detector]
        [--fresh DIR [--fresh-videos FIRST:END] [--fresh-types TYPE[,TYPE]]] [--nms IOU] [--trackers]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from collections import defaultdict
from datetime import time as clock
from pathlib import Path

import numpy as np
from common import machine, write_section
from matplotlib.path import Path as Polygon

from sora.data.synth_anomaly import CLASSES, FPS, HEIGHT, TYPES, WIDTH, generate, testing_type
from sora.inference.tracking import NMS_IOU
from sora.inference.zones import ZoneMonitor, load_zones

LAWN = Polygon([(0, 0), (128, 0), (128, 27), (0, 27)])
#: IoU an alert box needs with an object's true box to be about it
MIN_IOU = 0.1
#: s: an alert within this of a true event of its object counts (the issue's criterion)
WINDOW = 0.5
KINDS = {
    "enter": "zone entry (lawn)",
    "enter_in_view": "zone entry (lawn), from half in view",
    "cross": "line crossing (x = 64)",
}
#: an object that comes into view inside the zone enters, for ``enter_in_view``, on the first
#: frame its box has this share of its largest area in the video (half of it in view)
IN_VIEW = 0.5


def fresh_names(first: int, end: int, types: str | None = None) -> list[str]:
    """Testing videos ``first`` to ``end - 1`` (``test_FIRST`` ...), only those of the anomaly
    ``types`` (comma-separated names of :data:`TYPES`) when given."""
    keep = set(TYPES) if types is None else {t.strip() for t in types.split(",")}
    if unknown := sorted(keep - set(TYPES)):
        raise ValueError(f"unknown anomaly type {unknown[0]!r}: expected one of {', '.join(TYPES)}")
    return [f"test_{i:03d}" for i in range(first, end) if testing_type(i) in keep]


def read_objects(data: Path) -> dict[str, dict[int, list]]:
    """``video -> frame -> [(id, [x1, y1, x2, y2], class index)]``."""
    out: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    with (data / "objects.csv").open() as f:
        for row in csv.DictReader(f):
            box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
            out[row["video"]][int(row["frame"])].append(
                (int(row["id"]), box, CLASSES.index(row["class"]))
            )
    return out


def in_view(frames: dict[int, list], obj: int, path: list[int]) -> int:
    """The first frame of ``path`` where object ``obj``'s box (clipped to the frame in
    ``objects.csv``) has :data:`IN_VIEW` of its largest area."""

    def area(f: int) -> float:
        b = next(r[1] for r in frames[f] if r[0] == obj)
        return (b[2] - b[0]) * (b[3] - b[1])

    top = max(area(f) for f in path)
    return next(f for f in path if area(f) >= IN_VIEW * top)


def truth(frames: dict[int, list]) -> list[tuple[str, int, int]]:
    """``[(kind, object, frame)]`` of every true entry and crossing; each entry twice: as
    ``enter`` (its frame) and as ``enter_in_view`` (for an object first seen inside the zone,
    the frame it is half in view, :func:`in_view`)."""
    feet: dict = {}
    paths: dict[int, list] = defaultdict(list)
    for f in sorted(frames):
        for i, b, _ in frames[f]:
            feet[(i, f)] = ((b[0] + b[2]) / 2, b[3])
            paths[i].append(f)
    events = []
    for i, fs in paths.items():
        was_in, side = False, None
        for f in fs:
            x, y = feet[(i, f)]
            inside = LAWN.contains_point((x, y))
            if inside and not was_in:
                events.append(("enter", i, f))
                events.append(("enter_in_view", i, in_view(frames, i, fs) if f == fs[0] else f))
            was_in = inside
            s = x >= 64
            if side is not None and s != side and 20 <= y <= 80:
                events.append(("cross", i, f))
            side = s
    return events


def gt_alerts(frames: dict[int, list], rules) -> list[tuple[str, int, tuple]]:
    """``[(kind, frame, box)]``: the rules run on the ground-truth tracks."""
    monitor = ZoneMonitor(rules, FPS)
    fired = []  # (frame, event)
    for f in sorted(frames):
        rows = frames[f]
        ids = np.array([r[0] for r in rows])
        boxes = np.array([r[1] for r in rows], np.float32)
        labels = np.array([r[2] for r in rows])
        events = monitor.update(
            (f - 1) / FPS, boxes, ids, labels, np.ones(len(ids)), list(CLASSES), clock(12)
        )
        fired += [(f, e) for e in events]
    # as sora watch does at the end of a file: timed at the last frame
    fired += [(max(frames, default=1), e) for e in monitor.finish()]
    return [("enter" if e["rule"] == "enter" else "cross", f, e["box"]) for f, e in fired]


def watch_alerts(
    video: Path,
    detector: Path,
    zones: Path,
    reid: str | None = "colour",
    nms_iou: float | None = NMS_IOU,
) -> tuple[list, dict]:
    """``[(kind, frame, box)]`` from ``sora watch``'s own loop on ``video``, and its summary."""
    from sora.inference.watch import watch

    events: list[dict] = []
    summary = watch(
        video,
        model=detector,
        zones=zones,
        realtime=False,
        on_event=events.append,
        reid=reid,
        nms_iou=nms_iou,
    )
    return event_alerts(events), summary


def event_alerts(events: list[dict]) -> list[tuple[str, int, list]]:
    """``sora watch``'s entry and crossing events -> ``[(kind, frame, box)]``, ``frame``
    1-based as in ``objects.csv``."""
    kinds = {"enter": "enter", "cross_in": "cross", "cross_out": "cross"}
    return [
        (kinds[e["rule"]], round(e["time"] * FPS) + 1, e["box"])
        for e in events
        if e["rule"] in kinds
    ]


def scene_detections(video: Path, vt) -> tuple[list, dict]:
    """SoraDet's detections of every frame of ``video``, as ``sora watch`` computes them with
    ``vt`` (a ``VideoTracker`` with colour re-identification: the run's low threshold, colour
    embeddings, one frame at a time; no images kept), and ``{"high", "conf", "fps",
    "nms_iou"}``: what its tracker is given."""
    from sora.io.video import VideoReader

    fps = vt.detector.config.detect.fps
    reader = VideoReader(video, fps=fps)
    frames = [
        dataclasses.replace(fd, image=None)
        for fd in vt.detector.detect_frames(
            iter(reader), score_thresh=vt.conf, chunk=1, embed=vt.reid
        )
    ]
    setting = {"high": vt.high, "conf": vt.conf, "fps": fps or float(reader.meta.fps or 25.0)}
    return frames, {**setting, "nms_iou": vt.nms_iou}


def tracker_variants() -> dict[str, tuple]:
    """``label -> (tracker, options, re-identification)``: ``tracker`` a name of
    ``sora.inference.tracking.TRACKERS`` or a class of the ``trackers`` package that
    ``sora watch`` does not offer (``make_tracker`` builds either). The first is ``sora
    watch``'s default."""
    import trackers

    return {
        "C-BIoU + colour re-identification (sora watch)": ("cbiou", {}, "colour"),
        "C-BIoU, no re-identification": ("cbiou", {}, None),
        "ByteTrack + colour re-identification (sora track's default)": (
            "bytetrack",
            {},
            "colour",
        ),
        "ByteTrack, no re-identification": ("bytetrack", {}, None),
        "OC-SORT": ("ocsort", {}, "colour"),
        "BoT-SORT": ("botsort", {}, "colour"),
        "SORT": ("sort", {}, "colour"),
        "ByteTrack, DIoU": ("bytetrack", {"iou": trackers.DIoU()}, "colour"),
        "ByteTrack, buffered IoU": ("bytetrack", {"iou": trackers.BIoU()}, "colour"),
        "ByteTrack, centre-area-ratio Kalman state": (
            "bytetrack",
            {"state_estimator_class": trackers.utils.state_representations.XCYCSRStateEstimator},
            "colour",
        ),
        "McByte without masks or camera motion (`trackers.McByteTracker`)": (
            trackers.McByteTracker,
            {"enable_cmc": False},
            "colour",
        ),
    }


def tracked_alerts(frames: list, setting: dict, rules, variant: tuple) -> list:
    """``[(kind, frame, box)]``: recorded detections (:func:`scene_detections`) associated
    by ``variant`` (:func:`tracker_variants`), then the zone rules, as ``sora watch`` does."""
    from sora.inference.reid import MAX_DISTANCE, ReIdentifier
    from sora.inference.reid import WINDOW as REID_WINDOW
    from sora.inference.tracking import make_tracker, track_detections

    name, options, reid = variant
    tracker = make_tracker(name, fps=setting["fps"], high=setting["high"], **options)
    if reid is None:
        frames = [fd if fd is None else dataclasses.replace(fd, embeddings=None) for fd in frames]
    monitor = ZoneMonitor(rules, setting["fps"])
    events = []
    for ft in track_detections(
        frames,
        tracker,
        conf=setting["conf"],
        nms_iou=setting["nms_iou"],
        reid=None if reid is None else ReIdentifier(REID_WINDOW, MAX_DISTANCE),
    ):
        events += monitor.update(
            ft.time, ft.boxes, ft.ids, ft.labels, ft.scores, list(CLASSES), clock(12)
        )
    events += monitor.finish()
    return event_alerts(events)


def true_box(frames: dict[int, list], obj: int, frame: int) -> list | None:
    """Object ``obj``'s true box in ``frame``; when it has none there, its box in the nearest
    frame within :data:`WINDOW` that has one (``objects.csv`` has no row for an object less
    than a pixel in view, though its legs are drawn: a detector can box them a frame before
    its first row); ``None`` when there is none."""
    reach = int(WINDOW * FPS)
    for d in sorted(range(-reach, reach + 1), key=abs):
        for i, b, _ in frames.get(frame + d, []):
            if i == obj:
                return b
    return None


def match(alerts: list, events: list, frames: dict[int, list]) -> list[tuple[int, int]]:
    """One-to-one matching of ``alerts`` (``[(frame, box)]``) to true ``events`` (``[(object,
    frame)]``) of one kind in one video, as COCO matches detections to true boxes: a pair can
    match when the alert comes within :data:`WINDOW` of the event and its box overlaps the
    event's object's true box in the alert's frame (``frames``; :func:`true_box`: the nearest
    frame with one when the object has none there) by IoU >= :data:`MIN_IOU`. The most pairs
    are matched (scipy's ``linear_sum_assignment``), ties broken by the highest total IoU.
    Returns ``[(alert index, event index)]``."""
    import torch
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    if not alerts or not events:
        return []
    weight = np.zeros((len(alerts), len(events)))
    for a, (f, box) in enumerate(alerts):
        near, boxes = [], []
        for e, (i, ft) in enumerate(events):
            if abs(f - ft) / FPS <= WINDOW and (b := true_box(frames, i, f)) is not None:
                near.append(e)
                boxes.append(b)
        if not near:
            continue
        iou = box_iou(torch.tensor([box]), torch.tensor(boxes))[0]
        for e, o in zip(near, iou.tolist(), strict=True):
            if o >= MIN_IOU:
                weight[a, e] = len(alerts) + o  # any one more pair outweighs all the IoUs
    pairs = zip(*linear_sum_assignment(weight, maximize=True), strict=True)
    return [(int(a), int(e)) for a, e in pairs if weight[a, e] > 0]


def score(videos: list[str], objects: dict, alerts: dict) -> dict:
    """Per kind: true events, alerts, and the pairs of them matched one-to-one (:func:`match`):
    precision is ``matched / alerts``, recall ``matched / true``."""
    stats = {k: {"true": 0, "alerts": 0, "matched": 0} for k in KINDS}
    for v in videos:
        events = truth(objects[v])
        for kind, s in stats.items():
            mine = [(f, box) for k, f, box in alerts[v] if k == kind.removesuffix("_in_view")]
            true = [(i, ft) for k, i, ft in events if k == kind]
            s["true"] += len(true)
            s["alerts"] += len(mine)
            s["matched"] += len(match(mine, true, objects[v]))
    return stats


def rows(label: str, stats: dict) -> list[str]:
    out = []
    for kind, s in stats.items():
        out.append(
            f"| {label} | {KINDS[kind]} | {s['true']} | {s['alerts']} | "
            f"{s['matched'] / max(s['alerts'], 1):.3f} | {s['matched'] / max(s['true'], 1):.3f} | "
            f"{s['alerts'] / max(s['true'], 1):.3f} |"
        )
    return out


def compare_trackers(run: Path, rules, videos: list, held: int) -> list[str]:
    """Markdown lines: each of :func:`tracker_variants` on the recorded detections of
    ``videos`` (``[(root, video, objects, sora watch's alerts)]``, the first ``held`` of them
    held out, the rest fresh), precision / recall of crossings and of entries from half in
    view; and how many videos the first variant gave ``sora watch``'s alerts on."""
    from sora.inference.tracking import VideoTracker

    vt = VideoTracker(run, reid="colour")
    recorded = {
        (root, v): scene_detections(root / "testing" / f"{v}.mp4", vt) for root, v, _, _ in videos
    }
    groups = [("held-out", videos[:held]), ("fresh", videos[held:])]
    groups = [(g, vs) for g, vs in groups if vs]
    head = [f"crossings, {g} ({len(vs)})" for g, vs in groups] + ["entries from half in view, all"]
    out = [
        "",
        "Association methods on the same SoraDet boxes (`--trackers`); precision / recall "
        "(alerts per true event):",
        "",
        "| association | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    same = 0
    for i, (label, variant) in enumerate(tracker_variants().items()):
        alerts = {}
        for root, v, _, watched in videos:
            frames, setting = recorded[(root, v)]
            alerts[(root, v)] = tracked_alerts(frames, setting, rules, variant)
            same += i == 0 and alerts[(root, v)] == watched
        cells = []
        entries = {"true": 0, "alerts": 0, "matched": 0}
        for _, vs in groups:  # the videos of a group share one root and objects
            mine = {v: alerts[(root, v)] for root, v, _, _ in vs}
            st = score(list(mine), vs[0][2], mine)
            cells.append(_cell(st["cross"]))
            for key in entries:
                entries[key] += st["enter_in_view"][key]
        out.append(f"| {label} | " + " | ".join([*cells, _cell(entries)]) + " |")
    out += ["", f"The first row gave `sora watch`'s alerts on {same} of {len(videos)} videos."]
    return out


def _cell(c: dict) -> str:
    """``precision / recall (alerts per true event)``."""
    p = c["matched"] / max(c["alerts"], 1)
    r = c["matched"] / max(c["true"], 1)
    return f"{p:.3f} / {r:.3f} ({c['alerts'] / max(c['true'], 1):.3f})"


def trained_detector(data: Path, run: Path, epochs: int) -> Path:
    """SoraDet trained on ``DATA/detect`` into ``run`` once, with the config of
    ``sora demo --task watch`` (``scene_detector_config``)."""
    if (run / "model").is_dir():
        return run
    from sora.demo_watch import scene_detector_config
    from sora.tasks.train import train

    train(scene_detector_config(epochs), data / "detect", run, progress=False)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="the set (default runs/motionshapes-anomaly[-N])")
    p.add_argument("--detector", action="store_true", help="also with sora watch's tracks")
    p.add_argument("--run", help="the detector run (default runs/bench-intrusion/SoraDet[-N])")
    p.add_argument(
        "--testing",
        type=int,
        default=14,
        metavar="N",
        help="testing videos in the set (default 14); the even ones train the detector",
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fresh", help="also fresh testing videos, generated into this folder")
    p.add_argument(
        "--fresh-videos",
        default="14:28",
        metavar="FIRST:END",
        help="which testing videos of generate(FRESH, train=0, test=END) are watched: FIRST to "
        "END - 1 (default 14:28; the first 14 are the set's own)",
    )
    p.add_argument(
        "--fresh-types",
        metavar="TYPE[,TYPE]",
        help="watch only the fresh videos of these anomaly types (default: every type; zone "
        "entries happen in the crowd videos: --fresh-types crowd)",
    )
    p.add_argument(
        "--nms",
        type=float,
        default=NMS_IOU,
        help=f"sora watch's --nms (default {NMS_IOU}, as sora watch's; 1 = off)",
    )
    p.add_argument(
        "--reid", default="colour", help="sora watch's --reid (default colour, as sora watch's)"
    )
    p.add_argument(
        "--trackers",
        action="store_true",
        help="with --detector: also compare association methods on the same boxes",
    )
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    reid = None if args.reid == "none" else args.reid
    nms = None if args.nms >= 1 else args.nms
    try:
        first, end = (int(n) for n in args.fresh_videos.split(":"))
    except ValueError:
        p.error(f"--fresh-videos {args.fresh_videos!r}: expected FIRST:END, e.g. 84:140")
    if args.trackers and (not args.detector or nms != NMS_IOU or reid != "colour"):
        p.error("--trackers needs --detector, and sora watch's --nms and --reid")
    if args.testing < 14:
        p.error("--testing N needs N >= 14 (every anomaly type twice)")
    if not args.testing <= first < end:
        p.error(f"--fresh-videos FIRST:END needs {args.testing} <= FIRST < END")
    try:
        new = fresh_names(first, end, args.fresh_types)
    except ValueError as e:
        p.error(f"--fresh-types: {e}")
    suffix = "" if args.testing == 14 else f"-{args.testing}"
    args.data = args.data or f"runs/motionshapes-anomaly{suffix}"
    args.run = args.run or f"runs/bench-intrusion/SoraDet{suffix}"
    tracks = "SoraDet + C-BIoU" + ("" if reid is None else f" + {reid} re-identification")
    tracks += ", no NMS before association" if nms is None else f", NMS {nms:g} before association"
    data = Path(args.data)
    generate(data, test=args.testing)
    objects = read_objects(data)
    rules = load_zones(data / "zones.yaml", WIDTH, HEIGHT)
    every = sorted(objects)
    held_out = sorted(
        d.name for split in ("val", "test") for d in (data / "detect" / split).iterdir()
    )
    gt = {v: gt_alerts(objects[v], rules) for v in every}
    table = rows(f"ground truth, {len(every)} videos", score(every, objects, gt))
    table += rows(f"ground truth, {len(held_out)} held-out videos", score(held_out, objects, gt))
    note = []
    if args.detector:
        run = trained_detector(data, Path(args.run), args.epochs)
        watched, fps = {}, []
        for v in held_out:
            start = time.perf_counter()
            watched[v], summary = watch_alerts(
                data / "testing" / f"{v}.mp4", run, data / "zones.yaml", reid, nms
            )
            fps.append(summary["frames_processed"] / (time.perf_counter() - start))
        table += rows(
            f"**sora watch** ({tracks}), {len(held_out)} held-out videos",
            score(held_out, objects, watched),
        )
        if args.fresh:
            fresh = Path(args.fresh)
            generate(fresh, train=0, test=end)
            new_objects = read_objects(fresh)
            new_gt = {v: gt_alerts(new_objects[v], rules) for v in new}
            only = f", {args.fresh_types} only" if args.fresh_types else ""
            which = f"{len(new)} fresh videos ({first}–{end - 1}{only})"
            table += rows(f"ground truth, {which}", score(new, new_objects, new_gt))
            seen = {
                v: watch_alerts(
                    fresh / "testing" / f"{v}.mp4", run, data / "zones.yaml", reid, nms
                )[0]
                for v in new
            }
            table += rows(
                f"**sora watch** ({tracks}), {which}",
                score(new, new_objects, seen),
            )
        if args.trackers:
            note += compare_trackers(
                run,
                rules,
                [(data, v, objects, watched[v]) for v in held_out]
                + ([(fresh, v, new_objects, seen[v]) for v in new] if args.fresh else []),
                len(held_out),
            )
        note = [
            "",
            f"The detector: the default SoraDet trained {args.epochs} epochs on `DATA/detect` "
            f"(train split: the 10 normal and {(args.testing + 1) // 2} even testing videos; "
            "checkpoint by val "
            f"mAP@[.5:.95]) into `{args.run}`; "
            f"`sora watch` ran at {np.median(fps):.0f} frames/s (median over the videos) "
            "with the zone rules.",
            *note,
        ]
    flags = " --detector" if args.detector else ""
    if args.testing != 14:
        flags += f" --testing {args.testing}"
    if args.detector and args.fresh:
        flags += f" --fresh DIR --fresh-videos {first}:{end}"
        if args.fresh_types:
            flags += f" --fresh-types {args.fresh_types}"
    if args.detector and args.nms != NMS_IOU:
        flags += f" --nms {args.nms:g}"
    if args.detector and args.trackers:
        flags += " --trackers"
    text = "\n".join(
        [
            f"## Zone intrusion and line crossing ({time.strftime('%Y-%m-%d')})",
            "",
            f"`python benchmarks/intrusion.py{flags}` on "
            f"{machine()}: MotionShapes-Anomaly's `zones.yaml`, debounce 0.2 s; an alert is "
            "matched one to one to a true event of the same kind within 0.5 s whose object's "
            "true box it overlaps (IoU >= 0.1; its nearest box within 0.5 s when it has none "
            "in the alert's frame). Held out: the odd testing videos, which the detector did "
            "not train on.",
            "",
            "| tracks | rule | true events | alerts | precision | recall | alerts per true event |",
            "|---|---|---|---|---|---|---|",
            *table,
            *note,
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("intrusion", text)


if __name__ == "__main__":
    main()
