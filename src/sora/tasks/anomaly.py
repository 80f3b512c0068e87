"""Training SoraAnomaly on normal footage (``task: anomaly``).

Data: the ``training/`` videos of the anomaly layout (:mod:`sora.data.anomaly`), decoded once
at ``anomaly.fps`` and ``anomaly.size`` and kept as uint8 in memory. The first
``1 - anomaly.val_fraction`` of each video gives training clips (``clip_len`` frames every
``clip_stride``), the last part val clips: normal frames the model has not learned from.

Objective: the mean squared error of the predicted next frame (or the reconstructed frame,
``target: current``) at a quarter of the resolution; ``val_psnr`` (higher is better, from the
val MSE in normalized units) picks the best epoch.

After the fit (:func:`fit_normality`), the scene's background is the per-pixel median of
the training frames, the dwell map's occupancy level is the ``anomaly.dwell`` quantile of
the val frames' difference from it, and its counts are calibrated on every training frame
(they learn nothing). The best model streams the val part of every video (its state warmed
up on the end of the training part) to calibrate the other two heat maps of each cell. The
alert threshold is the score that normal footage is expected to exceed
``anomaly.false_alarms_per_hour`` times an hour: every training video is streamed whole, cut
into blocks of :data:`ALERT_BLOCK_SECONDS`, and a Gumbel distribution fitted to the block
maxima gives that return level (:func:`sora.models.anomaly.return_level`). All are saved with
the weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from sora.config import Config, config_from_dict
from sora.data.anomaly import read_anomaly_split
from sora.errors import DatasetError, VideoReadError
from sora.io.video import probe, read_video
from sora.models.anomaly import SoraAnomaly, return_level
from sora.tasks.classification import adamw_warmup_cosine

CLASSES = ["anomaly"]


#: training frames (evenly spread) whose per-pixel median is the normal background
BACKGROUND_FRAMES = 512
#: seconds of normal footage per block whose maximum score the alert threshold's fit takes
#: (:func:`sora.models.anomaly.return_level`); 2-16 s gave thresholds within 5% of each other
#: on MotionShapes-Anomaly
ALERT_BLOCK_SECONDS = 4.0


def normalize(video: torch.Tensor, config: Config) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` -> float, normalized with ``data.mean`` / ``data.std``."""
    mean = torch.tensor(config.data.mean, device=video.device).view(3, 1, 1)
    std = torch.tensor(config.data.std, device=video.device).view(3, 1, 1)
    return (video.float() / 255 - mean) / std


def decode(path: Path, config: Config) -> torch.Tensor:
    """A video (file or frame folder) -> ``(T, 3, H, W)`` uint8 at ``anomaly.fps`` and size."""
    a = config.anomaly
    frames, _ = read_video(path, fps=a.fps, size=tuple(a.size))
    return frames


class ClipWindows(Dataset):
    """``clip_len``-frame windows, every ``clip_stride`` frames, of in-memory videos."""

    def __init__(self, videos: list[torch.Tensor], clip_len: int, stride: int):
        self.videos = videos
        self.index = [
            (v, s)
            for v, frames in enumerate(videos)
            for s in range(0, max(len(frames) - clip_len, 0) + 1, stride)
            if len(frames) >= clip_len
        ]
        self.clip_len = clip_len

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        v, s = self.index[i]
        return {"video": self.videos[v][s : s + self.clip_len]}


class AnomalyDataModule(L.LightningDataModule):
    """Decodes ``DATA/training`` once; :attr:`train_parts` / :attr:`val_parts` hold the uint8
    frames of each video's training and held-out part."""

    def __init__(self, config: Config, data: str | Path):
        super().__init__()
        self.config, self.data = config, Path(data)
        self.train_parts: list[torch.Tensor] = []
        self.val_parts: list[torch.Tensor] = []
        self.skipped: list[tuple[str, str]] = []
        #: frame rate of the decoded frames (``anomaly.fps``, else the first video's own)
        self.fps: float | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_parts:
            return
        a = self.config.anomaly
        for video in read_anomaly_split(self.data, "training"):
            try:
                frames = decode(video.path, self.config)
                if self.fps is None:
                    self.fps = float(a.fps or probe(video.path).fps or 25.0)
            except VideoReadError as err:
                self.skipped.append((str(video.path), err.reason))
                continue
            cut = len(frames) - max(1, math.ceil(len(frames) * a.val_fraction))
            self.train_parts.append(frames[:cut])
            self.val_parts.append(frames[cut:])
        if not self.train_parts:
            raise DatasetError("no readable training videos", self.data / "training")
        self.train_set = ClipWindows(self.train_parts, a.clip_len, a.clip_stride)
        self.val_set = ClipWindows(self.val_parts, min(a.clip_len, 4), 2)
        if len(self.train_set) == 0:
            raise DatasetError(
                f"training videos are shorter than anomaly.clip_len={a.clip_len} frames",
                self.data / "training",
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.config.data.batch_size, shuffle=True, drop_last=False
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.config.data.batch_size)


