"""Shared pieces of the benchmarks: the model zoo, a wall-time-budgeted training loop, cost
measurements in a fresh process, and the RESULTS.md writer.

Every model maps a normalised clip ``(B, T, 3, H, W)`` to logits ``(B, K)``; the video
peers (torchvision r3d_18 / mc3_18 / r2plus1d_18, pytorchvideo X3D-XS) are wrapped to take
that layout. Peers are optional benchmark dependencies (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import json
import math
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sora.config import Config
from sora.io.files import atomic_write_text
from sora.models.soranet import SoraNet
from sora.models.summary import count_flops

RESULTS = Path(__file__).with_name("RESULTS.md")


# -- RESULTS.md ----------------------------------------------------------------------------
def write_section(key: str, markdown: str, path: Path = RESULTS) -> None:
    """Put ``markdown`` between ``<!-- begin key -->`` / ``<!-- end key -->`` in RESULTS.md,
    replacing the previous run of the same benchmark (atomically); other sections stay."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    atomic_write_text(path, text)


def merge_rows(key: str, rows: list[dict], order: list[str], save: bool = True) -> list[dict]:
    """Keep every measured row in ``benchmarks/results/<key>.json``: rows of this run replace
    those of the same name (so ``--only X`` re-measures X alone), in ``order``. ``save=False``
    (``--no-write``) merges without writing the file, so a one-off run leaves it alone."""
    path = RESULTS.with_name("results") / f"{key}.json"
    old = json.loads(path.read_text()) if path.exists() else []
    stamp = time.strftime("%Y-%m-%d")
    by_name = {r["name"]: r for r in old} | {r["name"]: {**r, "date": stamp} for r in rows}
    merged = [by_name[n] for n in order if n in by_name]
    if save:
        path.parent.mkdir(exist_ok=True)
        atomic_write_text(path, json.dumps(merged, indent=1) + "\n")
    return merged


def machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


