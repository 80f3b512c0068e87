"""sora.io: metadata, decoding, fps resampling by timestamp, resize, sources, bad input."""

from __future__ import annotations

import os
import stat
import struct
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import frames_with_index, run_sora

from sora.errors import VideoReadError
from sora.io import VideoReader, probe, read_video, write_video


def brightness(frames) -> np.ndarray:
    return frames.float().mean(dim=(1, 2, 3)).numpy()


def test_round_trip_metadata_and_values(make_video):
    path = make_video(n=30, fps=15)
    meta = probe(path)
    assert (meta.fps, meta.num_frames, meta.width, meta.height) == (15.0, 30, 64, 48)
    assert meta.duration == pytest.approx(2.0)
    frames, times = read_video(path)
    assert frames.shape == (30, 3, 48, 64) and frames.dtype.__str__() == "torch.uint8"
    np.testing.assert_allclose(times, np.arange(30) / 15, atol=1e-6)
    np.testing.assert_allclose(brightness(frames), 4 * np.arange(30), atol=3)


@pytest.mark.parametrize(
    "codec,ext",
    [
        ("libx264", "mp4"),
        ("mpeg4", "avi"),
        ("libvpx-vp9", "webm"),
        ("mjpeg", "mkv"),
        ("libx265", "mov"),
    ],
)
def test_codecs_and_containers(make_video, codec, ext):
    path = make_video(name=f"v.{ext}", n=12, fps=12, codec=codec)
    frames, _ = read_video(path)
    assert frames.shape == (12, 3, 48, 64)
    np.testing.assert_allclose(brightness(frames), 4 * np.arange(12), atol=4)


def test_resample_to_lower_fps_by_timestamp(make_video):
    path = make_video(n=60, fps=30)  # 2 s
    frames, times = read_video(path, fps=10)
    assert frames.shape[0] == 20
    np.testing.assert_allclose(times, np.arange(20) / 10, atol=1e-6)
    # frame k of the output is input frame 3k (nearest in time)
    np.testing.assert_allclose(brightness(frames), 4 * 3 * np.arange(20), atol=3)


def test_resample_to_higher_fps_repeats_frames(make_video):
    frames, times = read_video(make_video(n=10, fps=5), fps=10)
    assert frames.shape[0] == 20
    np.testing.assert_allclose(brightness(frames)[::2], brightness(frames)[1::2], atol=0.5)


