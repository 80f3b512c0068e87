"""MotionShapes-Anomaly: a fixed camera over a walkway, for anomaly detection and zones.

The scene (128 x 96 pixels, 15 fps, the same background in every video) is grass with a
two-lane walkway across it: people walk right in the upper lane and left in the lower one,
at 0.7-1.3 px per frame, swinging their legs. Training videos show only that. Each testing
video shows the same, plus one **anomaly** of one of seven types, starting a fifth to a third
of the way in:

* ``running``: someone runs along a lane at 3.2-4 px per frame;
* ``wrong_way``: someone walks against the lane's flow;
* ``loitering``: someone stops halfway and wanders on the spot for the rest of the video;
* ``falling``: someone falls over (turns flat within 6 frames) and stays down;
* ``vehicle``: a car drives along the walkway;
* ``thrown``: a small object flies across in an arc;
* ``crowd``: five or six people come from all sides (across the grass too) and gather.

Written in the anomaly layout (:mod:`sora.data.anomaly`)::

    OUT/training/train_<i>.mp4             normal only
    OUT/testing/test_<i>.mp4 + test_<i>.txt one 0/1 per frame (1 while an anomaly is seen)
    OUT/anomaly_boxes.csv                  video,frame,x1,y1,x2,y2,type of anomalous objects
    OUT/objects.csv                        video,frame,id,x1,y1,x2,y2,class of every object
                                           (person, vehicle, object): ground truth for zones
    OUT/detect/{train,val,test}/<video>/   the same videos as a MOTChallenge layout (the
                                           video hard-linked, gt/gt.txt from objects.csv), to
                                           train the detector ``sora watch`` tracks with:
                                           train = training + even testing videos, val and
                                           test = the odd testing videos, alternately
    OUT/zones.yaml                         zone and line rules for ``sora watch`` on the scene
                                           (:data:`ZONES`): the lawn above the walkway, which
                                           only the crowd's people enter, and a line across the
                                           walkway that every walker crosses
    OUT/motionshapes_anomaly.json          generator version, seed, counts (written last: a
                                           folder with it complete is reused as it is)

Everything is a pure function of ``(seed, split, index)``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sora.data.synth import claim_folder, run_jobs
from sora.io.files import atomic_write_text, link_or_copy
from sora.io.video import write_video

TYPES = ("running", "wrong_way", "loitering", "falling", "vehicle", "thrown", "crowd")
CLASSES = ("person", "vehicle", "object")
VERSION = 2  # 2: the crowd's people are not drawn before they set off
WIDTH, HEIGHT, FPS = 128, 96, 15.0
INFO = "motionshapes_anomaly.json"
#: ``OUT/zones.yaml``: the lawn above the walkway (pixels) and a line across the walkway
ZONES = """\
# sora watch rules for MotionShapes-Anomaly (docs/watch.md)
debounce: 0.2
zones:
  - name: lawn
    polygon: [[0, 0], [128, 0], [128, 27], [0, 27]]
lines:
  - name: crossing
    start: [64, 20]
    end: [64, 80]
