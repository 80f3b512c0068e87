"""``evaluate_tracking()``: TrackEval's HOTA, CLEAR and Identity metrics of a run's tracks.

Every sequence of the split is streamed whole through SoraDet (as ``sora eval`` does for
detection), its detections associated by a ``trackers`` tracker, and the tracks written as
MOTChallenge rows (``frame,id,x,y,w,h,conf,class,-1,-1``) to ``RUN/eval/tracks/<tracker>/``.
Scores come from **TrackEval** (the MOTChallenge evaluation code) reading those files with
its ``MotChallenge2DBox`` reader:

* HOTA, DetA, AssA, LocA (averaged over TrackEval's 19 IoU thresholds, as it reports them),
  MOTA, MOTP, ID switches, fragmentations, mostly tracked / lost, IDF1, IDP, IDR;
* per sequence and combined, for all classes together (class-agnostic, the headline) and
  for each class. TrackEval's MOTChallenge reader scores one class, "pedestrian" = 1; Sora
  writes it per-class copies of the ground truth and the tracks with the class set to 1;
  ``conf 0`` ground-truth rows are left out (``DO_PREPROC`` off: no MOT17 distractors).

When the run's ``detect.fps`` is below the sequence's rate only every ``k``-th frame is
tracked; the ground truth of the other frames is left out (they were never seen).

ID switches over time are located by :func:`id_switch_events`, which applies CLEAR's own
rule frame by frame (TrackEval only reports the total; a test checks the two agree), and
each switch is marked "after occlusion" when its object was less than half visible at some
frame since its last match.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from sora.data.detection import frame_step
from sora.data.mot import Sequence, dataset_labels, mot_row, read_split
from sora.errors import DatasetError
from sora.evaluation import plots
from sora.evaluation.detection import OCCLUDED_BELOW, detect_sequence
from sora.inference.detector import FrameDetections
from sora.inference.tracking import NMS_IOU, FrameTracks, VideoTracker, track_detections
from sora.io.files import atomic_write_text

#: The figures kept from TrackEval, by its metric family.
HOTA_KEYS = ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr")
CLEAR_KEYS = ("MOTA", "MOTP", "IDSW", "Frag", "MT", "ML", "CLR_FP", "CLR_FN")
IDENTITY_KEYS = ("IDF1", "IDP", "IDR")

#: ``{frame: FrameTracks}`` for one sequence (frames 1-based, in the sequence's numbering).
Tracks = dict[int, FrameTracks]


def track_sequence(
    seq: Sequence,
    dets: dict[int, dict],
    new_tracker: Callable[[float], object],
    *,
    conf: float,
    nms_iou: float | None = NMS_IOU,
    step: int = 1,
) -> Tracks:
    """Associate one sequence's detections ``{frame: {boxes, scores, labels}}`` into tracks
    with a fresh ``new_tracker(fps)``; frames are timed ``(frame - 1) / seq.fps``."""
    tracker = new_tracker(seq.fps / step)

    def frames():
        for f in sorted(dets):
            d = dets[f]
            yield FrameDetections(
                index=f,
                time=(f - 1) / seq.fps,
                boxes=np.asarray(d["boxes"], np.float32).reshape(-1, 4),
                scores=np.asarray(d["scores"], np.float32),
                labels=np.asarray(d["labels"], int),
            )

    return {ft.index: ft for ft in track_detections(frames(), tracker, conf=conf, nms_iou=nms_iou)}


def ground_truth_detections(seq: Sequence, step: int = 1) -> dict[int, dict]:
    """The sequence's ground-truth boxes as detections scored 1 (the association ceiling):
    ``{frame: {boxes, scores, labels}}``, ignore rows left out."""
    out = {}
    for f in range(1, seq.num_frames + 1, step):
        if not seq.present[f - 1]:
            continue
        t = seq.target(f)
        keep = ~t["ignore"]
        out[f] = {
            "boxes": t["boxes"][keep].numpy(),
            "scores": np.ones(int(keep.sum()), np.float32),
            "labels": t["labels"][keep].numpy(),
        }
    return out


def write_tracks(path: Path, tracks: Tracks) -> None:
    """MOTChallenge rows ``frame,id,x,y,w,h,conf,class,-1,-1`` (1-based pixels and class)."""
    rows = (
        mot_row(f, b, s, c, int(i))
        for f, ft in sorted(tracks.items())
        for b, s, c, i in zip(
            ft.boxes.tolist(), ft.scores.tolist(), ft.labels.tolist(), ft.ids, strict=True
        )
    )
    atomic_write_text(path, "".join(f"{r}\n" for r in rows))


def _frame_map(seq: Sequence, step: int) -> dict[int, int]:
    """Sequence frame -> TrackEval timestep (1-based) for the frames that were tracked."""
    return {f: k + 1 for k, f in enumerate(range(1, seq.num_frames + 1, step))}


def _trackeval_files(
    root: Path, sequences: list[Sequence], tracks: dict[str, Tracks], label: int | None, step: int
) -> dict[str, int]:
    """Write the TrackEval layout under ``root`` for one class (``label``, 0-based) or all
    (``None``), class column set to 1; returns ``SEQ_INFO`` ``{sequence: timesteps}``."""
    info = {}
    for seq in sequences:
        fmap = _frame_map(seq, step)
        info[seq.name] = len(fmap)
        a = seq.ann
        keep = ~a.ignore & np.isin(a.frame, list(fmap))
        if label is not None:
            keep &= a.label == label
        gt = [
            f"{fmap[int(f)]},{int(i)},{b[0] + 1:.2f},{b[1] + 1:.2f},{b[2] - b[0]:.2f},"
            f"{b[3] - b[1]:.2f},1,1,1"
            for f, i, b in zip(a.frame[keep], a.track[keep], a.boxes[keep], strict=True)
        ]
        (root / "gt" / seq.name / "gt").mkdir(parents=True, exist_ok=True)
        (root / "gt" / seq.name / "gt" / "gt.txt").write_text("".join(f"{r}\n" for r in gt))
        rows = []
        for f, ft in sorted(tracks[seq.name].items()):
            for b, s, c, i in zip(ft.boxes, ft.scores, ft.labels, ft.ids, strict=True):
                if label is None or c == label:
                    rows.append(mot_row(fmap[f], b, s, 0, int(i)))
        (root / "trackers" / "sora" / "data").mkdir(parents=True, exist_ok=True)
        path = root / "trackers" / "sora" / "data" / f"{seq.name}.txt"
        path.write_text("".join(f"{r}\n" for r in rows))
    return info


def _figures(res: dict) -> dict:
    """TrackEval's result dict of one sequence/class -> flat figures (HOTA family averaged
    over its IoU thresholds)."""
    out = {k: round(float(np.mean(res["HOTA"][k])), 4) for k in HOTA_KEYS}
    for k in CLEAR_KEYS:
        v = res["CLEAR"][k]
        out[k] = (
            int(v) if k in ("IDSW", "Frag", "MT", "ML", "CLR_FP", "CLR_FN") else round(float(v), 4)
        )
    out.update({k: round(float(res["Identity"][k]), 4) for k in IDENTITY_KEYS})
    return out


def trackeval_scores(
    sequences: list[Sequence], tracks: dict[str, Tracks], *, label: int | None = None, step=1
) -> dict:
    """TrackEval on the tracks of ``sequences`` (one class, or all with ``label=None``):
    ``{"combined": figures, "per_sequence": {name: figures}}``."""
    import trackeval

    with tempfile.TemporaryDirectory(prefix="sora-trackeval-") as tmp:
        root = Path(tmp)
        info = _trackeval_files(root, sequences, tracks, label, step)
        eval_config = {
            **trackeval.Evaluator.get_default_eval_config(),
            "USE_PARALLEL": False,
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_EMPTY_CLASSES": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
            "BREAK_ON_ERROR": True,
            "LOG_ON_ERROR": str(root / "error.log"),
        }
        dataset_config = {
            **trackeval.datasets.MotChallenge2DBox.get_default_dataset_config(),
            "GT_FOLDER": str(root / "gt"),
            "TRACKERS_FOLDER": str(root / "trackers"),
            "OUTPUT_FOLDER": str(root / "out"),
            "TRACKERS_TO_EVAL": ["sora"],
            "SKIP_SPLIT_FOL": True,
            "SEQ_INFO": info,
            "DO_PREPROC": False,
            "PRINT_CONFIG": False,
        }
        with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints as it goes
            metrics = [
                trackeval.metrics.HOTA(),
                trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
                trackeval.metrics.Identity({"PRINT_CONFIG": False}),
            ]
            evaluator = trackeval.Evaluator(eval_config)
            dataset = trackeval.datasets.MotChallenge2DBox(dataset_config)
            results, _ = evaluator.evaluate([dataset], metrics)
    per = results["MotChallenge2DBox"]["sora"]
    return {
        "combined": _figures(per["COMBINED_SEQ"]["pedestrian"]),
        "per_sequence": {s.name: _figures(per[s.name]["pedestrian"]) for s in sequences},
    }


def id_switch_events(seq: Sequence, tracks: Tracks, step: int = 1) -> list[dict]:
    """Each ID switch CLEAR counts, located: ``{"frame", "time", "gt_id", "after_occlusion"}``.

    Same rule as TrackEval's CLEAR: per frame, Hungarian matching on IoU >= 0.5 with a bonus
    for the pair matched at the previous frame; a switch is a ground-truth object matched
    to a track id other than the one it last had."""
    events: list[dict] = []
    last: dict[int, int] = {}  # gt id -> track id at its last match
    prev: dict[int, int] = {}  # gt id -> track id at the previous frame
    low_since: dict[int, bool] = {}  # gt id -> was occluded at some frame since its last match
    empty = FrameTracks(0, 0.0, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), [])
    for f in range(1, seq.num_frames + 1, step):
        t = seq.target(f)
        keep = ~t["ignore"]
        gt_ids = t["ids"][keep].tolist()
        for g, v in zip(gt_ids, t["visibility"][keep].tolist(), strict=True):
            low_since[g] = low_since.get(g, False) or v < OCCLUDED_BELOW
        ft = tracks.get(f, empty)
        matched: dict[int, int] = {}
        if gt_ids and len(ft.ids):
            sim = box_iou(t["boxes"][keep], torch.from_numpy(ft.boxes)).numpy().astype(float)
            bonus = np.array([[prev.get(g) == int(i) for i in ft.ids] for g in gt_ids])
            score = np.where(sim >= 0.5 - np.finfo(float).eps, 1000 * bonus + sim, 0.0)
            rows, cols = linear_sum_assignment(-score)
            for r, c in zip(rows, cols, strict=True):
                if score[r, c] > np.finfo(float).eps:
                    matched[gt_ids[r]] = int(ft.ids[c])
        for g, i in matched.items():
            if g in last and last[g] != i:
                events.append(
                    {
                        "frame": f,
                        "time": round((f - 1) / seq.fps, 3),
                        "gt_id": g,
                        "after_occlusion": bool(low_since[g]),
                    }
                )
            last[g] = i
            low_since[g] = False
        prev = matched
    return events


def score_tracking(
    sequences: list[Sequence], tracks: dict[str, Tracks], classes: list[str], step: int = 1
) -> dict:
    """All the figures of ``evaluate_tracking`` for given tracks (also used by the
    benchmark on other detectors' and the ground truth's boxes)."""
    overall = trackeval_scores(sequences, tracks, step=step)
    present = sorted({int(c) for s in sequences for c in np.unique(s.ann.label[~s.ann.ignore])})
    per_class = {
        classes[c]: trackeval_scores(sequences, tracks, label=c, step=step)["combined"]
        for c in present
    }
    events = {s.name: id_switch_events(s, tracks[s.name], step) for s in sequences}
    switches = [e for ev in events.values() for e in ev]
    return {
        **overall["combined"],
        "per_class": per_class,
        "per_sequence": overall["per_sequence"],
        "id_switches": {
            "total": len(switches),
            "after_occlusion": sum(e["after_occlusion"] for e in switches),
            "events": events,
        },
    }


def evaluate_tracking(
    run: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    tracker: str = "bytetrack",
    high: float | None = None,
    conf: float | None = None,
    nms_iou: float | None = NMS_IOU,
    options: dict | None = None,
    out: str | Path | None = None,
) -> dict:
    """Track every sequence of ``data/<split>`` with the detection run ``run`` and
    ``tracker`` (thresholds and options as :class:`~sora.inference.tracking.VideoTracker`);
    writes ``OUT/tracking.json`` (``OUT`` defaults to ``RUN/eval``), the tracks
    under ``OUT/tracks/<tracker>/`` and ``OUT/id_switches.png``. Returns the metrics."""
    vt = VideoTracker(run, tracker, high=high, conf=conf, nms_iou=nms_iou, options=options)
    detector = vt.detector
    data = Path(data)
    if not data.is_dir():
        raise DatasetError("dataset not found", data)
    labels = dataset_labels(data)
    sequences = read_split(data, split, labels if labels is not None else detector.classes)
    if not sequences:
        raise DatasetError(f"no sequences in {split}/", data)
    out = Path(out) if out is not None else Path(run) / "eval"
    steps = {frame_step(s, detector.config.detect.fps) for s in sequences}
    if len(steps) > 1:
        raise DatasetError(f"sequences of {split}/ have different frame rates", data)
    step = steps.pop()
    tracks: dict[str, Tracks] = {}
    detect_s = track_s = 0.0
    frames = 0
    for seq in sequences:
        t0 = time.perf_counter()
        dets = detect_sequence(detector, seq)
        t1 = time.perf_counter()
        tracks[seq.name] = track_sequence(
            seq, dets, vt.new_tracker, conf=vt.conf, nms_iou=vt.nms_iou, step=step
        )
        track_s += time.perf_counter() - t1
        detect_s += t1 - t0
        frames += len(dets)
        write_tracks(out / "tracks" / tracker / f"{seq.name}.txt", tracks[seq.name])
    metrics = score_tracking(sequences, tracks, detector.classes, step)
    metrics = {
        "task": "track",
        "split": split,
        "data": str(data),
        "tracker": tracker,
        "tracker_options": vt.options,
        "high_threshold": round(vt.high, 4),
        "conf": round(vt.conf, 4),
        "nms_iou": vt.nms_iou,
        "num_sequences": len(sequences),
        "num_frames": frames,
        **metrics,
        "frames_per_second": {
            "detect": round(frames / max(detect_s, 1e-9), 1),
            "associate": round(frames / max(track_s, 1e-9), 1),
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tracking.json", json.dumps(metrics, indent=2))
    plots.id_switches(metrics["id_switches"]["events"], sequences, out / "id_switches.png")
    return metrics
