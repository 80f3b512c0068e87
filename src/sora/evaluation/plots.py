"""PNG figures for the report (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sora.io.files import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def curves(rows: list[dict], key: str, path: Path, title: str) -> Path:
    """Train and val ``key`` (``loss`` or ``acc``) per epoch."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for split, style in (("train", "-o"), ("val", "-s")):
        pts = [(r["epoch"], r[f"{split}_{key}"]) for r in rows if f"{split}_{key}" in r]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, style, label=split, markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.set_title(title)
    if key == "acc":
        ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def confusion(matrix: list[list[int]], classes: list[str], path: Path) -> Path:
    """Row-normalized confusion matrix with counts in the cells."""
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    k = len(classes)
    size = max(4.5, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                colour = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, int(m[i, j]), ha="center", va="center", color=colour, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_title("Confusion matrix (test)")
    return _save(fig, path)


def per_class_recall(per_class: dict, path: Path) -> Path:
    names = list(per_class)
    recall = [per_class[n]["recall"] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 3.4))
    bars = ax.bar(range(len(names)), recall, color="#4c78a8")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.set_title("Per-class recall (test)")
    for b, r in zip(bars, recall, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, r + 0.01, f"{r:.2f}", ha="center", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def mistakes_strip(mistakes: list[dict], path: Path) -> Path:
    """One row per mistake: its frames (uint8 ``(T, H, W, 3)``) titled true -> predicted."""
    rows = max(1, len(mistakes))
    cols = max((len(m["frames"]) for m in mistakes), default=1)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows + 0.3), squeeze=False)
    fig.subplots_adjust(hspace=0.75, top=1 - 0.55 / rows)
    for ax in axes.flat:
        ax.axis("off")
    if not mistakes:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    for r, m in enumerate(mistakes):
        for c, frame in enumerate(m["frames"]):
            axes[r, c].imshow(frame)
            axes[r, c].set_title(f"t={m['times'][c]:.1f}s", fontsize=7)
        axes[r, 0].annotate(
            f"{m['name']}: true {m['true']}, predicted {m['pred']} ({m['prob']:.2f})",
            xy=(0, 1),
            xycoords="axes fraction",
            xytext=(0, 13),
            textcoords="offset points",
            fontsize=8,
            fontweight="bold",
            va="bottom",
        )
    fig.suptitle("Most confident mistakes (frames in time order)", fontsize=9)
    return _save(fig, path)


def timeline(segments: list[dict], truth: list[dict] | None, path: Path) -> Path:
    """Predicted labels over time (and the ground truth when known)."""
    labels = sorted({s["label"] for s in segments} | {s["label"] for s in truth or []})
    colours = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(9, 1.6 if truth is None else 2.2))
    tracks = [("predicted", segments)] + ([("truth", truth)] if truth else [])
    for y, (_, segs) in enumerate(tracks):
        for s in segs:
            ax.barh(
                y, s["end"] - s["start"], left=s["start"], color=colours[s["label"]], height=0.8
            )
    ax.set_yticks(range(len(tracks)), [n for n, _ in tracks])
    ax.set_xlabel("seconds")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[lab]) for lab in labels]
    ax.legend(
        handles,
        labels,
        ncol=min(5, len(labels)),
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.45 if truth else -0.6),
        frameon=False,
    )
    ax.set_title("Timeline")
    return _save(fig, path)
