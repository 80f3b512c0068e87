"""SoraDet streamed over a 10-minute video: frames per second and memory over time.

The 10-minute MotionShapes recording of ``benchmarks/streaming.py`` (160x120, 20 fps,
H.264; made once and cached) goes through ``sora.inference.Detector.detect_video``, the
path of ``sora predict`` on a detection run: decode, resize to 96x128, one SoraDet step per
frame with the ConvGRU state carried, boxes decoded and NMS'd per frame. The model is the
one ``benchmarks/detection.py`` trained (``runs/bench-detect/SoraDet``), or, with
``--random``, the default config with random weights (no box scores 0.3 then, so that row
costs the network and decoding only). Boxes are kept from a score of 0.3. The trained model
was trained on MotionShapes-Det, not on this recording: its boxes here are mostly wrong,
which is beside the point (they still go through NMS). A thread samples RSS every 0.2 s. Writes the table into benchmarks/RESULTS.md and
the curve into benchmarks/detection_stream_rss.png.

    python benchmarks/detection_stream.py [--minutes 10] [--random]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import machine, write_section
from streaming import make_inputs, plot, rss_at, sampled_rss


def random_model(root: Path) -> Path:
    """A saved SoraDet of the default detection config with seeded random weights."""
    from sora.config import default_config
    from sora.data import synth_det
    from sora.models.soradet import SoraDet
    from sora.models.store import save_model

    config = default_config("detect")
    config.model.num_classes = len(synth_det.CLASSES)
    torch.manual_seed(0)
    out = root / "det-model-random"
    save_model(SoraDet(config.model, config.detect), config, list(synth_det.CLASSES), out)
    return out


def stream(video: Path, run: Path) -> dict:
    """Frames, seconds, boxes and RSS samples ``[(seconds, MB)]`` of one streamed pass."""
    from sora.inference.detector import Detector

    torch.set_grad_enabled(False)
    detector = Detector(run, device="cpu")
    frames = boxes = 0
    t0 = time.perf_counter()
    with sampled_rss() as samples:
        for fd in detector.detect_video(video, score_thresh=0.3):
            frames += 1
            boxes += len(fd.boxes)
        seconds = time.perf_counter() - t0
    return {"frames": frames, "seconds": seconds, "boxes": boxes, "rss": samples}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="video length (default 10)")
    ap.add_argument(
        "--root", default="runs/bench-streaming", help="cache of the long video (shared)"
    )
    ap.add_argument(
        "--run",
        default="runs/bench-detect/SoraDet",
        help="trained SoraDet (default: the one benchmarks/detection.py saves)",
    )
    ap.add_argument("--random", action="store_true", help="a random-weight SoraDet instead")
    ap.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    video, _ = make_inputs(Path(args.root), args.minutes)
    run = random_model(Path(args.root)) if args.random else Path(args.run)
    if not (run / "model" / "config.yaml").is_file() and not (run / "config.yaml").is_file():
        print(f"{run}: no saved model; run benchmarks/detection.py first, or --random")
        return 1
    r = stream(video, run)
    rss = [m for _, m in r["rss"]]
    weights = "random weights" if args.random else f"trained ({run})"
    table = (
        "| model | frames | boxes (score ≥ 0.3) | frames/s (decode incl.) "
        "| RSS at 10% / 50% / 100% (MB) | peak RSS (MB) |\n|---|---|---|---|---|---|\n"
        f"| SoraDet, {weights} | {r['frames']} | {r['boxes']} "
        f"| {r['frames'] / r['seconds']:.0f} "
        f"| {rss_at(r, 0.1):.0f} / {rss_at(r, 0.5):.0f} / {rss_at(r, 1.0):.0f} "
        f"| {max(rss):.0f} |"
    )
    print(table)
    if not args.no_write:
        png = Path(__file__).with_name("detection_stream_rss.png")
        rows = [{"mode": f"SoraDet stream ({weights.split(' (')[0]})", **r}]
        plot(rows, png, title="Memory while detecting on a long video")
        write_section(
            "detection-stream",
            f"## SoraDet streamed over a {args.minutes:g}-minute video "
            f"({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/detection_stream.py --minutes {args.minutes:g}"
            f"{' --random' if args.random else ''}`: the 160x120 20 fps H.264 recording of "
            "the streaming benchmark, every frame, through `Detector.detect_video` (the path "
            "of `sora predict`), 96x128, default config, CPU. RSS over time: "
            "[detection_stream_rss.png](detection_stream_rss.png).\n\n" + table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
