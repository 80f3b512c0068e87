"""Tracking on MotionShapes-Det: every tracker on SoraDet's boxes, on its per-frame
ablation's boxes and on the ground truth's (the association ceiling); then end-to-end speed
and memory over a long video.

Detectors are the two that ``benchmarks/detection.py`` trained and saved under
``--work`` (``SoraDet``: ConvGRU memory; ``per-frame``: the same network with
``detect.temporal=none``), on the same data (``--data``). Each detector's "high" threshold
is its best-F1 score threshold on the **val** split (what ``sora eval`` stores); the tracker
is then given detections down to 0.75 of it after class-agnostic NMS at IoU 0.5 (the
defaults of ``sora track``). Scores are TrackEval's (HOTA, DetA, AssA, MOTA, IDF1, ID
switches) on the **test** split through ``sora.evaluation.tracking.score_tracking``, the
code of ``sora eval --task track``. "after occl." counts the ID switches whose object had
been less than half visible since its last match. Then each detector with ByteTrack
(``sora track``'s default) and with C-BIoU (``sora watch``'s), re-identification after it
(:mod:`sora.inference.reid`) on each appearance embedding (the ground truth: colour only,
it has no features).

Speed: ``VideoTracker.track_video`` (the path of ``sora track``: decode, resize, SoraDet
step, NMS, ByteTrack, colour re-identification) over the ``--minutes`` recording of ``benchmarks/streaming.py``
(160x120, 20 fps; made once and cached), RSS sampled every 0.2 s.

    python benchmarks/tracking.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, write_section
from streaming import make_inputs, rss_at, sampled_rss

from sora.data.mot import FrameStore, dataset_labels, read_split
from sora.evaluation.detection import detect_sequence, operating_threshold, score_sequences
from sora.evaluation.tracking import ground_truth_detections, score_tracking, track_sequence
from sora.inference.detector import Detector
from sora.inference.reid import EMBEDDINGS, MAX_DISTANCE, WINDOW, ReIdentifier, colour_embeddings
from sora.inference.tracking import (
    LOW_FRACTION,
    TRACKERS,
    WATCH_TRACKER,
    VideoTracker,
    make_tracker,
)

DETECTORS = ("SoraDet", "per-frame", "ground truth")


def val_threshold(detector: Detector, val) -> float:
    """The detector's best-F1 score threshold on ``val`` (what ``sora eval`` stores)."""
    _, result, _ = score_sequences(val, lambda s: detect_sequence(detector, s))
    return operating_threshold(result)


def track_all(
    test, dets: dict, high: float, tracker: str = "bytetrack", reid: bool = False
) -> dict:
    """``{sequence: tracks}``: ``dets`` (``{sequence: {frame: detections}}``) associated by
    ``tracker`` with ``sora track``'s defaults for a run whose threshold is ``high``; with
    ``reid``, lost objects re-identified on the detections' embeddings (its defaults)."""
    return {
        s.name: track_sequence(
            s,
            dets[s.name],
            lambda fps: make_tracker(tracker, fps=fps, high=high),
            conf=LOW_FRACTION * high,
            reid=ReIdentifier() if reid else None,
        )
        for s in test
    }


def ground_truth_colours(seq) -> dict[int, dict]:
    """The ground-truth boxes as detections, with their colour embeddings."""
    store = FrameStore(seq, (seq.height, seq.width), cache=False)
    dets = ground_truth_detections(seq)
    for f, d in dets.items():
        boxes = torch.as_tensor(np.asarray(d["boxes"], np.float32)).reshape(-1, 4)
        d["embeddings"] = colour_embeddings(store.get(f), boxes).numpy()
    return dets


def detections(name: str, work: Path, val, test, embed: str | None = None) -> tuple[float, dict]:
    """``(high threshold, {sequence: {frame: detections}})`` of one detector on ``test``
    (with ``embed``, each box's appearance for re-identification)."""
    if name == "ground truth":
        if embed == "colour":
            return 0.5, {s.name: ground_truth_colours(s) for s in test}
        return 0.5, {s.name: ground_truth_detections(s) for s in test}
    detector = Detector(work / name, device="cpu")
    dets = {s.name: detect_sequence(detector, s, embed=embed) for s in test}
    return val_threshold(detector, val), dets


