"""MotionShapes-Det: synthetic sequences for video object detection and tracking.

Written in the MOTChallenge layout (:mod:`sora.data.mot`)::

    OUT/{train,val,test}/<split>_<i>/img1/000001.jpg ...
    OUT/{train,val,test}/<split>_<i>/gt/gt.txt        frame,id,x,y,w,h,1,class,visibility
    OUT/{train,val,test}/<split>_<i>/gt/labels.txt    circle, square, triangle
    OUT/{train,val,test}/<split>_<i>/seqinfo.ini
    OUT/labels.txt
    OUT/motionshapes_det.json                         generator version, seed, counts

Each sequence shows 2-6 coloured shapes of three classes (circle, square, triangle) with
identities, moving on smooth random paths over a textured background, and what makes video
detection hard:

* occlusion: static grey pillars in front of the objects, and objects passing in front of
  each other (a random depth order); boxes are amodal (the whole object, as in MOT17) and
  ``visibility`` is the fraction of the object's pixels that can be seen;
* flicker: an object disappears for 1-4 frames (visibility 0, still annotated);
* light drops: the whole frame darkens to 20-40% for 3-8 frames;
* motion blur: fast objects are drawn at three sub-frame positions;
* sizes from 6 pixels across to half the frame height; objects entering and leaving;
* camera shake (a smooth random walk of up to 4 pixels), sensor noise;
* distractors: grey moving shapes (not annotated) and the pillars.

With ``actions=True`` (``sora data synth --task detect --actions``) every object also does
one of four **actions** for the whole sequence, for per-track action recognition, written to
``gt/actions.txt`` (``id,action`` per line) and ``OUT/actions.txt`` (the names):

* ``glide``: moves along its path at 1-2.5 px per frame;
* ``zigzag``: the same, swinging 4-6 px to the side and back every 10-14 frames;
* ``stop_go``: stops and goes again every 8-12 frames (twice the speed while going);
* ``pulse``: grows and shrinks by 35% every 10-16 frames while it moves.

Objects do not spin in that variant (a spin would be a fifth, unlabelled motion). The
action draws use their own random stream, and without ``actions`` the files are exactly
those of the plain dataset.

Everything is a pure function of ``(seed, split, index)``: the same seed gives the same files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sora.data.synth import (
    _background,
    _blend,
    _polygon,
    _saturated_colour,
    claim_folder,
    run_jobs,
)
from sora.io.files import atomic_write_bytes, atomic_write_text

CLASSES = ("circle", "square", "triangle")
ACTIONS = ("glide", "zigzag", "stop_go", "pulse")
VERSION = 1
WIDTH, HEIGHT, FPS = 128, 96, 15.0
SPLIT_IDS = {"train": 10, "val": 11, "test": 12}
INFO = "motionshapes_det.json"


@dataclass
class _Track:
    cls: int
    colour: tuple[int, int, int]
    x: np.ndarray  # (n,) centre, pixels
    y: np.ndarray
    r: float  # half extent
    angle: np.ndarray  # degrees
    alpha: np.ndarray  # (n,) 1 or 0 (flicker)
    depth: float
    scale: np.ndarray | None = None  # (n,) size factor (pulse); None: 1
    action: int = -1  # index into ACTIONS; -1 without actions

    def radius(self, t: int) -> float:
        return self.r if self.scale is None else self.r * float(self.scale[t])


def _path(
    rng: np.random.Generator, n: int, r: float, w: int, h: int, speed: float | None = None
) -> tuple:
    """A smooth random path: start anywhere (some just outside the frame), a speed of
    0.3-3 px per frame (or ``speed``), a slowly turning heading; bounces off a margin
    around the frame."""
    x = np.empty(n)
    y = np.empty(n)
    px, py = rng.uniform(-r, w + r), rng.uniform(-r, h + r)
    if speed is None:
        speed = math.exp(rng.uniform(math.log(0.3), math.log(3.0)))
    heading = rng.uniform(0, 2 * math.pi)
    turn = rng.normal(0, 0.04, size=n).cumsum() * 0.5
    for t in range(n):
        x[t], y[t] = px, py
        vx, vy = speed * math.cos(heading + turn[t]), speed * math.sin(heading + turn[t])
        px, py = px + vx, py + vy
        if not -2 * r < px < w + 2 * r:
            heading = math.pi - heading
            px = min(max(px, -2 * r), w + 2 * r)
        if not -2 * r < py < h + 2 * r:
            heading = -heading
            py = min(max(py, -2 * r), h + 2 * r)
    return x, y, speed


def _act(rng: np.random.Generator, tr: _Track, n: int, w: int, h: int) -> None:
    """Give ``tr`` an action: a new path at 1-2.5 px per frame, shaped by the action, no
    spin (see the module docstring)."""
    tr.action = int(rng.integers(len(ACTIONS)))
    x, y, _ = _path(rng, n, tr.r, w, h, speed=rng.uniform(1.0, 2.5))
    t = np.arange(n)
    phase = rng.uniform(0, 2 * math.pi)
    name = ACTIONS[tr.action]
    if name == "zigzag":
        vx, vy = np.gradient(x), np.gradient(y)
        norm = np.maximum(np.hypot(vx, vy), 1e-6)
        swing = rng.uniform(4, 6) * np.sin(2 * math.pi * t / rng.uniform(10, 14) + phase)
        x, y = x - swing * vy / norm, y + swing * vx / norm
    elif name == "stop_go":
        going = np.sin(2 * math.pi * t / rng.uniform(16, 24) + phase) > 0
        progress = np.minimum(np.concatenate([[0.0], np.cumsum(2.0 * going[:-1])]), n - 1)
        x, y = np.interp(progress, t, x), np.interp(progress, t, y)
    elif name == "pulse":
        tr.scale = 1 + 0.35 * np.sin(2 * math.pi * t / rng.uniform(10, 16) + phase)
    tr.x, tr.y = x, y
    tr.angle = np.full(n, tr.angle[0])


def _mask(pts: list[tuple[float, float]], w: int, h: int) -> np.ndarray:
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon(pts, fill=255)
    return np.asarray(img) > 127


def render_sequence(
    seed: int, split: str, index: int, num_frames: int, actions: bool = False
) -> tuple[np.ndarray, list[tuple], dict[int, str]]:
    """Render one sequence: frames ``(T, H, W, 3)`` uint8, its gt rows
    ``(frame, id, x, y, w, h, conf, class, visibility)`` (1-based frame, MOT pixels) and
    ``{id: action}`` (empty without ``actions``)."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index, VERSION])
    w, h, n = WIDTH, HEIGHT, num_frames
    bg = _background(rng, w, h)  # (h + 8, w + 8, 3), margin for the shake
    tracks: list[_Track] = []
    for _ in range(int(rng.integers(2, 7))):
        r = math.exp(rng.uniform(math.log(3.0), math.log(h * 0.25)))
        x, y, speed = _path(rng, n, r, w, h)
        spin = rng.uniform(-4, 4) if rng.random() < 0.5 else 0.0
        angle = rng.uniform(0, 360) + spin * np.arange(n)
        alpha = np.ones(n)
        if rng.random() < 0.35:  # flicker: gone for 1-4 frames, 1-3 times
            for _ in range(int(rng.integers(1, 4))):
                t0 = int(rng.integers(0, n))
                alpha[t0 : t0 + int(rng.integers(1, 5))] = 0
        tracks.append(
            _Track(
                int(rng.integers(len(CLASSES))),
                _saturated_colour(rng),
                x,
                y,
                r,
                angle,
                alpha,
                float(rng.uniform()),
            )
        )
    if actions:  # its own stream: the draws below stay those of the plain dataset
        act_rng = np.random.default_rng([seed, SPLIT_IDS[split], index, VERSION, 1])
        for tr in tracks:
            _act(act_rng, tr, n, w, h)
    pillars = []
    for _ in range(int(rng.integers(0, 3))):
        pw = rng.uniform(6, 18)
        px = rng.uniform(0, w - pw)
        vertical = rng.random() < 0.7
        grey = int(rng.uniform(50, 200))
        if vertical:
            box = (px, -8.0, px + pw, h + 8.0)
        else:
            py = rng.uniform(0, h - pw)
            box = (-8.0, py, w + 8.0, py + pw)
        pillars.append((box, (grey, grey, grey + int(rng.integers(-10, 10)))))
    distractors = []
    for _ in range(int(rng.integers(0, 4))):
        r = rng.uniform(2, h * 0.1)
        x, y, _ = _path(rng, n, r, w, h)
        grey = int(rng.uniform(40, 220))
        distractors.append(
            (str(rng.choice(("circle", "square", "triangle", "bar"))), x, y, r, grey)
        )
    dark = np.ones(n)
    if rng.random() < 0.3:
        t0 = int(rng.integers(0, n))
        dark[t0 : t0 + int(rng.integers(3, 9))] = rng.uniform(0.2, 0.4)
    shake = rng.uniform(0, 0.8)
    jitter = np.clip(np.round(rng.normal(0, shake, size=(n, 2)).cumsum(0)), -4, 4).astype(int)
    noise = rng.uniform(0, 5)

    frames = np.empty((n, h, w, 3), np.uint8)
    rows: list[tuple] = []
    order = sorted(range(len(tracks)), key=lambda k: tracks[k].depth)  # far first
    for t in range(n):
        canvas = bg.copy()
        ox, oy = 4 + jitter[t, 0], 4 + jitter[t, 1]  # canvas offset of the view
        for shape, x, y, r, grey in distractors:
            pts = _polygon(shape, x[t] + 4, y[t] + 4, r, 0.0)
            _blend(canvas, pts, (grey, grey, grey), 1.0)
        masks = {}
        for k in order:
            tr = tracks[k]
            name = CLASSES[tr.cls]
            # motion blur: fast objects drawn at three sub-frame positions
            vx = tr.x[min(t + 1, n - 1)] - tr.x[max(t - 1, 0)]
            vy = tr.y[min(t + 1, n - 1)] - tr.y[max(t - 1, 0)]
            # (each at half opacity: the centre ends up 88% opaque, the trailing edges 50%)
            blur = math.hypot(vx, vy) > 3
            for s in (-1 / 6, 0.0, 1 / 6) if blur else (0.0,):
                pts = _polygon(
                    name, tr.x[t] + 4 + s * vx, tr.y[t] + 4 + s * vy, tr.radius(t), tr.angle[t]
                )
                _blend(canvas, pts, tr.colour, tr.alpha[t] * (0.5 if blur else 1.0))
            view = [
                (px - ox, py - oy)
                for px, py in _polygon(name, tr.x[t] + 4, tr.y[t] + 4, tr.radius(t), tr.angle[t])
            ]
            masks[k] = (_mask(view, w, h), view)
        for box, colour in pillars:
            x0, y0, x1, y1 = box
            _blend(
                canvas,
                [(x0 + 4, y0 + 4), (x1 + 4, y0 + 4), (x1 + 4, y1 + 4), (x0 + 4, y1 + 4)],
                colour,
                1.0,
            )
        cover = np.zeros((h, w), bool)  # what is in front, from the nearest back
        for box, _ in pillars:
            x0, y0, x1, y1 = (box[0] - ox + 4, box[1] - oy + 4, box[2] - ox + 4, box[3] - oy + 4)
            cover[
                max(0, int(round(y0))) : max(0, int(round(y1))),
                max(0, int(round(x0))) : max(0, int(round(x1))),
            ] = True
        for k in reversed(order):
            mask, view = masks[k]
            xs, ys = [p[0] for p in view], [p[1] for p in view]
            bx0, by0 = max(0.0, min(xs)), max(0.0, min(ys))
            bx1, by1 = min(float(w), max(xs)), min(float(h), max(ys))
            if bx1 - bx0 >= 1 and by1 - by0 >= 1:
                area = mask.sum()
                seen = (mask & ~cover).sum() if tracks[k].alpha[t] > 0 else 0
                vis = float(seen / area) if area else 0.0
                rows.append(
                    (
                        t + 1,
                        k + 1,
                        bx0 + 1,
                        by0 + 1,
                        bx1 - bx0,
                        by1 - by0,
                        1,
                        tracks[k].cls + 1,
                        vis,
                    )
                )
            if tracks[k].alpha[t] > 0:
                cover |= mask
        view_img = canvas[oy : oy + h, ox : ox + w] * dark[t]
        view_img = view_img + noise * rng.standard_normal(size=view_img.shape, dtype=np.float32)
        frames[t] = np.clip(view_img, 0, 255).astype(np.uint8)
    rows.sort()
    return frames, rows, {k + 1: ACTIONS[tr.action] for k, tr in enumerate(tracks) if actions}


