"""Sora: deep-learning video analysis.

Pipeline: video -> preprocessing (decode, fps resampling, resize, normalize, clip sampling)
-> multi-scale CNN features per frame -> recurrent fusion over time -> task heads -> results.

Layers import one way: ``io -> data -> models -> tasks -> evaluation/inference -> cli``.
"""

from sora.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    SoraError,
    VideoReadError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "SoraError",
    "VideoReadError",
    "__version__",
]
