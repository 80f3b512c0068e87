"""Self-supervised pretraining (sora pretrain) and starting a classifier from it (--init)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import frames_with_index, run_sora, tiny_config, tiny_overrides

from sora.errors import CheckpointError, DatasetError
from sora.io.video import write_video
from sora.models.soranet import SoraNet

PRETRAIN_SETS = [x for o in tiny_overrides() for x in ("--set", o)] + ["--set", "data.clip_len=6"]


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pre") / "run"
    proc = run_sora(
        "pretrain", "--data", tiny_data / "train", "--out", run, "--epochs", 2, "--quiet",
        *PRETRAIN_SETS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "best val future-frame accuracy" in proc.stdout
    return run


def test_pretrain_writes_a_run_with_the_objective_per_epoch(pretrained):
    lines = (pretrained / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, r.split(","), strict=True)) for r in lines[1:]]
    assert {"train_loss", "val_loss", "val_acc"} <= set(header) and len(rows) == 2
    assert all(np.isfinite(float(r["val_loss"])) and 0 <= float(r["val_acc"]) <= 1 for r in rows)
    assert json.loads((pretrained / "model" / "classes.json").read_text()) == ["video"]
    summary = json.loads((pretrained / "train_summary.json").read_text())
    assert summary["task"] == "pretrain" and summary["train_videos"] + summary["val_videos"] == 30
    from sora.config import load_config

    assert load_config(pretrained / "config.yaml").data.cache is False  # bounded memory


def test_the_objective_learns_and_reaches_the_backbone():
    from sora.config import config_from_dict
    from sora.tasks.pretrain import FuturePrediction

    config = tiny_config()
    config.task, config.data.clip_len = "pretrain", 6
    config.model.num_classes = 1
    module = FuturePrediction(config.to_dict())
    torch.manual_seed(0)
    clip = torch.randn(3, 6, 3, 32, 32)
    loss, acc = module.objective(clip)
    # B*T = 18 candidates: an untrained model is near chance, -log(1/18) = 2.89
    assert 2.0 < loss.item() < 4.0 and 0 <= acc.item() <= 1
    loss.backward()
    assert next(module.model.backbone.parameters()).grad.abs().sum() > 0
    assert module.model.rnn.weight_ih_l0.grad.abs().sum() > 0
    opt = torch.optim.Adam(module.parameters(), 1e-2)
    for _ in range(30):  # the same clip again and again: the model can learn to tell frames apart
        opt.zero_grad()
        loss, acc = module.objective(clip)
        loss.backward()
        opt.step()
    assert acc.item() > 0.5 and loss.item() < 2.0
    config.data.clip_len = 3
    short = FuturePrediction(config_from_dict(config.to_dict()).to_dict())
    with pytest.raises(ValueError, match="must exceed pretrain.horizon"):
        short.objective(torch.randn(1, 3, 3, 32, 32))


def test_init_loads_all_but_the_head_and_refuses_another_model(pretrained, tmp_path):
    from sora.models.store import load_model
    from sora.tasks.pretrain import init_from

    source, _, _ = load_model(pretrained / "model")
    config = tiny_config()
    config.model.num_classes = 10
    model = SoraNet(config.model)
    head = model.head.weight.clone()
    loaded = init_from(model, pretrained)
    assert loaded and not any(k.startswith("head.") for k in loaded)
    theirs = source.state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith("head."):
            torch.testing.assert_close(v, theirs[k], msg=k)
    assert torch.equal(model.head.weight, head)
    config.model.hidden = 32
    with pytest.raises(CheckpointError, match="model config differs in model.hidden"):
        init_from(SoraNet(config.model), pretrained)


def test_train_init_from_the_cli(pretrained, tiny_data, tmp_path):
    sets = [x for o in tiny_overrides() for x in ("--set", o)]
    run = tmp_path / "run"
    proc = run_sora(
        "train", "--data", tiny_data, "--out", run, "--epochs", 1, "--quiet",
        "--init", pretrained, *sets,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"from {pretrained}" in proc.stdout
    assert json.loads((run / "train_summary.json").read_text())["init"] == str(pretrained)


def test_unlabelled_items_find_videos_at_any_depth(tmp_path):
    from sora.tasks.pretrain import unlabelled_items

    write_video(tmp_path / "a.mp4", frames_with_index(4), 10)
    write_video(tmp_path / "cam1" / "day2" / "b.mkv", frames_with_index(4), 10)
    (tmp_path / "frames").mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(frames_with_index(1)[0]).save(tmp_path / "frames" / f"{i:04d}.jpg")
    (tmp_path / "notes.txt").write_text("not a video")
    write_video(tmp_path / ".hidden" / "c.mp4", frames_with_index(4), 10)
    found = [p.path.relative_to(tmp_path).as_posix() for p in unlabelled_items(tmp_path)]
    assert found == ["a.mp4", "cam1/day2/b.mkv", "frames"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no videos found"):
        unlabelled_items(empty)
