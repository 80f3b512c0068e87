"""sora.models: multi-scale backbones, SoraNet shapes, streaming == offline, save/load, summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from sora.config import (
    Config,
    ConfigError,
    ModelConfig,
    apply_overrides,
    load_config,
    save_config,
)
from sora.errors import CheckpointError
from sora.models import SoraNet, load_model, save_model
from sora.models.backbones import LightBackbone, TorchvisionBackbone
from sora.models.summary import summarize


def small(**kw) -> ModelConfig:
    base = dict(widths=[8, 8, 16, 16, 16], scale_dim=4, grid=2, fusion_dim=16, hidden=16)
    return ModelConfig(**{**base, **kw})


def test_light_backbone_strides_and_shapes():
    bb = LightBackbone((8, 8, 16, 16, 16))
    out = bb(torch.randn(2, 3, 64, 96))
    assert {s: tuple(f.shape) for s, f in out.items()} == {
        4: (2, 8, 16, 24),
        8: (2, 16, 8, 12),
        16: (2, 16, 4, 6),
        32: (2, 16, 2, 3),
    }


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "regnet_y_400mf"])
def test_torchvision_backbones_return_each_stride(name):
    bb = TorchvisionBackbone(name, None, (4, 8, 16, 32)).eval()
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 64, 64))
    assert sorted(out) == [4, 8, 16, 32]
    for s, f in out.items():
        assert f.shape[-2:] == (64 // s, 64 // s) and f.shape[1] == bb.channels[s]


def test_local_imagenet_style_weights_are_loaded(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(ref.layer1[0].conv1.weight, 0.123)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    net = SoraNet(small(backbone="resnet18", backbone_weights=str(tmp_path / "r18.pth")))
    body = dict(net.backbone.body.named_parameters())
    assert torch.equal(body["layer1.0.conv1.weight"], ref.layer1[0].conv1.weight)
    from safetensors.torch import save_file

    save_file(ref.state_dict(), str(tmp_path / "r18.safetensors"))
    net2 = SoraNet(small(backbone="resnet18", backbone_weights=str(tmp_path / "r18.safetensors")))
    conv1 = dict(net2.backbone.body.named_parameters())["conv1.weight"]  # widened to 6 inputs
    assert torch.equal(conv1[:, :3], ref.conv1.weight) and not conv1[:, 3:].any()
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"wrong\.pth: weights do not fit resnet18"):
        SoraNet(small(backbone="resnet18", backbone_weights=str(tmp_path / "wrong.pth")))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"rnn": "lstm"},
        {"rnn": "none"},
        {"layers": 2},
        {"fusion": "sum"},
        {"temporal_diff": False},
        {"strides": [8, 32]},
        {"backbone": "mobilenet_v3_small"},
        {"input_diff": False},
        {"input_flow": True},
        {"input_diff": False, "input_flow": True},
        {"input_flow": True, "flow": "normal"},
    ],
)
def test_streaming_equals_offline(kw):
    torch.manual_seed(0)
    net = SoraNet(small(**kw)).eval()
    clip = torch.randn(2, 7, 3, 64, 64)
    with torch.no_grad():
        offline = net(clip)
        state = net.init_state(2)
        for t in range(7):
            logits, state = net.step(clip[:, t], state)
    assert offline.shape == (2, 10)
    torch.testing.assert_close(logits, offline, atol=1e-5, rtol=1e-4)


def test_step_head_streams_every_step():
    torch.manual_seed(0)
    net = SoraNet(small(head="step", rnn="lstm")).eval()
    clip = torch.randn(1, 5, 3, 64, 64)
    with torch.no_grad():
        offline = net(clip)
        state, steps = net.init_state(1), []
        for t in range(5):
            logits, state = net.step(clip[:, t], state)
            steps.append(logits)
    assert offline.shape == (1, 5, 10)
    torch.testing.assert_close(torch.stack(steps, 1), offline, atol=1e-5, rtol=1e-4)


def test_stream_state_is_constant_size():
    net = SoraNet(small()).eval()
    with torch.no_grad():
        _, state = net.step(torch.randn(1, 3, 64, 64), net.init_state(1))
        sizes = {k: v.shape for k, v in state.items()}
        assert sizes["frame"] == (1, 3, 64, 64) and sizes["h"] == (1, 1, 16)
        for _ in range(20):
            _, state = net.step(torch.randn(1, 3, 64, 64), state)
    assert {k: v.shape for k, v in state.items()} == sizes


def test_bidirectional_is_offline_only():
    net = SoraNet(small(bidirectional=True)).eval()
    assert net(torch.randn(1, 4, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="bidirectional model needs the whole clip"):
        net.init_state(1)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((3, 64, 64), r"clip must have shape \(B, T, 3, H, W\), got \(3, 64, 64\)"),
        ((1, 4, 1, 64, 64), r"clip must have 3 channels"),
        ((1, 4, 3, 16, 64), r"at least 32x32 for stride 32, got 16x64"),
    ],
)
def test_bad_input_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        SoraNet(small())(torch.randn(*shape))


def test_save_load_round_trip_and_mismatch(tmp_path):
    cfg = Config(model=small())
    net = SoraNet(cfg.model).eval()
    classes = [f"c{i}" for i in range(10)]
    save_model(net, cfg, classes, tmp_path / "m")
    loaded, cfg2, classes2 = load_model(tmp_path / "m")
    clip = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip), net(clip))
    assert cfg2 == cfg and classes2 == classes
    # a config.yaml that does not match the weights
    save_config(apply_overrides(cfg, ["model.hidden=32"]), tmp_path / "m" / "config.yaml")
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: weights come from a different model configuration",
    ):
        load_model(tmp_path / "m")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a saved model folder"):
        load_model(tmp_path / "f.txt")


def test_config_yaml_round_trip_and_errors(tmp_path):
    cfg = tiny_config()
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("model:\n  hiden: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key model\.hiden"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"train\.epochs: expected"):
        load_config(tmp_path / "bad2.yaml")
    cfg = apply_overrides(cfg, ["model.rnn=lstm", "data.crop=[48, 48]", "train.lr=0.1"])
    assert (cfg.model.rnn, cfg.data.crop, cfg.train.lr) == ("lstm", [48, 48], 0.1)
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(cfg, ["model.nope=1"])
    assert apply_overrides(cfg, ["detect.monitor=val_map"]).detect.monitor == "val_map"
    with pytest.raises(ConfigError, match="detect.monitor must be one of val_map50, val_map"):
        apply_overrides(cfg, ["detect.monitor=map"])


def test_summary_counts_flops_per_clip_and_per_frame():
    net = SoraNet(small())
    info = summarize(net, 8, 64, 64)
    assert info["parameters"] == sum(p.numel() for p in net.parameters())
    assert info["output"] == [1, 10]
    assert info["scales"]["stride 4"] == [8, 16, 16]
    per_frame, per_clip = info["gflops_per_streamed_frame"], info["gflops_per_clip"]
    assert per_clip > 0 and per_frame * 8 == pytest.approx(per_clip, rel=0.05)


def test_normal_flow_gives_the_direction_of_a_moving_edge():
    from sora.models.soranet import normal_flow

    x = torch.arange(32.0).view(1, 1, 1, 32).expand(1, 3, 32, 32)
    ramp = (x - 16).clamp(-4, 4) / 4  # a soft vertical edge: dark left, bright right
    moved_right = (x - 17).clamp(-4, 4) / 4  # the same edge one pixel to the right
    flow = normal_flow(ramp, moved_right)
    assert flow.shape == (1, 2, 32, 32)
    u, v = flow[0, 0, 8:24, 12:21], flow[0, 1, 8:24, 12:21]
    assert u.mean() > 0.5 and v.abs().max() < 1e-6  # rightward, no vertical component
    torch.testing.assert_close(normal_flow(moved_right, ramp), -flow)  # reversed in time


def test_patch_correlation_is_the_cosine_of_mean_free_patches():
    """The window-sum formulation equals comparing explicit descriptors, borders included."""
    from sora.models.soranet import patch_correlation

    torch.manual_seed(0)
    cur, prev = torch.rand(2, 3, 7, 9), torch.rand(2, 3, 7, 9)
    cur[1, :, :3] = 0.5  # a flat region: zero-variance patches give 0, not NaN
    r, patch = 2, 3

    def descriptors(x):  # (N, 27, h, w): every 3x3 neighbourhood, zero outside, mean-free
        d = torch.nn.functional.unfold(x, patch, padding=1).view(2, -1, 7, 9)
        return torch.nn.functional.normalize(d - d.mean(1, keepdim=True), dim=1)

    a, b = descriptors(cur), descriptors(prev)
    expected = torch.zeros(2, (2 * r + 1) ** 2, 7, 9)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            k = (dy + r) * (2 * r + 1) + dx + r
            for y in range(7):
                for x in range(9):
                    if 0 <= y + dy < 7 and 0 <= x + dx < 9:
                        expected[:, k, y, x] = (a[:, :, y, x] * b[:, :, y + dy, x + dx]).sum(1)
    got = patch_correlation(cur, prev, r, patch)
    assert got.shape == (2, 25, 7, 9) and torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert got[:, 12].max() <= 1 + 1e-4  # a cosine
    torch.testing.assert_close(patch_correlation(cur, cur, r, patch)[0, 12], torch.ones(7, 9))


def test_block_flow_measures_a_shift_of_several_pixels():
    from sora.models.soranet import block_flow

    torch.manual_seed(0)
    texture = torch.rand(1, 3, 48, 64)
    # the content moves 4 px right and 8 px down (1 and 2 cells at stride 4)
    moved = torch.roll(texture, shifts=(8, 4), dims=(2, 3))
    flow = block_flow(texture, moved)
    assert flow.shape == (1, 2, 48, 64)
    inner = flow[0, :, 16:-16, 16:-16]  # away from the wrapped border
    torch.testing.assert_close(inner[0], torch.full_like(inner[0], 4.0), atol=0.25, rtol=0)
    torch.testing.assert_close(inner[1], torch.full_like(inner[1], 8.0), atol=0.25, rtol=0)
    still = block_flow(texture, texture)[0, :, 8:-8, 8:-8]
    assert still.abs().max() < 0.25  # soft-argmax: a fraction of a pixel


@pytest.mark.parametrize("turn", [25.0, -25.0])
def test_block_flow_tells_the_direction_of_a_spinning_shape(turn):
    """The moment of the flow around the shape's centre has the sign of the turn
    (positive = clockwise on screen, y down): what rotate_cw vs rotate_ccw needs."""
    from PIL import Image, ImageDraw

    from sora.data.synth import _polygon
    from sora.models.soranet import block_flow

    def frame(angle):
        img = Image.new("RGB", (80, 64), (90, 100, 95))
        ImageDraw.Draw(img).polygon(_polygon("arrow", 40, 32, 20, angle), fill=(230, 40, 200))
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).float().unsqueeze(0) / 255

    flow = block_flow(frame(30.0), frame(30.0 + turn))[0]
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(80.0), indexing="ij")
    moment = ((xs - 40) * flow[1] - (ys - 32) * flow[0]).sum()
    assert torch.sign(moment) == math.copysign(1, turn)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_flow_moments_read_turn_and_spread_wherever_the_object_is(sign):
    from sora.models.soranet import flow_moments

    h, w, (cx, cy) = 48, 64, (44.5, 14.5)  # an object off the frame centre
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    disk = (((xs - cx) ** 2 + (ys - cy) ** 2) < 100).float()
    spin = torch.stack([-(ys - cy), xs - cx]) * disk * sign / 8  # clockwise for sign=1
    grow = torch.stack([xs - cx, ys - cy]) * disk * sign / 8
    slide = torch.stack([torch.ones_like(xs), torch.zeros_like(xs)]) * disk * sign
    mean_u, mean_v, turn, spread = flow_moments(torch.stack([spin, grow, slide])).T
    assert turn[0] * sign > 0.05 and abs(spread[0]) < 1e-3 * abs(turn[0])
    assert spread[1] * sign > 0.05 and abs(turn[1]) < 1e-3 * abs(spread[1])
    assert abs(turn[2]) < 1e-4 and abs(spread[2]) < 1e-4  # a slide off the centre: neither
    # ... but its mean: the disk's share of the frame, moving right (sign 1) at 1 px/frame
    assert mean_u[2].item() == pytest.approx(sign * disk.mean().item(), rel=1e-5)
    assert abs(mean_v[2]) < 1e-6 and abs(mean_u[0]) < 1e-3 and abs(mean_v[0]) < 1e-3
