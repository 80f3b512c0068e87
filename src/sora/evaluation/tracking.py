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
from sora.data.mot import FrameStore, Sequence, dataset_labels, mot_row, read_split
from sora.data.tubes import read_actions
from sora.errors import DatasetError
from sora.evaluation import plots
from sora.evaluation.detection import OCCLUDED_BELOW, detect_sequence
from sora.inference.detector import FrameDetections
from sora.inference.reid import ReIdentifier
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
    reid: ReIdentifier | None = None,
) -> Tracks:
    """Associate one sequence's detections ``{frame: {boxes, scores, labels}}`` into tracks
    with a fresh ``new_tracker(fps)``; frames are timed ``(frame - 1) / seq.fps``. ``reid``
    (a fresh one) re-links lost objects on the detections' ``embeddings``."""
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
                forecast=None if "forecast" not in d else np.asarray(d["forecast"], bool),
                embeddings=None if "embeddings" not in d else np.asarray(d["embeddings"]),
                frame_size=(seq.height, seq.width),
            )

    tracks = track_detections(frames(), tracker, conf=conf, nms_iou=nms_iou, reid=reid)
    return {ft.index: ft for ft in tracks}


def ground_truth_tracks(seq: Sequence, step: int = 1, min_visibility: float = 0.0) -> Tracks:
    """The ground truth as tracks (ids and boxes as annotated, ignore rows left out): what a
    perfect detector and tracker would give, to measure what comes after them alone. Only
    boxes at least ``min_visibility`` visible are kept: above 0, a perfect detector that
    sees nothing of the less visible objects (what finding them is worth to the tracks)."""
    out = {}
    for f in range(1, seq.num_frames + 1, step):
        if not seq.present[f - 1]:
            continue
        t = seq.target(f)
        keep = ~t["ignore"] & (t["visibility"] >= min_visibility)
        out[f] = FrameTracks(
            index=f,
            time=(f - 1) / seq.fps,
            boxes=t["boxes"][keep].numpy(),
            scores=np.ones(int(keep.sum()), np.float32),
            labels=t["labels"][keep].numpy(),
            ids=t["ids"][keep].numpy(),
        )
    return out


def ground_truth_detections(
    seq: Sequence, step: int = 1, min_visibility: float = 0.0
) -> dict[int, dict]:
    """The ground-truth boxes as detections scored 1 (to measure the association ceiling):
    ``{frame: {boxes, scores, labels}}``; ``min_visibility`` as in :func:`ground_truth_tracks`."""
    return {
        f: {"boxes": ft.boxes, "scores": ft.scores, "labels": ft.labels}
        for f, ft in ground_truth_tracks(seq, step, min_visibility).items()
    }


def tag_sequence(seq: Sequence, tracks: Tracks, tagger) -> None:
    """Fill ``actions``/``action_probs`` of one sequence's tracks with ``tagger`` (an
    :class:`~sora.inference.actions.ActionTagger`), streamed over the sequence's frames."""
    tagger.reset()
    store = FrameStore(seq, (seq.height, seq.width), cache=False)
    for f in sorted(tracks):
        ft = tracks[f]
        image = store.get(f).permute(1, 2, 0).numpy()
        ft.actions, ft.action_probs = tagger.update(ft.time, image, ft.ids, ft.boxes)


def track_rows(frame: int, ft: FrameTracks) -> list[str]:
    """MOTChallenge rows ``frame,id,x,y,w,h,conf,class,-1,-1`` (1-based pixels and class) of
    one frame's tracks, then ``,action,probability`` (action 1-based) when tagged."""
    rows = [
        mot_row(frame, b, s, c, int(i))
        for b, s, c, i in zip(
            ft.boxes.tolist(), ft.scores.tolist(), ft.labels.tolist(), ft.ids, strict=True
        )
    ]
    if ft.actions is not None:
        rows = [
            f"{r},{int(a) + 1},{float(p):.4f}"
            for r, a, p in zip(rows, ft.actions, ft.action_probs, strict=True)
        ]
    return rows


