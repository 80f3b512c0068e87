"""ObjectHold: boxes held on objects whose detections stop (``detect.hold``)."""

import json
import shutil

import pytest
import torch
from conftest import run_sora

from sora.inference.hold import HOLD_HIGH, ObjectHold


def frame(*dets, forecast=None):
    """Detections ``(x0, y0, x1, y1, score, label)`` -> the dict SoraDet's decoding gives."""
    rows = torch.tensor([d[:5] for d in dets], dtype=torch.float32).reshape(-1, 5)
    return {
        "boxes": rows[:, :4],
        "scores": rows[:, 4],
        "labels": torch.tensor([d[5] for d in dets], dtype=torch.long),
        "forecast": torch.tensor(forecast or [False] * len(dets), dtype=torch.bool),
    }


def moving(t, score=0.9, label=1):
    """An object 20 px wide moving right by 3 px a frame."""
    x = 10.0 + 3.0 * t
    return (x, 40.0, x + 20.0, 60.0, score, label)


def test_a_lost_object_is_held_on_its_path_for_k_frames_then_let_go():
    hold = ObjectHold(3)
    for t in range(8):  # seen, with a second object that stays
        out = hold(frame(moving(t), (100.0, 10.0, 110.0, 20.0, 0.8, 0)))
        assert len(out["boxes"]) == 2 and not out["forecast"].any()
    held_x = []
    for t in range(8, 13):  # hidden: only the other object is detected
        out = hold(frame((100.0, 10.0, 110.0, 20.0, 0.8, 0)))
        extra = out["forecast"]
        if t < 11:
            assert int(extra.sum()) == 1, t
            assert int(out["labels"][extra]) == 1
            assert float(out["scores"][extra]) == pytest.approx(0.9)  # its last score
            box = out["boxes"][extra][0]
            held_x.append(float(box[0]))
            assert abs(float(box[0]) - moving(t)[0]) < 3.0, (t, box)  # it moves on
            assert float(box[2] - box[0]) == pytest.approx(20.0, abs=1.0)
        else:
            assert not extra.any(), t  # let go after 3 frames
        assert len(out["boxes"]) == 1 + int(extra.sum())
    assert held_x[0] < held_x[1] < held_x[2]


def test_a_held_box_defers_to_a_stronger_detection_and_replaces_a_weaker_one():
    hold = ObjectHold(4)
    for t in range(6):
        hold(frame(moving(t)))
    # a weak box of its class on it (below what the tracker is shown): replaced
    weak = moving(6, score=0.75 * HOLD_HIGH - 0.05)
    out = hold(frame(weak))
    assert len(out["boxes"]) == 1 and bool(out["forecast"][0])
    assert float(out["scores"][0]) == pytest.approx(0.9)
    # a weak box of another class stays beside it
    out = hold(frame(moving(7, score=0.2, label=0)))
    assert sorted(out["labels"].tolist()) == [0, 1] and int(out["forecast"].sum()) == 1
    # a forecast box of the model scoring higher, its class, on it: the held box gives way
    out = hold(frame(moving(8, score=0.95), forecast=[True]))
    assert len(out["boxes"]) == 1 and float(out["scores"][0]) == pytest.approx(0.95)


def test_nothing_is_held_for_weak_forecast_or_forgotten_objects():
    hold = ObjectHold(4)
    for t in range(6):  # never confident: no track
        hold(frame(moving(t, score=0.3)))
    assert len(hold(frame())["boxes"]) == 0
    hold = ObjectHold(4)
    for t in range(6):  # the model's own forecast boxes do not start tracks
        hold(frame(moving(t), forecast=[True]))
    assert len(hold(frame())["boxes"]) == 0
    hold = ObjectHold(4)
    for t in range(6):
        hold(frame(moving(t)))
    hold.reset()  # a gap in the stream
    assert len(hold(frame())["boxes"]) == 0
    with pytest.raises(ValueError, match="at least 1 frame"):
        ObjectHold(0)
    from sora.config import Config, ConfigError, apply_overrides

    assert apply_overrides(Config(), ["detect.hold=4"]).detect.hold == 4
    with pytest.raises(ConfigError, match="detect.hold must be 0 or more frames, got -2"):
        apply_overrides(Config(), ["detect.hold=-2"])
    with pytest.raises(ValueError, match="cannot carry embeddings"):
        ObjectHold(2)({**frame(moving(0)), "embeddings": torch.zeros(1, 4)})


