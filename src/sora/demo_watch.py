"""The surveillance demo (``sora demo --task watch``): MotionShapes-Anomaly -> SoraAnomaly and
a SoraDet for the scene -> ``sora eval`` -> ``sora watch`` with the scene's zones -> events,
snapshots, the annotated video and the report.

Folder shape (``OUT/run``, or the first free ``OUT/run-K``)::

    run/                 the anomaly run (config, checkpoints, model/, metrics.csv, eval/,
                         report.html with the watch section at the end, summary.json)
    run/detector/        the SoraDet run trained on DATA/detect (its own report.html)
    run/watch/           zones.yaml, events.jsonl, events_snapshots/, watched.mp4,
                         summary.json (sora watch's summary)
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import time
from pathlib import Path

from sora.config import Config, apply_overrides, default_config
from sora.data import synth_anomaly
from sora.demo import format_rows, free_run_folder, timed
from sora.evaluation.anomaly import evaluate_anomaly
from sora.evaluation.detection import evaluate_detection
from sora.evaluation.report import write_report
from sora.inference.watch import ms_text, watch
from sora.io.files import atomic_write_text
from sora.tasks.train import train

#: the testing video watched: the crowd one (people cross the lawn zone and the line, and
#: gather: an anomaly); an odd testing video, which the detector does not train on (it is in
#: the detector's val split)
WATCH_VIDEO = "test_013"
#: events shown in the report (snapshots), and annotated frames picked at event times
SHOWN_EVENTS, SHOWN_FRAMES = 24, 4


def scene_detector_config(epochs: int) -> Config:
    """The detection defaults for MotionShapes-Anomaly's ``detect/`` layout, ``epochs`` long:
    the val split's mAP50 (mostly people; one thrown ball, no vehicle) is flat from the first
    epoch while the boxes still get tighter, so mAP@[.5:.95] picks the checkpoint."""
    config = default_config("detect")
    config.train.epochs = epochs
    config.detect.monitor = "val_map"
    return config


def run_watch_demo(
    out: str | Path = "runs/demo-watch",
    *,
    data: str | Path | None = None,
    overrides: list[str] | None = None,
    videos: tuple[int, int] = (10, 14),
    frames: int = 240,
    anomaly_epochs: int = 12,
    detector_epochs: int = 8,
    video: str | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Run the surveillance pipeline into ``out``; returns the summary (also
    ``RUN/summary.json``).

    ``data`` defaults to ``out/../motionshapes-anomaly`` (``videos`` = training, testing
    counts of ``frames`` frames; reused when already there). ``overrides`` (``--set``) apply
    to both trainings, after the demo's epochs. ``video``: the testing video watched (default
    :data:`WATCH_VIDEO`, or the last testing video when the set is smaller).
    """
    out = Path(out)
    data = Path(data) if data is not None else out.parent / "motionshapes-anomaly"
    run = free_run_folder(out)
    timings: dict = {}
    t0 = time.perf_counter()
    log(f"[1/6] MotionShapes-Anomaly in {data} (reused when already there)")
    with timed(timings, "data_seconds"):
        synth_anomaly.generate(data, train=videos[0], test=videos[1], frames=frames)
    if video is None:
        names = sorted(p.stem for p in (data / "testing").glob("*.mp4"))
        video = WATCH_VIDEO if WATCH_VIDEO in names else names[-1]

    config = default_config("anomaly")
    config.train.epochs = anomaly_epochs
    config = apply_overrides(config, overrides or [])
    log(f"[2/6] training SoraAnomaly on the normal videos ({config.train.epochs} epochs) -> {run}")
    with timed(timings, "anomaly_train_seconds"):
        anomaly_summary = train(config, data, run, progress=progress)

    det_config = apply_overrides(scene_detector_config(detector_epochs), overrides or [])
    detector = run / "detector"
    log(
        f"[3/6] training SoraDet on {data / 'detect'} ({det_config.train.epochs} epochs) -> {detector}"
    )
    with timed(timings, "detector_train_seconds"):
        det_summary = train(det_config, data / "detect", detector, progress=progress)

    log("[4/6] sora eval: anomaly scores of every testing video; the detector on its test split")
    with timed(timings, "eval_seconds"):
        metrics = evaluate_anomaly(run, data)
        det_metrics = evaluate_detection(detector, data / "detect", split="test")
        write_report(detector)

    folder = run / "watch"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "zones.yaml", folder / "zones.yaml")
    source = data / "testing" / f"{video}.mp4"
    log(f"[5/6] sora watch {source} with the scene's zones -> {folder}")
    with timed(timings, "watch_seconds"):
        watched = watch(
            source,
            model=detector,
            anomaly=run,
            zones=folder / "zones.yaml",
            events=folder / "events.jsonl",
            save_video=folder / "watched.mp4",
            realtime=False,
        )
    atomic_write_text(folder / "summary.json", json.dumps(watched, indent=2))

    log("[6/6] writing the report")
    report = write_report(run, extra_sections=[(f"sora watch on {video}", watch_section(folder))])
    timings["total_seconds"] = time.perf_counter() - t0
    result = {
        "test_auc_micro": metrics["auc_micro"],
        "test_auc_macro": metrics["auc_macro"],
        "test_eer": metrics["eer"],
        "anomaly_epochs": anomaly_summary.get("epochs_run"),
        "detector_test_map50": det_metrics["map_50"],
        "detector_epochs": det_summary.get("epochs_run"),
        "watched": str(source),
        "watch_frames_per_second": watched["frames_per_second"],
        "watch_latency_median_s": watched["latency_frame_s"]["median"],
        "watch_latency_p95_s": watched["latency_frame_s"]["p95"],
        "events": watched["events"],
        "events_file": str(folder / "events.jsonl"),
        "report": str(report),
        "video": str(folder / "watched.mp4"),
        **timings,
    }
    atomic_write_text(run / "summary.json", json.dumps(result, indent=2))
    return result


