"""MotionShapes: a synthetic action dataset where frame order matters.

Ten classes come in five pairs, each the time reversal of the other::

    slide_left / slide_right, rise / fall, grow / shrink, rotate_cw / rotate_ccw, appear / vanish

``rotate_*``: a large asymmetric shape (arrow or flag, half-extent 18-40% of the short side)
spins in place by 150-300 degrees, clockwise or counter-clockwise on screen. (Orbiting a
pivot was tried too; neither variant is learned by the demo model, see the README.)

Because the timing (still time before and after the motion) is drawn symmetrically, the
*set* of frames of a clip has the same distribution as that of its reversed twin: a model
that averages frames (order-blind) cannot beat 50% inside a pair, while a temporal model can
reach ~100%. Nuisance variation: object size (a few pixels to half the frame), speed, start
time, shape, colour, textured and noisy backgrounds, moving distractors (grey, smaller),
camera jitter, clip length (1.6-3.2 s) and frame rate (12-30 fps), frame size (3 sizes, 4:3).

Output (real encoded H.264 mp4 files, folder-per-class)::

    OUT/{train,val,test}/<class>/<class>_<split>_<i>.mp4
    OUT/annotations/{train,val,test}/<class>/<class>_<split>_<i>.json
    OUT/motionshapes.json            # generator version, seed, counts, classes

Each annotation JSON holds ``fps``, ``width``, ``height``, ``num_frames``, ``label`` and
``objects``: one per object with ``track_id``, ``role`` (``target``/``distractor``),
``shape`` and per-frame ``boxes`` (``xyxy`` pixels, ``null`` where not visible).
Everything is a pure function of ``(seed, split, class, index)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sora.io.files import atomic_write_text
from sora.io.video import write_video

CLASSES = (
    "slide_left",
    "slide_right",
    "rise",
    "fall",
    "grow",
    "shrink",
    "rotate_cw",
    "rotate_ccw",
    "appear",
    "vanish",
)
VERSION = 3
#: Each class is the time reversal of its twin.
REVERSE_PAIRS = (
    ("slide_left", "slide_right"),
    ("rise", "fall"),
    ("grow", "shrink"),
    ("rotate_cw", "rotate_ccw"),
    ("appear", "vanish"),
)
#: A left-right mirror turns each class into its twin; the other classes stay what they are.
MIRROR_PAIRS = (("slide_left", "slide_right"), ("rotate_cw", "rotate_ccw"))
FRAME_SIZES = ((128, 96), (160, 120), (192, 144))  # (width, height), all 4:3
FPS_CHOICES = (12.0, 15.0, 20.0, 24.0, 25.0, 30.0)
SHAPES = ("square", "circle", "triangle", "bar", "diamond", "arrow")
ASYMMETRIC_SHAPES = ("arrow", "flag")  # no rotational symmetry: turning is unambiguous
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class _Object:
    shape: str
    color: tuple[int, int, int]
    # per-frame centre x, y, size (pixels, half extent), angle (degrees), alpha in [0, 1]
    x: np.ndarray
    y: np.ndarray
    size: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape of half-extent ``r`` rotated by ``angle`` degrees (clockwise on screen)."""
    if shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif shape == "diamond":
        pts = [(0, -1), (1, 0), (0, 1), (-1, 0)]
    elif shape == "triangle":
        pts = [(0, -1), (0.87, 0.5), (-0.87, 0.5)]
    elif shape == "bar":
        pts = [(-1, -0.3), (1, -0.3), (1, 0.3), (-1, 0.3)]
    elif shape == "flag":
        pts = [(-0.2, 1), (-0.2, -1), (0.9, -0.6), (0.1, -0.2), (0.1, 1)]
    elif shape == "arrow":
        pts = [(1, 0), (0, -0.8), (0, -0.3), (-1, -0.3), (-1, 0.3), (0, 0.3), (0, 0.8)]
    else:  # circle as a 24-gon
        pts = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    return [(cx + r * (px * ca - py * sa), cy + r * (px * sa + py * ca)) for px, py in pts]


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A low-saturation textured background, ``(h + 8, w + 8, 3)`` float (margin for jitter)."""
    H, W = h + 8, w + 8
    base = rng.uniform(60, 190)
    tint = rng.normal(0, 12, size=3)
    cells = int(rng.integers(3, 12))
    coarse = rng.normal(0, rng.uniform(8, 35), size=(cells, cells, 1))
    tex = np.asarray(
        Image.fromarray(coarse[..., 0].astype(np.float32), mode="F").resize(
            (W, H), Image.Resampling.BICUBIC
        )
    )[..., None]
    fine = rng.normal(0, rng.uniform(0, 10), size=(H, W, 1))
    return np.clip(base + tint + tex + fine, 0, 255).astype(np.float32)


def _blend(canvas: np.ndarray, pts: list[tuple[float, float]], colour, alpha: float) -> None:
    """Alpha-blend a filled polygon into ``canvas`` ``(H, W, 3)`` float32, in place, touching
    only the polygon's bounding box."""
    if alpha <= 0:
        return
    h, w = canvas.shape[:2]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, y0 = max(0, int(math.floor(min(xs)))), max(0, int(math.floor(min(ys))))
    x1, y1 = min(w, int(math.ceil(max(xs))) + 1), min(h, int(math.ceil(max(ys))) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    mask_img = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask_img).polygon([(x - x0, y - y0) for x, y in pts], fill=255)
    mask = np.asarray(mask_img, dtype=np.float32)[..., None] * (alpha / 255.0)
    region = canvas[y0:y1, x0:x1]
    region += (np.asarray(colour, np.float32) - region) * mask


