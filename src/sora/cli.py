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


def _config(args, task: str | None = None) -> object:
    """The config file (or the task's defaults), then ``--epochs`` and ``--set``."""
    from sora.config import apply_overrides, default_config, load_config

    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "config", None):
        config = load_config(args.config)
    else:
        asked = [
            o.split("=", 1)[1].strip() for o in overrides if o.split("=", 1)[0].strip() == "task"
        ]
        config = default_config(asked[-1] if asked else task or "classify")
    if getattr(args, "epochs", None) is not None:
        overrides.append(f"train.epochs={args.epochs}")
    return apply_overrides(config, overrides) if overrides else config


def cmd_synth(args) -> int:
    if args.task == "anomaly":
        from sora.data.synth_anomaly import generate as generate_anomaly

        if args.actions or args.val is not None:
            raise ValueError("--actions and --val are not options of --task anomaly")
        train, test = args.train or 10, args.test or 14
        out = generate_anomaly(
            args.out,
            train=train,
            test=test,
            frames=args.frames or 240,
            seed=args.seed,
            workers=args.workers,
        )
        print(
            f"MotionShapes-Anomaly written to {out} ({train} normal training videos, {test} "
            "testing videos with frame labels)"
        )
        return 0
    if args.task == "detect":
        from sora.data.synth_det import generate as generate_det

        out = generate_det(
            args.out,
            train=args.train if args.train is not None else 24,
            val=args.val if args.val is not None else 4,
            test=args.test if args.test is not None else 8,
            frames=args.frames or 90,
            seed=args.seed,
            workers=args.workers,
            actions=args.actions,
        )
        what = " with per-object actions (gt/actions.txt)" if args.actions else ""
        print(f"MotionShapes-Det written to {out} (MOTChallenge layout){what}")
        return 0
    if args.actions:
        raise ValueError("--actions is for --task detect (MotionShapes-Det)")
    from sora.data.synth import generate

    args.train = 80 if args.train is None else args.train
    args.val = 10 if args.val is None else args.val
    args.test = 20 if args.test is None else args.test

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


def cmd_convert_anomaly(args) -> int:
    from sora.data.convert_anomaly import convert

    train, test = convert(args.src, args.format, args.out)
    print(
        f"{args.format}: {train} training and {test} testing videos written to {args.out} "
        "(training/ + testing/ with frame labels)"
    )
    return 0


def cmd_tubes(args) -> int:
    from sora.data.tubes import classifier_settings, write_tubes

    counts = write_tubes(args.root, args.out, size=args.size, margin=args.margin)
    for split, per in counts.items():
        print(f"{split}: " + ", ".join(f"{a} {n}" for a, n in sorted(per.items())))
    print(
        f"tubes written to {args.out}; train a per-track action classifier with\n"
        f"  sora train --data {args.out} --out RUN "
        + " ".join(f"--set '{o}'" for o in classifier_settings(args.size))
    )
    return 0


def cmd_inspect(args) -> int:
    from sora.data.inspect import format_mot_report, format_report, inspect_dataset, inspect_mot
    from sora.data.mot import is_mot_root

    if is_mot_root(args.root):
        report, text = inspect_mot(args.root), format_mot_report
    else:
        report, text = inspect_dataset(args.root), format_report
    print(json.dumps(report, indent=2) if args.json else text(report))
    return 0


def cmd_summary(args) -> int:
    from sora.models.soranet import SoraNet
    from sora.models.store import CONFIG, resolve_model_dir
    from sora.models.summary import summarize

    if args.config and Path(args.config).is_dir():  # a run or saved-model folder
        args.config = str(resolve_model_dir(args.config) / CONFIG)
    config = _config(args)
    if config.task == "detect":
        return _summary_detect(config, args.json)
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


def _summary_detect(config, as_json: bool) -> int:
    import torch

    from sora.models.soradet import SoraDet
    from sora.models.summary import count_flops

    model = SoraDet(config.model, config.detect).eval()
    h, w = config.detect.size
    frame = torch.zeros(1, 3, h, w)
    info = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_frame": [1, 3, h, w],
        "anchor_points": int(model.anchors(h, w)[0].shape[0]),
        "gflops_per_streamed_frame": count_flops(model.step, frame, model.init_state(1)) / 1e9,
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    d = config.detect
    print(f"SoraDet  backbone={config.model.backbone} strides={d.strides} temporal={d.temporal}")
    print(f"input frame           {info['input_frame']}  (B, 3, H, W)")
    print(f"anchor points         {info['anchor_points']}")
    print(f"parameters            {info['parameters']:,}")
    print(f"GFLOPs per frame      {info['gflops_per_streamed_frame']:.4f}")
    return 0


