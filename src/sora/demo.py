"""The main job: MotionShapes -> train SoraNet -> evaluate -> report -> predict a long video."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from sora.config import Config, apply_overrides
from sora.data import synth
from sora.evaluation import plots
from sora.evaluation.evaluate import evaluate
from sora.evaluation.report import embed_png, write_report
from sora.inference.predictor import Predictor, merge_segments, segment_accuracy
from sora.io.files import atomic_write_text
from sora.tasks.train import train

#: The labels of the long demo video, in order (each segment a fresh test-style clip).
LONG_VIDEO_LABELS = (
    "slide_right",
    "grow",
    "rotate_ccw",
    "fall",
    "vanish",
    "slide_left",
    "appear",
    "rise",
    "shrink",
    "rotate_cw",
)


@contextmanager
def timed(timings: dict, key: str):
    """Within: the block's wall time goes to ``timings[key]`` (seconds) when it ends."""
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


def free_run_folder(out: Path) -> Path:
    """``out/run``, or the first ``out/run-K`` not there yet: a demo never writes over a run."""
    run, k = out / "run", 1
    while run.exists():
        k += 1
        run = out / f"run-{k}"
    return run


def demo_config() -> Config:
    """The defaults (sized for MotionShapes on a 2-core CPU) with 12 epochs instead of 16, so
    the whole demo fits in 5 minutes there, plus MotionShapes' label-aware augmentation:
    every class pair is the other's time reversal, and a mirror swaps
    slide_left/slide_right and rotate_cw/rotate_ccw."""
    config = Config()
    config.train.epochs = 12
    config.data.reverse_pairs = [list(p) for p in synth.REVERSE_PAIRS]
    config.data.hflip = True
    config.data.hflip_pairs = [list(p) for p in synth.MIRROR_PAIRS]
    return config


def run_demo(
    out: str | Path = "runs/demo",
    *,
    data: str | Path | None = None,
    overrides: list[str] | None = None,
    per_class: tuple[int, int, int] = (80, 10, 20),
    progress: bool = True,
    log=print,
) -> dict:
    """Run the whole pipeline into ``out``; returns the summary (also ``RUN/summary.json``).

    ``data`` defaults to ``out/../motionshapes`` (cached between runs). The run goes to
    ``out/run``, or ``out/run-2``, ``out/run-3``... when earlier runs are there: nothing is
    written over.
    """
    out = Path(out)
    data = Path(data) if data is not None else out.parent / "motionshapes"
    run = free_run_folder(out)
    timings = {}
    t0 = time.perf_counter()
    log(f"[1/5] MotionShapes in {data} (cached after the first run)")
    with timed(timings, "data_seconds"):
        synth.generate(data, train=per_class[0], val=per_class[1], test=per_class[2], seed=0)

    config = apply_overrides(demo_config(), overrides or [])
    log(f"[2/5] training SoraNet for up to {config.train.epochs} epochs -> {run}")
    with timed(timings, "train_seconds"):
        summary = train(config, data, run, progress=progress)

    log("[3/5] evaluating on the test split")
    with timed(timings, "eval_seconds"):
        metrics = evaluate(run, data, split="test")

    log("[4/5] predicting a long video (sliding windows and streaming)")
    with timed(timings, "predict_seconds"):
        long_path = run / "long_video.mp4"
        truth = synth.long_video(long_path, LONG_VIDEO_LABELS, seed=1)
        predictor = Predictor(run)
        windows = predictor.timeline(long_path)
        segments = merge_segments(windows)
        streamed = list(predictor.stream(long_path))
        stream_segments = merge_segments(
            [
                {"start": s["time"], "end": s["time"] + 1 / predictor.fps, "label": s["label"]}
                for s in streamed
            ]
        )
        plots.timeline(segments, truth, run / "plots" / "timeline.png")
        timeline_acc = segment_accuracy(segments, truth)
        stream_acc = segment_accuracy(stream_segments, truth)
        atomic_write_text(
            run / "long_video_timeline.json",
            json.dumps({"truth": truth, "windows": windows, "segments": segments}, indent=2),
        )

    log("[5/5] writing the report")
    section = (
        f"<p>{long_path.name}: {truth[-1]['end']:.1f} s, {len(truth)} actions. Sliding windows "
        f"of {predictor.window_seconds:.1f} s every {predictor.window_seconds / 2:.1f} s; "
        f"time-weighted agreement with the truth: <b>{timeline_acc:.3f}</b> "
        f"(streaming, state reset every window: {stream_acc:.3f}).</p>"
        + embed_png(run / "plots" / "timeline.png", "timeline")
    )
    report = write_report(run, extra_sections=[("Long video timeline", section)])
    timings["total_seconds"] = time.perf_counter() - t0
    result = {
        "test_accuracy": metrics["accuracy"],
        "test_macro_recall": metrics["macro_recall"],
        "test_macro_f1": metrics["macro_f1"],
        "best_val_accuracy": summary.get("best_val_acc"),
        "epochs": summary.get("epochs_run"),
        "timeline_agreement": timeline_acc,
        "stream_agreement": stream_acc,
        "report": str(report),
        **timings,
    }
    atomic_write_text(run / "summary.json", json.dumps(result, indent=2))
    return result


def format_summary(result: dict) -> str:
    rows = [
        ("test accuracy", f"{result['test_accuracy']:.3f}"),
        ("test macro recall", f"{result['test_macro_recall']:.3f}"),
        ("test macro F1", f"{result['test_macro_f1']:.3f}"),
        ("best val accuracy", f"{result['best_val_accuracy']:.3f}"),
        ("epochs", str(result["epochs"])),
        ("long-video timeline agreement", f"{result['timeline_agreement']:.3f}"),
        ("long-video streaming agreement", f"{result['stream_agreement']:.3f}"),
        ("data generation / cache (s)", f"{result['data_seconds']:.1f}"),
        ("training (s)", f"{result['train_seconds']:.1f}"),
        ("evaluation (s)", f"{result['eval_seconds']:.1f}"),
        ("prediction (s)", f"{result['predict_seconds']:.1f}"),
        ("total wall time (s)", f"{result['total_seconds']:.1f}"),
        ("report", result["report"]),
    ]
    return format_rows(rows)


def format_rows(rows: list[tuple[str, str]]) -> str:
    """``(label, value)`` rows as two aligned columns: the demos' summaries."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
