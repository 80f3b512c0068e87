"""Streaming detection with a trained SoraDet run: files, frame folders, webcams, RTSP.

:meth:`Detector.stream` is the one loop: frames in (any length), the recurrent state carried
from frame to frame, per-frame detections out, in the source's pixels. Frames are run in
chunks of ``chunk`` consecutive frames (one backbone call per chunk, the recurrent cells
stepped inside it), which gives the same outputs as one frame at a time (tested) and costs
memory for ``chunk`` frames only. Live sources use ``chunk=1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from sora.errors import CheckpointError
from sora.inference.hold import ObjectHold
from sora.inference.reid import EMBEDDINGS, colour_embeddings, join_embeddings, unit
from sora.io.video import Frame, VideoReader, reconnecting
from sora.models.store import load_model, resolve_model_dir


@dataclass
class FrameDetections:
    """Detections of one frame: ``boxes (n, 4)`` xyxy in the source's pixels, ``scores (n,)``,
    ``labels (n,)`` 0-based class indices, ``forecast (n,)`` bool: boxes the memory carries
    where nothing is seen (``detect.forecast``; ``None``: not known); ``image`` the frame as
    decoded (``(H, W, 3)`` uint8) when the source was a video, else ``None``;
    ``embeddings (n, E)`` unit appearance vectors when asked for (``embed``), else ``None``;
    ``frame_size`` the source's ``(height, width)`` (``None``: not known)."""

    index: int
    time: float
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    forecast: np.ndarray | None = None
    image: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    frame_size: tuple[int, int] | None = None


