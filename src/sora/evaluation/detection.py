"""``evaluate_detection()``: COCO metrics of a SoraDet run on a split, written to ``RUN/eval/``.

Every sequence is streamed whole through the model (the recurrent state carried from its
first frame to its last, reset at a missing frame), as a user's video would be. Metrics come
from torchmetrics' ``MeanAveragePrecision`` with the ``faster_coco_eval`` backend (COCO's
evaluation, not a hand-written AP), on boxes in the sequence's own pixels:

* mAP@[.5:.95], mAP50, mAP75, small/medium/large (COCO areas: 32² and 96² pixels), mAR@100;
* per class: AP@[.5:.95], AP50 and recall at IoU 0.5, the PR curve at IoU 0.5;
* by visibility: the same on the boxes with ``visibility >= 0.5`` (visible) and ``< 0.5``
  (occluded, flickered out, behind a pillar), the other boxes then counting as ignored
  regions (COCO ``iscrowd``) so detections on them are neither right nor wrong;
* per sequence: mAP50 and box counts (the report shows the hardest ones);
* by visibility, the share of true boxes found at the run's best-F1 score threshold, with
  their class and with any class (the subset's AP above counts every false positive of the
  frame against its few boxes, so it stays near 0 for an occluded subset; the share found
  shows what a memory keeps);
* a confusion matrix at the run's best-F1 score threshold, with a background row and column
  (supervision's ``ConfusionMatrix``, matched as Ultralytics does), and from it the share of
  found objects given their own class.

Also writes ``eval/predictions/<sequence>.txt`` in MOTChallenge detection rows
(``frame,-1,x,y,w,h,score,class,-1,-1``; 1-based pixels), which TrackEval and trackers read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from sora.data.detection import frame_step
from sora.data.mot import FrameStore, Sequence, dataset_labels, mot_row, read_split
from sora.errors import DatasetError
from sora.evaluation import plots
from sora.inference.detector import Detector
from sora.io.files import atomic_write_text
from sora.tasks.detection import mean_average_precision, metric_target

#: Visibility below this is "occluded" in the split by visibility.
OCCLUDED_BELOW = 0.5


def detect_sequence(
    detector: Detector, seq: Sequence, chunk: int = 16, embed: str | None = None
) -> dict[int, dict]:
    """Stream one sequence; ``{frame (1-based): {boxes, scores, labels}}`` in its pixels
    (and ``embeddings`` with ``embed``, :meth:`~sora.inference.detector.Detector.stream`)."""
    store = FrameStore(seq, detector.size, cache=False)
    step = frame_step(seq, detector.config.detect.fps)

    def frames():
        for f in range(1, seq.num_frames + 1, step):
            yield (store.get(f), f) if seq.present[f - 1] else (None, f)

    return dict(
        detector.stream(frames(), source_size=(seq.height, seq.width), chunk=chunk, embed=embed)
    )


def _subset(target: dict, keep: torch.Tensor) -> dict:
    """Score only ``keep`` boxes: the others become ignored regions."""
    t = metric_target(target)
    return {**t, "iscrowd": (t["iscrowd"].bool() | ~keep).long()}


def _summary(result: dict) -> dict:
    keys = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
    return {k: round(float(result[k]), 4) for k in keys}


def evaluate_detection(
    run: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    out: str | Path | None = None,
    forecast_class: float | None = None,
    hold: int | None = None,
) -> dict:
    """Score the detection run ``run`` on ``data/<split>``; writes ``OUT/metrics.json``
    (``OUT`` defaults to ``RUN/eval``), predictions, PR curves, AP per class and the hardest
    frames. ``forecast_class`` decodes with that ``detect.forecast_class`` instead of the
    run's (:meth:`~sora.inference.detector.Detector.set_forecast_class`); the value used is
    recorded in the metrics; ``hold`` likewise for ``detect.hold`` (boxes held on objects
    whose detections stop, :class:`~sora.inference.hold.ObjectHold`). Returns the metrics
    dict."""
    detector = Detector(run, forecast_class=forecast_class, hold=hold)
    classes = detector.classes
    data = Path(data)
    if not data.is_dir():
        raise DatasetError("dataset not found", data)
    labels = dataset_labels(data)
    sequences = read_split(data, split, labels if labels is not None else classes)
    top = max((s.label_ids for s in sequences), default=0)
    if top > len(classes):
        raise DatasetError(
            f"class id {top} in {split}/ is not one of the model's {len(classes)} classes", data
        )
    out = Path(out) if out is not None else Path(run) / "eval"
    metrics, result, dets = score_sequences(sequences, lambda seq: detect_sequence(detector, seq))
    metrics["per_class"] = _per_class(result, classes)
    metrics["operating_threshold"] = operating_threshold(result)
    metrics["forecast_class"] = detector.config.detect.forecast_class
    metrics["hold"] = detector.config.detect.hold
    metrics["confusion"] = detection_confusion(
        sequences, dets, classes, metrics["operating_threshold"]
    )
    found = found_by_visibility(sequences, dets, metrics["operating_threshold"])
    hidden = found.pop("hidden")
    for name, part in found.items():
        metrics["visibility"][name].update(part)
    metrics["visibility"]["occluded"]["hidden"] = hidden
    metrics = {"task": "detect", "split": split, "data": str(data), **metrics}
    for seq in sequences:
        _write_mot(out / "predictions" / f"{seq.name}.txt", dets[seq.name])
    per_seq = metrics["per_sequence"]
    by_name = {s.name: s for s in sequences}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    plots.pr_curves(_pr_curves(result, classes), out / "pr_curves.png")
    plots.ap_per_class(metrics["per_class"], out / "ap_per_class.png")
    plots.confusion(
        metrics["confusion"]["matrix"],
        metrics["confusion"]["classes"],
        out / "confusion_matrix.png",
        title=f"Confusion matrix ({split}, score >= {metrics['operating_threshold']:.3f})",
    )
    hardest = sorted(per_seq, key=lambda n: per_seq[n]["map_50"])[:3]
    plots.detection_strip(
        [_strip_row(by_name[n], dets[n], classes, metrics["operating_threshold"]) for n in hardest],
        out / "hardest_frames.png",
    )
    return metrics


def score_sequences(sequences: list[Sequence], detect) -> tuple[dict, dict, dict]:
    """COCO metrics of ``detect(seq) -> {frame: {boxes, scores, labels}}`` (boxes in the
    sequence's pixels) over ``sequences``: overall, by visibility and per sequence.

    Returns ``(metrics, torchmetrics' overall result, {sequence name: detections})``.
    """
    overall = mean_average_precision(class_metrics=True, extended_summary=True)
    by_vis = {name: mean_average_precision() for name in ("visible", "occluded")}
    per_seq: dict[str, dict] = {}
    all_dets: dict[str, dict] = {}
    frames_done, seconds = 0, 0.0
    for seq in sequences:
        t0 = time.perf_counter()
        dets = detect(seq)
        seconds += time.perf_counter() - t0
        frames_done += len(dets)
        preds = list(dets.values())
        targets = [seq.target(f) for f in dets]
        mt = [metric_target(t) for t in targets]
        overall.update(preds, mt)
        seq_map = mean_average_precision(iou_thresholds=[0.5])
        seq_map.update(preds, mt)
        occluded = [t["visibility"] < OCCLUDED_BELOW for t in targets]
        pairs = list(zip(targets, occluded, strict=True))
        by_vis["visible"].update(preds, [_subset(t, ~o) for t, o in pairs])
        by_vis["occluded"].update(preds, [_subset(t, o) for t, o in pairs])
        per_seq[seq.name] = {
            "map_50": round(float(seq_map.compute()["map_50"]), 4),
            "frames": len(dets),
            "boxes": int(sum(len(t["boxes"]) for t in targets)),
            "occluded_boxes": int(sum(int(o.sum()) for o in occluded)),
        }
        all_dets[seq.name] = dets
    result = overall.compute()
    boxes = sum(s["boxes"] for s in per_seq.values())
    occluded = sum(s["occluded_boxes"] for s in per_seq.values())
    counts = {"visible": boxes - occluded, "occluded": occluded}
    metrics = {
        "num_sequences": len(sequences),
        "num_frames": frames_done,
        "num_boxes": boxes,
        **_summary(result),
        "per_class": {},
        "visibility": {
            name: {**_summary(m.compute()), "boxes": counts[name]} for name, m in by_vis.items()
        },
        "per_sequence": per_seq,
        "frames_per_second": round(frames_done / max(seconds, 1e-9), 1),
        "warnings": [w for s in sequences for w in s.warnings],
    }
    return metrics, result, all_dets


def _per_class(result: dict, classes: list[str]) -> dict:
    """AP@[.5:.95] (``map_per_class``), AP50 and recall at IoU 0.5 (from the precision and
    recall arrays, area "all", 100 detections) for each class present."""
    ids = [int(c) for c in result["classes"].flatten().tolist()]
    maps = result["map_per_class"].flatten().tolist()
    precision = result["precision"]  # (T, R, K, A, M)
    recall = result["recall"]  # (T, K, A, M)
    out = {}
    for k, cid in enumerate(ids):
        p = precision[0, :, k, 0, -1]
        p = p[p > -1]
        out[classes[cid]] = {
            "ap": round(float(maps[k]), 4),
            "ap50": round(float(p.mean()) if p.numel() else -1.0, 4),
            "recall50": round(float(recall[0, k, 0, -1]), 4),
        }
    return out


def operating_threshold(result: dict, fallback: float = 0.3) -> float:
    """The score at each class's best-F1 point of its PR curve at IoU 0.5 (COCO's
    interpolated precision and the score at each recall step), averaged over the classes:
    the default ``--conf`` of ``sora predict`` once a run is evaluated."""
    precision, scores = result["precision"], result["scores"]  # (T, R, K, A, M)
    recall = torch.linspace(0, 1, precision.shape[1])
    picks = []
    for k in range(precision.shape[2]):
        p, s = precision[0, :, k, 0, -1], scores[0, :, k, 0, -1]
        ok = (p > 0) & (s > 0)
        if ok.any():
            f1 = torch.where(ok, 2 * p * recall / (p + recall).clamp_min(1e-9), -1)
            picks.append(float(s[int(f1.argmax())]))
    return round(sum(picks) / len(picks), 3) if picks else fallback


def detection_confusion(
    sequences: list[Sequence],
    dets: dict[str, dict[int, dict]],
    classes: list[str],
    conf: float,
    iou: float = 0.5,
) -> dict:
    """Confusion matrix of the detections scoring at least ``conf`` (supervision's
    ``ConfusionMatrix``): each true box is paired with at most one detection of IoU >= ``iou``,
    greedily by IoU whatever the classes; a pair counts at ``[true class, predicted class]``,
    a true box left over at ``[true class, background]``, a detection left over (on nothing,
    or a second box of another class on an object already paired) at ``[background,
    predicted class]``. Ignored boxes (``conf == 0``) are left out, with the detections that
    overlap one by IoU >= ``iou``.

    Returns ``{"classes": classes + ["background"], "matrix": (K+1) x (K+1) counts, "conf",
    "iou", "class_accuracy"}``; ``class_accuracy``: the share of paired true boxes given
    their own class (``None`` when none was paired).
    """
    from supervision.metrics.detection import ConfusionMatrix
    from torchvision.ops import box_iou

    preds, targets = [], []
    for seq in sequences:
        for f, d in dets[seq.name].items():
            t = seq.target(f)
            ignore = t["ignore"]
            keep = torch.ones(len(d["boxes"]), dtype=torch.bool)
            if ignore.any() and len(d["boxes"]):
                keep = box_iou(d["boxes"].float(), t["boxes"][ignore]).max(1).values < iou
            preds.append(
                torch.cat(
                    [
                        d["boxes"][keep].float(),
                        d["labels"][keep, None].float(),
                        d["scores"][keep, None].float(),
                    ],
                    1,
                ).numpy()
            )
            targets.append(
                torch.cat([t["boxes"][~ignore], t["labels"][~ignore, None].float()], 1).numpy()
            )
    matrix = ConfusionMatrix.from_tensors(
        preds, targets, list(classes), conf_threshold=conf, iou_threshold=iou
    ).matrix
    paired = matrix[:-1, :-1]
    return {
        "classes": [*classes, "background"],
        "matrix": matrix.tolist(),
        "conf": conf,
        "iou": iou,
        "class_accuracy": round(float(np.trace(paired) / paired.sum()), 4)
        if paired.sum()
        else None,
    }


def found_by_visibility(
    sequences: list[Sequence], dets: dict[str, dict[int, dict]], conf: float, iou: float = 0.5
) -> dict[str, dict]:
    """The share of true boxes (ignored ones left out) that a detection scoring at least
    ``conf`` finds at IoU >= ``iou``, split as in :func:`score_sequences` (``visible``:
    visibility >= 0.5, ``occluded``: below), and ``hidden``: the occluded boxes of visibility
    0 (flickered out, wholly behind something), which only a memory can find. A detection
    finds at most one box: per frame the pairs are the one-to-one assignment of largest
    total IoU (scipy's ``linear_sum_assignment``), once among boxes and detections of the
    same class (``found``) and once whatever the classes (``found_any_class``);
    ``found_of_boxes``: the boxes counted. ``None`` with no boxes.
    """
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    names = ("visible", "occluded", "hidden")
    counts = {n: {"boxes": 0, "found": 0, "found_any_class": 0} for n in names}

    def pairs(overlap: np.ndarray) -> np.ndarray:
        """(M, N) IoU, 0 where not allowed -> which of the M boxes are paired."""
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        paired = np.zeros(overlap.shape[0], bool)
        paired[rows[overlap[rows, cols] >= iou]] = True
        return paired

    for seq in sequences:
        for f, d in dets[seq.name].items():
            t = seq.target(f)
            real = ~t["ignore"]
            boxes, labels = t["boxes"][real], t["labels"][real]
            occluded = (t["visibility"][real] < OCCLUDED_BELOW).numpy()
            hidden = (t["visibility"][real] <= 0).numpy()
            keep = d["scores"] >= conf
            found = np.zeros((2, len(boxes)), bool)
            if len(boxes) and keep.any():
                overlap = box_iou(boxes, d["boxes"][keep].float()).numpy()
                same = (labels[:, None] == d["labels"][keep][None]).numpy()
                found = np.stack([pairs(overlap * same), pairs(overlap)])
            for name, part in (("visible", ~occluded), ("occluded", occluded), ("hidden", hidden)):
                c = counts[name]
                c["boxes"] += int(part.sum())
                c["found"] += int(found[0, part].sum())
                c["found_any_class"] += int(found[1, part].sum())
    return {
        name: {
            "found_of_boxes": c["boxes"],
            **{
                f"{k}_at_threshold": round(c[k] / c["boxes"], 4) if c["boxes"] else None
                for k in ("found", "found_any_class")
            },
        }
        for name, c in counts.items()
    }


def _pr_curves(result: dict, classes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class: recall thresholds and the interpolated precision at IoU 0.5."""
    ids = [int(c) for c in result["classes"].flatten().tolist()]
    rec = np.linspace(0, 1, result["precision"].shape[1])
    curves = {}
    for k, cid in enumerate(ids):
        p = result["precision"][0, :, k, 0, -1].numpy()
        curves[classes[cid]] = (rec[p > -1], p[p > -1])
    return curves


def _strip_row(
    seq: Sequence, dets: dict[int, dict], classes: list[str], thresh: float, n: int = 5
) -> dict:
    """Up to ``n`` frames of a sequence where most true boxes were missed, with the boxes
    scoring at least ``thresh`` (the run's best-F1 threshold: what ``predict`` draws)."""
    from torchvision.ops import box_iou

    misses = []
    for f, d in dets.items():
        t = seq.target(f)
        if len(t["boxes"]) == 0:
            continue
        good = d["boxes"][d["scores"] >= thresh]
        hit = (
            box_iou(t["boxes"], good).max(1).values >= 0.5
            if len(good)
            else torch.zeros(len(t["boxes"]), dtype=torch.bool)
        )
        misses.append((int((~hit).sum()), f))
    worst = sorted(sorted(misses, key=lambda m: -m[0])[:n], key=lambda m: m[1])
    store = FrameStore(seq, (seq.height, seq.width), cache=False)
    frames = []
    for _, f in worst:
        t, d = seq.target(f), dets[f]
        keep = d["scores"] >= thresh
        frames.append(
            {
                "image": store.get(f).permute(1, 2, 0).numpy(),
                "title": f"frame {f}",
                "true": [
                    (b.tolist(), f"{classes[int(c)]} v={v:.1f}")
                    for b, c, v in zip(t["boxes"], t["labels"], t["visibility"], strict=True)
                ],
                "pred": [
                    (b.tolist(), f"{classes[int(c)]} {s:.2f}")
                    for b, c, s in zip(
                        d["boxes"][keep], d["labels"][keep], d["scores"][keep], strict=True
                    )
                ],
            }
        )
    return {"name": seq.name, "frames": frames}


def _write_mot(path: Path, dets: dict[int, dict]) -> None:
    rows = (mot_row(f, b, s, c) for f, d in sorted(dets.items()) for b, s, c in _triples(d))
    atomic_write_text(path, "".join(f"{r}\n" for r in rows))


def _triples(d: dict):
    return zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True)
