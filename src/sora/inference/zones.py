"""Zone intrusion and line-crossing rules over tracks, with supervision's ``PolygonZone`` and
``LineZone`` deciding who is inside and who crossed.

A zones file (YAML or JSON)::

    debounce: 0.3          # seconds an object must stay in (or out) before enter/exit fires
    cooldown: 5            # seconds before the same rule fires again for the same track
    zones:
      - name: lawn
        polygon: [[0, 0], [1, 0], [1, 0.28], [0, 0.28]]   # relative (all values <= 1) or pixels
        classes: [person]  # absent: every class
        enter: true        # alert when an object comes in (default true)
        exit: false        # alert when it leaves (default false)
        dwell: 5           # alert when it has stayed 5 s (absent: never)
        hours: "22:00-06:00"  # wall-clock hours the zone is armed (absent: always)
    lines:
      - name: gate
        start: [0.5, 0.0]
        end: [0.5, 1.0]
        direction: both    # in, out or both: as supervision's LineZone counts them
        classes: [person, vehicle]

An object is in a zone when the bottom centre of its box is (where it stands). Events are
dicts: ``time`` (stream seconds), ``zone``, ``rule`` (``enter``, ``exit``, ``dwell``,
``cross_in``, ``cross_out``), ``track``, ``class``, ``score``, ``box`` ``[x1, y1, x2, y2]``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import time as clock
from pathlib import Path

import numpy as np
import yaml

from sora.errors import ConfigError

#: IoU with the box of a track already inside a zone at which a track first seen inside it
#: is taken for the same object (a duplicate track, an id switch) and fires no entry. Low:
#: where someone comes into view at the frame's edge, a detector puts second boxes beside
#: the first that overlap it by IoU 0.07-0.3 (docs/watch.md, 2026-12-05); two people side
#: by side, whose boxes do not overlap, still enter one each
SAME_IOU = 0.05


@dataclass
class Zone:
    name: str
    polygon: np.ndarray  # (n, 2) int pixels
    classes: set[str] | None = None
    enter: bool = True
    exit: bool = False
    dwell: float | None = None
    hours: tuple[clock, clock] | None = None


@dataclass
class Line:
    name: str
    start: tuple[float, float]
    end: tuple[float, float]
    direction: str = "both"
    classes: set[str] | None = None
    hours: tuple[clock, clock] | None = None


@dataclass
class ZoneFile:
    zones: list[Zone] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    debounce: float = 0.3
    cooldown: float = 5.0


def _points(value, name: str, width: int, height: int, source: Path) -> np.ndarray:
    try:
        pts = np.asarray(value, dtype=float).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a list of [x, y] points", source) from None
    if pts.size and np.all(pts <= 1.0) and np.all(pts >= 0.0):
        pts = pts * [width, height]  # relative coordinates
    return pts


def _hours(value, name: str, source: Path) -> tuple[clock, clock] | None:
    if value is None:
        return None
    try:
        a, b = str(value).split("-")
        return clock.fromisoformat(a.strip()), clock.fromisoformat(b.strip())
    except ValueError:
        raise ConfigError(
            f"{name}: hours must look like 22:00-06:00, got {value!r}", source
        ) from None


def load_zones(path: str | Path, width: int, height: int) -> ZoneFile:
    """Read a zones file for frames of ``width x height`` pixels. Anything malformed is a
    :class:`ConfigError` naming the file and the zone."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("zones file not found", path)
    try:
        raw = (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text()) or {}
    except (json.JSONDecodeError, yaml.YAMLError):
        raise ConfigError("not valid YAML/JSON", path) from None
    if not isinstance(raw, dict) or not (raw.get("zones") or raw.get("lines")):
        raise ConfigError("expected a mapping with zones: and/or lines:", path)
    unknown = set(raw) - {"zones", "lines", "debounce", "cooldown"}
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}", path)
    out = ZoneFile(debounce=float(raw.get("debounce", 0.3)), cooldown=float(raw.get("cooldown", 5)))
    names = set()
    for kind, items in (("zone", raw.get("zones") or []), ("line", raw.get("lines") or [])):
        for i, item in enumerate(items):
            name = str(item.get("name", f"{kind}{i + 1}")) if isinstance(item, dict) else ""
            if not name or name in names:
                raise ConfigError(f"{kind} {i + 1}: needs a mapping with a unique name", path)
            names.add(name)
            classes = set(item["classes"]) if item.get("classes") else None
            hours = _hours(item.get("hours"), name, path)
            if kind == "zone":
                pts = _points(item.get("polygon"), name, width, height, path)
                if len(pts) < 3:
                    raise ConfigError(f"{name}: a polygon needs at least 3 points", path)
                dwell = item.get("dwell")
                out.zones.append(
                    Zone(
                        name,
                        pts.round().astype(np.int64),
                        classes,
                        bool(item.get("enter", True)),
                        bool(item.get("exit", False)),
                        None if dwell is None else float(dwell),
                        hours,
                    )
                )
            else:
                ends = _points([item.get("start"), item.get("end")], name, width, height, path)
                direction = item.get("direction", "both")
                if len(ends) != 2 or direction not in ("in", "out", "both"):
                    raise ConfigError(
                        f"{name}: a line needs start, end and direction in/out/both", path
                    )
                out.lines.append(
                    Line(name, tuple(ends[0]), tuple(ends[1]), direction, classes, hours)
                )
    return out


