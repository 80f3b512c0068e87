"""Labelled video datasets: folder-per-class and CSV manifest, DataLoader-ready.

Folder layout (torchvision ImageFolder's convention, one level per split)::

    ROOT/train/<class>/<video>      # a video file, or a folder of image frames
    ROOT/val/<class>/<video>        # optional: without it a seeded, stratified 10% of train
    ROOT/test/<class>/<video>

Manifest: a CSV file with rows ``path,label[,start,end]`` (a header row is allowed; relative
paths are relative to the manifest's folder; ``start``/``end`` in seconds).

Unreadable files never stop training: they are checked when the dataset is built (opened
and the first frame decoded), skipped, counted and listed in ``dataset.skipped``; a file that
fails later, mid-decode, is replaced by the next readable item and listed in ``dataset.failed``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sora.data.sampling import random_clip_indices, segment_indices, view_indices
from sora.errors import DatasetError, VideoReadError
from sora.io.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoReader, read_video

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VideoItem:
    """One labelled video (or a ``[start, end)`` segment of one, in seconds)."""

    path: Path
    label: int
    start: float | None = None
    end: float | None = None


def is_video_path(path: Path) -> bool:
    """A video file by extension, or a folder holding image frames."""
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
    return path.suffix.lower() in VIDEO_EXTENSIONS


def check_readable(path: Path) -> str | None:
    """``None`` when the video opens and its first frame decodes, else the reason."""
    try:
        next(iter(VideoReader(path, max_pixels=2**62)))
    except VideoReadError as err:
        return err.reason
    except StopIteration:
        return "no decodable video frames"
    return None


def list_classes(root: Path) -> list[str]:
    """Class names: the sub-folders of ``ROOT/train`` (sorted)."""
    base = root / "train"
    if not base.is_dir():
        raise DatasetError("no train/ folder (expected ROOT/train/<class>/<video>)", root)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError("train/ holds no class folders", root)
    return classes


def _class_videos(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_video_path(p))


def folder_items(
    root: str | Path,
    split: str,
    classes: Sequence[str] | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[list[VideoItem], list[str]]:
    """The items of one split of a folder-per-class dataset, and the class list.

    When ``ROOT/val`` is absent, ``val`` is a stratified, seeded ``val_fraction`` of train
    (at least one video per class that has two or more) and ``train`` is the rest.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})", root)
    if not root.is_dir():
        raise DatasetError("dataset folder not found", root)
    classes = list(classes) if classes is not None else list_classes(root)
    holdout = split in ("train", "val") and not (root / "val").is_dir()
    source = "train" if holdout else split
    if not (root / source).is_dir():
        raise DatasetError(f"no {source}/ folder", root)
    items: list[VideoItem] = []
    for label, name in enumerate(classes):
        videos = _class_videos(root / source / name)
        if holdout:
            rng = np.random.default_rng([seed, label])
            order = rng.permutation(len(videos))
            n_val = int(round(len(videos) * val_fraction)) if len(videos) > 1 else 0
            if len(videos) > 1 and val_fraction > 0:
                n_val = max(1, n_val)
            chosen = order[:n_val] if split == "val" else order[n_val:]
            videos = [videos[i] for i in sorted(chosen)]
        items += [VideoItem(v, label) for v in videos]
    return items, classes


