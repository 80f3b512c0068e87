"""Video object detection: the MOT reader and its bad input, MotionShapes-Det, SoraDet
(streaming == offline, target assignment), and the CLI end to end (train, eval, report,
predict with MOT/JSON lines/annotated video, demo pieces)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY, TINY_SETS, run_sora
from PIL import Image

from sora.config import apply_overrides, default_config
from sora.data import synth_det
from sora.data.detection import DetectionClipDataset
from sora.data.mot import FrameStore, is_mot_root, mot_row, read_sequence, read_split
from sora.errors import DatasetError
from sora.io.video import write_video
from sora.models.soradet import (
    SoraDet,
    assign,
    assign_frames,
    detection_loss,
    pad_targets,
)


def tiny_det_config(**extra):
    config = apply_overrides(
        default_config("detect"), TINY + [f"{k}={v}" for k, v in extra.items()]
    )
    config.model.num_classes = 3
    return config


def make_sequence(root: Path, gt: str, frames: int = 6, labels: str | None = "a\nb\n", skip=()):
    """A sequence folder with ``frames`` 64x48 JPEGs (minus ``skip``), ``gt.txt`` and
    optionally ``labels.txt``."""
    seq = root / "train" / "seq1"
    (seq / "img1").mkdir(parents=True)
    (seq / "gt").mkdir()
    for k in range(1, frames + 1):
        if k not in skip:
            Image.fromarray(np.full((48, 64, 3), 10 * k, np.uint8)).save(
                seq / "img1" / f"{k:06d}.jpg"
            )
    (seq / "gt" / "gt.txt").write_text(gt)
    if labels is not None:
        (seq / "gt" / "labels.txt").write_text(labels)
    return seq


# -- MOT layout --------------------------------------------------------------------------


def test_mot_rows_become_xyxy_boxes_with_ignore_and_visibility(tmp_path):
    seq = make_sequence(
        tmp_path, "1,1,11,21,10,5,1,2,0.5\n1,2,1,1,4,4,0,1,1\n3,1,12,21,10,5,1,2,1\n"
    )
    s = read_sequence(seq)
    assert (s.width, s.height, s.num_frames) == (64, 48, 6)
    t = s.target(1)
    torch.testing.assert_close(t["boxes"], torch.tensor([[10.0, 20, 20, 25], [0, 0, 4, 4]]))
    assert t["labels"].tolist() == [1, 0] and t["ignore"].tolist() == [False, True]
    assert t["visibility"].tolist() == [0.5, 1.0]
    assert len(s.target(2)["boxes"]) == 0 and s.warnings == []
    assert is_mot_root(tmp_path)
    # scaled to another frame size
    torch.testing.assert_close(
        s.target(3, (0.5, 2.0))["boxes"], torch.tensor([[5.5, 40, 10.5, 50]])
    )
    # written back as a MOT row: the same numbers
    assert (
        mot_row(3, [11.0, 20, 21, 25], 0.9, 1, track=1)
        == "3,1,12.00,21.00,10.00,5.00,0.9000,2,-1,-1"
    )


@pytest.mark.parametrize(
    "gt, message",
    [
        ("1,1,10,10\n", "line 1: malformed row"),
        ("1,1,10,10,5,5,1,1,1\n1,x,10,10,5,5,1,1,1\n", "line 2: not numbers"),
        ("0,1,10,10,5,5,1,1,1\n", "line 1: frame must be an integer >= 1"),
        ("1,1,10,10,0,5,1,1,1\n", "line 1: box width and height must be > 0"),
        ("1,1,10,10,5,5,1,3,1\n", "line 1: unknown class id 3 (known: 1..2 (labels.txt))"),
    ],
)
def test_bad_gt_rows_are_one_line_errors_naming_file_and_line(tmp_path, gt, message):
    seq = make_sequence(tmp_path, gt)
    with pytest.raises(DatasetError) as err:
        read_sequence(seq)
    assert str(err.value).startswith(f"{seq / 'gt' / 'gt.txt'}: {message}")
    assert "\n" not in str(err.value)


def test_fixable_gt_problems_are_counted_listed_warnings(tmp_path):
    gt = (
        "1,1,60,40,10,10,1,1,1\n"  # partly outside 64x48: clipped
        "1,2,100,100,5,5,1,1,1\n"  # wholly outside: dropped
        "2,1,5,5,5,5,1,1,1\n2,1,9,9,5,5,1,1,1\n"  # id 1 twice in frame 2: second dropped
        "9,1,5,5,5,5,1,1,1\n"  # past the last frame (6): dropped
    )
    seq = make_sequence(tmp_path, gt, skip={4})
    s = read_sequence(seq)
    w = "\n".join(s.warnings)
    assert "line 1: box partly outside the image, clipped" in w
    assert "line 2: box wholly outside the image, dropped" in w
    assert "line 4: id 1 used twice in frame 2, dropped" in w
    assert "1 rows past the last frame (6), dropped" in w
    assert "1 missing frames (first: 000004)" in w
    assert len(s.warnings) == 5
    torch.testing.assert_close(s.target(1)["boxes"], torch.tensor([[59.0, 39, 64, 48]]))
    assert s.target(2)["boxes"].tolist() == [[4.0, 4, 9, 9]]
    # no clip spans the missing frame 4
    ds = DetectionClipDataset([s], size=(48, 64), clip_len=2, stride=1)
    assert [f for _, f in ds.items] == [[1, 2], [2, 3], [5, 6]]


def test_missing_source_and_unknown_class_without_labels(tmp_path):
    seq = tmp_path / "train" / "empty"
    (seq / "gt").mkdir(parents=True)
    (seq / "gt" / "gt.txt").write_text("1,1,1,1,2,2,1,1,1\n")
    with pytest.raises(DatasetError, match="no img1/ folder and no video file"):
        read_sequence(seq)


def test_a_video_file_stands_in_for_img1(tmp_path):
    seq = tmp_path / "train" / "vid"
    (seq / "gt").mkdir(parents=True)
    frames = np.zeros((5, 48, 64, 3), np.uint8)
    frames[:, 10:20, 20:30] = 255
    write_video(seq / "video.mp4", frames, 10.0)
    (seq / "gt" / "gt.txt").write_text("".join(f"{k},1,21,11,10,10,1,1,1\n" for k in range(1, 6)))
    s = read_split(tmp_path, "train")[0]
    assert s.source.name == "video.mp4" and s.num_frames == 5 and s.fps == pytest.approx(10)
    image = FrameStore(s, (24, 32)).get(3)
    assert image.shape == (3, 24, 32) and image[:, 7, 12].float().mean() > 200


# -- MotionShapes-Det ----------------------------------------------------------------------


def test_motionshapes_det_is_deterministic_and_has_hard_boxes():
    f1, r1, _ = synth_det.render_sequence(0, "train", 3, 40)
    f2, r2, _ = synth_det.render_sequence(0, "train", 3, 40)
    assert np.array_equal(f1, f2) and r1 == r2
    assert f1.shape == (40, synth_det.HEIGHT, synth_det.WIDTH, 3)
    rows = [r for i in range(6) for r in synth_det.render_sequence(0, "train", i, 40)[1]]
    vis = np.array([r[8] for r in rows])
    assert ((vis >= 0) & (vis <= 1)).all() and (vis < 0.5).mean() > 0.02 and (vis == 1).mean() > 0.5
    assert {r[7] for r in rows} == {1, 2, 3}  # every class appears
    for i in range(3):  # an id is used once per frame
        seq_rows = synth_det.render_sequence(0, "train", i, 40)[1]
        assert len({(r[0], r[1]) for r in seq_rows}) == len(seq_rows)


def test_synth_writes_a_mot_layout_that_inspect_reads(det_data):
    seqs = read_split(det_data, "train")
    assert [s.name for s in seqs] == ["train_000", "train_001"]
    assert seqs[0].num_frames == 16 and seqs[0].fps == 15 and len(seqs[0].ann.frame) > 0
    proc = run_sora("data", "inspect", det_data, "--json", check=True)
    report = json.loads(proc.stdout)
    assert report["layout"] == "mot" and report["classes"] == list(synth_det.CLASSES)
    assert set(report["splits"]) == {"train", "val", "test"} and report["errors"] == []
    assert sum(report["splits"]["train"]["box_size_histogram"].values()) == sum(
        len(s.ann.frame) for s in seqs
    )


def test_inspect_lists_a_malformed_sequence_without_stopping(tmp_path):
    make_sequence(tmp_path, "1,1,10,10,5,5,1,1,1\nbad row\n")
    proc = run_sora("data", "inspect", tmp_path, check=True)
    assert "errors (sequences that cannot be read): 1" in proc.stdout
    assert "gt.txt: line 2: malformed row" in proc.stdout


# -- SoraDet -------------------------------------------------------------------------------


@pytest.mark.parametrize("temporal", ["convgru", "convlstm", "none"])
def test_streaming_equals_offline(temporal):
    torch.manual_seed(0)
    config = tiny_det_config(**{"detect.temporal": temporal})
    model = SoraDet(config.model, config.detect).eval()
    open_gates(model)
    clip = torch.randn(2, 5, 3, 48, 64)
    with torch.no_grad():
        offline = model(clip)
        state = model.init_state(2)
        for t in range(5):
            out, state = model.step(clip[:, t], state)
            for k in out:
                torch.testing.assert_close(out[k], offline[k][:, t], atol=1e-5, rtol=1e-4)
        # in chunks with the state carried: the same again
        first, state = model.run(clip[:, :2])
        rest, _ = model.run(clip[:, 2:], state)
        torch.testing.assert_close(
            rest["cls_logits"], offline["cls_logits"][:, 2:], atol=1e-5, rtol=1e-4
        )
    a = offline["cls_logits"].shape[2]
    assert offline["cls_logits"].shape == (2, 5, a, 3) and offline["bbox_regression"].shape == (
        2,
        5,
        a,
        4,
    )
    assert (model.cells is None) == (temporal == "none")
    if temporal == "none":
        return
    # the forecast (on by default) is marked valid wherever there was a state: not on a
    # fresh stream's first frame, but on the first frame of a chunk that carries one; and
    # the forecast of frame t does not depend on frame t
    with torch.no_grad():
        first, state = model.step(clip[:, 0], model.init_state(2))
        second, _ = model.step(clip[:, 1], state)
        assert first["forecast_valid"].tolist() == [False, False]
        assert second["forecast_valid"].tolist() == [True, True]
        _, state = model.run(clip[:, :2])
        rest, _ = model.run(clip[:, 2:], state)
    assert offline["forecast_valid"].tolist() == [[False] + [True] * 4] * 2
    assert rest["forecast_valid"].all()
    torch.testing.assert_close(
        rest["forecast_cls_logits"], offline["forecast_cls_logits"][:, 2:], atol=1e-5, rtol=1e-4
    )
    # the forecast of frame t does not look at frame t
    changed = clip.clone()
    changed[:, 3] = torch.randn_like(changed[:, 3])
    with torch.no_grad():
        again = model(changed)
    torch.testing.assert_close(
        again["forecast_cls_logits"][:, 3], offline["forecast_cls_logits"][:, 3]
    )
    assert not torch.allclose(
        again["forecast_cls_logits"][:, 4], offline["forecast_cls_logits"][:, 4]
    )


def open_gates(model: SoraDet) -> None:
    """Trained models have non-zero memory gates; fresh ones start at 0 (no memory)."""
    if model.gates is not None:
        with torch.no_grad():
            for gate in model.gates:
                gate.uniform_(0.5, 1.5)


def test_an_untrained_soradet_is_its_per_frame_ablation():
    """The memory gates start at zero: with the same weights, the recurrent model gives the
    per-frame model's outputs until training opens them."""
    torch.manual_seed(0)
    config = tiny_det_config()
    recurrent = SoraDet(config.model, config.detect).eval()
    ablation = SoraDet(config.model, tiny_det_config(**{"detect.temporal": "none"}).detect)
    missing, unexpected = ablation.load_state_dict(recurrent.state_dict(), strict=False)
    assert (
        not missing
        and unexpected
        and all(k.startswith(("cells.", "gates.", "forecast.")) for k in unexpected)
    )
    clip = torch.randn(1, 4, 3, 48, 64)
    with torch.no_grad():
        a, b = recurrent(clip), ablation.eval()(clip)
        assert set(a) - set(b) == {f"forecast_{k}" for k in (*b, "valid")}
        for k in b:
            torch.testing.assert_close(a[k], b[k])
        open_gates(recurrent)
        assert not torch.allclose(recurrent(clip)["cls_logits"], b["cls_logits"])


