"""Where a SoraDet training step's time goes, on any device.

For each model (SoraDet, and its per-frame ablation) and each batch size (``--clips`` clips of
``detect.clip_len`` frames), ``--steps`` training steps on MotionShapes-Det are timed part by
part, with the device synchronised between parts: loading the batch (``DataLoader``
workers, ``--workers``), moving it to the device, the forward pass, the loss (target
padding and assignment included), the backward pass and the optimiser step. ``--profile``
adds torch.profiler's table of the operators that took the most time (the device's own time
on a GPU), for the last model and batch size.

Made for the next GPU session: on an H200 (2026-12-04) a 32-clip step took 0.41 s
(``benchmarks/detection.py --device cuda --clips 32``), about 620 frames/s, only twice the
2-core CPU's. On the CPU afterwards this script showed the batches' way out of the workers
as the likely cause (fixed: :class:`sora.data.detection.Targets`); the GPU is not measured
since.

    python benchmarks/train_step.py [--device cuda] [--clips 8 32] [--steps 20] [--profile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sora.config import default_config
from sora.data import synth_det
from sora.data.detection import collate
from sora.data.mot import read_split
from sora.models.soradet import SoraDet, video_detection_loss
from sora.tasks.detection import clip_dataset, training_video

PARTS = ("load", "to device", "forward", "loss", "backward", "optimiser")


def time_steps(model, loader, device: str, steps: int, warmup: int = 3) -> dict[str, float]:
    """Mean seconds per step of each of :data:`PARTS` over ``steps`` steps after ``warmup``."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    batches = iter(loader)
    spent: dict[str, float] = defaultdict(float)
    model.train()
    for k in range(warmup + steps):
        marks = [time.perf_counter()]
        mark = _marker(marks, sync)
        batch = next(batches)
        mark()
        video = batch["video"].to(device, non_blocking=True)
        targets = [t for clip in batch["targets"] for t in clip]  # stay on the host
        mark()
        out, _ = model.run(training_video(model, video, True), memory=True)
        flat = {key: v.flatten(0, 1) for key, v in out.items()}
        mark()
        loss = video_detection_loss(model, flat, targets, *video.shape[-2:])["loss"]
        mark()
        opt.zero_grad()
        loss.backward()
        mark()
        opt.step()
        mark()
        if k >= warmup:
            for part, a, b in zip(PARTS, marks[:-1], marks[1:], strict=True):
                spent[part] += (b - a) / steps
    return dict(spent)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="e.g. cuda (default cpu)")
    p.add_argument(
        "--clips", type=int, nargs="+", default=[8, 32], help="clips per step (default 8 32)"
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps each (default 20)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument(
        "--only", nargs="*", default=["SoraDet", "per-frame"], help="models (default both)"
    )
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top operators")
    p.add_argument(
        "--data", help="a MotionShapes-Det folder (default: 16 sequences made in a temp folder)"
    )
    args = p.parse_args()
    data = Path(args.data or tempfile.mkdtemp(prefix="sora-train-step-")) / "det"
    synth_det.generate(data, train=16, val=0, test=0, frames=90)
    config = default_config("detect")
    config.model.num_classes = len(synth_det.CLASSES)
    train_set = clip_dataset(config, read_split(data, "train"), train=True)
    print(f"| model | clips | frames/s | s/step | {' | '.join(PARTS)} |")
    print("|---|---|---|---|" + "---|" * len(PARTS))
    for name in args.only:
        config.detect.temporal = "convgru" if name == "SoraDet" else "none"
        torch.manual_seed(0)
        model = SoraDet(config.model, config.detect).to(args.device)
        for clips in args.clips:
            loader = DataLoader(
                train_set,
                batch_size=clips,
                shuffle=True,
                drop_last=True,
                num_workers=args.workers,
                collate_fn=collate,
                pin_memory=args.device != "cpu",
                persistent_workers=args.workers > 0,
            )
            spent = time_steps(model, _forever(loader), args.device, args.steps)
            total = sum(spent.values())
            frames = clips * config.detect.clip_len
            cells = " | ".join(f"{spent[part] * 1e3:.1f} ms" for part in PARTS)
            print(f"| {name} | {clips} | {frames / total:.0f} | {total:.3f} | {cells} |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if args.device.startswith("cuda"):
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            time_steps(model, _forever(loader), args.device, steps=3, warmup=0)
        key = "self_device_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25))
    return 0


def _marker(marks: list[float], sync):
    """A function that waits for the device, then appends the time to ``marks``."""

    def mark():
        sync()
        marks.append(time.perf_counter())

    return mark


def _forever(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    sys.exit(main())
