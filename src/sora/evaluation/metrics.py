"""Classification metrics from per-video probabilities, computed with torchmetrics."""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """``probs`` ``(N, K)`` and integer ``labels`` ``(N,)`` -> the metrics dict.

    Keys: ``accuracy`` (micro), ``top5`` (top-min(5, K)), ``macro_precision``,
    ``macro_recall``, ``macro_f1``, ``per_class`` ({name: precision, recall, f1, support}),
    ``confusion_matrix`` (rows = true class, columns = predicted), ``classes``, ``num_videos``.
    """
    k = len(classes)
    if probs.ndim != 2 or probs.shape[1] != k or labels.shape[0] != probs.shape[0]:
        raise ValueError(f"probs must be (N, {k}) with N labels, got {tuple(probs.shape)}")
    args = {"num_classes": k}
    per_p = multiclass_precision(probs, labels, average=None, **args)
    per_r = multiclass_recall(probs, labels, average=None, **args)
    per_f = multiclass_f1_score(probs, labels, average=None, **args)
    support = torch.bincount(labels, minlength=k)
    return {
        "accuracy": float(multiclass_accuracy(probs, labels, average="micro", **args)),
        "top5": float(multiclass_accuracy(probs, labels, average="micro", top_k=min(5, k), **args)),
        "macro_precision": float(multiclass_precision(probs, labels, average="macro", **args)),
        "macro_recall": float(multiclass_recall(probs, labels, average="macro", **args)),
        "macro_f1": float(multiclass_f1_score(probs, labels, average="macro", **args)),
        "per_class": {
            name: {
                "precision": float(per_p[i]),
                "recall": float(per_r[i]),
                "f1": float(per_f[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": multiclass_confusion_matrix(probs, labels, **args).tolist(),
        "classes": list(classes),
        "num_videos": int(labels.shape[0]),
    }
