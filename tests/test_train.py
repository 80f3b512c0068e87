"""End to end through the CLI: train, checkpoints, resume after kill -9, DDP, eval, report,
predict, streaming, and every bad input of the training issue."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_sora, tiny_overrides

from sora.errors import CheckpointError
from sora.inference.predictor import Predictor
from sora.tasks.train import load_checkpoint_file

SETS = [x for o in tiny_overrides() for x in ("--set", o)]


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def one_line_error(proc, *parts):
    """Exit code != 0 and exactly one error line, the last one (warnings such as skipped
    files may come before it), no traceback."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("sora: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    err = errors[0]
    for p in parts:
        assert p in err, err


def test_train_writes_a_complete_run(tiny_run):
    for name in (
        "config.yaml",
        "classes.json",
        "metrics.csv",
        "train_summary.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "model/model.safetensors",
        "model/config.yaml",
        "model/classes.json",
    ):
        assert (tiny_run / name).is_file(), name
    r = rows(tiny_run / "metrics.csv")
    assert [x["epoch"] for x in r] == ["0", "1"]
    assert all(float(x["train_loss"]) > 0 and 0 <= float(x["val_acc"]) <= 1 for x in r)
    ckpt = load_checkpoint_file(tiny_run / "checkpoints" / "last.ckpt")  # weights_only=True
    assert ckpt["epoch"] == 1 and "state_dict" in ckpt
    # a team shares run folders: files get the mode open() would give, not mkstemp's 0600
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("metrics.csv", "model/model.safetensors", "checkpoints/last.ckpt"):
        assert stat.S_IMODE((tiny_run / name).stat().st_mode) == 0o666 & ~mask, name
    # the user sees Sora's lines only: no Lightning "Tip"s, device block or LeafSpec warning
    printed = (tiny_run.parent / "train_output.txt").read_text()
    first, last = printed.splitlines()
    assert first.startswith("training classify on 1 x cpu (32-true), up to 2 epochs"), printed
    assert last.startswith("trained 2 epochs in"), printed
    for noise in ("Tip", "GPU available", "LeafSpec", "Warning"):
        assert noise not in printed, printed


@pytest.mark.parametrize("before", [False, True])
def test_denormals_are_flushed_while_fitting_then_as_before(before):
    from sora.tasks.train import FlushDenormals

    tiny = torch.tensor([1e-39])  # a denormal float32
    torch.set_flush_denormal(before)
    try:
        assert ((tiny * 1.5).item() == 0) is before
        callback = FlushDenormals()
        callback.on_fit_start(None, None)
        assert (tiny * 1.5).item() == 0
        callback.on_fit_end(None, None)
        assert ((tiny * 1.5).item() == 0) is before  # put back, not just switched off
    finally:
        torch.set_flush_denormal(False)


def test_same_seed_same_curve(tiny_data, tiny_run, tmp_path):
    run_sora(
        "train",
        "--data",
        tiny_data,
        "--out",
        tmp_path / "again",
        "--epochs",
        2,
        "--quiet",
        *SETS,
        check=True,
    )
    a, b = rows(tiny_run / "metrics.csv"), rows(tmp_path / "again" / "metrics.csv")
    assert [x["train_loss"] for x in a] == [x["train_loss"] for x in b]
    assert [x["val_loss"] for x in a] == [x["val_loss"] for x in b]


