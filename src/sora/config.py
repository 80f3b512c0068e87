"""Configuration as plain dataclasses, stored as YAML, overridden with ``--set a.b=value``.

A saved model folder holds the whole :class:`Config`, so a model (and its preprocessing)
is rebuilt from ``config.yaml`` alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from sora.errors import ConfigError
from sora.io.files import atomic_write_text


@dataclass
class DataConfig:
    """Preprocessing and loading.

    Frames are decoded at ``fps``, resized so the short side is ``short_side``, and ``clip_len``
    frames are sampled per clip (``sampler``: ``uniform`` segments over the whole video, or a
    ``random`` contiguous clip), then cropped to ``crop`` = ``[height, width]``.

    Label-aware augmentation (training only, each with probability 0.5):
    hflip: mirror left-right; ``hflip_pairs`` lists classes that swap under a mirror
        (``[[slide_left, slide_right]]``), every other class keeps its label.
    reverse_pairs: play the clip backwards and swap the pair's labels (``[[open, close]]``);
        only clips of listed classes are reversed. Because the reversed clip looks the same
        frame by frame, the model cannot get its label right without reading the order.

    fit: before training, look at the training videos (:mod:`sora.data.fit`): raise ``fps``
        (up to their native rate) when they are shorter than a clip, and say in one line each
        when frames would repeat, be enlarged or mostly cropped away. The chosen ``fps`` is
        written into the run's config, so eval and predict sample the same way.
    """

    fps: float = 8.0
    clip_len: int = 16
    short_side: int = 64
    crop: list[int] = field(default_factory=lambda: [64, 80])
    sampler: str = "uniform"
    eval_views: int = 3
    hflip: bool = False
    hflip_pairs: list[list[str]] = field(default_factory=list)
    reverse_pairs: list[list[str]] = field(default_factory=list)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    batch_size: int = 16
    num_workers: int = 0
    cache: bool = True
    val_fraction: float = 0.1
    fit: bool = True


@dataclass
class ModelConfig:
    """SoraNet. See :class:`sora.models.soranet.SoraNet` for the tensor shapes.

    backbone: ``light`` (built in) or a torchvision classification model name (``resnet18``,
        ``mobilenet_v3_small``, ``efficientnet_b0``, ``regnet_y_400mf``, ``convnext_tiny``...).
    backbone_weights: ``null``, a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``;
        downloaded when online) or a path to a local state dict (``.pth``/``.safetensors``).
    strides: which feature strides to fuse (subset of 4, 8, 16, 32).
    grid: each scale is average-pooled to ``grid x grid`` cells.
    fusion: ``concat`` or ``sum`` of the per-scale vectors.
    input_diff: give the CNN each frame together with its difference to the previous frame
        (6 input channels; a torchvision backbone's first conv is widened, pretrained RGB
        weights kept), so motion direction is visible inside the CNN.
    input_flow: also give the model the motion of each frame pair (on by default): as 2 input
        channels ``(u, v)`` (pixels per frame / 4), average-pooled to the grid as one more
        fused part, and as its mean, turn and spread (``flow_moments``) straight to the RNN.
    flow: how that motion is measured: ``match`` (block matching of 3x3 patches at stride 4,
        shifts up to 8 pixels, :func:`sora.models.soranet.block_flow`) or ``normal``
        (brightness-constancy flow along the image gradient,
        :func:`~sora.models.soranet.normal_flow`).
    temporal_diff: also feed the RNN the change of the frame descriptor since the last frame.
    rnn: ``gru``, ``lstm`` or ``none`` (mean over time; with ``temporal_diff: false`` this is
        the order-blind frame-averaging baseline).
    head: ``clip`` (one label per clip) or ``step`` (a label at every frame).
    """

    num_classes: int = 10
    backbone: str = "light"
    backbone_weights: str | None = None
    widths: list[int] = field(default_factory=lambda: [16, 24, 48, 64, 96])
    strides: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    scale_dim: int = 32
    grid: int = 3
    fusion: str = "concat"
    fusion_dim: int = 128
    input_diff: bool = True
    input_flow: bool = True
    flow: str = "match"
    temporal_diff: bool = True
    rnn: str = "gru"
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    head: str = "clip"
    dropout: float = 0.2


@dataclass
class TrainConfig:
    """Optimisation and the Lightning Trainer.

    accelerator/devices/strategy/num_nodes go to ``lightning.Trainer`` unchanged (``auto``
    uses a GPU when one is present; ``strategy: ddp`` with ``devices: N`` runs DDP).
    precision: ``auto`` = bf16/16 mixed on GPU, 32 on CPU.
    """

    epochs: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    grad_clip: float = 1.0
    seed: int = 0
    early_stop_patience: int = 5
    class_weights: bool = True
    label_smoothing: float = 0.0
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    checkpoint_every_n_steps: int = 0
    deterministic: bool = True


@dataclass
class DetectConfig:
    """SoraDet and its data (``task: detect``). See :class:`sora.models.soradet.SoraDet`.

    The backbone is ``model.backbone`` / ``model.backbone_weights`` / ``model.widths``;
    everything else that is specific to detection lives here.

    size: ``[height, width]`` every frame is resized to (boxes are scaled with it; outputs
        are scaled back to the source's pixels).
    fps: frame rate the sequences are sampled at; ``null`` keeps every frame.
    clip_len: frames per training clip: the truncation length of back-propagation through
        time (the recurrent state starts at zero at every clip). Inference streams any length.
    clip_stride: frames between the starts of consecutive training clips.
    strides: feature-pyramid levels (subset of 4, 8, 16, 32), built by torchvision's
        ``FeaturePyramidNetwork`` with ``fpn_dim`` channels.
    temporal: ``convgru`` or ``convlstm`` (a convolutional recurrent cell per level, carrying
        a spatial memory from frame to frame), or ``none``: the per-frame ablation (identity).
    head_convs: 3x3 conv layers in each FCOS tower (classification, regression).
    center_sampling: an anchor point within this many strides of a box centre (and inside the
        box) is a positive, FCOS-style; a box that no point matches gets the points within a
        stride of its centre (up to 2 x 2).
    level_scale: the level of stride ``s`` learns the boxes whose largest distance from a
        point to a side is in ``(level_scale * s / 2, level_scale * s]``. FCOS uses 8 for
        800-pixel inputs; 2 spreads MotionShapes-Det's 6-48 pixel objects over 8/16/32.
    score_thresh, nms_iou, max_detections: post-processing of the per-frame detections.
    agnostic_nms: suppress overlapping boxes whatever their class (one box per object), rather
        than class by class.
    monitor: the val metric that picks the best checkpoint and stops training early:
        ``val_map50`` or ``val_map`` (COCO's mAP@[.5:.95]: keeps rising while the boxes get
        tighter, when mAP50 has flattened, e.g. with classes that are rare in val).
    hflip: mirror training clips left-right with probability 0.5.
    frame_dropout: once the memory is on (after ``memory_warmup``), the probability that a
        training clip has 1-2 consecutive frames (never the first) replaced by the clip's
        per-pixel median, in which moving objects vanish and the background stays; the boxes
        are kept, so the memory learns to carry objects through a gap. Never applied to the
        per-frame ablation (no memory: it would only be wrong labels). 0 turns it off.
    memory_warmup: the share of the training steps run without the recurrent cells (the
        per-frame network, faster per step); the cells join after it, their gates at 0, so
        the memory starts from a trained detector and only comes in as far as it helps.
        Early stopping does not count the warm-up's epochs. 0 trains the cells from the
        first step.
    forecast: weight of the forecast loss: a light head on each level's hidden state before
        the frame is trained on the frame's boxes, so the state carries the objects, seen or
        not, and its boxes that no detection covers join the output (marked ``forecast``).
        Without it the memory carries nothing. 0 turns it off (no forecast head).
    forecast_score: the forecast boxes' scores are multiplied by this when they join the
        output (0: the forecast is trained but not output).
    forecast_class: how far the main detections' class scores lean on the class the memory
        expects at their point (the forecast's split over the classes; see
        :func:`sora.models.soradet.memory_class`): 0 (the default) the main head's alone, 1
        the memory's split times the main head's best class score. 0.25 gave about +1 mAP50
        point on detection and cost tracking about 1 IDF1 point (docs/detect.md).
    hold: a memory per object (:class:`sora.inference.hold.ObjectHold`): an object whose
        detections stop is kept for up to this many frames at its tracked, predicted box,
        with its last class and score. 0 (the default) turns it off. A decoding rule for any
        model, the per-frame ablation too; 4 doubled SoraDet's occluded mAP50 (docs/detect.md).
    min_side: the lowest distance (in strides) from an anchor point to a box side the head
        can predict. FCOS's ReLU is 0: a point always lies inside its box. A box narrower
        than a stride that no point lies inside is given the points within a stride of its
        centre, up to a stride outside it: with 0 the head cannot reach that box and cuts it
        at the point (two half boxes, one from each side, that NMS keeps). -1 reaches them.
    """

    size: list[int] = field(default_factory=lambda: [96, 128])
    fps: float | None = None
    clip_len: int = 8
    clip_stride: int = 4
    strides: list[int] = field(default_factory=lambda: [8, 16, 32])
    fpn_dim: int = 48
    temporal: str = "convgru"
    head_convs: int = 2
    center_sampling: float = 1.5
    level_scale: float = 2.0
    score_thresh: float = 0.05
    nms_iou: float = 0.6
    max_detections: int = 100
    agnostic_nms: bool = False
    monitor: str = "val_map50"
    hflip: bool = True
    frame_dropout: float = 0.5
    memory_warmup: float = 0.5
    forecast: float = 1.0
    forecast_score: float = 1.0
    forecast_class: float = 0.0
    hold: int = 0
    min_side: float = -1.0


#: For keys added to a section after runs were saved without them: the value that gives
#: those runs' behaviour and architecture (before these keys SoraDet's cells trained from
#: the first step, with no forecast head and no frame dropout, their box sides stopped at
#: the anchor point, and SoraAnomaly had no dwell map).
#: ``sora train --resume`` continues such a run with these values.
ADDED_LATER: dict[str, dict[str, object]] = {
    "detect": {"memory_warmup": 0.0, "forecast": 0.0, "frame_dropout": 0.0, "min_side": 0.0},
    "anomaly": {"dwell": 0.0, "false_alarms_per_hour": 0.0},
}


def with_added_later(values: dict) -> dict:
    """A config dict written by Sora (a run's or a saved model's, which hold every key of
    their time) with the :data:`ADDED_LATER` values filled in where a section lacks a key:
    the run's behaviour and architecture as they were saved."""
    values = dict(values)
    for section, keys in ADDED_LATER.items():
        if isinstance(values.get(section), dict):
            values[section] = {**keys, **values[section]}
    return values


@dataclass
class PretrainConfig:
    """Self-supervised pretraining (``task: pretrain``, :mod:`sora.tasks.pretrain`).

    horizon: frames ahead the model predicts (1..horizon), one linear head each.
    dim: size of the space predictions and targets are compared in.
    temperature: of the InfoNCE softmax.
    """

    horizon: int = 3
    dim: int = 128
    temperature: float = 0.1


@dataclass
class AnomalyConfig:
    """Anomaly detection learned from normal footage (``task: anomaly``,
    :class:`sora.models.anomaly.SoraAnomaly`). The backbone is ``model.backbone`` /
    ``model.widths``; the rest lives here.

    size: ``[height, width]`` every frame is resized to; the score grid has one cell per
        ``max(strides)`` pixels.
    fps: frame rate the videos are sampled at; ``null`` keeps every frame.
    clip_len, clip_stride: training clips (truncated back-propagation through time).
    strides: backbone levels fused into the per-cell feature (subset of 4, 8, 16, 32).
    dim: channels of the per-cell feature and of the recurrent state.
    temporal: ``convgru`` (a convolutional GRU carries the past) or ``none``.
    target: ``next`` (predict the next frame, at a quarter of the resolution) or ``current``
        (reconstruct this frame: with ``temporal: none`` and ``motion: false`` this is the
        per-frame autoencoder baseline).
    motion: give the CNN the frame difference and block-matching flow with each frame.
    smooth: frames of causal exponential smoothing of the frame score (0: none).
    persist: frames (time constant) over which each cell's difference from the scene's normal
        background is averaged: the second heat map, of things that stay where normal objects
        only pass (someone loitering or fallen, a crowd gathering). About the frames a normal
        object takes to cross a cell (16 px at 1 px per frame). 0 turns it off.
    dwell: the third heat map, how many frames in a row a cell has been occupied: a cell is
        occupied while its difference from the background is above this quantile of the
        differences on the held-out normal frames (0.8: the level that 80% of normal cells
        and frames stay under). A normal walker occupies a cell for a second or two, someone
        who stops, falls or gathers with others for as long as they stay. 0 turns it off.
    val_fraction: the last part of every training video held out to validate and to
        calibrate the scores.
    false_alarms_per_hour: sets the alert threshold ``sora watch`` uses: the frame score
        that normal footage is expected to exceed this often, from the maxima of 4-s blocks
        of every training video's scores (a Gumbel fit, :func:`sora.models.anomaly.return_level`).
        0: the highest score on the held-out frames (the rule of runs saved before it).
    """

    size: list[int] = field(default_factory=lambda: [96, 128])
    fps: float | None = None
    clip_len: int = 12
    clip_stride: int = 6
    strides: list[int] = field(default_factory=lambda: [8, 16])
    dim: int = 32
    temporal: str = "convgru"
    target: str = "next"
    motion: bool = True
    smooth: float = 4.0
    persist: float = 15.0
    dwell: float = 0.8
    val_fraction: float = 0.15
    false_alarms_per_hour: float = 1.0


TASKS = ("classify", "detect", "pretrain", "anomaly")
DETECT_MONITORS = ("val_map50", "val_map")


@dataclass
class Config:
    """Everything a run needs. ``task`` picks the model and data reader: ``classify`` (SoraNet
    on a folder per class or a manifest), ``detect`` (SoraDet on a MOTChallenge layout),
    ``pretrain`` (SoraNet predicting the future of unlabelled videos) or ``anomaly``
    (SoraAnomaly on a ``training/`` + ``testing/`` layout of normal footage)."""

    task: str = "classify"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.detect.monitor not in DETECT_MONITORS:
            raise ConfigError(
                f"detect.monitor must be one of {', '.join(DETECT_MONITORS)}, "
                f"got {self.detect.monitor!r}"
            )
        if self.detect.hold < 0:
            raise ConfigError(f"detect.hold must be 0 or more frames, got {self.detect.hold}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: dict, where: str, source: str | None):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping", source)
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"unknown key {where + '.' if where else ''}{key} "
                f"(known: {', '.join(sorted(known))})",
                source,
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{where}.{key}".strip("."), source)
        else:
            kwargs[key] = _coerce(value, hint, f"{where}.{key}".strip("."), source)
    return cls(**kwargs)


def _coerce(value, hint, key: str, source: str | None):
    text = str(hint)
    if value is None:
        if "None" in text or "Any" in text:
            return None
        raise ConfigError(f"{key} cannot be null", source)
    try:
        if hint is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if hint is float or text == "float | None":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if hint is str or text == "str | None":
            if not isinstance(value, str):
                raise TypeError
            return value
        if text.startswith("list[list[str]]"):
            if not isinstance(value, list) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
                for v in value
            ):
                raise TypeError
            return [list(v) for v in value]
        if text.startswith("list"):
            if not isinstance(value, list):
                raise TypeError
            inner = float if "float" in text else int
            return [inner(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {text}, got {value!r}", source) from None
    return value


def config_from_dict(values: dict, source: str | None = None) -> Config:
    return _build(Config, values or {}, "", source)


def load_config(path: str | Path, *, saved: bool = False) -> Config:
    """Read a YAML config; unknown keys and wrong types are :class:`ConfigError`. ``saved``:
    a config Sora wrote (a run's, a saved model's): keys it lacks take their
    :data:`ADDED_LATER` values, not today's defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}", path) from None
    if saved and isinstance(values, dict):
        values = with_added_later(values)
    return config_from_dict(values, str(path))


def save_config(config: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings; the value is parsed as YAML (``3``, ``[64, 64]``, ``null``)."""
    values = config.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = values
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {key}: unknown section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"--set {key}: unknown key (known: {', '.join(sorted(node))})")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None
    return config_from_dict(values, "--set")


def default_config(task: str = "classify") -> Config:
    """The defaults for ``task``. Detection trains batches of 8 clips (of ``detect.clip_len``
    frames, 64 frames a step) rather than 16. Pretraining decodes every epoch from disk
    (``data.cache: false``): unlabelled footage can be hours long, and the cache of decoded
    clips would grow with it."""
    config = Config(task=task)
    if task == "detect":
        config.data.batch_size = 8
    if task == "pretrain":
        config.data.cache = False
    if task == "anomaly":
        config.data.batch_size = 8
        config.train.epochs = 12
    return config
