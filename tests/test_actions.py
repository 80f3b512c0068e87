"""Per-track actions: MotionShapes-Det's action variant, tubes, the streaming per-track
classifier (== the classifier offline on the same tube) and the action metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_sora, tiny_config
from test_track import truth_tracks, two_walkers

from sora.data import synth_det
from sora.data.mot import read_split
from sora.data.tubes import TubeCropper, crop_squares, read_actions, sequence_tubes, write_tubes
from sora.errors import DatasetError
from sora.evaluation.tracking import action_scores, frame_matches
from sora.inference.actions import ActionTagger
from sora.models.soranet import SoraNet
from sora.models.store import save_model


def test_the_plain_dataset_is_unchanged_by_the_action_variant():
    plain = synth_det.render_sequence(0, "train", 2, 30)
    again = synth_det.render_sequence(0, "train", 2, 30, actions=False)
    np.testing.assert_array_equal(plain[0], again[0])
    assert plain[1] == again[1] and plain[2] == {} == again[2]
    frames, rows, acts = synth_det.render_sequence(0, "train", 2, 30, actions=True)
    ids = {r[1] for r in rows}
    assert set(acts) == ids and set(acts.values()) <= set(synth_det.ACTIONS)
    assert not np.array_equal(frames, plain[0])


@pytest.fixture(scope="module")
def act_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("act") / "data"
    synth_det.generate(root, train=2, val=1, test=1, frames=16, workers=1, actions=True)
    return root


def test_action_data_and_its_tubes(act_data, tmp_path):
    assert (act_data / "actions.txt").read_text().split() == list(synth_det.ACTIONS)
    seq = read_split(act_data, "train")[0]
    actions = read_actions(seq)
    assert set(actions) == set(np.unique(seq.ann.track).tolist())
    with pytest.raises(FileExistsError, match="made with"):  # plain data into this folder
        synth_det.generate(act_data, train=2, val=1, test=1, frames=16, workers=1)
    counts = write_tubes(act_data, tmp_path / "tubes", size=32)
    videos = sorted((tmp_path / "tubes").glob("*/*/*.mp4"))
    assert sum(n for per in counts.values() for n in per.values()) == len(videos) > 0
    assert {v.parent.name for v in videos} <= set(synth_det.ACTIONS)
    with pytest.raises(FileExistsError, match="not empty"):
        write_tubes(act_data, tmp_path / "tubes")
    with pytest.raises(DatasetError, match="no sequence has gt/actions.txt"):
        write_tubes(act_data.parent / "nothing", tmp_path / "t2")


def test_bad_actions_file_names_the_line(act_data, tmp_path):
    import shutil

    from sora.data.mot import read_sequence

    shutil.copytree(act_data / "val" / "val_000", tmp_path / "seq")
    (tmp_path / "seq" / "gt" / "actions.txt").write_text("1,glide\nbroken\n")
    seq = read_sequence(tmp_path / "seq")
    with pytest.raises(DatasetError, match=r"actions.txt: line 2: expected 'id,action'"):
        read_actions(seq)


def test_tube_crops_follow_the_object_with_running_averages():
    frame = torch.zeros(3, 100, 100, dtype=torch.uint8)
    frame[:, 40:60, 40:60] = 255  # a 20-px white square
    crop = crop_squares(frame, [[30, 30, 70, 70]], size=40)[0]
    assert crop.shape == (3, 40, 40) and crop[:, 20, 20].tolist() == [255] * 3
    assert crop[:, 2, 2].tolist() == [0] * 3  # 1 px per output pixel: the corner is dark
    cropper = TubeCropper(size=16, margin=1.0)
    cropper.crop(frame, [7], [[40, 40, 60, 60]])
    cropper.crop(frame, [7], [[50, 40, 70, 60]])  # moved 10 px right
    cx, cy, side = cropper.state[7]
    assert cx == pytest.approx(50 + 0.25 * 10) and cy == 50 and side == 20  # lags behind
    cropper.forget(7)
    assert cropper.state == {}


@pytest.fixture(scope="module")
def action_run(tmp_path_factory):
    """An untrained tiny SoraNet saved as a classify run over the four actions."""
    torch.manual_seed(0)
    config = tiny_config()
    config.data.fps = 15.0
    config.model.num_classes = len(synth_det.ACTIONS)
    folder = tmp_path_factory.mktemp("actrun") / "run" / "model"
    save_model(SoraNet(config.model).eval(), config, list(synth_det.ACTIONS), folder)
    return folder.parent


def test_streamed_per_track_actions_equal_the_classifier_on_the_tube(act_data, action_run):
    seq = read_split(act_data, "train")[0]
    tagger = ActionTagger(action_run, device="cpu")
    tubes = sequence_tubes(seq, size=32)
    ident = next(iter(tubes))
    tube = torch.from_numpy(tubes[ident]).permute(0, 3, 1, 2)  # (T, 3, 32, 32)
    # stream every object of the sequence at once (batched), as the tracker would give them
    from sora.data.mot import FrameStore

    store = FrameStore(seq, (seq.height, seq.width), cache=False)
    first = None
    for f in range(1, seq.num_frames + 1):
        t = seq.target(f)
        ids = t["ids"].tolist()
        if ident not in ids:
            continue
        first = first or f
        tagger.update((f - 1) / seq.fps, store.get(f).permute(1, 2, 0).numpy(), ids, t["boxes"])
        if f - first + 1 == tagger.window - 1:  # inside the first window
            break
    k = f - first + 1
    with torch.no_grad():
        clip = tagger.transform(tube[:k]).unsqueeze(0)
        offline = tagger.model(clip)[0].softmax(-1)
    torch.testing.assert_close(tagger.tracks[ident].current, offline, atol=1e-5, rtol=1e-4)


def test_a_track_back_after_a_gap_starts_a_new_tube_and_keeps_its_votes(action_run):
    tagger = ActionTagger(action_run, device="cpu")
    dt = 1 / (tagger.fps or 15)
    g = np.random.default_rng(0)
    images = [g.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(40)]
    left, right = [[2, 2, 18, 18]], [[40, 20, 60, 40]]
    k = 0
    for _ in range(tagger.window + 2):  # one window scored, two steps into the next
        tagger.update(k * dt, images[k], [1], left)
        k += 1
    assert tagger.tracks[1].windows == 1 and tagger.tracks[1].steps == 2
    votes = tagger.tracks[1].window_sum.clone()
    for _ in range(3):  # gone for three frames (the tracker kept its id, or re-ID gave it back)
        tagger.update(k * dt, images[k], [], [])
        k += 1
    fresh = ActionTagger(action_run, device="cpu")
    for j in range(3):  # back on the right: the same as a new tube there
        tagger.update(k * dt, images[k], [1], right)
        fresh.update(j * dt, images[k], [1], right)
        k += 1
    t = tagger.tracks[1]
    np.testing.assert_allclose(tagger.cropper.state[1], fresh.cropper.state[1])
    torch.testing.assert_close(t.current, fresh.tracks[1].current)
    assert t.steps == 3 and t.windows == 1
    torch.testing.assert_close(t.window_sum, votes)  # the scored window still counts
    torch.testing.assert_close(t.probabilities(), votes)


def test_a_track_not_seen_for_a_while_is_released(action_run):
    tagger = ActionTagger(action_run, device="cpu", forget_after=1.0)
    image = np.zeros((48, 64, 3), np.uint8)
    for k in range(5):
        acts, probs = tagger.update(k / 15, image, [1, 2], [[5, 5, 20, 20], [30, 10, 50, 30]])
    assert acts.shape == (2,) and np.all((0 < probs) & (probs <= 1))
    for k in range(30):  # only track 2 from now on, for 2 s
        tagger.update(1 + k / 15, image, [2], [[30, 10, 50, 30]])
    assert set(tagger.tracks) == {2} and set(tagger.cropper.state) == {2}


def test_action_scores_on_perfect_tracks(tmp_path):
    seq = two_walkers()
    seq.path = tmp_path / "walk"
    (seq.path / "gt").mkdir(parents=True)
    (seq.path / "gt" / "actions.txt").write_text("1,glide\n2,pulse\n")
    tracks = truth_tracks(seq)
    names = ["glide", "pulse"]
    for f, ft in tracks.items():  # object 2's action is wrong in its first 10 frames
        ft.actions = np.where(ft.ids == 2, int(f > 10), 0)
        ft.action_probs = np.ones(len(ft.ids))
    m = action_scores([seq], {"walk": tracks}, names)
    assert m["track_accuracy"] == 1.0 and m["tracks_matched"] == m["objects"] == 2
    assert m["frame_accuracy"] == pytest.approx(50 / 60, abs=1e-4)
    assert m["confusion"] == [[1, 0], [0, 1]]
    assert sum(len(mt) for _, _, mt in frame_matches(seq, tracks)) == 60
    tracks[30].actions[tracks[30].ids == 2] = 0  # wrong at its last frame: the track's label
    assert action_scores([seq], {"walk": tracks}, names)["track_accuracy"] == 0.5


def test_cli_tubes_and_track_with_actions(act_data, det_run, action_run, tmp_path):
    proc = run_sora("data", "tubes", act_data, "--out", tmp_path / "tubes", check=True)
    assert "sora train --data" in proc.stdout
    seq = act_data / "test" / "test_000"
    low = ("--high", "0.05", "--conf", "0.05")
    proc = run_sora(
        "track", det_run, seq, "--actions", action_run, "--format", "jsonl", *low, check=True
    )
    tracks = [t for line in proc.stdout.splitlines() for t in json.loads(line)["tracks"]]
    assert tracks and all(t["action"] in synth_det.ACTIONS for t in tracks)
    assert all(0 < t["action_probability"] <= 1 for t in tracks)
    proc = run_sora("track", det_run, seq, "--actions", action_run, *low, check=True)
    rows = [r.split(",") for r in proc.stdout.splitlines()]
    assert rows and all(len(r) == 12 and 1 <= int(r[10]) <= 4 for r in rows)
    proc = run_sora(
        "eval", det_run, "--data", act_data, "--task", "track", "--actions", action_run, *low
    )
    assert proc.returncode == 0, proc.stderr
    assert "actions: per-track accuracy" in proc.stdout
    m = json.loads((det_run / "eval" / "tracking.json").read_text())["actions"]
    assert m["classes"] == list(synth_det.ACTIONS) and 0 <= m["frame_accuracy"] <= 1