def test_resume_after_kill_9(tiny_data, tmp_path):
    run = tmp_path / "killed"
    EPOCHS = 8  # noqa: N806 - enough that the kill lands before the end on a fast machine
    exe = Path(sys.executable).with_name("sora")
    cmd = [
        str(exe),
        "train",
        "--data",
        str(tiny_data),
        "--out",
        str(run),
        "--epochs",
        str(EPOCHS),
        "--quiet",
        *SETS,
        "--set",
        "train.checkpoint_every_n_steps=2",
        "--set",
        "data.cache=false",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        metrics = run / "metrics.csv"
        if metrics.is_file() and len(rows(metrics)) >= 1:
            break
        time.sleep(0.2)
    time.sleep(0.3)  # into epoch 2 (an epoch of this tiny run takes about a second)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(rows(run / "metrics.csv"))
    assert done_before < EPOCHS, "the run finished before it could be killed"
    ckpt = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] > 0
    resumed = run_sora("train", "--data", tiny_data, "--out", run, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    r = rows(run / "metrics.csv")
    assert [x["epoch"] for x in r] == [str(k) for k in range(EPOCHS)]
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["epoch"] == EPOCHS - 1


def test_ddp_two_cpu_processes(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    proc = run_sora(
        "train",
        "--data",
        tiny_data,
        "--out",
        run,
        "--epochs",
        1,
        "--quiet",
        *SETS,
        "--set",
        "train.accelerator=cpu",
        "--set",
        "train.devices=2",
        "--set",
        "train.strategy=ddp",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training classify on 2 x cpu, ddp over gloo" in proc.stdout  # Sora's start line
    assert "Initializing distributed" not in proc.stderr  # Lightning's set-up lines hidden
    assert len(rows(run / "metrics.csv")) == 1 and (run / "model" / "model.safetensors").is_file()


def test_eval_report_and_predict(tiny_run, tiny_data):
    proc = run_sora("eval", tiny_run, "--data", tiny_data)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    for key in (
        "accuracy",
        "top5",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "per_class",
        "confusion_matrix",
        "classes",
        "num_videos",
    ):
        assert key in m
    assert m["num_videos"] == 10 and sum(map(sum, m["confusion_matrix"])) == 10
    assert m["top5"] >= m["accuracy"]
    assert run_sora("report", tiny_run).returncode == 0
    page = (tiny_run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "Per class" in page
    for png in (
        "plots/loss.png",
        "plots/accuracy.png",
        "eval/confusion_matrix.png",
        "eval/per_class_recall.png",
        "eval/mistakes.png",
    ):
        assert (tiny_run / png).read_bytes()[:4] == b"\x89PNG"
    video = sorted((tiny_data / "test" / "rise").iterdir())[0]
    out = run_sora("predict", tiny_run, video, "--format", "json")
    res = json.loads(out.stdout)
    assert res["label"] in m["classes"] and sum(res["probs"].values()) == pytest.approx(1, abs=1e-4)
    out = run_sora(
        "predict", tiny_run, video, "--format", "csv", "--window", "0.5", "--stride", "0.25"
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "video,start,end,label,probability" and len(lines) > 3
    out = run_sora("predict", tiny_run, video, video, "--format", "jsonl")
    assert [json.loads(x)["label"] for x in out.stdout.splitlines()] == [res["label"]] * 2
    out = run_sora("predict", tiny_run, video, "--stream", "--format", "jsonl")
    frames = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(frames) > 4 and all(f["label"] in m["classes"] for f in frames)


def test_streaming_matches_windows(tiny_run, tiny_data):
    pred = Predictor(tiny_run)
    video = sorted((tiny_data / "test" / "grow").iterdir())[0]
    win = pred.window_seconds  # clip_len frames at the model fps
    windows = pred.timeline(video, window=win, stride=win)
    ends = [s for s in pred.stream(video) if s["window_end"]]
    assert len(ends) >= 1
    for w, s in zip(windows, ends, strict=False):
        probs = torch.tensor([w["probs"][c] for c in pred.classes])
        torch.testing.assert_close(s["logits"].softmax(-1), probs, atol=1e-5, rtol=1e-4)


# -- bad input: one line, exit code != 0, nothing written over ----------------------------


def test_empty_dataset(tmp_path):
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "b").mkdir(parents=True)
    proc = run_sora("train", "--data", tmp_path / "empty", "--out", tmp_path / "r", *SETS)
    one_line_error(proc, "empty", "no readable videos")
    assert not (tmp_path / "r").exists()


def test_class_without_readable_video(tiny_data, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_data, root)
    for v in (root / "train" / "rise").iterdir():
        v.write_bytes(b"garbage")
    proc = run_sora("train", "--data", root, "--out", tmp_path / "r", *SETS)
    one_line_error(proc, "class 'rise' has only unreadable videos")


def test_manifest_label_not_in_checkpoint(tiny_run, tiny_data, tmp_path):
    video = sorted((tiny_data / "test" / "rise").iterdir())[0]
    (tmp_path / "m.csv").write_text(f"{video},rise\n{video},juggling\n")
    proc = run_sora("eval", tiny_run, "--data", tmp_path / "m.csv")
    one_line_error(proc, "m.csv: line 2: label 'juggling' is not one of the model's classes")


@pytest.mark.parametrize(
    "old, new", [("hidden: 16", "hidden: 24"), ("input_flow: true", "input_flow: false")]
)
def test_checkpoint_from_other_config(tiny_run, tmp_path, old, new):
    other = tmp_path / "other"
    shutil.copytree(tiny_run / "model", other / "model")
    cfg = (other / "model" / "config.yaml").read_text()
    assert old in cfg
    (other / "model" / "config.yaml").write_text(cfg.replace(old, new))
    proc = run_sora("predict", other, __file__)
    one_line_error(proc, "weights come from a different model configuration")
    with pytest.raises(CheckpointError):
        Predictor(other)


def test_non_checkpoint_as_run(tmp_path, tiny_data):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    one_line_error(run_sora("eval", f, "--data", tiny_data), "notes.txt: not a Sora run folder")
    one_line_error(run_sora("eval", tmp_path, "--data", tiny_data), "not a Sora run")
    assert f.read_text() == "hello"


def test_fake_checkpoint_file_is_refused(tiny_data, tmp_path):
    run = tmp_path / "fake"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 not really")
    proc = run_sora("train", "--data", tiny_data, "--out", run, "--resume", *SETS)
    one_line_error(proc, "last.ckpt: not a loadable checkpoint")


def test_existing_run_is_not_overwritten(tiny_run, tiny_data):
    before = (tiny_run / "metrics.csv").read_bytes()
    proc = run_sora("train", "--data", tiny_data, "--out", tiny_run, *SETS)
    one_line_error(proc, "already holds files; use --resume or another --out")
    assert (tiny_run / "metrics.csv").read_bytes() == before


def test_demo_end_to_end_keeps_earlier_runs(tmp_path):
    from sora.demo import format_summary, run_demo

    out = tmp_path / "demo"
    (out / "run").mkdir(parents=True)
    (out / "run" / "mine.txt").write_text("keep me")
    overrides = [*tiny_overrides(), "train.epochs=1"]
    result = run_demo(
        out, overrides=overrides, per_class=(2, 1, 1), progress=False, log=lambda *a: None
    )
    run = out / "run-2"
    assert (out / "run" / "mine.txt").read_text() == "keep me"
    assert json.loads((run / "summary.json").read_text()) == result
    for name in (
        "report.html",
        "eval/metrics.json",
        "plots/timeline.png",
        "long_video.mp4",
        "long_video_timeline.json",
    ):
        assert (run / name).is_file(), name
    assert 0 <= result["test_accuracy"] <= 1 and 0 <= result["timeline_agreement"] <= 1
    assert "test accuracy" in format_summary(result)


def test_train_fits_the_frame_rate_to_short_videos(tmp_path):
    """0.2-s videos at 25 fps: at the tiny config's 8 fps a 4-frame clip would span 0.5 s
    and repeat frames; train raises data.fps to 20, says so, and the run keeps it."""
    from conftest import frames_with_index

    from sora.config import load_config
    from sora.io.video import write_video

    root = tmp_path / "short"
    for split, n in (("train", 3), ("val", 1)):
        for label in ("a", "b"):
            for i in range(n):
                frames = (
                    frames_with_index(5, 48, 64)
                    if label == "a"
                    else 255 - frames_with_index(5, 48, 64)
                )
                write_video(root / split / label / f"{i}.mp4", frames, 25.0)
    run = tmp_path / "run"
    sets = [x for o in tiny_overrides() for x in ("--set", o)]
    proc = run_sora("train", "--data", root, "--out", run, "--epochs", 1, "--quiet", *sets)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "data: data.fps 8 -> 20: the median training video lasts 0.20 s" in proc.stdout
    assert load_config(run / "config.yaml").data.fps == 20.0  # eval and predict do the same
    assert load_config(run / "model" / "config.yaml").data.fps == 20.0
    fit = json.loads((run / "train_summary.json").read_text())["data_fit"]
    assert fit["fps"] == 20.0 and fit["notes"][0].startswith("data.fps 8 -> 20")
