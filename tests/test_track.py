"""Multi-object tracking: association through ``trackers`` (timestamps, gaps, empty and
crowded frames), scoring through TrackEval (perfect tracks, swapped ids, the located ID
switches), live sources that drop, and the CLI end to end (track, eval --task track)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_sora

from sora.data.mot import Annotations, Sequence, read_split
from sora.errors import VideoReadError
from sora.evaluation.tracking import (
    ground_truth_detections,
    ground_truth_tracks,
    id_switch_events,
    score_tracking,
    track_sequence,
    trackeval_scores,
)
from sora.inference.detector import FrameDetections
from sora.inference.draw import Annotator
from sora.inference.tracking import (
    FrameTracks,
    make_tracker,
    parse_options,
    track_detections,
)
from sora.io.video import Frame, reconnecting


def two_walkers(frames: int = 30, fps: float = 10.0) -> Sequence:
    """Two 10x10 boxes crossing a 200x100 frame in opposite directions, ids 1 and 2, class
    0 and 1; object 2 is half hidden (visibility 0.3) in frames 10-12."""
    rows = []
    for f in range(1, frames + 1):
        rows.append((f, 1, [5 + 4 * f, 20, 15 + 4 * f, 30], 0, 1.0))
        vis = 0.3 if 10 <= f <= 12 else 1.0
        rows.append((f, 2, [185 - 4 * f, 60, 195 - 4 * f, 70], 1, vis))
    ann = Annotations(
        frame=np.array([r[0] for r in rows]),
        track=np.array([r[1] for r in rows]),
        boxes=np.array([r[2] for r in rows], np.float32),
        label=np.array([r[3] for r in rows]),
        ignore=np.zeros(len(rows), bool),
        visibility=np.array([r[4] for r in rows], np.float32),
    )
    return Sequence(
        name="walk",
        path=Path("walk"),
        source=Path("walk/img1"),
        fps=fps,
        width=200,
        height=100,
        num_frames=frames,
        present=np.ones(frames, bool),
        ann=ann,
        label_ids=2,
    )


def truth_tracks(seq: Sequence, swap_from: int | None = None) -> dict[int, FrameTracks]:
    """The ground truth as tracks; from frame ``swap_from`` on, ids 1 and 2 are exchanged."""
    out = ground_truth_tracks(seq)
    for f, ft in out.items():
        if swap_from is not None and f >= swap_from:
            ft.ids = 3 - ft.ids
    return out


def test_ground_truth_with_min_visibility_leaves_out_the_hidden_boxes():
    seq = two_walkers()
    kept = ground_truth_tracks(seq, min_visibility=0.5)
    assert [kept[f].ids.tolist() for f in (9, 10, 12, 13)] == [[1, 2], [1], [1], [1, 2]]
    dets = ground_truth_detections(seq, min_visibility=0.5)
    assert sum(len(d["scores"]) for d in dets.values()) == 2 * 30 - 3
    # scored against the whole ground truth, the 3 hidden boxes are misses
    m = score_tracking([seq], {"walk": kept}, ["a", "b"])
    assert m["CLR_FN"] == 3 and m["IDR"] == pytest.approx(57 / 60)
    assert ground_truth_tracks(seq, min_visibility=0.3)[11].ids.tolist() == [1, 2]


def test_trackeval_scores_perfect_tracks_as_perfect():
    seq = two_walkers()
    m = score_tracking([seq], {"walk": truth_tracks(seq)}, ["a", "b"])
    assert m["HOTA"] == pytest.approx(1.0) and m["MOTA"] == 1.0 and m["IDF1"] == 1.0
    assert m["IDSW"] == 0 and m["CLR_FP"] == 0 and m["CLR_FN"] == 0
    assert set(m["per_class"]) == {"a", "b"} and m["per_class"]["b"]["MOTA"] == 1.0
    assert m["per_sequence"]["walk"]["IDF1"] == 1.0 and m["id_switches"]["total"] == 0


def test_swapped_ids_are_two_switches_located_at_the_swap_as_trackeval_counts():
    seq = two_walkers()
    tracks = {"walk": truth_tracks(seq, swap_from=14)}
    m = score_tracking([seq], tracks, ["a", "b"])
    assert m["IDSW"] == 2 and m["MOTA"] == pytest.approx(1 - 2 / 60, abs=1e-4)
    assert m["IDF1"] < 0.6  # half of each object carries the other's id
    events = id_switch_events(seq, tracks["walk"])
    assert [(e["frame"], e["gt_id"]) for e in events] == [(14, 1), (14, 2)]
    # object 2 was at visibility 0.3 in frames 10-12, but matched after it: not "after"
    assert [e["after_occlusion"] for e in events] == [False, False]
    assert m["id_switches"]["total"] == m["IDSW"]


def test_a_switch_after_an_occlusion_is_marked_so():
    seq = two_walkers()
    tracks = truth_tracks(seq)
    for f in (10, 11, 12):  # object 2 unmatched while occluded, then returns with a new id
        ft = tracks[f]
        keep = ft.ids != 2
        tracks[f] = FrameTracks(
            f, ft.time, ft.boxes[keep], ft.scores[keep], ft.labels[keep], ft.ids[keep]
        )
    for f in range(13, seq.num_frames + 1):
        tracks[f].ids[tracks[f].ids == 2] = 7
    events = id_switch_events(seq, tracks)
    assert events == [{"frame": 13, "time": 1.2, "gt_id": 2, "after_occlusion": True}]
    assert trackeval_scores([seq], {"walk": tracks})["combined"]["IDSW"] == 1


def dets(time: float, boxes, scores=None, labels=None, index: int = 0) -> FrameDetections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return FrameDetections(
        index=index,
        time=time,
        boxes=boxes,
        scores=np.full(n, 0.9, np.float32) if scores is None else np.asarray(scores, np.float32),
        labels=np.zeros(n, int) if labels is None else np.asarray(labels),
    )


def moving(times) -> list[FrameDetections]:
    """One 20x20 box moving 30 px/s, seen at ``times`` (seconds)."""
    return [dets(t, [10 + 30 * t, 40, 30 + 30 * t, 60], index=k) for k, t in enumerate(times)]


@pytest.mark.parametrize("name", ["bytetrack", "ocsort", "botsort", "sort", "cbiou"])
def test_a_track_survives_a_short_gap_but_not_a_long_one_measured_in_seconds(name):
    # 10 fps; a 0.5 s gap (5 frames' time in 1 call) keeps the id, a 3 s gap (one call too)
    # exceeds the 1-s lost-track buffer: frame counting would see both gaps as one frame
    times = [k / 10 for k in range(10)] + [1.4 + k / 10 for k in range(10)]
    times += [5.4 + k / 10 for k in range(10)]
    out = list(track_detections(moving(times), make_tracker(name, fps=10, high=0.5)))
    ids = [set(ft.ids.tolist()) for ft in out]
    before, after_short, after_long = ids[5:10], ids[12:20], ids[25:30]
    (first,) = set().union(*before)
    assert set().union(*after_short) == {first}
    assert first not in set().union(*after_long) and len(set().union(*after_long)) == 1


def test_minutes_without_detections_release_every_track():
    tracker = make_tracker("bytetrack", fps=10, high=0.5)
    list(track_detections(moving([k / 10 for k in range(20)]), tracker))
    assert len(tracker.tracks) == 1
    empty = (dets(2 + k / 10, np.zeros((0, 4))) for k in range(3000))  # 5 minutes
    assert all(len(ft.ids) == 0 for ft in track_detections(empty, tracker))
    assert tracker.tracks == []  # finished tracks are released, memory stays bounded


def test_thousands_of_objects_in_a_frame_each_get_their_own_track():
    grid = np.array(
        [[x * 12, y * 12, x * 12 + 8, y * 12 + 8] for x in range(50) for y in range(40)]
    )
    frames = [dets(k / 10, grid + k, index=k) for k in range(4)]
    out = list(track_detections(frames, make_tracker("bytetrack", fps=10, high=0.5)))
    assert len(out[-1].ids) == 2000 and len(set(out[-1].ids.tolist())) == 2000
    assert set(out[-1].ids.tolist()) == set(out[-2].ids.tolist())


def test_one_object_scored_as_two_classes_starts_one_track():
    box = [10, 10, 30, 30]
    frames = [dets(k / 10, [box, box], scores=[0.9, 0.8], labels=[0, 1], index=k) for k in range(5)]
    tracker = make_tracker("bytetrack", fps=10, high=0.5)
    assert {len(ft.ids) for ft in list(track_detections(frames, tracker))[1:]} == {1}
    tracker = make_tracker("bytetrack", fps=10, high=0.5)
    both = list(track_detections(frames, tracker, nms_iou=None))
    assert len(both[-1].ids) == 2  # without the class-agnostic NMS: a duplicate track


def test_tracker_options_are_checked_by_name():
    assert parse_options("bytetrack", ["lost_track_buffer=60", "minimum_iou_threshold=0.2"]) == {
        "lost_track_buffer": 60,
        "minimum_iou_threshold": 0.2,
    }
    assert parse_options("botsort", ["enable_cmc=true"]) == {"enable_cmc": True}
    with pytest.raises(ValueError, match="bytetrack takes .*lost_track_buffer"):
        parse_options("bytetrack", ["lost_buffer=3"])
    with pytest.raises(ValueError, match="unknown tracker 'deepsort'"):
        make_tracker("deepsort", fps=10)


def test_a_dropped_live_source_reconnects_with_backoff_and_time_goes_on():
    image = np.zeros((4, 4, 3), np.uint8)
    opens = iter(
        [
            [Frame(image, 0.0, 0), Frame(image, 0.1, 1), VideoReadError("connection reset")],
            [VideoReadError("connection refused")],
            [Frame(image, 0.0, 0), Frame(image, 0.1, 1)],  # then ends: a drop too
        ]
        + [[VideoReadError("host unreachable")]] * 10
    )

    def open_frames():
        for item in next(opens):
            if isinstance(item, Exception):
                raise item
            yield item

    waits, now = [], [0.0]

    def sleep(s):
        waits.append(s)
        now[0] += s

    out = []
    with pytest.raises(VideoReadError, match="cam: gave up after 3 reconnects"):
        for fr in reconnecting(
            open_frames, name="cam", retries=3, sleep=sleep, clock=lambda: now[0]
        ):
            out.append(fr)
    assert waits == [1.0, 2.0, 1.0, 2.0, 4.0]  # the backoff restarts once frames flow again
    kinds = ["gap" if f is None else f.index for f in out]
    assert kinds == [0, 1, "gap", 2, 3, "gap"]
    times = [f.time for f in out if f is not None]
    assert times == pytest.approx([0.0, 0.1, 3.0, 3.1])  # the 3 s of waiting are counted


def test_annotator_draws_ids_with_a_colour_per_track_and_trails():
    annotator = Annotator(["a", "b"], min_height=100)
    image = np.full((50, 100, 3), 255, np.uint8)
    for k in range(3):
        out = annotator.draw_tracks(
            image,
            np.array([[10 + 5 * k, 10, 20 + 5 * k, 20], [60, 30, 70, 40]], np.float32),
            np.array([0.9, 0.8]),
            np.array([0, 0]),
            np.array([1, 2]),
        )
    assert out.shape == (100, 200, 3)  # enlarged x2
    c1, c2 = out[20, 30 + 10 * 2], out[60, 120]  # box edges of track 1 and track 2
    assert not np.array_equal(c1, c2)  # same class, different tracks: different colours
    assert len(annotator.trails.trace.xy) == 6  # trail points remembered, 2 per frame
    # track 1 missing for a frame, then back elsewhere: its trail starts again there, not
    # drawn across from where it was; track 2's goes on
    one = np.array([[60, 30, 70, 40]], np.float32)
    annotator.draw_tracks(image, one, np.array([0.8]), np.array([0]), np.array([2]))
    far = np.array([[80, 5, 90, 15], [60, 30, 70, 40]], np.float32)
    annotator.draw_tracks(image, far, np.array([0.9, 0.8]), np.array([0, 0]), np.array([1, 2]))
    trace = annotator.trails.trace
    np.testing.assert_allclose(trace.get(1), [[85 * 2, 10 * 2]])
    assert len(trace.get(2)) == 5


def test_ground_truth_detections_track_with_trackers_and_score_with_trackeval(det_data):
    seqs = read_split(det_data, "test")
    tracks = {
        s.name: track_sequence(
            s, ground_truth_detections(s), lambda fps: make_tracker("ocsort", fps=fps), conf=0.1
        )
        for s in seqs
    }
    m = score_tracking(seqs, tracks, ["circle", "square", "triangle"])
    assert m["MOTA"] > 0.7 and m["IDF1"] > 0.7 and m["DetA"] > 0.7
    assert m["id_switches"]["total"] == m["IDSW"]


def test_cli_track_and_eval_task_track(det_run, det_data, tmp_path):
    seq = det_data / "test" / "test_000"
    low = ("--high", "0.05", "--conf", "0.05")  # a model trained for 1 epoch scores ~0.08
    proc = run_sora("track", det_run, seq, "--format", "jsonl", *low, check=True)
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["frame"] for r in lines] == list(range(1, 17))
    assert lines[1]["time"] == pytest.approx(1 / 15, abs=1e-3)  # the rate from seqinfo.ini
    assert {"id", "box", "score", "label", "class_id"} <= set(
        next(t for r in lines for t in r["tracks"])
    )
    video = tmp_path / "tracks.mp4"
    proc = run_sora("track", det_run, seq, "--save-video", video, "--tracker", "sort", *low)
    assert proc.returncode == 0, proc.stderr
    rows = [r.split(",") for r in proc.stdout.splitlines()]
    assert rows and all(len(r) == 10 and int(r[1]) >= 1 for r in rows)
    assert video.stat().st_size > 0
    # the boxes' classes leaning on the memory's: other scores, the same row format
    plain = run_sora("track", det_run, seq, *low, check=True).stdout.splitlines()
    leaning = run_sora("track", det_run, seq, "--forecast-class", "0.25", *low, check=True)
    rows = [r.split(",") for r in leaning.stdout.splitlines()]
    assert rows and all(len(r) == 10 for r in rows) and rows != [r.split(",") for r in plain]
    proc = run_sora("track", det_run, det_data / "test", "--out", tmp_path / "split", check=True)
    assert (tmp_path / "split" / "test_000.txt").is_file() and "test_000: 16 frames" in proc.stdout

    proc = run_sora("eval", det_run, "--data", det_data, "--task", "track", *low, check=True)
    assert "HOTA" in proc.stdout and "ID switches" in proc.stdout
    m = json.loads((det_run / "eval" / "tracking.json").read_text())
    assert m["task"] == "track" and m["tracker"] == "bytetrack" and m["num_frames"] == 16
    assert m["reid"]["embedding"] == "colour" and m["reid"]["relinked"] >= 0  # on by default
    assert m["forecast_class"] == 0.0  # the run's own decoding unless --forecast-class
    assert 0 <= m["HOTA"] <= 1 and m["id_switches"]["total"] == m["IDSW"]
    assert (det_run / "eval" / "tracks" / "bytetrack" / "test_000.txt").is_file()
    assert (det_run / "eval" / "id_switches.png").stat().st_size > 0

    proc = run_sora("track", det_run, seq, "--tracker-set", "nope=1")
    assert proc.returncode == 1 and proc.stderr.startswith("sora: error: --tracker-set 'nope=1'")
    assert "Traceback" not in proc.stderr


def test_cli_track_gives_a_variable_frame_rate_video_its_own_timestamps(det_run, tmp_path):
    from test_io import _write_vfr

    times_ms = [20 * i for i in range(6)] + [300 + 250 * i for i in range(4)]
    _write_vfr(tmp_path / "vfr.mkv", times_ms)
    proc = run_sora("track", det_run, tmp_path / "vfr.mkv", "--format", "jsonl", check=True)
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    # detect.fps is null: every frame, timed by its presentation time (what the tracker gets)
    assert [r["time"] for r in rows] == pytest.approx([t / 1000 for t in times_ms], abs=1e-3)


def test_the_forecast_s_boxes_are_not_shown_to_the_tracker_unless_asked():
    """SoraDet's forecast boxes (the memory's, nothing seen) are left out of association by
    default: a box seen only as a forecast makes no track."""
    times = [k / 10 for k in range(10)]
    flagged = [
        FrameDetections(**{**fd.__dict__, "forecast": np.ones(1, bool)}) for fd in moving(times)
    ]
    seen = list(track_detections(moving(times), make_tracker("bytetrack", fps=10, high=0.5)))
    assert any(len(ft.ids) for ft in seen)
    off = list(track_detections(flagged, make_tracker("bytetrack", fps=10, high=0.5)))
    assert all(len(ft.ids) == 0 for ft in off)
    on = track_detections(flagged, make_tracker("bytetrack", fps=10, high=0.5), forecast=True)
    assert any(len(ft.ids) for ft in on)