def end_to_end(video: Path, run: Path) -> dict:
    """Frames/s and RSS of ``VideoTracker.track_video`` over ``video``."""
    torch.set_grad_enabled(False)
    vt = VideoTracker(run, "bytetrack", high=0.5, device="cpu")
    frames = tracks = 0
    t0 = time.perf_counter()
    with sampled_rss() as samples:
        for ft in vt.track_video(video, fps=20.0):
            frames += 1
            tracks += len(ft.ids)
        seconds = time.perf_counter() - t0
    return {"frames": frames, "seconds": seconds, "tracked": tracks, "rss": samples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="runs/motionshapes-det-bench", help="MotionShapes-Det")
    ap.add_argument("--work", default="runs/bench-detect", help="benchmarks/detection.py's models")
    ap.add_argument("--minutes", type=float, default=10.0, help="long video for speed (default 10)")
    ap.add_argument("--root", default="runs/bench-streaming", help="cache of the long video")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    work, data = Path(args.work), Path(args.data)
    for name in DETECTORS[:2]:
        if not (work / name / "model" / "config.yaml").is_file():
            print(f"{work / name}: no saved model; run benchmarks/detection.py first")
            return 1
    labels = dataset_labels(data)
    val, test = read_split(data, "val", labels), read_split(data, "test", labels)
    rows = []
    reid_rows = []
    for det in DETECTORS:
        for embed in ("colour",) if det == "ground truth" else EMBEDDINGS:
            high, dets = detections(det, work, val, test, embed)
            for tracker in ("bytetrack", WATCH_TRACKER):  # sora track's, sora watch's
                tracks = track_all(test, dets, high, tracker, reid=True)
                m = score_tracking(test, tracks, labels)
                reid_rows.append(
                    {
                        "detector": det,
                        "tracker": tracker,
                        "reid": embed,
                        **{k: m[k] for k in ("HOTA", "AssA", "MOTA", "IDF1", "IDSW")},
                        "after_occlusion": m["id_switches"]["after_occlusion"],
                    }
                )
                print(
                    f"{det:>12} {tracker:>9} + re-id {embed:>8}  HOTA {m['HOTA']:.3f} IDF1 "
                    f"{m['IDF1']:.3f} IDSW {m['IDSW']} ({reid_rows[-1]['after_occlusion']})",
                    flush=True,
                )
        high, dets = detections(det, work, val, test)
        for tracker in TRACKERS:
            t0 = time.perf_counter()
            tracks = track_all(test, dets, high, tracker)
            seconds = time.perf_counter() - t0
            m = score_tracking(test, tracks, labels)
            row = {
                "detector": det,
                "tracker": tracker,
                "high": high,
                **{k: m[k] for k in ("HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW")},
                "after_occlusion": m["id_switches"]["after_occlusion"],
                "assoc_fps": sum(len(d) for d in dets.values()) / seconds,
            }
            rows.append(row)
            print(
                f"{det:>12} {tracker:>9}  HOTA {row['HOTA']:.3f} MOTA {row['MOTA']:.3f} "
                f"IDF1 {row['IDF1']:.3f} IDSW {row['IDSW']} ({row['after_occlusion']} after occl.)",
                flush=True,
            )
    video, _ = make_inputs(Path(args.root), args.minutes)
    e2e = end_to_end(video, work / "SoraDet")
    rss = [m for _, m in e2e["rss"]]

    table = (
        "| detector | tracker | high | HOTA | DetA | AssA | MOTA | IDF1 | ID switches "
        "| after occl. | association frames/s |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in rows:
        table += (
            f"| {r['detector']} | {r['tracker']} | {r['high']:.2f} | {r['HOTA']:.3f} "
            f"| {r['DetA']:.3f} | {r['AssA']:.3f} | {r['MOTA']:.3f} | {r['IDF1']:.3f} "
            f"| {r['IDSW']} | {r['after_occlusion']} | {r['assoc_fps']:.0f} |\n"
        )
    table += (
        "\nRe-identification after the tracker (ByteTrack, `sora track`'s default, and "
        f"{WATCH_TRACKER}, `sora watch`'s; `--reid`, window "
        f"{WINDOW:g} s, cosine distance <= {MAX_DISTANCE}); the rows above are without it:\n\n"
        "| detector | tracker | re-identification | HOTA | AssA | MOTA | IDF1 | ID switches "
        "| after occl. |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    for r in reid_rows:
        table += (
            f"| {r['detector']} | {r['tracker']} | {r['reid']} | {r['HOTA']:.3f} | {r['AssA']:.3f} "
            f"| {r['MOTA']:.3f} | {r['IDF1']:.3f} | {r['IDSW']} | {r['after_occlusion']} |\n"
        )
    speed = (
        "\nEnd to end (`VideoTracker.track_video`, SoraDet + ByteTrack + colour "
        f"re-identification, decode included) over "
        f"the {args.minutes:g}-minute 160x120 recording: {e2e['frames']} frames in "
        f"{e2e['seconds']:.0f} s = **{e2e['frames'] / e2e['seconds']:.0f} frames/s**; RSS "
        f"{rss_at(e2e, 0.1):.0f} / {rss_at(e2e, 0.5):.0f} / {rss_at(e2e, 1.0):.0f} MB at "
        "10% / 50% / 100%, peak "
        f"{max(rss):.0f} MB."
    )
    print(table + speed)
    if not args.no_write:
        write_section(
            "tracking",
            f"## Tracking on MotionShapes-Det ({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/tracking.py --minutes {args.minutes:g}`: test split, "
            f"{len(test)} sequences; detectors from `benchmarks/detection.py`; thresholds "
            "from the val split; TrackEval's figures.\n\n" + table + speed,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
