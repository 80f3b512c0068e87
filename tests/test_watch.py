"""Zones and lines, the events file and webhook, the frame grabber, and ``sora watch``."""

from __future__ import annotations

import json
import threading
import time
from datetime import time as clock
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import numpy as np
import pytest

from sora.cli import main
from sora.errors import ConfigError
from sora.inference.events import EventLog, Webhook
from sora.inference.watch import Grabber
from sora.inference.zones import ZoneMonitor, armed, load_zones

NOON = clock(12, 0)
CLASSES = ["person", "vehicle"]


def _write(tmp_path, text, name="zones.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _monitor(tmp_path, text, fps=10.0):
    return ZoneMonitor(load_zones(_write(tmp_path, text), 100, 100), fps)


def _box(x, y, w=6, h=10):
    """A box standing at (x, y): its bottom centre."""
    return np.array([[x - w / 2, y - h, x + w / 2, y]], np.float32)


def _run(monitor, path, fps=10.0, label=0, track=1, now=NOON):
    events = []
    for k, (x, y) in enumerate(path):
        events += monitor.update(
            k / fps, _box(x, y), np.array([track]), np.array([label]), np.array([0.9]),
            CLASSES, now,
        )  # fmt: skip
    return events


ZONE = """
debounce: 0.3
cooldown: 5
zones:
  - name: lawn
    polygon: [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]]
    classes: [person]
    exit: true
    dwell: 2
"""


def test_load_zones_relative_and_errors(tmp_path):
    z = load_zones(_write(tmp_path, ZONE), 200, 100)
    assert z.zones[0].polygon.tolist() == [[0, 0], [100, 0], [100, 50], [0, 50]]
    assert z.zones[0].classes == {"person"} and z.zones[0].dwell == 2.0
    bad = {
        "zones:\n  - name: a\n    polygon: [[0, 0], [1, 1]]\n": "at least 3 points",
        "zones:\n  - name: a\n    polygon: [[0,0],[1,0],[1,1]]\n    hours: noon\n": "hours must",
        "zonez: []\n": "expected a mapping",
        "lines:\n  - name: g\n    start: [0, 0]\n    end: [1, 1]\n    direction: up\n": "direction",
    }
    for text, reason in bad.items():
        with pytest.raises(ConfigError, match=reason) as err:
            load_zones(_write(tmp_path, text, "bad.yaml"), 100, 100)
        assert "bad.yaml" in str(err.value)
    with pytest.raises(ConfigError, match="zones file not found"):
        load_zones(tmp_path / "none.yaml", 100, 100)


def test_enter_exit_dwell_once_each_and_debounced(tmp_path):
    m = _monitor(tmp_path, ZONE)
    # walk in from the right (x 80 -> 30 at y 40), stay 3 s, walk out downwards
    path = (
        [(80 - 5 * k, 40) for k in range(11)]
        + [(30, 40)] * 30
        + [(30, 40 + 5 * k) for k in range(12)]
    )
    events = _run(m, path)
    rules = [(e["rule"], e["zone"], e["track"], e["class"]) for e in events]
    assert rules == [
        ("enter", "lawn", 1, "person"),
        ("dwell", "lawn", 1, "person"),
        ("exit", "lawn", 1, "person"),
    ]
    enter = events[0]
    # x reaches 50 (the edge) at frame 6 (0.6 s); the entry is confirmed 0.3 s later
    assert enter["time"] == pytest.approx(0.9)
    # dwell counts from the crossing (0.6 s), not from the confirmation
    assert events[1]["time"] == pytest.approx(0.6 + 2.0, abs=0.11)
    # an object jittering across the edge every frame for 10 s: no storm of enter/exit, it
    # stays in (and so dwells)
    m = _monitor(tmp_path, ZONE)
    jitter = [(40, 40)] * 5 + [(52 if k % 2 else 48, 40) for k in range(100)]
    assert [e["rule"] for e in _run(m, jitter)] == ["enter", "dwell"]
    # a vehicle is not a person: no event
    m = _monitor(tmp_path, ZONE)
    assert _run(m, path, label=1) == []
    # first seen inside (coming into view there): the entry fires on that frame, not a
    # debounce later, and once; dwell counts from it
    m = _monitor(tmp_path, ZONE)
    appears = _run(m, [(30, 40)] * 25)
    assert [(e["rule"], e["time"]) for e in appears] == [("enter", 0.0), ("dwell", 2.0)]
    # seen outside, unseen for 1 s (it walked in while hidden, or it is a re-identified id),
    # seen inside: it entered while unseen, so the entry fires on that frame as well
    m = _monitor(tmp_path, ZONE)
    assert _run(m, [(80, 40)] * 5) == []
    later = m.update(
        1.5, _box(30, 40), np.array([1]), np.array([0]), np.array([0.9]), CLASSES, NOON
    )
    assert [(e["rule"], e["time"]) for e in later] == [("enter", 1.5)]


def _people(monitor, t, tracks):
    """One frame at time ``t`` of people ``tracks`` ([(id, x, y)], standing at (x, y)) ->
    the events they fire."""
    boxes = np.concatenate([_box(x, y) for _, x, y in tracks])
    ids = np.array([i for i, _, _ in tracks])
    n = len(tracks)
    return monitor.update(t, boxes, ids, np.zeros(n, int), np.full(n, 0.9), CLASSES, NOON)


def test_a_new_id_on_someone_already_inside_goes_on_with_that_visit(tmp_path):
    def frames(m, tracks, start, stop):
        """``tracks``: [(id, x)] standing at y 40 in the zone, for frames start..stop-1."""
        out = []
        for f in range(start, stop):
            out += _people(m, f / 10, [(i, x, 40) for i, x in tracks])
        return [(e["rule"], e["time"], e["track"]) for e in out]

    # an id switch: track 1 is inside from 0 s, track 2 takes over on the same person (IoU
    # 0.5) at 1 s; one entry, and the dwell (2 s) counts from track 1's entry
    m = _monitor(tmp_path, ZONE)
    assert frames(m, [(1, 30)], 0, 10) == [("enter", 0.0, 1)]
    assert frames(m, [(2, 32)], 10, 25) == [("dwell", 2.0, 2)]
    # a duplicate track born beside the first, and two tracks born the same frame on one
    # person: one entry each time; a second person inside at the same time still enters
    m = _monitor(tmp_path, ZONE)
    assert frames(m, [(1, 30)], 0, 5) == [("enter", 0.0, 1)]
    assert frames(m, [(1, 30), (2, 32), (3, 10)], 5, 8) == [("enter", 0.5, 3)]
    m = _monitor(tmp_path, ZONE)
    assert frames(m, [(1, 30), (2, 32)], 0, 3) == [("enter", 0.0, 1)]
    # a box born beside the first that overlaps it by a sixth of its width (IoU 1/11), as
    # a detector's second box on someone coming into view at the frame's edge does: the same
    # visit; the first track last seen longer than the debounce ago (0.3 s), or a box beside
    # it that does not overlap it (IoU 0, as two people side by side): a new visit, it enters
    m = _monitor(tmp_path, ZONE)
    frames(m, [(1, 30)], 0, 5)
    assert frames(m, [(1, 30), (2, 35)], 5, 6) == []
    m = _monitor(tmp_path, ZONE)
    frames(m, [(1, 30)], 0, 5)
    assert frames(m, [(2, 32)], 9, 10) == [("enter", 0.9, 2)]
    m = _monitor(tmp_path, ZONE)
    frames(m, [(1, 30)], 0, 5)
    assert frames(m, [(1, 30), (2, 36)], 5, 6) == [("enter", 0.5, 2)]


def test_a_duplicate_is_judged_where_both_boxes_are_now(tmp_path):
    """A person walking down (10 px a frame) with track 1; a second box on them is born as
    track 2 and comes first in the frame's detections. With track 1's box of this frame
    they overlap by IoU 2/3, with its box of the frame before not at all; the answer
    must not hang on which came first. A re-identified id coming back inside on
    someone already inside (track 3, seen outside before a gap) is no new entry either."""

    def step(m, f, tracks):
        return [(e["rule"], e["track"]) for e in _people(m, f / 10, tracks)]

    m = _monitor(tmp_path, ZONE)
    assert step(m, 0, [(1, 30, 20)]) == [("enter", 1)]
    assert step(m, 1, [(1, 30, 30)]) == []
    assert step(m, 2, [(2, 30, 42), (1, 30, 40)]) == []  # track 1 now at y 40
    m = _monitor(tmp_path, ZONE)
    assert step(m, 0, [(3, 80, 80)]) == []  # outside
    for f in range(10, 15):
        assert step(m, f, [(1, 30, 40)]) == ([("enter", 1)] if f == 10 else [])
    assert step(m, 15, [(3, 31, 40), (1, 30, 40)]) == []


def test_hours_and_lines(tmp_path):
    assert armed((clock(22), clock(6)), clock(23, 30)) and armed((clock(22), clock(6)), clock(1))
    assert not armed((clock(22), clock(6)), NOON) and armed(None, NOON)
    night = ZONE.replace("dwell: 2", "hours: '22:00-06:00'")
    path = [(80 - 5 * k, 40) for k in range(15)]
    assert _run(_monitor(tmp_path, night), path) == []
    assert [e["rule"] for e in _run(_monitor(tmp_path, night), path, now=clock(23))] == ["enter"]
    line = "lines:\n  - name: gate\n    start: [0.5, 0]\n    end: [0.5, 1]\n    direction: {d}\n"
    right = [(10 + 4 * k, 60) for k in range(20)]
    left = right[::-1]
    a = [e["rule"] for e in _run(_monitor(tmp_path, line.format(d="both")), right)]
    b = [e["rule"] for e in _run(_monitor(tmp_path, line.format(d="both")), left)]
    assert len(a) == 1 and len(b) == 1 and a != b  # once each way, in opposite senses
    assert _run(_monitor(tmp_path, line.format(d=a[0].removeprefix("cross_"))), left) == []


def test_finish_accepts_what_is_pending_at_the_end(tmp_path):
    line = "debounce: 0.3\nlines:\n  - name: gate\n    start: [0.5, 0]\n    end: [0.5, 1]\n"
    # crossing x = 50 at the second-last frame: too late for the debounce (3 frames)
    late = [(10 + 4 * k, 60) for k in range(12)] + [(54, 60)]
    m = _monitor(tmp_path, line)
    assert _run(m, late) == []
    end = m.finish()
    assert [(e["rule"], e["zone"], e["track"], e["time"]) for e in end] == [
        ("cross_in", "gate", 1, 1.2)
    ]  # timed at the last frame, in the sense the same walk gives when it goes on
    assert m.finish() == []  # once
    m = _monitor(tmp_path, line)
    on = _run(m, [(10 + 4 * k, 60) for k in range(20)])
    assert [e["rule"] for e in on] == [end[0]["rule"]]
    # a flicker to the other side that reverted before the end stays rejected
    m = _monitor(tmp_path, line)
    _run(m, [(44, 60)] * 5 + [(52, 60), (44, 60)])
    assert m.finish() == []
    # an entry into the zone on the last frame fires; nothing pending: nothing; no dwell
    m = _monitor(tmp_path, ZONE)
    _run(m, [(80 - 5 * k, 40) for k in range(7)])  # x 50 at frame 6, the last
    assert [(e["rule"], e["time"]) for e in m.finish()] == [("enter", 0.6)]
    m = _monitor(tmp_path, ZONE)
    _run(m, [(30, 40)] * 19)  # in since 0 s, dwell (2 s) not reached by 1.8 s
    assert m.finish() == []
    assert _monitor(tmp_path, ZONE).finish() == []  # no frame at all


def test_monitor_state_stays_bounded_on_an_endless_stream(tmp_path):
    # 10 minutes of stream at 10 fps: a new walker every 0.5 s, each crossing the
    # zone and the line in 4 s; 1,200 tracks in all, about 8 alive at a time
    text = ZONE + "lines:\n  - name: gate\n    start: [0.25, 0]\n    end: [0.25, 1]\n"
    m = _monitor(tmp_path, text)
    fps, life, sizes, events = 10.0, 40, [], 0
    for f in range(6_000):
        ids = np.arange(max(0, f - life) // 5, f // 5 + 1) + 1
        ids = ids[(ids - 1) * 5 <= f]
        ages = f - (ids - 1) * 5
        ids, ages = ids[ages < life], ages[ages < life]
        boxes = np.concatenate([_box(90 - 2 * a, 40) for a in ages]) if len(ids) else None
        boxes = boxes if boxes is not None else np.zeros((0, 4), np.float32)
        n = len(ids)
        events += len(
            m.update(f / fps, boxes, ids, np.zeros(n, int), np.full(n, 0.9), CLASSES, NOON)
        )
        if f % 500 == 499:
            lz = m.lines[0]
            sizes.append(
                len(m.state) + len(m.fired) + len(m.last_seen)
                + len(lz.crossing_state_history) + len(lz._tracker_frames_absent)
            )  # fmt: skip
    assert events >= 2 * 1_190  # an entry and a crossing per walker: the rules kept firing
    # state per track is dropped 10 s after it was last seen: about 28 tracks' worth, flat
    # (kept for every track it would pass 5,000 by the end)
    assert max(sizes) < 150 and sizes[-1] <= sizes[0]


def test_event_log_appends_continues_and_repairs(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    assert log.append({"rule": "enter"})["id"] == 1
    assert log.append({"rule": "exit"})["id"] == 2
    log.close()
    with path.open("a") as f:  # a crash in the middle of a line
        f.write('{"id": 3, "rule": "ent')
    log = EventLog(path)
    assert log.append({"rule": "dwell"})["id"] == 3
    log.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["id"] for e in lines] == [1, 2, 3] and lines[2]["rule"] == "dwell"
    assert (tmp_path / "events.jsonl.partial").read_text() == '{"id": 3, "rule": "ent\n'


def test_webhook_posts_and_never_blocks(tmp_path):
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = Webhook(f"http://127.0.0.1:{server.server_port}/alerts")
    for i in range(3):
        hook.post({"id": i})
    hook.close()
    server.shutdown()
    assert [e["id"] for e in got] == [0, 1, 2] and hook.sent == 3
    # nobody listening: posting still returns at once; the sends fail in the background
    dead = Webhook("http://127.0.0.1:9/none", retries=0, timeout=0.2, size=2)
    start = time.perf_counter()
    for i in range(50):
        dead.post({"id": i})
    assert time.perf_counter() - start < 0.5
    dead.close()
    assert dead.dropped > 0 and dead.failed >= 1
    with pytest.raises(ValueError, match="http"):
        Webhook("ftp://x")


def test_anomaly_alarm_holds_then_clears():
    from sora.inference.watch import AnomalyAlarm

    alarm = AnomalyAlarm(threshold=1.0, hold=0.3, clear=0.5)
    fps = 10.0
    # a one-frame spike, then 0.4 s over, 0.3 s under (not clear), over again, 0.6 s under,
    # over again: fires at 0.3 s into the long run, and again only after the full clear
    scores = [0, 2, 0, 0] + [2] * 4 + [0] * 3 + [2] * 2 + [0] * 6 + [2] * 5
    fired = [i for i, s in enumerate(scores) if alarm.update(i / fps, s)]
    assert fired == [7, 22]
    assert alarm.on


def test_watch_cli_hold_default_is_the_library_default():
    # the parser keeps the literal so that building it does not import torch
    from sora.cli import build_parser
    from sora.inference.watch import ANOMALY_HOLD

    assert build_parser().parse_args(["watch", "cam.mp4"]).anomaly_hold == ANOMALY_HOLD


def test_watch_hands_nms_and_forecast_class_to_the_tracker_with_the_library_defaults(
    monkeypatch, capsys
):
    from sora.cli import build_parser
    from sora.inference.tracking import NMS_IOU, VideoTracker

    class Built(Exception):
        pass

    seen, classes = [], []

    def record(self, run, tracker="bytetrack", **options):
        seen.append(options["nms_iou"])
        classes.append(options["forecast_class"])
        raise Built  # stop before a model or a source is opened

    monkeypatch.setattr(VideoTracker, "__init__", record)
    assert build_parser().parse_args(["watch", "cam.mp4"]).nms == NMS_IOU
    for args, nms in (([], NMS_IOU), (["--nms", "0.3"], 0.3), (["--nms", "1"], None)):
        with pytest.raises(Built):
            main(["watch", "cam.mp4", "--model", "run", *args])
        assert seen.pop() == nms
    assert main(["watch", "cam.mp4", "--model", "run", "--nms", "0"]) == 1
    assert not seen  # refused before anything is built
    assert "--nms 0: an IoU above 0" in capsys.readouterr().err
    # --forecast-class goes to the detector as it does for sora track; none: the run's own
    assert classes == [None, None, None]
    with pytest.raises(Built):
        main(["watch", "cam.mp4", "--model", "run", "--forecast-class", "0.25"])
    assert classes[-1] == 0.25
    assert main(["watch", "cam.mp4", "--anomaly", "run", "--forecast-class", "0.25"]) == 1
    assert "--forecast-class needs --model" in capsys.readouterr().err


def test_grabber_drops_only_when_asked():
    frames = [SimpleNamespace(time=k / 100, image=None) for k in range(50)]
    slow = Grabber(iter(frames), latest=True, pace=False)
    taken = []
    for fr, _ in slow:
        taken.append(fr)
        time.sleep(0.01)
    assert slow.read == 50 and slow.dropped > 0 and len(taken) + slow.dropped == 50
    assert taken[-1] is frames[-1]  # the newest frame is never the one dropped
    every = Grabber(iter(frames), latest=False, pace=False)
    assert [fr for fr, _ in every] == frames and every.dropped == 0


def test_sora_watch_zones_events_video_and_restart(det_run, det_data, tmp_path, capsys):
    seq = det_data / "test" / "test_000" / "img1"
    zones = _write(
        tmp_path,
        "debounce: 0\nzones:\n  - name: all\n    polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]\n"
        "    dwell: 0.2\n",
    )
    events = tmp_path / "out" / "events.jsonl"
    args = ["watch", str(seq), "--model", str(det_run), "--zones", str(zones),
            "--events", str(events)]  # fmt: skip
    assert main([*args, "--save-video", str(tmp_path / "w.mp4")]) == 0
    out = capsys.readouterr().out
    assert "watched 16 frames" in out and "0 dropped" in out
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    # the tiny detector may find nothing; what it writes must be whole, numbered events
    for k, e in enumerate(lines, 1):
        assert e["id"] == k and e["rule"] in ("enter", "dwell") and e["zone"] == "all"
        assert (events.parent / e["snapshot"]).stat().st_size > 0
    assert (tmp_path / "w.mp4").stat().st_size > 0
    assert main(args) == 0  # restarted on the same file: ids continue
    again = [json.loads(x) for x in events.read_text().splitlines()]
    assert [e["id"] for e in again] == list(range(1, len(again) + 1))
    assert again[: len(lines)] == lines
    capsys.readouterr()
    assert main(["watch", str(seq), "--zones", str(zones)]) == 1
    assert "--zones needs --model" in capsys.readouterr().err