"""
#: the lanes: feet height range and walking direction (+1 right, -1 left)
LANES = (((38.0, 48.0), 1), ((62.0, 72.0), -1))
WALK = (0.7, 1.3)


@dataclass
class _Agent:
    """One object's path: per frame ``x``, ``y`` (feet / ground contact, pixels), ``angle``
    (degrees, 0 upright), ``swing`` (leg phase) and whether it is ``anomalous`` then."""

    kind: str  # person, vehicle, object
    colour: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    swing: np.ndarray
    anomalous: np.ndarray
    type: str | None = None
    ident: int = 0
    extra: dict = field(default_factory=dict)


def _scene(seed: int) -> np.ndarray:
    """The fixed background ``(H, W, 3)`` uint8: grass, a paved two-lane walkway, a bench."""
    rng = np.random.default_rng([seed, 99])
    y = np.arange(HEIGHT)[:, None, None]
    grass = np.array([70, 120, 60]) + rng.normal(0, 9, (HEIGHT, WIDTH, 3))
    path = np.array([150, 145, 135]) + rng.normal(0, 4, (HEIGHT, WIDTH, 3))
    img = np.where((y >= 28) & (y < 80), path, grass)
    img[28:80:8] -= 12  # paving joints
    img[:, ::10][28:80] -= 8
    img[54:56, (np.arange(WIDTH) // 6) % 2 == 0] = (230, 225, 200)  # lane divider
    img[10:16, 50:74] = (110, 80, 50)  # a bench on the grass
    img[86:94, 100:104] = (90, 90, 95)  # a bin
    return np.clip(img, 0, 255).astype(np.uint8)


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(20, 235, 3))


def _walker(rng, n: int, t0: int, lane: int, direction: int, speed: float) -> _Agent:
    """Someone walking along ``lane`` from one edge, entering at frame ``t0``."""
    (lo, hi), _ = LANES[lane]
    t = np.arange(n) - t0
    start = -6.0 if direction > 0 else WIDTH + 6.0
    x = start + direction * speed * t
    y = np.full(n, rng.uniform(lo, hi)) + 0.4 * np.sin(t * 0.7)
    return _Agent("person", _muted(rng), x, y, np.zeros(n), t * speed * 0.5, np.zeros(n, bool))


def _normal_people(rng, n: int) -> list[_Agent]:
    people = []
    for lane, (_, direction) in enumerate(LANES):
        t0 = -int(rng.integers(0, 150))
        while t0 < n:
            people.append(_walker(rng, n, t0, lane, direction, rng.uniform(*WALK)))
            t0 += int(rng.exponential(40)) + 12
    return people


def _anomaly(rng, kind: str, n: int, start: int) -> list[_Agent]:
    """The agents of one anomaly of ``kind`` starting at frame ``start``."""
    lane = int(rng.integers(2))
    direction = LANES[lane][1]
    if kind == "running":
        a = _walker(rng, n, start, lane, direction, rng.uniform(3.2, 4.0))
        a.swing = a.swing * 1.6
        return [a]
    if kind == "wrong_way":
        return [_walker(rng, n, start, lane, -direction, rng.uniform(*WALK))]
    speed = rng.uniform(*WALK)
    if kind in ("loitering", "falling"):
        a = _walker(rng, n, start - int(rng.integers(30, 60) / speed), lane, direction, speed)
        stop = start
        if kind == "loitering":
            x_stop, t = a.x[stop], np.arange(n - stop)
            a.x[stop:] = x_stop + 4 * np.sin(t * 0.08) + 1.5 * np.sin(t * 0.23)
            a.swing[stop:] = a.swing[stop] + 0.3 * np.abs(np.sin(t * 0.08)).cumsum() * 0.08
        else:
            a.x[stop:] = a.x[stop] + direction * np.minimum(np.arange(n - stop), 6) * 0.8
            a.angle[stop:] = direction * np.minimum(np.arange(n - stop) / 6, 1) * 88
            a.swing[stop:] = a.swing[stop]
            a.y[stop:] = a.y[stop]
        a.anomalous[stop:] = True
        a.extra["anomalous_from"] = stop
        return [a]
    if kind == "vehicle":
        a = _walker(rng, n, start, lane, direction, rng.uniform(1.8, 2.4))
        a.kind, a.colour = "vehicle", (int(rng.integers(150, 230)), 30, 30)
        a.x = a.x - direction * 12
        return [a]
    if kind == "thrown":
        t = np.arange(n) - start
        dur = int(rng.integers(18, 26))
        x0 = rng.uniform(20, 50)
        a = _Agent(
            "object",
            (250, 240, 40),
            x0 + 4.5 * t,
            rng.uniform(45, 65) - 0.5 * t * (dur - t) * 0.18 * 1.0,
            np.zeros(n),
            np.zeros(n),
            np.zeros(n, bool),
        )
        a.extra["visible"] = (t >= 0) & (t < dur)
        return [a]
    # crowd: 5-6 people walk to a meeting point from all sides, then stand there
    cx, cy = rng.uniform(40, 88), rng.uniform(45, 66)
    agents = []
    for k in range(int(rng.integers(5, 7))):
        ang = 2 * math.pi * k / 6 + rng.uniform(-0.3, 0.3)
        sx, sy = cx + 90 * math.cos(ang), cy + 70 * math.sin(ang)
        gx, gy = cx + 6 * math.cos(ang), cy + 3 * math.sin(ang)
        speed = rng.uniform(1.4, 2.0)
        dist = math.hypot(gx - sx, gy - sy)
        t = np.clip(np.arange(n) - start, 0, None) * speed
        f = np.minimum(t / dist, 1.0)
        x, y = sx + (gx - sx) * f, sy + (gy - sy) * f
        a = _Agent("person", _muted(rng), x, y, np.zeros(n), t * 0.5 * (f < 1), np.zeros(n, bool))
        a.extra["visible"] = np.arange(n) >= start  # not standing at the frame's edge before
        agents.append(a)
    return agents


def _ellipse(cx, cy, rx, ry, angle, about) -> list[tuple[float, float]]:
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    pts = []
    for u in np.linspace(0, 2 * math.pi, 16, endpoint=False):
        px, py = cx + rx * math.cos(u) - about[0], cy + ry * math.sin(u) - about[1]
        pts.append((about[0] + px * ca - py * sa, about[1] + px * sa + py * ca))
    return pts


def _draw(draw: ImageDraw.ImageDraw, a: _Agent, t: int) -> tuple[float, ...] | None:
    """Draw agent ``a`` at frame ``t``; returns its box ``(x1, y1, x2, y2)`` or ``None``."""
    x, y = float(a.x[t]), float(a.y[t])
    if "visible" in a.extra and not a.extra["visible"][t]:
        return None
    if a.kind == "object":
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=a.colour)
        box = (x - 2, y - 2, x + 2, y + 2)
    elif a.kind == "vehicle":
        box = (x - 13, y - 11, x + 13, y)
        draw.rectangle(box, fill=a.colour)
        draw.rectangle((x - 8, y - 10, x + 8, y - 6), fill=(60, 80, 110))
        for wx in (x - 8, x + 8):
            draw.ellipse([wx - 2.5, y - 2.5, wx + 2.5, y + 2.5], fill=(20, 20, 20))
    else:
        ang = float(a.angle[t])
        s = math.sin(float(a.swing[t]))
        for side in (-1, 1):  # legs
            leg = [(x + side * 1.2 * (1 - abs(ang) / 90), y - 5), (x + side * s * 2.2, y)]
            if ang:
                leg = [_rot(p, ang, (x, y)) for p in leg]
            draw.line(leg, fill=(40, 40, 50), width=2)
        body = _ellipse(x, y - 8.5, 2.8, 4.5, ang, (x, y))
        draw.polygon(body, fill=a.colour)
        hx, hy = _rot((x, y - 14.5), ang, (x, y))
        draw.ellipse([hx - 2, hy - 2, hx + 2, hy + 2], fill=(225, 185, 150))
        pts = body + [(hx - 2, hy - 2), (hx + 2, hy + 2), (x - 2.5, y), (x + 2.5, y)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        box = (min(xs), min(ys), max(xs), max(ys))
    x1, x2 = np.clip([box[0], box[2]], 0.0, WIDTH - 1.0)
    y1, y2 = np.clip([box[1], box[3]], 0.0, HEIGHT - 1.0)
    if x2 - x1 < 1 or y2 - y1 < 1:  # less than a pixel in view
        return None
    return (float(x1), float(y1), float(x2), float(y2))


def _rot(p, angle, about) -> tuple[float, float]:
    a = math.radians(angle)
    dx, dy = p[0] - about[0], p[1] - about[1]
    return (
        about[0] + dx * math.cos(a) - dy * math.sin(a),
        about[1] + dx * math.sin(a) + dy * math.cos(a),
    )


def testing_type(index: int) -> str:
    """The anomaly type of testing video ``index`` (the types in turn, :data:`TYPES`)."""
    return TYPES[index % len(TYPES)]


def render_video(seed: int, split: str, index: int, frames: int = 240) -> tuple[np.ndarray, dict]:
    """One video: ``(T, H, W, 3)`` uint8 and its annotations: ``labels`` (T,) 0/1,
    ``type`` (or ``None``), ``anomaly_boxes`` ``[(frame, box, type)]``, ``objects``
    ``[(frame, id, box, class)]`` (frames 1-based)."""
    rng = np.random.default_rng([seed, {"training": 0, "testing": 1}[split], index])
    agents = _normal_people(rng, frames)
    kind = None
    if split == "testing":
        kind = testing_type(index)
        start = int(rng.uniform(0.19, 0.37) * frames)
        for a in _anomaly(rng, kind, frames, start):
            a.type = kind
            if "anomalous_from" not in a.extra:
                a.anomalous[start:] = True
            agents.append(a)
    for i, a in enumerate(agents, 1):
        a.ident = i
    order = sorted(agents, key=lambda a: float(np.mean(a.y)))  # nearer (lower) drawn last
    bg = _scene(seed).astype(np.float32)
    video = np.empty((frames, HEIGHT, WIDTH, 3), np.uint8)
    labels = np.zeros(frames, np.uint8)
    boxes, objects = [], []
    for t in range(frames):
        img = Image.fromarray(
            np.clip(
                bg * (1 + 0.03 * math.sin(t / 40)) + rng.normal(0, 2.0, bg.shape), 0, 255
            ).astype(np.uint8)
        )
        draw = ImageDraw.Draw(img)
        for a in sorted(order, key=lambda a: float(a.y[t])):
            box = _draw(draw, a, t)
            if box is None:
                continue
            objects.append((t + 1, a.ident, box, a.kind))
            if a.anomalous[t]:
                labels[t] = 1
                boxes.append((t + 1, box, a.type))
        video[t] = np.asarray(img)
    ann = {"labels": labels, "type": kind, "anomaly_boxes": boxes, "objects": objects}
    return video, ann


def _write_one(args: tuple[Path, int, str, int, int]) -> tuple[str, list, list]:
    out, seed, split, index, frames = args
    name = f"{'train' if split == 'training' else 'test'}_{index:03d}"
    video, ann = render_video(seed, split, index, frames)
    path = out / split / f"{name}.mp4"
    write_video(path, video, FPS, crf=18, threads=1, overwrite=True)
    if split == "testing":
        atomic_write_text(out / split / f"{name}.txt", "".join(f"{v}\n" for v in ann["labels"]))
    boxes = [(name, f, *b, k) for f, b, k in ann["anomaly_boxes"]]
    objects = [(name, f, i, *b, c) for f, i, b, c in ann["objects"]]
    return name, boxes, objects


def _csv(rows: list, header: list[str]) -> str:
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([f"{v:.1f}" if isinstance(v, float) else v for v in r])
    return buffer.getvalue()


def generate(
    out: str | Path,
    *,
    train: int = 10,
    test: int = 14,
    frames: int = 240,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Write MotionShapes-Anomaly to ``out``: ``train`` normal videos, ``test`` testing videos
    (the anomaly types in turn), ``frames`` frames each. A folder made with other settings is
    refused rather than mixed. A finished folder made by the same call is reused as it is
    (``zones.yaml`` is written when missing, never over a user's edits)."""
    out = Path(out)
    info = {"version": VERSION, "seed": seed, "frames": frames, "types": list(TYPES)}
    claim_folder(out, out / INFO, info, "MotionShapes-Anomaly")
    complete = {**info, "videos": {"training": train, "testing": test}}
    if (out / INFO).is_file() and json.loads((out / INFO).read_text()) == complete:
        if not (out / "zones.yaml").exists():
            atomic_write_text(out / "zones.yaml", ZONES)
        return out
    (out / "training").mkdir(parents=True, exist_ok=True)
    (out / "testing").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / INFO, json.dumps(info, indent=2))
    jobs = [(out, seed, "training", i, frames) for i in range(train)]
    jobs += [(out, seed, "testing", i, frames) for i in range(test)]
    done = run_jobs(_write_one, jobs, workers, serial_below=4)
    boxes = [r for _, b, _ in done for r in b]
    objects = [r for _, _, o in done for r in o]
    atomic_write_text(
        out / "anomaly_boxes.csv", _csv(boxes, ["video", "frame", "x1", "y1", "x2", "y2", "type"])
    )
    atomic_write_text(
        out / "objects.csv",
        _csv(objects, ["video", "frame", "id", "x1", "y1", "x2", "y2", "class"]),
    )
    _detect_layout(out, objects, frames)
    if not (out / "zones.yaml").exists():
        atomic_write_text(out / "zones.yaml", ZONES)
    atomic_write_text(out / INFO, json.dumps(complete, indent=2))
    return out


