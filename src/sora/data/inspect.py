"""``inspect_dataset()``: what a folder-per-class dataset holds, and what cannot be read."""

from __future__ import annotations

from pathlib import Path

from sora.data.datasets import SPLITS, is_video_path
from sora.errors import DatasetError, VideoReadError
from sora.io.video import probe


def inspect_dataset(root: str | Path) -> dict:
    """Per split and class: video count, readable count, total seconds, fps range, frame
    sizes; plus every unreadable file with its reason and the files ignored (not videos)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("dataset folder not found", root)
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits:
        raise DatasetError("no train/, val/ or test/ folder", root)
    report: dict = {"root": str(root), "splits": {}, "unreadable": [], "ignored": []}
    for split in splits:
        classes: dict = {}
        for cdir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            stats = {"videos": 0, "readable": 0, "seconds": 0.0, "fps": [], "sizes": []}
            for path in sorted(cdir.iterdir()):
                if path.name.startswith("."):
                    continue
                if not is_video_path(path):
                    report["ignored"].append(str(path))
                    continue
                stats["videos"] += 1
                try:
                    meta = probe(path)
                except VideoReadError as err:
                    report["unreadable"].append({"path": str(path), "reason": err.reason})
                    continue
                stats["readable"] += 1
                stats["seconds"] += meta.duration
                stats["fps"].append(round(meta.fps, 3))
                size = f"{meta.width}x{meta.height}"
                if size not in stats["sizes"]:
                    stats["sizes"].append(size)
            classes[cdir.name] = stats
        report["splits"][split] = classes
    return report


def format_report(report: dict) -> str:
    """A plain-text table of :func:`inspect_dataset`'s report."""
    lines = [f"dataset {report['root']}"]
    header = f"{'split':<6} {'class':<20} {'videos':>6} {'readable':>8} {'seconds':>8}  {'fps':<13} sizes"
    lines.append(header)
    lines.append("-" * len(header))
    for split, classes in report["splits"].items():
        for name, s in classes.items():
            fps = f"{min(s['fps']):g}-{max(s['fps']):g}" if s["fps"] else "-"
            sizes = ", ".join(s["sizes"][:4]) + (" ..." if len(s["sizes"]) > 4 else "")
            lines.append(
                f"{split:<6} {name:<20} {s['videos']:>6} {s['readable']:>8} "
                f"{s['seconds']:>8.1f}  {fps:<13} {sizes}"
            )
        total = sum(s["videos"] for s in classes.values())
        lines.append(f"{split:<6} {'(all ' + str(len(classes)) + ' classes)':<20} {total:>6}")
    lines.append(f"unreadable files: {len(report['unreadable'])}")
    lines += [f"  {u['path']}: {u['reason']}" for u in report["unreadable"]]
    if report["ignored"]:
        lines.append(f"ignored (not a video file or frame folder): {len(report['ignored'])}")
    return "\n".join(lines)


#: Box-size bins of ``sqrt(w * h)`` in pixels, for the histogram.
SIZE_BINS = (0, 8, 16, 32, 64, 128, float("inf"))


def inspect_mot(root: str | Path) -> dict:
    """A MOTChallenge-layout dataset: per split its sequences (frames, size, rate, missing
    frames, boxes), boxes per class, a box-size histogram, and every warning or error with
    its file and line. A sequence that cannot be read is listed under ``errors``."""
    import numpy as np

    from sora.data.mot import SPLITS as MOT_SPLITS
    from sora.data.mot import dataset_labels, read_sequence

    root = Path(root)
    labels = dataset_labels(root)
    report: dict = {"root": str(root), "layout": "mot", "classes": labels, "splits": {}}
    report["errors"], report["warnings"] = [], []
    for split in (s for s in MOT_SPLITS if (root / s).is_dir()):
        seqs, per_class, sizes = {}, {}, []
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            try:
                seq = read_sequence(folder, labels)
            except (DatasetError, VideoReadError) as err:
                report["errors"].append(str(err))
                continue
            report["warnings"] += seq.warnings
            a = seq.ann
            seqs[seq.name] = {
                "frames": seq.num_frames,
                "missing_frames": int((~seq.present).sum()),
                "size": f"{seq.width}x{seq.height}",
                "fps": round(seq.fps, 3),
                "source": seq.source.name,
                "boxes": int(len(a.frame)),
                "ignored_boxes": int(a.ignore.sum()),
                "tracks": int(len(set(a.track.tolist()))),
            }
            for k in a.label.tolist():
                name = labels[k] if labels and k < len(labels) else str(k + 1)
                per_class[name] = per_class.get(name, 0) + 1
            wh = a.boxes[:, 2:] - a.boxes[:, :2]
            sizes += np.sqrt(wh[:, 0] * wh[:, 1]).tolist()
        hist = np.histogram(sizes, bins=SIZE_BINS)[0].tolist() if sizes else [0] * 6
        report["splits"][split] = {
            "sequences": seqs,
            "boxes_per_class": dict(sorted(per_class.items())),
            "box_size_histogram": {
                f"{SIZE_BINS[i]:g}-{SIZE_BINS[i + 1]:g} px": n for i, n in enumerate(hist)
            },
        }
    if not report["splits"]:
        raise DatasetError("no train/, val/ or test/ folder", root)
    return report


def format_mot_report(report: dict) -> str:
    """A plain-text summary of :func:`inspect_mot`'s report."""
    lines = [f"MOT dataset {report['root']}  classes: {', '.join(report['classes'] or ['(ids)'])}"]
    for split, s in report["splits"].items():
        seqs = s["sequences"]
        frames = sum(v["frames"] for v in seqs.values())
        boxes = sum(v["boxes"] for v in seqs.values())
        missing = sum(v["missing_frames"] for v in seqs.values())
        lines.append(
            f"{split:<6} {len(seqs)} sequences, {frames} frames ({missing} missing), {boxes} boxes"
        )
        lines.append(
            "       boxes per class: "
            + ", ".join(f"{k} {v}" for k, v in s["boxes_per_class"].items())
        )
        lines.append(
            "       box size (sqrt area): "
            + ", ".join(f"{k}: {v}" for k, v in s["box_size_histogram"].items())
        )
    lines.append(f"warnings: {len(report['warnings'])}")
    lines += [f"  {w}" for w in report["warnings"][:50]]
    if len(report["warnings"]) > 50:
        lines.append(f"  ... {len(report['warnings']) - 50} more (--json lists all)")
    lines.append(f"errors (sequences that cannot be read): {len(report['errors'])}")
    lines += [f"  {e}" for e in report["errors"]]
    return "\n".join(lines)