def prepare_frames(
    frames: torch.Tensor, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """uint8 ``(N, 3, h, w)`` at any size -> float ``(N, 3, H, W)`` at ``size`` (bilinear,
    antialiased), normalized with ``mean`` / ``std`` ``(1, 3, 1, 1)``."""
    x = frames.float() / 255
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return (x - mean) / std


class Detector:
    """Load a detection run (or saved-model folder) once; detect in many sources."""

    def __init__(
        self,
        run: str | Path,
        device: str | torch.device | None = None,
        *,
        forecast_class: float | None = None,
        hold: int | None = None,
    ):
        self.run = Path(run)
        self.model, self.config, self.classes = load_model(resolve_model_dir(run))
        if self.config.task != "detect":
            raise CheckpointError(f"a {self.config.task} model, not a detection model", run)
        if forecast_class is not None:
            self.set_forecast_class(forecast_class)
        if hold is not None:
            self.set_hold(hold)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.size = tuple(self.config.detect.size)  # (H, W) the model sees
        self.mean = torch.tensor(self.config.data.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.config.data.std, device=self.device).view(1, 3, 1, 1)

    def set_forecast_class(self, weight: float) -> None:
        """Decode with ``detect.forecast_class = weight`` instead of the run's own value (the
        main detections' class scores leaning on the memory's; a decoding rule, so the
        weights stay as trained).

        Raises:
            ValueError: ``weight`` is outside [0, 1], or the model has no forecast head
                (the per-frame ablation, or ``detect.forecast: 0``) and ``weight`` is not 0.
        """
        weight = float(weight)
        if not 0 <= weight <= 1:
            raise ValueError(f"forecast_class must be in [0, 1], got {weight:g}")
        if weight and getattr(self.model, "forecast", None) is None:
            raise ValueError(
                f"forecast_class {weight:g}: {self.run} has no memory forecast "
                "(detect.temporal none or detect.forecast 0)"
            )
        self.model.cfg.forecast_class = weight  # what the decoding reads
        self.config.detect.forecast_class = weight  # what the run's outputs record

    def set_hold(self, frames: int) -> None:
        """Decode with ``detect.hold = frames`` instead of the run's own value: boxes held on
        objects whose detections stop, for up to ``frames`` frames
        (:class:`~sora.inference.hold.ObjectHold`; 0: off).

        Raises:
            ValueError: ``frames`` is negative.
        """
        if frames < 0:
            raise ValueError(f"hold must be 0 or more frames, got {frames}")
        self.config.detect.hold = int(frames)

    def operating_threshold(self, fallback: float = 0.3) -> float:
        """The best-F1 score threshold ``sora eval`` stored in ``RUN/eval/metrics.json``, or
        ``fallback`` for a run not evaluated yet."""
        path = self.run / "eval" / "metrics.json"
        if path.is_file():
            value = json.loads(path.read_text()).get("operating_threshold")
            if isinstance(value, int | float):
                return float(value)
        return fallback

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, h, w)`` at any size -> normalized float ``(N, 3, H, W)`` at the
        model's size (:func:`prepare_frames`)."""
        return prepare_frames(frames.to(self.device), self.size, self.mean, self.std)

    @torch.no_grad()
    def stream(
        self,
        frames: Iterable[tuple[torch.Tensor, object]],
        *,
        source_size: tuple[int, int],
        chunk: int = 16,
        score_thresh: float | None = None,
        embed: str | None = None,
    ) -> Iterator[tuple[object, dict]]:
        """``(uint8 (3, h, w) frame, tag)`` pairs -> ``(tag, {boxes, scores, labels})`` per
        frame, in order, with boxes scaled to ``source_size`` = ``(height, width)``.

        ``embed`` (``"colour"``, ``"features"`` or ``"both"``; :mod:`sora.inference.reid`)
        adds ``embeddings (n, E)``: each box's appearance, for re-identification.
        A ``None`` frame resets the state (a gap in the sequence) and yields nothing.
        With ``detect.hold`` the held boxes of :class:`~sora.inference.hold.ObjectHold`
        join each frame's detections (``forecast`` True).
        """
        if embed is not None and embed not in EMBEDDINGS:
            raise ValueError(f"unknown embedding {embed!r} (choose from {', '.join(EMBEDDINGS)})")
        sy, sx = source_size[0] / self.size[0], source_size[1] / self.size[1]
        scale = torch.tensor([sx, sy, sx, sy], device=self.device)
        state = self.model.init_state(1, self.device)
        pending: list[tuple[torch.Tensor, object]] = []
        frames_held = self.config.detect.hold
        hold = ObjectHold(frames_held, self.size) if frames_held else None

        def flush():
            nonlocal state
            clip = self.prepare(torch.stack([f for f, _ in pending])).unsqueeze(0)
            out, state = self.model.run(clip, state, features=embed in ("features", "both"))
            flat = {k: v[0] for k, v in out.items()}
            dets = self.model.detect(flat, *self.size, score_thresh=score_thresh)
            for n, ((frame, tag), d) in enumerate(zip(pending, dets, strict=True)):
                if hold is not None:  # at most max_detections boxes, as without it
                    d = hold(d)
                    top = d["scores"].argsort(descending=True)[: self.config.detect.max_detections]
                    d = {k: v[top] for k, v in d.items()}
                if embed is not None:
                    d["embeddings"] = self._embed(embed, frame, flat.get("features"), n, d)
                yield tag, {k: (v * scale if k == "boxes" else v).cpu() for k, v in d.items()}
            pending.clear()

        for frame, tag in frames:
            if frame is None:
                if pending:
                    yield from flush()
                state = self.model.init_state(1, self.device)
                if hold is not None:
                    hold.reset()
                continue
            pending.append((frame, tag))
            if len(pending) >= chunk:
                yield from flush()
        if pending:
            yield from flush()

    def _embed(self, embed: str, frame, features, k: int, d: dict) -> torch.Tensor:
        """Frame ``k`` of a chunk (``frame`` uint8 ``(3, h, w)`` as given): its boxes'
        appearance (:mod:`sora.inference.reid`)."""
        parts = []
        if embed in ("colour", "both"):  # on the frame as given: small boxes keep detail
            sy, sx = frame.shape[-2] / self.size[0], frame.shape[-1] / self.size[1]
            to_frame = torch.tensor([sx, sy, sx, sy], device=self.device)
            parts.append(colour_embeddings(frame.to(self.device), d["boxes"] * to_frame))
        if embed in ("features", "both"):
            parts.append(unit(self.model.box_embeddings(features[k], d["boxes"])))
        return parts[0] if len(parts) == 1 else join_embeddings(*parts)

    def detect_video(
        self,
        source: str | int | Path,
        *,
        score_thresh: float | None = None,
        keep_images: bool = False,
        retries: int = 5,
        embed: str | None = None,
        **reader_kwargs,
    ) -> Iterator[FrameDetections]:
        """Detections for every frame of a video file, image folder, webcam or URL (at the
        run's ``detect.fps``, or every frame). Live sources are run one frame at a time and
        reopened with backoff when they drop (``retries`` failures in a row give up); the
        recurrent state is reset at such a gap and frame times count the time it lasted."""
        reader = VideoReader(source, fps=self.config.detect.fps, **reader_kwargs)
        frames: Iterator[Frame | None]
        if reader.live:
            frames = reconnecting(lambda: iter(reader), name=reader.name, retries=retries)
        else:
            frames = iter(reader)
        yield from self.detect_frames(
            frames,
            score_thresh=score_thresh,
            keep_images=keep_images,
            chunk=1 if reader.live else 8,
            embed=embed,
        )

    def detect_frames(
        self,
        frames: Iterable[Frame | None],
        *,
        score_thresh: float | None = None,
        keep_images: bool = False,
        chunk: int = 8,
        embed: str | None = None,
    ) -> Iterator[FrameDetections]:
        """Decoded frames (``None``: a gap, the state restarts) -> detections per frame, through
        :meth:`stream` in chunks of ``chunk``; the frames' size is read off the first one (no
        frame first: nothing)."""
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            return
        pairs = (
            (None, None) if fr is None else (torch.from_numpy(fr.image.copy()).permute(2, 0, 1), fr)
            for fr in chain([first], frames)
        )
        for fr, d in self.stream(
            pairs,
            source_size=first.image.shape[:2],
            chunk=chunk,
            score_thresh=score_thresh,
            embed=embed,
        ):
            yield FrameDetections(
                index=fr.index,
                time=fr.time,
                boxes=d["boxes"].numpy(),
                scores=d["scores"].numpy(),
                labels=d["labels"].numpy(),
                forecast=d["forecast"].numpy(),
                image=fr.image if keep_images else None,
                embeddings=d["embeddings"].numpy() if "embeddings" in d else None,
                frame_size=fr.image.shape[:2],
            )
