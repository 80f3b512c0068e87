"""Ablations of SoraNet on MotionShapes: scales (single vs multi), time (mean vs GRU vs LSTM)
and fusion (concat vs sum), each trained with the same data, recipe and wall-time budget
as benchmarks/peers.py, in one run. Writes the table into benchmarks/RESULTS.md.

    python benchmarks/ablations.py [--seconds 200]
"""

from __future__ import annotations

import sys
import time

from common import ABLATIONS, machine, merge_rows, run_suite, suite_arguments, write_section


def table(rows: list[dict]) -> str:
    head = (
        "| variant | test acc | macro recall | params (M) | GFLOPs/clip | epochs in budget "
        "| train clips/s | streamed frames/s | change |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['name']} | {r['accuracy']:.3f} | {r['macro_recall']:.3f} | {r['params'] / 1e6:.2f} "
        f"| {r['gflops']:.3f} | {r['epochs']:.1f} | {r['train_clips_s']:.1f} "
        f"| {r['stream_fps']:.0f} | {r['note']} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main() -> int:
    args = suite_arguments(__doc__.splitlines()[0]).parse_args()
    rows = merge_rows(
        "ablations", run_suite(ABLATIONS, args), [s.name for s in ABLATIONS], save=not args.no_write
    )
    text = table(rows)
    print(text)
    if not args.no_write:
        write_section(
            "ablations",
            f"## SoraNet ablations on MotionShapes ({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/ablations.py --seconds {args.seconds:g}`: as the peers table, "
            "every variant with the same data, recipe and budget.\n\n" + text,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
