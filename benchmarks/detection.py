"""SoraDet against its per-frame ablation and torchvision detectors on MotionShapes-Det.

Every model gets the same data (MotionShapes-Det, ``--train``/``--val``/``--test``
sequences of 90 frames), the same recipe (AdamW, lr ``--lr``, warm-up then cosine over the
budget, gradient clipping 1.0, 64 frames per step: SoraDet sees 8 clips of 8 frames,
per-frame models 64 frames drawn from the same clips) and the same **wall-time budget**
(``--seconds``) on this machine, all from scratch (no downloads). Then every test sequence
is streamed whole and scored with the same COCO evaluation as ``sora eval``
(``sora.evaluation.detection.score_sequences``): mAP50, mAP@[.5:.95], and mAP50 on the
visible (visibility >= 0.5) and occluded (< 0.5) boxes, and the share of the wholly
hidden boxes (visibility 0) that a box scoring >= 0.3 finds (IoU 0.5, any class). Costs:
GFLOPs per frame (FlopCounterMode) and streamed frames/s at batch 1 (detection included,
decode excluded).

On a GPU (``--device cuda``) every model trains and streams there; ``--clips`` sets the
clips per step (more frames per step for the same step count), ``--workers`` loads the
batches in DataLoader workers, ``--fit-seconds`` caps a ``--steps`` run's step count so it
ends within that time (measured on its first steps), and ``--extra-test DIR`` also scores
the models on DIR's test split (e.g. 48 sequences of another seed, for the occluded boxes).
``--peer-size data`` runs the torchvision models at the frames' own size (96x128, as
SoraDet) instead of their own (SSDlite 320x320 ...), so that equal steps fit on a CPU and
every model computes on the same pixels.

    python benchmarks/detection.py [--seconds 300] [--only SoraDet per-frame]
    python benchmarks/detection.py --device cuda --steps 1700 --workers 3 --no-write
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from common import machine, merge_rows, write_section
from torch import nn
from torch.utils.data import DataLoader

from sora.config import apply_overrides, default_config
from sora.data import synth_det
from sora.data.detection import collate
from sora.data.mot import FrameStore, read_split
from sora.evaluation.detection import detect_sequence, found_by_visibility, score_sequences
from sora.inference.detector import Detector
from sora.models.soradet import SoraDet, video_detection_loss
from sora.models.summary import count_flops
from sora.tasks.detection import clip_dataset, training_video

ORDER = [
    "SoraDet",
    "per-frame",
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fcos_resnet50_fpn",
]


def tv_model(name: str, num_classes: int, size: tuple[int, int] | None = None) -> nn.Module:
    """A torchvision detector from scratch (background class added), at its own input size,
    or with ``size`` = (H, W) at that size: its transform then resizes every image to it
    (SSDlite exactly, the others keeping the aspect ratio within it), so a model sees the
    frames' own pixels and costs what a model of that input size costs."""
    from torchvision.models import detection as D

    build = getattr(D, name)
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes + 1}
    if name == "fcos_resnet50_fpn":
        kwargs.update(num_classes=num_classes, min_size=192, max_size=256)
    model = build(**kwargs)
    if size is not None:
        t = model.transform
        t.min_size, t.max_size = (min(size),), max(size)
        if t.fixed_size is not None:  # SSD: a fixed (W, H)
            t.fixed_size = (size[1], size[0])
    return model


def lr_at(fraction: float, lr: float, warmup: float = 0.05) -> float:
    if fraction < warmup:
        return lr * (fraction / warmup + 0.01)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (fraction - warmup) / (1 - warmup))))


class RandomClips:
    """A batch sampler: per step, ``clips`` distinct clip indices drawn with ``generator``
    (``randperm(n)[:clips]``), for ever."""

    def __init__(self, n: int, clips: int, generator: torch.Generator):
        self.n, self.clips, self.generator = n, clips, generator

    def __iter__(self):
        while True:
            yield torch.randperm(self.n, generator=self.generator)[: self.clips].tolist()


