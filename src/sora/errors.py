"""Typed exceptions. Every message is one line that names the file (when there is one) and the reason."""

from __future__ import annotations

from pathlib import Path


class SoraError(Exception):
    """Base class of every error Sora raises on bad input. The CLI prints ``str(err)`` and exits 1."""

    def __init__(self, reason: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(self.reason if self.path is None else f"{self.path}: {self.reason}")


class VideoReadError(SoraError):
    """A video (file, folder of frames or live source) cannot be opened or decoded."""


class DatasetError(SoraError):
    """A dataset folder or manifest is empty, malformed or inconsistent."""


class ConfigError(SoraError, ValueError):
    """A configuration file or ``--set`` override is invalid."""


class CheckpointError(SoraError):
    """A run folder or checkpoint is missing, not a Sora checkpoint, or built for another model."""
