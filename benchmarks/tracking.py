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
it has no features). A fourth detector, the ground truth without its boxes less than half
visible, bounds what finding occluded objects is worth to the tracks (the ceiling's drop).
SoraDet against the per-frame ablation, tracker by tracker: the mean of the per-sequence
IDF1 differences with a 95% bootstrap interval over sequences, and on how many it leads.

Speed: ``VideoTracker.track_video`` (the path of ``sora track``: decode, resize, SoraDet
step, NMS, ByteTrack, colour re-identification) over the ``--minutes`` recording of ``benchmarks/streaming.py``
(160x120, 20 fps; made once and cached), RSS sampled every 0.2 s.

    python benchmarks/tracking.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import machine, write_section
from streaming import make_inputs, rss_at, sampled_rss

from sora.data.mot import FrameStore, dataset_labels, read_split
from sora.evaluation.detection import (
    OCCLUDED_BELOW,
    detect_sequence,
    operating_threshold,
    score_sequences,
)
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

#: The ground truth as detectors, by the least visibility of the boxes they keep.
GROUND_TRUTH = {
    "ground truth": 0.0,
    f"ground truth, visibility >= {OCCLUDED_BELOW:g}": OCCLUDED_BELOW,
}
DETECTORS = ("SoraDet", "per-frame", *GROUND_TRUTH)


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


def ground_truth_colours(seq, min_visibility: float = 0.0) -> dict[int, dict]:
    """The ground-truth boxes as detections, with their colour embeddings."""
    store = FrameStore(seq, (seq.height, seq.width), cache=False)
    dets = ground_truth_detections(seq, min_visibility=min_visibility)
    for f, d in dets.items():
        boxes = torch.as_tensor(np.asarray(d["boxes"], np.float32)).reshape(-1, 4)
        d["embeddings"] = colour_embeddings(store.get(f), boxes).numpy()
    return dets


def detections(name: str, work: Path, val, test, embed: str | None = None) -> tuple[float, dict]:
    """``(high threshold, {sequence: {frame: detections}})`` of one detector on ``test``
    (with ``embed``, each box's appearance for re-identification)."""
    if name in GROUND_TRUTH:
        vis = GROUND_TRUTH[name]
        if embed == "colour":
            return 0.5, {s.name: ground_truth_colours(s, vis) for s in test}
        return 0.5, {s.name: ground_truth_detections(s, min_visibility=vis) for s in test}
    detector = Detector(work / name, device="cpu")
    dets = {s.name: detect_sequence(detector, s, embed=embed) for s in test}
    return val_threshold(detector, val), dets


def paired_idf1(ours: dict, theirs: dict, draws: int = 2000, seed: int = 0) -> tuple:
    """``(mean, low, high, ahead, n)``: the mean per-sequence IDF1 difference ``ours -
    theirs`` (each TrackEval's ``per_sequence``), its 95% bootstrap interval over sequences,
    and on how many of the ``n`` sequences ``ours`` is ahead."""
    diff = np.array([ours[k]["IDF1"] - theirs[k]["IDF1"] for k in sorted(ours)])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return diff.mean(), low, high, int((diff > 0).sum()), len(diff)


def paired_rows(rows: list[dict], label: Callable[[dict], str]) -> str:
    """Table rows of SoraDet against the per-frame ablation for every setting ``label(row)``
    (the tracker, or tracker and re-identification) both were run with: IDF1 overall and per
    sequence."""
    ablation = {label(r): r for r in rows if r["detector"] == "per-frame"}
    out = ""
    for r in rows:
        other = ablation.get(label(r))
        if r["detector"] != "SoraDet" or other is None:
            continue
        mean, low, high, ahead, n = paired_idf1(r["per_sequence"], other["per_sequence"])
        out += (
            f"| {label(r)} | {r['IDF1']:.3f} | {other['IDF1']:.3f} | {100 * mean:+.1f} "
            f"({100 * low:+.1f} to {100 * high:+.1f}) | {ahead} / {n} |\n"
        )
    return out


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
        for embed in ("colour",) if det in GROUND_TRUTH else EMBEDDINGS:
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
                        "per_sequence": m["per_sequence"],
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
                "per_sequence": m["per_sequence"],
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
    table += (
        "\nSoraDet against the per-frame ablation, per sequence (IDF1 points):\n\n"
        "| tracker | IDF1 SoraDet | IDF1 per-frame | mean per-sequence difference (95% interval) "
        "| SoraDet ahead on |\n|---|---|---|---|---|\n"
        + paired_rows(rows, lambda r: r["tracker"])
        + paired_rows(reid_rows, lambda r: f"{r['tracker']} + {r['reid']}")
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