def test_memory_changes_outputs_and_the_ablation_has_none():
    torch.manual_seed(0)
    config = tiny_det_config()
    model = SoraDet(config.model, config.detect).eval()
    open_gates(model)
    clip = torch.randn(1, 3, 3, 48, 64)
    with torch.no_grad():
        a = model(clip)["cls_logits"][:, -1]
        b = model(clip[:, -1:])["cls_logits"][:, 0]  # the same last frame without a past
    assert not torch.allclose(a, b)


def test_without_memory_the_model_is_its_ablation_whatever_the_gates():
    """``run(memory=False)`` skips the cells: the outputs are the per-frame network's even with
    open gates, and no state is kept."""
    torch.manual_seed(0)
    config = tiny_det_config()
    model = SoraDet(config.model, config.detect).eval()
    ablation = SoraDet(config.model, tiny_det_config(**{"detect.temporal": "none"}).detect)
    ablation.load_state_dict(model.state_dict(), strict=False)
    open_gates(model)
    clip = torch.randn(1, 3, 3, 48, 64)
    with torch.no_grad():
        out, state = model.run(clip, memory=False)
        expected = ablation.eval()(clip)
    assert state == {}
    for k in out:
        torch.testing.assert_close(out[k], expected[k])


def test_no_forecast_without_cells_or_without_memory():
    """The per-frame ablation stays one switch (``temporal: none`` builds no forecast head),
    and the warm-up's ``memory=False`` runs give no forecast."""
    config = tiny_det_config(**{"detect.temporal": "none", "detect.forecast": 1.0})
    ablation = SoraDet(config.model, config.detect)
    assert ablation.forecast is None and "forecast_valid" not in ablation(
        torch.zeros(1, 2, 3, 48, 64)
    )
    config = tiny_det_config(**{"detect.forecast": 1.0})
    model = SoraDet(config.model, config.detect)
    out, _ = model.run(torch.zeros(1, 2, 3, 48, 64), memory=False)
    assert set(out) == {"cls_logits", "bbox_regression", "bbox_ctrness"}
    assert SoraDet(config.model, tiny_det_config(**{"detect.forecast": 0}).detect).forecast is None
    assert SoraDet(config.model, tiny_det_config().detect).forecast is not None  # the default
    with pytest.raises(ValueError, match="detect.forecast must be >= 0"):
        SoraDet(config.model, apply_overrides(config, ["detect.forecast=-1"]).detect)


