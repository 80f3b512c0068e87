"""Detection and tracking data in the MOTChallenge layout (also CVAT's "MOT 1.1" export).

Layout::

    ROOT/{train,val,test}/<sequence>/img1/000001.jpg ...   # frames, numbered from 1
    ROOT/{train,val,test}/<sequence>/video.mp4             # or one video file instead of img1/
    ROOT/{train,val,test}/<sequence>/gt/gt.txt             # frame,id,x,y,w,h,conf,class,visibility
    ROOT/{train,val,test}/<sequence>/gt/labels.txt         # optional: class names, id 1 first
    ROOT/{train,val,test}/<sequence>/seqinfo.ini           # optional: frameRate, imWidth, ...

``x, y, w, h`` are pixels (top-left corner, 1-based as in MOTChallenge: pixel ``x`` = 1 is the
first column, so the ``xyxy`` box is ``[x - 1, y - 1, x - 1 + w, y - 1 + h]``). Rows with
``conf == 0`` are *ignored* boxes (MOT convention): no loss pushes the model away from them and
detections on them are neither true nor false positives. Class ids are 1-based; the class
index used by the models is ``id - 1``. Without ``labels.txt`` the classes are named by their
ids (``"1"``, ``"2"``, ...) up to the largest id in the training split.

Bad input, checked when a sequence is read (before any training step):

* errors (:class:`~sora.errors.DatasetError`, one line naming the file and line): a malformed
  row (too few fields, not numbers, frame < 1, width or height <= 0), a class id outside
  ``labels.txt``, no frames at all;
* warnings (counted, listed in ``sequence.warnings`` and in ``train_summary.json``): a box
  partly outside the image (clipped), a box wholly outside (dropped), an id used twice in one
  frame (the later row dropped), a frame index past the last frame (rows dropped), a missing
  ``img1`` frame (no clip spans it).
"""

from __future__ import annotations

import configparser
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sora.errors import DatasetError, VideoReadError
from sora.io.video import DEFAULT_IMAGE_FPS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, probe, read_video

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: gt.txt columns; the last three may be missing (conf 1, class 1, visibility 1).
COLUMNS = ("frame", "id", "x", "y", "w", "h", "conf", "class", "visibility")


@dataclass
class Annotations:
    """The valid rows of one ``gt.txt``, as arrays of length N (boxes ``xyxy`` pixels)."""

    frame: np.ndarray  # (N,) int, 1-based
    track: np.ndarray  # (N,) int
    boxes: np.ndarray  # (N, 4) float32 xyxy, clipped to the image
    label: np.ndarray  # (N,) int, 0-based class index
    ignore: np.ndarray  # (N,) bool, conf == 0
    visibility: np.ndarray  # (N,) float32 in [0, 1]

    @staticmethod
    def empty() -> Annotations:
        return Annotations(
            np.zeros(0, int),
            np.zeros(0, int),
            np.zeros((0, 4), np.float32),
            np.zeros(0, int),
            np.zeros(0, bool),
            np.zeros(0, np.float32),
        )