# -- models --------------------------------------------------------------------------------
class ChannelsFirst(nn.Module):
    """Adapts a 3D CNN taking ``(B, 3, T, H, W)`` to the ``(B, T, 3, H, W)`` layout."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.net(clip.transpose(1, 2))


class TSN(nn.Module):
    """Temporal Segment Network consensus: a 2D CNN scores every frame, scores are averaged.

    ``(B, T, 3, H, W) -> (B, K)``; order-blind by construction. Streams with a running mean.
    """

    stream_mode = "running mean of frame scores"

    def __init__(self, num_classes: int):
        super().__init__()
        from torchvision.models import resnet18

        self.cnn = resnet18(num_classes=num_classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t = clip.shape[:2]
        return self.cnn(clip.flatten(0, 1)).view(b, t, -1).mean(1)

    def init_state(self, batch: int):
        return (torch.zeros(()), 0)

    def step(self, frame: torch.Tensor, state):
        total, n = state
        total = total + self.cnn(frame)
        return total / (n + 1), (total, n + 1)


def x3d_xs(num_classes: int, clip_len: int) -> nn.Module:
    """pytorchvideo's X3D-XS (width 2.0, depth 2.2, bottleneck 2.25, head 2048) from scratch,
    with the head pool made adaptive so it fits any input size."""
    from pytorchvideo.models.x3d import create_x3d

    net = create_x3d(
        input_clip_length=clip_len,
        input_crop_size=160,
        model_num_class=num_classes,
        width_factor=2.0,
        depth_factor=2.2,
        head_dim_out=2048,
    )
    net.blocks[-1].pool.pool = nn.AdaptiveAvgPool3d(1)
    return ChannelsFirst(net)


def soranet_config(**model) -> Config:
    """The demo configuration with ``model`` fields overridden."""
    from sora.demo import demo_config

    config = demo_config()
    for k, v in model.items():
        setattr(config.model, k, v)
    return config


@dataclass
class Spec:
    """A benchmarked model: a name, how to build it, and what it is."""

    name: str
    build: object  # (num_classes, clip_len) -> nn.Module
    note: str


def soranet_spec(name: str, note: str, **model) -> Spec:
    def build(k, t):
        return SoraNet(soranet_config(num_classes=k, **model).model)

    return Spec(name, build, note)


def tv_video(name: str) -> Spec:
    def build(k, t):
        import torchvision.models.video as tvv

        return ChannelsFirst(getattr(tvv, name)(num_classes=k))

    return Spec(name, build, f"torchvision `{name}`, from scratch")


PEERS = [
    soranet_spec("SoraNet", "multi-scale (4/8/16/32) light CNN + flow + GRU, the default"),
    soranet_spec(
        "CNN+GRU, single scale",
        "same light CNN, stride 32 only, global pool, RGB in, GRU (LRCN-style)",
        strides=[32],
        grid=1,
        input_diff=False,
        input_flow=False,
        temporal_diff=False,
    ),
    Spec("TSN (resnet18)", lambda k, t: TSN(k), "2D resnet18 per frame, scores averaged"),
    tv_video("r3d_18"),
    tv_video("mc3_18"),
    tv_video("r2plus1d_18"),
    Spec("X3D-XS", x3d_xs, "pytorchvideo `create_x3d` (XS widths/depths), from scratch"),
]

ABLATIONS = [
    soranet_spec("multi-scale + GRU + flow (default)", "strides 4/8/16/32, concat fusion"),
    soranet_spec("without flow", "input_flow=false (RGB + difference in)", input_flow=False),
    soranet_spec("normal flow instead of block matching", "flow=normal", flow="normal"),
    soranet_spec("single scale (stride 32) + GRU", "strides 32 only", strides=[32]),
    soranet_spec("single scale (stride 8) + GRU", "strides 8 only", strides=[8]),
    soranet_spec("multi-scale + mean (no RNN)", "rnn=none", rnn="none"),
    soranet_spec("multi-scale + LSTM", "rnn=lstm", rnn="lstm"),
    soranet_spec("multi-scale + GRU, sum fusion", "fusion=sum", fusion="sum"),
]


def find_spec(name: str) -> Spec:
    for spec in PEERS + ABLATIONS:
        if spec.name == name:
            return spec
    raise KeyError(name)


# -- costs, measured in a fresh process ----------------------------------------------------
def _timed(fn, min_seconds: float = 3.0, min_iters: int = 2) -> float:
    """Seconds per call of ``fn`` (one warm-up call, then at least ``min_iters`` calls and
    ``min_seconds``)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def measure_costs(name: str, num_classes: int, clip_len: int, h: int, w: int) -> dict:
    """Parameters, GFLOPs per clip, training/inference clips/s (batch 16), streamed frames/s
    (batch 1: ``step`` for recurrent models, re-running the window for clip models) and the
    process's peak RSS. Run it in a fresh process (``costs_in_subprocess``) so the RSS is
    this model's alone."""
    torch.manual_seed(0)
    model = find_spec(name).build(num_classes, clip_len)
    batch = 16
    clip1 = torch.randn(1, clip_len, 3, h, w)
    model.eval()
    out = {
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": count_flops(model, clip1) / 1e9,
    }
    clips = torch.randn(batch, clip_len, 3, h, w)
    labels = torch.randint(0, num_classes, (batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def train_step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(clips), labels).backward()
        opt.step()

    out["train_clips_s"] = batch / _timed(train_step)
    model.eval()
    with torch.no_grad():
        out["infer_clips_s"] = batch / _timed(lambda: model(clips))
        if hasattr(model, "step") and getattr(model, "streamable", True):
            frames = torch.randn(64, 3, h, w)

            def stream():
                state = model.init_state(1)
                for f in frames:
                    _, state = model.step(f[None], state)

            out["stream_fps"] = len(frames) / _timed(stream)
            out["stream_mode"] = getattr(model, "stream_mode", "recurrent step")
        else:
            out["stream_fps"] = 1.0 / _timed(lambda: model(clip1))
            out["stream_mode"] = f"re-run {clip_len}-frame window"
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def costs_in_subprocess(name: str, num_classes: int, clip_len: int, h: int, w: int) -> dict:
    here = str(Path(__file__).parent)
    args = f"{name!r}, {num_classes}, {clip_len}, {h}, {w}"
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); from common import measure_costs; "
        f"print(json.dumps(measure_costs({args})))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"measuring {name} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- training on a wall-time budget ----------------------------------------------------------
