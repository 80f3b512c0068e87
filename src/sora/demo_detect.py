"""The detection demo: MotionShapes-Det -> train SoraDet -> evaluate -> report -> annotated video."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sora.config import Config, apply_overrides, default_config
from sora.data import synth_det
from sora.data.tubes import classifier_settings
from sora.demo import format_rows, free_run_folder, timed
from sora.evaluation.detection import evaluate_detection
from sora.evaluation.report import write_report
from sora.inference.detector import Detector
from sora.inference.draw import Annotator
from sora.io.files import atomic_write_text
from sora.io.video import VideoWriter
from sora.tasks.train import train

#: The test sequence drawn into the demo's annotated video.
VIDEO_SEQUENCE = "test_000"


def detect_demo_config() -> Config:
    """The detection defaults with the demo's budget, to fit 10 minutes on 2 CPU cores: 8
    epochs, and training clips every 5 frames instead of 4 (a fifth fewer steps per epoch;
    with the forecast the 4-frame overlap took the demo to 11-12 minutes)."""
    config = default_config("detect")
    config.train.epochs = 8
    config.detect.clip_stride = 5
    return config


def run_detect_demo(
    out: str | Path = "runs/demo-detect",
    *,
    data: str | Path | None = None,
    overrides: list[str] | None = None,
    sequences: tuple[int, int, int] = (96, 8, 16),
    frames: int = 90,
    progress: bool = True,
    track: bool = False,
    action_epochs: int = 20,
    log=print,
) -> dict:
    """Run the detection pipeline into ``out``; returns the summary (also ``RUN/summary.json``).

    With ``track`` (``sora demo --task track``) the data is MotionShapes-Det's action
    variant; after detection, the test split is tracked (ByteTrack), the objects' tubes
    train an action classifier (``RUN/actions/``, a classify run of
    ``action_epochs``), and tracks and actions are scored (TrackEval and the action
    accuracies); the video shows ids, trails and actions.

    ``data`` defaults to ``out/../motionshapes-det`` (``-actions`` with ``track``; cached
    between runs). The run goes to ``out/run`` or the first free ``out/run-K``: nothing
    is written over.
    """
    out = Path(out)
    default = "motionshapes-det-actions" if track else "motionshapes-det"
    data = Path(data) if data is not None else out.parent / default
    run = free_run_folder(out)
    timings = {}
    t0 = time.perf_counter()
    log(f"[1/5] MotionShapes-Det in {data} (cached after the first run)")
    with timed(timings, "data_seconds"):
        synth_det.generate(
            data,
            train=sequences[0],
            val=sequences[1],
            test=sequences[2],
            frames=frames,
            actions=track,
        )

    config = apply_overrides(detect_demo_config(), overrides or [])
    log(f"[2/5] training SoraDet for up to {config.train.epochs} epochs -> {run}")
    with timed(timings, "train_seconds"):
        summary = train(config, data, run, progress=progress)

    log("[3/5] evaluating on the test split (every sequence streamed whole)")
    with timed(timings, "eval_seconds"):
        metrics = evaluate_detection(run, data, split="test")

    tracking = None
    if track:
        from sora.evaluation.tracking import evaluate_tracking

        log(f"      action tubes and a {action_epochs}-epoch action classifier -> {run}/actions")
        with timed(timings, "actions_seconds"):
            tubes = _cached_tubes(data)
            settings = [*classifier_settings(), f"train.epochs={action_epochs}"]
            settings.append("train.early_stop_patience=0")
            act_config = apply_overrides(default_config("classify"), settings)
            act_summary = train(act_config, tubes, run / "actions", progress=progress)
        log("      tracking the test split (ByteTrack) with actions; TrackEval")
        with timed(timings, "track_seconds"):
            tracking = evaluate_tracking(run, data, split="test", actions=run / "actions")

    log(f"[4/5] annotated video of {VIDEO_SEQUENCE}")
    with timed(timings, "video_seconds"):
        video = annotate_sequence(
            run,
            data / "test" / VIDEO_SEQUENCE,
            run / "annotated.mp4",
            tracks=track,
            actions=run / "actions" if track else None,
        )

    log("[5/5] writing the report")
    report = write_report(run)
    timings["total_seconds"] = time.perf_counter() - t0
    result = {
        "test_map50": metrics["map_50"],
        "test_map": metrics["map"],
        "test_map50_visible": metrics["visibility"]["visible"]["map_50"],
        "test_map50_occluded": metrics["visibility"]["occluded"]["map_50"],
        "best_val_map50": summary.get("best_val_map50"),
        "best_val_map": summary.get("best_val_map"),
        "epochs": summary.get("epochs_run"),
        "frames_per_second": metrics["frames_per_second"],
        "operating_threshold": metrics["operating_threshold"],
        "report": str(report),
        "video": str(video),
        **timings,
    }
    if tracking is not None:
        result.update(
            {
                "test_hota": tracking["HOTA"],
                "test_mota": tracking["MOTA"],
                "test_idf1": tracking["IDF1"],
                "test_id_switches": tracking["IDSW"],
                "test_track_action_accuracy": tracking["actions"]["track_accuracy"],
                "test_box_id_action_accuracy": tracking["actions"]["frame_accuracy"],
                "action_val_accuracy": act_summary.get("best_val_acc"),
            }
        )
    atomic_write_text(run / "summary.json", json.dumps(result, indent=2))
    return result


def _cached_tubes(data: Path) -> Path:
    """``DATA-tubes`` next to the data, written once (via a ``.partial`` folder renamed at
    the end, so an interrupted run leaves nothing that looks complete)."""
    from sora.data.tubes import write_tubes

    tubes = data.parent / f"{data.name}-tubes"
    if not tubes.is_dir():
        partial = data.parent / f"{data.name}-tubes.partial"
        if partial.is_dir():
            shutil.rmtree(partial)
        write_tubes(data, partial)
        partial.rename(tubes)
    return tubes


def annotate_sequence(
    run: Path,
    sequence: Path,
    path: Path,
    conf: float | None = None,
    tracks: bool = False,
    actions: Path | None = None,
) -> Path:
    """Detect in a MOT sequence's frames and write them annotated (supervision) as H.264,
    boxes scored ``conf`` or more (default: the run's best-F1 threshold from evaluation);
    with ``tracks``, ByteTrack's tracks with their ids and trails instead (and each
    track's action, with an ``actions`` run)."""
    from sora.data.mot import read_sequence

    seq = read_sequence(sequence)
    if tracks:
        from sora.inference.tracking import VideoTracker

        vt = VideoTracker(run, actions=actions)
        annotator = Annotator(vt.classes)
        with VideoWriter(path, seq.fps, overwrite=True) as writer:
            names = vt.tagger.classes if vt.tagger is not None else None
            for ft in vt.track_video(seq.source, keep_images=True, image_fps=seq.fps):
                writer.write(annotator.draw_frame_tracks(ft, names))
        return path
    detector = Detector(run)
    conf = detector.operating_threshold() if conf is None else conf
    annotator = Annotator(detector.classes)
    with VideoWriter(path, seq.fps, overwrite=True) as writer:
        for fd in detector.detect_video(
            seq.source, score_thresh=conf, keep_images=True, image_fps=seq.fps
        ):
            writer.write(annotator.draw(fd.image, fd.boxes, fd.scores, fd.labels, fd.forecast))
    return path


def format_detect_summary(result: dict) -> str:
    rows = [
        ("test mAP50", f"{result['test_map50']:.3f}"),
        ("test mAP@[.5:.95]", f"{result['test_map']:.3f}"),
        ("test mAP50, visible boxes", f"{result['test_map50_visible']:.3f}"),
        ("test mAP50, occluded boxes", f"{result['test_map50_occluded']:.3f}"),
        ("best val mAP50", _num(result["best_val_map50"])),
        *(
            [
                ("test HOTA (ByteTrack, TrackEval)", f"{result['test_hota']:.3f}"),
                ("test MOTA / IDF1", f"{result['test_mota']:.3f} / {result['test_idf1']:.3f}"),
                ("test ID switches", str(result["test_id_switches"])),
                ("test per-track action accuracy", f"{result['test_track_action_accuracy']:.3f}"),
                (
                    "test box + id + action, per frame",
                    f"{result['test_box_id_action_accuracy']:.3f}",
                ),
                ("action classifier (s)", f"{result['actions_seconds']:.1f}"),
                ("tracking + TrackEval (s)", f"{result['track_seconds']:.1f}"),
            ]
            if "test_hota" in result
            else []
        ),
        ("epochs", str(result["epochs"])),
        ("streamed frames/s (eval)", f"{result['frames_per_second']:.0f}"),
        ("score threshold drawn (best F1)", f"{result['operating_threshold']:.2f}"),
        ("data generation / cache (s)", f"{result['data_seconds']:.1f}"),
        ("training (s)", f"{result['train_seconds']:.1f}"),
        ("evaluation (s)", f"{result['eval_seconds']:.1f}"),
        ("annotated video (s)", f"{result['video_seconds']:.1f}"),
        ("total wall time (s)", f"{result['total_seconds']:.1f}"),
        ("report", result["report"]),
        ("annotated video", result["video"]),
    ]
    return format_rows(rows)


def _num(value: float | None) -> str:
    """``value`` with 3 decimals, or ``n/a`` (e.g. a best val mAP50 not monitored)."""
    return "n/a" if value is None else f"{value:.3f}"