def cmd_train(args) -> int:
    from sora.data.anomaly import is_anomaly_root
    from sora.data.mot import is_mot_root
    from sora.tasks.train import require_data, train

    if args.resume and not args.config and (Path(args.out) / "config.yaml").is_file():
        args.config = str(Path(args.out) / "config.yaml")
    require_data(args.data)
    task = args.task
    if task is None:  # --set task=..., else the layout of --data
        asked = [o.split("=", 1)[1].strip() for o in args.set or [] if o.startswith("task=")]
        if asked:
            task = asked[-1]
        elif is_anomaly_root(args.data):
            task = "anomaly"
        elif is_mot_root(args.data):
            task = "detect"
        else:
            task = "classify"
    config = _config(args, task=task)
    if task == "pretrain" and config.task != "pretrain":
        raise ValueError("sora pretrain: the config's task must be pretrain")
    summary = train(
        config,
        args.data,
        args.out,
        resume=args.resume,
        progress=not args.quiet,
        init=args.init,
    )
    if summary:
        key = summary["monitor"]
        name = {
            "val_acc": "val accuracy",
            "val_map50": "val mAP50",
            "val_map": "val mAP@[.5:.95]",
            "val_psnr": "val prediction PSNR (dB)",
        }[key]
        if summary["task"] == "pretrain":
            name = "val future-frame accuracy"
        best = summary[f"best_{key}"]
        print(
            f"trained {summary['epochs_run']} epochs in {summary['train_seconds']:.0f} s; "
            f"best {name} {best:.3f} (epoch {summary['best_epoch']}); run in {args.out}"
        )
        if summary.get("normality"):
            n = summary["normality"]
            rate = n.get("false_alarms_per_hour")
            often = "once" if rate == 1 else f"{rate:g} times"
            rule = (
                f"normal footage should cross it about {often} an hour, from the scores of "
                f"{n['threshold_frames']} training frames"
                if rate
                else "the highest held-out score"
            )
            print(
                f"scores calibrated on {n['calibration_frames']} held-out normal frames; alert "
                f"threshold {n['threshold']:.2f} ({rule})"
            )
        for warning in summary.get("warnings", []):
            print(f"  warning: {warning}")
        if summary["skipped"]:
            print(f"skipped {len(summary['skipped'])} unreadable videos:")
            for path, reason in summary["skipped"]:
                print(f"  {path}: {reason}")
    return 0


def _run_task(run) -> str:
    from sora.config import load_config
    from sora.models.store import CONFIG, resolve_model_dir

    return load_config(resolve_model_dir(run) / CONFIG).task


def cmd_eval(args) -> int:
    from sora.evaluation.evaluate import evaluate

    task = _run_task(args.run)
    if args.forecast_class is not None and task != "detect":
        raise ValueError(f"--forecast-class is for detection runs; {args.run} is a {task} run")
    if args.hold is not None and (task != "detect" or args.task == "track"):
        raise ValueError("--hold is for detection runs scored as detections, not as tracks")
    if args.task == "track":
        if task != "detect":
            raise ValueError(f"--task track needs a detection run; {args.run} is a {task} run")
        return _eval_track(args)
    if task == "anomaly":
        from sora.evaluation.anomaly import evaluate_anomaly

        m = evaluate_anomaly(args.run, args.data)
        rate = m["detection_rate_at_1_false_alarm_per_10_min"]
        types = ", ".join(
            f"{k} {v['auc']:.3f}" for k, v in m["per_type"].items() if v["auc"] is not None
        )
        print(
            f"testing: {m['num_videos']} videos, {m['num_frames']} frames, frame AUC "
            f"{m['auc_micro']:.3f} (micro), {m['auc_macro'] or float('nan'):.3f} (macro), EER "
            f"{m['eer']:.3f}, events detected at 1 false alarm / 10 min "
            f"{'n/a' if rate is None else f'{rate:.2f}'}; {m['frames_per_second']:.0f} frames/s"
        )
        if types:
            print(f"per type AUC: {types}")
        a = m["at_alert_threshold"]
        print(
            f"at the run's alert threshold {m['alert_threshold']:.2f} (what sora watch uses): "
            f"{a['events_detected']} of {a['events']} events, {a['false_alarms']} false alarms "
            f"({a['false_alarms_per_minute']:.1f} a minute; frames over it, no hold)"
        )
        print(f"wrote {Path(args.run) / 'eval' / 'anomaly.json'}")
        return 0
    if task == "detect":
        from sora.evaluation.detection import evaluate_detection

        m = evaluate_detection(
            args.run,
            args.data,
            split=args.split,
            forecast_class=args.forecast_class,
            hold=args.hold,
        )
        vis = m["visibility"]
        print(
            f"{m['split']}: {m['num_sequences']} sequences, {m['num_frames']} frames, "
            f"mAP50 {m['map_50']:.3f}, mAP@[.5:.95] {m['map']:.3f}, mAP75 {m['map_75']:.3f}; "
            f"mAP50 visible {vis['visible']['map_50']:.3f}, occluded "
            f"{vis['occluded']['map_50']:.3f}; {m['frames_per_second']:.0f} frames/s streamed"
        )
        print(f"wrote {Path(args.run) / 'eval' / 'metrics.json'}")
        return 0

    m = evaluate(args.run, args.data, split=args.split, views=args.views)
    print(
        f"{m['split']}: {m['num_videos']} videos, accuracy {m['accuracy']:.3f}, top-5 "
        f"{m['top5']:.3f}, macro precision {m['macro_precision']:.3f}, macro recall "
        f"{m['macro_recall']:.3f}, macro F1 {m['macro_f1']:.3f}"
    )
    print(f"wrote {Path(args.run) / 'eval' / 'metrics.json'}")
    return 0


