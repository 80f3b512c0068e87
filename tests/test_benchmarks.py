"""The benchmark helpers that the tables depend on (the benchmarks themselves are not run)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import common  # noqa: E402


def test_write_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    common.write_section("a", "## A\n\nfirst", path)
    common.write_section("b", "## B\n\nother", path)
    common.write_section("a", "## A\n\nsecond", path)
    text = path.read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.count("<!-- begin a -->") == 1 and text.index("## A") < text.index("## B")


def test_tsn_running_mean_streams_like_the_clip_forward():
    torch.manual_seed(0)
    model = common.TSN(4).eval()
    clip = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        state = model.init_state(1)
        for t in range(clip.shape[1]):
            out, state = model.step(clip[:, t], state)
        torch.testing.assert_close(out, model(clip))


def test_video_peers_take_the_sora_clip_layout():
    model = common.find_spec("mc3_18").build(5, 4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 4, 3, 32, 40)).shape == (2, 5)


def test_detection_step_budget_trains_that_many_steps_and_warms_up_the_memory(monkeypatch):
    """``--steps N`` trains exactly N steps whatever the clock, and SoraDet's cells are skipped
    for the first ``memory_warmup`` share of them."""
    import detection

    from sora.config import default_config
    from sora.models.soradet import SoraDet

    config = default_config("detect")
    config.model.num_classes = 3
    config.model.widths = [8, 8, 16, 16, 16]
    config.detect.fpn_dim = 8
    config.detect.memory_warmup = 0.5
    model = SoraDet(config.model, config.detect)
    item = {
        "video": torch.randn(2, 3, 64, 64),
        "targets": [
            {
                "boxes": torch.tensor([[8.0, 8.0, 30.0, 30.0]]),
                "labels": torch.tensor([1]),
                "ignore": torch.tensor([False]),
            }
        ]
        * 2,
        "index": 0,
    }
    flags = []
    run = model.run
    monkeypatch.setattr(
        model, "run", lambda v, memory=True: flags.append(memory) or run(v, memory=memory)
    )
    fit = detection.train_budget("SoraDet", model, [item] * 8, 1e-9, 1e-3, print, steps=4)
    assert fit["steps"] == 4 and fit["train_frames"] == 4 * 8 * 2
    assert flags == [False, False, True, True]

    # --fit-seconds: a clock at 1 s a step says 1,000 steps cannot fit in 50 s; the count is
    # lowered (from step 40, on the speed since step 10) to what fits, and the run ends there
    clock = iter(range(10**6))
    monkeypatch.setattr(detection.time, "perf_counter", lambda: float(next(clock)))
    log = []
    fit = detection.train_budget(
        "SoraDet", model, [item] * 8, 1e9, 1e-3, log.append, steps=1000, fit_seconds=50
    )
    assert fit["planned_steps"] == 1000 and 45 <= fit["steps"] <= 50
    assert any("1000 steps ->" in line for line in log)


def test_detection_peers_at_the_data_size_compute_on_the_frames_own_pixels():
    """``--peer-size data``: a torchvision detector's transform keeps a 96x128 frame at
    96x128 (native SSDlite would make it 320x320), and its boxes come back in those pixels."""
    import detection

    class Seq:
        height, width = 96, 128

    native = detection.tv_model("ssdlite320_mobilenet_v3_large", 3)
    assert detection.input_size(native, Seq) == (320, 320)
    for name in ("ssdlite320_mobilenet_v3_large", "fcos_resnet50_fpn"):
        model = detection.tv_model(name, 3, (96, 128)).eval()
        assert detection.input_size(model, Seq) == (96, 128), name
        with torch.no_grad():
            boxes = model([torch.rand(3, 96, 128)])[0]["boxes"]
        assert (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all(), name


def test_intrusion_fresh_videos_of_one_anomaly_type_are_those_the_synth_renders_as_it():
    import intrusion
    import pytest

    from sora.data.synth_anomaly import render_video

    crowd = intrusion.fresh_names(84, 120, "crowd")
    assert crowd == ["test_090", "test_097", "test_104", "test_111", "test_118"]
    assert render_video(0, "testing", 97, frames=8)[1]["type"] == "crowd"
    assert len(intrusion.fresh_names(84, 98)) == 14
    assert intrusion.fresh_names(84, 98, "crowd, vehicle") == [
        "test_088",
        "test_090",
        "test_095",
        "test_097",
    ]
    with pytest.raises(ValueError, match="unknown anomaly type 'crowds'"):
        intrusion.fresh_names(84, 98, "crowds")


def test_intrusion_matches_alerts_to_true_events_one_to_one():
    import intrusion

    # two people side by side cross the line in frame 10; a third far away crosses in frame 40
    frames = {
        10: [(1, [60, 40, 66, 57], 0), (2, [62, 40, 68, 57], 0), (3, [0, 70, 6, 87], 0)],
        40: [(3, [61, 70, 67, 87], 0)],
    }
    frames[11] = frames[10]
    events = [(1, 10), (2, 10), (3, 40)]
    # both alerts' boxes overlap person 1 most; one-to-one, the second is person 2's crossing
    both = [(10, [60, 40, 66, 57]), (11, [60.5, 40, 66.5, 57])]
    assert sorted(intrusion.match(both, events, frames)) == [(0, 0), (1, 1)]
    # a repeat on one person alone is a false alert; too late (over 0.5 s) or off the object
    # (IoU under 0.1) matches nothing
    late = [(10 + 8, [60, 40, 66, 57])]
    assert intrusion.match(late, events[:1], {18: frames[10]}) == []
    assert intrusion.match([(40, [100, 0, 106, 17])], events, frames) == []
    assert intrusion.match([(10, [0, 70, 6, 87]), (12, [0, 70, 6, 87])], events[2:], frames) == []
    # the same through score(), with the true crossings from the walks (x = 64 between frames)
    walks = {
        9: [(1, [59, 40, 65, 57], 0), (2, [60, 40, 66, 57], 0)],
        10: [(1, [62, 40, 68, 57], 0), (2, [63, 40, 69, 57], 0)],
    }
    alerts = [("cross", 10, [62, 40, 68, 57]), ("cross", 10, [62.5, 40, 68.5, 57])]
    stats = intrusion.score(["v"], {"v": walks}, {"v": alerts})["cross"]
    assert stats == {"true": 2, "alerts": 2, "matched": 2}
    stats = intrusion.score(["v"], {"v": walks}, {"v": alerts[:1] * 2})["cross"]
    assert stats == {"true": 2, "alerts": 2, "matched": 2}  # either person, one each
    stats = intrusion.score(["v"], {"v": walks}, {"v": alerts[:1]})["cross"]
    assert stats == {"true": 2, "alerts": 1, "matched": 1}


def test_intrusion_alert_before_an_objects_first_row_is_matched_to_its_first_box():
    import intrusion

    # a person comes in at the top edge: objects.csv's first row is frame 70 (under a pixel
    # in view before it, though the legs are drawn); the detector boxed them in frame 69
    frames = {70: [(21, [35.4, 0.0, 41.0, 2.0], 0)], 71: [(21, [35.4, 0.0, 41.0, 3.5], 0)]}
    events = [(21, 70)]
    assert intrusion.true_box(frames, 21, 69) == [35.4, 0.0, 41.0, 2.0]
    assert intrusion.true_box(frames, 21, 71) == [35.4, 0.0, 41.0, 3.5]  # its own frame's
    assert intrusion.match([(69, [34.0, 0.0, 41.0, 4.0])], events, frames) == [(0, 0)]
    # still off the object (IoU under 0.1) or beyond the 0.5-s window: no match
    assert intrusion.match([(69, [80.0, 0.0, 86.0, 4.0])], events, frames) == []
    assert intrusion.true_box(frames, 21, 60) is None
    assert intrusion.match([(60, [34.0, 0.0, 41.0, 4.0])], events, frames) == []


def test_intrusion_tracker_variants_each_see_one_walker_cross_once(tmp_path):
    import intrusion
    import numpy as np

    from sora.inference.detector import FrameDetections
    from sora.inference.zones import load_zones

    (tmp_path / "zones.yaml").write_text(
        "lines:\n  - name: gate\n    start: [64, 0]\n    end: [64, 96]\n"
    )
    rules = load_zones(tmp_path / "zones.yaml", 128, 96)
    fps = 15.0
    # one person walking right at 2 pixels a frame: the box's bottom centre passes x = 64
    # between frames 13 and 14 (0-based); the crossing holds for the debounce (0.3 s: 4
    # frames) at 0-based frame 17, which the benchmark numbers 18 (1-based, as objects.csv)
    frames = [
        FrameDetections(
            index=k,
            time=k / fps,
            boxes=np.array([[34 + 2 * k, 40, 40 + 2 * k, 57]], np.float32),
            scores=np.array([0.9], np.float32),
            labels=np.array([0]),
            embeddings=np.array([[0.5, 0.5, 0.5, 0.5]], np.float32),
            frame_size=(96, 128),
        )
        for k in range(30)
    ]
    setting = {"high": 0.5, "conf": 0.375, "fps": fps, "nms_iou": 0.5}
    variants = intrusion.tracker_variants()
    from sora.inference.tracking import WATCH_TRACKER

    assert next(iter(variants.values())) == (WATCH_TRACKER, {}, "colour")  # sora watch's
    for label, variant in variants.items():
        alerts = intrusion.tracked_alerts(frames, setting, rules, variant)
        assert [(k, f) for k, f, _ in alerts] == [("cross", 18)], label