def train_budget(
    name: str,
    model: nn.Module,
    train_set,
    seconds: float,
    lr: float,
    log,
    steps: int = 0,
    seed: int = 0,
    *,
    device: str = "cpu",
    clips: int = 8,
    workers: int = 0,
    fit_seconds: float = 0,
) -> dict:
    """Train for ``seconds`` of wall time, or for ``steps`` steps when given (the schedule then
    follows the step count, so the run does not depend on the machine's speed); returns steps,
    frames seen and seconds taken. SoraDet runs without its recurrent cells for its first
    ``detect.memory_warmup`` share of the budget.

    ``clips`` clips per step, loaded by ``workers`` DataLoader workers (0: in this process).
    With ``steps`` and ``fit_seconds``, the step count is lowered (every 20 steps from step 40,
    never raised) when the speed since step 10 says the run would otherwise take longer than
    ``fit_seconds``; the schedule then follows the lowered count."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0}], lr=lr
    )
    model.train()
    g = torch.Generator().manual_seed(seed)
    # In this process the sampler shares ``g`` with frame dropout, as it always did; workers
    # prefetch batches ahead of the steps, so they get a stream of their own.
    order = g if workers == 0 else torch.Generator().manual_seed(seed + 1)
    batches = iter(
        DataLoader(
            train_set,
            batch_sampler=RandomClips(len(train_set), clips, order),
            num_workers=workers,
            collate_fn=collate,
            pin_memory=device != "cpu",
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed),  # workers' seeds; not the global RNG
            prefetch_factor=4 if workers else None,
        )
    )
    step, frames, start = 0, 0, time.perf_counter()
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    planned, timed = steps, 0.0
    while True:
        elapsed = time.perf_counter() - start
        if step == 10:
            timed = elapsed  # the first steps (start-up, caches filling) are not timed
        if steps and fit_seconds and step >= 40 and step % 20 == 0:
            rate = (elapsed - timed) / (step - 10)
            fits = max(step, step + int((fit_seconds - elapsed) / rate))
            if fits < steps:
                log(f"  {name}: {rate:.3f} s a step at step {step}: {steps} steps -> {fits}")
                steps = fits
        done = step / steps if steps else elapsed / seconds
        if done >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(done, lr)
        batch = next(batches)
        video = batch["video"].to(device, non_blocking=True)  # (clips, T, 3, H, W)
        targets = [t for clip in batch["targets"] for t in clip]
        if isinstance(model, SoraDet):  # the loss pads the targets on the host, then moves them
            memory = done >= model.cfg.memory_warmup
            out, _ = model.run(training_video(model, video, memory, g), memory=memory)
            flat = {k: v.flatten(0, 1) for k, v in out.items()}
            loss = video_detection_loss(model, flat, targets, *video.shape[-2:])["loss"]
        else:
            images = list((video.flatten(0, 1) * std + mean).clamp(0, 1))
            tv_targets = [
                {
                    "boxes": t["boxes"][~t["ignore"]].to(device),
                    "labels": (t["labels"][~t["ignore"]] + int(name != "fcos_resnet50_fpn")).to(
                        device
                    ),
                }
                for t in targets
            ]
            keep = [i for i, t in enumerate(tv_targets) if len(t["boxes"])]
            loss = sum(model([images[i] for i in keep], [tv_targets[i] for i in keep]).values())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        frames += video.shape[0] * video.shape[1]
        if step % 50 == 0:
            log(f"  {name}: step {step}, {elapsed:.0f} s, loss {loss.item():.3f}")
    return {
        "steps": step,
        "planned_steps": planned,
        "train_frames": frames,
        "train_s": time.perf_counter() - start,
    }


def input_size(model: nn.Module, seq) -> tuple[int, int]:
    """(H, W) of the images ``model`` computes on for a frame of ``seq``: SoraDet's
    ``detect.size``, a torchvision model's transform output."""
    if isinstance(model, SoraDet):
        return tuple(model.cfg.size)
    images, _ = model.transform([torch.zeros(3, seq.height, seq.width)])
    return tuple(images.tensors.shape[-2:])


def tv_detect(model: nn.Module, name: str, device: str = "cpu"):
    """Per-frame detection with a torchvision model, boxes in the sequence's pixels."""

    @torch.no_grad()
    def detect(seq):
        store = FrameStore(seq, (seq.height, seq.width), cache=False)
        out = {}
        for f in range(1, seq.num_frames + 1):
            image = store.get(f).to(device).float() / 255
            d = model([image])[0]
            labels = d["labels"] - int(name != "fcos_resnet50_fpn")
            out[f] = {
                "boxes": d["boxes"].cpu(),
                "scores": d["scores"].cpu(),
                "labels": labels.cpu(),
            }
        return out

    return detect


