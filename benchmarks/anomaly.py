"""Anomaly detection on MotionShapes-Anomaly: Sora against two baselines, per anomaly type.

* **Sora**: ``sora train`` on ``training/`` with the defaults (SoraAnomaly: multi-scale CNN,
  ConvGRU over the cell grid, next-frame prediction error per cell, the persistence map
  (what stays away from the normal background) and the dwell map (how long a cell has stayed
  occupied)), ``sora eval``'s code; and the same model scored with ``dwell: 0``, then also
  ``persist: 0`` (**prediction error only**), to show what each map brings.
* **frame difference**: per cell, the mean absolute difference of consecutive frames; and
  **flow magnitude**: per cell, the mean length of the block-matching flow
  (``sora.models.soranet.block_flow``). No learning.
* **per-frame autoencoder**: the same network with ``temporal=none``, ``target=current``,
  ``motion=false``, ``persist=0``: it rebuilds each frame from its own features, no time at
  all.

Every method gets the same causal treatment: each cell standardized with its mean and spread
on the held-out end of the training videos, the maximum over cells, then the same smoothing
(``anomaly.smooth``). Scores: ``sora.evaluation.anomaly.anomaly_metrics`` on ``testing/``.

``--fresh DIR`` scores 14 more testing videos of the same scene as well, which nothing was
trained, calibrated or chosen on (``generate(DIR, train=0, test=28)``, the last 14; the first
14 are the set's own), calibrated on the set's own normal videos as above.

    python benchmarks/anomaly.py [--data runs/motionshapes-anomaly] [--work runs/bench-anomaly]
        [--fresh DIR]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from common import machine, write_section
from torch.nn import functional as F

from sora.config import default_config
from sora.data.anomaly import fit_labels, read_anomaly_split
from sora.data.synth_anomaly import generate
from sora.evaluation.anomaly import anomaly_metrics
from sora.models.anomaly import ema_over_time, smoothing_rate
from sora.models.soranet import block_flow
from sora.models.store import load_model
from sora.tasks.anomaly import decode, normalize, stream
from sora.tasks.train import train

METHODS = (
    "Sora",
    "Sora without the dwell map",
    "Sora, prediction error only",
    "frame difference",
    "flow magnitude",
    "per-frame autoencoder",
)


def _cells(frames: torch.Tensor, config, kind: str) -> torch.Tensor:
    """uint8 ``(T, 3, H, W)`` -> per-cell raw score ``(T, h, w)`` of a no-learning baseline."""
    x = normalize(frames, config)
    prev = torch.cat([x[:1], x[:-1]])
    grid = (config.anomaly.size[0] // 16, config.anomaly.size[1] // 16)
    if kind == "frame difference":
        m = (x - prev).abs().mean(1, keepdim=True)
    else:
        m = torch.cat([block_flow(prev[i : i + 64], x[i : i + 64]) for i in range(0, len(x), 64)])
        m = m.norm(dim=1, keepdim=True)
    return F.adaptive_avg_pool2d(m, grid)[:, 0]


def _baseline_scores(data: Path, config, kind: str, videos) -> list[np.ndarray]:
    cal = []
    for v in read_anomaly_split(data, "training"):
        c = _cells(decode(v.path, config), config, kind)
        cal.append(c[-max(1, math.ceil(len(c) * config.anomaly.val_fraction)) :])
    cal = torch.cat(cal)
    mu, sd = cal.mean(0), cal.std(0)
    sd = sd.clamp_min(0.1 * float(sd.mean()) + 1e-8)
    out = []
    for v in videos:
        z = (_cells(decode(v.path, config), config, kind) - mu) / sd
        z[0] = 0
        raw = z.flatten(1).amax(1)[None]  # the model's own smoothing, from the first frame
        out.append(ema_over_time(raw, smoothing_rate(config.anomaly.smooth), raw[:, 0])[0].numpy())
    return out


def _trained(data: Path, work: Path, name: str, overrides: dict, epochs: int) -> Path:
    run = work / name.replace(" ", "-")
    if not (run / "model" / "model.safetensors").is_file():
        config = default_config("anomaly")
        config.train.epochs = epochs
        for key, value in overrides.items():
            setattr(config.anomaly, key, value)
        train(config, data, run, progress=False)
    return run


def score_all(data: Path, runs: dict, videos) -> dict[str, list[np.ndarray]]:
    """Every method's frame scores on ``videos`` (baselines calibrated on ``data``'s normal
    videos, the trained models on their own held-out frames)."""
    config = load_model(runs["Sora"] / "model")[1]
    scores = {}
    for name in METHODS:
        if name in runs or name.startswith("Sora"):
            model, cfg, _ = load_model(runs.get(name, runs["Sora"]) / "model")
            if name in ("Sora without the dwell map", "Sora, prediction error only"):
                model.cfg.dwell = 0.0
            if name == "Sora, prediction error only":
                model.cfg.persist = 0.0
            scores[name] = [
                stream(model, decode(v.path, cfg), cfg)["score"].numpy() for v in videos
            ]
        else:
            scores[name] = _baseline_scores(data, config, name, videos)
    return scores


def table(scores: dict, videos) -> tuple[list[str], dict]:
    """The markdown rows of every method's metrics on ``videos``, and Sora's metrics."""
    labels = [fit_labels(v, len(s)) for v, s in zip(videos, scores["Sora"], strict=True)]
    metrics = {n: anomaly_metrics(scores[n], videos, labels, fps=15.0) for n in METHODS}
    types = sorted(metrics["Sora"]["per_type"])
    head = (
        "| method | AUC micro | AUC macro | EER | events at 1 FA / 10 min | "
        + " | ".join(types)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(types))]
    for n in METHODS:
        m = metrics[n]
        rate = m["detection_rate_at_1_false_alarm_per_10_min"]
        cells = [f"{m['per_type'][t]['auc']:.3f}" for t in types]
        lines.append(
            f"| {n} | {m['auc_micro']:.3f} | {m['auc_macro']:.3f} | {m['eer']:.3f} | "
            f"{'n/a' if rate is None else f'{rate:.2f}'} | " + " | ".join(cells) + " |"
        )
    return lines, metrics["Sora"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/motionshapes-anomaly")
    p.add_argument("--work", default="runs/bench-anomaly")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--fresh", help="also 14 fresh testing videos, generated into this folder")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = p.parse_args()
    data, work = Path(args.data), Path(args.work)
    generate(data)
    videos = read_anomaly_split(data, "testing")
    runs = {
        "Sora": _trained(data, work, "Sora", {}, args.epochs),
        "per-frame autoencoder": _trained(
            data,
            work,
            "per-frame autoencoder",
            {
                "temporal": "none",
                "target": "current",
                "motion": False,
                "persist": 0.0,
                "dwell": 0.0,
            },
            args.epochs,
        ),
    }
    lines, m = table(score_all(data, runs, videos), videos)
    fresh_lines = []
    if args.fresh:
        generate(Path(args.fresh), train=0, test=28)
        new = [v for v in read_anomaly_split(args.fresh, "testing") if int(v.name[-3:]) >= 14]
        rows, f = table(score_all(data, runs, new), new)
        fresh_lines = [
            "",
            f"The same models on {f['num_videos']} fresh testing videos of the scene "
            f"(`--fresh`: {f['num_frames']} frames, {f['anomalous_frames']} anomalous), "
            "which nothing was trained, calibrated or chosen on:",
            "",
            *rows,
        ]
    text = "\n".join(
        [
            "## Anomaly detection (MotionShapes-Anomaly)",
            "",
            f"`python benchmarks/anomaly.py{' --fresh DIR' if args.fresh else ''}` on "
            f"{machine()}: {m['num_videos']} testing videos, "
            f"{m['num_frames']} frames ({m['anomalous_frames']} anomalous), each model "
            f"{args.epochs} epochs on the 10 normal training videos. Frame-level AUC (micro: all "
            "frames; macro: mean per video), equal error rate, share of anomaly events "
            "detected at 1 false alarm per 10 minutes, and the AUC per anomaly type (normal "
            "frames against that type's). All scores causal (no per-video normalization).",
            "",
            *lines,
            *fresh_lines,
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section("anomaly", text)


if __name__ == "__main__":
    main()