def outputs_with(model: SoraDet, boxes: dict[str, list[tuple[int, int, float]]], a: int) -> dict:
    """Hand-made outputs of one frame: for each of ``""`` (the main head) and
    ``"forecast_"``, (anchor, class, logit) triples; everything else at -20."""
    k = model.num_classes
    out = {}
    for prefix in ("", "forecast_"):
        logits = torch.full((1, a, k), -20.0)
        for anchor, c, logit in boxes.get(prefix, []):
            logits[0, anchor, c] = logit
        out[prefix + "cls_logits"] = logits
        out[prefix + "bbox_regression"] = torch.ones(1, a, 4)
        out[prefix + "bbox_ctrness"] = torch.full((1, a, 1), 20.0)
    out["forecast_valid"] = torch.tensor([True])
    return out


def test_forecast_boxes_fill_in_where_no_detection_is():
    """A forecast box that a detection of its class covers is dropped; one where nothing is
    detected joins the output, marked, with its score times ``detect.forecast_score``."""
    config = tiny_det_config(**{"detect.forecast": 1.0, "detect.forecast_score": 0.5})
    model = SoraDet(config.model, config.detect)
    anchors, _, _ = model.anchors(48, 64)
    a = len(anchors)
    out = outputs_with(model, {"": [(0, 1, 5.0)], "forecast_": [(0, 1, 5.0), (20, 2, 5.0)]}, a)
    (d,) = model.detect(out, 48, 64)
    assert d["forecast"].tolist() == [False, True]
    assert d["labels"].tolist() == [1, 2]
    p = float(torch.sigmoid(torch.tensor(5.0)) * torch.sigmoid(torch.tensor(20.0))) ** 0.5
    torch.testing.assert_close(d["scores"], torch.tensor([p, 0.5 * p]))
    expected = model.box_coder.decode(torch.ones(1, 4), anchors[20:21])
    torch.testing.assert_close(d["boxes"][1:], clip_xyxy(expected, 48, 64))
    # another class at the same place is not covered (class-wise), unless NMS is agnostic
    out = outputs_with(model, {"": [(0, 1, 5.0)], "forecast_": [(0, 2, 5.0)]}, a)
    assert model.detect(out, 48, 64)[0]["forecast"].tolist() == [False, True]
    model.cfg.agnostic_nms = True
    assert model.detect(out, 48, 64)[0]["forecast"].tolist() == [False]
    # not valid (no past) or forecast_score 0: the main detections only
    out["forecast_valid"][0] = False
    model.cfg.agnostic_nms = False
    assert model.detect(out, 48, 64)[0]["forecast"].tolist() == [False]
    out["forecast_valid"][0] = True
    model.cfg.forecast_score = 0.0
    assert model.detect(out, 48, 64)[0]["forecast"].tolist() == [False]


def test_memory_class_re_ranks_the_classes_but_makes_no_object():
    """``detect.forecast_class`` blends the forecast's split over the classes into the main
    head's class scores: 0 leaves them as they are; the best class's score never rises above
    the main head's; where the frame is unsure between two classes, the memory decides."""
    from sora.models.soradet import memory_class

    main = torch.tensor([[0.2, 0.0, -3.0], [-9.0, -9.0, -9.0]])  # (A=2, K=3) logits
    memory = torch.tensor([[-4.0, 4.0, -4.0], [6.0, -6.0, -6.0]])
    torch.testing.assert_close(memory_class(main, memory, 0.0), main)
    p = torch.sigmoid(memory_class(main, memory, 0.5))
    m = torch.sigmoid(main)
    assert p[0].argmax() == 1 and p[0, 1] > m[0, 1] and p[0, 0] < m[0, 0]
    assert (p.max(1).values <= m.max(1).values + 1e-6).all()
    assert p[1].max() <= m[1].max() + 1e-6  # nothing seen: the memory alone makes no box
    # weight 1: the memory's split times the main head's best score
    q = memory.sigmoid() / memory.sigmoid().sum(1, keepdim=True)
    torch.testing.assert_close(
        torch.sigmoid(memory_class(main, memory, 1.0)), q * m.max(1)[0][:, None]
    )

    # in detect(): the main head's two classes at one point, the memory on the second
    config = tiny_det_config(**{"detect.forecast": 1.0, "detect.forecast_class": 0.5})
    model = SoraDet(config.model, config.detect)
    a = len(model.anchors(48, 64)[0])
    out = outputs_with(model, {"": [(0, 0, 2.0), (0, 1, 1.8)], "forecast_": [(0, 1, 5.0)]}, a)
    assert model.detect(out, 48, 64)[0]["labels"][0] == 1
    model.cfg.forecast_class = 0.0
    assert model.detect(out, 48, 64)[0]["labels"][0] == 0
    out["forecast_valid"][0] = False  # no past: the main head alone
    model.cfg.forecast_class = 0.5
    assert model.detect(out, 48, 64)[0]["labels"][0] == 0
    with pytest.raises(ValueError, match=r"detect.forecast_class must be in \[0, 1\]"):
        SoraDet(config.model, apply_overrides(config, ["detect.forecast_class=1.5"]).detect)


def clip_xyxy(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    from torchvision.ops import clip_boxes_to_image

    return clip_boxes_to_image(boxes, (height, width))


def test_the_forecast_loss_trains_the_head_and_the_cells_on_frames_with_a_past():
    from sora.models.soradet import video_detection_loss

    torch.manual_seed(0)
    config = tiny_det_config(**{"detect.forecast": 0.5})
    model = SoraDet(config.model, config.detect)
    clip = torch.randn(1, 3, 3, 48, 64)
    box = {
        "boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]),
        "labels": torch.tensor([1]),
        "ignore": torch.tensor([False]),
    }
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "ignore": torch.zeros(0, dtype=torch.bool),
    }
    out = {k: v.flatten(0, 1) for k, v in model(clip).items()}
    # the box on the first frame only: no forecast target (that frame has no past)
    losses = video_detection_loss(model, out, [box, empty, empty], 48, 64)
    main = detection_loss(model, out, [box, empty, empty], 48, 64)
    torch.testing.assert_close(losses["loss"], main["loss"] + 0.5 * losses["forecast"])
    fc = {
        k[len("forecast_") :]: v[1:]
        for k, v in out.items()
        if k.startswith("forecast_") and k != "forecast_valid"
    }
    torch.testing.assert_close(
        losses["forecast"], detection_loss(model, fc, [empty, empty], 48, 64)["loss"]
    )
    losses = video_detection_loss(model, out, [empty, empty, box], 48, 64)
    losses["forecast"].backward()
    assert model.forecast.out.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cells.parameters())
    assert model.cls_head.cls_logits.weight.grad is None  # the forecast loss alone


def bare_trainer(epochs: int, callback):
    """A CPU Lightning Trainer with nothing written and one callback."""
    import lightning as L

    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[callback],
    )


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
def test_memory_warmup_trains_without_the_cells_then_with_them(det_data):
    """With ``detect.memory_warmup=0.5`` the first half of the steps leave the cells and gates
    untouched (no gradient), the second half trains them."""
    import lightning as L

    from sora.tasks.detection import DetectionDataModule, VideoDetector

    torch.manual_seed(0)
    config = tiny_det_config(**{"detect.memory_warmup": 0.5, "train.epochs": 2})
    dm = DetectionDataModule(config, det_data)
    dm.setup()
    module = VideoDetector(config.to_dict(), dm.classes)
    cells = lambda: [p.detach().clone() for p in module.model.cells.parameters()]  # noqa: E731
    seen = []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((pl_module.memory_on(), cells()))

    trainer = bare_trainer(2, Watch())
    trainer.fit(module, datamodule=dm)
    flags = [on for on, _ in seen]
    total = len(flags)
    assert total >= 4 and flags == [k >= total / 2 for k in range(total)]
    first_on = flags.index(True)
    for a, b in zip(seen[0][1], seen[first_on][1], strict=True):
        torch.testing.assert_close(a, b)  # the cells did not move while off
    assert any(not torch.equal(a, b) for a, b in zip(seen[first_on][1], cells(), strict=True))
    assert module.memory_on()  # outside fit: always on


