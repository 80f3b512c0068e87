"""Video classification as a LightningModule + LightningDataModule.

The module holds the step logic (loss, metrics, optimizer, schedule); Lightning's Trainer
holds the loop, devices, precision and DDP.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader

from sora.config import Config, config_from_dict
from sora.data.datasets import (
    VideoClipDataset,
    folder_items,
    manifest_items,
    pair_map,
    worker_init_fn,
)
from sora.data.fit import SamplingFit, fit_sampling, probe_items
from sora.data.transforms import video_transform
from sora.errors import DatasetError
from sora.models.soranet import SoraNet


def dataset_items(data: str | Path, split: str, classes=None, *, val_fraction=0.1, seed=0):
    """Items of ``split`` from a folder-per-class root or a CSV manifest.

    A manifest holds one split; ``train``/``val`` from a manifest are a stratified holdout.
    """
    data = Path(data)
    if data.suffix.lower() == ".csv":
        items, classes = manifest_items(data, classes)
        if split in ("train", "val"):
            import numpy as np

            by_class: dict[int, list] = {}
            for it in items:
                by_class.setdefault(it.label, []).append(it)
            chosen = []
            for label, group in sorted(by_class.items()):
                order = np.random.default_rng([seed, label]).permutation(len(group))
                n_val = max(1, round(len(group) * val_fraction)) if len(group) > 1 else 0
                idx = order[:n_val] if split == "val" else order[n_val:]
                chosen += [group[i] for i in sorted(idx)]
            items = chosen
        return items, classes
    return folder_items(data, split, classes, val_fraction=val_fraction, seed=seed)


def build_dataset(
    config: Config,
    data: str | Path,
    split: str,
    classes=None,
    *,
    train: bool = False,
    views: int = 1,
    items: list | None = None,
) -> VideoClipDataset:
    """A :class:`VideoClipDataset` for one split, preprocessed as ``config.data`` says
    (``items``: the split's videos when already listed, with ``classes``)."""
    d = config.data
    if items is None:
        items, classes = dataset_items(
            data, split, classes, val_fraction=d.val_fraction, seed=config.train.seed
        )
    transform = video_transform(train=train, crop=d.crop, mean=d.mean, std=d.std)
    ds = VideoClipDataset(
        items,
        classes,
        fps=d.fps,
        clip_len=d.clip_len,
        short_side=d.short_side,
        transform=transform,
        sampler=d.sampler,
        train=train,
        num_views=views,
        cache=d.cache,
        seed=config.train.seed,
        hflip=d.hflip,
        flip_map=pair_map(d.hflip_pairs, classes, "data.hflip_pairs"),
        reverse_map=pair_map(d.reverse_pairs, classes, "data.reverse_pairs"),
    )
    return ds


def class_weights(labels: list[int], num_classes: int) -> list[float]:
    """Inverse-frequency weights, mean 1 over the classes present."""
    counts = Counter(labels)
    raw = [1.0 / counts[c] if counts[c] else 0.0 for c in range(num_classes)]
    present = [w for w in raw if w > 0]
    mean = sum(present) / len(present)
    return [w / mean for w in raw]


def clip_loader(ds, config: Config, *, shuffle: bool, collate_fn=None) -> DataLoader:
    """The DataLoader of every task's data module: ``data.batch_size`` and
    ``data.num_workers``, each worker with its own seeded sampling generator."""
    d = config.data
    return DataLoader(
        ds,
        batch_size=d.batch_size,
        shuffle=shuffle,
        num_workers=d.num_workers,
        persistent_workers=d.num_workers > 0,
        worker_init_fn=worker_init_fn,
        collate_fn=collate_fn,
        drop_last=False,
    )


class VideoDataModule(L.LightningDataModule):
    """Train/val loaders for a folder-per-class root or a CSV manifest."""

    def __init__(self, config: Config, data: str | Path):
        super().__init__()
        self.config, self.data = config, Path(data)
        self.train_set: VideoClipDataset | None = None
        self.val_set: VideoClipDataset | None = None
        self.sampling: SamplingFit | None = None  # what data.fit chose, and why

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        d = self.config.data
        items, classes = self.split_items("train")
        if d.fit:  # before the datasets are built: they decode at data.fps
            self.sampling = fit_sampling(d, probe_items(items))
            d.fps = self.sampling.fps
        self.train_set = build_dataset(
            self.config, self.data, "train", classes, train=True, items=items
        )
        val_items, _ = self.split_items("val", classes)
        self.val_set = build_dataset(self.config, self.data, "val", classes, items=val_items)
        check_nonempty(self.train_set, self.data, "train")
        check_nonempty(self.val_set, self.data, "val")
        if self.config.data.cache and self.config.data.num_workers == 0:
            workers = min(4, os.cpu_count() or 1)
            self.train_set.preload(workers)
            self.val_set.preload(workers)

    def split_items(self, split: str, classes=None) -> tuple[list, list[str]]:
        """The videos of ``split`` and the class list (a folder per class or a manifest)."""
        d = self.config.data
        return dataset_items(
            self.data, split, classes, val_fraction=d.val_fraction, seed=self.config.train.seed
        )

    def train_dataloader(self) -> DataLoader:
        return clip_loader(self.train_set, self.config, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return clip_loader(self.val_set, self.config, shuffle=False)


def check_nonempty(ds: VideoClipDataset, data: Path, split: str) -> None:
    """Refuse an empty split, and a class with videos that are all unreadable."""
    if len(ds) == 0:
        detail = f" ({len(ds.skipped)} unreadable files)" if ds.skipped else ""
        raise DatasetError(f"the {split} split has no readable videos{detail}", data)
    if split == "train":
        present = set(ds.labels)
        bad = {Path(p).parent.name for p, _ in ds.skipped}
        empty = [c for i, c in enumerate(ds.classes) if i not in present]
        if empty:
            why = "only unreadable videos" if set(empty) & bad else "no videos"
            raise DatasetError(f"class {empty[0]!r} has {why} in the {split} split", data)


class VideoClassifier(L.LightningModule):
    """SoraNet + cross-entropy. ``hparams`` hold only primitives, so checkpoints load with
    ``weights_only=True``.

    Batches are dicts ``{"video": (B, T, 3, H, W), "label": (B,)}``. With the step head the
    clip label is the target at every step and the clip prediction is the last step's.
    """

    def __init__(self, config: dict, classes: list[str], class_weights: list[float] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.config: Config = config_from_dict(config)
        self.classes = list(classes)
        self.model = SoraNet(self.config.model)
        weight = torch.tensor(class_weights) if class_weights else None
        self.loss_fn = nn.CrossEntropyLoss(
            weight=weight, label_smoothing=self.config.train.label_smoothing
        )
        k = len(classes)
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=k)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=k)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Clip logits ``(B, K)`` whatever the head (the step head's last step)."""
        out = self.model(clip)
        return out[:, -1] if out.dim() == 3 else out

    def _shared(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        video, label = batch["video"], batch["label"]
        out = self.model(video)
        if out.dim() == 3:  # step head: every step is trained on the clip label
            loss = self.loss_fn(out.flatten(0, 1), label.repeat_interleave(out.shape[1]))
            return loss, out[:, -1]
        return self.loss_fn(out, label), out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logits = self._shared(batch)
        self.train_acc(logits, batch["label"])
        bs = batch["label"].shape[0]
        self.log(
            "train_loss",
            loss,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=bs,
            sync_dist=True,
        )
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits = self._shared(batch)
        self.val_acc(logits, batch["label"])
        bs = batch["label"].shape[0]
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True, batch_size=bs)

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.config.train)


def adamw_warmup_cosine(module: L.LightningModule, t) -> dict:
    """AdamW (no weight decay on biases and norms) with a per-step schedule: linear warm-up
    for ``t.warmup_epochs``, then cosine decay to 0 at the last step. Shared by every task."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": t.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=t.lr,
    )
    total = max(1, int(module.trainer.estimated_stepping_batches))
    per_epoch = max(1, total // max(1, t.epochs))
    warmup = min(total - 1, int(t.warmup_epochs * per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _WarmupCosine(warmup, total))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _WarmupCosine:
    """Linear warm-up for ``warmup`` steps, then cosine decay to 0 at ``total``."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
