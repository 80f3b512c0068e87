"""Per-frame 2D CNN backbones that return feature maps at several strides.

Every backbone maps ``(N, 3, H, W)`` float frames to ``{stride: (N, C_s, H/s, W/s)}`` for
the strides asked for (a subset of 4, 8, 16, 32), and exposes ``channels[stride]``.

* :class:`LightBackbone`: the built-in default, a small residual CNN that is fast on CPU.
* :class:`TorchvisionBackbone`: any torchvision classification model, cut with
  ``torchvision.models.feature_extraction.create_feature_extractor`` at the last node of
  each stride (found by tracing a dummy frame, so new families work without a table).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.feature_extraction import create_feature_extractor

from sora.errors import CheckpointError

ALL_STRIDES = (4, 8, 16, 32)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class _Stage(nn.Module):
    """Downsample by 2 (conv 3x3, stride 2), then one residual 3x3 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = _conv_bn(cin, cout, 2)
        self.conv = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return torch.relu(x + self.conv(x))


class LightBackbone(nn.Module):
    """Stem (stride 2) + four stages at strides 4, 8, 16, 32.

    Args:
        widths: five channel counts ``[stem, s4, s8, s16, s32]``.
        strides: the strides returned by ``forward``.
        in_channels: 3 (RGB), or more (RGB + difference to the previous frame, + flow).
    """

    def __init__(
        self, widths: Sequence[int] = (16, 24, 48, 64, 96), strides=ALL_STRIDES, in_channels=3
    ):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(
                f"light backbone needs 5 widths [stem, s4, s8, s16, s32], got {widths}"
            )
        self.strides = tuple(sorted(strides))
        self.stem = _conv_bn(in_channels, widths[0], 2)
        self.stages = nn.ModuleList(_Stage(widths[i], widths[i + 1]) for i in range(4))
        self.channels = {s: widths[i + 1] for i, s in enumerate(ALL_STRIDES)}
        self._last = ALL_STRIDES.index(max(self.strides))

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for i, stage in enumerate(self.stages[: self._last + 1]):
            x = stage(x)
            if ALL_STRIDES[i] in self.strides:
                out[ALL_STRIDES[i]] = x
        return out


def _candidate_nodes(model: nn.Module) -> list[str]:
    """Module names whose outputs can be tapped, in forward order."""
    names = [n for n, _ in model.named_children()]
    if "features" in names:  # mobilenet, efficientnet, convnext, vgg, ...
        return [f"features.{n}" for n, _ in model.features.named_children()]
    if "trunk_output" in names:  # regnet
        return [f"trunk_output.{n}" for n, _ in model.trunk_output.named_children()]
    layers = [n for n in names if n.startswith("layer")]  # resnet, resnext, wide_resnet
    if layers:
        return layers
    raise ValueError(f"cannot find multi-scale stages in {type(model).__name__}")


def _stride_nodes(
    model: nn.Module, strides: Sequence[int]
) -> tuple[dict[str, int], dict[int, int]]:
    """Trace a dummy frame: the last node at each stride and its channel count."""
    nodes = _candidate_nodes(model)
    size = 224
    shapes: dict[str, torch.Size] = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: shapes.__setitem__(n, o.shape)
        )
        for n in nodes
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    picked: dict[int, str] = {}
    channels: dict[int, int] = {}
    for n in nodes:
        shape = shapes[n]
        stride = round(size / shape[-1])
        if stride in strides:
            picked[stride] = n  # later nodes at the same stride win
            channels[stride] = int(shape[1])
    missing = [s for s in strides if s not in picked]
    if missing:
        raise ValueError(f"{type(model).__name__} has no feature map at stride(s) {missing}")
    return {n: s for s, n in picked.items()}, channels


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("weights file not found", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise many types on bad files
        raise CheckpointError(f"not a readable state dict ({type(err).__name__})", path) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("file does not hold a state dict of tensors", path)
    return state


def build_classifier(name: str, weights: str | None) -> nn.Module:
    """A torchvision classification model with no weights, named weights, or a local file.

    ``weights`` is ``None``, a torchvision weights name such as ``"DEFAULT"`` or
    ``"IMAGENET1K_V1"`` (downloaded to the torch hub cache when online), or a path to a
    state dict saved from the same architecture.
    """
    if name not in tvm.list_models(module=tvm):
        raise ValueError(f"unknown torchvision backbone {name!r}")
    is_file = weights is not None and (Path(weights).suffix in (".pth", ".pt", ".safetensors"))
    if weights is None or is_file:
        model = tvm.get_model(name, weights=None)
        if is_file:
            state = load_state_dict_file(weights)
            own = model.state_dict()
            wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
            if wrong:
                raise CheckpointError(
                    f"weights do not fit {name} ({wrong[0]} is {tuple(state[wrong[0]].shape)}, "
                    f"model wants {tuple(own[wrong[0]].shape)})",
                    weights,
                )
            result = model.load_state_dict(state, strict=False)
            missing = [
                k for k in result.missing_keys if not k.startswith(("fc.", "classifier.", "head."))
            ]
            if missing or result.unexpected_keys:
                raise CheckpointError(
                    f"weights do not fit {name} (missing {missing[:3]}, "
                    f"unexpected {result.unexpected_keys[:3]})",
                    weights,
                )
        return model
    return tvm.get_model(name, weights=weights)


def widen_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the first convolution ``in_channels`` inputs: the first 3 keep their (pretrained)
    weights, the extra ones start at zero, so the widened model computes the same function
    until training moves them."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : conv.in_channels] = conv.weight
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    model.set_submodule(name, new)


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier cut at the last node of each requested stride."""

    def __init__(
        self, name: str, weights: str | None = None, strides=ALL_STRIDES, in_channels: int = 3
    ):
        super().__init__()
        self.strides = tuple(sorted(strides))
        classifier = build_classifier(name, weights)
        node_strides, self.channels = _stride_nodes(classifier, self.strides)
        widen_first_conv(classifier, in_channels)
        self._node_strides = node_strides
        self.body = create_feature_extractor(classifier, return_nodes=list(node_strides))

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        feats = self.body(x)
        return {self._node_strides[n]: f for n, f in feats.items()}


def build_backbone(
    name: str,
    *,
    weights: str | None = None,
    widths=(16, 24, 48, 64, 96),
    strides=ALL_STRIDES,
    in_channels: int = 3,
) -> nn.Module:
    """``light`` or a torchvision model name -> a multi-scale backbone taking ``in_channels``."""
    bad = [s for s in strides if s not in ALL_STRIDES]
    if bad or not strides:
        raise ValueError(
            f"strides must be a non-empty subset of {ALL_STRIDES}, got {list(strides)}"
        )
    if name == "light":
        backbone = LightBackbone(widths, strides, in_channels)
        if weights:
            backbone.load_state_dict(load_state_dict_file(weights))
        return backbone
    return TorchvisionBackbone(name, weights, strides, in_channels)
