"""Streaming vs sliding-window re-inference on a 10-minute video.

The same SoraNet (default config; weights do not change the cost) labels a 10-minute
MotionShapes recording three ways through :class:`sora.inference.Predictor`:

* ``stream``: one CNN pass and one GRU step per decoded frame, a label at every frame;
* ``sliding, stride 1 frame``: the trained 16-frame window re-run for every new frame, so it
  also labels every frame;
* ``sliding, stride 1/2 window``: the default timeline, a label every 8 frames.

Each mode runs in a fresh process that samples its RSS every 0.2 s. Reported: outputs,
GFLOPs per output (PyTorch's FlopCounterMode on one call, times calls, over outputs), wall
time per output (decode included), and RSS over time. Writes the table into
benchmarks/RESULTS.md and the RSS curves into benchmarks/streaming_rss.png.

    python benchmarks/streaming.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

MODES = ("stream", "sliding, stride 1 frame", "sliding, stride 1/2 window")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextlib.contextmanager
def sampled_rss(every: float = 0.2):
    """Within: a thread appends ``(seconds since entry, RSS in MB)`` to the yielded list every
    ``every`` seconds."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sampler():
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, rss_mb()))
            stop.wait(every)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def rss_at(run: dict, fraction: float) -> float:
    """RSS (MB) of the sample nearest ``fraction`` of a run's ``seconds``, from its ``rss``
    samples ``[(seconds, MB)]`` (:func:`sampled_rss`)."""
    return min(run["rss"], key=lambda s: abs(s[0] - fraction * run["seconds"]))[1]


def make_inputs(root: Path, minutes: float) -> tuple[Path, Path]:
    """A cached long video and a randomly initialised saved model (default config)."""
    import torch

    from sora.config import load_config
    from sora.data import synth
    from sora.demo import demo_config
    from sora.io import read_video, write_video
    from sora.models.soranet import SoraNet
    from sora.models.store import save_model

    root.mkdir(parents=True, exist_ok=True)
    video = root / f"long-{minutes:g}min.mp4"
    if not video.exists():
        labels, total = [], 0
        while total < minutes * 60:  # each clip lasts 1.6-3.2 s: over-ask, then trim by time
            labels.append(synth.CLASSES[len(labels) % len(synth.CLASSES)])
            total += 1.6
        tmp = root / "long-tmp.mp4"
        synth.long_video(tmp, labels, fps=20.0)
        frames, _ = read_video(tmp, end=minutes * 60)  # trim to the exact length
        write_video(video, frames.permute(0, 2, 3, 1).numpy(), 20.0)
        tmp.unlink()
    model_dir, config = root / "model", demo_config()
    saved = model_dir / "config.yaml"
    if not saved.exists() or load_config(saved).model != config.model:  # none, or stale
        torch.manual_seed(0)
        save_model(SoraNet(config.model), config, list(synth.CLASSES), model_dir)
    return video, model_dir


def run_mode(mode: str, video: str, model_dir: str) -> dict:
    """One mode, in this process: outputs, seconds, GFLOPs per output, RSS samples."""
    import torch

    from sora.inference.predictor import Predictor
    from sora.models.summary import count_flops

    torch.set_grad_enabled(False)
    pred = Predictor(model_dir, device="cpu")
    h, w = pred.config.data.crop
    model = pred.model
    t0 = time.perf_counter()
    with sampled_rss() as samples:
        if mode == "stream":
            outputs = sum(1 for _ in pred.stream(video))
            calls = outputs
            flops = count_flops(model.step, torch.zeros(1, 3, h, w), model.init_state(1))
        else:
            stride = 1.0 / pred.fps if mode == "sliding, stride 1 frame" else None
            outputs = len(pred.timeline(video, stride=stride, batch=16))
            calls = outputs  # one clip per window
            flops = count_flops(model, torch.zeros(1, pred.clip_len, 3, h, w))
        seconds = time.perf_counter() - t0
    return {
        "mode": mode,
        "outputs": outputs,
        "seconds": seconds,
        "gflops_per_output": flops * calls / outputs / 1e9,
        "ms_per_output": 1000 * seconds / outputs,
        "rss": samples,
    }


def plot(
    rows: list[dict],
    path: Path,
    title: str = "Memory while labelling a long video",
    xlabel: str = "progress through the 10-minute video (%)",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for r in rows:
        t, m = zip(*r["rss"], strict=True)
        ax.plot([x / r["seconds"] * 100 for x in t], m, label=r["mode"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--root", default="runs/bench-streaming", help="cache for video and model")
    ap.add_argument("--mode", help=argparse.SUPPRESS)  # internal: run one mode, print JSON
    ap.add_argument("--video", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.video, args.model)))
        return 0

    video, model_dir = make_inputs(Path(args.root), args.minutes)
    rows = []
    for mode in MODES:
        cmd = [sys.executable, __file__, "--mode", mode, "--video", str(video)]
        res = subprocess.run(cmd + ["--model", str(model_dir)], capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{mode}: {row['outputs']} outputs in {row['seconds']:.1f} s", flush=True)
        rows.append(row)

    base = rows[0]
    lines = [
        "| mode | outputs | GFLOPs/output | ms/output (wall, decode incl.) | x stream (FLOPs) "
        "| x stream (wall) | RSS at 10% / 50% / 100% (MB) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rss = r["rss"]
        lines.append(
            f"| {r['mode']} | {r['outputs']} | {r['gflops_per_output']:.3f} "
            f"| {r['ms_per_output']:.2f} "
            f"| {r['gflops_per_output'] / base['gflops_per_output']:.1f} "
            f"| {r['ms_per_output'] / base['ms_per_output']:.1f} "
            f"| {rss_at(r, 0.1):.0f} / {rss_at(r, 0.5):.0f} / {rss_at(r, 1.0):.0f} "
            f"| {max(m for _, m in rss):.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        plot(rows, Path(__file__).with_name("streaming_rss.png"))
        sys.path.insert(0, str(Path(__file__).parent))
        from common import machine, write_section

        write_section(
            "streaming",
            f"## Streaming vs sliding windows, {args.minutes:g}-minute video "
            f"({time.strftime('%Y-%m-%d')}, {machine()})\n\n"
            f"`python benchmarks/streaming.py --minutes {args.minutes:g}`: a 160x120 20 fps "
            "H.264 MotionShapes recording, decoded at the model's 8 fps; SoraNet default "
            "config, CPU, one process per mode. RSS over time: "
            "[streaming_rss.png](streaming_rss.png).\n\n" + table,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