def _reid(args) -> str | None:
    """``--reid`` as VideoTracker takes it (``None``: off)."""
    return None if args.reid == "none" else args.reid


def _eval_track(args) -> int:
    from sora.evaluation.tracking import evaluate_tracking
    from sora.inference.tracking import parse_options

    m = evaluate_tracking(
        args.run,
        args.data,
        split=args.split,
        tracker=args.tracker,
        high=args.high,
        conf=args.conf,
        nms_iou=_nms(args),
        options=parse_options(args.tracker, args.tracker_set or []),
        actions=args.actions,
        reid=_reid(args),
        reid_window=args.reid_window,
        forecast_class=args.forecast_class,
    )
    sw = m["id_switches"]
    print(
        f"{m['split']}: {m['num_sequences']} sequences, {m['num_frames']} frames, "
        f"{m['tracker']}: HOTA {m['HOTA']:.3f} (DetA {m['DetA']:.3f}, AssA {m['AssA']:.3f}), "
        f"MOTA {m['MOTA']:.3f}, IDF1 {m['IDF1']:.3f}, ID switches {sw['total']} "
        f"({sw['after_occlusion']} after an occlusion), fragmentations {m['Frag']}"
    )
    if "actions" in m:
        a = m["actions"]
        print(
            f"actions: per-track accuracy {a['track_accuracy']:.3f} ({a['objects']} objects, "
            f"{a['tracks_matched']} tracked; {a['track_accuracy_matched']:.3f} of those), "
            f"box + id + action per frame {a['frame_accuracy']:.3f}"
        )
    print(f"wrote {Path(args.run) / 'eval' / 'tracking.json'}")
    return 0


def cmd_report(args) -> int:
    from sora.evaluation.report import write_report
    from sora.models.store import resolve_model_dir

    resolve_model_dir(args.run)
    print(f"wrote {write_report(args.run)}")
    return 0


def cmd_predict_detect(args) -> int:
    from sora.data.mot import mot_row
    from sora.inference.detector import Detector

    fmt = args.format or "mot"
    if len(args.videos) > 1 and (fmt == "mot" or args.save_video):
        raise ValueError("--format mot and --save-video take one source; use --format jsonl")
    detector = Detector(args.run, forecast_class=args.forecast_class, hold=args.hold)
    if args.conf is None:
        args.conf = detector.operating_threshold()
    annotator = None
    if args.save_video:
        from sora.inference.draw import Annotator

        annotator = Annotator(detector.classes)
    out = csv.writer(sys.stdout) if fmt == "csv" else None
    if out is not None:
        out.writerow(["source", "frame", "time", "x0", "y0", "x1", "y1", "score", "label"])

    def fps() -> float:
        return detector.config.detect.fps or _source_fps(args.videos[0])

    with _SavedVideo(args.save_video, fps) as video:
        for source in args.videos:
            for fd in detector.detect_video(
                source, score_thresh=args.conf, keep_images=annotator is not None
            ):
                rows = list(
                    zip(fd.boxes.tolist(), fd.scores.tolist(), fd.labels.tolist(), strict=True)
                )
                memory = [False] * len(rows) if fd.forecast is None else fd.forecast.tolist()
                frame = fd.index + 1
                if fmt == "mot":
                    for b, sc, c in rows:
                        print(mot_row(frame, b, sc, c))
                elif fmt == "csv":
                    for b, sc, c in rows:
                        out.writerow(
                            [
                                source,
                                frame,
                                f"{fd.time:.3f}",
                                *(f"{v:.1f}" for v in b),
                                f"{sc:.4f}",
                                detector.classes[c],
                            ]
                        )
                else:
                    dets = [
                        {
                            "box": [round(v, 1) for v in b],
                            "score": round(sc, 4),
                            "label": detector.classes[c],
                            "class_id": c + 1,
                            "forecast": m,
                        }
                        for (b, sc, c), m in zip(rows, memory, strict=True)
                    ]
                    print(
                        json.dumps(
                            {
                                "source": str(source),
                                "frame": frame,
                                "time": round(fd.time, 3),
                                "detections": dets,
                            }
                        ),
                        flush=True,
                    )
                if annotator is not None:
                    video.write(
                        annotator.draw(fd.image, fd.boxes, fd.scores, fd.labels, fd.forecast)
                    )
    return 0


