"""Video input/output: metadata, decoding (fps resampling, resize on decode), encoding, live sources."""

from sora.io.video import (
    Frame,
    VideoMeta,
    VideoReader,
    VideoWriter,
    probe,
    read_video,
    write_video,
)

__all__ = [
    "Frame",
    "VideoMeta",
    "VideoReader",
    "VideoWriter",
    "probe",
    "read_video",
    "write_video",
]