class AnomalyModule(L.LightningModule):
    """Holds the :class:`SoraAnomaly` (``self.model``, what is saved) and its loss."""

    def __init__(self, config: dict, classes: list[str] | None = None):
        super().__init__()
        self.save_hyperparameters({"config": config, "classes": classes or CLASSES})
        self.config = config_from_dict(config)
        self.model = SoraAnomaly(self.config.model, self.config.anomaly)

    def loss(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, 3, H, W)`` -> prediction MSE at a quarter of the resolution."""
        clip = normalize(video, self.config)
        pred = self.model.run(clip)[0]["pred"]
        small = self.model.small(clip.flatten(0, 1)).view_as(pred)
        if self.config.anomaly.target == "next":
            return F.mse_loss(pred[:, :-1], small[:, 1:])
        return F.mse_loss(pred, small)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch["video"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.loss(batch["video"])
        self.log("val_loss", loss, on_epoch=True)
        self.log("val_psnr", -10 * torch.log10(loss.clamp_min(1e-10)), on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.config.train)


@torch.no_grad()
def stream(
    model: SoraAnomaly, frames: torch.Tensor, config: Config, chunk: int = 64
) -> dict[str, torch.Tensor]:
    """Run the model over a whole uint8 video ``(T, 3, H, W)`` in chunks of ``chunk`` frames
    (the state carried between them, so the result is the offline one) -> outputs without the
    batch axis (:meth:`SoraAnomaly.run`), on the CPU."""
    device = model.threshold.device
    state = None
    parts: dict[str, list[torch.Tensor]] = {}
    for s in range(0, len(frames), chunk):
        clip = normalize(frames[s : s + chunk].to(device), config)[None]
        out, state = model.run(clip, state)
        for k, v in out.items():
            parts.setdefault(k, []).append(v[0].cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def fit_normality(model: SoraAnomaly, dm: AnomalyDataModule, config: Config) -> dict:
    """Calibrate the cells on the val parts and set the alert threshold (see the module
    docstring). Returns a summary: the frames used for each and the threshold."""
    model.eval()

    def val_outputs() -> list[dict]:
        # the val part continues its training part: warm the state up on its last frames
        out = []
        for train_part, val_part in zip(dm.train_parts, dm.val_parts, strict=True):
            warm = train_part[-config.anomaly.clip_len :]
            o = stream(model, torch.cat([warm, val_part]), config)
            out.append({k: v[len(warm) :] for k, v in o.items()})
        return out

    # the background: the median of up to BACKGROUND_FRAMES training frames, evenly spread
    device = model.threshold.device
    ends = torch.tensor([len(f) for f in dm.train_parts]).cumsum(0)
    pick = torch.linspace(0, int(ends[-1]) - 1, min(int(ends[-1]), BACKGROUND_FRAMES)).long()
    part = torch.searchsorted(ends, pick, right=True)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1]])
    pairs = zip(part.tolist(), pick.tolist(), strict=True)
    chosen = [dm.train_parts[p][i - starts[p]] for p, i in pairs]
    model.set_background(normalize(torch.stack(chosen).to(device), config))
    dwell = None
    if config.anomaly.dwell > 0:

        def occupancy(frames: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [
                    model.occupancy(normalize(frames[i : i + 64].to(device), config))
                    for i in range(0, len(frames), 64)
                ]
            )

        held_out = [occupancy(v) for v in dm.val_parts]
        model.set_dwell_level(torch.cat(held_out))
        # the counts learn nothing, so every normal frame may calibrate them; the held-out
        # part alone is short (MotionShapes-Anomaly: 24 s, longest count 36 frames against
        # 67 over all the training footage) and made the alarm fire on normal traffic
        dwell = torch.cat(
            [
                model.dwell_counts(torch.cat([occupancy(t), o])[None])[0]
                for t, o in zip(dm.train_parts, held_out, strict=True)
            ]
        )
    first = val_outputs()
    model.set_calibration(
        torch.cat([o["pred_error"] for o in first]),
        torch.cat([o["persistence"] for o in first]),
        dwell,
    )
    rate = config.anomaly.false_alarms_per_hour
    if rate > 0:
        # every normal frame, streamed from each video's start: the held-out part alone (24 s
        # of MotionShapes-Anomaly) shows none of the longer normal stays a camera sees
        scores = [
            stream(model, torch.cat([t, v]), config)["score"]
            for t, v in zip(dm.train_parts, dm.val_parts, strict=True)
        ]
        block = max(1, round(ALERT_BLOCK_SECONDS * dm.fps))
        model.set_threshold(return_level(scores, block, 3600 / ALERT_BLOCK_SECONDS / rate))
    else:
        scores = [o["score"] for o in val_outputs()]
        model.set_threshold(float(torch.cat(scores).max()) if scores else float("inf"))
    return {
        "calibration_frames": sum(len(f) for f in dm.val_parts),
        "threshold": float(model.threshold),
        "threshold_frames": sum(len(s) for s in scores),
        "false_alarms_per_hour": rate,
    }