def test_bad_frame_shapes_are_clear_errors():
    config = tiny_det_config()
    model = SoraDet(config.model, config.detect)
    with pytest.raises(ValueError, match=r"clip must have shape \(B, T, 3, H, W\)"):
        model(torch.zeros(1, 3, 48, 64))
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.zeros(1, 2, 3, 16, 64))
    with pytest.raises(ValueError, match="detect.temporal"):
        SoraDet(config.model, apply_overrides(config, ["detect.temporal=gru"]).detect)
    with pytest.raises(ValueError, match=r"detect.memory_warmup must be in \[0, 1\), got 1.0"):
        SoraDet(config.model, apply_overrides(config, ["detect.memory_warmup=1.0"]).detect)


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
@pytest.mark.parametrize("warmup", [0.0, 0.5])
def test_early_stopping_waits_for_the_memory(warmup):
    """A monitored metric that never improves stops a fit ``patience`` validations after its
    first one; with a memory warm-up the count starts only when the memory is on."""
    import lightning as L

    from sora.tasks.train import EarlyStoppingAfterWarmup

    class Flat(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def memory_on(self):
            return self.trainer.global_step >= warmup * self.trainer.estimated_stepping_batches

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            self.log("val_map50", 0.0)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)))
    trainer = bare_trainer(8, EarlyStoppingAfterWarmup("val_map50", mode="max", patience=2))
    trainer.fit(Flat(), train_dataloaders=data, val_dataloaders=data)
    # the first counted validation ends the 1st epoch (no warm-up) or the 4th (the memory is
    # on from step 8 of 16), then two that do not improve; current_epoch counts the last one
    assert trainer.current_epoch == (3 if warmup == 0 else 6)


def test_assignment_positives_tiny_boxes_and_ignored_regions():
    config = tiny_det_config()
    model = SoraDet(config.model, config.detect)
    anchors, strides, counts = model.anchors(48, 64)
    target = {
        "boxes": torch.tensor([[10.0, 10, 34, 30], [45, 1, 48, 4], [0, 40, 30, 48]]),
        "labels": torch.tensor([0, 1, 2]),
        "ignore": torch.tensor([False, False, True]),
    }
    matched, forced, valid = assign(anchors, strides, counts, target, 1.5, 2.0)
    assert (matched == 0).sum() >= 1 and not forced[matched == 0].any()
    # tiny: the points within a stride of its centre, (44, 4) and (52, 4), on both sides
    assert (matched == 1).sum() == 2 and forced[matched == 1].all()
    assert not (matched == 2).any()  # ignored boxes get no positives...
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    inside = (centres[:, 0] < 30) & (centres[:, 1] > 40) & (centres[:, 1] < 48)
    assert not valid[inside & (matched < 0)].any() and valid[~inside].all()  # ...nor negatives
    # the loss is finite and has a gradient
    out = model(torch.randn(1, 1, 3, 48, 64))
    flat = {k: v.flatten(0, 1) for k, v in out.items()}
    losses = detection_loss(model, flat, [target], 48, 64)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and losses["box"] > 0
    assert model.reg_head.bbox_reg.weight.grad.abs().sum() > 0


def _assign_by_hand(anchors, strides, counts, target, radius, k):
    """The assignment rules of :func:`assign_frames`, point by point and box by box."""
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).tolist()
    strides = strides.tolist()
    levels = [i for i, c in enumerate(counts) for _ in range(c)]
    level_strides = [strides[sum(counts[:i])] for i in range(len(counts))]
    boxes, ignore = target["boxes"].tolist(), target["ignore"].tolist()
    last = len(counts) - 1

    def inside(c, b):
        return min(c[0] - b[0], c[1] - b[1], b[2] - c[0], b[3] - c[1]) > 0

    def cheb(c, b):
        return max(abs(c[0] - (b[0] + b[2]) / 2), abs(c[1] - (b[1] + b[3]) / 2))

    matched, forced = [-1] * len(centres), [False] * len(centres)
    for p, (c, s, lv) in enumerate(zip(centres, strides, levels, strict=True)):
        lo = 0 if lv == 0 else k * s / 2
        hi = math.inf if lv == last else k * s
        fits = [
            m
            for m, b in enumerate(boxes)
            if not ignore[m]
            and inside(c, b)
            and cheb(c, b) < radius * s
            and lo < max(c[0] - b[0], c[1] - b[1], b[2] - c[0], b[3] - c[1]) <= hi
        ]
        if fits:
            matched[p] = min(
                fits, key=lambda m: ((boxes[m][2] - boxes[m][0]) * (boxes[m][3] - boxes[m][1]), m)
            )
    won = set(matched)
    for m, b in enumerate(boxes):
        if ignore[m] or m in won:
            continue
        half = max(b[2] - b[0], b[3] - b[1]) / 2
        lv = next((i for i, s in enumerate(level_strides) if half <= k * s), last)
        at = [p for p in range(len(centres)) if levels[p] == lv]
        close = [p for p in at if cheb(centres[p], b) < level_strides[lv]]
        if not close:
            close = [min(at, key=lambda p: (cheb(centres[p], b), p))]
        for p in close:
            if matched[p] < 0:
                matched[p], forced[p] = m, True
    valid = [
        not (
            matched[p] < 0 and any(ig and inside(c, b) for b, ig in zip(boxes, ignore, strict=True))
        )
        for p, c in enumerate(centres)
    ]
    return matched, forced, valid


