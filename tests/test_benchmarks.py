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
    }
    flags = []
    run = model.run
    monkeypatch.setattr(
        model, "run", lambda v, memory=True: flags.append(memory) or run(v, memory=memory)
    )
    fit = detection.train_budget("SoraDet", model, [item] * 8, 1e-9, 1e-3, print, steps=4)
    assert fit["steps"] == 4 and fit["train_frames"] == 4 * 8 * 2
    assert flags == [False, False, True, True]
