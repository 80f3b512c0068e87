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