class _SavedVideo:
    """``--save-video``: the file is opened at the first frame (at ``fps()``), closed and
    announced on success, removed (``abort``) on an error, so no half-written video stays."""

    def __init__(self, path: str | None, fps):
        self.path, self.fps, self.writer = path, fps, None

    def write(self, frame) -> None:
        if self.writer is None:
            from sora.io.video import VideoWriter

            self.writer = VideoWriter(self.path, self.fps(), overwrite=True)
        self.writer.write(frame)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_) -> bool:
        if self.writer is not None:
            if exc_type is None:
                print(f"wrote {self.writer.close()}", file=sys.stderr)
            else:
                self.writer.abort()
        return False


def _is_mot_split(path: str) -> bool:
    """A folder of MOT sequences (``<seq>/img1/`` or ``<seq>/seqinfo.ini``)."""
    folder = Path(path)
    return folder.is_dir() and any(
        (c / "img1").is_dir() or (c / "seqinfo.ini").is_file()
        for c in folder.iterdir()
        if c.is_dir()
    )


def _sequence_source(source: str) -> tuple[str, dict]:
    """A MOT sequence folder (or its ``img1/``) -> its frames and their rate from
    ``seqinfo.ini``; anything else as it is."""
    from sora.data.mot import find_source, read_seqinfo

    path = Path(source)
    for seq in (path, path.parent):
        if path.is_dir() and (seq / "seqinfo.ini").is_file():
            info = read_seqinfo(seq / "seqinfo.ini")
            frames = find_source(seq, info)
            rate = float(info.get("framerate", 0) or 0)
            return str(frames), ({"image_fps": rate} if rate and frames.is_dir() else {})
    return source, {}


def _track_json(tracks, classes: list[str], source: str, actions: list[str] | None) -> str:
    rows = [
        {
            "id": int(i),
            "box": [round(v, 1) for v in b],
            "score": round(s, 4),
            "label": classes[c],
            "class_id": c + 1,
        }
        for b, s, c, i in zip(
            tracks.boxes.tolist(),
            tracks.scores.tolist(),
            tracks.labels.tolist(),
            tracks.ids.tolist(),
            strict=True,
        )
    ]
    if tracks.actions is not None and actions is not None:
        for row, a, p in zip(rows, tracks.actions, tracks.action_probs, strict=True):
            row["action"], row["action_probability"] = actions[int(a)], round(float(p), 4)
    return json.dumps(
        {
            "source": source,
            "frame": tracks.index + 1,
            "time": round(tracks.time, 3),
            "tracks": rows,
        }
    )


def cmd_track(args) -> int:
    from sora.evaluation.tracking import track_rows
    from sora.inference.tracking import VideoTracker, parse_options

    options = parse_options(args.tracker, args.tracker_set or [])
    vt = VideoTracker(
        args.run,
        args.tracker,
        high=args.high,
        conf=args.conf,
        nms_iou=_nms(args),
        options=options,
        actions=args.actions,
        reid=_reid(args),
        reid_window=args.reid_window,
        forecast_class=args.forecast_class,
    )
    names = vt.tagger.classes if vt.tagger is not None else None
    if _is_mot_split(args.source):
        return _track_split(args, vt)
    annotator = None
    if args.save_video:
        from sora.inference.draw import Annotator

        annotator = Annotator(vt.classes)
    source, reader = _sequence_source(args.source)
    fps = 25.0 if str(source).isdigit() or "://" in str(source) else None
    fps = fps or reader.get("image_fps") or _source_fps(source)
    with _SavedVideo(args.save_video, lambda: vt.detector.config.detect.fps or fps) as video:
        for ft in vt.track_video(source, fps=fps, keep_images=annotator is not None, **reader):
            if args.format == "jsonl":
                print(_track_json(ft, vt.classes, str(args.source), names), flush=True)
            else:
                for row in track_rows(ft.index + 1, ft):
                    print(row)
            if annotator is not None:
                video.write(annotator.draw_frame_tracks(ft, names))
    return 0