def read_events(path: Path) -> list[dict]:
    """The events of a ``sora watch`` events file (whole lines only)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def watch_section(folder: Path) -> str:
    """HTML for a ``sora watch`` output folder: the summary, the events table, their
    snapshots and annotated frames from ``watched.mp4`` at the first events."""
    from sora.evaluation.report import cards, table

    s = json.loads((folder / "summary.json").read_text())
    events = read_events(folder / "events.jsonl")
    fl = s["latency_frame_s"]
    al = s["latency_alert_s"]
    parts = [
        cards(
            [
                ("frames processed", str(s["frames_processed"])),
                ("frames per second", f"{s['frames_per_second']:.0f}"),
                ("frames dropped", str(s["frames_dropped"])),
                ("frame latency median / p95", f"{ms_text(fl['median'])} / {ms_text(fl['p95'])}"),
                ("alert latency median / p95", f"{ms_text(al['median'])} / {ms_text(al['p95'])}"),
                ("events", str(len(events))),
            ]
        )
    ]
    if (folder / "watched.mp4").is_file():
        frames = _frames_at(folder / "watched.mp4", [e["time"] for e in events], SHOWN_FRAMES)
        if frames:
            parts.append(
                "<p>Annotated frames at the first events (tracks with ids and trails, the lawn "
                "zone and the crossing line, the anomaly heat map in red, a red border while "
                "the anomaly alarm is on):</p>"
                + "".join(_jpeg(img, f"t = {t:.1f} s", 270) for t, img in frames)
            )
    if events:
        rows = [
            [
                e["id"],
                f"{e['time']:.2f}",
                e["rule"],
                e["zone"] or "",
                e["track"] or "",
                e["class"] or "",
                f"{e['score']:.2f}" if e.get("score") is not None else "",
            ]
            for e in events
        ]
        parts.append(
            table(["id", "time (s)", "rule", "zone / line", "track", "class", "score"], rows)
        )
        shots = []
        for e in events[:SHOWN_EVENTS]:
            if e.get("snapshot") and (folder / e["snapshot"]).is_file():
                caption = f"#{e['id']} {e['rule']} {e['zone'] or ''} t={e['time']:.1f}s"
                shots.append(_jpeg_file(folder / e["snapshot"], caption, 192))
        if shots:
            parts.append("<p>Snapshots (the box of each event):</p>" + "".join(shots))
    return "\n".join(parts)


def _frames_at(path: Path, times: list[float], count: int) -> list:
    """Up to ``count`` frames of ``path`` at distinct ``times`` (the first of each second)."""
    from sora.io.video import VideoReader

    wanted, seen = [], set()
    for t in times:
        if int(t) not in seen and len(wanted) < count:
            seen.add(int(t))
            wanted.append(t)
    out, k = [], 0
    for fr in VideoReader(path):
        while k < len(wanted) and fr.time >= wanted[k] - 1e-6:
            out.append((wanted[k], fr.image))
            k += 1
        if k == len(wanted):
            break
    return out


def _jpeg(image, caption: str, width: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=88)
    return _figure(buffer.getvalue(), caption, width)


def _jpeg_file(path: Path, caption: str, width: int) -> str:
    return _figure(path.read_bytes(), caption, width)


def _figure(data: bytes, caption: str, width: int) -> str:
    src = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    return (
        f"<figure style='display:inline-block;margin:.3rem'><img src='{src}' width='{width}' "
        f"style='image-rendering:pixelated'><figcaption style='font-size:.8rem;color:#555'>"
        f"{html.escape(caption)}</figcaption></figure>"
    )


def format_watch_summary(result: dict) -> str:
    events = ", ".join(f"{k} {v}" for k, v in sorted(result["events"].items())) or "none"
    rows = [
        (
            "test frame AUC micro / macro",
            f"{result['test_auc_micro']:.3f} / {result['test_auc_macro']:.3f}",
        ),
        ("test EER", f"{result['test_eer']:.3f}"),
        ("detector test mAP50", f"{result['detector_test_map50']:.3f}"),
        (
            "epochs (anomaly / detector)",
            f"{result['anomaly_epochs']} / {result['detector_epochs']}",
        ),
        ("watched", result["watched"]),
        ("watch frames/s", f"{result['watch_frames_per_second']:.0f}"),
        (
            "frame latency median / p95",
            f"{ms_text(result['watch_latency_median_s'])} / {ms_text(result['watch_latency_p95_s'])}",
        ),
        ("events", events),
        ("data generation / cache (s)", f"{result['data_seconds']:.1f}"),
        ("anomaly training (s)", f"{result['anomaly_train_seconds']:.1f}"),
        ("detector training (s)", f"{result['detector_train_seconds']:.1f}"),
        ("evaluation (s)", f"{result['eval_seconds']:.1f}"),
        ("watch (s)", f"{result['watch_seconds']:.1f}"),
        ("total wall time (s)", f"{result['total_seconds']:.1f}"),
        ("events file", result["events_file"]),
        ("report", result["report"]),
        ("annotated video", result["video"]),
    ]
    return format_rows(rows)
