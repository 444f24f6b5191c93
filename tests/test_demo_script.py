"""``Spatiotemporal_Finetuning/demo/demo.py``: one synthetic video through a checkpoint trained for one epoch; the
printed top-k, the frame strip, and the one-line errors (missing or undecodable video, checkpoint misfit)."""
import importlib.util
import re
from pathlib import Path

import pytest
import torch

from sts3d.data.synthetic import write_video_dataset
from sts3d.engine.video_cli import train_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "Spatiotemporal_Finetuning/configs/recognition/x3d/x3d_s_demo_synthetic.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("sts3d_demo", ROOT / "Spatiotemporal_Finetuning/demo/demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(videos dir, config options, checkpoint) of a one-epoch X3D-S + STS run on 4 tiny classes."""
    root = tmp_path_factory.mktemp("demo_script")
    videos = write_video_dataset(root / "videos", num_shapes=2, train_per_class=2, val_per_class=1, frames=8,
                                 size=32, workers=1, progress=False)
    options = [f"data.{split}.{key}={videos / value}" for split in ("train", "val", "test")
               for key, value in (("ann_file", "val.txt" if split != "train" else "train.txt"),
                                  ("data_prefix", "videos"))]
    options += ["model.cls_head.num_classes=4", "total_epochs=1", "data.videos_per_gpu=4", "data.workers_per_gpu=0",
                "precise_bn.num_iters=1", "precise_bn.interval=1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_main([str(CONFIG), "--work-dir", str(root / "run"), "--seed", "0", "--device", "cpu",
                           "--cfg-options", *options]) == 0
    finally:
        torch.set_num_threads(threads)
    return videos, options, root / "run" / "epoch_1.pth"


def test_prints_top_k_names_and_writes_the_strip(trained, tmp_path, capsys):
    videos, options, checkpoint = trained
    video = videos / "videos" / "val" / "circle_bottom_to_top" / "0000.mp4"
    strip = tmp_path / "strip.png"
    assert demo.main([str(video), str(CONFIG), str(checkpoint), "--label-map", str(videos / "label_map.txt"),
                      "--top-k", "3", "--out-image", str(strip), "--cfg-options", *options]) == 0
    out = capsys.readouterr().out
    assert "6 views" in out  # 2 clips x 3 crops
    rows = re.findall(r"^\s*(\d)\. (\S+)\s+([0-9.]+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    names = (videos / "label_map.txt").read_text().split()
    assert all(r[1] in names for r in rows)
    scores = [float(r[2]) for r in rows]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-3
    assert strip.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_label_map_prints_class_ids(trained, capsys):
    videos, options, checkpoint = trained
    video = videos / "videos" / "val" / "square_top_to_bottom" / "0000.mp4"
    assert demo.main([str(video), str(CONFIG), str(checkpoint), "--top-k", "10", "--cfg-options", *options]) == 0
    rows = re.findall(r"^\s*\d+\. (\S+)\s+[0-9.]+$", capsys.readouterr().out, re.M)
    assert sorted(rows) == ["0", "1", "2", "3"]  # top-k capped at the class count


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_is_one_line_and_status_2(trained, tmp_path, capsys):
    videos, options, checkpoint = trained
    video = videos / "videos" / "val" / "circle_top_to_bottom" / "0000.mp4"
    assert demo.main([str(tmp_path / "nope.mp4"), str(CONFIG), str(checkpoint), "--cfg-options", *options]) == 2
    assert "nope.mp4" in one_error(capsys)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    assert demo.main([str(garbage), str(CONFIG), str(checkpoint), "--cfg-options", *options]) == 2
    assert "cannot read video" in one_error(capsys)
    # the checkpoint has 4 classes; the config's default 8 does not fit it
    assert demo.main([str(video), str(CONFIG), str(checkpoint)]) == 2
    assert "does not fit" in one_error(capsys)
    assert demo.main([str(video), str(CONFIG), str(tmp_path / "missing.pth"), "--cfg-options", *options]) == 2
    assert "missing.pth" in one_error(capsys)


def test_mmaction_argument_order_and_the_labelled_video(trained, tmp_path, capsys):
    """mmaction's ``demo.py CONFIG CHECKPOINT VIDEO LABEL_FILE --out-filename``: the whole video, resized, with the
    top class drawn at the top left; as H.264 mp4 (read back with decord) and as gif."""
    import decord
    from PIL import Image

    videos, options, checkpoint = trained
    video = videos / "videos" / "val" / "circle_bottom_to_top" / "0000.mp4"
    source = decord.VideoReader(str(video))
    out = tmp_path / "labelled.mp4"
    assert demo.main([str(CONFIG), str(checkpoint), str(video), str(videos / "label_map.txt"), "--out-filename",
                      str(out), "--target-resolution", "128", "-1", "--font-color", "red", "--font-scale", "0.6",
                      "--cfg-options", *options]) == 0
    printed = capsys.readouterr().out
    top1 = re.search(r"^\s*1\. (\S+)", printed, re.M).group(1)
    assert top1 in (videos / "label_map.txt").read_text().split() and f"wrote {out}" in printed
    written = decord.VideoReader(str(out))
    assert len(written) == len(source) and written[0].shape == (128, 128, 3)  # 32x32 frames, width 128, ratio kept
    frame = written[0].asnumpy().astype(int)
    text_box = frame[5:25, 5:120]
    plain = frame[60:, :]  # below the label
    # red text: pixels far redder than anything in the synthetic frame below it
    assert ((text_box[..., 0] - text_box[..., 1:].max(-1)) > 100).sum() > 20
    assert ((plain[..., 0] - plain[..., 1:].max(-1)) > 100).sum() == 0
    gif = tmp_path / "labelled.gif"
    assert demo.main([str(CONFIG), str(checkpoint), str(video), "--out-filename", str(gif), "--fps", "10",
                      "--cfg-options", *options]) == 0
    with Image.open(gif) as image:
        assert image.n_frames == len(source) and image.size == (32, 32) and image.info["duration"] == 100


def test_demo_arguments_that_cannot_work_stop_at_once(trained, tmp_path, capsys):
    videos, options, checkpoint = trained
    video = str(videos / "videos" / "val" / "circle_bottom_to_top" / "0000.mp4")
    for argv in ([video, str(CONFIG), str(checkpoint), "--out-filename", str(tmp_path / "x.avi")],
                 [str(CONFIG), str(checkpoint), video, "labels.txt", "--label-map", "labels.txt"],
                 [str(CONFIG), str(checkpoint), video, "--use-frames"],
                 [video, str(CONFIG), str(checkpoint), "--out-filename", "x.mp4", "--target-resolution", "-1", "-1"],
                 [video, str(CONFIG)]):
        with pytest.raises(SystemExit) as stop:
            demo.main(argv)
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "write .mp4 or .gif" in err and "--target-resolution -1 -1: give W H" in err


def test_demo_scores_with_the_tests_precision(trained, monkeypatch, capsys):
    """The demo scores as tools/test.py does: the seed's recognizer autocast every test forward on a GPU, so the
    demo asks ``autocast_for_testing`` for the device and ``--float32``, and runs the views under what it says."""
    videos, options, checkpoint = trained
    video = str(videos / "videos" / "val" / "circle_bottom_to_top" / "0000.mp4")
    asked, used = [], []
    real_scores = demo.video_scores

    def spy_autocast(cfg, device, float32=False):
        asked.append((device.type, float32))
        return torch.bfloat16  # what a GPU would get for a bf16 config; bf16 autocast also runs on a CPU

    def spy_scores(model, views, max_views, average, autocast_dtype=None, chunk=None):
        used.append(autocast_dtype)
        return real_scores(model, views, max_views, average, autocast_dtype, chunk)

    monkeypatch.setattr(demo, "autocast_for_testing", spy_autocast)
    monkeypatch.setattr(demo, "video_scores", spy_scores)
    for extra in ([], ["--float32"]):
        assert demo.main([str(CONFIG), str(checkpoint), video, "--cfg-options", *options, *extra]) == 0
    assert asked == [("cpu", False), ("cpu", True)] and used == [torch.bfloat16, torch.bfloat16]
    assert "1. " in capsys.readouterr().out


def test_demo_device_defaults_to_the_gpu_when_there(monkeypatch):
    """mmaction's demo defaulted to ``cuda:0``; without a GPU the demo still runs, on the CPU."""
    argv = ["clip.mp4", str(CONFIG), "model.pth"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert demo.parse_args(argv).device == "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert demo.parse_args(argv).device == "cpu"
    assert demo.parse_args([*argv, "--device", "cuda:1"]).device == "cuda:1"