def test_hold_per_command_is_recorded_and_checked(det_run, det_data, tmp_path, tiny_run):
    """``--hold K`` decodes with ``detect.hold K`` (recorded in ``eval/metrics.json``); it adds
    only boxes marked ``forecast``, at most ``max_detections`` a frame; bad values and other
    tasks are one-line errors."""
    from sora.data.mot import read_split
    from sora.evaluation.detection import detect_sequence
    from sora.inference.detector import Detector

    seq = read_split(det_data, "test")[0]
    plain = detect_sequence(Detector(det_run), seq)
    held = detect_sequence(Detector(det_run, hold=4), seq)
    assert Detector(det_run).config.detect.hold == 0  # the run is untouched
    limit = Detector(det_run).config.detect.max_detections
    for k in plain:
        seen = ~held[k]["forecast"]
        assert len(held[k]["boxes"]) <= limit
        # every box the frame itself gave is one of the plain decoding's
        for box in held[k]["boxes"][seen]:
            assert (plain[k]["boxes"] == box).all(1).any()

    run = tmp_path / "run"
    shutil.copytree(det_run, run)
    run_sora("eval", run, "--data", det_data, "--hold", "4", check=True)
    assert json.loads((run / "eval" / "metrics.json").read_text())["hold"] == 4
    proc = run_sora("eval", run, "--data", det_data, "--hold", "-1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "hold must be 0 or more frames, got -1" in proc.stderr
    proc = run_sora("eval", tiny_run, "--data", det_data, "--hold", "4")
    assert proc.returncode == 1 and "--hold is for detection runs" in proc.stderr
    proc = run_sora("predict", tiny_run, "x.mp4", "--hold", "4")
    assert proc.returncode == 1 and "are for detection runs" in proc.stderr


def test_a_held_box_is_clipped_to_the_frame_and_dropped_once_its_object_has_left():
    hold = ObjectHold(4, size=(100, 70))  # (height, width)
    for t in range(14):
        hold(frame(moving(t)))
    xs = []
    for _ in range(4):  # hidden from t = 14 on: boxes 52-72, 55-75, 58-78, 61-81
        out = hold(frame())
        xs.append(out["boxes"][:, 2].tolist())
    for right in xs[:2]:  # 90% and 75% of it in the frame: clipped at the right edge
        assert len(right) == 1 and right[0] == pytest.approx(70.0, abs=0.01)
    assert len(xs[2]) == 1 and xs[3] == []  # 60%, then 45% in the frame


def test_the_box_of_an_object_shrinking_out_of_view_is_not_held_once_it_is_thin():
    """Leaving at the top edge, an object's (clipped) boxes get lower every frame; the
    filter's box goes on shrinking (5, then 3 pixels high), and is dropped once lower than
    ``min_size``."""
    holds = {m: ObjectHold(4, size=(100, 100), min_size=m) for m in (1.0, 3.0, 4.0)}
    for t in range(10):
        for hold in holds.values():
            hold(frame((40.0, 0.0, 60.0, 25.0 - 2.0 * t, 0.9, 1)))  # 25 px high -> 7
    heights = {m: [] for m in holds}
    for _ in range(4):
        for m, hold in holds.items():
            boxes = hold(frame())["boxes"]
            heights[m] += [round(float(b[3] - b[1])) for b in boxes]
    assert heights[1.0] == [5, 3] and heights[4.0] == [5]
    assert all(h >= 3 for h in heights[3.0])
