"""Self-supervised pretraining of SoraNet on unlabelled video: predict the future.

The objective is dense predictive coding (Han, Xie & Zisserman, ICCV-W 2019) at the level
SoraNet works at, one descriptor per frame. The CNN + recurrent model reads a clip; from its
output at frame ``t`` a linear head per horizon ``k = 1..K`` predicts the descriptor of frame
``t + k``, and an InfoNCE loss asks the prediction to pick that frame among every frame of
every clip in the batch::

    clip (B, T, 3, H, W) -> SoraNet.encode -> descriptors d (B, T, F), RNN outputs h (B, T, D)
    z = normalize(target(d))           (B, T, E)    what the future looks like
    p_k = normalize(predict_k(h[:, :-k]))  (B, T-k, E)  what the model expects k frames on
    logits = p_k @ z.flatten(0, 1).T / temperature     (B*(T-k), B*T); the right column is
    frame t + k of the same clip: frames of the same clip are the hard negatives, so the
    prediction has to know where the motion goes, not only what the clip shows.

The accuracy of that choice is logged as ``train_acc``/``val_acc``: the run folder and the
loop are the classification ones (``train()``), and ``sora train --init RUN`` starts a
classifier from the pretrained backbone, fusion and RNN (:func:`init_from`).

Data: every video under ``DIR`` (files or frame folders, at any depth; labels ignored), a
seeded ``data.val_fraction`` held out to watch the objective.
"""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from sora.config import Config, config_from_dict
from sora.data.datasets import VideoItem, is_video_path
from sora.errors import CheckpointError, DatasetError
from sora.models.soranet import SoraNet
from sora.tasks.classification import VideoDataModule, adamw_warmup_cosine

#: the class list a pretraining run saves with its model: one placeholder class
CLASSES = ["video"]


def unlabelled_items(root: str | Path) -> list[VideoItem]:
    """Every video file or frame folder under ``root``, sorted, label 0."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if is_video_path(path) and not any(path.is_relative_to(p) for p in found):
            found.append(path)
    if not found:
        raise DatasetError("no videos found (files or frame folders, at any depth)", root)
    return [VideoItem(p, 0) for p in found]


class UnlabelledDataModule(VideoDataModule):
    """The classification data module on every video of a folder, split by a seeded
    ``data.val_fraction`` (at least one video on each side)."""

    def __init__(self, config: Config, data: str | Path):
        super().__init__(config, data)
        items = unlabelled_items(data)
        if len(items) < 2:
            raise DatasetError("pretraining needs at least 2 videos (train and val)", data)
        order = list(range(len(items)))
        random.Random(config.train.seed).shuffle(order)
        n_val = min(len(items) - 1, max(1, round(config.data.val_fraction * len(items))))
        val = set(order[:n_val])
        self.items = {
            "train": [it for i, it in enumerate(items) if i not in val],
            "val": [it for i, it in enumerate(items) if i in val],
        }

    def split_items(self, split: str, classes=None) -> tuple[list, list[str]]:
        return self.items[split], list(CLASSES)


class FuturePrediction(L.LightningModule):
    """SoraNet + the predictive-coding heads; ``self.model`` is the plain SoraNet that is
    saved and that ``--init`` reads."""

    def __init__(self, config: dict, classes: list[str] | None = None):
        super().__init__()
        self.save_hyperparameters({"config": config, "classes": classes or list(CLASSES)})
        self.config = config_from_dict(config)
        self.model = SoraNet(self.config.model)
        p = self.config.pretrain
        out_dim = self.model.head.in_features
        self.target = nn.Linear(self.model.frame_dim, p.dim)
        self.predict = nn.ModuleList(nn.Linear(out_dim, p.dim) for _ in range(p.horizon))

    def objective(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, 3, H, W)`` -> InfoNCE loss and top-1 accuracy, averaged over horizons."""
        p = self.config.pretrain
        descriptors, seq, _ = self.model.encode(clip)
        b, t = descriptors.shape[:2]
        if t <= p.horizon:
            raise ValueError(f"data.clip_len ({t}) must exceed pretrain.horizon ({p.horizon})")
        z = F.normalize(self.target(descriptors.float()), dim=-1).flatten(0, 1)  # (B*T, E)
        losses, hits = [], []
        index = torch.arange(b * t, device=clip.device).view(b, t)
        for k, head in enumerate(self.predict, start=1):
            pred = F.normalize(head(seq[:, :-k].float()), dim=-1).flatten(0, 1)  # (B*(T-k), E)
            logits = pred @ z.T / p.temperature
            right = index[:, k:].flatten()
            losses.append(F.cross_entropy(logits, right))
            hits.append((logits.argmax(1) == right).float().mean())
        return torch.stack(losses).mean(), torch.stack(hits).mean()

    def training_step(self, batch, batch_idx):
        loss, acc = self.objective(batch["video"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train_acc", acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self.objective(batch["video"])
        self.log("val_loss", loss, on_epoch=True, prog_bar=True)
        self.log("val_acc", acc, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        return adamw_warmup_cosine(self, self.config.train)


def init_from(model: SoraNet, run: str | Path) -> list[str]:
    """Load a pretrained (or any) run's SoraNet weights into ``model``, all but the head.

    Raises :class:`CheckpointError` naming the run when the two model configs differ in
    anything but ``num_classes`` and ``head``. Returns the names of the tensors loaded."""
    from sora.models.store import load_model, resolve_model_dir

    source, config, _ = load_model(resolve_model_dir(run))
    mine, theirs = vars(model.cfg), vars(config.model)
    differ = [k for k in mine if k not in ("num_classes", "head") and mine[k] != theirs.get(k)]
    if differ:
        raise CheckpointError(
            f"--init: the model config differs in {', '.join('model.' + k for k in differ)}",
            run,
        )
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    return sorted(state)
