"""Model summary: parameters, FLOPs per clip and per streamed frame, feature shapes per scale.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's own counter:
matmuls and convolutions, 2 FLOPs per multiply-add; element-wise ops are not counted).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from sora.models.soranet import SoraNet


def count_flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args)
    return int(counter.get_total_flops())


def summarize(model: SoraNet, clip_len: int, height: int, width: int) -> dict:
    """Numbers for one ``(1, clip_len, 3, height, width)`` clip, in eval mode."""
    was = model.training
    model.eval()
    clip = torch.zeros(1, clip_len, 3, height, width)
    out = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "input": list(clip.shape),
        "gflops_per_clip": count_flops(model, clip) / 1e9,
        "output": list(model(clip).shape),
        "scales": {
            f"stride {s}": list(shape) for s, shape in model.scale_shapes(height, width).items()
        },
    }
    if model.streamable:
        state = model.init_state(1)
        out["gflops_per_streamed_frame"] = count_flops(model.step, clip[:, 0], state) / 1e9
    else:
        out["gflops_per_streamed_frame"] = None
    model.train(was)
    return out