def test_assignment_of_many_frames_at_once_follows_the_rules_box_by_box():
    """Random frames (tiny, large, equal, overlapping and ignored boxes, frames without any):
    the batched assignment is the rules applied by hand, and the same frame by frame."""
    config = tiny_det_config()
    model = SoraDet(config.model, config.detect)
    anchors, strides, counts = model.anchors(48, 64)
    g = torch.Generator().manual_seed(3)
    targets = []
    for _ in range(40):
        m = int(torch.randint(0, 7, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * torch.tensor([70.0, 52]) - 4
        wh = 0.5 + torch.rand(m, 2, generator=g) ** 2 * 50
        boxes = torch.cat([xy, xy + wh], 1).clamp(min=0).minimum(torch.tensor([64.0, 48, 64, 48]))
        if m > 1:
            boxes[-1] = boxes[0]  # two equal boxes: the first wins
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes = boxes[keep]
        targets.append(
            {
                "boxes": boxes,
                "labels": torch.randint(0, 3, (len(boxes),), generator=g),
                "ignore": torch.rand(len(boxes), generator=g) < 0.15,
            }
        )
    padded = pad_targets(targets)
    matched, forced, valid = assign_frames(anchors, strides, counts, padded, 1.5, 2.0)
    assert (
        matched.shape == (40, anchors.shape[0])
        and padded["boxes"].shape[:2] == padded["real"].shape
    )
    assert int(forced.sum()) > 0 and int((matched >= 0).sum()) > int(forced.sum())
    for n, t in enumerate(targets):
        want = _assign_by_hand(anchors, strides, counts, t, 1.5, 2.0)
        assert matched[n].tolist() == want[0], n
        assert forced[n].tolist() == want[1], n
        assert valid[n].tolist() == want[2], n
        one = assign(anchors, strides, counts, t, 1.5, 2.0)
        assert all(torch.equal(a, b[n]) for a, b in zip(one, (matched, forced, valid), strict=True))
    # the frames split into chunks give the same
    import sora.models.soradet as soradet

    small = soradet.ASSIGN_ELEMENTS
    try:
        soradet.ASSIGN_ELEMENTS = anchors.shape[0] * padded["real"].shape[1] * 3
        chunked = assign_frames(anchors, strides, counts, padded, 1.5, 2.0)
    finally:
        soradet.ASSIGN_ELEMENTS = small
    assert all(torch.equal(a, b) for a, b in zip(chunked, (matched, forced, valid), strict=True))
    # the loss of the batch is the sum of the frames' losses, each over the batch's positives
    out = {
        "cls_logits": torch.randn(40, anchors.shape[0], 3),
        "bbox_regression": torch.rand(40, anchors.shape[0], 4),
        "bbox_ctrness": torch.randn(40, anchors.shape[0], 1),
    }
    whole = detection_loss(model, out, targets, 48, 64)
    num_pos = int((matched >= 0).sum())
    parts = [
        detection_loss(model, {k: v[n : n + 1] for k, v in out.items()}, [t], 48, 64)
        for n, t in enumerate(targets)
    ]
    for key in ("cls", "box", "ctr"):
        summed = sum(
            float(p[key]) * max(1, int((matched[n] >= 0).sum())) for n, p in enumerate(parts)
        )
        assert float(whole[key]) == pytest.approx(summed / num_pos, rel=1e-4), key


def test_the_regression_head_is_torchvision_s_at_floor_0():
    from torchvision.models.detection.fcos import FCOSRegressionHead

    from sora.models.soradet import SignedRegressionHead

    torch.manual_seed(0)
    norm = lambda c: torch.nn.GroupNorm(8, c)  # noqa: E731
    ours, theirs = SignedRegressionHead(16, 2, norm, floor=0.0), FCOSRegressionHead(16, 1, 2, norm)
    theirs.load_state_dict(ours.state_dict())
    levels = [torch.randn(2, 16, 6, 8), torch.randn(2, 16, 3, 4)]
    for a, b in zip(ours(levels), theirs(levels), strict=True):
        assert torch.equal(a, b)
    low = SignedRegressionHead(16, 2, norm, floor=-0.5)
    low.load_state_dict(ours.state_dict())
    reg = low(levels)[0]
    assert -0.5 <= reg.min() < 0 and torch.equal(reg.clamp_min(0), ours(levels)[0])


@pytest.mark.parametrize(("min_side", "cut"), [(-0.5, False), (0.0, True)])
def test_a_box_that_no_point_lies_inside_is_reached_below_0(min_side, cut):
    """A box narrower than a stride between two points is given the nearest one, outside it:
    with sides down to -0.5 strides the head can predict the box; with FCOS's ReLU (0, the
    runs saved before ``min_side``) the best it can do stops at the point."""
    config = tiny_det_config(**{"detect.min_side": min_side})
    model = SoraDet(config.model, config.detect).eval()
    anchors, strides, counts = model.anchors(48, 64)
    box = torch.tensor([[14.5, 10.5, 19.5, 18.5]])  # stride-8 points sit at 4, 12, 20, ...
    target = {"boxes": box, "labels": torch.tensor([0]), "ignore": torch.tensor([False])}
    matched, forced, _ = assign(anchors, strides, counts, target, 1.5, 2.0)
    points = (anchors[:, :2] + anchors[:, 2:]) / 2
    given = torch.nonzero(matched == 0).flatten()
    # the 2 x 2 points around it, all outside it: x 12 and 20, y 12 and 20
    assert forced[given].all() and len(given) == 4
    assert sorted(points[given].tolist()) == [[12, 12], [12, 20], [20, 12], [20, 20]]
    k = int(given[(points[given] == torch.tensor([20.0, 12.0])).all(1)])
    point = points[k]
    # the distances the point needs, in its stride: its left side is negative
    need = torch.cat([point - box[0, :2], box[0, 2:] - point]) / strides[k]
    assert need[2] < 0
    with torch.no_grad():
        model.reg_head.bbox_reg.weight.zero_()
        model.reg_head.bbox_reg.bias.copy_(need)
    out = model(torch.randn(1, 1, 3, 48, 64))
    reg = out["bbox_regression"][0, 0, k]
    decoded = model.box_coder.decode(reg[None], anchors[k : k + 1])[0]
    if cut:
        assert decoded[2] == point[0]  # cut at the point
    else:
        assert torch.allclose(decoded, box[0], atol=1e-4)


def test_boxes_turned_over_are_never_detections():
    config = tiny_det_config()
    model = SoraDet(config.model, config.detect).eval()
    anchors, _, _ = model.anchors(48, 64)
    a = anchors.shape[0]
    logits = torch.full((a, 3), -20.0)
    logits[:2, 0] = 5.0
    reg = torch.ones(a, 4)
    reg[1] = torch.tensor([-0.5, 1.0, -0.5, 1.0])  # left + right < 0: no width
    boxes, scores, _ = model._candidates(logits, reg, torch.full((a, 1), 5.0), anchors, 48, 64, 0.1)
    assert len(boxes) == 1 and (boxes[:, 2] > boxes[:, 0]).all()


# -- end to end ----------------------------------------------------------------------------


def test_train_detects_the_layout_and_writes_the_run_folder(det_run):
    for name in (
        "config.yaml",
        "classes.json",
        "metrics.csv",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "model/model.safetensors",
        "train_summary.json",
    ):
        assert (det_run / name).is_file(), name
    summary = json.loads((det_run / "train_summary.json").read_text())
    assert summary["task"] == "detect" and summary["monitor"] == "val_map50"
    assert summary["train_sequences"] == 2 and summary["val_sequences"] == 1
    header = (det_run / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_loss,val_map50,val_map,lr,seconds"


def test_eval_report_and_predict(det_run, det_data, tmp_path):
    proc = run_sora("eval", det_run, "--data", det_data, check=True)
    assert "mAP50" in proc.stdout
    m = json.loads((det_run / "eval" / "metrics.json").read_text())
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"):
        assert -1 <= m[key] <= 1
    assert set(m["visibility"]) == {"visible", "occluded"} and m["num_frames"] == 16
    assert set(m["per_class"]) <= set(synth_det.CLASSES)
    assert 0 < m["operating_threshold"] <= 1  # the default --conf of predict from now on
    from sora.inference.detector import Detector

    assert Detector(det_run).operating_threshold() == m["operating_threshold"]
    assert (det_run / "eval" / "predictions" / "test_000.txt").is_file()
    for png in ("pr_curves.png", "ap_per_class.png", "hardest_frames.png", "confusion_matrix.png"):
        assert (det_run / "eval" / png).stat().st_size > 1000
    confusion = m["confusion"]
    assert confusion["classes"] == [*Detector(det_run).classes, "background"]
    matrix = np.array(confusion["matrix"])
    assert matrix.shape == (4, 4) and matrix[-1, -1] == 0
    assert matrix[:-1].sum() == m["num_boxes"]  # every true box: paired or missed, once
    assert confusion["conf"] == m["operating_threshold"]
    hidden = m["visibility"]["occluded"]["hidden"]
    assert 0 <= hidden["found_of_boxes"] <= m["visibility"]["occluded"]["found_of_boxes"]
    for part in [*m["visibility"].values(), hidden]:
        assert part["found_at_threshold"] is None or 0 <= part["found_at_threshold"] <= 1
        assert part["found_any_class_at_threshold"] is None or (
            part["found_at_threshold"] <= part["found_any_class_at_threshold"] <= 1
        )
    run_sora("report", det_run, check=True)
    page = (det_run / "report.html").read_text()
    assert "test mAP50" in page and "Per sequence" in page and "Hardest frames" in page
    assert 'alt="confusion matrix"' in page and "Found at the best-F1 threshold" in page
    assert "hidden (visibility 0, of the occluded)" in page

    frames = det_data / "test" / "test_000" / "img1"
    mot = run_sora("predict", det_run, frames, "--conf", "0.0", check=True).stdout.splitlines()
    assert mot, "a conf of 0 keeps every detection after NMS"
    fields = mot[0].split(",")
    assert len(fields) == 10 and fields[1] == "-1" and 1 <= int(fields[0]) <= 16
    assert 1 <= int(fields[7]) <= 3
    # without --conf, predict keeps the boxes scoring at least the stored best-F1 threshold
    kept = run_sora("predict", det_run, frames, check=True).stdout.splitlines()
    assert len(kept) <= len(mot)
    assert all(float(row.split(",")[6]) >= m["operating_threshold"] - 1e-4 for row in kept)
    video = tmp_path / "out.mp4"
    lines = run_sora(
        "predict",
        det_run,
        frames,
        "--format",
        "jsonl",
        "--conf",
        "0.0",
        "--save-video",
        video,
        check=True,
    ).stdout.splitlines()
    assert len(lines) == 16 and json.loads(lines[0])["frame"] == 1
    rows = [json.loads(line)["detections"] for line in lines]
    assert all(isinstance(d["forecast"], bool) for frame in rows for d in frame)
    assert not any(d["forecast"] for d in rows[0])  # a fresh stream has no past to forecast
    from sora.io.video import probe

    meta = probe(video)
    assert meta.num_frames == 16 and meta.height >= 360  # small frames are enlarged to draw


def test_detection_confusion_pairs_by_iou_and_counts_leftovers(tmp_path):
    from sora.evaluation.detection import detection_confusion

    # frame 1: a (class 1) at 10..20 x 20..30, b (class 2) at 40..50 x 10..20, an ignored box
    gt = "1,1,11,21,10,10,1,1,1\n1,2,41,11,10,10,1,2,1\n1,3,1,1,6,6,0,1,1\n"
    seq = read_sequence(make_sequence(tmp_path, gt, frames=2))

    def box(*b):
        return list(map(float, b))

    dets = {
        1: {
            "boxes": torch.tensor(
                [
                    box(10, 20, 20, 30),  # on a, right class
                    box(10, 20, 20, 31),  # on a again, other class: a leftover
                    box(40, 10, 50, 20),  # on b, wrong class
                    box(30, 35, 40, 45),  # on nothing
                    box(0, 0, 6, 6),  # on the ignored box: left out
                    box(40, 10, 50, 21),  # on b, below the threshold
                ]
            ),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.9, 0.2]),
            "labels": torch.tensor([0, 1, 0, 1, 1, 1]),
        },
        2: {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)},
    }
    c = detection_confusion([seq], {seq.name: dets}, ["a", "b"], conf=0.5)
    assert c["classes"] == ["a", "b", "background"]
    assert c["matrix"] == [[1, 0, 0], [1, 0, 0], [0, 2, 0]]
    assert c["class_accuracy"] == 0.5


