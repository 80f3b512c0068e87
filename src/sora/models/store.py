"""Saved models: a folder with ``config.yaml`` + ``model.safetensors`` + ``classes.json``.

The model is rebuilt from ``config.yaml`` alone and the weights are read with safetensors,
which cannot execute code. Every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from sora.config import Config, ConfigError, load_config, save_config
from sora.errors import CheckpointError
from sora.io.files import atomic_write_bytes, atomic_write_text
from sora.models.anomaly import SoraAnomaly
from sora.models.soradet import SoraDet
from sora.models.soranet import SoraNet


def build_for(config: Config) -> SoraNet | SoraDet | SoraAnomaly:
    """The model a config describes: SoraDet for ``task: detect``, SoraAnomaly for
    ``task: anomaly``, else SoraNet."""
    if config.task == "detect":
        return SoraDet(config.model, config.detect)
    if config.task == "anomaly":
        return SoraAnomaly(config.model, config.anomaly)
    return SoraNet(config.model)


CONFIG, WEIGHTS, CLASSES = "config.yaml", "model.safetensors", "classes.json"


def save_model(
    model: SoraNet | SoraDet | SoraAnomaly, config: Config, classes: list[str], folder: str | Path
) -> Path:
    """Write ``folder/{config.yaml, model.safetensors, classes.json}``."""
    folder = Path(folder)
    if len(classes) != config.model.num_classes:
        raise ValueError(f"{len(classes)} class names for num_classes={config.model.num_classes}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(
        folder / WEIGHTS, save(state, metadata={"format": f"sora-{type(model).__name__.lower()}"})
    )
    save_config(config, folder / CONFIG)
    atomic_write_text(folder / CLASSES, json.dumps(list(classes), indent=2))
    return folder


def load_model(folder: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild a saved model. Returns ``(model in eval mode, config, classes)``.

    Raises:
        CheckpointError: the folder or a file is missing, or the weights were saved from a
            model with another configuration (the message names the mismatch).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError("not a saved model folder (not found or not a folder)", folder)
    for name in (CONFIG, WEIGHTS, CLASSES):
        if not (folder / name).is_file():
            raise CheckpointError(f"not a saved Sora model: {name} is missing", folder)
    try:
        config = load_config(folder / CONFIG, saved=True)
    except ConfigError as err:
        raise CheckpointError(f"bad {CONFIG}: {err.reason}", folder) from None
    try:
        classes = json.loads((folder / CLASSES).read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"{CLASSES} is not valid JSON", folder) from None
    try:
        state = load_file(str(folder / WEIGHTS), device=str(map_location))
    except Exception as err:  # safetensors raises several types on corrupt files
        raise CheckpointError(
            f"{WEIGHTS} is not a readable safetensors file ({err})", folder
        ) from None
    model = build_for(config)
    check_state_fits(model, state, folder / WEIGHTS)
    model.load_state_dict(state)
    return model.eval(), config, classes


def check_state_fits(model: torch.nn.Module, state: dict, source) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the model's keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        detail = []
        if shapes:
            k = shapes[0]
            detail.append(f"{k} is {tuple(state[k].shape)}, model wants {tuple(own[k].shape)}")
        if missing:
            detail.append(f"{len(missing)} missing keys e.g. {missing[0]}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys e.g. {unexpected[0]}")
        raise CheckpointError(
            "weights come from a different model configuration: " + "; ".join(detail), source
        )


def resolve_model_dir(run: str | Path) -> Path:
    """A run folder (``RUN/model/``) or a saved-model folder -> the saved-model folder.

    Raises :class:`CheckpointError` (naming the path) for anything else, such as a file.
    """
    run = Path(run)
    if not run.exists():
        raise CheckpointError("run folder not found", run)
    if run.is_file():
        raise CheckpointError("not a Sora run folder (got a file; pass the run's folder)", run)
    for folder in (run / "model", run):
        if (folder / WEIGHTS).is_file() or (folder / CONFIG).is_file():
            return folder
    raise CheckpointError(f"not a Sora run: no model/{WEIGHTS}", run)