@torch.no_grad()
def stream_fps(step, frame, seconds: float = 5.0) -> float:
    for _ in range(3):
        step(frame)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(frame)
        n += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def scores(test, detect) -> dict:
    """mAP50, mAP, visible/occluded mAP50 and the wholly hidden boxes found (score >= 0.3) of
    ``detect`` over ``test``."""
    metrics, _, dets = score_sequences(test, detect)
    vis = metrics["visibility"]
    hidden = found_by_visibility(test, dets, 0.3)["hidden"]
    return {
        "map50": metrics["map_50"],
        "map": metrics["map"],
        "visible50": vis["visible"]["map_50"],
        "occluded50": vis["occluded"]["map_50"],
        "hidden_found": hidden["found_any_class_at_threshold"],
    }


def run_one(name: str, args, train_set, test, classes, log, extra_test=None) -> dict:
    torch.manual_seed(args.seed)
    device = args.device
    config = default_config("detect")
    config.model.num_classes = len(classes)
    budget = {
        "device": device,
        "clips": args.clips,
        "workers": args.workers,
        "fit_seconds": args.fit_seconds,
    }
    if name in ("SoraDet", "per-frame"):
        config.detect.temporal = "convgru" if name == "SoraDet" else "none"
        if args.memory_warmup is not None:
            config.detect.memory_warmup = args.memory_warmup
        if args.forecast is not None:
            config.detect.forecast = args.forecast
        if args.frame_dropout is not None:
            config.detect.frame_dropout = args.frame_dropout
        if args.set:
            config = apply_overrides(config, args.set)
        h, w = config.detect.size  # after the overrides: GFLOPs and speed at the trained size
        model = SoraDet(config.model, config.detect).to(device)
        fit = train_budget(
            name, model, train_set, args.seconds, args.lr, log, args.steps, args.seed, **budget
        )
        model.eval()
        run = Path(args.work) / name
        from sora.models.store import save_model

        save_model(model, config, classes, run / "model")
        detector = Detector(run, device=device)

        def detect(seq):
            return detect_sequence(detector, seq)

        frame = torch.zeros(1, 3, h, w, device=device)
        state = model.init_state(1, device)
        gflops = count_flops(model.step, frame, state) / 1e9

        def step(x):
            nonlocal state
            out, state = model.step(x, state)
            model.detect(out, h, w)

        fps = stream_fps(step, frame)
    else:
        size = (test[0].height, test[0].width) if args.peer_size == "data" else None
        model = tv_model(name, len(classes), size).to(device)
        fit = train_budget(
            name, model, train_set, args.seconds, args.lr, log, args.steps, args.seed, **budget
        )
        model.eval()
        detect = tv_detect(model, name, device)
        frame = [torch.zeros(3, test[0].height, test[0].width, device=device)]
        gflops = count_flops(model, frame) / 1e9
        fps = stream_fps(lambda x: model(x), frame)
    row = {"name": name, **scores(test, detect)}
    if extra_test:
        row.update({f"{k}_extra": v for k, v in scores(extra_test, detect).items()})
    row.update(
        {
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": gflops,
            "stream_fps": fps,
            **fit,
            "device": device,
            "clips": args.clips,
            "input": "x".join(map(str, input_size(model, test[0]))),
        }
    )
    log(f"{name}: {json.dumps(row)}")
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| model | test mAP50 | mAP@[.5:.95] | mAP50 visible | mAP50 occluded | hidden found "
        "| params (M) | GFLOPs/frame | streamed frames/s | steps in budget |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def hidden(r: dict) -> str:
        return "–" if r.get("hidden_found") is None else f"{r['hidden_found']:.3f}"

    return head + "\n".join(
        f"| {r['name']} | {r['map50']:.3f} | {r['map']:.3f} | {r['visible50']:.3f} "
        f"| {r['occluded50']:.3f} | {hidden(r)} | {r['params_m']:.2f} | {r['gflops']:.3f} "
        f"| {r['stream_fps']:.0f} | {r['steps']} |"
        for r in rows
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--seconds", type=float, default=300, help="training budget per model (default 300)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train every model for this many steps instead of --seconds (default: 0, wall time)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="initial weights and batch order (default 0)"
    )
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument(
        "--data",
        default="runs/motionshapes-det-bench",
        help="MotionShapes-Det folder (made if missing)",
    )
    p.add_argument("--train", type=int, default=96, help="training sequences (default 96)")
    p.add_argument("--test", type=int, default=8, help="test sequences (default 8)")
    p.add_argument("--work", default="runs/bench-detect", help="where the SoraDet models are saved")
    p.add_argument("--only", nargs="*", help=f"models to run (default all: {', '.join(ORDER)})")
    p.add_argument(
        "--memory-warmup",
        type=float,
        help="share of SoraDet's budget trained without its recurrent cells "
        "(default: detect.memory_warmup)",
    )
    p.add_argument(
        "--forecast", type=float, help="SoraDet's forecast loss weight (default: detect.forecast)"
    )
    p.add_argument(
        "--frame-dropout",
        type=float,
        help="SoraDet's frame dropout once its cells are on (default: detect.frame_dropout)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for SoraDet and per-frame, e.g. detect.forecast_score=0; "
        "the training clips follow it too (detect.clip_len, detect.clip_stride) "
        "(repeatable; default: none)",
    )
    p.add_argument(
        "--device", default="cpu", help="where models train and stream, e.g. cuda (default cpu)"
    )
    p.add_argument(
        "--clips", type=int, default=8, help="clips of 8 frames per training step (default 8)"
    )
    p.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers for the batches (default 0)"
    )
    p.add_argument(
        "--fit-seconds",
        type=float,
        default=0,
        help="with --steps: fewer steps when the speed so far says the run would take longer "
        "than this many seconds (default 0: never)",
    )
    p.add_argument(
        "--extra-test",
        help="a further MotionShapes-Det folder whose test split is scored too, e.g. from "
        "`sora data synth --task detect --train 0 --val 0 --test 48 --seed 7` (default: none)",
    )
    p.add_argument(
        "--peer-size",
        choices=["native", "data"],
        default="native",
        help="input size of the torchvision models: their own (native: SSDlite 320x320, "
        "Faster R-CNN 320, FCOS 192-256) or the frames' own (data: 96x128 here, as SoraDet) "
        "(default native)",
    )
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = p.parse_args()
    torch.set_flush_denormal(True)
    data = synth_det.generate(args.data, train=args.train, val=4, test=args.test, frames=90)
    config = default_config("detect")
    if args.set:  # e.g. detect.clip_len: the training clips follow the overrides
        config = apply_overrides(config, args.set)
    train_set = clip_dataset(config, read_split(data, "train"), train=True)
    test = read_split(data, "test")
    classes = list(synth_det.CLASSES)
    names = args.only or ORDER
    extra = read_split(args.extra_test, "test") if args.extra_test else None
    rows = [run_one(n, args, train_set, test, classes, print, extra) for n in names]
    rows = merge_rows("detection", rows, ORDER, save=not args.no_write)
    text = table(rows)
    print(text)
    if not args.no_write:
        flag = f"--steps {args.steps}" if args.steps else f"--seconds {args.seconds:g}"
        budget = f"{args.steps}-step" if args.steps else f"{args.seconds:g}-s"
        flag += " --peer-size data" if args.peer_size == "data" else ""
        write_section(
            "detection",
            f"## Detection on MotionShapes-Det ({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/detection.py {flag}`: {args.train} training "
            f"sequences of 90 frames, {args.test} test sequences streamed whole; the same "
            f"{budget} training budget, recipe and 64 frames per step for every model, "
            "all from scratch. SoraDet and per-frame at 96x128; torchvision models "
            + (
                "at 96x128 too (`--peer-size data`). "
                if args.peer_size == "data"
                else "at their own input sizes (ssdlite 320x320, Faster R-CNN 320x448, FCOS "
                "192x256). "
            )
            + "Occluded: boxes with visibility < 0.5.\n\n"
            + text,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
