"""Re-identification after the tracker: a lost object that returns keeps its id (only when
it looks the same, is of the same class and returns within the window), one id per object,
memory bounded; the embeddings (colour, SoraDet's fused features) and the CLI switch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_sora

from sora.evaluation.detection import detect_sequence
from sora.inference.detector import Detector, FrameDetections
from sora.inference.reid import ReIdentifier, colour_embeddings, join_embeddings
from sora.inference.tracking import make_tracker, track_detections

RED, BLUE = np.array([1.0, 0.0]), np.array([0.0, 1.0])


def walker(times, x0, y, look, label=0, speed=30.0) -> list[tuple[float, list, np.ndarray, int]]:
    """One 20x20 box moving ``speed`` px/s from ``x0``, seen at ``times``."""
    return [(t, [x0 + speed * t, y, x0 + 20 + speed * t, y + 20], look, label) for t in times]


def frames(
    *walkers, fps: float = 10.0, seconds: float = 8.0, size=(400, 800)
) -> list[FrameDetections]:
    """Per frame, the boxes of every walker seen then, with their 2-d unit 'appearance', in
    a frame of ``size`` (height, width)."""
    out = []
    for k in range(int(seconds * fps)):
        t = k / fps
        seen = [w for ws in walkers for w in ws if abs(w[0] - t) < 1e-9]
        out.append(
            FrameDetections(
                index=k,
                time=t,
                boxes=np.array([w[1] for w in seen], np.float32).reshape(-1, 4),
                scores=np.full(len(seen), 0.9, np.float32),
                labels=np.array([w[3] for w in seen], int),
                embeddings=np.array([w[2] for w in seen], np.float32).reshape(-1, 2),
                frame_size=size,
            )
        )
    return out


def ids_of(fds, tracker: str = "bytetrack", reid=None) -> list[dict[int, int]]:
    """Per frame, ``{x1 rounded to 10 px: reported id}``."""
    out = track_detections(fds, make_tracker(tracker, fps=10, high=0.5), reid=reid)
    return [{int(b[0]) // 10: int(i) for b, i in zip(ft.boxes, ft.ids, strict=True)} for ft in out]


def ids_at(tracks, k: int) -> set[int]:
    return set(tracks[k].values())


@pytest.mark.parametrize("tracker", ["bytetrack", "ocsort", "botsort", "sort", "cbiou"])
def test_an_object_that_returns_after_the_tracker_lost_it_gets_its_id_back(tracker):
    # red walks 0-2 s, is gone 3 s (past the 1-s lost-track buffer), returns 153 px from
    # where it was lost (under 1/4 of the 894-px diagonal); blue walks below the whole time
    before, after = [k / 10 for k in range(20)], [5 + k / 10 for k in range(20)]
    red = walker(before, 10, 10, RED) + walker(after, 70, 10, RED)
    blue = walker([k / 10 for k in range(80)], 0, 60, BLUE, speed=5)
    plain = ids_of(frames(red, blue), tracker)
    reid = ReIdentifier(window=10, max_distance=0.4)
    kept = ids_of(frames(red, blue), tracker, reid)
    assert len(ids_at(plain, 10)) == 2 and ids_at(plain, 10) == ids_at(kept, 10)
    red_id = next(i for i in ids_at(kept, 10) if i not in ids_at(kept, 40))  # blue stays
    assert red_id not in ids_at(plain, 60)  # the tracker alone starts a new id for red
    assert ids_at(kept, 60) == ids_at(kept, 10)  # re-identified: the same two ids
    assert reid.relinked == 1


@pytest.mark.parametrize(
    "change",
    [
        {"look": BLUE},  # looks different
        {"label": 1, "same_class": True},  # another class, classes required to agree
        {"late": 12.0},  # returns after the 10-s window
        {"size": (100, 300)},  # 153 px from where it was lost: over 1/4 of the diagonal
    ],
    ids=["other look", "other class", "too late", "too far"],
)
def test_a_returning_object_that_differs_or_comes_too_late_gets_a_new_id(change):
    late = change.get("late", 5.0)
    back = [late + k / 10 for k in range(20)]
    red = walker([k / 10 for k in range(20)], 10, 10, RED) + walker(
        back, 70, 10, change.get("look", RED), label=change.get("label", 0)
    )
    reid = ReIdentifier(window=10, max_distance=0.4, same_class=change.get("same_class", False))
    tracks = ids_of(frames(red, seconds=late + 2, size=change.get("size", (400, 800))), reid=reid)
    assert ids_at(tracks, 10) and ids_at(tracks, int(late * 10) + 10)
    assert ids_at(tracks, 10).isdisjoint(ids_at(tracks, int(late * 10) + 10))
    assert reid.relinked == 0


def test_by_default_a_class_that_flips_while_the_object_is_away_does_not_stop_it():
    # detectors' classes flip from frame to frame; the tracker ignores them, and so does
    # re-identification unless asked (same_class=True, tested above)
    red = walker([k / 10 for k in range(20)], 10, 10, RED) + walker(
        [5 + k / 10 for k in range(20)], 70, 10, RED, label=1
    )
    reid = ReIdentifier()
    tracks = ids_of(frames(red, seconds=7), reid=reid)
    assert ids_at(tracks, 10) == ids_at(tracks, 60) and reid.relinked == 1


def test_two_objects_returning_in_each_other_s_places_take_their_own_ids():
    gone, back = [k / 10 for k in range(20)], [5 + k / 10 for k in range(20)]
    red = walker(gone, 10, 10, RED) + walker(back, 10, 60, RED)  # returns below
    blue = walker(gone, 10, 60, BLUE) + walker(back, 10, 10, BLUE)  # returns above
    out = list(
        track_detections(
            frames(red, blue, seconds=7),
            make_tracker("bytetrack", fps=10, high=0.5),
            reid=ReIdentifier(),
        )
    )
    first = {int(b[1]): int(i) for b, i in zip(out[10].boxes, out[10].ids, strict=True)}
    last = {int(b[1]): int(i) for b, i in zip(out[60].boxes, out[60].ids, strict=True)}
    assert len(first) == 2 and first[10] == last[60] and first[60] == last[10]


def test_the_lost_track_that_comes_back_itself_keeps_its_id_and_no_id_is_given_twice():
    reid = ReIdentifier(window=10, max_distance=0.4)
    red = RED[None]
    assert reid(0.0, [1], [0], red).tolist() == [1]
    assert reid(0.1, [], [], np.zeros((0, 2))).tolist() == []
    assert reid(0.2, [2], [0], red).tolist() == [1]  # a new id that is the lost red one
    # the tracker finds its old track 1 again, beside 2: two objects, two ids
    assert sorted(reid(0.3, [1, 2], [0, 0], np.stack([RED, RED])).tolist()) == [1, 2]
    assert reid.relinked == 0


def test_ids_gone_longer_than_the_window_are_forgotten():
    reid = ReIdentifier(window=2.0)
    for k in range(1000):  # a new object every second, each seen once
        look = np.array([np.cos(k), np.sin(k)])
        reid(float(k), [k + 1], [0], look[None])
    assert len(reid.gallery) <= 3 and len(reid.mapping) <= 3


def test_bad_re_identification_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="window >= 0"):
        ReIdentifier(window=-1)
    with pytest.raises(ValueError, match="max_distance <= 2"):
        ReIdentifier(max_distance=3)
    with pytest.raises(ValueError, match="max_shift >= 0"):
        ReIdentifier(max_shift=-0.1)


def test_colour_embeddings_tell_colours_apart_and_ignore_brightness():
    frame = torch.zeros(3, 40, 80, dtype=torch.uint8)
    frame[0, :, :40] = 200  # red left half
    frame[2, :, 40:] = 200  # blue right half
    boxes = torch.tensor([[5.0, 5, 35, 35], [45, 5, 75, 35]])
    e = colour_embeddings(frame, boxes)
    assert e.shape == (2, 12)
    assert torch.allclose(e.norm(dim=1), torch.ones(2))
    assert float(e[0] @ e[1]) < 0  # red and blue point apart
    darker = colour_embeddings((frame.float() * 0.4).to(torch.uint8), boxes)
    assert torch.allclose(darker, e, atol=1e-2)
    assert colour_embeddings(frame, torch.zeros(0, 4)).shape == (0, 12)
    both = join_embeddings(e, e)
    assert both.shape == (2, 24) and torch.allclose(both.norm(dim=1), torch.ones(2))


def test_detector_embeddings_have_the_documented_sizes_and_stream_like_offline(det_run, det_data):
    from sora.data.mot import read_split

    det = Detector(det_run)
    seq = read_split(det_data, "test")[0]
    d = det.model.cfg.fpn_dim
    sizes = {"colour": 12, "features": 4 * d, "both": 12 + 4 * d}
    for embed, size in sizes.items():
        one = detect_sequence(det, seq, chunk=1, embed=embed)
        many = detect_sequence(det, seq, chunk=8, embed=embed)
        f = max(one, key=lambda k: len(one[k]["boxes"]))
        e = one[f]["embeddings"]
        assert e.shape == (len(one[f]["boxes"]), size) and len(e)
        assert torch.allclose(e.norm(dim=1), torch.ones(len(e)), atol=1e-4)
        assert torch.allclose(e, many[f]["embeddings"], atol=1e-4)  # streaming == offline
    assert "embeddings" not in detect_sequence(det, seq)[1]
    with pytest.raises(ValueError, match="unknown embedding 'shape'"):
        detect_sequence(det, seq, embed="shape")


def test_cli_reid_switch(det_run, det_data):
    seq = det_data / "test" / "test_000"
    low = ("--high", "0.05", "--conf", "0.05")
    proc = run_sora("track", det_run, seq, "--format", "jsonl", "--reid", "both", *low, check=True)
    assert len(proc.stdout.splitlines()) == 16
    proc = run_sora("eval", det_run, "--data", det_data, "--task", "track", "--reid", "none", *low)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((det_run / "eval" / "tracking.json").read_text())
    assert m["reid"] is None
    proc = run_sora("track", det_run, seq, "--reid-window", "-1")
    assert proc.returncode == 1 and "window >= 0" in proc.stderr and "Traceback" not in proc.stderr


def test_thousands_of_objects_keep_their_own_ids_with_re_identification():
    grid = np.array(
        [[x * 12, y * 12, x * 12 + 8, y * 12 + 8] for x in range(50) for y in range(40)], float
    )
    looks = np.random.default_rng(0).normal(size=(len(grid), 12))
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    fds = [
        FrameDetections(
            index=k,
            time=k / 10,
            boxes=(grid + k).astype(np.float32),
            scores=np.full(len(grid), 0.9, np.float32),
            labels=np.zeros(len(grid), int),
            embeddings=looks.astype(np.float32),
            frame_size=(480, 600),
        )
        for k in range(4)
    ]
    reid = ReIdentifier()
    out = list(track_detections(fds, make_tracker("bytetrack", fps=10, high=0.5), reid=reid))
    assert len(out[-1].ids) == 2000 and len(set(out[-1].ids.tolist())) == 2000
    assert set(out[-1].ids.tolist()) == set(out[-2].ids.tolist()) and reid.relinked == 0