def _saturated_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    hue = rng.uniform(0, 6)
    i, f = int(hue) % 6, hue - int(hue)
    table = [(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1), (1, 0, 1 - f)]
    c = table[i]
    lo, hi = rng.uniform(0, 40), rng.uniform(200, 255)
    return tuple(int(lo + (hi - lo) * v) for v in c)


def _timing(rng: np.random.Generator, n: int) -> np.ndarray:
    """Progress in ``[0, 1]`` per frame: still, a smooth motion, still. Symmetric in time."""
    motion = rng.uniform(0.55, 0.9)
    lead = rng.uniform(0, 1 - motion)
    t = np.linspace(0, 1, n)
    p = np.clip((t - lead) / motion, 0, 1)
    return 0.5 - 0.5 * np.cos(np.pi * p)  # ease in and out


def _target(rng: np.random.Generator, label: str, n: int, w: int, h: int) -> _Object:
    short = min(w, h)
    p = _timing(rng, n)
    rotating = label.startswith("rotate")
    shape = str(rng.choice(ASYMMETRIC_SHAPES if rotating else SHAPES))
    if label in ("grow", "shrink"):
        small = math.exp(rng.uniform(math.log(3.0), math.log(short * 0.12)))
        big = small * rng.uniform(2.2, 3.5)
        size = small + (big - small) * (p if label == "grow" else 1 - p)
    else:
        if rotating:
            r = rng.uniform(0.18, 0.4) * short
        else:
            # half-extent: 5 px to half the frame across
            r = math.exp(rng.uniform(math.log(2.5), math.log(short * 0.25)))
        size = np.full(n, r)
    r_max = float(size.max())
    cx = rng.uniform(r_max, w - r_max) if w > 2 * r_max else w / 2
    cy = rng.uniform(r_max, h - r_max) if h > 2 * r_max else h / 2
    x, y = np.full(n, cx), np.full(n, cy)
    if label in ("slide_left", "slide_right", "rise", "fall"):
        horizontal = label.startswith("slide")
        extent = w if horizontal else h
        room = extent - 2 * r_max
        dist = rng.uniform(0.3, 0.75) * max(room, extent * 0.3)
        a = rng.uniform(r_max, max(r_max, extent - r_max - dist))
        forward = label in ("slide_right", "fall")  # +x is right, +y is down
        pos = a + dist * (p if forward else 1 - p)
        if horizontal:
            x = pos
            y = y + rng.normal(0, 0.02 * h) * p  # slight off-axis drift
        else:
            y = pos
            x = x + rng.normal(0, 0.02 * w) * p
    angle0 = rng.uniform(0, 360)
    if rotating:
        # spin in place by 150-300 degrees: a large asymmetric shape, so every sampled step
        # moves its tips by several pixels and no step looks like a turn the other way
        turn = rng.uniform(150, 300) * (1 if label == "rotate_cw" else -1)
        angle = angle0 + turn * p
    else:
        angle = np.full(n, angle0 if shape in ("triangle", "bar", "arrow") else 0.0)
    if label == "appear":
        alpha = p
    elif label == "vanish":
        alpha = 1 - p
    else:
        alpha = np.ones(n)
    return _Object(shape, _saturated_colour(rng), x, y, size, angle, alpha)


