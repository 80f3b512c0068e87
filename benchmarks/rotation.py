"""Rotation direction on its own: rotate_cw vs rotate_ccw from MotionShapes, without and with
the flow input (``model.input_flow``, normal or block-matching flow), everything else as the
demo (mirror and time-reversal augmentation with label swap). Trains with
``sora.tasks.train.train`` and tests with ``sora.evaluation.evaluate.evaluate``; writes the
table into benchmarks/RESULTS.md.

    python benchmarks/rotation.py [--epochs 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write_section

from sora.config import apply_overrides
from sora.data import synth
from sora.demo import demo_config
from sora.evaluation.evaluate import evaluate
from sora.tasks.train import read_metrics_csv, train

PAIR = ["rotate_cw", "rotate_ccw"]
VARIANTS = {
    "frame + difference": ["model.input_flow=false"],
    "+ normal flow": ["model.input_flow=true", "model.flow=normal"],
    "+ block-matching flow": ["model.input_flow=true", "model.flow=match"],
}


def subset(data: Path, root: Path) -> Path:
    """A folder-per-class view of ``data`` holding only the rotation pair (symlinks)."""
    for split in ("train", "val", "test"):
        for c in PAIR:
            link = root / split / c
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((data / split / c).resolve(), target_is_directory=True)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="runs/motionshapes", help="MotionShapes (made if missing)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    synth.generate(args.data, train=80, val=10, test=20, seed=0)
    tmp = Path(tempfile.mkdtemp())
    data = subset(Path(args.data), tmp / "data")
    rows = []
    for name, overrides in VARIANTS.items():
        config = demo_config()
        config.model.num_classes = 2
        config.data.reverse_pairs = config.data.hflip_pairs = [PAIR]
        config.train.epochs = args.epochs
        config.train.early_stop_patience = args.epochs  # the whole budget, for both
        config = apply_overrides(config, overrides)
        run = tmp / f"run{len(rows)}"
        t = time.perf_counter()
        train(config, data, run, progress=False)
        seconds = time.perf_counter() - t
        curve = read_metrics_csv(run / "metrics.csv")
        above = [int(r["epoch"]) + 1 for r in curve if r.get("val_acc", 0) >= 0.75]
        row = {
            "name": name,
            "test_acc": evaluate(run, data, split="test")["accuracy"],
            "best_val": max(r.get("val_acc", 0) for r in curve),
            "final_train": curve[-1].get("train_acc", float("nan")),
            "first_epoch_val_075": above[0] if above else None,
            "seconds": seconds,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    table = (
        "| input | test acc (40 videos) | best val | last train acc | first epoch with val >= 0.75 "
        "| training s |\n|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {r['name']} | {r['test_acc']:.3f} | {r['best_val']:.2f} | {r['final_train']:.2f} "
            f"| {r['first_epoch_val_075'] or 'never'} | {r['seconds']:.0f} |"
            for r in rows
        )
    )
    print(table)
    if not args.no_write:
        write_section(
            "rotation",
            f"## Rotation direction alone ({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/rotation.py --epochs {args.epochs}`: rotate_cw vs rotate_ccw "
            "(80/10/20 videos per class), demo recipe and augmentation, "
            f"{args.epochs} epochs each. With the flow on, the model also fuses the grid-pooled "
            "flow and passes the flow's mean, turn and spread straight to the RNN "
            "(`flow_moments`).\n\n" + table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
