"""Sampling that fits the data: look at the training videos before training on them.

The defaults (``data.fps`` 8, ``data.clip_len`` 16, so a clip spans 2 s; short side 64, crop
64x80) suit MotionShapes and trimmed actions of a few seconds. On other footage they can
quietly waste the data: a 0.64-s clip at 8 fps is 5 distinct frames, each shown three times
to fill 16. :func:`fit_sampling` reads the videos' metadata (:func:`probe_items`: duration,
native frame rate, size) and

* raises ``fps`` (never above the videos' native rate) when the median video is shorter
  than one clip, so a clip covers the video with distinct frames;
* says so, in one line each, when frames would still repeat (videos with fewer frames than
  ``clip_len``, or ``fps`` above the native rate), when frames are enlarged (videos smaller
  than ``short_side``), or when the crop keeps less than half of the frame.

``sora train`` applies it when ``data.fit`` is true (the default), prints the lines, keeps
them in ``train_summary.json`` and writes the chosen ``fps`` into the run's ``config.yaml``,
so ``sora eval`` and ``sora predict`` sample as training did.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from sora.config import DataConfig
from sora.errors import VideoReadError
from sora.io.video import probe


@dataclass
class VideoStats:
    """What :func:`fit_sampling` needs of one video (seconds, frames per second, pixels)."""

    duration: float
    fps: float
    width: int
    height: int


@dataclass
class SamplingFit:
    """The outcome: ``fps`` to use, and one line per change or warning."""

    fps: float
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def probe_items(items: Sequence, limit: int = 200) -> list[VideoStats]:
    """Metadata of up to ``limit`` evenly spread ``items`` (anything with ``path`` and
    optional ``start``/``end`` seconds, e.g. :class:`sora.data.datasets.VideoItem`).
    Unreadable videos are skipped: the dataset reports them itself."""
    if not items:
        return []
    step = max(1, len(items) // limit)
    out = []
    for item in list(items)[::step][:limit]:
        try:
            meta = probe(item.path)
        except VideoReadError:
            continue
        start = getattr(item, "start", None) or 0.0
        end = getattr(item, "end", None)
        duration = (min(end, meta.duration) if end is not None else meta.duration) - start
        if duration > 0 and meta.fps > 0:
            out.append(VideoStats(duration, meta.fps, meta.width, meta.height))
    return out


def fit_sampling(data: DataConfig, videos: Sequence[VideoStats]) -> SamplingFit:
    """The ``fps`` that fits ``videos`` under ``data`` (clip_len, short_side, crop), and the
    notes to show. Medians are used, so a few odd videos do not decide."""
    fps = data.fps
    if not videos:
        return SamplingFit(fps)
    duration = statistics.median(v.duration for v in videos)
    native = statistics.median(v.fps for v in videos)
    short = statistics.median(min(v.width, v.height) for v in videos)
    aspect = statistics.median(max(v.width, v.height) / min(v.width, v.height) for v in videos)
    stats = {
        "videos_probed": len(videos),
        "median_seconds": round(duration, 3),
        "median_native_fps": round(native, 3),
        "median_short_side": short,
        "median_aspect": round(aspect, 3),
    }
    notes = []
    span = data.clip_len / fps
    if duration < span and fps < native:
        new = round(min(native, data.clip_len / duration), 2)
        notes.append(
            f"data.fps {fps:g} -> {new:g}: the median training video lasts {duration:.2f} s, "
            f"less than a {data.clip_len}-frame clip at {fps:g} fps ({span:.2f} s); at "
            f"{new:g} fps (native {native:g}) a clip covers {data.clip_len / new:.2f} s "
            "(--set data.fit=false keeps data.fps)"
        )
        fps = new
    if fps > native * 1.01:
        notes.append(f"frames repeat: data.fps {fps:g} is above the videos' native {native:g} fps")
    frames = duration * min(fps, native)
    if frames < data.clip_len * 0.95:
        notes.append(
            f"frames repeat: the median video has {frames:.0f} frames at {min(fps, native):g} "
            f"fps, a clip takes {data.clip_len} (--set data.clip_len={max(2, int(frames))} "
            "gives distinct frames)"
        )
    if short < data.short_side:
        notes.append(
            f"frames are enlarged: the median video is {short:g} px on its short side, "
            f"data.short_side is {data.short_side} (--set data.short_side={int(short)} and a "
            "crop that fits avoid it)"
        )
    crop_h, crop_w = data.crop
    resized = data.short_side * data.short_side * aspect
    kept = crop_h * crop_w / resized
    if kept < 0.5:
        notes.append(
            f"the {crop_h}x{crop_w} crop keeps {kept:.0%} of a {data.short_side}x"
            f"{round(data.short_side * aspect)} frame (aspect {aspect:.2f}); --set data.crop="
            f"[{data.short_side},{round(data.short_side * aspect) // 8 * 8}] keeps it whole"
        )
    return SamplingFit(fps, notes, stats)
