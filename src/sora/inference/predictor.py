"""Offline and streaming prediction with a trained run.

* :meth:`Predictor.classify`: one label per video (uniform multi-view clips, probabilities
  averaged), as in evaluation.
* :meth:`Predictor.timeline`: sliding windows over a long video (``window``/``stride`` in
  seconds), decoded frame by frame through a bounded buffer, so memory does not grow with
  the video's length.
* :meth:`Predictor.stream`: the recurrent state carried frame by frame (constant memory and
  one backbone pass per frame). The state is reset every ``window`` seconds so each label
  summarises at most one window; at every window boundary the streamed logits equal the
  offline forward on that window (tested). Works on files, webcams and rtsp URLs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from sora.data.sampling import segment_indices, view_indices
from sora.data.transforms import video_transform
from sora.io.video import VideoReader, read_video
from sora.models.store import load_model, resolve_model_dir


class Predictor:
    """Load ``RUN`` (or a saved-model folder) once; predict many videos."""

    def __init__(self, run: str | Path, device: str | torch.device | None = None):
        self.model, self.config, self.classes = load_model(resolve_model_dir(run))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        d = self.config.data
        self.transform = video_transform(train=False, crop=d.crop, mean=d.mean, std=d.std)
        self.fps, self.clip_len = d.fps, d.clip_len

    @property
    def window_seconds(self) -> float:
        """The clip length the model was trained on, in seconds (``clip_len / fps``)."""
        return self.clip_len / self.fps

    def _reader(self, source, **kwargs) -> VideoReader:
        return VideoReader(source, fps=self.fps, short_side=self.config.data.short_side, **kwargs)

    @torch.no_grad()
    def clip_probs(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, T, 3, H, W)`` -> probabilities ``(N, K)``."""
        x = torch.stack([self.transform(c) for c in clips]).to(self.device)
        out = self.model(x)
        out = out[:, -1] if out.dim() == 3 else out
        return out.float().softmax(-1).cpu()

    def _result(self, probs: torch.Tensor) -> dict:
        k = int(probs.argmax())
        return {
            "label": self.classes[k],
            "probability": float(probs[k]),
            "probs": {c: float(p) for c, p in zip(self.classes, probs, strict=True)},
        }

    def classify(self, source: str | Path, views: int | None = None) -> dict:
        """Label and class probabilities for a whole video."""
        frames, _ = read_video(source, fps=self.fps, short_side=self.config.data.short_side)
        views = views or self.config.data.eval_views
        idx = view_indices(frames.shape[0], self.clip_len, views, self.config.data.sampler)
        probs = self.clip_probs(torch.stack([frames[i] for i in idx])).mean(0)
        return {"duration": frames.shape[0] / self.fps, **self._result(probs)}

    def timeline(
        self,
        source: str | Path,
        window: float | None = None,
        stride: float | None = None,
        batch: int = 8,
    ) -> list[dict]:
        """Predictions for sliding windows: ``[{start, end, label, probability, probs}]``.

        ``window`` defaults to the trained clip length, ``stride`` to half a window. Frames
        are sampled at the model fps; each window's frames are resampled to ``clip_len``.
        """
        window = window or self.window_seconds
        stride = stride or window / 2
        if window <= 0 or stride <= 0:
            raise ValueError("window and stride must be positive seconds")
        n_win = max(1, round(window * self.fps))
        n_stride = max(1, round(stride * self.fps))
        buffer: deque = deque(maxlen=n_win)
        pending: list[tuple[float, float, torch.Tensor]] = []
        out: list[dict] = []
        since = 0
        last_emit_end = -1
        frame_dt = 1.0 / self.fps

        def flush():
            if pending:
                probs = self.clip_probs(torch.stack([c for _, _, c in pending]))
                for (s, e, _), p in zip(pending, probs, strict=True):
                    out.append({"start": s, "end": e, **self._result(p)})
                pending.clear()

        def emit(times):
            frames = torch.stack([f for _, f in buffer])
            idx = segment_indices(len(buffer), self.clip_len, 0.5)
            pending.append((times[0], times[-1] + frame_dt, frames[idx]))
            if len(pending) >= batch:
                flush()

        count = 0
        for fr in self._reader(source):
            buffer.append((fr.time, torch.from_numpy(fr.image).permute(2, 0, 1)))
            count += 1
            since += 1
            if len(buffer) == n_win and (last_emit_end < 0 or since >= n_stride):
                emit([t for t, _ in buffer])
                since = 0
                last_emit_end = count
        if count and (last_emit_end < 0 or last_emit_end < count):
            emit([t for t, _ in buffer])  # the tail (or a video shorter than one window)
        flush()
        return out

    @torch.no_grad()
    def stream(self, source, window: float | None = None, **reader_kwargs) -> Iterator[dict]:
        """Yield ``{time, label, probability, window_end}`` for every frame, carrying the RNN
        state; the state is reset every ``window`` seconds (default: the trained clip)."""
        n_win = max(1, round((window or self.window_seconds) * self.fps))
        state = self.model.init_state(1, self.device)
        k = 0
        for fr in self._reader(source, **reader_kwargs):
            if k == n_win:
                state, k = self.model.init_state(1, self.device), 0
            frame = torch.from_numpy(fr.image).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
            x = self.transform(frame).to(self.device)
            logits, state = self.model.step(x, state)
            k += 1
            probs = logits[0].float().softmax(-1).cpu()
            res = self._result(probs)
            yield {
                "time": fr.time,
                "label": res["label"],
                "probability": res["probability"],
                "window_end": k == n_win,
                "logits": logits[0].cpu(),
            }


def merge_segments(windows: list[dict]) -> list[dict]:
    """Merge consecutive windows with the same label into ``[{label, start, end}]`` segments
    (overlaps are split at the midpoint between window centres)."""
    segs: list[dict] = []
    for i, w in enumerate(windows):
        start = w["start"] if i == 0 else (windows[i - 1]["end"] + w["start"]) / 2
        start = max(start, segs[-1]["end"]) if segs else start
        end = w["end"] if i == len(windows) - 1 else (w["end"] + windows[i + 1]["start"]) / 2
        end = max(end, start)
        if segs and segs[-1]["label"] == w["label"]:
            segs[-1]["end"] = end
        else:
            segs.append({"label": w["label"], "start": start, "end": end})
    return segs


def segment_accuracy(pred: list[dict], truth: list[dict], step: float = 0.05) -> float:
    """Fraction of time (sampled every ``step`` s) where the predicted label equals the truth."""
    end = min(pred[-1]["end"], truth[-1]["end"]) if pred and truth else 0.0
    ts = np.arange(step / 2, end, step)

    def at(segs, t):
        for s in segs:
            if s["start"] <= t < s["end"]:
                return s["label"]
        return None

    hits = [at(pred, t) == at(truth, t) for t in ts]
    return float(np.mean(hits)) if hits else 0.0
