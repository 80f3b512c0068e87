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