def _distractor(rng: np.random.Generator, n: int, w: int, h: int) -> _Object:
    r = rng.uniform(2, min(w, h) * 0.08)
    x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
    speed = rng.uniform(0.2, 1.5)
    heading = rng.uniform(0, 2 * math.pi)
    steps = np.arange(n)
    wobble = rng.normal(0, 0.6, size=(n, 2)).cumsum(axis=0)
    x = np.clip(x0 + speed * math.cos(heading) * steps + wobble[:, 0], 0, w)
    y = np.clip(y0 + speed * math.sin(heading) * steps + wobble[:, 1], 0, h)
    grey = int(rng.uniform(40, 220))
    colour = tuple(int(np.clip(grey + rng.normal(0, 8), 0, 255)) for _ in range(3))
    shape = str(rng.choice(SHAPES))
    return _Object(shape, colour, x, y, np.full(n, r), np.full(n, rng.uniform(0, 360)), np.ones(n))


def render_clip(seed: int, split: str, label_index: int, index: int) -> tuple[np.ndarray, dict]:
    """Render one clip: ``(T, H, W, 3)`` uint8 frames and its annotation dict."""
    label = CLASSES[label_index]
    rng = np.random.default_rng([seed, SPLIT_IDS[split], label_index, index, VERSION])
    w, h = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    fps = float(rng.choice(FPS_CHOICES))
    duration = rng.uniform(1.6, 3.2)
    n = max(8, int(round(duration * fps)))
    objects = [_target(rng, label, n, w, h)]
    objects += [_distractor(rng, n, w, h) for _ in range(int(rng.integers(0, 4)))]
    bg = _background(rng, w, h)
    # camera shake: a smooth random walk (hand-held drift), at most 4 px from the centre
    shake = rng.uniform(0, 0.8)
    jitter = np.clip(np.round(rng.normal(0, shake, size=(n, 2)).cumsum(0)), -4, 4).astype(int)
    noise = rng.uniform(0, 6)
    frames = np.empty((n, h, w, 3), np.uint8)
    boxes: list[list] = [[] for _ in objects]
    for t in range(n):
        canvas = bg.copy()
        # draw distractors first, target last (on top)
        for k in [*range(1, len(objects)), 0]:
            obj = objects[k]
            pts = _polygon(obj.shape, obj.x[t] + 4, obj.y[t] + 4, obj.size[t], obj.angle[t])
            _blend(canvas, pts, obj.color, obj.alpha[t])
            xs = np.array([p[0] for p in pts]) - 4 - jitter[t, 0]
            ys = np.array([p[1] for p in pts]) - 4 - jitter[t, 1]
            box = [
                float(np.clip(xs.min(), 0, w)),
                float(np.clip(ys.min(), 0, h)),
                float(np.clip(xs.max(), 0, w)),
                float(np.clip(ys.max(), 0, h)),
            ]
            visible = obj.alpha[t] > 0.1 and box[2] - box[0] >= 1 and box[3] - box[1] >= 1
            boxes[k].append(box if visible else None)
        ox, oy = 4 + jitter[t, 0], 4 + jitter[t, 1]
        frame = canvas[oy : oy + h, ox : ox + w]
        frame = frame + noise * rng.standard_normal(size=frame.shape, dtype=np.float32)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    ann = {
        "label": label,
        "fps": fps,
        "width": w,
        "height": h,
        "num_frames": n,
        "objects": [
            {
                "track_id": k,
                "role": "target" if k == 0 else "distractor",
                "shape": obj.shape,
                "boxes": boxes[k],
            }
            for k, obj in enumerate(objects)
        ],
    }
    return frames, ann


