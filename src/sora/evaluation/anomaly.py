"""Scoring anomaly detection on the ``testing/`` videos of the anomaly layout.

The frame-level protocol of UCSD Ped2, CUHK Avenue and ShanghaiTech: every test frame gets a
score, and the scores are compared with the frame labels.

* AUC ``micro``: one ROC over all frames of all videos; ``macro``: the mean of the per-video
  AUCs (videos with both normal and anomalous frames).
* EER: the error rate where the false-positive rate equals the miss rate.
* detection rate at 1 false alarm per 10 minutes: an anomaly **event** (a run of anomalous
  frames) is detected when some frame of it scores over the threshold; a false alarm is a run
  of over-threshold frames that touches no event; the threshold is the lowest that keeps false
  alarms at or under 1 per 10 minutes of footage.
* per type (from ``anomaly_boxes.csv``): the AUC of the normal frames against the frames of
  that type.

Scores are causal: each frame's score uses only the frames up to it (no per-video min-max
normalization, which needs the whole video and is not possible on a live camera).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc

from sora.config import Config
from sora.data.anomaly import AnomalyVideo, fit_labels, read_anomaly_split
from sora.errors import DatasetError
from sora.io.files import atomic_write_text
from sora.models.store import load_model, resolve_model_dir

FALSE_ALARMS_PER_MINUTE = 0.1


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve; ``None`` unless both classes are present."""
    labels = np.asarray(labels).astype(int)
    if labels.min(initial=1) == labels.max(initial=0) or len(labels) == 0:
        return None
    return float(
        binary_auroc(torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(labels))
    )


def roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds."""
    fpr, tpr, _ = binary_roc(
        torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(np.asarray(labels, int))
    )
    return fpr.numpy(), tpr.numpy()


def eer(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Equal error rate: where the false-positive rate meets the miss rate (interpolated)."""
    if auc(scores, labels) is None:
        return None
    fpr, tpr = roc(scores, labels)
    fnr = 1 - tpr
    i = int(np.argmax(fpr >= fnr))
    if i == 0:
        return float(fpr[0])
    # the crossing lies between points i-1 and i
    d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in a 1-D mask."""
    m = np.concatenate([[0], np.asarray(mask, np.int8), [0]])
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def alarm_counts(
    scores: list[np.ndarray], labels: list[np.ndarray], threshold: float
) -> tuple[int, int, int]:
    """``(events detected, events, false alarms)`` over videos at ``threshold``."""
    hit = total = false = 0
    for s, y in zip(scores, labels, strict=True):
        over = s > threshold
        events = runs(y > 0)
        total += len(events)
        hit += sum(bool(over[a:b].any()) for a, b in events)
        false += sum(not y[a:b].any() for a, b in runs(over))
    return hit, total, false


def detection_at_false_alarms(
    scores: list[np.ndarray],
    labels: list[np.ndarray],
    minutes: float,
    rate: float = FALSE_ALARMS_PER_MINUTE,
) -> tuple[float | None, float]:
    """The share of events detected at the lowest threshold that gives at most ``rate`` false
    alarms per minute over ``minutes`` of footage; and that threshold."""
    allowed = rate * minutes
    candidates = np.unique(np.concatenate(scores))
    if len(candidates) > 400:
        candidates = np.quantile(candidates, np.linspace(0, 1, 401))
    best = (None, float(candidates[-1]) if len(candidates) else 0.0)
    for thr in candidates[::-1]:  # from the highest down: false alarms grow (mostly)
        hit, total, false = alarm_counts(scores, labels, float(thr))
        if false > allowed:
            break
        best = (hit / total if total else None, float(thr))
    return best


def score_videos(model, config: Config, videos: list[AnomalyVideo], decode: Callable) -> list[dict]:
    """Stream each video through the model: ``score`` ``(T,)``, ``cells`` ``(T, h, w)``,
    ``labels`` ``(T,)`` (:func:`fit_labels`), and ``example``: ``(frame index, image (H, W, 3))``
    of its highest-scoring anomalous frame for the heat-map figure (``None`` without one).
    Only that frame of the decoded video is kept."""
    from sora.tasks.anomaly import stream

    out = []
    for v in videos:
        frames = decode(v.path, config)
        o = stream(model, frames, config)
        score, labels = o["score"].numpy(), fit_labels(v, len(frames))
        idx = np.flatnonzero(labels)
        example = None
        if len(idx):
            i = int(idx[np.argmax(score[idx])])
            example = (i, frames[i].permute(1, 2, 0).numpy().copy())
        out.append(
            {"score": score, "cells": o["cells"].numpy(), "labels": labels, "example": example}
        )
    return out


def anomaly_metrics(
    scores: list[np.ndarray], videos: list[AnomalyVideo], labels: list[np.ndarray], fps: float
) -> dict:
    """Every figure of the module docstring for per-video ``scores`` and ``labels``."""
    s, y = np.concatenate(scores), np.concatenate(labels)
    per_video = {
        v.name: {"auc": auc(sc, lb), "frames": len(lb), "anomalous": int(lb.sum())}
        for v, sc, lb in zip(videos, scores, labels, strict=True)
    }
    macro = [p["auc"] for p in per_video.values() if p["auc"] is not None]
    minutes = len(y) / fps / 60
    rate, thr = detection_at_false_alarms(scores, labels, minutes)
    types: dict[str, list[int]] = {}
    offset = 0
    for v, lb in zip(videos, labels, strict=True):
        for i, kinds in v.types.items():
            if i < len(lb) and lb[i]:
                for k in kinds:
                    types.setdefault(k, []).append(offset + i)
        offset += len(lb)
    normal = np.flatnonzero(y == 0)
    per_type = {}
    for k, idx in sorted(types.items()):
        pick = np.concatenate([normal, np.asarray(idx)])
        per_type[k] = {"auc": auc(s[pick], y[pick]), "frames": len(idx)}
    return {
        "auc_micro": auc(s, y),
        "auc_macro": float(np.mean(macro)) if macro else None,
        "eer": eer(s, y),
        "detection_rate_at_1_false_alarm_per_10_min": rate,
        "threshold_at_1_false_alarm_per_10_min": thr,
        "num_videos": len(videos),
        "num_frames": len(y),
        "anomalous_frames": int(y.sum()),
        "minutes": minutes,
        "per_type": per_type,
        "per_video": per_video,
    }


def evaluate_anomaly(run: str | Path, data: str | Path, *, out: str | Path | None = None) -> dict:
    """Score ``DATA/testing`` with the model in ``run``; write ``OUT/anomaly.json``,
    ``anomaly_scores.csv`` (video, frame, score, label), ``anomaly_timeline.png``,
    ``anomaly_roc.png`` and ``anomaly_heatmaps.png`` (``OUT`` defaults to ``RUN/eval``).

    Raises:
        DatasetError: no testing videos, missing or mismatched labels (naming the file).
    """
    import time

    from sora.evaluation import plots
    from sora.tasks.anomaly import decode

    data = Path(data)
    if not data.exists():
        raise DatasetError("dataset not found", data)
    model, config, _ = load_model(resolve_model_dir(run))
    if config.task != "anomaly":
        raise DatasetError(f"not an anomaly run (task {config.task})", run)
    videos = read_anomaly_split(data, "testing")
    start = time.perf_counter()
    results = score_videos(model, config, videos, decode)
    seconds = time.perf_counter() - start
    labels = [r["labels"] for r in results]
    scores = [r["score"] for r in results]
    fps = config.anomaly.fps or _native_fps(videos[0].path)
    metrics = anomaly_metrics(scores, videos, labels, fps)
    metrics["data"] = str(data)
    metrics["fps"] = fps
    metrics["frames_per_second"] = metrics["num_frames"] / max(seconds, 1e-9)
    metrics["alert_threshold"] = float(model.threshold)
    hit, total, false = alarm_counts(scores, labels, metrics["alert_threshold"])
    metrics["at_alert_threshold"] = {
        "events_detected": hit,
        "events": total,
        "false_alarms": false,
        "false_alarms_per_minute": false / metrics["minutes"] if metrics["minutes"] else 0.0,
    }
    out = Path(out) if out is not None else Path(run) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "anomaly.json", json.dumps(metrics, indent=2))
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["video", "frame", "score", "label"])
    for v, sc, lb in zip(videos, scores, labels, strict=True):
        w.writerows(
            [v.name, i + 1, f"{x:.4f}", int(t)] for i, (x, t) in enumerate(zip(sc, lb, strict=True))
        )
    atomic_write_text(out / "anomaly_scores.csv", buffer.getvalue())
    names = [v.name for v in videos]
    plots.anomaly_timeline(
        names, scores, labels, fps, float(model.threshold), out / "anomaly_timeline.png"
    )
    fpr, tpr = roc(np.concatenate(scores), np.concatenate(labels))
    plots.roc_curve(fpr, tpr, metrics["auc_micro"], out / "anomaly_roc.png")
    plots.heatmap_strip(_heat_examples(videos, results), out / "anomaly_heatmaps.png")
    return metrics


def _heat_examples(videos, results, n: int = 8) -> list[dict]:
    """The highest-scoring anomalous frame of each type (or video), for the heat-map strip."""
    picks: dict[str, dict] = {}
    for v, r in zip(videos, results, strict=True):
        if r["example"] is None:
            continue
        i, image = r["example"]
        kind = ", ".join(sorted(v.types.get(i, ()))) or v.name
        if kind not in picks or r["score"][i] > picks[kind]["score"]:
            picks[kind] = {
                "title": f"{kind} ({v.name} #{i + 1})",
                "image": image,
                "heat": r["cells"][i],
                "score": float(r["score"][i]),
                "boxes": v.boxes.get(i, []),
            }
    return list(picks.values())[:n]


def _native_fps(path: Path) -> float:
    from sora.io.video import probe

    return float(probe(path).fps or 25.0)
