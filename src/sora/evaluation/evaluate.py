"""``evaluate()``: score a trained run on a split and write ``RUN/eval/``.

Each video is scored on ``views`` uniform temporal views; the softmax probabilities are
averaged per video before the metrics are computed.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from sora.errors import DatasetError
from sora.evaluation import plots
from sora.evaluation.metrics import classification_metrics
from sora.io.files import atomic_write_text
from sora.models.store import load_model, resolve_model_dir
from sora.tasks.classification import build_dataset


@torch.no_grad()
def predict_dataset(
    model, loader: DataLoader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Per-video probabilities ``(N, K)`` (views averaged), labels ``(N,)`` and dataset indices."""
    probs, labels, indices = [], [], []
    for batch in loader:
        video = batch["video"].to(device)  # (B, T, C, H, W) or (B, V, T, C, H, W)
        views = video.shape[1] if video.dim() == 6 else 1
        flat = video.flatten(0, 1) if video.dim() == 6 else video
        out = model(flat)
        out = out[:, -1] if out.dim() == 3 else out
        p = out.float().softmax(-1).view(video.shape[0], views, -1).mean(1)
        probs.append(p.cpu())
        labels.append(batch["label"])
        indices += batch["index"].tolist()
    return torch.cat(probs), torch.cat(labels), indices


def evaluate(
    run: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    views: int | None = None,
    batch_size: int | None = None,
    out: str | Path | None = None,
    mistakes: int = 4,
) -> dict:
    """Evaluate the model in ``run`` on ``data`` (folder root or CSV manifest).

    Writes ``OUT/metrics.json`` (``OUT`` defaults to ``RUN/eval``), ``predictions.csv``,
    ``confusion_matrix.png``, ``per_class_recall.png`` and ``mistakes.png``.
    """
    model_dir = resolve_model_dir(run)
    model, config, classes = load_model(model_dir)
    data = Path(data)
    if not data.exists():
        raise DatasetError("dataset not found", data)
    if data.is_dir() and (data / split).is_dir():
        extra = sorted(set(list_classes_of(data / split)) - set(classes))
        if extra:
            raise DatasetError(
                f"class folder {extra[0]!r} in {split}/ is not one of the model's classes "
                f"({', '.join(classes)})",
                data,
            )
    views = views or config.data.eval_views
    ds = build_dataset(config, data, split, classes, views=views)
    if len(ds) == 0:
        raise DatasetError(f"the {split} split has no readable videos", data)
    loader = DataLoader(
        ds,
        batch_size=batch_size or config.data.batch_size,
        shuffle=False,
        num_workers=config.data.num_workers,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    probs, labels, indices = predict_dataset(model, loader, device)
    metrics = classification_metrics(probs, labels, classes)
    metrics["split"] = split
    metrics["views"] = views
    metrics["data"] = str(data)
    metrics["skipped"] = ds.skipped
    metrics["failed"] = ds.failed

    out = Path(out) if out is not None else Path(run) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    _write_predictions(out / "predictions.csv", ds, probs, labels, indices, classes)
    plots.confusion(
        metrics["confusion_matrix"],
        classes,
        out / "confusion_matrix.png",
        title=f"Confusion matrix ({split})",
    )
    plots.per_class_recall(metrics["per_class"], out / "per_class_recall.png")
    plots.mistakes_strip(
        _worst_mistakes(ds, probs, labels, indices, classes, config, mistakes), out / "mistakes.png"
    )
    return metrics


def list_classes_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _write_predictions(path, ds, probs, labels, indices, classes) -> None:
    buffer = io.StringIO()
    w = csv.writer(buffer)
    w.writerow(["path", "label", "predicted", "probability", "correct"])
    conf, pred = probs.max(1)
    for i, j in enumerate(indices):
        w.writerow(
            [
                ds.items[j].path,
                classes[labels[i]],
                classes[pred[i]],
                f"{conf[i]:.4f}",
                int(pred[i] == labels[i]),
            ]
        )
    atomic_write_text(path, buffer.getvalue())


def _worst_mistakes(ds, probs, labels, indices, classes, config, n: int) -> list[dict]:
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != labels).flatten().tolist()
    wrong.sort(key=lambda i: -float(conf[i]))
    out = []
    for i in wrong[:n]:
        j = indices[i]
        frames = ds.decode(j)  # (N, 3, H, W) uint8 at the data fps
        pick = np.linspace(0, frames.shape[0] - 1, 6).round().astype(int)
        out.append(
            {
                "name": Path(ds.items[j].path).name,
                "true": classes[labels[i]],
                "pred": classes[pred[i]],
                "prob": float(conf[i]),
                "frames": [frames[k].permute(1, 2, 0).numpy() for k in pick],
                "times": [k / config.data.fps for k in pick],
            }
        )
    return out