def _write_one(args: tuple[Path, int, str, int, int]) -> str:
    out, seed, split, label_index, index = args
    label = CLASSES[label_index]
    name = f"{label}_{split}_{index:04d}"
    video = out / split / label / f"{name}.mp4"
    ann_path = out / "annotations" / split / label / f"{name}.json"
    if video.exists() and ann_path.exists():
        return str(video)  # cached: generation is deterministic
    frames, ann = render_clip(seed, split, label_index, index)
    write_video(video, frames, ann["fps"], threads=1, overwrite=True)
    atomic_write_text(ann_path, json.dumps(ann))
    return str(video)


def generate(
    out: str | Path,
    *,
    train: int = 80,
    val: int = 10,
    test: int = 20,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Write MotionShapes to ``out`` (counts are videos *per class*). Existing identical files
    are kept, so a second call with the same arguments is a cache hit.

    A folder generated with another seed or version is refused rather than mixed.
    """
    out = Path(out)
    info_path = out / "motionshapes.json"
    info = {"version": VERSION, "seed": seed, "classes": list(CLASSES)}
    claim_folder(out, info_path, info, "MotionShapes")
    jobs: list[tuple[Path, int, str, int, int]] = []
    for split, count in (("train", train), ("val", val), ("test", test)):
        for c in range(len(CLASSES)):
            jobs += [(out, seed, split, c, i) for i in range(count)]
    out.mkdir(parents=True, exist_ok=True)
    run_jobs(_write_one, jobs, workers, serial_below=8, chunksize=8)
    counts = {"train": train, "val": val, "test": test}
    atomic_write_text(info_path, json.dumps({**info, "per_class": counts}, indent=2))
    return out


def claim_folder(out: Path, info_path: Path, info: dict, name: str) -> None:
    """Refuse to write dataset ``name`` into ``out`` when it holds anything else: another
    version, seed or settings of it (``info`` differs from ``info_path``'s), or other files.
    :class:`FileExistsError` naming the folder."""
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if {k: old.get(k) for k in info} != info:
            made = ", ".join(f"{k} {old.get(k)}" for k in info if k != "classes")
            raise FileExistsError(f"{out}: holds {name} made with {made}; choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not a {name} folder; choose another --out")


def run_jobs(fn, jobs: list, workers: int | None, *, serial_below: int, chunksize: int = 1) -> list:
    """``[fn(job) for job in jobs]``, in ``workers`` processes (default: up to 4) unless
    there are fewer than ``serial_below`` jobs or one worker."""
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < serial_below:
        return [fn(j) for j in jobs]
    import multiprocessing

    # "spawn": forking a process whose torch/OpenMP threads already ran can deadlock
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, jobs, chunksize=chunksize))


def long_video(
    path: str | Path,
    labels: Iterable[str],
    *,
    seed: int = 0,
    fps: float = 20.0,
    size: tuple[int, int] = (160, 120),
) -> list[dict]:
    """Concatenate test-style clips of the given classes into one long video.

    Every segment is rendered at ``fps`` and ``size`` (width, height). Returns the ground
    truth segments ``[{"label", "start", "end"}]`` in seconds.
    """
    chunks, segments, t = [], [], 0.0
    for k, label in enumerate(labels):
        frames, ann = render_clip(seed, "test", CLASSES.index(label), 100_000 + k)
        resized = [
            np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames
        ]
        # resample the clip to the common fps by timestamp
        n_out = max(1, int(round(len(frames) / ann["fps"] * fps)))
        idx = np.minimum((np.arange(n_out) / fps * ann["fps"]).round().astype(int), len(frames) - 1)
        chunks.append(np.stack(resized)[idx])
        segments.append({"label": label, "start": t, "end": t + n_out / fps})
        t += n_out / fps
    write_video(path, np.concatenate(chunks), fps, threads=1, overwrite=True)
    return segments