def train_budget(
    model: nn.Module,
    train_set,
    *,
    seconds: float,
    max_epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 1e-4,
    warmup: float = 0.03,
    grad_clip: float = 1.0,
    seed: int = 0,
    log=print,
) -> dict:
    """AdamW with warm-up and cosine decay over the *time* budget (so every model gets a
    whole schedule however fast it is), gradient clipping; stops at ``seconds`` or
    ``max_epochs``. Returns epochs, clips seen and seconds."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=g
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    t0, seen, epoch, done = time.perf_counter(), 0, 0, False
    while epoch < max_epochs and not done:
        for batch in loader:
            frac = (time.perf_counter() - t0) / seconds
            if frac >= 1.0:
                done = True
                break
            scale = frac / warmup if frac < warmup else 0.5 * (1 + math.cos(math.pi * frac))
            for group in opt.param_groups:
                group["lr"] = lr * max(scale, 0.01)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(batch["video"]), batch["label"])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            seen += len(batch["label"])
        else:
            epoch += 1
            log(f"    epoch {epoch}: {seen} clips, {time.perf_counter() - t0:.0f} s")
    return {"epochs": seen / len(train_set), "clips": seen, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate(model: nn.Module, test_set, num_classes: int) -> dict:
    """Accuracy and macro recall of one uniform view per video."""
    model.eval()
    loader = torch.utils.data.DataLoader(test_set, batch_size=16)
    correct = torch.zeros(num_classes)
    total = torch.zeros(num_classes)
    for batch in loader:
        pred = model(batch["video"]).argmax(-1)
        label = batch["label"]
        total += torch.bincount(label, minlength=num_classes).float()
        correct += torch.bincount(label[pred == label], minlength=num_classes).float()
    present = total > 0
    return {
        "accuracy": (correct.sum() / total.sum()).item(),
        "macro_recall": (correct[present] / total[present]).mean().item(),
    }


# -- a suite: train every model on the same data, measure, tabulate ------------------------
def load_data(data: Path, seed: int = 0):
    """MotionShapes as the demo makes it (generated once, cached), demo preprocessing."""
    import os

    from sora.data import synth
    from sora.tasks.classification import build_dataset

    synth.generate(data, train=80, val=10, test=20, seed=seed)
    config = soranet_config()
    train_set = build_dataset(config, data, "train", train=True)
    test_set = build_dataset(config, data, "test", train_set.classes)
    workers = min(4, os.cpu_count() or 1)
    train_set.preload(workers)
    test_set.preload(workers)
    return config, train_set, test_set


def run_suite(specs: list[Spec], args, log=print) -> list[dict]:
    """Train each model for ``args.seconds`` (at most ``args.max_epochs`` epochs) on the
    same data, test it, and measure its costs in a fresh process."""
    config, train_set, test_set = load_data(Path(args.data))
    k, t = len(train_set.classes), config.data.clip_len
    h, w = config.data.crop
    rows = []
    for spec in specs:
        if args.only and spec.name not in args.only:
            continue
        log(f"== {spec.name}: {spec.note}")
        costs = costs_in_subprocess(spec.name, k, t, h, w)
        torch.manual_seed(args.seed)
        train_set._epoch_rng = np.random.default_rng(args.seed)  # same augmentation draws
        model = spec.build(k, t)
        fit = train_budget(
            model,
            train_set,
            seconds=args.seconds,
            max_epochs=args.max_epochs,
            lr=args.lr,
            batch_size=config.data.batch_size,
            seed=args.seed,
            log=log,
        )
        score = evaluate(model, test_set, k)
        row = {
            "name": spec.name,
            "note": spec.note,
            "budget_s": args.seconds,
            **costs,
            **fit,
            **score,
        }
        log(
            "   "
            + json.dumps({a: round(b, 3) if isinstance(b, float) else b for a, b in row.items()})
        )
        rows.append(row)
    return rows


def suite_arguments(description: str):
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument(
        "--data", default="runs/motionshapes", help="MotionShapes folder (made if missing)"
    )
    ap.add_argument(
        "--seconds", type=float, default=200.0, help="training wall-time budget per model"
    )
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="model names to run (default: all)")
    ap.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    return ap
