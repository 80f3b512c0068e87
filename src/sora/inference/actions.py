"""Per-track actions: each track's tube streamed through a SoraNet classifier.

:class:`ActionTagger` is given, frame after frame, the tracker's ids and boxes with the
frame. For each track it cuts the tube crop (:class:`sora.data.tubes.TubeCropper`, the one
the training tubes were cut with) and steps a SoraNet classifier (a ``sora train`` run on
``sora data tubes``) with **that track's own recurrent state**: all tracks of a frame go
through the network as one batch, their states stacked and split again. Memory is constant
per track (the state: a few kB), and a track's state is released when the track has not
been seen for ``forget_after`` seconds.

As in ``sora predict --stream``, a track's state is reset every ``clip_len`` steps (the
clip the classifier was trained on), and a track is stepped at the classifier's
``data.fps``. Its action is the mean of the class probabilities at the end of each window
so far, or the current step's probabilities before its first window ends: a label with a
probability that updates as the track goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sora.data.tubes import TubeCropper
from sora.inference.predictor import Predictor


@dataclass
class _TrackAction:
    state: dict
    steps: int = 0  # steps in the current window
    last_seen: float = 0.0
    last_step: float = -np.inf
    window_sum: torch.Tensor | None = None  # summed probabilities at window ends
    windows: int = 0
    current: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def probabilities(self) -> torch.Tensor:
        return self.window_sum / self.windows if self.windows else self.current


def _stack(states: list[dict]) -> dict:
    """Per-track states (batch 1) -> one batched state (``h``/``c`` batch at dim 1)."""
    return {k: torch.cat([s[k] for s in states], 1 if k in ("h", "c") else 0) for k in states[0]}


def _split(state: dict, n: int) -> list[dict]:
    return [
        {k: (v[:, i : i + 1] if k in ("h", "c") else v[i : i + 1]) for k, v in state.items()}
        for i in range(n)
    ]


class ActionTagger:
    """``update(time, image, ids, boxes)`` -> ``(actions (n,) int, probabilities (n,))`` for
    the tracks of one frame; ``classes`` names the actions."""

    def __init__(self, run: str | Path, device: str | None = None, forget_after: float = 2.0):
        p = Predictor(run, device=device)
        if p.config.task != "classify":
            raise ValueError(f"{run}: a {p.config.task} run; --actions needs a classify run")
        self.model, self.classes, self.device = p.model, p.classes, p.device
        self.transform = p.transform
        self.fps = p.fps
        self.window = max(1, p.clip_len)
        self.cropper = TubeCropper(size=p.config.data.short_side)
        self.forget_after = forget_after
        self.tracks: dict[int, _TrackAction] = {}
        self.last_time: float | None = None  # of the previous update

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self.tracks.clear()
        self.cropper.state.clear()
        self.last_time = None

    def _new(self) -> _TrackAction:
        return _TrackAction(state=self.model.init_state(1, self.device))

    @torch.no_grad()
    def update(self, time: float, image: np.ndarray, ids, boxes) -> tuple[np.ndarray, np.ndarray]:
        ids = [int(i) for i in np.asarray(ids).tolist()]
        n = len(ids)
        if n:
            frame = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy
            for i in ids:
                t = self.tracks.get(i)
                if t is None:
                    self.tracks[i] = self._new()
                elif self.last_time is not None and t.last_seen < self.last_time:
                    # back after a gap (the tracker or re-identification kept its id): its
                    # tube breaks there, so the crop starts on the new box and the window on
                    # this frame; the windows already scored keep counting
                    self.cropper.forget(i)
                    t.state, t.steps, t.last_step = (
                        self.model.init_state(1, self.device),
                        0,
                        -np.inf,
                    )
                self.tracks[i].last_seen = time
            crops = self.cropper.crop(frame, ids, boxes)  # (n, 3, S, S), every frame
            due = [
                k
                for k, i in enumerate(ids)
                if self.fps is None or time - self.tracks[i].last_step >= 1 / self.fps - 1e-6
            ]
            if due:
                x = self.transform(crops[due]).to(self.device)
                tracks = [self.tracks[ids[k]] for k in due]
                for j, t in enumerate(tracks):  # a fresh state has no previous frame yet:
                    if "frame" in t.state and not t.state["frame"].numel():  # the frame
                        t.state["frame"] = x[j : j + 1]  # itself, as step() does alone
                logits, state = self.model.step(x, _stack([t.state for t in tracks]))
                probs = logits.float().softmax(-1).cpu()
                for t, s, p in zip(tracks, _split(state, len(due)), probs, strict=True):
                    t.state, t.current, t.last_step = s, p, time
                    t.steps += 1
                    if t.steps == self.window:  # the trained clip is over: score, restart
                        t.window_sum = p if t.window_sum is None else t.window_sum + p
                        t.windows += 1
                        t.state, t.steps = self.model.init_state(1, self.device), 0
        for i in [i for i, t in self.tracks.items() if time - t.last_seen > self.forget_after]:
            del self.tracks[i]
            self.cropper.forget(i)
        self.last_time = time
        if not n:
            return np.zeros(0, int), np.zeros(0, np.float32)
        probs = torch.stack([self.tracks[i].probabilities() for i in ids])
        best = probs.max(1)
        return best.indices.numpy(), best.values.numpy().astype(np.float32)
