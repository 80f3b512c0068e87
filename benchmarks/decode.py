"""Decode speed: Sora's reader (decode + resize to a 128-pixel short side) against the ffmpeg
command-line decoder (``ffmpeg -threads 1 -i FILE -f null -``) on the same file, one thread
each, in one run. Prints frames/s for both and their ratio (target >= 0.9), and writes the
table to benchmarks/RESULTS.md.

    python benchmarks/decode.py [--video FILE] [--seconds 20] [--repeat 3]

Without ``--video`` a 1280x720 30 fps H.264 test video (moving texture) is written first.
Needs the ``ffmpeg`` program (Debian/Ubuntu: ``apt-get install ffmpeg``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sora.io import VideoReader, probe, write_video


def make_video(path: Path, seconds: float, fps: float = 30.0, size=(720, 1280)) -> Path:
    h, w = size
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    n = int(seconds * fps)
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = np.roll(base, (2 * i, 3 * i), axis=(0, 1))
    return write_video(path, frames, fps, crf=23, overwrite=True)


def sora_fps(path: Path, short_side: int) -> tuple[float, int]:
    t = time.perf_counter()
    n = sum(1 for _ in VideoReader(path, short_side=short_side, threads=1))
    return n / (time.perf_counter() - t), n


def ffmpeg_fps(path: Path, frames: int) -> float:
    t = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"],
        check=True,
    )
    return frames / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--short-side", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        print("benchmarks/decode.py needs the ffmpeg program (apt-get install ffmpeg)")
        return 2
    tmp = Path(tempfile.mkdtemp())
    video = Path(args.video) if args.video else make_video(tmp / "bench.mp4", args.seconds)
    meta = probe(video)
    sora_runs, ff_runs = [], []
    for _ in range(args.repeat):  # interleaved, best of N for each
        rate, n = sora_fps(video, args.short_side)
        sora_runs.append(rate)
        ff_runs.append(ffmpeg_fps(video, n))
    sora, ff = max(sora_runs), max(ff_runs)
    table = (
        f"| video | frames | sora fps (decode+resize {args.short_side}) | ffmpeg fps (decode) "
        f"| ratio |\n|---|---|---|---|---|\n"
        f"| {meta.width}x{meta.height} {meta.codec} {meta.fps:g} fps | {n} | {sora:.0f} | "
        f"{ff:.0f} | {sora / ff:.2f} |"
    )
    print(table)
    if not args.no_write:
        from common import machine, write_section

        write_section(
            "decode",
            f"## Decode ({time.strftime('%Y-%m-%d')}, {machine()}, 1 thread each, best of "
            f"{args.repeat})\n\n`python benchmarks/decode.py --repeat {args.repeat}`: Sora's "
            "reader decodes and resizes (swscale AREA, RGB out); `ffmpeg -threads 1 -i FILE "
            f"-f null -` only decodes.\n\n{table}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
