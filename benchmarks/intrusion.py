"""Zone intrusion and line crossing on MotionShapes-Anomaly's ground-truth tracks.

Every object of the 24 videos (``objects.csv``: boxes and ids per frame) is fed to
``ZoneMonitor`` (the code of ``sora watch``) with two rules: a **zone** over the lawn above
the walkway (people only come in there in the crowd videos) and a **line** across the
walkway at x = 64 (every walker crosses it). The truth is the geometry itself: an entry is
the first frame an object's bottom centre is inside the lawn after being outside (or on
first sight); a crossing is a frame where it changes side of x = 64. An alert is right when
it names an object with a true event of the same kind within 0.5 s before it; alerts per
true event count any repeats. This measures the rules (supervision's PolygonZone/LineZone,
debounce, cooldown) on perfect tracks; it is the ceiling for tracks from a detector.

    python benchmarks/intrusion.py [--data runs/motionshapes-anomaly]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections import defaultdict
from datetime import time as clock
from pathlib import Path

import numpy as np
from common import machine, write_section
from matplotlib.path import Path as Polygon

from sora.data.synth_anomaly import CLASSES, FPS, HEIGHT, WIDTH, generate
from sora.inference.zones import ZoneMonitor, load_zones

ZONES = """
debounce: 0.2
zones:
  - name: lawn
    polygon: [[0, 0], [128, 0], [128, 27], [0, 27]]
lines:
  - name: crossing
    start: [64, 20]
    end: [64, 80]
"""
LAWN = Polygon([(0, 0), (128, 0), (128, 27), (0, 27)])


def _truth(tracks: dict[int, list[tuple[int, float, float]]]) -> list[tuple[str, int, int]]:
    """``(kind, track, frame)`` of every true entry and crossing."""
    out = []
    for track, pts in tracks.items():
        was_in, side = False, None
        for f, x, y in pts:
            inside = LAWN.contains_point((x, y))
            if inside and not was_in:
                out.append(("enter", track, f))
            was_in = inside
            s = x >= 64
            if side is not None and s != side and 20 <= y <= 80:
                out.append(("cross", track, f))
            side = s
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/motionshapes-anomaly")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    data = Path(args.data)
    generate(data)
    per_video: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    with (data / "objects.csv").open() as f:
        for row in csv.DictReader(f):
            box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
            per_video[row["video"]][int(row["frame"])].append(
                (int(row["id"]), box, CLASSES.index(row["class"]))
            )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "zones.yaml"
        path.write_text(ZONES)
        rules = load_zones(path, WIDTH, HEIGHT)
    stats = {k: {"true": 0, "alerts": 0, "right": 0, "found": 0} for k in ("enter", "cross")}
    for frames in per_video.values():
        monitor = ZoneMonitor(rules, FPS)
        tracks: dict[int, list] = defaultdict(list)
        alerts = []
        for f in sorted(frames):
            rows = frames[f]
            ids = np.array([r[0] for r in rows])
            boxes = np.array([r[1] for r in rows], np.float32)
            labels = np.array([r[2] for r in rows])
            for i, b in zip(ids, boxes, strict=True):
                tracks[int(i)].append((f, (b[0] + b[2]) / 2, b[3]))
            for e in monitor.update(
                (f - 1) / FPS, boxes, ids, labels, np.ones(len(ids)), list(CLASSES), clock(12)
            ):
                alerts.append(("enter" if e["rule"] == "enter" else "cross", e["track"], f))
        truth = _truth(tracks)
        for kind in stats:
            t = [(tr, f) for k, tr, f in truth if k == kind]
            a = [(tr, f) for k, tr, f in alerts if k == kind]
            s = stats[kind]
            s["true"] += len(t)
            s["alerts"] += len(a)
            ok = lambda tr, f, tt, ft: tr == tt and 0 <= (f - ft) / FPS <= 0.5  # noqa: E731
            s["right"] += sum(any(ok(tr, f, tt, ft) for tt, ft in t) for tr, f in a)
            s["found"] += sum(any(ok(tr, f, tt, ft) for tr, f in a) for tt, ft in t)
    lines = ["| rule | true events | alerts | precision | recall | alerts per true event |"]
    lines.append("|---|---|---|---|---|---|")
    for kind, s in stats.items():
        prec = s["right"] / max(s["alerts"], 1)
        rec = s["found"] / max(s["true"], 1)
        lines.append(
            f"| {'zone entry (lawn)' if kind == 'enter' else 'line crossing (x = 64)'} | "
            f"{s['true']} | {s['alerts']} | {prec:.3f} | {rec:.3f} | "
            f"{s['alerts'] / max(s['true'], 1):.3f} |"
        )
    text = "\n".join(
        [
            "## Zone intrusion and line crossing (rules on ground-truth tracks)",
            "",
            f"`python benchmarks/intrusion.py` on {machine()}: the 24 videos of "
            "MotionShapes-Anomaly, debounce 0.2 s; an alert is right within 0.5 s after the "
            "true event of the same object.",
            "",
            *lines,
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("intrusion", text)


if __name__ == "__main__":
    main()
