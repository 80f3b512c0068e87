"""The anomaly-detection layout (UCSD Ped2, CUHK Avenue, ShanghaiTech after conversion)::

    ROOT/training/<video>        normal footage only: a video file or a folder of frames
    ROOT/testing/<video>         the videos to score
    ROOT/testing/<video>.txt     frame labels: one 0 (normal) or 1 (anomalous) per line, one
                                 line per frame of the video as decoded (every frame)
    ROOT/frame_labels.csv        or, instead of the .txt files: ``video,frame,label`` rows
                                 (frame 1-based; frames not listed are normal)
    ROOT/anomaly_boxes.csv       optional: ``video,frame,x1,y1,x2,y2,type`` per anomalous
                                 object and frame (pixels); gives per-type scores

Video names are file names without their extension (``01.avi`` -> ``01``) or folder names.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sora.errors import DatasetError
from sora.io.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

SPLITS = ("training", "testing")
LABELS_CSV, BOXES_CSV = "frame_labels.csv", "anomaly_boxes.csv"


@dataclass
class AnomalyVideo:
    """One video of the layout. ``labels`` ``(T,)`` uint8 (``None`` in training);
    ``types[i]`` the anomaly types at frame ``i`` (0-based; empty where normal or unknown);
    ``boxes[i]`` rows ``(x1, y1, x2, y2)`` of the anomalous objects."""

    name: str
    path: Path
    labels: np.ndarray | None = None
    types: dict[int, set[str]] = field(default_factory=dict)
    boxes: dict[int, list[tuple[float, ...]]] = field(default_factory=dict)


def is_anomaly_root(root: str | Path) -> bool:
    """Whether ``root`` has ``training/`` and ``testing/`` folders."""
    root = Path(root)
    return all((root / s).is_dir() for s in SPLITS)


def _is_frames(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def list_videos(folder: Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of the videos (files, or folders of frames) in ``folder``, by name."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if (p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) or _is_frames(p):
            if p.stem in out:
                raise DatasetError(f"two videos named {p.stem!r}", folder)
            out[p.stem] = p
    return list(out.items())


def read_label_file(path: Path) -> np.ndarray:
    """One 0/1 per line -> ``(T,)`` uint8; anything else is a :class:`DatasetError` naming the
    file and line."""
    values = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line not in ("0", "1"):
            raise DatasetError(f"line {i}: expected 0 or 1, got {line!r}", path)
        values.append(int(line))
    if not values:
        raise DatasetError("no frame labels", path)
    return np.asarray(values, dtype=np.uint8)


def _csv_rows(path: Path):
    """``(line number, row)`` of a CSV file, without empty lines and the ``video,...`` header."""
    with path.open(newline="") as f:
        for i, row in enumerate(csv.reader(f), 1):
            if row and not (i == 1 and row[0].strip().lower() == "video"):
                yield i, row


def _read_labels_csv(path: Path) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = defaultdict(dict)
    for i, row in _csv_rows(path):
        try:
            video, frame, label = row[0].strip(), int(row[1]), int(row[2])
        except (IndexError, ValueError):
            raise DatasetError(f"line {i}: expected video,frame,label", path) from None
        if label not in (0, 1) or frame < 1:
            raise DatasetError(f"line {i}: frame must be >= 1 and label 0 or 1", path)
        out[video][frame] = label
    return out


def _read_boxes(path: Path) -> dict[str, list[tuple[int, tuple[float, ...], str]]]:
    out: dict[str, list] = defaultdict(list)
    for i, row in _csv_rows(path):
        try:
            box = tuple(float(v) for v in row[2:6])
            out[row[0].strip()].append((int(row[1]), box, row[6].strip()))
        except (IndexError, ValueError):
            raise DatasetError(f"line {i}: expected video,frame,x1,y1,x2,y2,type", path) from None
    return out


def read_anomaly_split(root: str | Path, split: str) -> list[AnomalyVideo]:
    """The videos of ``split`` (``training`` or ``testing``), with their labels in testing.

    Raises:
        DatasetError: no such folder, no videos, a testing video without labels, or a bad
            label file (the message names it).
    """
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        raise DatasetError(f"no {split}/ folder (expected {'/, '.join(SPLITS)}/)", root)
    videos = [AnomalyVideo(name, path) for name, path in list_videos(folder)]
    if not videos:
        raise DatasetError("no videos (files or frame folders)", folder)
    if split == "training":
        return videos
    table = _read_labels_csv(root / LABELS_CSV) if (root / LABELS_CSV).is_file() else None
    boxes = _read_boxes(root / BOXES_CSV) if (root / BOXES_CSV).is_file() else {}
    for v in videos:
        txt = folder / f"{v.name}.txt"
        if txt.is_file():
            v.labels = read_label_file(txt)
        elif table is not None:
            rows = table.get(v.name, {})
            n = max(rows, default=0)
            v.labels = np.zeros(n, dtype=np.uint8)
            for frame, label in rows.items():
                v.labels[frame - 1] = label
        else:
            raise DatasetError(f"no frame labels: {txt.name} or ../{LABELS_CSV}", v.path)
        for frame, box, kind in boxes.get(v.name, []):
            v.types.setdefault(frame - 1, set()).add(kind)
            v.boxes.setdefault(frame - 1, []).append(box)
    return videos


def fit_labels(video: AnomalyVideo, frames: int) -> np.ndarray:
    """The video's labels for ``frames`` decoded frames: a ``frame_labels.csv`` lists only up
    to the last anomalous frame, so the rest is padded with 0; a label file of another length
    than the video is a :class:`DatasetError` (it belongs to another video or frame rate)."""
    labels = video.labels if video.labels is not None else np.zeros(0, np.uint8)
    if len(labels) == frames:
        return labels
    if len(labels) < frames and not (video.path.parent / f"{video.name}.txt").is_file():
        return np.concatenate([labels, np.zeros(frames - len(labels), np.uint8)])
    raise DatasetError(
        f"{len(labels)} frame labels for {frames} frames (label every decoded frame)", video.path
    )
