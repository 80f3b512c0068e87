"""``train()``: fit a :class:`VideoClassifier` on a dataset and write a run folder.

Run folder::

    RUN/config.yaml            the full config (data, model, train)
    RUN/classes.json
    RUN/metrics.csv            one row per epoch: train/val loss and accuracy, lr, seconds
    RUN/checkpoints/last.ckpt  full training state (resume); best.ckpt (highest val_acc)
    RUN/model/                 the best model: config.yaml + model.safetensors + classes.json
    RUN/train_summary.json     best epoch and accuracy, timing, skipped files

Checkpoints are written atomically (temp file + rename) and read with ``weights_only=True``,
so a run killed at any moment resumes from its last checkpoint and loading never unpickles
arbitrary objects.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sora.config import ADDED_LATER, Config, save_config
from sora.errors import CheckpointError, DatasetError
from sora.io.files import atomic_write_bytes, atomic_write_text
from sora.models.store import save_model
from sora.tasks.classification import VideoClassifier, VideoDataModule, class_weights

#: What each task's best checkpoint and early stopping watch (higher is better); a detection
#: run watches its ``detect.monitor``.
MONITOR = {"classify": "val_acc", "pretrain": "val_acc", "anomaly": "val_psnr"}


class StartLine(Callback):
    """Prints Sora's one line about the fit when it starts (rank 0), in place of Lightning's
    device block: ``training detect on 2 x cpu, ddp over gloo (32-true), up to 8 epochs;
    run in RUN``."""

    def __init__(self, task: str, out: Path):
        self.task, self.out = task, out

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        where = f"{trainer.world_size} x {pl_module.device.type}"
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            kind = type(trainer.strategy).__name__.removesuffix("Strategy").lower()
            where += f", {kind} over {dist.get_backend()}"
        print(
            f"training {self.task} on {where} ({trainer.precision}), up to "
            f"{trainer.max_epochs} epochs; run in {self.out}",
            flush=True,
        )


@contextlib.contextmanager
def quiet_lightning():
    """Within: Lightning's INFO lines (the "GPU available" block, its advertising "Tip"s, the
    DDP set-up lines; :class:`StartLine` says what matters of them) and
    the ``LeafSpec`` deprecation warning that Lightning's own code triggers in torch are not
    shown. Lightning's warnings and errors still are; the previous levels come back after."""
    names = (
        "pytorch.utilities.rank_zero",
        "fabric.utilities.rank_zero",
        "fabric.utilities.distributed",
    )
    loggers = [logging.getLogger(f"lightning.{name}") for name in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*\bLeafSpec\b.*deprecated")
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _task(config: Config, data: Path) -> tuple[L.LightningDataModule, L.LightningModule, list]:
    """The task's data module (set up) and LightningModule; sets ``model.num_classes``."""
    if config.task == "detect":
        from sora.tasks.detection import DetectionDataModule, VideoDetector

        dm = DetectionDataModule(config, data)
        dm.setup("fit")
        config.model.num_classes = len(dm.classes)
        return dm, VideoDetector(config.to_dict(), dm.classes), dm.classes
    if config.task == "anomaly":
        from sora.tasks.anomaly import CLASSES, AnomalyDataModule, AnomalyModule

        config.model.num_classes = len(CLASSES)
        dm = AnomalyDataModule(config, data)
        dm.setup("fit")
        return dm, AnomalyModule(config.to_dict(), CLASSES), list(CLASSES)
    if config.task == "pretrain":
        from sora.tasks.pretrain import CLASSES, FuturePrediction, UnlabelledDataModule

        config.model.num_classes = len(CLASSES)
        dm = UnlabelledDataModule(config, data)
        dm.setup("fit")
        return dm, FuturePrediction(config.to_dict(), list(CLASSES)), list(CLASSES)
    dm = VideoDataModule(config, data)
    dm.setup("fit")
    classes = dm.train_set.classes
    config.model.num_classes = len(classes)
    weights = (
        class_weights(dm.train_set.labels, len(classes)) if config.train.class_weights else None
    )
    return dm, VideoClassifier(config.to_dict(), classes, weights), classes


def _data_summary(config: Config, dm) -> dict:
    if config.task == "anomaly":
        return {
            "train_videos": len(dm.train_parts),
            "train_frames": sum(len(f) for f in dm.train_parts),
            "val_frames": sum(len(f) for f in dm.val_parts),
            "skipped": dm.skipped,
            "failed": [],
        }
    if config.task == "detect":
        return {
            "train_sequences": len(dm.train_set.sequences),
            "val_sequences": len(dm.val_set.sequences),
            "train_clips": len(dm.train_set),
            "val_clips": len(dm.val_set),
            "warnings": dm.warnings,
            "skipped": [],
            "failed": [],
        }
    return {
        "train_videos": len(dm.train_set),
        "val_videos": len(dm.val_set),
        "data_fit": None if dm.sampling is None else dataclasses.asdict(dm.sampling),
        "skipped": dm.train_set.skipped + dm.val_set.skipped,
        "failed": dm.train_set.failed + dm.val_set.failed,
    }


#: metrics.csv columns, in order; a run writes those its task logs (classification: accuracy,
#: detection: mAP50 and mAP@[.5:.95] on the val clips).
METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_map50",
    "val_map",
    "val_psnr",
    "lr",
    "seconds",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save via a temp file + ``os.replace``; load with ``weights_only=True`` only."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint_file(path)


def load_checkpoint_file(path: str | Path) -> dict:
    """A Lightning checkpoint read with ``weights_only=True``; anything else is a
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors of many types
        raise CheckpointError(f"not a loadable checkpoint ({type(err).__name__})", path) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError("not a Lightning checkpoint (no state_dict)", path)
    return ckpt


class MetricsHistory(Callback):
    """Write ``metrics.csv`` (atomically) after every epoch; its rows live in the checkpoint,
    so a resumed run continues the same file without duplicate or lost epochs."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, float]] = []
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        # A checkpoint taken after an epoch's last batch but before its end hooks holds no row
        # for that epoch; the row is still in metrics.csv on disk, so take it from there.
        if self.path.is_file():
            have = {r["epoch"] for r in self.rows}
            disk = [
                r
                for r in read_metrics_csv(self.path)
                if r["epoch"] < trainer.current_epoch and r["epoch"] not in have
            ]
            self.rows = sorted(self.rows + disk, key=lambda r: r["epoch"])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        row: dict[str, float] = {"epoch": float(trainer.current_epoch)}
        for column in METRIC_COLUMNS:  # the logged ones; the step-wise loss by its epoch mean
            key = "train_loss_epoch" if column == "train_loss" else column
            if column not in ("epoch", "lr", "seconds") and key in m:
                row[column] = float(m[key])
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - self._t0
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            write_metrics_csv(self.path, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class FlushDenormals(Callback):
    """Treat denormal floats (magnitude under ~1e-38) as 0 on the CPU while fitting.

    Arithmetic on denormals is many times slower on x86 CPUs, and training makes them (e.g.
    squares of tiny gradients). Flushing them took a demo epoch from 18.0 s to 15.6 s on 2
    cores; it changes no value above 1e-38. The process-wide flag is put back as it was
    before the fit (torch has no getter for it, so it is read off a denormal product).
    """

    def __init__(self) -> None:
        self._was_on = False

    @staticmethod
    def flushing() -> bool:
        """Whether denormals are flushed to 0 in this process now."""
        return (torch.tensor([1e-39]) * 1.5).item() == 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._was_on = self.flushing()
        torch.set_flush_denormal(True)

    def on_fit_end(self, trainer, pl_module) -> None:
        torch.set_flush_denormal(self._was_on)

    def on_exception(self, trainer, pl_module, exception) -> None:
        torch.set_flush_denormal(self._was_on)


class _MidEpochCheckpoint(ModelCheckpoint):
    """Every-n-steps ``last.ckpt`` that skips an epoch's last batch: a checkpoint taken there
    would resume into the next epoch without the finished epoch's validation and row."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class EarlyStoppingAfterWarmup(EarlyStopping):
    """Lightning's ``EarlyStopping`` that starts counting once the module's memory is on: a
    module with ``memory_on()`` (the detector's ``detect.memory_warmup``) returning False is
    not checked, so a plateau of the warm-up's per-frame network cannot end the training
    before the recurrent cells have joined it."""

    @staticmethod
    def _warming_up(pl_module: L.LightningModule) -> bool:
        memory_on = getattr(pl_module, "memory_on", None)
        return memory_on is not None and not memory_on()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._warming_up(pl_module):
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._warming_up(pl_module):
            super().on_train_epoch_end(trainer, pl_module)


def write_metrics_csv(path: Path, rows: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    columns = [c for c in METRIC_COLUMNS if any(c in r for r in rows)] or METRIC_COLUMNS
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (int(v) if k == "epoch" else f"{v:.6g}") for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    with Path(path).open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _rank() -> int:
    """This process's global rank (Lightning's DDP launcher re-runs the command per rank)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _precision(config: Config) -> str:
    if config.train.precision != "auto":
        return config.train.precision
    if torch.cuda.is_available() and config.train.accelerator in ("auto", "gpu", "cuda"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def train(
    config: Config,
    data: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    max_time: str | None = None,
    init: str | Path | None = None,
) -> dict:
    """Train and write the run folder. Returns the train summary dict.

    ``init``: a run (e.g. from ``sora pretrain``) whose SoraNet weights, all but the head,
    the model starts from (:func:`sora.tasks.pretrain.init_from`); ignored on ``resume``.

    Raises:
        DatasetError: empty dataset, a class without readable videos.
        FileExistsError: ``out`` holds a run and ``resume`` is not set (nothing is written over).
        CheckpointError: ``resume`` without a usable ``last.ckpt``, or a config that differs
            from the run's.
    """
    out = Path(out)
    last = out / "checkpoints" / "last.ckpt"
    if _rank() == 0:
        if resume:
            if not last.is_file():
                raise CheckpointError("nothing to resume: checkpoints/last.ckpt is missing", out)
        elif out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out}: already holds files; use --resume or another --out")
    saved: dict = {}
    if resume:
        ckpt = load_checkpoint_file(last)
        saved = ckpt.get("hyper_parameters", {}).get("config", {})
        for section, keys in ADDED_LATER.items():  # keys the run was saved without
            for key, old in keys.items():
                if isinstance(saved.get(section), dict) and key not in saved[section]:
                    setattr(getattr(config, section), key, old)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    dm, module, classes = _task(config, Path(data))
    sampling = getattr(dm, "sampling", None)  # what data.fit chose (classify, pretrain)
    if sampling is not None and _rank() == 0:
        for note in sampling.notes:
            print(f"data: {note}", flush=True)
    if init is not None and not resume:
        if config.task in ("detect", "anomaly"):
            raise CheckpointError("--init starts SoraNet runs (classify, pretrain)", init)
        from sora.tasks.pretrain import init_from

        loaded = init_from(module.model, init)
        if _rank() == 0:
            print(f"init: {len(loaded)} tensors (all but the head) from {init}", flush=True)
    if resume:
        mine = config.to_dict()
        # runs saved before a section or a key of it existed lack them: those are not
        # compared (the defaults, which kept the behaviour when they came, or ADDED_LATER)
        same = (
            all({**mine[k], **saved.get(k, {})} == mine[k] for k in ("model", "detect", "anomaly"))
            and saved.get("task", "classify") == mine["task"]
        )
        if not same or ckpt["hyper_parameters"].get("classes") != classes:
            raise CheckpointError(
                "the run was trained with another model config or class list; "
                "resume with the run's config.yaml",
                last,
            )
    if _rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        atomic_write_text(out / "classes.json", json.dumps(classes, indent=2))

    history = MetricsHistory(out / "metrics.csv")
    t = config.train
    monitor = config.detect.monitor if config.task == "detect" else MONITOR[config.task]
    ckpt_best = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        save_last=False,
        enable_version_counter=False,
    )
    ckpt_last = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="last",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks = [history, ckpt_best, ckpt_last, FlushDenormals(), StartLine(config.task, out)]
    if t.checkpoint_every_n_steps:  # also mid-epoch, into the same last.ckpt
        callbacks.append(
            _MidEpochCheckpoint(
                dirpath=out / "checkpoints",
                filename="last",
                save_top_k=1,
                every_n_train_steps=t.checkpoint_every_n_steps,
                enable_version_counter=False,
            )
        )
    if t.early_stop_patience > 0:
        callbacks.append(
            EarlyStoppingAfterWarmup(monitor, mode="max", patience=t.early_stop_patience)
        )
    on_gpu = torch.cuda.is_available() and t.accelerator in ("auto", "gpu", "cuda")
    with quiet_lightning():
        trainer = L.Trainer(
            max_epochs=t.epochs,
            accelerator=t.accelerator,
            devices=t.devices,
            strategy=t.strategy,
            num_nodes=t.num_nodes,
            precision=_precision(config),
            gradient_clip_val=t.grad_clip or None,
            deterministic=t.deterministic if not on_gpu else "warn",
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            logger=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            default_root_dir=out,
            num_sanity_val_steps=0,
            max_time=max_time,
            log_every_n_steps=10,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=last if resume else None, weights_only=True)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    best_path = Path(ckpt_best.best_model_path) if ckpt_best.best_model_path else last
    best = load_checkpoint_file(best_path)
    module.load_state_dict(best["state_dict"])
    device = str(module.device)
    normality = None
    if config.task == "anomaly":  # memory, calibration and threshold from normal frames
        from sora.tasks.anomaly import fit_normality

        normality = fit_normality(module.model.cpu(), dm, config)
    save_model(module.model, config, classes, out / "model")
    rows = history.rows
    best_row = max(rows, key=lambda r: r.get(monitor, -1)) if rows else {}
    summary = {
        "task": config.task,
        "data": str(data),
        "classes": classes,
        "epochs_run": len(rows),
        "best_epoch": int(best_row.get("epoch", -1)),
        "monitor": monitor,
        f"best_{monitor}": best_row.get(monitor),
        "train_seconds": seconds,
        **_data_summary(config, dm),
        "init": None if init is None or resume else str(init),
        "device": device,
        **({"normality": normality} if normality else {}),
        "precision": _precision(config),
    }
    atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=2))
    return summary


def require_data(data: str | Path) -> Path:
    data = Path(data)
    if not data.exists():
        raise DatasetError("dataset not found", data)
    return data
