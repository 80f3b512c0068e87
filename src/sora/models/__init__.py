"""Models: multi-scale backbones, recurrent temporal fusion, SoraNet, saving and loading."""

from sora.models.soranet import SoraNet, build_model
from sora.models.store import load_model, save_model

__all__ = ["SoraNet", "build_model", "load_model", "save_model"]
