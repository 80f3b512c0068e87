"""Convert the public anomaly benchmarks, as distributed, to Sora's layout
(:mod:`sora.data.anomaly`): ``sora data convert-anomaly SRC --format F --out DIR``.

``ped2`` (also ``ped1``): the UCSD Anomaly Detection Dataset folder ``UCSDped2``::

    Train/Train001/001.tif ...        -> training/Train001/001.png ...
    Test/Test001/001.tif ...          -> testing/Test001/001.png ...
    Test/Test001_gt/001.bmp ...       -> testing/Test001.txt (1 where the mask has a pixel)
    or UCSDped2.m (``TestVideoFile{k}.gt_frame = [61:180];``) where masks are missing

``avenue``: CUHK Avenue::

    training_videos/01.avi            -> training/01.avi
    testing_videos/01.avi             -> testing/01.avi
    ground_truth_demo/testing_label_mask/1_label.mat (``volLabel``, a mask per frame)
                                      -> testing/01.txt

``shanghaitech``: the ShanghaiTech Campus dataset::

    training/videos/01_001.avi        -> training/01_001.avi
    testing/frames/01_0014/000.jpg ...-> testing/01_0014/000.jpg ...
    testing/test_frame_mask/01_0014.npy (0/1 per frame) -> testing/01_0014.txt

Files are hard-linked where the file system allows (no extra space), copied otherwise; TIFF
frames are re-encoded as PNG (lossless). ``DIR`` must be new or empty: nothing is overwritten.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from sora.errors import DatasetError
from sora.io.files import atomic_write_text, link_or_copy

FORMATS = ("ped1", "ped2", "avenue", "shanghaitech")


def _labels(path: Path, values) -> None:
    atomic_write_text(path, "".join(f"{int(bool(v))}\n" for v in values))


def _frames(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)


def _copy_frames(src: Path, dst: Path) -> int:
    frames = _frames(src, (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"))
    if not frames:
        raise DatasetError("no frames", src)
    for f in frames:
        if f.suffix.lower() in (".tif", ".tiff"):
            dst.mkdir(parents=True, exist_ok=True)
            Image.open(f).convert("RGB").save(dst / f"{f.stem}.png")
        else:
            link_or_copy(f, dst / f.name)
    return len(frames)


def _ucsd_ranges(src: Path) -> dict[int, list[tuple[int, int]]]:
    """``{video number: [(first, last)]}`` from the dataset's ``UCSDped*.m`` file."""
    out: dict[int, list[tuple[int, int]]] = {}
    for m in src.glob("*.m"):
        for k, body in re.findall(
            r"TestVideoFile\{(\d+)\}\.gt_frame\s*=\s*\[([^\]]*)\]", m.read_text()
        ):
            for a, b in re.findall(r"(\d+)\s*:\s*(\d+)", body):
                out.setdefault(int(k), []).append((int(a), int(b)))
    return out


def _convert_ucsd(src: Path, out: Path) -> tuple[int, int]:
    train = sorted(
        p for p in (src / "Train").iterdir() if p.is_dir() and not p.name.endswith("_gt")
    )
    test = sorted(p for p in (src / "Test").iterdir() if p.is_dir() and not p.name.endswith("_gt"))
    for v in train:
        _copy_frames(v, out / "training" / v.name)
    ranges = _ucsd_ranges(src)
    for v in test:
        n = _copy_frames(v, out / "testing" / v.name)
        gt = v.parent / f"{v.name}_gt"
        if gt.is_dir():
            masks = _frames(gt, (".bmp", ".png", ".tif"))
            if len(masks) != n:
                raise DatasetError(f"{len(masks)} masks for {n} frames", gt)
            values = [np.asarray(Image.open(p)).any() for p in masks]
        else:
            number = int(re.sub(r"\D", "", v.name) or 0)
            if number not in ranges:
                raise DatasetError(f"no {v.name}_gt/ masks and no gt_frame in a .m file", v)
            values = np.zeros(n, bool)
            for a, b in ranges[number]:
                values[a - 1 : b] = True
        _labels(out / "testing" / f"{v.name}.txt", values)
    return len(train), len(test)


def _convert_avenue(src: Path, out: Path) -> tuple[int, int]:
    from scipy.io import loadmat

    train = sorted((src / "training_videos").glob("*.avi"))
    test = sorted((src / "testing_videos").glob("*.avi"))
    masks = next(
        (
            p
            for p in (src / "ground_truth_demo" / "testing_label_mask", src / "testing_label_mask")
            if p.is_dir()
        ),
        None,
    )
    if masks is None:
        raise DatasetError("no ground_truth_demo/testing_label_mask/ folder", src)
    for v in train:
        link_or_copy(v, out / "training" / v.name)
    for v in test:
        mat = masks / f"{int(v.stem)}_label.mat"
        if not mat.is_file():
            raise DatasetError(f"no {mat.name} for {v.name}", masks)
        try:
            vol = loadmat(mat)["volLabel"]
        except (KeyError, ValueError, OSError) as err:
            raise DatasetError(f"not a volLabel .mat file ({err})", mat) from None
        link_or_copy(v, out / "testing" / v.name)
        _labels(out / "testing" / f"{v.stem}.txt", [np.asarray(m).any() for m in vol.ravel()])
    return len(train), len(test)


def _convert_shanghaitech(src: Path, out: Path) -> tuple[int, int]:
    train = sorted((src / "training" / "videos").glob("*.avi"))
    test = sorted(p for p in (src / "testing" / "frames").iterdir() if p.is_dir())
    for v in train:
        link_or_copy(v, out / "training" / v.name)
    for v in test:
        mask = src / "testing" / "test_frame_mask" / f"{v.name}.npy"
        if not mask.is_file():
            raise DatasetError(f"no test_frame_mask/{mask.name}", v)
        n = _copy_frames(v, out / "testing" / v.name)
        values = np.load(mask, allow_pickle=False).ravel()
        if len(values) != n:
            raise DatasetError(f"{len(values)} labels for {n} frames", mask)
        _labels(out / "testing" / f"{v.name}.txt", values)
    return len(train), len(test)


def convert(src: str | Path, fmt: str, out: str | Path) -> tuple[int, int]:
    """Convert ``src`` (a dataset in format ``fmt``) into ``out``; returns the numbers of
    training and testing videos.

    Raises:
        DatasetError: a missing folder or label file (named), or labels that do not fit.
        FileExistsError: ``out`` holds files.
    """
    src, out = Path(src), Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not src.is_dir():
        raise DatasetError("dataset folder not found", src)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists and is not empty; choose another --out")
    need = {
        "ped1": ("Train", "Test"),
        "ped2": ("Train", "Test"),
        "avenue": ("training_videos", "testing_videos"),
        "shanghaitech": ("training/videos", "testing/frames"),
    }[fmt]
    for folder in need:
        if not (src / folder).is_dir():
            raise DatasetError(f"no {folder}/ folder: not the {fmt} layout", src)
    (out / "training").mkdir(parents=True, exist_ok=True)
    (out / "testing").mkdir(parents=True, exist_ok=True)
    if fmt in ("ped1", "ped2"):
        return _convert_ucsd(src, out)
    if fmt == "avenue":
        return _convert_avenue(src, out)
    return _convert_shanghaitech(src, out)