def write_tracks(path: Path, tracks: Tracks) -> None:
    """The tracks of one sequence as :func:`track_rows`, atomically."""
    rows = (r for f, ft in sorted(tracks.items()) for r in track_rows(f, ft))
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


def frame_matches(seq: Sequence, tracks: Tracks, step: int = 1):
    """Per frame, CLEAR's matching of ground-truth objects to tracks: yields ``(frame,
    target, {gt id: index into that frame's tracks})``. Hungarian matching on IoU >= 0.5
    with a bonus for the pair matched at the previous frame, as TrackEval's CLEAR does."""
    prev: dict[int, int] = {}  # gt id -> track id at the previous frame
    for f in range(1, seq.num_frames + 1, step):
        t = seq.target(f)
        keep = ~t["ignore"]
        gt_ids = t["ids"][keep].tolist()
        ft = tracks.get(f)
        matched: dict[int, int] = {}
        if gt_ids and ft is not None and len(ft.ids):
            sim = box_iou(t["boxes"][keep], torch.from_numpy(ft.boxes)).numpy().astype(float)
            bonus = np.array([[prev.get(g) == int(i) for i in ft.ids] for g in gt_ids])
            score = np.where(sim >= 0.5 - np.finfo(float).eps, 1000 * bonus + sim, 0.0)
            rows, cols = linear_sum_assignment(-score)
            for r, c in zip(rows, cols, strict=True):
                if score[r, c] > np.finfo(float).eps:
                    matched[gt_ids[r]] = int(c)
        prev = {g: int(ft.ids[c]) for g, c in matched.items()}
        yield f, t, matched


def id_switch_events(seq: Sequence, tracks: Tracks, step: int = 1) -> list[dict]:
    """Each ID switch CLEAR counts, located: ``{"frame", "time", "gt_id", "after_occlusion"}``:
    a ground-truth object matched (:func:`frame_matches`) to a track id other than the one
    it last had."""
    events: list[dict] = []
    last: dict[int, int] = {}  # gt id -> track id at its last match
    low_since: dict[int, bool] = {}  # gt id -> was occluded at some frame since its last match
    for f, t, matched in frame_matches(seq, tracks, step):
        keep = ~t["ignore"]
        for g, v in zip(t["ids"][keep].tolist(), t["visibility"][keep].tolist(), strict=True):
            low_since[g] = low_since.get(g, False) or v < OCCLUDED_BELOW
        for g, c in matched.items():
            i = int(tracks[f].ids[c])
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
    return events


def action_scores(
    sequences: list[Sequence], tracks: dict[str, Tracks], classes: list[str], step: int = 1
) -> dict:
    """Per-track and frame-level action accuracy against ``gt/actions.txt``.

    Each labelled ground-truth object gets the track matched to it most often
    (:func:`frame_matches`); its action is that track's label at the last frame they were
    matched. ``track_accuracy``: objects whose action is right, over all labelled objects
    (an object never matched counts as wrong; ``tracks_matched`` says how many were);
    ``track_accuracy_matched``: over the matched ones. ``frame_accuracy``: ground-truth
    boxes matched by the object's track whose action at that frame is right ("box + id +
    action"), over all labelled boxes. ``confusion``: objects, true action by row."""
    objects = right = matched_objects = right_matched = boxes = boxes_right = 0
    confusion = np.zeros((len(classes), len(classes)), int)
    for seq in sequences:
        truth = read_actions(seq)
        per_frame = list(frame_matches(seq, tracks[seq.name], step))
        count: dict[int, dict[int, int]] = {}
        for f, _, matched in per_frame:
            for g, c in matched.items():
                i = int(tracks[seq.name][f].ids[c])
                count.setdefault(g, {})[i] = count.setdefault(g, {}).get(i, 0) + 1
        owner = {g: max(c, key=c.get) for g, c in count.items()}
        final: dict[int, int] = {}
        for f, t, matched in per_frame:
            ft = tracks[seq.name].get(f)
            keep = ~t["ignore"]
            for g in t["ids"][keep].tolist():
                if g not in truth:
                    continue
                boxes += 1
                c = matched.get(g)
                if c is None or int(ft.ids[c]) != owner.get(g):
                    continue
                final[g] = int(ft.actions[c])
                boxes_right += classes[final[g]] == truth[g]
        for g, action in truth.items():
            if not np.any(seq.ann.track == g):
                continue
            objects += 1
            if g in final:
                matched_objects += 1
                ok = classes[final[g]] == action
                right += ok
                right_matched += ok
                if action in classes:
                    confusion[classes.index(action), final[g]] += 1
    return {
        "objects": objects,
        "tracks_matched": matched_objects,
        "track_accuracy": round(right / max(objects, 1), 4),
        "track_accuracy_matched": round(right_matched / max(matched_objects, 1), 4),
        "boxes": boxes,
        "frame_accuracy": round(boxes_right / max(boxes, 1), 4),
        "classes": classes,
        "confusion": confusion.tolist(),
    }


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


