"""Few labels: SoraNet from scratch vs after self-supervised pretraining, on MotionShapes.

1. ``sora pretrain`` on every MotionShapes training video, labels ignored (``--pre-epochs``).
2. For n in ``--labels`` (videos per class): a labelled subset, the first n training videos
   of each class (a folder of symbolic links; val and test are the full splits), trained with
   the demo's config from scratch and with ``--init`` from step 1. Every run gets about the
   same number of steps (``epochs = --epochs * 20 / n``, no early stopping), so small subsets
   are not starved.
3. Test accuracy of each (``sora eval``, 3 views), next to the fully labelled demo figure
   given with ``--full`` (default: the demo's 0.980 at 12 epochs, seed 0).

The issue's target: pretraining closes at least half the gap between 10 labelled videos per
class and full labels, i.e. ``(pre_10 - scratch_10) / (full - scratch_10) >= 0.5``.

    python benchmarks/pretrain.py [--labels 5 10 20] [--pre-epochs 24] [--epochs 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import machine, write_section

from sora.config import Config
from sora.data import synth
from sora.demo import demo_config
from sora.evaluation.evaluate import evaluate
from sora.tasks.train import train


def labelled_subset(data: Path, n: int, out: Path) -> Path:
    """``out/train/<class>/`` links to the first ``n`` videos of each class; val and test link
    to the full splits."""
    for label_dir in sorted((data / "train").iterdir()):
        target = out / "train" / label_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for video in sorted(label_dir.glob("*.mp4"))[:n]:
            link = target / video.name
            if not link.exists():
                link.symlink_to(video.resolve())
    for split in ("val", "test"):
        if not (out / split).exists():
            (out / split).symlink_to((data / split).resolve())
    return out


def fit(config: Config, data: Path, run: Path, init: Path | None = None) -> dict:
    if (run / "train_summary.json").is_file():  # done before: reuse (delete to rerun)
        return json.loads((run / "train_summary.json").read_text())
    return train(config, data, run, progress=False, init=init)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="runs/motionshapes", help="MotionShapes (made if missing)")
    ap.add_argument("--work", default="runs/bench-pretrain", help="runs go here (reused)")
    ap.add_argument("--labels", type=int, nargs="+", default=[5, 10, 20], help="videos per class")
    ap.add_argument("--pre-epochs", type=int, default=24, help="pretraining epochs (default 24)")
    ap.add_argument("--epochs", type=int, default=16, help="epochs at 20 per class (default 16)")
    ap.add_argument("--full", type=float, default=0.980, help="fully labelled test accuracy")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    data = synth.generate(args.data)
    work = Path(args.work)
    t0 = time.perf_counter()
    pre = demo_config()
    pre.task = "pretrain"
    pre.train.epochs = args.pre_epochs
    pre.data.reverse_pairs, pre.data.hflip_pairs = [], []  # label-aware: no labels here
    pre_run = work / "pretrain"
    summary = fit(pre, data / "train", pre_run)
    pre_seconds = summary.get("train_seconds", time.perf_counter() - t0)  # also when reused
    print(f"pretrained in {pre_seconds:.0f} s: {summary.get('best_val_acc')}", flush=True)
    rows = []
    for n in args.labels:
        subset = labelled_subset(data, n, work / f"labels-{n}")
        row = {"n": n}
        for name, init in (("scratch", None), ("pretrained", pre_run)):
            config = demo_config()
            config.train.epochs = max(1, round(args.epochs * 20 / n))
            # all epochs for every run: with early stopping (patience 5 on 100 noisy val
            # videos) one from-scratch run stopped at 14 of 32 epochs at 0.365, 0.510 without
            config.train.early_stop_patience = 0
            run = work / f"{name}-{n}"
            start = time.perf_counter()
            fit(config, subset, run, init=init)
            metrics = evaluate(run, subset, split="test")
            row[name] = metrics["accuracy"]
            row[f"{name}_seconds"] = time.perf_counter() - start
            print(f"n={n} {name}: test accuracy {metrics['accuracy']:.3f}", flush=True)
        rows.append(row)
    lines = [
        "| labelled videos per class | from scratch | after pretraining | gain |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['n']} | {r['scratch']:.3f} | {r['pretrained']:.3f} "
        f"| {r['pretrained'] - r['scratch']:+.3f} |"
        for r in rows
    ]
    lines.append(f"| 80 (all; the demo, 12 epochs) | {args.full:.3f} | | |")
    ten = next((r for r in rows if r["n"] == 10), None)
    closed = ""
    if ten is not None and args.full > ten["scratch"]:
        share = (ten["pretrained"] - ten["scratch"]) / (args.full - ten["scratch"])
        closed = (
            f"\n\nAt 10 per class pretraining closes {share:.0%} of the gap to full labels "
            "(target: at least 50%)."
        )
    table = "\n".join(lines) + closed
    print(table)
    if not args.no_write:
        write_section(
            "pretrain",
            f"## Few labels, with and without pretraining ({time.strftime('%Y-%m-%d')}, "
            f"{machine()})\n\n`python benchmarks/pretrain.py --pre-epochs {args.pre_epochs} "
            f"--epochs {args.epochs}`: `sora pretrain` on the 800 MotionShapes training "
            f"videos, labels ignored ({args.pre_epochs} epochs, {pre_seconds:.0f} s of "
            "training); then "
            "the demo's config on the first n training videos of each class, from scratch and "
            f"from the pretrained weights, {args.epochs}·20/n epochs each; test accuracy on "
            "the 200 test videos (3 views).\n\n" + table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