def _track_split(args, vt) -> int:
    from sora.data.mot import read_split
    from sora.evaluation.tracking import run_sequence, write_tracks

    if args.save_video or args.format == "jsonl":
        raise ValueError(
            "a MOT split is tracked to MOT files (--out); use one sequence for "
            "--save-video or --format jsonl"
        )
    split = Path(args.source)
    out = Path(args.out) if args.out else Path(args.run) / "tracks" / split.name / vt.name
    for seq in read_split(split.parent, split.name, vt.classes):
        tracks, cost = run_sequence(vt, seq)
        write_tracks(out / f"{seq.name}.txt", tracks)
        ids = {int(i) for ft in tracks.values() for i in ft.ids}
        print(
            f"{seq.name}: {cost['frames']} frames, {len(ids)} tracks -> {out / (seq.name + '.txt')}"
        )
    return 0


def _source_fps(source) -> float:
    from sora.io.video import probe

    try:
        return probe(source).fps or 25.0
    except SoraError:
        return 25.0


def cmd_predict(args) -> int:
    from sora.inference.predictor import Predictor, merge_segments

    if _run_task(args.run) == "detect":
        return cmd_predict_detect(args)
    if args.format == "mot" or args.save_video or args.forecast_class is not None or args.hold:
        raise ValueError(
            "--format mot, --save-video, --forecast-class and --hold are for detection runs"
        )
    args.format = args.format or "json"
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


def cmd_watch(args) -> int:
    from sora.inference.watch import ms_text as ms
    from sora.inference.watch import watch

    source = int(args.source) if args.source.isdigit() else args.source

    def show(ev: dict) -> None:
        where = ev["zone"] or "scene"
        who = f" #{ev['track']} {ev['class']}" if ev["track"] is not None else ""
        print(
            f"{ev['wall']}  t={ev['time']:.2f}s  {ev['rule']:9s} {where}{who}  "
            f"score {ev['score']:.2f}",
            flush=True,
        )

    s = watch(
        source,
        model=args.model,
        anomaly=args.anomaly,
        anomaly_threshold=args.anomaly_threshold,
        anomaly_hold=args.anomaly_hold,
        zones=args.zones,
        events=args.events,
        save_video=args.save_video,
        tracker=args.tracker,
        reid=_reid(args),
        reid_window=args.reid_window,
        nms_iou=_nms(args),
        forecast_class=args.forecast_class,
        realtime=True if args.realtime else None,
        webhook=args.webhook,
        max_frames=args.max_frames,
        on_event=None if args.quiet else show,
    )
    fl, al = s["latency_frame_s"], s["latency_alert_s"]
    events = ", ".join(f"{k} {v}" for k, v in sorted(s["events"].items())) or "none"
    print(
        f"watched {s['frames_processed']} frames in {s['seconds']:.1f} s "
        f"({s['frames_per_second']:.1f} frames/s), {s['frames_dropped']} dropped; latency "
        f"frame median {ms(fl['median'])} / p95 {ms(fl['p95'])}, alert median "
        f"{ms(al['median'])} / p95 {ms(al['p95'])}; events: {events}"
    )
    if s["webhook"]:
        w = s["webhook"]
        print(f"webhook: {w['sent']} sent, {w['failed']} failed, {w['dropped']} dropped")
    if args.events:
        print(f"events in {args.events}")
    return 0


def cmd_demo(args) -> int:
    from sora.demo import format_summary, run_demo

    if args.task in ("detect", "track"):
        from sora.demo_detect import format_detect_summary, run_detect_demo

        result = run_detect_demo(
            args.out or f"runs/demo-{args.task}",
            data=args.data,
            overrides=args.set,
            progress=not args.quiet,
            track=args.task == "track",
        )
        print(format_detect_summary(result))
        return 0
    if args.task == "watch":
        from sora.demo_watch import format_watch_summary, run_watch_demo

        result = run_watch_demo(
            args.out or "runs/demo-watch",
            data=args.data,
            overrides=args.set,
            progress=not args.quiet,
        )
        print(format_watch_summary(result))
        return 0
    result = run_demo(
        args.out or "runs/demo", data=args.data, overrides=args.set, progress=not args.quiet
    )
    print(format_summary(result))
    return 0


