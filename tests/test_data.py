"""sora.data: samplers, transforms, datasets, MotionShapes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sora.data import synth
from sora.data.datasets import VideoClipDataset, folder_items, manifest_items
from sora.data.sampling import (
    multi_view_indices,
    random_clip_indices,
    segment_indices,
    sliding_windows,
)
from sora.data.transforms import denormalize, video_transform
from sora.errors import DatasetError


@given(st.integers(1, 500), st.integers(1, 64), st.one_of(st.none(), st.floats(0, 0.999)))
def test_segment_indices_in_range_and_ordered(n, t, offset):
    idx = segment_indices(n, t, offset, np.random.default_rng(0))
    assert idx.shape == (t,) and idx.min() >= 0 and idx.max() < n
    assert np.all(np.diff(idx) >= 0)
    if n >= t:
        assert len(set(idx.tolist())) == t  # no repeats when the video is long enough


def test_segment_indices_centres():
    assert segment_indices(16, 4).tolist() == [2, 6, 10, 14]
    views = multi_view_indices(16, 4, 2)
    assert [v.tolist() for v in views] == [[1, 5, 9, 13], [3, 7, 11, 15]]


@given(st.integers(1, 300), st.integers(1, 32), st.integers(1, 40))
def test_sliding_windows_cover_the_video(n, t, stride):
    wins = sliding_windows(n, t, stride)
    assert all(w.shape == (t,) and w.max() < n for w in wins)
    assert wins[0][0] == 0 and wins[-1][-1] == min(n - 1, t - 1 if n <= t else n - 1)


def test_random_clip_is_contiguous():
    idx = random_clip_indices(100, 8, 2, np.random.default_rng(3))
    assert np.all(np.diff(idx) == 2) and idx.max() < 100


def test_transform_same_crop_for_every_frame_and_normalizes():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (1, 3, 40, 50), dtype=torch.uint8)
    video = frame.repeat(5, 1, 1, 1)
    out = video_transform(train=True, crop=[32, 32])(video)
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
    assert all(torch.equal(out[0], out[i]) for i in range(5))
    back = denormalize(out)
    assert back.dtype == torch.uint8
    ev = video_transform(train=False, crop=[32, 32])(video)
    assert torch.equal(denormalize(ev[0]), frame[0, :, 4:36, 9:41])


def test_folder_holdout_is_stratified_seeded_and_disjoint(tiny_data):
    train, classes = folder_items(tiny_data, "train", val_fraction=0.34, seed=1)
    root = tiny_data.parent / "noval"
    if not root.exists():
        shutil.copytree(tiny_data / "train", root / "train")
    tr, classes = folder_items(root, "train", val_fraction=0.34, seed=1)
    va, _ = folder_items(root, "val", val_fraction=0.34, seed=1)
    assert len(classes) == 10 and len(tr) == 20 and len(va) == 10
    assert {i.label for i in va} == set(range(10))  # one per class
    assert not {i.path for i in tr} & {i.path for i in va}
    assert va == folder_items(root, "val", val_fraction=0.34, seed=1)[0]
    assert va != folder_items(root, "val", val_fraction=0.34, seed=2)[0]
    assert len(train) == 30  # with a val/ folder, train is all of train/


def test_manifest_items_and_unknown_label(tmp_path, tiny_data):
    video = next((tiny_data / "test" / "rise").iterdir())
    m = tmp_path / "m.csv"
    m.write_text(f"path,label,start,end\n{video},rise,0.0,1.0\n{video},fall\n")
    items, classes = manifest_items(m)
    assert classes == ["fall", "rise"] and items[0].end == 1.0 and items[1].label == 0
    with pytest.raises(DatasetError, match=r"m\.csv: line 3: label 'fall' is not one of"):
        manifest_items(m, ["rise", "grow"])
    m.write_text(f"{video},rise,2,1\n")
    with pytest.raises(DatasetError, match="line 1: need 0 <= start < end"):
        manifest_items(m)


def tiny_dataset(root, split, train=False, **kwargs) -> VideoClipDataset:
    """4-frame clips at 8 fps, 32x32 crops, from a folder-per-class split."""
    items, classes = folder_items(root, split)
    transform = video_transform(train=train, crop=[32, 32])
    return VideoClipDataset(
        items, classes, fps=8, clip_len=4, short_side=32, train=train, transform=transform, **kwargs
    )


def test_dataset_skips_and_lists_unreadable_files(tmp_path, tiny_data):
    root = tmp_path / "ds"
    shutil.copytree(tiny_data, root)
    (root / "train" / "rise" / "bad.mp4").write_bytes(b"not a video")
    ds = tiny_dataset(root, "train")
    assert len(ds) == 30 and len(ds.skipped) == 1
    assert ds.skipped[0][0].endswith("bad.mp4") and "cannot open as video" in ds.skipped[0][1]
    sample = ds[0]
    assert sample["video"].shape == (4, 3, 32, 32)


def test_dataset_survives_a_file_that_breaks_after_the_check(tmp_path, tiny_data):
    root = tmp_path / "ds"
    shutil.copytree(tiny_data, root)
    ds = tiny_dataset(root, "test", num_views=3)
    ds.items[0].path.write_bytes(b"")  # the file goes bad after the dataset was built
    sample = ds[0]
    assert sample["index"] == 1 and sample["video"].shape == (3, 4, 3, 32, 32)
    assert len(ds.failed) == 1 and "empty file" in ds.failed[0][1]


def test_motionshapes_layout_annotations_and_determinism(tiny_data):
    info = json.loads((tiny_data / "motionshapes.json").read_text())
    assert info["classes"] == list(synth.CLASSES) and info["seed"] == 0
    assert len(list((tiny_data / "train").glob("*/*.mp4"))) == 30
    ann = json.loads(
        next((tiny_data / "annotations" / "train" / "grow").glob("*.json")).read_text()
    )
    assert ann["label"] == "grow" and ann["objects"][0]["role"] == "target"
    assert len(ann["objects"][0]["boxes"]) == ann["num_frames"]
    a_frames, a_ann = synth.render_clip(0, "train", 3, 7)
    b_frames, b_ann = synth.render_clip(0, "train", 3, 7)
    assert np.array_equal(a_frames, b_frames) and a_ann == b_ann
    c_frames, _ = synth.render_clip(1, "train", 3, 7)
    assert not np.array_equal(a_frames[:1], c_frames[:1])
    # the same bytes on every machine: x264's output depends on its thread count, which
    # FFmpeg otherwise takes from the cores; x264 writes its settings into the stream
    video = next((tiny_data / "train" / "grow").glob("*.mp4")).read_bytes()
    assert b" threads=1 " in video and b" lookahead_threads=1 " in video


def _centre(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0])


@pytest.mark.parametrize("index", range(4))
def test_motionshapes_motion_matches_its_label(index):
    for label, axis, sign in (
        ("slide_right", 0, 1),
        ("slide_left", 0, -1),
        ("fall", 1, 1),
        ("rise", 1, -1),
        ("grow", 2, 1),
        ("shrink", 2, -1),
    ):
        _, ann = synth.render_clip(0, "train", synth.CLASSES.index(label), index)
        boxes = [b for b in ann["objects"][0]["boxes"] if b]
        start, end = _centre(boxes[0])[axis], _centre(boxes[-1])[axis]
        assert (end - start) * sign > 0, (label, start, end)
    _, ann = synth.render_clip(0, "train", synth.CLASSES.index("appear"), index)
    boxes = ann["objects"][0]["boxes"]
    assert boxes[0] is None and boxes[-1] is not None
    _, ann = synth.render_clip(0, "train", synth.CLASSES.index("vanish"), index)
    assert ann["objects"][0]["boxes"][0] is not None and ann["objects"][0]["boxes"][-1] is None


def test_generate_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a MotionShapes folder"):
        synth.generate(tmp_path / "mine", train=1, val=0, test=0)
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_generate_refuses_a_folder_made_with_another_seed(tiny_data):
    before = sorted(p.name for p in (tiny_data / "train" / "grow").iterdir())
    with pytest.raises(FileExistsError, match=r"holds MotionShapes made with version \d+, seed 0"):
        synth.generate(tiny_data, train=1, val=0, test=0, seed=1)
    assert sorted(p.name for p in (tiny_data / "train" / "grow").iterdir()) == before


def test_dataloader_with_workers(tiny_data):
    from torch.utils.data import DataLoader

    from sora.data.datasets import worker_init_fn

    ds = tiny_dataset(tiny_data, "train", train=True)
    loader = DataLoader(ds, batch_size=5, num_workers=2, worker_init_fn=worker_init_fn)
    batches = list(loader)
    assert sum(b["video"].shape[0] for b in batches) == 30
    assert batches[0]["video"].shape == (5, 4, 3, 32, 32) and batches[0]["label"].shape == (5,)


# -- sampling fitted to the data (sora.data.fit) -------------------------------------------


def _videos(n=5, duration=5.0, fps=30.0, w=160, h=120):
    from sora.data.fit import VideoStats

    return [VideoStats(duration, fps, w, h) for _ in range(n)]


def test_fit_raises_fps_for_videos_shorter_than_a_clip():
    from sora.config import DataConfig
    from sora.data.fit import fit_sampling

    fit = fit_sampling(DataConfig(), _videos(duration=0.64, fps=25.0))  # the footage
    assert fit.fps == 25.0 and len(fit.notes) == 1
    assert fit.notes[0].startswith("data.fps 8 -> 25: the median training video lasts 0.64 s")
    assert fit.stats["median_native_fps"] == 25.0
    # never above the native rate, and no note when a clip already covers the videos
    assert fit_sampling(DataConfig(), _videos(duration=0.64, fps=12.0)).fps == 12.0
    long = fit_sampling(DataConfig(), _videos(duration=5.0))
    assert long.fps == 8.0 and long.notes == []
    # the median decides: one short video among long ones changes nothing
    mixed = _videos(4, duration=5.0) + _videos(1, duration=0.3)
    assert fit_sampling(DataConfig(), mixed).fps == 8.0
    assert fit_sampling(DataConfig(), []).fps == 8.0


def test_fit_says_when_frames_repeat_are_enlarged_or_cropped_away():
    from sora.config import DataConfig
    from sora.data.fit import fit_sampling

    few = fit_sampling(DataConfig(), _videos(duration=0.3, fps=25.0))
    assert few.fps == 25.0
    assert "the median video has 8 frames at 25 fps, a clip takes 16" in few.notes[1]
    assert "--set data.clip_len=7" in few.notes[1]
    fast = fit_sampling(DataConfig(fps=30.0), _videos(duration=5.0, fps=15.0))
    assert fast.notes == ["frames repeat: data.fps 30 is above the videos' native 15 fps"]
    wide = fit_sampling(DataConfig(), _videos(w=200, h=40))
    assert wide.fps == 8.0 and len(wide.notes) == 2
    assert wide.notes[0].startswith("frames are enlarged: the median video is 40 px")
    assert wide.notes[1].startswith("the 64x80 crop keeps 25% of a 64x320 frame")


def test_probe_items_reads_duration_rate_and_size_with_manifest_windows(make_video):
    from types import SimpleNamespace

    from sora.data.fit import probe_items

    path = make_video(n=30, fps=15.0, h=48, w=64)
    stats = probe_items(
        [
            SimpleNamespace(path=path),
            SimpleNamespace(path=path, start=0.5, end=1.5),
            SimpleNamespace(path=path.with_name("missing.mp4")),  # skipped, not an error
        ]
    )
    assert len(stats) == 2
    whole, window = stats
    assert whole.duration == pytest.approx(2.0, abs=0.07) and whole.fps == pytest.approx(15)
    assert (whole.width, whole.height) == (64, 48)
    assert window.duration == pytest.approx(1.0, abs=0.01)


def test_test_views_follow_the_training_sampler():
    from sora.data.sampling import view_indices

    contiguous = view_indices(100, 10, 3, "random")
    assert [v.tolist()[:2] for v in contiguous] == [[15, 16], [45, 46], [75, 76]]
    assert all(np.array_equal(np.diff(v), np.ones(9)) for v in contiguous)
    assert view_indices(5, 8, 1, "random")[0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    spread = view_indices(100, 10, 1, "uniform")[0]
    assert spread.tolist() == list(range(5, 100, 10))  # TSN: one frame per segment