def _write_sequence(args: tuple[Path, int, str, int, int, bool]) -> str:
    out, seed, split, index, num_frames, actions = args
    seq = out / split / f"{split}_{index:03d}"
    done = seq / "gt" / "gt.txt"
    if done.is_file():
        return str(seq)  # cached: generation is deterministic
    frames, rows, acts = render_sequence(seed, split, index, num_frames, actions)
    import io

    for t, frame in enumerate(frames, start=1):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=92)
        atomic_write_bytes(seq / "img1" / f"{t:06d}.jpg", buffer.getvalue())
    atomic_write_text(seq / "gt" / "labels.txt", "\n".join(CLASSES) + "\n")
    if actions:
        atomic_write_text(
            seq / "gt" / "actions.txt", "".join(f"{i},{a}\n" for i, a in acts.items())
        )
    atomic_write_text(
        seq / "seqinfo.ini",
        f"[Sequence]\nname={seq.name}\nimDir=img1\nframeRate={FPS:g}\nseqLength={num_frames}\n"
        f"imWidth={WIDTH}\nimHeight={HEIGHT}\nimExt=.jpg\n",
    )
    text = "".join(
        f"{f},{i},{x:.2f},{y:.2f},{bw:.2f},{bh:.2f},{c},{k},{v:.3f}\n"
        for f, i, x, y, bw, bh, c, k, v in rows
    )
    atomic_write_text(done, text)  # written last: its presence marks a finished sequence
    return str(seq)