def test_found_by_visibility_pairs_one_detection_with_one_box(tmp_path):
    from sora.evaluation.detection import found_by_visibility

    # a (visible) and b (visibility 0.2, behind a) in frames 1 and 2; c (class 2, visibility
    # 0.3) and an ignored box in frame 1; d (hidden: visibility 0) in frames 1 and 2
    gt = (
        "1,1,11,21,10,10,1,1,1\n1,2,12,22,10,10,1,1,0.2\n1,3,41,11,10,10,1,2,0.3\n"
        "1,4,1,1,6,6,0,1,1\n2,1,11,21,10,10,1,1,1\n2,2,12,22,10,10,1,1,0.2\n"
        "1,5,61,41,8,8,1,1,0\n2,5,61,41,8,8,1,1,0\n"
    )
    seq = read_sequence(make_sequence(tmp_path, gt, frames=2))

    def dets(boxes, scores, labels):
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(scores),
            "labels": torch.tensor(labels),
        }

    frames = {
        # on a, on b (right class), on c (wrong class), on b below the threshold
        1: dets(
            [[10, 20, 20, 30], [11, 21, 21, 31], [40, 10, 50, 20], [11, 21, 21, 31]],
            [0.9, 0.6, 0.8, 0.2],
            [0, 0, 0, 0],
        ),  # fmt: skip
        # one box on a: it overlaps b by IoU 0.68 too, but finds one box only; d found with
        # its class
        2: dets([[10, 20, 20, 30], [60, 40, 68, 48]], [0.9, 0.7], [0, 0]),
    }
    found = found_by_visibility([seq], {seq.name: frames}, conf=0.5)
    assert found["visible"] == {
        "found_of_boxes": 2,
        "found_at_threshold": 1.0,
        "found_any_class_at_threshold": 1.0,
    }
    # occluded: b (frame 1) found; c found by a box of another class; b (frame 2) missed;
    # d missed in frame 1, found in frame 2
    assert found["occluded"] == {
        "found_of_boxes": 5,
        "found_at_threshold": 0.4,
        "found_any_class_at_threshold": 0.6,
    }
    # hidden: d only, of the occluded
    assert found["hidden"] == {
        "found_of_boxes": 2,
        "found_at_threshold": 0.5,
        "found_any_class_at_threshold": 0.5,
    }


def test_model_summary_of_a_detection_run(det_run):
    info = json.loads(run_sora("model", "summary", det_run, "--json", check=True).stdout)
    assert info["input_frame"] == [1, 3, 48, 64] and info["gflops_per_streamed_frame"] > 0
    assert info["anchor_points"] == 6 * 8 + 3 * 4 + 2 * 2


def test_detector_streams_the_same_in_chunks_as_frame_by_frame(det_run, det_data):
    from sora.inference.detector import Detector

    det = Detector(det_run)
    assert all(g.abs().max() > 0 for g in det.model.gates), "training opens the memory gates"
    seq = read_split(det_data, "test")[0]
    store = FrameStore(seq, (seq.height, seq.width))
    frames = [(store.get(k), k) for k in range(1, 9)]
    one = dict(
        det.stream(iter(frames), source_size=(seq.height, seq.width), chunk=1, score_thresh=0.0)
    )
    many = dict(
        det.stream(iter(frames), source_size=(seq.height, seq.width), chunk=5, score_thresh=0.0)
    )
    for k in one:
        torch.testing.assert_close(one[k]["scores"], many[k]["scores"], atol=1e-4, rtol=1e-3)


