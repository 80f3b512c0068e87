"""Per-track actions on MotionShapes-Det's action variant: the tube classifier on the
ground truth's tubes, streamed along perfect tracks, and along SoraDet + ByteTrack tracks.

Data: ``sora data synth --task detect --actions`` (``--train``/8/16 sequences of 90
frames; glide, zigzag, stop_go, pulse), made once into ``--data``. Tubes: ``sora data
tubes`` (64 px, margin 1.0). Classifier: ``sora train`` on the tubes (classification
defaults with ``data.sampler=random``, ``data.fps=15``, ``data.clip_len=24``,
``data.crop=[56,56]``, ``--epochs``, no early stop). ``sampler=random`` trains on
contiguous clips, which is what a stream gives; the default TSN sampling spreads a clip
over the whole tube, and such a model scores about 0.32 when streamed. Then on the test
split:

1. the classifier on the test tubes as ``sora eval`` scores it (3 clips per tube averaged);
2. streamed along the **ground-truth tracks** (:class:`ActionTagger`, a state per track,
   reset every 24 steps, window ends averaged): the per-track ceiling;
3. streamed along the tracks of SoraDet and its per-frame ablation (the models of
   ``benchmarks/detection.py``, trained on the plain data) with ByteTrack: per-track
   accuracy and frame-level "box + id + action" accuracy (``sora eval --task track
   --actions``'s figures).

    python benchmarks/track_actions.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import machine, write_section
from tracking import track_all, val_threshold

from sora.config import apply_overrides, default_config
from sora.data import synth_det
from sora.data.mot import dataset_labels, read_split
from sora.data.tubes import classifier_settings, write_tubes
from sora.evaluation.detection import detect_sequence
from sora.evaluation.evaluate import evaluate
from sora.evaluation.tracking import (
    action_scores,
    ground_truth_tracks,
    score_tracking,
    tag_sequence,
)
from sora.inference.actions import ActionTagger
from sora.inference.detector import Detector
from sora.tasks.train import train

SETTINGS = classifier_settings()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="runs/motionshapes-det-actions", help="made if missing")
    ap.add_argument("--work", default="runs/bench-actions", help="tubes and classifier")
    ap.add_argument("--detectors", default="runs/bench-detect", help="detection.py's models")
    ap.add_argument("--train", type=int, default=96, help="training sequences (default 96)")
    ap.add_argument("--epochs", type=int, default=30, help="classifier epochs (default 30)")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    data = synth_det.generate(args.data, train=args.train, val=8, test=16, actions=True)
    work, tubes = Path(args.work), Path(args.work) / "tubes"
    if not tubes.is_dir():
        print(write_tubes(data, tubes))
    run = work / f"classifier-contiguous-{args.epochs}"
    if not (run / "model" / "config.yaml").is_file():
        overrides = [*SETTINGS, f"train.epochs={args.epochs}", "train.early_stop_patience=0"]
        t0 = time.perf_counter()
        train(apply_overrides(default_config("classify"), overrides), tubes, run, progress=False)
        print(f"classifier trained in {time.perf_counter() - t0:.0f} s")
    tube_acc = evaluate(run, tubes, split="test")["accuracy"]
    labels = dataset_labels(data)
    val, test = read_split(data, "val", labels), read_split(data, "test", labels)
    tagger = ActionTagger(run, device="cpu")
    rows = [f"| test tubes (`sora eval` on the tube videos) | {tube_acc:.3f} | | | |"]
    perfect = {s.name: ground_truth_tracks(s) for s in test}
    for s in test:
        tag_sequence(s, perfect[s.name], tagger)
    a = action_scores(test, perfect, tagger.classes)
    rows.append(
        f"| ground-truth tracks, streamed | {a['track_accuracy']:.3f} "
        f"| {a['frame_accuracy']:.3f} | 1.000 | {a['confusion']} |"
    )
    print(rows[-1], flush=True)
    for name in ("SoraDet", "per-frame"):
        detector = Detector(Path(args.detectors) / name, device="cpu")
        dets = {s.name: detect_sequence(detector, s) for s in test}
        tracks = track_all(test, dets, val_threshold(detector, val))
        for s in test:
            tag_sequence(s, tracks[s.name], tagger)
        a = action_scores(test, tracks, tagger.classes)
        idf1 = score_tracking(test, tracks, labels)["IDF1"]
        rows.append(
            f"| {name} + ByteTrack tracks, streamed | {a['track_accuracy']:.3f} "
            f"({a['tracks_matched']}/{a['objects']} tracked) | {a['frame_accuracy']:.3f} "
            f"| {idf1:.3f} | {a['confusion']} |"
        )
        print(rows[-1], flush=True)
    table = (
        "| tubes from | per-track action accuracy | box + id + action per frame | IDF1 "
        f"| confusion (rows: true {', '.join(tagger.classes)}) |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )
    print(table)
    if not args.no_write:
        write_section(
            "track-actions",
            f"## Per-track actions ({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/track_actions.py --epochs {args.epochs}`: MotionShapes-Det "
            f"with actions, {args.train} training sequences, test split (16 sequences; "
            "chance 0.25).\n\n" + table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
