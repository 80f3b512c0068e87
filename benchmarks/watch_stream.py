"""``sora watch`` over an hour of the surveillance scene, faster than real time: frames per
second, latency, events and memory over time.

The hour (54,000 frames, 128x96, 15 fps, H.264; made once and cached) is MotionShapes-
Anomaly's camera: 225 clips of 16 s rendered one after another with fresh content (indices
from 1000 up, so none is a training video), every fourth with an anomaly. It goes through
``sora.inference.watch.watch`` as fast as it can (a file: no frame dropped) with everything
on: the scene's SoraDet (``benchmarks/intrusion.py --detector`` trains it) + ByteTrack, the
scene's ``zones.yaml``, the SoraAnomaly of ``benchmarks/anomaly.py``, events with JPEG
snapshots appended to a fresh file. A thread samples RSS every second. Writes the table into
benchmarks/RESULTS.md and the curve into benchmarks/watch_stream_rss.png.

    python benchmarks/watch_stream.py [--minutes 60]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from common import machine, write_section
from streaming import plot, rss_at, sampled_rss

CLIP = 240  # frames per rendered clip (16 s)


def scene_video(root: Path, minutes: float) -> Path:
    """The cached long recording of the scene (see the module docstring)."""
    from sora.data.synth_anomaly import FPS, render_video
    from sora.io.video import VideoWriter

    path = root / f"scene-{minutes:g}min.mp4"
    if path.exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    total = round(minutes * 60 * FPS)
    with VideoWriter(path, FPS, crf=20) as writer:
        k = 0
        while k * CLIP < total:
            split = "testing" if k % 4 == 3 else "training"
            video, _ = render_video(0, split, 1000 + k, min(CLIP, total - k * CLIP))
            for frame in video:
                writer.write(frame)
            k += 1
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--root", default="runs/bench-watch", help="cache of the long video")
    ap.add_argument("--data", default="runs/motionshapes-anomaly")
    ap.add_argument("--model", default="runs/bench-intrusion/SoraDet")
    ap.add_argument("--anomaly", default="runs/bench-anomaly/Sora")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from sora.inference.watch import watch

    for run, script in ((args.model, "intrusion.py --detector"), (args.anomaly, "anomaly.py")):
        if not (Path(run) / "model").is_dir():
            print(f"{run}: no saved model; run benchmarks/{script} first")
            return 1
    root = Path(args.root)
    t0 = time.perf_counter()
    video = scene_video(root, args.minutes)
    print(f"scene video {video} ready in {time.perf_counter() - t0:.0f} s")
    events = root / "events.jsonl"
    for old in (events, root / "events_snapshots"):
        if old.is_file():
            old.unlink()
        elif old.is_dir():
            shutil.rmtree(old)
    t0 = time.perf_counter()
    with sampled_rss(every=1.0) as samples:
        s = watch(
            video,
            model=args.model,
            anomaly=args.anomaly,
            zones=Path(args.data) / "zones.yaml",
            events=events,
            realtime=False,
        )
        seconds = time.perf_counter() - t0
    r = {"seconds": seconds, "rss": samples}
    ms = lambda v: f"{1000 * v:.0f}"  # noqa: E731
    fl = s["latency_frame_s"]
    ev = ", ".join(f"{k} {v}" for k, v in sorted(s["events"].items()))
    table = (
        "| frames | stream time | wall time | frames/s | faster than real time | frame latency "
        "median / p95 (ms) | events | RSS at 10% / 50% / 100% (MB) | peak RSS (MB) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {s['frames_processed']} | {args.minutes:g} min | {seconds:.0f} s "
        f"| {s['frames_per_second']:.0f} | {args.minutes * 60 / seconds:.1f}x "
        f"| {ms(fl['median'])} / {ms(fl['p95'])} | {ev} "
        f"| {rss_at(r, 0.1):.0f} / {rss_at(r, 0.5):.0f} / {rss_at(r, 1.0):.0f} "
        f"| {max(m for _, m in samples):.0f} |"
    )
    print(table)
    if not args.no_write:
        png = Path(__file__).with_name("watch_stream_rss.png")
        plot(
            [{"mode": "sora watch: SoraDet + ByteTrack + zones + SoraAnomaly + events", **r}],
            png,
            title="Memory while watching an hour of the scene",
            xlabel=f"progress through the {args.minutes:g}-minute stream (%)",
        )
        write_section(
            "watch-stream",
            f"## `sora watch` over {args.minutes:g} minutes of the surveillance scene "
            f"({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/watch_stream.py --minutes {args.minutes:g}`: MotionShapes-"
            "Anomaly's camera, 128x96 15 fps H.264, every fourth 16-s clip with an anomaly, "
            "through `watch()` as fast as possible with detection, tracking, the scene's zones, "
            "anomaly scoring and events with snapshots. RSS over time: "
            "[watch_stream_rss.png](watch_stream_rss.png).\n\n" + table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
