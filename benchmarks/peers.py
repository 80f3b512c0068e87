"""SoraNet against peer video models on MotionShapes, side by side in one run.

Every model gets the same data (the demo's MotionShapes: 80/10/20 videos per class, 16
frames of 64x80 at 8 fps, mirror and time-reversal augmentation), the same recipe (AdamW,
lr 3e-3, warm-up + cosine over the budget, gradient clipping 1.0, batch 16) and the same
**wall-time budget** (``--seconds``, at most ``--max-epochs`` epochs) on this machine, then
is tested on one uniform view per test video. Costs are measured in a fresh process per
model. Writes the table into benchmarks/RESULTS.md.

    pip install -e '.[bench]'          # pytorchvideo, for X3D-XS
    python benchmarks/peers.py [--seconds 200] [--only SoraNet r3d_18]
"""

from __future__ import annotations

import sys
import time

from common import PEERS, machine, merge_rows, run_suite, suite_arguments, write_section


def table(rows: list[dict]) -> str:
    head = (
        "| model | test acc | macro recall | params (M) | GFLOPs/clip | epochs in budget "
        "| train clips/s | infer clips/s | streamed frames/s | peak RSS (MB) | what |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['name']} | {r['accuracy']:.3f} | {r['macro_recall']:.3f} | {r['params'] / 1e6:.2f} "
        f"| {r['gflops']:.2f} | {r['epochs']:.2f} | {r['train_clips_s']:.1f} "
        f"| {r['infer_clips_s']:.1f} | {r['stream_fps']:.1f} ({r['stream_mode']}) "
        f"| {r['peak_rss_mb']:.0f} | {r['note']} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main() -> int:
    args = suite_arguments(__doc__.splitlines()[0]).parse_args()
    rows = merge_rows(
        "peers", run_suite(PEERS, args), [s.name for s in PEERS], save=not args.no_write
    )
    text = table(rows)
    print(text)
    if not args.no_write:
        write_section(
            "peers",
            f"## Peers on MotionShapes ({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/peers.py --seconds {args.seconds:g}`: same data, recipe "
            f"and wall-time budget ({args.seconds:g} s of training, at most "
            f"{args.max_epochs} epochs) for every model; 1 test view per video (200 "
            "videos). Training/inference clips/s at batch 16, streamed frames/s at batch 1; "
            "peak RSS of a fresh process that builds the model and runs those measurements.\n\n"
            + text,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