def run_sequence(vt: VideoTracker, seq: Sequence) -> tuple[Tracks, dict]:
    """One MOT sequence through ``vt``: SoraDet streamed over it, its detections associated,
    and each track's action when ``vt`` has an action run. Returns the tracks and
    ``{"frames", "detect_seconds", "track_seconds", "relinked"}`` (association and actions;
    how many new tracks re-identification gave an old id)."""
    t0 = time.perf_counter()
    dets = detect_sequence(vt.detector, seq, embed=vt.reid)
    t1 = time.perf_counter()
    step = frame_step(seq, vt.detector.config.detect.fps)
    reid = vt.new_reid()
    tracks = track_sequence(
        seq, dets, vt.new_tracker, conf=vt.conf, nms_iou=vt.nms_iou, step=step, reid=reid
    )
    if vt.tagger is not None:
        tag_sequence(seq, tracks, vt.tagger)
    cost = {
        "frames": len(dets),
        "detect_seconds": t1 - t0,
        "relinked": reid.relinked if reid else 0,
    }
    return tracks, {**cost, "track_seconds": time.perf_counter() - t1}


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
    actions: str | Path | None = None,
    out: str | Path | None = None,
    reid: str | None = "colour",
    reid_window: float | None = None,
    forecast_class: float | None = None,
) -> dict:
    """Track every sequence of ``data/<split>`` with the detection run ``run`` and
    ``tracker`` (thresholds, options and ``reid`` as
    :class:`~sora.inference.tracking.VideoTracker`, ``forecast_class`` too);
    writes ``OUT/tracking.json`` (``OUT`` defaults to ``RUN/eval``), the tracks
    under ``OUT/tracks/<tracker>/`` and ``OUT/id_switches.png``. Returns the metrics."""
    vt = VideoTracker(
        run,
        tracker,
        high=high,
        conf=conf,
        nms_iou=nms_iou,
        options=options,
        actions=actions,
        reid=reid,
        reid_window=reid_window,
        forecast_class=forecast_class,
    )
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
    frames = relinked = 0
    for seq in sequences:
        tracks[seq.name], cost = run_sequence(vt, seq)
        frames += cost["frames"]
        relinked += cost["relinked"]
        detect_s += cost["detect_seconds"]
        track_s += cost["track_seconds"]
        write_tracks(out / "tracks" / tracker / f"{seq.name}.txt", tracks[seq.name])
    metrics = score_tracking(sequences, tracks, detector.classes, step)
    if vt.tagger is not None:
        metrics["actions"] = {
            "run": str(actions),
            **action_scores(sequences, tracks, vt.tagger.classes, step),
        }
    metrics = {
        "task": "track",
        "split": split,
        "data": str(data),
        "tracker": tracker,
        "tracker_options": vt.options,
        "high_threshold": round(vt.high, 4),
        "conf": round(vt.conf, 4),
        "nms_iou": vt.nms_iou,
        "forecast_class": detector.config.detect.forecast_class,
        "reid": None
        if vt.reid is None
        else {
            "embedding": vt.reid,
            "window_seconds": vt.reid_window,
            "max_distance": vt.reid_distance,
            "relinked": relinked,
        },
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