def _detect_layout(out: Path, objects: list, frames: int) -> None:
    """``OUT/detect/``: every video as a MOT sequence (see the module docstring)."""
    rows: dict[str, list[str]] = {}
    for name, f, i, x1, y1, x2, y2, c in objects:
        rows.setdefault(name, []).append(
            f"{f},{i},{x1 + 1:.1f},{y1 + 1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},1,{CLASSES.index(c) + 1},1\n"
        )
    videos = sorted((out / "training").glob("*.mp4")) + sorted((out / "testing").glob("*.mp4"))
    odd = 0
    for video in videos:
        k = int(video.stem[-3:])
        if video.stem.startswith("train") or k % 2 == 0:
            split = "train"
        else:
            split, odd = ("val" if odd % 2 == 0 else "test"), odd + 1
        seq = out / "detect" / split / video.stem
        (seq / "gt").mkdir(parents=True, exist_ok=True)
        target = seq / video.name
        if not target.exists():
            link_or_copy(video, target)
        atomic_write_text(seq / "gt" / "labels.txt", "\n".join(CLASSES) + "\n")
        atomic_write_text(
            seq / "seqinfo.ini",
            f"[Sequence]\nname={video.stem}\nframeRate={FPS:g}\nseqLength={frames}\n"
            f"imWidth={WIDTH}\nimHeight={HEIGHT}\n",
        )
        atomic_write_text(seq / "gt" / "gt.txt", "".join(rows.get(video.stem, [])))
