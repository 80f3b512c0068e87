"""Video object detection as a LightningModule + LightningDataModule.

Training clips are ``detect.clip_len`` frames: back-propagation through time is truncated
at the clip (the recurrent state starts at zero in every clip). The first
``detect.memory_warmup`` share of the steps skips the recurrent cells; after it, training
clips get ``detect.frame_dropout``. Validation scores mAP50 on
val clips with torchmetrics' ``MeanAveragePrecision`` (the COCO evaluation of
``faster_coco_eval``); the best checkpoint is the one with the highest ``val_map50``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchmetrics.detection import MeanAveragePrecision

from sora.config import Config, config_from_dict
from sora.data.detection import DetectionClipDataset, collate, drop_frames
from sora.data.mot import Sequence, class_names, read_split
from sora.errors import DatasetError
from sora.models.soradet import SoraDet, video_detection_loss
from sora.tasks.classification import adamw_warmup_cosine, clip_loader


def mean_average_precision(**kwargs) -> MeanAveragePrecision:
    """COCO mAP from torchmetrics with the ``faster_coco_eval`` backend (boxes ``xyxy``)."""
    return MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", backend="faster_coco_eval", **kwargs
    )


def metric_target(target: dict) -> dict:
    """A Sora target -> torchmetrics' target: ignored boxes (``conf == 0``) become ``iscrowd``
    regions, so detections on them count neither way."""
    return {
        "boxes": target["boxes"],
        "labels": target["labels"],
        "iscrowd": target["ignore"].long(),
    }


def clip_dataset(config: Config, sequences: list[Sequence], *, train: bool) -> DetectionClipDataset:
    """Training clips overlap (``detect.clip_stride``); evaluation clips do not."""
    d = config.detect
    return DetectionClipDataset(
        sequences,
        size=d.size,
        clip_len=d.clip_len,
        stride=d.clip_stride if train else d.clip_len,
        fps=d.fps,
        train=train,
        hflip=d.hflip,
        mean=config.data.mean,
        std=config.data.std,
        cache=config.data.cache,
    )


def split_sequences(config: Config, data: Path) -> tuple[list[Sequence], list[Sequence]]:
    """Train and val sequences: ``val/`` when present, else a seeded ``data.val_fraction`` of
    the training sequences (at least one)."""
    train = read_split(data, "train")
    if (data / "val").is_dir():
        return train, read_split(data, "val")
    if len(train) < 2:
        raise DatasetError("no val/ split and only one training sequence to hold out from", data)
    order = np.random.default_rng(config.train.seed).permutation(len(train))
    n_val = max(1, round(len(train) * config.data.val_fraction))
    held = set(order[:n_val].tolist())
    return [s for i, s in enumerate(train) if i not in held], [train[i] for i in sorted(held)]


def training_video(
    model: SoraDet, video: torch.Tensor, memory: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The clips ``(B, T, 3, H, W)`` a training step gives ``model``: with
    ``detect.frame_dropout`` once its memory is on, never for the per-frame ablation (no
    memory to find the hidden frames' objects with)."""
    if memory and model.cells is not None:
        return drop_frames(video, model.cfg.frame_dropout, generator)
    return video


class DetectionDataModule(L.LightningDataModule):
    """Train/val clip loaders for a MOTChallenge-layout root."""

    def __init__(self, config: Config, data: str | Path):
        super().__init__()
        self.config, self.data = config, Path(data)
        self.train_set: DetectionClipDataset | None = None
        self.val_set: DetectionClipDataset | None = None
        self.classes: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = split_sequences(self.config, self.data)
        self.classes = class_names(self.data, train)
        self.train_set = clip_dataset(self.config, train, train=True)
        self.val_set = clip_dataset(self.config, val, train=False)
        for split, ds in (("train", self.train_set), ("val", self.val_set)):
            if len(ds) == 0:
                raise DatasetError(
                    f"the {split} split has no run of {self.config.detect.clip_len} frames "
                    "(lower detect.clip_len)",
                    self.data,
                )

    @property
    def warnings(self) -> list[str]:
        """Every warning of the train and val sequences (see :mod:`sora.data.mot`)."""
        seqs = self.train_set.sequences + self.val_set.sequences
        short = self.train_set.too_short + self.val_set.too_short
        return [w for s in seqs for w in s.warnings] + [
            f"{name}: shorter than one clip, not used" for name in short
        ]

    def train_dataloader(self) -> DataLoader:
        return clip_loader(self.train_set, self.config, shuffle=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return clip_loader(self.val_set, self.config, shuffle=False, collate_fn=collate)

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int):
        """Only the video (and indices) go to the device. The targets stay on the host: the
        loss pads them there and moves four tensors (:func:`~sora.models.soradet.pad_targets`),
        and validation moves what the metric needs, instead of Lightning copying every
        frame's five target tensors one by one."""
        moved = {k: v.to(device) for k, v in batch.items() if k != "targets"}
        return {**batch, **moved}


class VideoDetector(L.LightningModule):
    """SoraDet + FCOS losses. ``hparams`` hold only primitives (``weights_only`` checkpoints).

    Batches: ``{"video": (B, T, 3, H, W), "targets": B lists of T dicts}``.
    """

    def __init__(self, config: dict, classes: list[str]):
        super().__init__()
        self.save_hyperparameters()
        self.config: Config = config_from_dict(config)
        self.classes = list(classes)
        self.model = SoraDet(self.config.model, self.config.detect)
        self.val_map = mean_average_precision()

    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(clip)

    def memory_on(self) -> bool:
        """False for the first ``detect.memory_warmup`` share of the training steps (the
        recurrent cells are skipped, validation included), True after it and outside
        ``Trainer.fit``."""
        warmup = self.config.detect.memory_warmup
        if not warmup or self.model.cells is None:
            return True
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer
            return True
        if trainer.state.fn != "fit":
            return True
        return trainer.global_step >= warmup * trainer.estimated_stepping_batches

    def _loss(self, batch: dict, *, train: bool = False) -> tuple[dict, dict]:
        video = batch["video"]
        memory = self.memory_on()
        if train:
            video = training_video(self.model, video, memory)
        out, _ = self.model.run(video, memory=memory)
        flat = {k: v.flatten(0, 1) for k, v in out.items()}
        targets = [t for clip in batch["targets"] for t in clip]
        h, w = video.shape[-2:]
        return video_detection_loss(self.model, flat, targets, h, w), flat

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses, _ = self._loss(batch, train=True)
        bs = batch["video"].shape[0]
        self.log(
            "train_loss",
            losses["loss"],
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=bs,
            sync_dist=True,
        )
        for k in ("cls", "box", "ctr", "forecast"):
            if k not in losses:
                continue
            self.log(
                f"train_{k}", losses[k], on_step=False, on_epoch=True, batch_size=bs, sync_dist=True
            )
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        losses, flat = self._loss(batch)
        bs = batch["video"].shape[0]
        self.log(
            "val_loss", losses["loss"], on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True
        )
        h, w = batch["video"].shape[-2:]
        preds = self.model.detect(flat, h, w)
        targets = [metric_target(t) for clip in batch["targets"] for t in clip]
        self.val_map.update(preds, [{k: v.to(self.device) for k, v in t.items()} for t in targets])

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.val_map.reset()
        self.log("val_map50", result["map_50"].float(), prog_bar=True, sync_dist=True)
        self.log("val_map", result["map"].float(), sync_dist=True)

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.config.train)
