"""The ``sora`` command: parse arguments, call the library, print. No logic lives here.

Errors on bad input print one line, ``sora: error: <file>: <reason>``, and exit 1
(set ``SORA_DEBUG=1`` to see the traceback instead).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

from sora.errors import SoraError


def _config(args) -> object:
    from sora.config import Config, apply_overrides, load_config

    config = load_config(args.config) if getattr(args, "config", None) else Config()
    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "epochs", None) is not None:
        overrides.append(f"train.epochs={args.epochs}")
    return apply_overrides(config, overrides) if overrides else config


def cmd_synth(args) -> int:
    from sora.data.synth import generate

    out = generate(
        args.out,
        train=args.train,
        val=args.val,
        test=args.test,
        seed=args.seed,
        workers=args.workers,
    )
    print(f"MotionShapes written to {out} ({args.train}/{args.val}/{args.test} videos per class)")
    return 0


def cmd_inspect(args) -> int:
    from sora.data.inspect import format_report, inspect_dataset

    report = inspect_dataset(args.root)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_summary(args) -> int:
    from sora.models.soranet import SoraNet
    from sora.models.store import CONFIG, resolve_model_dir
    from sora.models.summary import summarize

    if args.config and Path(args.config).is_dir():  # a run or saved-model folder
        args.config = str(resolve_model_dir(args.config) / CONFIG)
    config = _config(args)
    d = config.data
    h, w = d.crop if d.crop else (d.short_side, d.short_side)
    info = summarize(SoraNet(config.model), d.clip_len, h, w)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    m = config.model
    print(
        f"SoraNet  backbone={m.backbone} strides={m.strides} fusion={m.fusion} rnn={m.rnn}"
        f"{' (bidirectional)' if m.bidirectional else ''} head={m.head}"
    )
    print(f"input clip            {info['input']}  (B, T, C, H, W)")
    print(f"output                {info['output']}")
    print(f"parameters            {info['parameters']:,}")
    print(f"GFLOPs per clip       {info['gflops_per_clip']:.4f}")
    per_frame = info["gflops_per_streamed_frame"]
    print(
        "GFLOPs per streamed   "
        + (
            f"{per_frame:.4f} per frame"
            if per_frame is not None
            else "n/a (bidirectional: offline only)"
        )
    )
    for name, shape in info["scales"].items():
        print(f"features {name:<10}  {shape}  (C, H, W)")
    return 0


def cmd_train(args) -> int:
    from sora.tasks.train import require_data, train

    if args.resume and not args.config and (Path(args.out) / "config.yaml").is_file():
        args.config = str(Path(args.out) / "config.yaml")
    config = _config(args)
    require_data(args.data)
    summary = train(config, args.data, args.out, resume=args.resume, progress=not args.quiet)
    if summary:
        acc = summary["best_val_acc"]
        print(
            f"trained {summary['epochs_run']} epochs in {summary['train_seconds']:.0f} s; "
            f"best val accuracy {acc:.3f} (epoch {summary['best_epoch']}); run in {args.out}"
        )
        if summary["skipped"]:
            print(f"skipped {len(summary['skipped'])} unreadable videos:")
            for path, reason in summary["skipped"]:
                print(f"  {path}: {reason}")
    return 0


def cmd_eval(args) -> int:
    from sora.evaluation.evaluate import evaluate

    m = evaluate(args.run, args.data, split=args.split, views=args.views)
    print(
        f"{m['split']}: {m['num_videos']} videos, accuracy {m['accuracy']:.3f}, top-5 "
        f"{m['top5']:.3f}, macro precision {m['macro_precision']:.3f}, macro recall "
        f"{m['macro_recall']:.3f}, macro F1 {m['macro_f1']:.3f}"
    )
    print(f"wrote {Path(args.run) / 'eval' / 'metrics.json'}")
    return 0


def cmd_report(args) -> int:
    from sora.evaluation.report import write_report
    from sora.models.store import resolve_model_dir

    resolve_model_dir(args.run)
    print(f"wrote {write_report(args.run)}")
    return 0


def cmd_predict(args) -> int:
    from sora.inference.predictor import Predictor, merge_segments

    predictor = Predictor(args.run)
    results = []
    for video in args.videos:
        if args.stream:
            rows = []
            for r in predictor.stream(video, window=args.window):
                rows.append(
                    {
                        "time": round(r["time"], 3),
                        "label": r["label"],
                        "probability": round(r["probability"], 4),
                    }
                )
                if args.format == "jsonl":
                    print(json.dumps({"video": video, **rows[-1]}), flush=True)
            results.append({"video": video, "frames": rows})
            continue
        res = {"video": video, **predictor.classify(video)}
        if args.window or res["duration"] > 2 * predictor.window_seconds:
            windows = predictor.timeline(video, args.window, args.stride)
            res["timeline"] = [
                {k: w[k] for k in ("start", "end", "label", "probability")} for w in windows
            ]
            res["segments"] = merge_segments(windows)
        results.append(res)
    if args.format == "jsonl":  # streamed rows were printed as they came
        for res in results:
            if "frames" not in res:
                print(json.dumps(res))
        return 0
    if args.format == "json":
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return 0
    w = csv.writer(sys.stdout)
    w.writerow(["video", "start", "end", "label", "probability"])
    for res in results:
        if "frames" in res:
            for r in res["frames"]:
                w.writerow([res["video"], r["time"], "", r["label"], r["probability"]])
        elif "timeline" in res:
            for r in res["timeline"]:
                w.writerow(
                    [
                        res["video"],
                        f"{r['start']:.3f}",
                        f"{r['end']:.3f}",
                        r["label"],
                        f"{r['probability']:.4f}",
                    ]
                )
        else:
            w.writerow(
                [
                    res["video"],
                    0,
                    f"{res['duration']:.3f}",
                    res["label"],
                    f"{res['probability']:.4f}",
                ]
            )
    return 0


def cmd_demo(args) -> int:
    from sora.demo import format_summary, run_demo

    result = run_demo(args.out, data=args.data, overrides=args.set, progress=not args.quiet)
    print(format_summary(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sora", description="Deep-learning video analysis.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: synthesize, inspect").add_subparsers(
        dest="data_command", required=True
    )
    s = data.add_parser("synth", help="write the MotionShapes dataset")
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, default=80, help="videos per class (default 80)")
    s.add_argument("--val", type=int, default=10)
    s.add_argument("--test", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None)
    s.set_defaults(func=cmd_synth)
    s = data.add_parser("inspect", help="classes, counts, durations, fps, sizes, unreadable files")
    s.add_argument("root")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_inspect)

    model = sub.add_parser("model", help="model tools").add_subparsers(
        dest="model_command", required=True
    )
    s = model.add_parser("summary", help="parameters, GFLOPs, feature shapes")
    s.add_argument("config", nargs="?", help="config YAML or run folder (default: built-in)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("train", help="train on a folder-per-class dataset or a CSV manifest")
    s.add_argument("--data", required=True)
    s.add_argument("--config")
    s.add_argument("--out", default="runs/train")
    s.add_argument("--epochs", type=int)
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="metrics on a split; writes RUN/eval/")
    s.add_argument("run")
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="test", choices=["train", "val", "test"])
    s.add_argument("--views", type=int)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("report", help="write RUN/report.html")
    s.add_argument("run")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("predict", help="labels for videos, timelines for long ones")
    s.add_argument("run")
    s.add_argument("videos", nargs="+", help="files, image folders, webcam index or rtsp URL")
    s.add_argument("--window", type=float, help="seconds (default: the trained clip length)")
    s.add_argument("--stride", type=float, help="seconds (default: half a window)")
    s.add_argument("--format", choices=["json", "csv", "jsonl"], default="json")
    s.add_argument("--stream", action="store_true", help="frame by frame with the RNN state")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("demo", help="MotionShapes -> train -> eval -> report -> predict")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--data", help="MotionShapes folder (default: OUT/../motionshapes)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("sora: warning: %(message)s"))
    logger = logging.getLogger("sora")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SoraError, FileExistsError, FileNotFoundError, ValueError) as err:
        if os.environ.get("SORA_DEBUG"):
            raise
        print(f"sora: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sora: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
