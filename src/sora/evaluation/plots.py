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
    if key in ("acc", "map50"):
        ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
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
    ax.set_title(title)
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


def pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Precision against recall at IoU 0.5, one line per class."""
    fig, ax = plt.subplots(figsize=(5.2, 4))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall at IoU 0.5 (test)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    return _save(fig, path)


def ap_per_class(per_class: dict, path: Path) -> Path:
    """AP50 and AP@[.5:.95] per class, side by side."""
    names = list(per_class)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * len(names) + 2), 3.4))
    for offset, key, label in ((-0.2, "ap50", "AP50"), (0.2, "ap", "AP@[.5:.95]")):
        values = [max(0.0, per_class[n][key]) for n in names]
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        for b, v in zip(bars, values, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_title("Average precision per class (test)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def detection_strip(rows: list[dict], path: Path) -> Path:
    """One row per sequence: frames with true boxes (green, dashed; ``v`` = visibility) and
    predicted boxes (orange, with class and score)."""
    from matplotlib.patches import Rectangle

    nrows = max(1, len(rows))
    ncols = max((len(r["frames"]) for r in rows), default=1) or 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.3 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, frame in enumerate(row["frames"]):
            ax = axes[r, c]
            ax.imshow(frame["image"])
            ax.set_title(f"{row['name']} {frame['title']}", fontsize=7)
            for colour, style, key in (("#2ca02c", "--", "true"), ("#ff7f0e", "-", "pred")):
                for (x0, y0, x1, y1), text in frame[key]:
                    ax.add_patch(
                        Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, ls=style, lw=1)
                    )
                    ax.text(
                        x0,
                        y0 - 1 if key == "pred" else y1 + 1,
                        text,
                        color=colour,
                        fontsize=5,
                        va="bottom" if key == "pred" else "top",
                    )
    fig.suptitle(
        "Hardest test sequences: true boxes green (dashed, v = visibility), predicted orange",
        fontsize=9,
    )
    return _save(fig, path)


def id_switches(events: dict[str, list[dict]], sequences: list, path: Path) -> Path:
    """ID switches over time: one line per sequence (its duration), a mark at each switch,
    filled when the object had been occluded since its last match."""
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(sequences) + 1.6), layout="constrained")
    for row, seq in enumerate(sequences):
        ax.plot([0, seq.num_frames / seq.fps], [row, row], color="0.85", lw=6, zorder=1)
        ev = events.get(seq.name, [])
        for occluded, marker in ((True, "o"), (False, "o")):
            xs = [e["time"] for e in ev if e["after_occlusion"] == occluded]
            face = "tab:red" if occluded else "white"
            ax.scatter(
                xs,
                [row] * len(xs),
                marker=marker,
                s=36,
                facecolors=face,
                edgecolors="tab:red",
                zorder=2,
            )
    ax.scatter(
        [], [], marker="o", facecolors="tab:red", edgecolors="tab:red", label="after an occlusion"
    )
    ax.scatter([], [], marker="o", facecolors="white", edgecolors="tab:red", label="other")
    ax.set_yticks(range(len(sequences)), [s.name for s in sequences])
    ax.invert_yaxis()
    ax.set_xlabel("time in sequence (s)")
    total = sum(len(v) for v in events.values())
    ax.set_title(f"ID switches over time ({total} in all)")
    fig.legend(loc="outside lower center", ncol=2, frameon=False, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def anomaly_timeline(
    names: list[str],
    scores: list[np.ndarray],
    labels: list[np.ndarray],
    fps: float,
    threshold: float,
    path: Path,
    max_videos: int = 16,
) -> Path:
    """Score over time per video (line) against the anomalous frames (shaded), with the
    alert threshold dashed."""
    n = min(len(names), max_videos)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 1.7 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        t = np.arange(len(scores[k])) / fps
        ax.fill_between(
            t,
            0,
            1,
            where=labels[k] > 0,
            transform=ax.get_xaxis_transform(),
            color="tab:red",
            alpha=0.18,
            step="mid",
            label="anomalous (truth)",
        )
        ax.plot(t, scores[k], lw=1, color="tab:blue", label="score")
        if np.isfinite(threshold):
            ax.axhline(threshold, ls="--", lw=0.8, color="k", label="alert threshold")
        ax.set_title(names[k], fontsize=8)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.supxlabel("seconds", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def roc_curve(fpr: np.ndarray, tpr: np.ndarray, auc: float | None, path: Path) -> Path:
    """Frame-level ROC curve."""
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, lw=1.5, label=f"AUC {auc:.3f}" if auc is not None else None)
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel("false-positive rate (normal frames)")
    ax.set_ylabel("true-positive rate (anomalous frames)")
    ax.set_title("frame-level ROC")
    ax.grid(alpha=0.3)
    if auc is not None:
        ax.legend(loc="lower right")
    return _save(fig, path)


def heatmap_strip(items: list[dict], path: Path) -> Path:
    """Frames with the per-cell score overlaid (red = high) and the true anomaly boxes
    (white); ``items``: ``title``, ``image`` (H, W, 3) uint8, ``heat`` (h, w), ``boxes``."""
    n = max(1, len(items))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(items):
            continue
        it = items[k]
        h, w = it["image"].shape[:2]
        ax.imshow(it["image"])
        heat = np.clip(np.asarray(it["heat"], float), 0, None)
        ax.imshow(
            heat,
            cmap="inferno",
            alpha=0.45,
            extent=(0, w, h, 0),
            vmin=0,
            vmax=max(float(heat.max()), 1e-6),
            interpolation="bilinear",
        )
        for x1, y1, x2, y2 in it.get("boxes", []):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="w", lw=1))
        ax.set_title(it["title"], fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
