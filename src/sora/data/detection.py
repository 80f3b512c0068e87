"""Clips of MOT sequences with per-frame box targets, DataLoader-ready.

A clip is ``clip_len`` consecutive frames (after ``fps`` subsampling) inside one run of
present frames: a missing ``img1`` frame splits a sequence, so no clip spans a gap.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np
import torch
from torch.utils.data import Dataset

from sora.data.mot import FrameStore, Sequence


def frame_step(seq: Sequence, fps: float | None) -> int:
    """Take every ``k``-th frame so the rate is nearest ``fps`` (1 for ``None`` or a slower
    source: frames are never repeated)."""
    if fps is None or seq.fps <= fps:
        return 1
    return max(1, round(seq.fps / fps))


class DetectionClipDataset(Dataset):
    """``__getitem__`` -> ``{"video": (T, 3, H, W) float normalized, "targets": T dicts
    (boxes xyxy in the resized frame, labels, ignore, visibility, ids), "index": i}``.

    Args:
        sequences: from :func:`sora.data.mot.read_split`.
        size: ``(height, width)`` of the frames given to the model.
        clip_len, stride: frames per clip and between clip starts (after subsampling).
        train: random left-right mirror (``hflip``) of whole clips. (Frame dropout is
            applied to batches, once the memory is on: :func:`drop_frames`.)
    """

    def __init__(
        self,
        sequences: Seq[Sequence],
        *,
        size: Seq[int],
        clip_len: int,
        stride: int,
        fps: float | None = None,
        train: bool = False,
        hflip: bool = False,
        mean: Seq[float] = (0.485, 0.456, 0.406),
        std: Seq[float] = (0.229, 0.224, 0.225),
        cache: bool = True,
    ):
        self.sequences = list(sequences)
        self.size = (int(size[0]), int(size[1]))
        self.clip_len = clip_len
        self.train, self.hflip = train, hflip
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.stores = [FrameStore(s, self.size, cache) for s in self.sequences]
        self.items: list[tuple[int, list[int]]] = []
        self.too_short: list[str] = []
        for k, seq in enumerate(self.sequences):
            step = frame_step(seq, fps)
            span = (clip_len - 1) * step + 1
            runs = seq.runs(span)
            if not runs:
                self.too_short.append(seq.name)
            for first, last in runs:
                for start in range(first, last - span + 2, stride * step):
                    self.items.append((k, list(range(start, start + span, step))))

    def __len__(self) -> int:
        return len(self.items)

    def frames(self, i: int) -> torch.Tensor:
        """uint8 ``(T, 3, H, W)`` frames of item ``i``."""
        k, frames = self.items[i]
        return torch.stack([self.stores[k].get(f) for f in frames])

    def __getitem__(self, i: int) -> dict:
        k, frames = self.items[i]
        seq, store = self.sequences[k], self.stores[k]
        video = torch.stack([store.get(f) for f in frames])
        targets = [seq.target(f, store.scale) for f in frames]
        if self.train and self.hflip and torch.rand(()) < 0.5:
            video = video.flip(-1)
            w = self.size[1]
            for t in targets:
                b = t["boxes"]
                t["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
        x = (video.float() / 255 - self.mean) / self.std
        return {"video": x, "targets": targets, "index": i}


def drop_frames(
    video: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Frame dropout: ``(B, T, 3, H, W)`` -> a copy where each clip, with probability ``p``,
    has 1-2 consecutive frames (never the first) replaced by the clip's per-pixel median over
    time, in which moving objects vanish and the background stays. The boxes are kept, so
    only a memory can find the objects there. Clips of 2 frames or fewer are left alone."""
    b, t = video.shape[:2]
    if not p or t <= 2:
        return video
    video = video.clone()
    for j in range(b):
        if torch.rand((), generator=generator) < p:
            gap = int(torch.randint(1, 3, (), generator=generator))
            start = int(torch.randint(1, t - gap + 1, (), generator=generator))
            # the lower median over time, as torch.median, without its indices (whose
            # CUDA kernel is not deterministic and warns under deterministic training)
            video[j, start : start + gap] = video[j].sort(0).values[(t - 1) // 2]
    return video


class Targets(list):
    """A batch's targets: a list (B) of lists (T) of dicts of tensors, as built, that crosses
    process boundaries packed. DataLoader workers otherwise send every tensor through a
    shared-memory segment of its own: 1,280 of them for 32 clips of 8 frames, which made a
    batch 8x slower to receive than to build (700 against 85 ms on 2 CPU cores). Packed, each
    key is one array (the frames' rows end to end) plus the row counts, and the receiver
    rebuilds the dicts as views of it. Never pinned: the targets stay on the host (the loss
    pads them there, :func:`~sora.models.soradet.pad_targets`)."""

    def __reduce__(self):
        frames = [t for clip in self for t in clip]
        if not all(_packable(v) for t in frames for v in t.values()):
            return (Targets, (list(self),))  # anything else: pickled as it is
        keys = [list(t) for t in frames]
        columns = {
            k: [t[k].numpy() for t in frames if k in t] for k in {k for ks in keys for k in ks}
        }
        packed = {k: (np.concatenate(a), [len(x) for x in a]) for k, a in columns.items()}
        return (_unpack, ([len(clip) for clip in self], keys, packed))

    def pin_memory(self, device=None) -> Targets:
        return self


def _packable(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.device.type == "cpu"


def _unpack(lengths: list[int], keys: list[list[str]], packed: dict) -> Targets:
    rows = {k: iter(np.split(a, np.cumsum(counts)[:-1])) for k, (a, counts) in packed.items()}
    frames = iter([{k: torch.from_numpy(next(rows[k])) for k in ks} for ks in keys])
    return Targets([[next(frames) for _ in range(n)] for n in lengths])


def collate(batch: list[dict]) -> dict:
    """Stack videos to ``(B, T, 3, H, W)``; targets stay a list (B) of lists (T) of dicts
    (:class:`Targets`)."""
    return {
        "video": torch.stack([b["video"] for b in batch]),
        "targets": Targets([b["targets"] for b in batch]),
        "index": torch.tensor([b["index"] for b in batch]),
    }