@dataclass
class Sequence:
    """One MOT sequence: where its frames are, their size and rate, and its boxes."""

    name: str
    path: Path
    source: Path  # the img1 folder or the video file
    fps: float
    width: int
    height: int
    num_frames: int
    present: np.ndarray  # (num_frames,) bool: frame k+1 has an image
    ann: Annotations
    label_ids: int  # the largest class id in gt.txt (0 when none)
    warnings: list[str] = field(default_factory=list)
    _by_frame: dict[int, np.ndarray] | None = None

    def rows(self, frame: int) -> np.ndarray:
        """Indices into ``ann`` of the rows of 1-based ``frame``."""
        if self._by_frame is None:
            order = np.argsort(self.ann.frame, kind="stable")
            frames = self.ann.frame[order]
            cuts = np.flatnonzero(np.diff(frames)) + 1
            self._by_frame = {
                int(group[0]): order[s:e]
                for group, s, e in zip(
                    np.split(frames, cuts),
                    np.r_[0, cuts],
                    np.r_[cuts, len(frames)],
                    strict=True,
                )
                if len(group)
            }
        return self._by_frame.get(frame, np.zeros(0, int))

    def target(self, frame: int, scale: tuple[float, float] = (1.0, 1.0)) -> dict:
        """Targets of 1-based ``frame`` with boxes scaled by ``(sx, sy)``:
        ``boxes (n, 4)`` float32 xyxy, ``labels (n,)`` int64, ``ignore (n,)`` bool,
        ``visibility (n,)`` float32, ``ids (n,)`` int64."""
        idx = self.rows(frame)
        sx, sy = scale
        boxes = torch.from_numpy(self.ann.boxes[idx] * np.float32([sx, sy, sx, sy]))
        return {
            "boxes": boxes.reshape(-1, 4),
            "labels": torch.from_numpy(self.ann.label[idx]).long(),
            "ignore": torch.from_numpy(self.ann.ignore[idx]),
            "visibility": torch.from_numpy(self.ann.visibility[idx]),
            "ids": torch.from_numpy(self.ann.track[idx]).long(),
        }

    def runs(self, length: int) -> list[tuple[int, int]]:
        """Maximal runs ``[first, last]`` (1-based) of consecutive present frames that are at
        least ``length`` long (a missing frame splits a run)."""
        out, start = [], None
        for k, ok in enumerate(list(self.present) + [False]):
            if ok and start is None:
                start = k
            elif not ok and start is not None:
                if k - start >= length:
                    out.append((start + 1, k))
                start = None
        return out


def mot_row(frame: int, box, score: float, label: int, track: int = -1) -> str:
    """One MOTChallenge row ``frame,id,x,y,w,h,score,class,-1,-1`` from an ``xyxy`` box in
    0-based pixels and a 0-based class index (written 1-based, as MOT and TrackEval read)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        f"{frame},{track},{x0 + 1:.2f},{y0 + 1:.2f},{x1 - x0:.2f},{y1 - y0:.2f},"
        f"{float(score):.4f},{int(label) + 1},-1,-1"
    )


def read_labels(path: Path) -> list[str] | None:
    """Class names from ``labels.txt`` (one per line, blank lines skipped), or ``None``."""
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError("labels.txt holds no class names", path)
    return names


def read_seqinfo(path: Path) -> dict:
    """``seqinfo.ini``'s ``[Sequence]`` section as a dict (empty when the file is absent)."""
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as err:
        raise DatasetError(f"not a valid ini file ({type(err).__name__})", path) from None
    if "Sequence" not in parser:
        raise DatasetError("no [Sequence] section", path)
    return dict(parser["Sequence"])


def _frame_number(path: Path) -> int | None:
    return int(path.stem) if path.stem.isdigit() else None