def test_forecast_class_per_command_decodes_as_the_run_config_would(det_run, det_data, tmp_path):
    """``--forecast-class W`` (``Detector(forecast_class=W)``) gives the boxes a run whose
    ``config.yaml`` says ``detect.forecast_class: W`` gives, leaves the run's files as they
    are, and is recorded in ``eval/metrics.json``."""
    from sora.evaluation.detection import detect_sequence
    from sora.inference.detector import Detector

    seq = read_split(det_data, "test")[0]
    edited = tmp_path / "edited"
    shutil.copytree(det_run / "model", edited)
    cfg = yaml.safe_load((edited / "config.yaml").read_text())
    assert cfg["detect"]["forecast_class"] == 0.0
    cfg["detect"]["forecast_class"] = 0.5
    (edited / "config.yaml").write_text(yaml.safe_dump(cfg))
    by_flag = detect_sequence(Detector(det_run, forecast_class=0.5), seq)
    by_config = detect_sequence(Detector(edited), seq)
    plain = detect_sequence(Detector(det_run), seq)
    assert by_flag.keys() == by_config.keys() == plain.keys()
    for k in by_flag:
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(by_flag[k][key], by_config[k][key]), (k, key)
    changed = [k for k in plain if not torch.equal(plain[k]["scores"], by_flag[k]["scores"])]
    assert changed and 1 not in changed  # the first frame has no past to lean on
    assert Detector(det_run).config.detect.forecast_class == 0.0  # the run is untouched

    run = tmp_path / "run"
    shutil.copytree(det_run, run)
    run_sora("eval", run, "--data", det_data, "--forecast-class", "0.5", check=True)
    assert json.loads((run / "eval" / "metrics.json").read_text())["forecast_class"] == 0.5
    proc = run_sora("eval", run, "--data", det_data, "--forecast-class", "1.5")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "forecast_class must be in [0, 1], got 1.5" in proc.stderr
    det = Detector(det_run)
    det.model.forecast = None  # what the per-frame ablation (detect.temporal none) has
    with pytest.raises(ValueError, match="has no memory forecast"):
        det.set_forecast_class(0.25)
    det.set_forecast_class(0)  # 0 is the plain decoding, fine without a forecast


def test_detect_cli_errors(det_run, det_data, tmp_path, tiny_run):
    proc = run_sora("predict", det_run, "a.mp4", "b.mp4")
    assert proc.returncode == 1 and "--format mot and --save-video take one source" in proc.stderr
    proc = run_sora("predict", tiny_run, "x.mp4", "--format", "mot")
    assert proc.returncode == 1 and "are for detection runs" in proc.stderr
    proc = run_sora("eval", tiny_run, "--data", det_data, "--forecast-class", "0.25")
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        "--forecast-class is for detection runs; " + f"{tiny_run} is a classify run"
    )
    proc = run_sora("train", "--data", det_data, "--out", tmp_path / "r", "--set", "task=track")
    assert proc.returncode == 1 and "task must be one of classify, detect" in proc.stderr
    bad = tmp_path / "bad"
    make_sequence(bad, "1,1,10,10,5,5,1,1,1\n2,1,10,10\n")
    proc = run_sora("train", "--data", bad, "--out", tmp_path / "r2", *TINY_SETS)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith(
        "gt.txt: line 2: malformed row, expected frame,id,x,y,w,h[,conf,class,visibility], got '2,1,10,10'"
    )
    assert not (tmp_path / "r2").exists()


def test_det_generate_refuses_a_folder_made_with_other_settings(det_data):
    with pytest.raises(
        FileExistsError, match=r"holds MotionShapes-Det made with version \d+, seed 0"
    ):
        synth_det.generate(det_data, train=1, val=0, test=0, seed=3)
    with pytest.raises(FileExistsError, match="not a MotionShapes-Det folder"):
        synth_det.generate(det_data / "train", train=1, val=0, test=0)


def test_detect_demo_end_to_end_keeps_earlier_runs(tmp_path):
    from sora.demo_detect import format_detect_summary, run_detect_demo
    from sora.io.video import probe

    kwargs = dict(
        sequences=(2, 1, 1),
        frames=16,
        overrides=[*TINY, "train.epochs=1"],
        progress=False,
        log=lambda _: None,
    )
    first = run_detect_demo(tmp_path / "demo", **kwargs)
    assert Path(first["video"]) == tmp_path / "demo" / "run" / "annotated.mp4"
    assert probe(first["video"]).num_frames == 16
    assert 0 <= first["test_map50"] <= 1 and first["epochs"] == 1
    for key in ("data_seconds", "train_seconds", "eval_seconds", "video_seconds"):
        assert 0 < first[key] <= first["total_seconds"], key
    saved = json.loads((tmp_path / "demo" / "run" / "summary.json").read_text())
    assert saved["test_map50"] == first["test_map50"]
    # sora demo --task track: the action variant, an action classifier, tracks with actions
    second = run_detect_demo(tmp_path / "demo", track=True, action_epochs=1, **kwargs)
    assert Path(second["report"]).parent == tmp_path / "demo" / "run-2"
    assert 0 <= second["test_hota"] <= 1 and second["test_id_switches"] >= 0
    assert 0 <= second["test_track_action_accuracy"] <= 1
    assert (tmp_path / "motionshapes-det-actions-tubes" / "train").is_dir()
    assert (tmp_path / "demo" / "run-2" / "actions" / "model" / "config.yaml").is_file()
    assert "Per-track actions" in Path(second["report"]).read_text()
    assert probe(second["video"]).num_frames == 16
    assert "Tracking (bytetrack, test split" in Path(second["report"]).read_text()
    assert "test HOTA" in format_detect_summary(second) and "HOTA" not in format_detect_summary(
        first
    )


def test_frame_dropout_hides_frames_of_a_batch():
    """Each clip gets 1-2 consecutive frames (never the first) replaced by its per-pixel
    median; p=0 and 2-frame clips are left alone; the input is not changed."""
    from sora.data.detection import drop_frames

    torch.manual_seed(0)
    video = torch.randn(4, 6, 3, 8, 10)
    before = video.clone()
    dropped = drop_frames(video, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(video, before)
    for j in range(4):
        same = [torch.equal(x, y) for x, y in zip(video[j], dropped[j], strict=True)]
        assert same[0] and 1 <= same.count(False) <= 2
        gap = [k for k, s in enumerate(same) if not s]
        assert gap == list(range(gap[0], gap[-1] + 1))  # consecutive
        assert torch.equal(dropped[j, gap[0]], video[j].median(0).values)  # the lower one
    odd = torch.randn(2, 5, 3, 4, 4)
    for j, clip in enumerate(drop_frames(odd, 1.0, torch.Generator().manual_seed(1))):
        hidden = [k for k in range(5) if not torch.equal(clip[k], odd[j, k])]
        assert torch.equal(clip[hidden[0]], odd[j].median(0).values)
    assert drop_frames(video, 0.0) is video
    assert torch.equal(drop_frames(video[:, :2], 1.0), video[:, :2])


def test_batch_targets_come_from_workers_packed_and_equal():
    """A batch's targets (frames with and without boxes) cross from DataLoader workers as a
    few packed arrays and come back equal, value for value and dtype for dtype, to the ones
    collated in this process; pickling round-trips them; pinning leaves them alone."""
    import pickle

    from torch.utils.data import DataLoader

    from sora.data.detection import Targets, collate

    def frame(n: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        return {
            "boxes": torch.rand(n, 4, generator=g) * 50,
            "labels": torch.randint(0, 3, (n,), generator=g),
            "ignore": torch.rand(n, generator=g) < 0.3,
            "visibility": torch.rand(n, generator=g),
            "ids": torch.arange(n) + seed,
        }

    items = [
        {
            "video": torch.zeros(3, 3, 8, 8),
            "targets": [frame(n, 10 * i + n) for n in (2, 0, 5)],
            "index": i,
        }
        for i in range(6)
    ]

    def flat(batches):
        return [(k, t) for b in batches for clip in b["targets"] for t in clip for k in t]

    here = list(DataLoader(items, batch_size=3, collate_fn=collate))
    there = list(DataLoader(items, batch_size=3, collate_fn=collate, num_workers=1))
    assert isinstance(there[0]["targets"], Targets) and len(flat(there)) == 6 * 3 * 5
    for (key, a), (_, b) in zip(flat(here), flat(there), strict=True):
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key])
    again = pickle.loads(pickle.dumps(here[1]["targets"]))
    assert [[{k: v.tolist() for k, v in t.items()} for t in c] for c in again] == [
        [{k: v.tolist() for k, v in t.items()} for t in c] for c in here[1]["targets"]
    ]
    from torch.utils.data._utils.pin_memory import pin_memory  # what pin_memory=True calls

    assert pin_memory(here[0]["targets"]) is here[0]["targets"]  # no CUDA needed: left alone
    rebuild, (lengths, _, packed) = here[0]["targets"].__reduce__()  # one array per key
    assert lengths == [3, 3, 3] and sorted(packed) == [
        "boxes",
        "ids",
        "ignore",
        "labels",
        "visibility",
    ]
    assert packed["boxes"][0].shape == (3 * 7, 4) and packed["boxes"][1] == [2, 0, 5] * 3