def _write_vfr(path, times_ms):
    """A variable-frame-rate mkv: frame i has brightness 8*i and pts times_ms[i] (ms)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = s.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            c.mux(s.encode(f))
        c.mux(s.encode())


def test_variable_frame_rate_resampled_evenly(tmp_path):
    # bursts: 10 frames 20 ms apart, then 10 frames 180 ms apart
    t = [20 * i for i in range(10)] + [180 + 180 * i for i in range(10)]
    path = tmp_path / "vfr.mkv"
    _write_vfr(path, t)
    frames, times = read_video(path, fps=5)
    np.testing.assert_allclose(np.diff(times), 0.2, atol=1e-6)
    # each output frame is the input frame nearest in time to its target
    src = np.array(t) / 1000
    expected = [int(np.argmin(np.abs(src - x))) for x in times]
    np.testing.assert_allclose(brightness(frames), 8 * np.array(expected), atol=4)


def test_resize_on_decode_keeps_aspect(make_video):
    frames, _ = read_video(make_video(n=4, h=48, w=64), short_side=24)
    assert frames.shape == (4, 3, 24, 32)
    frames, _ = read_video(make_video(name="b.mp4", n=4), size=(20, 30))
    assert frames.shape[-2:] == (20, 30)


def test_start_end_window(make_video):
    frames, times = read_video(make_video(n=30, fps=15), start=0.5, end=1.0)
    np.testing.assert_allclose(times, np.arange(8, 15) / 15, atol=1e-6)  # frames in [0.5, 1.0)
    assert frames.shape[0] == 7


def test_image_folder_is_a_source(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames_with_index(6)):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    reader = VideoReader(folder, image_fps=3)
    out = list(reader)
    assert [round(f.time, 3) for f in out] == [round(i / 3, 3) for i in range(6)]
    assert out[2].image.shape == (48, 64, 3) and out[2].image.mean() == 8
    assert probe(folder, image_fps=3).num_frames == 6


def test_rotation_metadata_is_applied(tmp_path):
    img = np.zeros((32, 64, 3), np.uint8)
    img[:8, :8] = 255  # a white marker in the top-left corner
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)  # displayed rotated 90 degrees counter-clockwise
        for _ in range(3):
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    meta = probe(path)
    assert (meta.width, meta.height, meta.rotation) == (32, 64, 90)
    frames, _ = read_video(path)
    assert frames.shape[-2:] == (64, 32)
    shown = frames[0, 0].numpy()
    # counter-clockwise rotation moves the top-left corner to the bottom-left
    assert shown[-8:, :8].mean() > 200 and shown[:8, :8].mean() < 50


def test_odd_size_decodes(make_video):
    path = make_video(name="odd.mkv", n=5, h=33, w=47, codec="mjpeg")
    frames, _ = read_video(path)
    assert frames.shape == (5, 3, 33, 47)


def test_huge_resolution_refused_or_downscaled(make_video):
    path = make_video(name="big.mkv", n=2, h=2160, w=4096, codec="mjpeg")
    with pytest.raises(VideoReadError, match=r"big\.mkv: resolution 4096x2160 exceeds"):
        list(VideoReader(path, max_pixels=1920 * 1080))
    frames, _ = read_video(path, short_side=90)  # decoded straight to the small size
    assert frames.shape == (2, 3, 90, 171)


def test_lying_frame_count_in_header(make_video):
    path = make_video(name="lie.avi", n=20, fps=10, codec="mpeg4")
    data = bytearray(path.read_bytes())
    at = data.index(b"avih") + 8 + 16  # dwTotalFrames of the AVI main header
    assert struct.unpack("<I", data[at : at + 4])[0] == 20
    data[at : at + 4] = struct.pack("<I", 500)
    path.write_bytes(bytes(data))
    meta = probe(path)
    assert meta.num_frames == 20
    frames, _ = read_video(path, fps=5)
    assert frames.shape[0] == 10


def test_corrupt_packets_mid_stream_are_skipped(make_video):
    path = make_video(
        name="c.mp4",
        n=60,
        fps=30,
        frames=(np.random.default_rng(0).random((60, 48, 64, 3)) * 255).astype(np.uint8),
    )
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = bytes(np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8))
    path.write_bytes(bytes(data))
    frames, _ = read_video(path)
    assert 30 <= frames.shape[0] <= 60


BAD = {
    "zero.mp4": (lambda p: p.write_bytes(b""), "empty file"),
    "random.mp4": (
        lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
        "cannot open as video",
    ),
    "notes.mp4": (lambda p: p.write_text("just some text\n" * 50), "cannot open as video"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_give_one_line_error(tmp_path, name):
    make, reason = BAD[name]
    path = tmp_path / name
    make(path)
    with pytest.raises(VideoReadError) as err:
        read_video(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and reason in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(VideoReadError, match="missing.mp4: file not found"):
        probe(tmp_path / "missing.mp4")


def test_truncated_mp4(make_video):
    path = make_video(name="t.mp4", n=30)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(VideoReadError, match=r"t\.mp4: cannot open as video"):
        read_video(path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(10):
            f = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            f.sample_rate, f.pts = 16000, i * 1024
            c.mux(s.encode(f))
        c.mux(s.encode())
    with pytest.raises(VideoReadError, match=r"audio\.mp4: no video stream \(streams: audio\)"):
        read_video(path)


def test_write_video_is_atomic_and_refuses_overwrite(make_video):
    path = make_video(n=4)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_video(path, frames_with_index(4), 10)
    with pytest.raises(ValueError):
        write_video(path.with_name("x.mp4"), frames_with_index(4, 33, 47), 10)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["v.mp4"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_respect_the_umask(tmp_path, umask):
    """Atomic writes give the mode ``open`` would (0o666 less the umask), not mkstemp's 0o600:
    a shared run folder or a web server must be able to read the report."""
    from sora.io.files import atomic_write_bytes, atomic_write_text
    from sora.io.video import VideoWriter

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.html", "<html></html>")
        atomic_write_bytes(tmp_path / "model.safetensors", b"x")
        writer = VideoWriter(tmp_path / "out.mp4", fps=10)
        writer.write(np.zeros((32, 32, 3), np.uint8))
        writer.close()
    finally:
        os.umask(old)
    for name in ("report.html", "model.safetensors", "out.mp4"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_cli_inspect_lists_bad_files(tiny_data, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny_data, root)
    (root / "train" / "rise" / "broken.mp4").write_bytes(b"")
    (root / "train" / "rise" / "readme.txt").write_text("x")
    proc = run_sora("data", "inspect", root)
    assert proc.returncode == 0, proc.stderr
    assert "unreadable files: 1" in proc.stdout
    assert "broken.mp4: empty file (0 bytes)" in proc.stdout
    assert "train  rise" in proc.stdout and "ignored" in proc.stdout
    proc = run_sora("data", "inspect", tmp_path / "nope")
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
    assert "nope: dataset folder not found" in proc.stderr


def test_url_source_through_the_live_path(make_video):
    """A stream URL goes through the live-source path (as an rtsp camera would)."""
    import functools
    import http.server
    import threading

    path = make_video(n=20, fps=10)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        reader = VideoReader(url, fps=5)
        assert reader.live
        frames = list(reader)
        assert len(frames) == 10 and frames[3].image.mean() == pytest.approx(4 * 6, abs=3)
    finally:
        server.shutdown()
