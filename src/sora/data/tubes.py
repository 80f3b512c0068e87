"""Action tubes: the crops of one tracked object over time, for per-track action recognition.

A tube is the sequence of square crops that follow one object, frame after frame. The crop
does **not** snap to each box: its centre and side are running (exponential) averages of the
box's centre and longer side (:class:`TubeCropper`), so what the object does shows inside
the crop: a zigzag swings it left and right, stop-and-go makes it lag and catch up, a pulse
makes it grow and shrink. A crop fitted to every box would remove exactly those motions.
The same cropper cuts training tubes from a MOT layout's ground truth (:func:`write_tubes`)
and, at inference, the tracker's boxes out of the stream (:mod:`sora.inference.actions`),
so a classifier sees the same kind of picture in both; it is causal (the averages use the
past only), so streaming needs no look-ahead.

Tubes are written as a folder per action, the layout ``sora train`` reads for
classification::

    OUT/{train,val,test}/<action>/<sequence>_<id>.mp4

from a MOT layout with per-object actions: ``<sequence>/gt/actions.txt``, one ``id,action``
line per object (MotionShapes-Det writes it with ``--actions``). Objects without a line are
left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.ops import roi_align

from sora.data.mot import SPLITS, FrameStore, Sequence, read_split
from sora.errors import DatasetError

#: Crop side in pixels, and the context kept around the box (1.0: the side is twice the
#: averaged longer side of the box).
TUBE_SIZE = 64
TUBE_MARGIN = 1.0
#: Weights of the newest box in the running averages of the crop's centre and side.
CENTRE_RATE, SIDE_RATE = 0.25, 0.1
#: Tubes shorter than this many frames are not written.
MIN_FRAMES = 8


def classifier_settings(size: int = TUBE_SIZE) -> list[str]:
    """The ``--set`` overrides for a tube classifier: contiguous clips (``sampler=random``,
    what a stream gives) of 24 frames at 15 fps, cropped 8 px inside the tube."""
    return [
        "data.sampler=random",
        "data.fps=15",
        "data.clip_len=24",
        f"data.crop=[{size - 8},{size - 8}]",
        f"data.short_side={size}",
    ]


def crop_squares(frame: torch.Tensor, squares, size: int = TUBE_SIZE) -> torch.Tensor:
    """``frame`` ``(3, H, W)`` uint8, ``squares`` ``(n, 4)`` xyxy pixels -> ``(n, 3, size,
    size)`` uint8, bilinear; outside the frame is black."""
    sq = torch.as_tensor(np.asarray(squares, np.float32)).reshape(-1, 4)
    if len(sq) == 0:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    out = roi_align(frame[None].float(), [sq], size, spatial_scale=1.0, aligned=True)
    return out.round().clamp(0, 255).to(torch.uint8)


class TubeCropper:
    """Crops that follow objects by id: ``crop(frame, ids, boxes)`` -> ``(n, 3, size, size)``.

    Per id it keeps the running averages of the box centre (rate ``CENTRE_RATE``) and longer
    side (``SIDE_RATE``); the crop is the square of side ``(1 + margin) x`` that side
    (at least 8 px) around that centre. ``forget(id)`` drops an id (a finished track)."""

    def __init__(self, size: int = TUBE_SIZE, margin: float = TUBE_MARGIN):
        self.size, self.margin = size, margin
        self.state: dict[int, np.ndarray] = {}  # id -> [cx, cy, side]

    def crop(self, frame: torch.Tensor, ids, boxes) -> torch.Tensor:
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        squares = np.empty_like(b)
        for k, ident in enumerate(np.asarray(ids).tolist()):
            now = np.array(
                [(b[k, 0] + b[k, 2]) / 2, (b[k, 1] + b[k, 3]) / 2, max(b[k, 2:] - b[k, :2])],
                np.float32,
            )
            old = self.state.get(ident)
            if old is not None:
                rates = np.array([CENTRE_RATE, CENTRE_RATE, SIDE_RATE], np.float32)
                now = old + rates * (now - old)
            self.state[ident] = now
            half = max(8.0, float(now[2]) * (1 + self.margin)) / 2
            squares[k] = (now[0] - half, now[1] - half, now[0] + half, now[1] + half)
        return crop_squares(frame, squares, self.size)

    def forget(self, ident: int) -> None:
        self.state.pop(ident, None)


def read_actions(seq: Sequence) -> dict[int, str]:
    """``{id: action}`` from ``<sequence>/gt/actions.txt`` (``id,action`` lines); empty when
    the file is absent. A malformed line raises :class:`DatasetError` naming it."""
    path = seq.path / "gt" / "actions.txt"
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        ident, sep, action = line.partition(",")
        if not sep or not ident.strip().lstrip("-").isdigit() or not action.strip():
            raise DatasetError(f"line {n}: expected 'id,action', got {line!r}", path)
        out[int(ident)] = action.strip()
    return out


def sequence_tubes(
    seq: Sequence, size: int = TUBE_SIZE, margin: float = TUBE_MARGIN
) -> dict[int, np.ndarray]:
    """``{id: (T, size, size, 3) uint8}``: each ground-truth object's crops, over its longest
    run of consecutive frames (a missing frame or a gap in its rows splits a run)."""
    store = FrameStore(seq, (seq.height, seq.width), cache=False)
    a = seq.ann
    runs: dict[int, list[int]] = {}
    for ident in np.unique(a.track[~a.ignore]):
        frames = np.unique(a.frame[(a.track == ident) & ~a.ignore])
        frames = frames[seq.present[frames - 1]]
        if len(frames):
            cuts = np.flatnonzero(np.diff(frames) != 1) + 1
            runs[int(ident)] = max(np.split(frames, cuts), key=len).tolist()
    crops: dict[int, list[torch.Tensor]] = {i: [] for i in runs}
    cropper = TubeCropper(size, margin)
    wanted = sorted({f for fr in runs.values() for f in fr})
    for f in wanted:
        t = seq.target(f)
        idx = [k for k, i in enumerate(t["ids"].tolist()) if i in runs and f in runs[i]]
        if not idx:
            continue
        cut = cropper.crop(store.get(f), t["ids"][idx], t["boxes"][idx])
        for k, c in zip(idx, cut, strict=True):
            crops[int(t["ids"][k])].append(c)
    return {i: torch.stack(c).permute(0, 2, 3, 1).numpy() for i, c in crops.items() if c}


def write_tubes(
    root: str | Path,
    out: str | Path,
    *,
    size: int = TUBE_SIZE,
    margin: float = TUBE_MARGIN,
    min_frames: int = MIN_FRAMES,
) -> dict[str, dict[str, int]]:
    """Write every labelled object's tube of ``root``'s splits to ``out`` (a folder per
    action, H.264 at the sequence's rate); returns ``{split: {action: tubes}}``.

    Raises:
        DatasetError: no sequence of ``root`` has a ``gt/actions.txt``.
        FileExistsError: ``out`` exists and is not empty (nothing is written over).
    """
    from sora.io.video import write_video

    root, out = Path(root), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose another --out")
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        for seq in read_split(root, split):
            actions = read_actions(seq)
            if not actions:
                continue
            for ident, tube in sequence_tubes(seq, size, margin).items():
                if ident not in actions or len(tube) < min_frames:
                    continue
                action = actions[ident]
                write_video(out / split / action / f"{seq.name}_{ident}.mp4", tube, seq.fps)
                per = counts.setdefault(split, {})
                per[action] = per.get(action, 0) + 1
    if not counts:
        raise DatasetError("no sequence has gt/actions.txt (id,action per line)", root)
    return counts