def armed(hours: tuple[clock, clock] | None, now: clock) -> bool:
    """Whether ``now`` is within ``hours`` (which may wrap past midnight)."""
    if hours is None:
        return True
    a, b = hours
    return a <= now < b if a <= b else (now >= a or now < b)


class ZoneMonitor:
    """Applies a :class:`ZoneFile` to tracks frame by frame: ``update(...)`` returns the new
    events, and ``finish()`` at the end of the stream those still pending. State per (zone,
    track) is dropped once a track has been unseen for ``forget`` seconds, so memory stays
    bounded on endless streams."""

    def __init__(self, rules: ZoneFile, fps: float, forget: float = 10.0):
        import supervision as sv

        self.rules = rules
        self.forget = forget
        self.fps = float(fps)
        self._last: tuple | None = None  # the arguments of the last update()
        self.polygons = [
            sv.PolygonZone(z.polygon, triggering_anchors=(sv.Position.BOTTOM_CENTER,))
            for z in rules.zones
        ]
        # frames on the new side before a crossing counts: the debounce, in frames
        self.crossing_frames = max(1, round(rules.debounce * fps))
        self.lines = [
            sv.LineZone(
                sv.Point(*ln.start),
                sv.Point(*ln.end),
                triggering_anchors=(sv.Position.BOTTOM_CENTER,),
                minimum_crossing_threshold=self.crossing_frames,
            )
            for ln in rules.lines
        ]
        # (zone index, track) -> {inside, since (pending change), entered, dwelt, last}
        self.state: dict[tuple[int, int], dict] = {}
        self.fired: dict[tuple[str, str, int], float] = {}  # (zone, rule, track) -> time
        self.last_seen: dict[int, float] = {}

    def _fire(self, events, t, zone, rule, det, k: int, cls: str) -> None:
        """Append the event of ``rule`` for detection ``k`` of ``det`` unless its track fired
        the same rule of ``zone`` less than the cooldown ago."""
        track = int(det.tracker_id[k])
        key = (zone, rule, track)
        if t - self.fired.get(key, -np.inf) < self.rules.cooldown:
            return
        self.fired[key] = t
        events.append(
            {
                "time": round(float(t), 3),
                "zone": zone,
                "rule": rule,
                "track": track,
                "class": cls,
                "score": round(float(det.confidence[k]), 3),
                "box": [round(float(v), 1) for v in det.xyxy[k]],
            }
        )

    def update(
        self, t: float, boxes: np.ndarray, ids: np.ndarray, labels: np.ndarray,
        scores: np.ndarray, classes: list[str], now: clock,
    ) -> list[dict]:  # fmt: skip
        """Tracks of one frame (``boxes (n, 4)`` xyxy pixels, 1-based ``ids``, 0-based
        ``labels``) at stream time ``t`` and wall-clock ``now`` -> the events they fire."""
        import supervision as sv

        self._last = (t, boxes, ids, labels, scores, classes, now)
        events: list[dict] = []
        det = sv.Detections(
            xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
            confidence=np.asarray(scores, np.float32),
            class_id=np.asarray(labels, int),
            tracker_id=np.asarray(ids, int),
        )
        names = [classes[c] for c in det.class_id]
        debounce = self.rules.debounce
        # back after a gap longer than the debounce (re-identified, or the tracker kept it
        # through an occlusion): where it was before is no edge to flicker on either
        back = {
            int(i) for i in det.tracker_id if t - self.last_seen.get(int(i), t) > debounce + 1e-9
        }
        for i in det.tracker_id:
            self.last_seen[int(i)] = t
        # this frame's boxes: a new id is compared with the others where they are now, not
        # where they were last frame (nor in the order the detections came)
        now_boxes = {int(i): b for i, b in zip(det.tracker_id, det.xyxy, strict=True)}
        for zi, (zone, poly) in enumerate(zip(self.rules.zones, self.polygons, strict=True)):
            inside = poly.trigger(det) if len(det) else np.zeros(0, bool)
            on = armed(zone.hours, now)
            for k, track in enumerate(det.tracker_id):
                if zone.classes is not None and names[k] not in zone.classes:
                    continue
                key = (zi, int(track))
                unseen = key not in self.state or (
                    int(track) in back and not self.state[key]["inside"]
                )
                # first seen inside, or back inside after a gap, on someone already inside
                # (a duplicate track, an id switch, a re-identified id on the wrong person):
                # it goes on with that visit (its entry time, its dwell), no new entry
                visit = self._visit(zi, det.xyxy[k], t, now_boxes) if inside[k] and unseen else None
                if visit is not None:
                    self.state[key] = {"inside": True, "since": None, "entered": visit["entered"]}
                    if visit.get("dwelt"):
                        self.state[key]["dwelt"] = True
                elif inside[k] and unseen:
                    # first seen inside, or seen outside and now back inside after a gap: it
                    # entered unseen, there is no edge to flicker on (the tracker already
                    # asked for consecutive frames), so the entry is not held back
                    self.state[key] = {"inside": True, "since": None, "entered": t}
                    if zone.enter and on:
                        self._fire(events, t, zone.name, "enter", det, k, names[k])
                s = self.state.setdefault(key, {"inside": False, "since": None})
                s["box"], s["seen"] = det.xyxy[k], t
                if bool(inside[k]) != s["inside"]:
                    s["since"] = t if s["since"] is None else s["since"]
                    if t - s["since"] >= debounce - 1e-9:  # the change has lasted: accept it
                        s["inside"], s["since"] = bool(inside[k]), None
                        if s["inside"]:
                            s["entered"] = t - debounce
                            if zone.enter and on:
                                self._fire(events, t, zone.name, "enter", det, k, names[k])
                        elif zone.exit and on:
                            self._fire(events, t, zone.name, "exit", det, k, names[k])
                else:
                    s["since"] = None
                if (
                    s["inside"]
                    and zone.dwell is not None
                    and on
                    and t - s["entered"] >= zone.dwell
                    and not s.get("dwelt")
                ):
                    s["dwelt"] = True
                    self._fire(events, t, zone.name, "dwell", det, k, names[k])
                if not s["inside"]:
                    s.pop("dwelt", None)
        for line, lz in zip(self.rules.lines, self.lines, strict=True):
            if not len(det):
                lz.trigger(det)
                continue
            crossed_in, crossed_out = lz.trigger(det)
            if not armed(line.hours, now):
                continue
            for k in range(len(det)):
                if line.classes is not None and names[k] not in line.classes:
                    continue
                for rule, hit in (("cross_in", crossed_in[k]), ("cross_out", crossed_out[k])):
                    if hit and line.direction in ("both", rule.removeprefix("cross_")):
                        self._fire(events, t, line.name, rule, det, k, names[k])
        self._forget(t)
        return events

    def finish(self) -> list[dict]:
        """The end of the stream: the changes still pending at its last frame (an object
        that entered, left or crossed less than the debounce before the stream ended) are
        accepted, as if that frame had lasted the debounce; their events are returned, timed
        at that frame. Without it they would be lost: a file's last crossings, a camera's last
        entry. A change that reverted before the end stays rejected. Dwell alerts are not
        extrapolated. Call it once, after the last ``update``."""
        if self._last is None:
            return []
        t, *frame = self._last
        # enough repeats for a line (its crossing frames) and for a zone (the debounce)
        steps = max(self.crossing_frames, math.ceil(self.rules.debounce * self.fps - 1e-6))
        events = []
        for k in range(1, steps + 1):  # the last frame again, 1 / fps apart
            events += [e for e in self.update(t + k / self.fps, *frame) if e["rule"] != "dwell"]
        self._last = None
        for e in events:
            e["time"] = round(float(t), 3)
        return events

    def _visit(
        self, zi: int, box: np.ndarray, t: float, now_boxes: dict[int, np.ndarray]
    ) -> dict | None:
        """The state of a track inside zone ``zi``, seen at most the debounce before ``t``
        (this frame included), whose box overlaps ``box`` by IoU >= :data:`SAME_IOU`: the
        visit a track first seen there with that box goes on with. A track of this frame
        is compared by its box in ``now_boxes`` (``{track: (4,) xyxy}``, this frame's),
        the others by their last."""
        import supervision as sv

        near = [
            (track, s)
            for (z, track), s in self.state.items()
            if z == zi and s["inside"] and "box" in s
            and t - s["seen"] <= self.rules.debounce + 1e-9
        ]  # fmt: skip
        if not near:
            return None
        boxes = np.stack([now_boxes.get(track, s["box"]) for track, s in near])
        iou = sv.box_iou_batch(box[None], boxes)[0]
        j = int(iou.argmax())
        return near[j][1] if iou[j] >= SAME_IOU else None

    def _forget(self, t: float) -> None:
        gone = {i for i, seen in self.last_seen.items() if t - seen > self.forget}
        if not gone:
            return
        for i in gone:
            del self.last_seen[i]
        self.state = {k: v for k, v in self.state.items() if k[1] not in gone}
        self.fired = {k: v for k, v in self.fired.items() if k[2] not in gone}
