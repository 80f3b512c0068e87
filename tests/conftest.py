"""Shared fixtures: tiny videos, a tiny MotionShapes dataset, a tiny config, a trained tiny run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sora.config import Config
from sora.data import synth
from sora.io.video import write_video


def frames_with_index(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """``(n, h, w, 3)`` frames whose brightness encodes the frame index (4 * i)."""
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i] = min(255, 4 * i)
    return out


@pytest.fixture
def make_video(tmp_path):
    def make(name="v.mp4", n=30, fps=15.0, h=48, w=64, codec="libx264", frames=None):
        frames = frames_with_index(n, h, w) if frames is None else frames
        return write_video(tmp_path / name, frames, fps, codec=codec)

    return make


def tiny_config() -> Config:
    c = Config()
    c.data.fps = 8.0
    c.data.clip_len = 4
    c.data.short_side = 32
    c.data.crop = [32, 32]
    c.data.batch_size = 4
    c.data.eval_views = 2
    c.model.widths = [8, 8, 8, 8, 8]
    c.model.scale_dim = 4
    c.model.grid = 2
    c.model.fusion_dim = 16
    c.model.hidden = 16
    c.train.epochs = 2
    c.train.early_stop_patience = 0
    return c


def tiny_overrides() -> list[str]:
    return [
        "data.fps=8",
        "data.clip_len=4",
        "data.short_side=32",
        "data.crop=[32,32]",
        "data.batch_size=4",
        "data.eval_views=2",
        "model.widths=[8,8,8,8,8]",
        "model.scale_dim=4",
        "model.grid=2",
        "model.fusion_dim=16",
        "model.hidden=16",
        "train.early_stop_patience=0",
    ]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """MotionShapes with 3 train, 1 val, 1 test videos per class (~5 s to make)."""
    root = tmp_path_factory.mktemp("motionshapes")
    return synth.generate(root / "ms", train=3, val=1, test=1, seed=0, workers=2)


def run_sora(*args, check=False, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Run the ``sora`` command as a user would (a fresh process)."""
    exe = Path(sys.executable).with_name("sora")
    proc = subprocess.run(
        [str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sora {args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A run trained for 2 epochs on ``tiny_data`` through the CLI; what the command printed
    (stdout then stderr) is kept beside it in ``train_output.txt``."""
    run = tmp_path_factory.mktemp("runs") / "run"
    sets = [x for o in tiny_overrides() for x in ("--set", o)]
    proc = run_sora(
        "train", "--data", tiny_data, "--out", run, "--epochs", 2, "--quiet", *sets, check=True
    )
    (run.parent / "train_output.txt").write_text(proc.stdout + proc.stderr)
    return run


# -- detection: a tiny MotionShapes-Det and a SoraDet trained on it (test_detect, test_track)
TINY = [
    "detect.size=[48,64]",
    "detect.fpn_dim=8",
    "detect.head_convs=1",
    "detect.clip_len=4",
    "model.widths=[8,8,8,8,8]",
    "data.batch_size=2",
    "train.early_stop_patience=0",
]
TINY_SETS = [x for o in TINY for x in ("--set", o)]


@pytest.fixture(scope="session")
def det_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("msdet") / "det"
    run_sora(
        "data",
        "synth",
        "--task",
        "detect",
        "--out",
        root,
        "--train",
        2,
        "--val",
        1,
        "--test",
        1,
        "--frames",
        16,
        "--workers",
        1,
        check=True,
    )
    return root


@pytest.fixture(scope="session")
def det_run(det_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("detruns") / "run"
    proc = run_sora(
        "train", "--data", det_data, "--out", run, "--epochs", 1, "--quiet", *TINY_SETS, check=True
    )
    assert "best val mAP50" in proc.stdout
    return run
