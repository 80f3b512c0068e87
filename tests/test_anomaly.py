"""Anomaly detection: the layout, the synthetic scene, SoraAnomaly, the metrics, conversion of
the public benchmarks, and train -> eval from the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from sora.cli import main
from sora.config import AnomalyConfig, ModelConfig, default_config
from sora.data.anomaly import fit_labels, read_anomaly_split
from sora.data.convert_anomaly import convert
from sora.data.synth_anomaly import TYPES, generate, render_video
from sora.errors import DatasetError
from sora.evaluation.anomaly import (
    alarm_counts,
    anomaly_metrics,
    auc,
    detection_at_false_alarms,
    eer,
    runs,
)
from sora.io.video import write_video
from sora.models.anomaly import MIN_BLOCKS, SoraAnomaly, dwell_counts, return_level
from sora.models.store import load_model
from sora.tasks.anomaly import ALERT_BLOCK_SECONDS, fit_normality, normalize, stream

TINY = ModelConfig(widths=[8, 8, 16, 16, 16])


@pytest.fixture(scope="module")
def anomaly_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomaly") / "data"
    generate(root, train=2, test=7, frames=40, workers=1)
    return root


def test_synth_layout_labels_and_determinism(anomaly_data):
    videos = read_anomaly_split(anomaly_data, "testing")
    assert [v.name for v in videos] == [f"test_{i:03d}" for i in range(7)]
    assert len(read_anomaly_split(anomaly_data, "training")) == 2
    for v in videos:
        assert len(v.labels) == 40
        # every labelled frame has a box of its video's type, and only labelled frames do
        kinds = {k for ks in v.types.values() for k in ks}
        assert kinds <= {TYPES[int(v.name[-3:]) % 7]}
        assert set(v.types) == set(np.flatnonzero(v.labels))
    a, ann_a = render_video(0, "testing", 3, 30)
    b, ann_b = render_video(0, "testing", 3, 30)
    assert np.array_equal(a, b) and np.array_equal(ann_a["labels"], ann_b["labels"])
    # training videos are normal: no anomalous agent at all
    _, ann = render_video(0, "training", 0, 30)
    assert ann["labels"].sum() == 0 and ann["type"] is None
    # the background does not move: two training videos share it away from the walkers
    assert (a[0].astype(int) - render_video(0, "training", 1, 1)[0][0]).__abs__()[0:8].mean() < 6


def test_layout_labels_from_csv_and_bad_labels(tmp_path):
    root = tmp_path / "set"
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    write_video(root / "training" / "a.mp4", frames, 10)
    write_video(root / "testing" / "b.mp4", frames, 10)
    with pytest.raises(DatasetError, match="no frame labels"):
        read_anomaly_split(root, "testing")
    (root / "frame_labels.csv").write_text("video,frame,label\nb,3,1\nb,4,1\n")
    (v,) = read_anomaly_split(root, "testing")
    assert fit_labels(v, 6).tolist() == [0, 0, 1, 1, 0, 0]  # padded with normal frames
    (root / "testing" / "b.txt").write_text("0\n1\nx\n")
    with pytest.raises(DatasetError, match=r"b\.txt: line 3: expected 0 or 1"):
        read_anomaly_split(root, "testing")
    (root / "testing" / "b.txt").write_text("0\n1\n")
    (v,) = read_anomaly_split(root, "testing")
    with pytest.raises(DatasetError, match="2 frame labels for 6 frames"):
        fit_labels(v, 6)


def _model(**kw) -> SoraAnomaly:
    torch.manual_seed(0)
    cfg = AnomalyConfig(size=[32, 48], **kw)
    model = SoraAnomaly(TINY, cfg).eval()
    model.set_calibration(torch.rand(10, 2, 3))
    return model


@pytest.mark.parametrize("kw", [{}, {"temporal": "none", "target": "current", "motion": False}])
def test_streaming_equals_offline(kw):
    model = _model(**kw)
    model.dwell_level.fill_(0.19)  # most cells of a random clip count as occupied, not all
    model.set_calibration(torch.rand(10, 2, 3), torch.rand(10, 2, 3), 3 * torch.rand(10, 2, 3))
    clip = torch.randn(2, 7, 3, 32, 48)
    with torch.no_grad():
        offline = model(clip)
        state = model.init_state(2)
        steps = []
        for t in range(7):
            out, state = model.step(clip[:, t], state)
            steps.append(out)
        # and in two chunks
        first, mid = model.run(clip[:, :3])
        rest, _ = model.run(clip[:, 3:], mid)
    assert offline["cells"].shape == (2, 7, 2, 3) and offline["score"].shape == (2, 7)
    assert offline["pred"].shape == (2, 7, 3, 8, 12)
    assert offline["dwell"].max() >= 2  # counts carried across the chunks too
    for key in ("cells", "score", "pred_error", "persistence", "dwell"):
        streamed = torch.stack([s[key] for s in steps], 1)
        torch.testing.assert_close(streamed, offline[key], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            torch.cat([first[key], rest[key]], 1), offline[key], atol=1e-5, rtol=1e-4
        )
    assert torch.all(offline["cells"][:, 0] == 0)  # nothing to compare the first frame with


def test_calibration_and_scores():
    model = _model()
    err = torch.rand(50, 2, 3)
    err[:, 0, 0] = 0.5  # a cell where nothing ever changes: its spread is floored
    model.set_calibration(err)
    assert torch.allclose(model.calibration[0], err.mean(0))
    assert model.calibration[1, 0, 0] >= 0.1 * err.std(0).mean() - 1e-6
    # the heat map is the larger of the calibrated error and the calibrated persistence; the
    # frame score its maximum, smoothed
    model.set_calibration(err, torch.rand(50, 2, 3) + 1, 4 * torch.rand(50, 2, 3) + 2)
    model.dwell_level.fill_(0.19)
    clip = torch.randn(1, 5, 3, 32, 48)
    with torch.no_grad():
        out = model(clip)
    z_err = (out["pred_error"] - model.calibration[0]) / model.calibration[1]
    z_stay = (out["persistence"] - model.persist_calibration[0]) / model.persist_calibration[1]
    z_dwell = (out["dwell"] - model.dwell_calibration[0]) / model.dwell_calibration[1]
    z = torch.maximum(torch.maximum(z_err, z_stay), z_dwell)
    assert (z_dwell > torch.maximum(z_err, z_stay)).any()  # the third map does take part
    torch.testing.assert_close(out["cells"][:, 1:], z[:, 1:])
    model.cfg.smooth = 0
    with torch.no_grad():
        raw = model(clip)["score"]
    torch.testing.assert_close(raw[:, 1:], z[:, 1:].flatten(2).amax(-1))
    with pytest.raises(ValueError, match=r"anomaly.size"):
        model(torch.zeros(1, 2, 3, 32, 40))


def _maps_off(model, clip: torch.Tensor) -> dict:
    """The outputs of ``model`` (its persistence and dwell maps turned off) on ``clip``,
    checking that its heat map is then the calibrated prediction error alone."""
    with torch.no_grad():
        off = model(clip)
    z = (off["pred_error"] - model.calibration[0]) / model.calibration[1]
    torch.testing.assert_close(off["cells"][:, 1:], z[:, 1:])
    return off


def test_persistence_map_by_hand():
    model = _model(persist=3.0, dwell=0)
    model.set_background(torch.zeros(4, 3, 32, 48))
    clip = torch.zeros(1, 6, 3, 32, 48)
    clip[:, 2:, :, 0:16, 16:32] = 1.0  # something appears in cell (0, 1) at frame 2, stays
    with torch.no_grad():
        out = model(clip)
    beta = 1 - math.exp(-1 / 3)
    expected = [0, 0] + [1 - (1 - beta) ** k for k in range(1, 5)]  # the mean over 3 frames
    torch.testing.assert_close(out["persistence"][0, :, 0, 1], torch.tensor(expected))
    assert out["persistence"][0][:, [0, 0, 1, 1, 1], [0, 2, 0, 1, 2]].abs().max() == 0
    # off: zeros, and the heat map is the prediction error alone
    model.cfg.persist = 0
    off = _maps_off(model, clip)
    assert torch.all(off["persistence"] == 0)


def test_dwell_map_by_hand():
    model = _model(dwell=0.5)
    model.set_background(torch.zeros(4, 3, 32, 48))
    # the level: the median of the normal frames' occupancy
    model.set_dwell_level(torch.arange(101.0).view(101, 1, 1).expand(101, 2, 3) / 100)
    assert float(model.dwell_level) == pytest.approx(0.5)
    clip = torch.zeros(1, 8, 3, 32, 48)
    clip[:, 2:, :, 0:16, 16:32] = 1.0  # something comes into cell (0, 1) at frame 2 and stays
    clip[:, 1:4, :, 16:32, 0:16] = 1.0  # another passes cell (1, 0) in frames 1-3
    clip[:, 5:, :, 16:32, 0:4] = 1.0  # a quarter of cell (1, 0) from frame 5: under the level
    with torch.no_grad():
        out = model(clip)
    torch.testing.assert_close(out["dwell"][0, :, 0, 1], torch.tensor([0, 0, 1, 2, 3, 4, 5, 6.0]))
    torch.testing.assert_close(out["dwell"][0, :, 1, 0], torch.tensor([0, 1, 2, 3, 0, 0, 0, 0.0]))
    assert out["dwell"][0][:, [0, 0, 1, 1], [0, 2, 1, 2]].abs().max() == 0
    # streamed one frame at a time, the counts are the same
    state, counts = model.init_state(1), []
    with torch.no_grad():
        for t in range(8):
            o, state = model.step(clip[:, t], state)
            counts.append(o["dwell"])
    torch.testing.assert_close(torch.stack(counts, 1), out["dwell"])
    # off: zeros, and the heat map leaves it out
    model.cfg.dwell = 0
    model.cfg.persist = 0
    off = _maps_off(model, clip)
    assert torch.all(off["dwell"] == 0)
    with pytest.raises(ValueError, match=r"anomaly.dwell must be in \[0, 1\), got 1.0"):
        _model(dwell=1.0)


def test_fit_normality_sets_the_dwell_level_and_counts_on_every_training_frame():
    config = default_config("anomaly")
    config.anomaly.size = [32, 48]
    model = _model()
    g = torch.Generator().manual_seed(0)
    # a still scene where a bright square sits in one cell for the 12 middle frames of the
    # training part: longer than anything in the held-out part
    train = torch.full((30, 3, 32, 48), 60, dtype=torch.uint8)
    train[10:22, :, 0:16, 0:16] = 250
    val = torch.full((10, 3, 32, 48), 60, dtype=torch.uint8)
    val[2:5, :, 16:32, 16:32] = 250
    train = train + torch.randint(0, 6, train.shape, generator=g, dtype=torch.uint8)
    val = val + torch.randint(0, 6, val.shape, generator=g, dtype=torch.uint8)
    dm = SimpleNamespace(train_parts=[train], val_parts=[val], fps=2.5)
    summary = fit_normality(model, dm, config)
    assert summary["calibration_frames"] == 10 and np.isfinite(summary["threshold"])
    # the alert threshold comes from every frame (4 blocks of 4 s at 2.5 fps: too few for a
    # fit, so the highest score), above the held-out frames' highest
    whole = stream(model, torch.cat([train, val]), config)["score"]
    assert summary["threshold_frames"] == 40 and summary["false_alarms_per_hour"] == 1.0
    assert summary["threshold"] == pytest.approx(float(whole.max()))
    held = stream(model, torch.cat([train[-config.anomaly.clip_len :], val]), config)["score"]
    assert summary["threshold"] > float(held[config.anomaly.clip_len :].max())
    config.anomaly.false_alarms_per_hour = 0.0  # the rule of runs saved before it
    old = fit_normality(model, dm, config)
    assert old["threshold"] == pytest.approx(float(held[config.anomaly.clip_len :].max()))
    occupancy = model.occupancy(normalize(val, config))
    assert float(model.dwell_level) == pytest.approx(float(occupancy.flatten().quantile(0.8)))
    counts = dwell_counts(
        model.occupancy(normalize(torch.cat([train, val]), config))[None] > model.dwell_level
    )[0]
    assert counts[:, 0, 0].max() == 12  # the square's stay in the training part counts
    torch.testing.assert_close(model.dwell_calibration[0], counts.mean(0))


def test_return_level_of_normal_scores():
    g = torch.Generator().manual_seed(0)
    # block maxima drawn from a Gumbel (location 3, scale 2), each in a block of lower scores
    loc, scale, block, period = 3.0, 2.0, 20, 100
    u = torch.rand(5000, generator=g, dtype=torch.float64)
    maxima = loc - scale * torch.log(-torch.log(u))
    blocks = torch.rand(5000, block, generator=g, dtype=torch.float64) * 0.1 + maxima[:, None] - 1
    blocks[:, 7] = maxima
    truth = loc - scale * math.log(-math.log(1 - 1 / period))  # 12.2
    videos = list(blocks.flatten().split(block * 50))  # 100 videos of 50 blocks
    assert return_level(videos, block, period) == pytest.approx(truth, rel=0.03)
    # footage shorter than a period: never below the highest score it reached
    few = videos[:1]
    assert return_level(few, block, 1e6) > return_level(few, block, 1e3) >= float(few[0].max())
    # longer than a period (50 blocks, one a period of 20): the fit, under that top
    assert return_level(few, block, 20) < float(few[0].max())
    # too few blocks for a fit (the part past the last whole block counts only for the top),
    # no footage, or a period of a block
    short = [torch.tensor([1.0] * (block * (MIN_BLOCKS - 1)) + [9.0])]
    assert return_level(short, block, 1e3) == 9.0
    assert return_level([], block, 1e3) == float("inf")
    assert return_level(videos, block, 1) == pytest.approx(float(blocks.max()))
    assert ALERT_BLOCK_SECONDS == 4.0
    with pytest.raises(ValueError, match=r"anomaly.false_alarms_per_hour must be >= 0, got -1"):
        _model(false_alarms_per_hour=-1.0)


def test_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 0, 0, 1, 0, 0])
    assert auc(y.astype(float), y) == 1.0 and eer(y.astype(float), y) == 0.0
    assert auc(-y.astype(float), y) == 0.0
    assert auc(np.ones(4), np.zeros(4)) is None
    assert runs(y > 0) == [(3, 5), (7, 8)]
    s = np.array([0, 0.9, 0, 0.5, 0.2, 0, 0, 0.8, 0, 0])
    # at 0.4: events (3,5) and (7,8) both hit; the run at frame 1 is one false alarm
    assert alarm_counts([s], [y], 0.4) == (2, 2, 1)
    assert alarm_counts([s], [y], 0.6) == (1, 2, 1)
    # no false alarm allowed: the threshold must sit above 0.9, so nothing is detected
    rate, thr = detection_at_false_alarms([s], [y], minutes=1.0, rate=0.0)
    assert rate == 0.0 and thr >= 0.9
    rate, thr = detection_at_false_alarms([s], [y], minutes=10.0, rate=0.1)
    assert rate == 1.0 and thr < 0.5


def test_metrics_per_type_and_macro(anomaly_data):
    videos = read_anomaly_split(anomaly_data, "testing")
    labels = [v.labels for v in videos]
    perfect = [lb.astype(float) for lb in labels]
    m = anomaly_metrics(perfect, videos, labels, fps=15.0)
    assert m["auc_micro"] == 1.0 and m["eer"] == 0.0
    assert m["detection_rate_at_1_false_alarm_per_10_min"] == 1.0
    kinds = {k for v in videos for ks in v.types.values() for k in ks}
    assert set(m["per_type"]) == kinds and all(p["auc"] == 1.0 for p in m["per_type"].values())
    blind = [np.zeros(len(lb)) for lb in labels]
    assert anomaly_metrics(blind, videos, labels, fps=15.0)["auc_micro"] == 0.5


def _frames(folder, n, ext=".tif"):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((16, 24), 40 * i % 255, np.uint8)).save(
            folder / f"{i + 1:03d}{ext}"
        )


def test_convert_ped2_avenue_shanghaitech(tmp_path):
    from scipy.io import savemat

    ped = tmp_path / "UCSDped2"
    _frames(ped / "Train" / "Train001", 4)
    _frames(ped / "Test" / "Test001", 5)
    _frames(ped / "Test" / "Test002", 5)
    gt = ped / "Test" / "Test001_gt"
    gt.mkdir()
    for i in range(5):
        mask = np.zeros((16, 24), np.uint8)
        mask[2, 3] = 255 * (i >= 3)
        Image.fromarray(mask).save(gt / f"{i + 1:03d}.bmp")
    (ped / "UCSDped2.m").write_text("TestVideoFile{2}.gt_frame = [2:3];\n")
    assert convert(ped, "ped2", tmp_path / "ped") == (1, 2)
    t1, t2 = read_anomaly_split(tmp_path / "ped", "testing")
    assert t1.labels.tolist() == [0, 0, 0, 1, 1] and t2.labels.tolist() == [0, 1, 1, 0, 0]
    assert len(list((tmp_path / "ped" / "training" / "Train001").glob("*.png"))) == 4

    ave = tmp_path / "Avenue Dataset"
    clip = np.zeros((4, 16, 24, 3), np.uint8)
    write_video(ave / "training_videos" / "01.avi", clip, 25, codec="mpeg4")
    write_video(ave / "testing_videos" / "01.avi", clip, 25, codec="mpeg4")
    masks = np.empty((1, 4), dtype=object)
    for i in range(4):
        masks[0, i] = np.full((16, 24), i == 2, np.uint8)
    (ave / "ground_truth_demo" / "testing_label_mask").mkdir(parents=True)
    savemat(ave / "ground_truth_demo" / "testing_label_mask" / "1_label.mat", {"volLabel": masks})
    assert convert(ave, "avenue", tmp_path / "ave") == (1, 1)
    (v,) = read_anomaly_split(tmp_path / "ave", "testing")
    assert v.labels.tolist() == [0, 0, 1, 0]

    sht = tmp_path / "shanghaitech"
    write_video(sht / "training" / "videos" / "01_001.avi", clip, 24, codec="mpeg4")
    _frames(sht / "testing" / "frames" / "01_0014", 3, ".jpg")
    (sht / "testing" / "test_frame_mask").mkdir(parents=True)
    np.save(sht / "testing" / "test_frame_mask" / "01_0014.npy", np.array([0, 1, 1]))
    assert convert(sht, "shanghaitech", tmp_path / "sht") == (1, 1)
    (v,) = read_anomaly_split(tmp_path / "sht", "testing")
    assert v.labels.tolist() == [0, 1, 1] and v.path.is_dir()
    # nothing is written over, and a wrong layout is named
    with pytest.raises(FileExistsError, match="not empty"):
        convert(sht, "shanghaitech", tmp_path / "sht")
    with pytest.raises(DatasetError, match="no Train/ folder: not the ped2 layout"):
        convert(sht, "ped2", tmp_path / "x")


def test_cli_train_eval_and_errors(anomaly_data, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [
        "--set", "anomaly.size=[48,64]", "--set", "model.widths=[8,8,16,16,16]",
        "--set", "anomaly.clip_len=6",
    ]  # fmt: skip
    assert main(["train", "--data", str(anomaly_data), "--out", str(run), "--epochs", "1",
                 "--quiet", *sets]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "best val prediction PSNR" in out and "alert threshold" in out
    # the dwell map's level was set from the val frames and saved with the weights; a model
    # folder saved before the map existed (no anomaly.dwell) loads without it
    model, config, _ = load_model(run / "model")
    assert config.anomaly.dwell == 0.8 and 0 < float(model.dwell_level) < float("inf")
    old = tmp_path / "old-model"
    shutil.copytree(run / "model", old)
    saved = yaml.safe_load((old / "config.yaml").read_text())
    del saved["anomaly"]["dwell"]
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    with safe_open(str(old / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        kept = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("dwell_")}
    save_file(kept, str(old / "model.safetensors"), metadata=meta)
    before, config, _ = load_model(old)
    assert config.anomaly.dwell == 0 and not hasattr(before, "dwell_level")
    assert main(["eval", str(run), "--data", str(anomaly_data)]) == 0
    out = capsys.readouterr().out
    assert "frame AUC" in out and "per type AUC" in out and "at the run's alert threshold" in out
    m = json.loads((run / "eval" / "anomaly.json").read_text())
    a = m["at_alert_threshold"]
    assert (a["events_detected"], a["events"], a["false_alarms"]) == alarm_counts(
        [np.asarray(r) for r in _rows_by_video(run, "score")],
        [np.asarray(r, dtype=int) for r in _rows_by_video(run, "label")],
        m["alert_threshold"],
    )
    assert m["num_frames"] == 7 * 40 and 0 <= m["auc_micro"] <= 1
    assert set(m["per_type"]) <= set(TYPES)
    for name in ("anomaly_timeline.png", "anomaly_roc.png", "anomaly_heatmaps.png"):
        assert (run / "eval" / name).stat().st_size > 1000
    rows = (run / "eval" / "anomaly_scores.csv").read_text().splitlines()
    assert rows[0] == "video,frame,score,label" and len(rows) == 1 + 7 * 40
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "frame AUC (micro)" in page and "Per anomaly type" in page and page.count("<img") >= 5
    assert f"at the alert threshold {m['alert_threshold']:.2f}" in page
    # bad input: one line naming the file
    bad = tmp_path / "bad"
    (bad / "training").mkdir(parents=True)
    (bad / "testing").mkdir()
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r2")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training: no videos" in err


def test_watch_demo_end_to_end(anomaly_data, tmp_path):
    from sora.demo_watch import format_watch_summary, read_events, run_watch_demo
    from sora.io.video import probe

    tiny = [
        "anomaly.size=[48,64]", "anomaly.clip_len=6", "detect.size=[48,64]", "detect.fpn_dim=8",
        "detect.head_convs=1", "detect.clip_len=4", "model.widths=[8,8,16,16,16]",
        "data.batch_size=2", "train.epochs=1", "train.early_stop_patience=0",
    ]  # fmt: skip
    result = run_watch_demo(
        tmp_path / "demo", data=anomaly_data, videos=(2, 7), frames=40, overrides=tiny,
        progress=False, log=lambda _: None,
    )  # fmt: skip
    run = tmp_path / "demo" / "run"
    assert result["watched"] == str(anomaly_data / "testing" / "test_006.mp4")  # the last one
    assert result["anomaly_epochs"] == 1 and result["detector_epochs"] == 1
    assert 0 <= result["test_auc_micro"] <= 1 and 0 <= result["detector_test_map50"] <= 1
    assert (run / "eval" / "anomaly.json").is_file()
    assert (run / "detector" / "model" / "config.yaml").is_file()
    assert (run / "detector" / "report.html").is_file()
    det = json.loads((run / "detector" / "train_summary.json").read_text())
    assert det["monitor"] == "val_map" and det["best_val_map"] is not None
    watch = run / "watch"
    assert (watch / "zones.yaml").read_text() == (anomaly_data / "zones.yaml").read_text()
    assert probe(watch / "watched.mp4").num_frames == 40
    summary = json.loads((watch / "summary.json").read_text())
    assert summary["frames_processed"] == 40 and summary["frames_dropped"] == 0
    events = read_events(watch / "events.jsonl")
    assert len(events) == sum(result["events"].values())
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    page = Path(result["report"]).read_text()
    assert "sora watch on test_006" in page and "frames processed" in page
    assert page.count("data:image/jpeg") >= min(len(events), 1)
    saved = json.loads((run / "summary.json").read_text())
    assert saved["test_auc_micro"] == result["test_auc_micro"]
    # --anomaly-threshold: every frame over it, so the alarm never clears: one alert, once the
    # score has stayed over it for --anomaly-hold (0.5 s: the frame at 8/15 s, the first at
    # or after it at 15 fps); none when no frame is over it
    from sora.inference.watch import watch

    video = anomaly_data / "testing" / "test_006.mp4"
    got: list = []
    low = watch(video, anomaly=run, anomaly_threshold=-1e9, max_frames=12, on_event=got.append)
    assert low["events"] == {"anomaly": 1} and low["anomaly_threshold"] == -1e9
    assert got[0]["time"] == pytest.approx(8 / 15, abs=1e-3)
    got.clear()
    watch(
        video,
        anomaly=run,
        anomaly_threshold=-1e9,
        anomaly_hold=0,
        max_frames=3,
        on_event=got.append,
    )
    assert [e["time"] for e in got] == [0.0]
    high = watch(video, anomaly=run, anomaly_threshold=1e9, max_frames=10)
    assert high["events"] == {} and high["frames_processed"] == 10
    assert "test frame AUC micro / macro" in format_watch_summary(result)


def _rows_by_video(run: Path, column: str) -> list[list[float]]:
    rows: dict[str, list[float]] = {}
    lines = (run / "eval" / "anomaly_scores.csv").read_text().splitlines()
    head = lines[0].split(",")
    for line in lines[1:]:
        r = dict(zip(head, line.split(","), strict=True))
        rows.setdefault(r["video"], []).append(float(r[column]))
    return list(rows.values())
