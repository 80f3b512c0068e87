"""Anomaly alerts as ``sora watch`` raises them, replayed on ``sora eval``'s frame scores:
events alerted and false alerts per minute, for a few thresholds and hold times.

Reads ``RUN/eval/anomaly_scores.csv`` (``sora eval RUN --data DIR`` writes it; default: the
Sora run of ``benchmarks/anomaly.py``) and ``RUN/eval/anomaly.json``, and feeds each video's
scores through ``sora.inference.watch.AnomalyAlarm``, the object ``sora watch`` uses. An
event (a run of anomalous frames, as ``sora eval`` counts them) is alerted when an alert
fires inside it; an alert on a normal frame is false. Thresholds: the run's (the highest
score on its held-out normal frames), ``sora eval``'s for 1 false alarm per 10 minutes, and
two between.

    python benchmarks/anomaly_alerts.py [--run runs/bench-anomaly/Sora]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import machine, write_section

from sora.evaluation.anomaly import runs
from sora.inference.watch import ANOMALY_CLEAR, AnomalyAlarm

HOLDS = (0.0, 0.5, 1.0)


def replay(videos: dict, fps: float, threshold: float, hold: float) -> dict:
    """Events alerted, events, false alerts and their rate per minute of normal frames."""
    hit = events = false = normal = 0
    for scores, labels in videos.values():
        alarm = AnomalyAlarm(threshold, hold, ANOMALY_CLEAR)
        fired = [i for i, s in enumerate(scores) if alarm.update(i / fps, s)]
        normal += int((labels == 0).sum())
        false += sum(labels[i] == 0 for i in fired)
        for a, b in runs(labels > 0):
            events += 1
            hit += any(a <= i < b for i in fired)
    return {"hit": hit, "events": events, "false": false, "per_min": false / (normal / fps / 60)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/bench-anomaly/Sora")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    ev = Path(args.run) / "eval"
    if not (ev / "anomaly_scores.csv").is_file():
        raise SystemExit(f"{ev}: no anomaly_scores.csv; run sora eval {args.run} --data DIR first")
    rows = defaultdict(list)
    with (ev / "anomaly_scores.csv").open() as f:
        for r in csv.DictReader(f):
            rows[r["video"]].append((float(r["score"]), int(r["label"])))
    videos = {
        v: (np.array([s for s, _ in r]), np.array([y for _, y in r])) for v, r in rows.items()
    }
    m = json.loads((ev / "anomaly.json").read_text())
    low, high = m["alert_threshold"], m["threshold_at_1_false_alarm_per_10_min"]
    thresholds = [low, low + (high - low) / 3, low + 2 * (high - low) / 3, high]
    names = ["the run's", "", "", "1 FA / 10 min (sora eval)"]
    lines = [
        "| threshold | "
        + " | ".join(f"hold {h:g} s: events alerted, false / min" for h in HOLDS)
        + " |",
        "|---|" + "---|" * len(HOLDS),
    ]
    for thr, name in zip(thresholds, names, strict=True):
        cells = []
        for hold in HOLDS:
            r = replay(videos, args.fps, thr, hold)
            cells.append(f"{r['hit']}/{r['events']}, {r['per_min']:.1f}")
        lines.append(f"| {thr:.2f}{f' ({name})' if name else ''} | " + " | ".join(cells) + " |")
    text = "\n".join(
        [
            "## Anomaly alerts: threshold and hold",
            "",
            f"`python benchmarks/anomaly_alerts.py` on {machine()}: `sora eval`'s frame scores of "
            f"`{args.run}` on the {len(videos)} testing videos "
            f"({sum((y == 0).sum() for _, y in videos.values()) / args.fps / 60:.1f} minutes of "
            "normal frames) replayed through `sora watch`'s `AnomalyAlarm` (the alarm clears "
            f"after {ANOMALY_CLEAR:g} s under the threshold).",
            "",
            *lines,
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("anomaly-alerts", text)


if __name__ == "__main__":
    main()