def test_training_batches_leave_their_targets_on_the_host():
    """Lightning moves the video to the device; the targets stay where they are (the loss pads
    them there and moves the padded tensors, not every frame's tensors one by one)."""
    from sora.tasks.detection import DetectionDataModule

    module = DetectionDataModule(tiny_det_config(), "unused")
    target = {"boxes": torch.zeros(1, 4), "labels": torch.zeros(1), "ignore": torch.zeros(1)}
    batch = {
        "video": torch.zeros(1, 2, 3, 32, 32),
        "targets": [[target, target]],
        "index": torch.tensor([0]),
    }
    moved = module.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved["video"].device.type == "meta" and moved["index"].device.type == "meta"
    assert moved["targets"] is batch["targets"] and target["boxes"].device.type == "cpu"
    assert batch["video"].device.type == "cpu"  # the caller's batch is not changed
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "ignore": torch.zeros(0)}
    padded = pad_targets([target, empty], "meta")
    assert padded["boxes"].shape == (2, 1, 4) and padded["boxes"].device.type == "meta"


@pytest.mark.filterwarnings("ignore:.*LeafSpec")
def test_frame_dropout_only_once_the_memory_is_on(det_data):
    """Training clips lose frames only after the warm-up (a per-frame network has no memory
    to find them with, and the per-frame ablation never loses any)."""
    import lightning as L

    from sora.tasks.detection import DetectionDataModule, VideoDetector

    torch.manual_seed(0)
    config = tiny_det_config(
        **{"detect.memory_warmup": 0.5, "detect.frame_dropout": 1.0, "train.epochs": 2}
    )
    dm = DetectionDataModule(config, det_data)
    dm.setup()
    module = VideoDetector(config.to_dict(), dm.classes)
    seen = []
    run = module.model.run

    def spy(video, state=None, *, memory=True):
        seen.append((memory, video.clone()))
        return run(video, state, memory=memory)

    class Batch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(("batch", batch["video"].clone()))

    module.model.run = spy
    bare_trainer(2, Batch()).fit(module, datamodule=dm)
    pairs = [(seen[k][1], seen[k + 1]) for k in range(len(seen) - 1) if seen[k][0] == "batch"]
    assert {m for _, (m, _) in pairs} == {False, True}
    for given, (memory, used) in pairs:
        assert torch.equal(given, used) != memory  # dropped exactly when the memory is on


@pytest.mark.parametrize(
    ("key", "resumed_with"), [("memory_warmup", 0.0), ("frame_dropout", 0.0), ("min_side", 0.0)]
)
def test_resume_of_a_run_saved_before_a_key_existed(det_run, det_data, tmp_path, key, resumed_with):
    """A run whose checkpoint and config.yaml lack a ``detect`` key added later resumes as it
    was trained instead of being refused as another config: ``memory_warmup`` with 0 (cells
    from the first step), not the newer default 0.5; ``frame_dropout`` with its default."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(det_run, run)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    del ckpt["hyper_parameters"]["config"]["detect"][key]
    torch.save(ckpt, last)
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["detect"][key]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    proc = run_sora(
        "train", "--data", det_data, "--out", run, "--resume", "--epochs", 2, "--quiet", *TINY_SETS
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["detect"][key] == resumed_with
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header, epochs 0 and 1


def test_resume_with_another_detect_config_is_refused(det_run, det_data, tmp_path):
    """Keys the run has are still compared: another value is a one-line error, nothing run."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(det_run, run)
    before = (run / "metrics.csv").read_text()
    proc = run_sora(
        "train", "--data", det_data, "--out", run, "--resume", "--epochs", 2, "--quiet",
        *TINY_SETS, "--set", "detect.head_convs=3",
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        "the run was trained with another model config or class list; "
        "resume with the run's config.yaml"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (run / "metrics.csv").read_text() == before


def test_a_saved_model_without_a_later_key_loads_as_it_was_trained(det_run, tmp_path):
    """A model folder written before a ``detect`` key existed gets the key's ADDED_LATER
    value (how it was trained), not today's default."""
    import shutil

    import yaml

    from sora.config import ADDED_LATER, DetectConfig
    from sora.models.store import load_model

    folder = tmp_path / "model"
    shutil.copytree(det_run / "model", folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    del config["detect"]["memory_warmup"], config["detect"]["min_side"]
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    model, loaded, _ = load_model(folder)
    assert loaded.detect.memory_warmup == ADDED_LATER["detect"]["memory_warmup"] == 0.0
    assert DetectConfig().memory_warmup == 0.5
    assert loaded.detect.min_side == 0.0 and DetectConfig().min_side == -1.0
    assert model.reg_head.floor == 0.0  # FCOS's ReLU, as it was trained


def test_forecast_boxes_are_labelled_as_the_memory_s():
    """The annotated video tells the memory's boxes (nothing of the object seen) apart."""
    from sora.inference.draw import Annotator

    annotator = Annotator(["a", "b"])
    image = np.zeros((48, 64, 3), np.uint8)
    args = (np.array([[10.0, 20.0, 30.0, 40.0]]), np.array([0.5]), np.array([1]))
    plain = annotator.draw(image, *args)
    assert np.array_equal(plain, annotator.draw(image, *args, np.array([False])))
    memory = annotator.draw(image, *args, np.array([True]))
    assert memory.shape == plain.shape and not np.array_equal(memory, plain)


def test_the_video_shows_one_box_per_object():
    """Boxes of two classes on one object (per-class NMS keeps both) are drawn as one, the
    better scored; boxes of two objects side by side are both drawn."""
    from sora.inference.draw import Annotator

    annotator = Annotator(["a", "b"])
    image = np.zeros((48, 64, 3), np.uint8)
    boxes = np.array([[10.0, 20, 30, 40], [11, 20, 31, 41], [40, 5, 60, 25]])
    scores, labels = np.array([0.4, 0.6, 0.5]), np.array([0, 1, 0])
    assert annotator.shown(boxes, scores).tolist() == [1, 2]
    drawn = annotator.draw(image, boxes, scores, labels, np.array([False, False, True]))
    alone = annotator.draw(image, boxes[1:], scores[1:], labels[1:], np.array([False, True]))
    assert np.array_equal(drawn, alone)
    # a box seen in the frame wins over the memory's, whatever their scores
    assert annotator.shown(boxes, scores, np.array([False, True, False])).tolist() == [2, 0]
    every = Annotator(["a", "b"], one_box_iou=None)
    assert every.shown(boxes, scores).tolist() == [0, 1, 2]
    assert not np.array_equal(every.draw(image, boxes, scores, labels), drawn)
