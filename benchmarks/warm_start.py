"""SoraDet warm-started from its per-frame ablation, against the ablation trained as long.

Both start from the per-frame model ``benchmarks/detection.py`` trained (``--work``): one
becomes a SoraDet (the ConvGRU cells added, their output gates at 0, so it starts as the
per-frame model exactly), the other stays per-frame; each then trains ``--seconds`` more with
the same recipe (``detection.train_budget``, peak lr ``--lr``). Scored on the test split:
COCO mAP50 (all, occluded boxes) and ByteTrack tracks by TrackEval, each model's high
threshold being its best-F1 one on val (the ``sora track`` defaults otherwise).

    python benchmarks/warm_start.py [--seconds 120] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from common import machine, write_section
from detection import train_budget
from tracking import track_all, val_threshold

from sora.config import default_config
from sora.data.mot import dataset_labels, read_split
from sora.evaluation.detection import detect_sequence, score_sequences
from sora.evaluation.tracking import score_tracking
from sora.inference.detector import Detector
from sora.models.soradet import SoraDet
from sora.models.store import load_model, save_model
from sora.tasks.detection import clip_dataset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120, help="extra training (default 120)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    ap.add_argument("--data", default="runs/motionshapes-det-bench", help="MotionShapes-Det")
    ap.add_argument("--work", default="runs/bench-detect", help="benchmarks/detection.py's models")
    ap.add_argument(
        "--frame-dropout",
        type=float,
        default=0.0,
        help="detect.frame_dropout for the SoraDet's clips (default 0)",
    )
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    data, work = Path(args.data), Path(args.work)
    if not (work / "per-frame" / "model" / "config.yaml").is_file():
        print(f"{work / 'per-frame'}: no saved model; run benchmarks/detection.py first")
        return 1
    labels = dataset_labels(data)
    config0 = default_config("detect")
    train_set = clip_dataset(config0, read_split(data, "train"), train=True)
    val, test = read_split(data, "val", labels), read_split(data, "test", labels)
    base, config, classes = load_model(work / "per-frame" / "model")
    rows = []
    for name, temporal in (("SoraDet, warm-started", "convgru"), ("per-frame, continued", "none")):
        torch.manual_seed(0)
        c = copy.deepcopy(config)
        c.detect.temporal = temporal
        c.detect.memory_warmup = 0.0  # the per-frame start is the warm-up: cells from step 1
        c.detect.frame_dropout = args.frame_dropout  # train_budget applies it to SoraDet only
        model = SoraDet(c.model, c.detect)
        model.load_state_dict(base.state_dict(), strict=False)  # the ConvGRU cells are new
        fit = train_budget(name, model, train_set, args.seconds, args.lr, lambda *_: None)
        model.eval()
        tag = f"-dropout{args.frame_dropout:g}" if args.frame_dropout else ""
        out = work / (f"warm-SoraDet{tag}" if temporal == "convgru" else "per-frame-continued")
        save_model(model, c, classes, out / "model")
        detector = Detector(out, device="cpu")
        m, _, dets = score_sequences(test, lambda s, d=detector: detect_sequence(d, s))
        tracks = track_all(test, dets, val_threshold(detector, val))
        t = score_tracking(test, tracks, labels)
        rows.append(
            f"| {name} | {fit['steps']} | {m['map_50']:.3f} "
            f"| {m['visibility']['occluded']['map_50']:.3f} | {t['HOTA']:.3f} | {t['IDF1']:.3f} "
            f"| {t['IDSW']} | {t['id_switches']['after_occlusion']} |"
        )
        print(rows[-1], flush=True)
    table = (
        "| model | extra steps | mAP50 | mAP50 occluded | HOTA | IDF1 | ID switches "
        "| after occl. |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(table)
    if not args.no_write:
        drop = f" --frame-dropout {args.frame_dropout:g}" if args.frame_dropout else ""
        write_section(
            "warm-start" + ("-dropout" if drop else ""),
            f"## SoraDet warm-started from the per-frame model{drop and ', frame dropout'} "
            f"({time.strftime('%Y-%m-%d')}, {machine()})\n\n`python benchmarks/warm_start.py "
            f"--seconds {args.seconds:g} --lr {args.lr:g}{drop}`: both from the 240-s per-frame model of "
            "`benchmarks/detection.py`, the same extra budget; test split, ByteTrack, "
            "TrackEval.\n\n" + table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