def find_source(seq: Path, info: dict) -> Path:
    """The sequence's frames: its ``img1`` folder (or ``imDir``), else its one video file."""
    folder = seq / info.get("imdir", "img1")
    if folder.is_dir():
        return folder
    videos = sorted(p for p in seq.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise DatasetError(f"no {folder.name}/ folder and no video file", seq)
    if len(videos) > 1:
        names = ", ".join(p.name for p in videos[:3])
        raise DatasetError(f"several video files ({names}); keep one per sequence", seq)
    return videos[0]


def parse_gt(
    path: Path,
    *,
    width: int,
    height: int,
    num_frames: int,
    num_labels: int | None,
) -> tuple[Annotations, list[str], int]:
    """Read and check ``gt.txt``. Returns the valid rows, the warnings and the largest class id.

    Raises:
        DatasetError: a malformed row or an unknown class id, naming the file and line.
    """
    warnings: list[str] = []
    rows: list[tuple] = []
    seen: set[tuple[int, int]] = set()
    past_end = 0
    max_id = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        fields = [f.strip() for f in text.split(",")]
        if len(fields) < 6:
            raise DatasetError(
                f"line {number}: malformed row, expected frame,id,x,y,w,h[,conf,class,"
                f"visibility], got {text[:60]!r}",
                path,
            )
        try:
            values = [float(f) for f in fields[:9]]
        except ValueError:
            raise DatasetError(f"line {number}: not numbers: {text[:60]!r}", path) from None
        values += [1.0] * (9 - len(values))
        frame, track, x, y, w, h, conf, cls, vis = values
        if not all(np.isfinite(values)):
            raise DatasetError(f"line {number}: not a finite number: {text[:60]!r}", path)
        if frame < 1 or frame != int(frame):
            raise DatasetError(f"line {number}: frame must be an integer >= 1, got {frame:g}", path)
        if w <= 0 or h <= 0:
            raise DatasetError(f"line {number}: box width and height must be > 0", path)
        if cls < 1 or cls != int(cls) or (num_labels is not None and cls > num_labels):
            known = f"1..{num_labels} (labels.txt)" if num_labels is not None else "integers >= 1"
            raise DatasetError(f"line {number}: unknown class id {cls:g} (known: {known})", path)
        frame, track, cls = int(frame), int(track), int(cls)
        if frame > num_frames:
            past_end += 1
            continue
        x0, y0 = x - 1, y - 1
        box = [max(0.0, x0), max(0.0, y0), min(float(width), x0 + w), min(float(height), y0 + h)]
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            warnings.append(f"{path} line {number}: box wholly outside the image, dropped")
            continue
        if box != [x0, y0, x0 + w, y0 + h]:
            warnings.append(f"{path} line {number}: box partly outside the image, clipped")
        if (frame, track) in seen:
            warnings.append(
                f"{path} line {number}: id {track} used twice in frame {frame}, dropped"
            )
            continue
        seen.add((frame, track))
        max_id = max(max_id, cls)
        rows.append((frame, track, *box, cls - 1, conf == 0, min(1.0, max(0.0, vis))))
    if past_end:
        warnings.append(f"{path}: {past_end} rows past the last frame ({num_frames}), dropped")
    if not rows:
        return Annotations.empty(), warnings, max_id
    arr = np.asarray(rows, dtype=np.float64)
    ann = Annotations(
        frame=arr[:, 0].astype(int),
        track=arr[:, 1].astype(int),
        boxes=arr[:, 2:6].astype(np.float32),
        label=arr[:, 6].astype(int),
        ignore=arr[:, 7].astype(bool),
        visibility=arr[:, 8].astype(np.float32),
    )
    return ann, warnings, max_id


def read_sequence(seq: Path, labels: list[str] | None = None) -> Sequence:
    """Read one sequence folder: its frame source, size, rate and checked annotations.

    ``labels``: the dataset's class names (from a ``labels.txt``), used to check class ids
    when the sequence has no ``gt/labels.txt`` of its own.
    """
    seq = Path(seq)
    info = read_seqinfo(seq / "seqinfo.ini")
    own = read_labels(seq / "gt" / "labels.txt")
    labels = own if own is not None else labels
    source = find_source(seq, info)
    warnings: list[str] = []
    if source.is_dir():
        files = {
            n: p
            for p in source.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and (n := _frame_number(p)) is not None
        }
        if not files:
            raise DatasetError("no numbered image frames (000001.jpg, ...)", source)
        length = int(info.get("seqlength", 0) or 0) or max(files)
        present = np.array([k + 1 in files for k in range(length)])
        missing = int((~present).sum())
        if missing:
            first = int(np.flatnonzero(~present)[0]) + 1
            warnings.append(f"{source}: {missing} missing frames (first: {first:06d})")
        fps = float(info.get("framerate", 0) or DEFAULT_IMAGE_FPS)
        width, height = int(info.get("imwidth", 0) or 0), int(info.get("imheight", 0) or 0)
        if not (width and height):
            from PIL import Image

            with Image.open(files[min(files)]) as im:
                width, height = im.size
    else:
        try:
            meta = probe(source)
        except VideoReadError as err:
            raise DatasetError(err.reason, source) from None
        length, fps, width, height = meta.num_frames, meta.fps, meta.width, meta.height
        present = np.ones(length, bool)
    gt = seq / "gt" / "gt.txt"
    if gt.is_file():
        ann, more, max_id = parse_gt(
            gt,
            width=width,
            height=height,
            num_frames=length,
            num_labels=None if labels is None else len(labels),
        )
        warnings += more
    else:
        ann, max_id = Annotations.empty(), 0
    for w in warnings:
        log.warning(w)
    return Sequence(
        name=seq.name,
        path=seq,
        source=source,
        fps=fps,
        width=width,
        height=height,
        num_frames=length,
        present=present,
        ann=ann,
        label_ids=max_id,
        warnings=warnings,
    )


def is_mot_root(root: str | Path) -> bool:
    """Whether ``root`` looks like a MOT layout: a split folder holding a sequence with
    ``gt/gt.txt`` or ``img1/``."""
    root = Path(root)
    if not root.is_dir():
        return False
    for split in SPLITS:
        folder = root / split
        if folder.is_dir():
            for seq in folder.iterdir():
                if (seq / "gt" / "gt.txt").is_file() or (seq / "img1").is_dir():
                    return True
    return False


def dataset_labels(root: Path) -> list[str] | None:
    """Class names from ``ROOT/labels.txt``, else from the first ``gt/labels.txt`` found."""
    top = read_labels(root / "labels.txt")
    if top is not None:
        return top
    for split in SPLITS:
        for seq in sorted((root / split).glob("*/gt/labels.txt")):
            return read_labels(seq)
    return None


def read_split(root: str | Path, split: str, labels: list[str] | None = None) -> list[Sequence]:
    """Every sequence of ``ROOT/<split>/`` (sorted by name).

    Raises:
        DatasetError: the split folder is missing or holds no sequence.
    """
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        raise DatasetError(f"no {split}/ folder", root)
    labels = labels if labels is not None else dataset_labels(root)
    seqs = [
        read_sequence(p, labels)
        for p in sorted(folder.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    ]
    if not seqs:
        raise DatasetError(f"{split}/ holds no sequence folders", root)
    return seqs


def class_names(root: Path, sequences: list[Sequence]) -> list[str]:
    """The dataset's class names: ``labels.txt``, or ``"1".."max id"`` from the sequences."""
    labels = dataset_labels(Path(root))
    if labels is not None:
        return labels
    top = max((s.label_ids for s in sequences), default=0)
    if top == 0:
        raise DatasetError("no boxes in the training sequences", root)
    return [str(k) for k in range(1, top + 1)]


class FrameStore:
    """Frames of one sequence at a fixed ``(height, width)``, as uint8 ``(3, H, W)`` tensors.

    ``img1`` frames are read on demand (and kept when ``cache``); a video file is decoded
    once, whole, into memory.
    """

    def __init__(self, seq: Sequence, size: tuple[int, int], cache: bool = True):
        self.seq, self.size, self.cache = seq, (int(size[0]), int(size[1])), cache
        self._frames: dict[int, torch.Tensor] = {}
        self._video: torch.Tensor | None = None

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)`` from the sequence's pixels to the stored frames'."""
        return self.size[1] / self.seq.width, self.size[0] / self.seq.height

    def _read_image(self, frame: int) -> torch.Tensor:
        from PIL import Image

        named = (self.seq.source / f"{frame:06d}{ext}" for ext in IMAGE_EXTENSIONS)
        path = next((p for p in named if p.is_file()), None)
        if path is None:  # numbered another way (1.jpg, 0001.png, ...)
            path = next(
                (
                    p
                    for p in self.seq.source.iterdir()
                    if p.suffix.lower() in IMAGE_EXTENSIONS and _frame_number(p) == frame
                ),
                None,
            )
        if path is None:
            raise VideoReadError(f"frame {frame} is missing", self.seq.source)
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (self.size[1], self.size[0]):
                    im = im.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        except OSError as err:
            raise VideoReadError(f"cannot read frame: {err}", path) from None

    def get(self, frame: int) -> torch.Tensor:
        """1-based ``frame`` -> ``(3, H, W)`` uint8."""
        if self.seq.source.is_file():
            if self._video is None:
                self._video, _ = read_video(self.seq.source, size=self.size)
            return self._video[min(frame, self._video.shape[0]) - 1]
        if frame in self._frames:
            return self._frames[frame]
        image = self._read_image(frame)
        if self.cache:
            self._frames[frame] = image
        return image