SET_HELP = "override one config value, e.g. train.lr=1e-3 (repeatable)"


def _tracker_argument(s: argparse.ArgumentParser, default: str = "bytetrack") -> None:
    from sora.inference.tracking import TRACKERS

    s.add_argument(
        "--tracker", choices=TRACKERS, default=default, help=f"association (default {default})"
    )


def _tracker_options(s: argparse.ArgumentParser) -> None:
    """The options ``track`` and ``eval --task track`` share."""
    from sora.inference.tracking import LOW_FRACTION

    _tracker_argument(s)
    s.add_argument(
        "--high",
        type=float,
        help="score of a confident detection, which may start a track (default: the run's "
        "best-F1 threshold from sora eval, else 0.3)",
    )
    s.add_argument(
        "--conf",
        type=float,
        help=f"lowest score given to the tracker (default {LOW_FRACTION} x --high)",
    )
    _nms_option(s)
    _forecast_class_option(s)
    s.add_argument(
        "--actions",
        metavar="RUN",
        help="a classify run trained on `sora data tubes`: every track also gets an action",
    )
    s.add_argument(
        "--tracker-set",
        action="append",
        metavar="KEY=VALUE",
        help="a keyword of the trackers package's class, e.g. lost_track_buffer=60 (repeatable)",
    )
    _reid_options(s)


def _forecast_class_option(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--forecast-class",
        type=float,
        metavar="W",
        help="detection runs: decode with detect.forecast_class W in [0, 1] instead of the "
        "run's (the boxes' classes leaning on the memory's; 0.25 raised mAP50 and lowered "
        "IDF1, see docs/detect.md; default: the run's own, 0 unless set)",
    )


def _hold_option(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--hold",
        type=int,
        metavar="K",
        help="detection runs: keep a box on an object whose detections stop, at its tracked "
        "position, for up to K frames (detect.hold; 4 doubled SoraDet's occluded mAP50, see "
        "docs/detect.md; default: the run's own, 0 unless set)",
    )


def _nms_option(s: argparse.ArgumentParser) -> None:
    from sora.inference.tracking import NMS_IOU

    s.add_argument(
        "--nms",
        type=float,
        default=NMS_IOU,
        metavar="IOU",
        help=f"class-agnostic NMS before association at this IoU (default {NMS_IOU}; 1 = off)",
    )


def _nms(args) -> float | None:
    if args.nms <= 0:
        raise ValueError(f"--nms {args.nms:g}: an IoU above 0 (1 = off)")
    return None if args.nms >= 1 else args.nms


def _reid_options(s: argparse.ArgumentParser) -> None:
    from sora.inference.reid import EMBEDDINGS, WINDOW

    s.add_argument(
        "--reid",
        choices=[*EMBEDDINGS, "none"],
        default="colour",
        help="appearance that gives an object the tracker lost its id back when it returns: "
        "the box's colours, SoraDet's fused features, both, or none (default colour)",
    )
    s.add_argument(
        "--reid-window",
        type=float,
        default=WINDOW,
        metavar="SECONDS",
        help=f"how long a lost id can be given back (default {WINDOW:g})",
    )