def manifest_items(
    manifest: str | Path, classes: Sequence[str] | None = None
) -> tuple[list[VideoItem], list[str]]:
    """Items of a CSV manifest ``path,label[,start,end]``. A label outside ``classes`` is an error."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DatasetError("manifest not found", manifest)
    rows: list[tuple[int, list[str]]] = []
    with manifest.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if lineno == 1 and row[0].lower() == "path":
                continue
            if len(row) not in (2, 4):
                raise DatasetError(
                    f"line {lineno}: expected path,label[,start,end], got {len(row)} fields",
                    manifest,
                )
            rows.append((lineno, row))
    if not rows:
        raise DatasetError("manifest has no rows", manifest)
    if classes is None:
        classes = sorted({row[1] for _, row in rows})
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for lineno, row in rows:
        if row[1] not in index:
            raise DatasetError(
                f"line {lineno}: label {row[1]!r} is not one of the model's classes "
                f"({', '.join(classes)})",
                manifest,
            )
        path = Path(row[0])
        path = path if path.is_absolute() else manifest.parent / path
        start = end = None
        if len(row) == 4:
            try:
                start, end = float(row[2]), float(row[3])
            except ValueError:
                raise DatasetError(f"line {lineno}: start/end must be seconds", manifest) from None
            if not end > start >= 0:
                raise DatasetError(f"line {lineno}: need 0 <= start < end", manifest)
        items.append(VideoItem(path, index[row[1]], start, end))
    return items, list(classes)


class VideoClipDataset(Dataset):
    """Clips from labelled videos.

    Each item is a dict with ``video`` float ``(T, 3, h, w)`` (or ``(V, T, 3, h, w)`` with
    ``num_views > 1``), ``label`` int, and ``index`` (position in ``items``).

    Args:
        items: the labelled videos.
        classes: class names, index = label.
        fps: decode rate (frames are resampled by timestamp).
        clip_len: frames per clip ``T``.
        short_side: resize on decode.
        transform: ``(T, 3, H, W)`` uint8 -> float tensor (see :func:`video_transform`).
        sampler: ``"uniform"`` (segments over the whole video), ``"random"`` (contiguous clip
            at a random start), evaluated with ``train`` jitter or fixed centres.
        train: random sampling positions when set; fixed, reproducible positions otherwise.
        num_views: evaluation views per video (uniform, evenly offset).
        cache: keep decoded frames in memory (per process) after the first read;
            :meth:`preload` fills the cache with several threads at once.
        decode_threads: FFmpeg threads per video (1 is fastest for many small clips).
        hflip: (train) mirror half of the clips; ``flip_map`` maps a label to its mirror
            class (labels not in it are kept).
        reverse_map: (train) play half of the clips of the mapped labels backwards and give
            them the mapped label.
        check: probe every file at construction and skip unreadable ones.
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        classes: Sequence[str],
        *,
        fps: float | None,
        clip_len: int,
        short_side: int | None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sampler: str = "uniform",
        train: bool = False,
        num_views: int = 1,
        cache: bool = False,
        check: bool = True,
        seed: int = 0,
        decode_threads: int = 1,
        hflip: bool = False,
        flip_map: dict[int, int] | None = None,
        reverse_map: dict[int, int] | None = None,
    ):
        if sampler not in ("uniform", "random"):
            raise ValueError(f"sampler must be 'uniform' or 'random', got {sampler!r}")
        self.classes = list(classes)
        self.fps, self.clip_len, self.short_side = fps, clip_len, short_side
        self.transform = transform
        self.sampler, self.train, self.num_views = sampler, train, num_views
        self.cache = cache
        self.seed = seed
        self.decode_threads = decode_threads
        self.hflip, self.flip_map = hflip, dict(flip_map or {})
        self.reverse_map = dict(reverse_map or {})
        self.skipped: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str]] = []
        self._frames: dict[int, torch.Tensor] = {}
        self._epoch_rng = np.random.default_rng(seed)
        kept = []
        for item in items:
            reason = check_readable(item.path) if check else None
            if reason is None:
                kept.append(item)
            else:
                self.skipped.append((str(item.path), reason))
                log.warning("skipping unreadable video %s: %s", item.path, reason)
        self.items = kept

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    def decode(self, i: int) -> torch.Tensor:
        """All frames of item ``i`` at the dataset fps and size: ``(N, 3, H, W)`` uint8."""
        if i in self._frames:
            return self._frames[i]
        item = self.items[i]
        frames = _decode_item(item, self.fps, self.short_side, self.decode_threads)
        if self.cache:
            self._frames[i] = frames
        return frames

    def preload(self, workers: int = 2) -> None:
        """Decode every item into the cache using ``workers`` threads (cache must be on).
        Items that fail are left out of the cache and handled as usual in ``__getitem__``."""
        if not self.cache:
            return
        todo = [i for i in range(len(self.items)) if i not in self._frames]
        from concurrent.futures import ThreadPoolExecutor

        # threads, not processes: PyAV releases the GIL while decoding and scaling (2 threads
        # decode ~2x faster than 1 here), and nothing has to be pickled or forked
        args = [(self.items[i], self.fps, self.short_side, self.decode_threads) for i in todo]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for i, frames in zip(todo, pool.map(_decode_or_none, args), strict=True):
                if frames is not None:
                    self._frames[i] = frames

    def _indices(self, n: int) -> list[np.ndarray]:
        if self.num_views > 1 or not self.train:  # test views, as the clips were sampled
            return view_indices(n, self.clip_len, max(1, self.num_views), self.sampler)
        rng = self._epoch_rng
        if self.sampler == "random":
            return [random_clip_indices(n, self.clip_len, 1, rng)]
        return [segment_indices(n, self.clip_len, None, rng)]

    def __getitem__(self, i: int) -> dict:
        if not self.items:
            raise DatasetError("dataset is empty")
        for attempt in range(len(self.items)):
            j = (i + attempt) % len(self.items)
            try:
                frames = self.decode(j)
            except VideoReadError as err:
                self.failed.append((str(self.items[j].path), err.reason))
                log.warning("skipping video that failed to decode: %s", err)
                continue
            label = self.items[j].label
            views = [frames[idx] for idx in self._indices(frames.shape[0])]
            if self.train and label in self.reverse_map and self._epoch_rng.random() < 0.5:
                views, label = [v.flip(0) for v in views], self.reverse_map[label]
            if self.train and self.hflip and self._epoch_rng.random() < 0.5:
                views, label = [v.flip(-1) for v in views], self.flip_map.get(label, label)
            if self.transform is not None:
                views = [self.transform(v) for v in views]
            video = views[0] if self.num_views == 1 else torch.stack(views)
            return {"video": video, "label": label, "index": j}
        raise DatasetError("no video in the dataset could be decoded")


def pair_map(pairs: Sequence[Sequence[str]], classes: Sequence[str], what: str) -> dict[int, int]:
    """``[[a, b], ...]`` class-name pairs -> ``{a: b, b: a}`` as label indices."""
    index = {c: i for i, c in enumerate(classes)}
    out: dict[int, int] = {}
    for pair in pairs:
        for name in pair:
            if name not in index:
                raise DatasetError(f"{what}: {name!r} is not a class ({', '.join(classes)})")
        a, b = index[pair[0]], index[pair[1]]
        out[a], out[b] = b, a
    return out


def _decode_item(item: VideoItem, fps, short_side, threads) -> torch.Tensor:
    frames, _ = read_video(
        item.path, fps=fps, short_side=short_side, start=item.start, end=item.end, threads=threads
    )
    return frames


def _decode_or_none(args) -> torch.Tensor | None:
    try:
        return _decode_item(*args)
    except VideoReadError:
        return None


def worker_init_fn(worker_id: int) -> None:
    """Give each DataLoader worker its own, seeded sampling generator."""
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, VideoClipDataset):
        info.dataset._epoch_rng = np.random.default_rng([info.seed % 2**32, worker_id])