def generate(
    out: str | Path,
    *,
    train: int = 24,
    val: int = 4,
    test: int = 8,
    frames: int = 90,
    seed: int = 0,
    workers: int | None = None,
    actions: bool = False,
) -> Path:
    """Write MotionShapes-Det to ``out`` (counts are sequences of ``frames`` frames each);
    ``actions``: the variant where every object does one of :data:`ACTIONS`.

    Existing sequences are kept (a cache); a folder made with another seed, version or
    length is refused rather than mixed.
    """
    out = Path(out)
    info_path = out / INFO
    info = {"version": VERSION, "seed": seed, "frames": frames, "classes": list(CLASSES)}
    info["actions"] = list(ACTIONS) if actions else None  # None: absent in older folders
    claim_folder(out, info_path, info, "MotionShapes-Det")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(info_path, json.dumps(info, indent=2))
    jobs = [
        (out, seed, split, i, frames, actions)
        for split, count in (("train", train), ("val", val), ("test", test))
        for i in range(count)
    ]
    run_jobs(_write_sequence, jobs, workers, serial_below=4)
    atomic_write_text(out / "labels.txt", "\n".join(CLASSES) + "\n")
    if actions:
        atomic_write_text(out / "actions.txt", "\n".join(ACTIONS) + "\n")
    atomic_write_text(
        info_path,
        json.dumps({**info, "sequences": {"train": train, "val": val, "test": test}}, indent=2),
    )
    return out