def _fit_options(s: argparse.ArgumentParser, out: str) -> None:
    """The options ``train`` and ``pretrain`` share."""
    s.add_argument("--config", help="config YAML (default: the built-in one for the task)")
    s.add_argument("--out", default=out, help=f"run folder (default {out})")
    s.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sora", description="Deep-learning video analysis.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: synthesize, inspect").add_subparsers(
        dest="data_command", required=True
    )
    s = data.add_parser(
        "synth",
        help="write MotionShapes (classify), MotionShapes-Det (detect) or MotionShapes-Anomaly "
        "(anomaly)",
    )
    s.add_argument("--out", required=True, help="output folder (reused as a cache)")
    s.add_argument(
        "--task",
        choices=["classify", "detect", "anomaly"],
        default="classify",
        help="classify: MotionShapes, folder per class; detect: MotionShapes-Det, MOT layout; "
        "anomaly: MotionShapes-Anomaly, training/ + testing/ with frame labels "
        "(default classify)",
    )
    s.add_argument(
        "--train",
        type=int,
        help="videos per class (default 80) / detect: sequences (default 24) / anomaly: "
        "normal videos (default 10)",
    )
    s.add_argument("--val", type=int, help="as --train for val (default 10 / 4)")
    s.add_argument("--test", type=int, help="as --train for test (default 20 / 8 / 14)")
    s.add_argument(
        "--frames",
        type=int,
        help="detect: frames per sequence (default 90); anomaly: per video (default 240)",
    )
    s.add_argument(
        "--seed", type=int, default=0, help="the same seed gives the same files (default 0)"
    )
    s.add_argument("--workers", type=int, default=None, help="processes (default: up to 4)")
    s.add_argument(
        "--actions",
        action="store_true",
        help="detect: every object also does one of glide, zigzag, stop_go, pulse "
        "(gt/actions.txt), for per-track actions",
    )
    s.set_defaults(func=cmd_synth)
    s = data.add_parser(
        "tubes", help="crops of each labelled object over time, a folder per action"
    )
    s.add_argument("root", help="MOT layout with <sequence>/gt/actions.txt (id,action lines)")
    s.add_argument("--out", required=True, help="new folder: OUT/<split>/<action>/<seq>_<id>.mp4")
    s.add_argument("--size", type=int, default=64, help="crop side in pixels (default 64)")
    s.add_argument(
        "--margin",
        type=float,
        default=1.0,
        help="context: the crop's side is (1 + margin) x the box's averaged longer side "
        "(default 1.0)",
    )
    s.set_defaults(func=cmd_tubes)
    s = data.add_parser(
        "convert-anomaly",
        help="UCSD Ped1/Ped2, CUHK Avenue or ShanghaiTech as distributed -> training/ + "
        "testing/ with frame labels",
    )
    s.add_argument("src", help="the dataset folder as unpacked (e.g. UCSDped2, Avenue Dataset)")
    s.add_argument(
        "--format",
        required=True,
        choices=["ped1", "ped2", "avenue", "shanghaitech"],
        help="the layout SRC is in (docs/anomaly.md)",
    )
    s.add_argument("--out", required=True, help="new folder (files hard-linked where possible)")
    s.set_defaults(func=cmd_convert_anomaly)
    s = data.add_parser("inspect", help="classes, counts, durations, fps, sizes, unreadable files")
    s.add_argument("root", help="dataset folder: a folder per class, a manifest or a MOT layout")
    s.add_argument("--json", action="store_true", help="print JSON rather than text")
    s.set_defaults(func=cmd_inspect)

    model = sub.add_parser("model", help="model tools").add_subparsers(
        dest="model_command", required=True
    )
    s = model.add_parser("summary", help="parameters, GFLOPs, feature shapes")
    s.add_argument("config", nargs="?", help="config YAML or run folder (default: built-in)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    s.add_argument("--json", action="store_true", help="print JSON rather than text")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("train", help="train on a folder-per-class dataset or a CSV manifest")
    s.add_argument(
        "--data",
        required=True,
        help="a folder per class, a CSV manifest, a MOTChallenge layout (task=detect) or "
        "training/ + testing/ folders of normal footage (task=anomaly)",
    )
    _fit_options(s, "runs/train")
    s.add_argument(
        "--init",
        metavar="RUN",
        help="start from RUN's SoraNet weights, all but the head (e.g. a sora pretrain run)",
    )
    s.set_defaults(func=cmd_train, task=None)

    s = sub.add_parser(
        "pretrain",
        help="self-supervised: SoraNet learns to predict the future of unlabelled videos",
    )
    s.add_argument("--data", required=True, help="a folder of videos at any depth; labels ignored")
    _fit_options(s, "runs/pretrain")
    s.set_defaults(func=cmd_train, task="pretrain", init=None)

    s = sub.add_parser("eval", help="metrics on a split; writes RUN/eval/")
    s.add_argument("run", help="run folder")
    s.add_argument("--data", required=True, help="the dataset folder the split is read from")
    s.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="(default test)"
    )
    s.add_argument(
        "--views",
        type=int,
        help="classify: clips averaged per video (default: the run's data.test_views)",
    )
    s.add_argument(
        "--task",
        choices=["track"],
        help="track: a detection run's tracks scored by TrackEval (HOTA, MOTA, IDF1) into "
        "RUN/eval/tracking.json (default: the run's own task)",
    )
    _tracker_options(s)
    _hold_option(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("track", help="detect and track objects: MOT rows, JSON lines, video")
    s.add_argument("run", help="detection run folder (or saved-model folder)")
    s.add_argument(
        "source",
        help="video file, frame folder, webcam index, rtsp URL, or a MOTChallenge split "
        "folder (every sequence in it, to --out)",
    )
    s.add_argument(
        "--format",
        choices=["mot", "jsonl"],
        default="mot",
        help="mot: rows frame,id,x,y,w,h,score,class,-1,-1 (default); jsonl: a line per frame",
    )
    s.add_argument(
        "--save-video", metavar="OUT.mp4", help="write an annotated H.264 video (ids, trails)"
    )
    s.add_argument(
        "--out", help="split sources: folder for <sequence>.txt (default RUN/tracks/SPLIT/TRACKER)"
    )
    _tracker_options(s)
    s.set_defaults(func=cmd_track)

    s = sub.add_parser(
        "watch", help="live alerts: detection + tracking + zones + anomaly on one stream"
    )
    s.add_argument("source", help="video file, frame folder, webcam index or rtsp/http URL")
    s.add_argument("--model", help="detection run (objects, tracks, zones)")
    s.add_argument("--anomaly", help="anomaly run (scene anomaly alerts)")
    s.add_argument(
        "--anomaly-threshold",
        type=float,
        help="frame score over which an anomaly alert fires (default: the run's, the highest "
        "score on its held-out normal frames; sora eval's anomaly.json gives the one for 1 "
        "false alarm per 10 minutes of test footage)",
    )
    s.add_argument(
        "--anomaly-hold",
        type=float,
        default=0.5,
        help="seconds the anomaly score must stay over the threshold before the alert fires "
        "(default 0.5)",
    )
    s.add_argument("--zones", help="zones/lines YAML or JSON (docs/watch.md)")
    s.add_argument("--events", help="JSON-lines events file, appended (snapshots beside it)")
    s.add_argument("--save-video", help="annotated video (MP4)")
    from sora.inference.tracking import WATCH_TRACKER

    _tracker_argument(s, WATCH_TRACKER)
    _nms_option(s)
    _reid_options(s)
    _forecast_class_option(s)
    s.add_argument(
        "--realtime",
        action="store_true",
        help="play a file at its own rate and drop frames when behind, as with a camera "
        "(always on for live sources)",
    )
    s.add_argument("--webhook", help="POST each event as JSON to this URL (never blocks)")
    s.add_argument("--max-frames", type=int, help="stop after this many frames")
    s.add_argument("--quiet", action="store_true", help="print only the summary")
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("report", help="write RUN/report.html")
    s.add_argument("run", help="run folder (reads its metrics.csv and eval/)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("predict", help="labels for videos, timelines for long ones")
    s.add_argument("run", help="run folder (or saved-model folder)")
    s.add_argument("videos", nargs="+", help="files, image folders, webcam index or rtsp URL")
    s.add_argument(
        "--conf",
        type=float,
        default=None,
        help="detection runs: lowest score written and drawn (default: the best-F1 threshold "
        "`sora eval` stored in the run, else 0.3)",
    )
    s.add_argument(
        "--save-video",
        metavar="OUT.mp4",
        help="detection runs: write an annotated H.264 video (boxes, class, score)",
    )
    _forecast_class_option(s)
    _hold_option(s)
    s.add_argument(
        "--window",
        type=float,
        help="classify: timeline window in seconds (default: the trained clip length)",
    )
    s.add_argument(
        "--stride", type=float, help="classify: seconds between windows (default: half a window)"
    )
    s.add_argument(
        "--format",
        choices=["json", "csv", "jsonl", "mot"],
        help="output: classify json (default), csv, jsonl; detect mot (default: MOTChallenge "
        "rows frame,-1,x,y,w,h,score,class,-1,-1), jsonl (one line per frame), csv",
    )
    s.add_argument(
        "--stream",
        action="store_true",
        help="classify: frame by frame with the RNN state, a label per frame",
    )
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("demo", help="MotionShapes -> train -> eval -> report -> predict")
    s.add_argument(
        "--task",
        choices=["classify", "detect", "track", "watch"],
        default="classify",
        help="classify (default); detect: MotionShapes-Det -> SoraDet -> annotated video; "
        "track: the same, then ByteTrack + TrackEval and a video with track ids; watch: "
        "MotionShapes-Anomaly -> SoraAnomaly + SoraDet -> sora watch with zones -> events",
    )
    s.add_argument(
        "--out",
        help="demo folder; the run goes to OUT/run, or OUT/run-K if taken (default "
        "runs/demo, runs/demo-detect, runs/demo-track or runs/demo-watch)",
    )
    s.add_argument(
        "--data",
        help="dataset folder (default: OUT/../motionshapes, OUT/../motionshapes-det, for "
        "track OUT/../motionshapes-det-actions, for watch OUT/../motionshapes-anomaly)",
    )
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
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
    except BrokenPipeError:  # `sora track ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
