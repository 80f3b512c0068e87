"""Clip samplers: which frame indices of a decoded video form a clip.

All samplers work on indices into the frames decoded at the data fps (so they are
time-based when the video was decoded with ``fps=...``). Each returns ``(clip_len,)``
int64 arrays; videos shorter than a clip repeat frames rather than fail.
"""

from __future__ import annotations

import numpy as np


def segment_indices(
    num_frames: int, clip_len: int, offset: float | None = 0.5, rng=None
) -> np.ndarray:
    """TSN-style uniform sampling over the whole video.

    The video is cut into ``clip_len`` equal segments and one frame is taken in each, at
    relative position ``offset`` in ``[0, 1)`` (0.5 = centre), or at a random position per
    segment when ``offset is None`` (training jitter; ``rng`` is a ``numpy.random.Generator``).
    """
    if num_frames < 1 or clip_len < 1:
        raise ValueError(f"need num_frames >= 1 and clip_len >= 1, got {num_frames}, {clip_len}")
    if offset is None and rng is None:
        rng = np.random.default_rng()
    if num_frames >= clip_len:
        # integer segment bounds: disjoint, so no frame is taken twice
        bounds = np.floor(np.linspace(0, num_frames, clip_len + 1)).astype(np.int64)
        lo, width = bounds[:-1], np.maximum(1, bounds[1:] - bounds[:-1])
        if offset is None:
            return lo + rng.integers(0, width)
        return lo + np.minimum(width - 1, np.floor(offset * width).astype(np.int64))
    seg = num_frames / clip_len  # shorter than a clip: frames repeat
    rel = rng.random(clip_len) if offset is None else offset
    pos = (np.arange(clip_len) + rel) * seg
    return np.clip(np.floor(pos), 0, num_frames - 1).astype(np.int64)


def random_clip_indices(num_frames: int, clip_len: int, stride: int = 1, rng=None) -> np.ndarray:
    """A contiguous clip (every ``stride``-th frame) starting at a random frame."""
    span = (clip_len - 1) * stride + 1
    rng = rng if rng is not None else np.random.default_rng()
    start = int(rng.integers(0, max(1, num_frames - span + 1)))
    return np.minimum(start + np.arange(clip_len) * stride, num_frames - 1).astype(np.int64)


def sliding_windows(num_frames: int, clip_len: int, stride: int, step: int = 1) -> list[np.ndarray]:
    """Dense windows: a clip of ``clip_len`` frames (every ``step``-th) every ``stride`` frames.

    The last window is aligned to the end so the tail of the video is covered; a video shorter
    than one window gives one (padded) window.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    span = (clip_len - 1) * step + 1
    if num_frames <= span:
        return [np.minimum(np.arange(clip_len) * step, num_frames - 1).astype(np.int64)]
    starts = list(range(0, num_frames - span + 1, stride))
    if starts[-1] != num_frames - span:
        starts.append(num_frames - span)
    return [(s + np.arange(clip_len) * step).astype(np.int64) for s in starts]


def multi_view_indices(num_frames: int, clip_len: int, num_views: int) -> list[np.ndarray]:
    """``num_views`` uniform test views with evenly spread offsets ``(j + 0.5) / num_views``."""
    return [segment_indices(num_frames, clip_len, (j + 0.5) / num_views) for j in range(num_views)]


def contiguous_view_indices(num_frames: int, clip_len: int, num_views: int) -> list[np.ndarray]:
    """``num_views`` contiguous clips (every frame) whose starts are evenly spread over the
    possible starts, at ``(j + 0.5) / num_views``: the test views of a model trained on
    contiguous clips (``sampler="random"``). A video shorter than a clip repeats its last
    frame."""
    last = max(0, num_frames - clip_len)
    return [
        np.minimum(
            round((j + 0.5) / num_views * last) + np.arange(clip_len), num_frames - 1
        ).astype(np.int64)
        for j in range(num_views)
    ]


def view_indices(num_frames: int, clip_len: int, num_views: int, sampler: str) -> list[np.ndarray]:
    """Test views as the model was trained: TSN segments for ``sampler="uniform"``,
    contiguous clips for ``"random"``."""
    if sampler == "random":
        return contiguous_view_indices(num_frames, clip_len, num_views)
    return multi_view_indices(num_frames, clip_len, num_views)
