"""The data preparation tools: annotation lists (class folders, SSv2 json), ffmpeg resizing, decode checks.

Each script runs once as a subprocess (its command line, from another working directory); the three start
together because each pays the torch import. The other cases call the scripts' ``main`` in-process.
"""
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from sts3d.data import prepare
from sts3d.data.prepare import PrepareError

TOOLS = Path(__file__).resolve().parents[1] / "Spatiotemporal_Finetuning" / "tools" / "data"


def write_video(path: Path, width: int = 64, height: int = 48, frames: int = 8) -> Path:
    """A tiny H.264 mp4 through PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for frame in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def frame_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as decord decodes it."""
    height, width = decord.VideoReader(str(path))[0].shape[:2]
    return width, height


def tool_main(name: str):
    """A script's ``main``, loaded without running it."""
    return runpy.run_path(str(TOOLS / f"{name}.py"))["main"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """``k400/{train,val}/<class>/<video>`` plus a corrupt and an empty file, and a list naming a missing one."""
    root = tmp_path_factory.mktemp("data")
    k400 = root / "k400"
    write_video(k400 / "train" / "air drumming" / "a1.mp4")
    write_video(k400 / "train" / "air drumming" / "a2.mkv", width=36, height=48)  # portrait
    write_video(k400 / "train" / "abseiling" / "b1.mp4")
    (k400 / "train" / "abseiling" / "notes.txt").write_text("not a video")
    write_video(k400 / "val" / "abseiling" / "b2.mp4")
    rng = np.random.default_rng(0)
    (k400 / "train" / "abseiling" / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (k400 / "train" / "abseiling" / "empty.mp4").write_bytes(b"")
    (root / "check.txt").write_text("air drumming/a1.mp4 1\nabseiling/corrupt.mp4 0\nabseiling/empty.mp4 0\n"
                                    "abseiling/gone.mp4 0\nabseiling/b1.mp4 0\n")
    return root


@pytest.fixture(scope="module")
def cli(tree, tmp_path_factory):
    """Run the three scripts as subprocesses, at once, from an unrelated working directory."""
    elsewhere = tmp_path_factory.mktemp("cwd")
    commands = {
        "build": ["build_file_list.py", "folders", str(tree / "k400"), "--out-dir", str(tree / "lists")],
        "resize": ["resize_videos.py", str(tree / "k400"), str(tree / "resized"), "--short-side", "32",
                   "--jobs", "2"],
        "check": ["check_videos.py", str(tree / "check.txt"), "--data-prefix", str(tree / "k400" / "train"),
                  "--out", str(tree / "bad.txt"), "--jobs", "2"],
    }
    running = {name: subprocess.Popen([sys.executable, str(TOOLS / script), *rest], cwd=elsewhere, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name, (script, *rest) in commands.items()}
    return {name: (process, *process.communicate(timeout=120)) for name, process in running.items()}


def test_lists_from_class_folders(tree, cli):
    process, out, err = cli["build"]
    assert process.returncode == 0, err
    lists = tree / "lists"
    assert (lists / "label_map.txt").read_text() == "abseiling\nair drumming\n"
    assert (lists / "train.txt").read_text().splitlines() == [
        "abseiling/b1.mp4 0", "abseiling/corrupt.mp4 0", "abseiling/empty.mp4 0",
        "air drumming/a1.mp4 1", "air drumming/a2.mkv 1"]
    assert (lists / "val.txt").read_text() == "abseiling/b2.mp4 0\n"


def test_class_folder_options_and_errors(tree, tmp_path):
    build = tool_main("build_file_list")
    labels = tmp_path / "map.txt"
    labels.write_text("air drumming\nabseiling\n")
    assert build(["folders", str(tree / "k400"), "--splits", "train", "--label-map", str(labels),
                  "--ext", "MKV", "--relative-to", "root", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "train.txt").read_text() == "train/air drumming/a2.mkv 0\n"
    assert not (tmp_path / "label_map.txt").exists()  # a given map is not rewritten
    assert build(["folders", str(tree / "k400"), "--splits", "val", "--list-names", "val_new.txt",
                  "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "val_new.txt").read_text() == "abseiling/b2.mp4 0\n"
    assert build(["folders", str(tree / "k400"), "--list-names", "only_one.txt", "--out-dir", str(tmp_path)]) == 2

    labels.write_text("air drumming\n")
    with pytest.raises(PrepareError, match=r"val/abseiling: class folder 'abseiling' is not in the label map"):
        prepare.scan_class_tree(tree / "k400" / "val", prepare.read_label_map(labels))
    assert build(["folders", str(tree / "k400"), "--splits", "val", "--label-map", str(labels),
                  "--out-dir", str(tmp_path)]) == 2
    labels.write_text("a\nb\na\n")
    with pytest.raises(PrepareError, match=r"map.txt:3: class 'a' already listed on line 1"):
        prepare.read_label_map(labels)
    with pytest.raises(PrepareError, match=r"nowhere: split folder not found"):
        prepare.class_folders(tree / "nowhere")


def write_ssv2(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    labels = {"Putting something onto something": "1", "Pushing something from left to right": "0"}
    train = [{"id": "78687", "label": "putting a cup onto a box", "template": "Putting [something] onto [something]",
              "placeholders": ["a cup", "a box"]},
             {"id": "42", "label": "pushing pen from left to right",
              "template": "Pushing [something] from left to right", "placeholders": ["pen"]},
             {"id": "7", "label": "putting x onto y", "template": "Putting [something] onto [something]",
              "placeholders": ["x", "y"]}]
    val = [{"id": "5", "label": "pushing a", "template": "Pushing [something] from left to right",
            "placeholders": ["a"]}]
    for key, content in (("labels", labels), ("train", train), ("val", val)):
        (folder / prepare.SSV2_FILES[key]).write_text(json.dumps(content))


def test_lists_from_ssv2_json(tmp_path, capsys):
    anno, videos = tmp_path / "anno", tmp_path / "videos"
    write_ssv2(anno)
    videos.mkdir()
    for name in ("78687.webm", "42.webm", "5.webm"):
        (videos / name).write_bytes(b"")
    build = tool_main("build_file_list")
    assert build(["sthv2", str(anno), "--video-dir", str(videos)]) == 0
    assert (anno / "label_map.txt").read_text() == ("Pushing something from left to right\n"
                                                    "Putting something onto something\n")
    assert (anno / "train.txt").read_text() == "78687.webm 1\n42.webm 0\n"
    assert (anno / "val.txt").read_text() == "5.webm 0\n"
    assert "train: 1 of 3 videos not found" in capsys.readouterr().err
    assert build(["sthv2", str(anno), "--video-dir", str(videos), "--missing", "keep",
                  "--out-dir", str(tmp_path / "kept"), "--list-names", "train_video.txt", "val_video.txt"]) == 0
    assert (tmp_path / "kept" / "train_video.txt").read_text() == "78687.webm 1\n42.webm 0\n7.webm 1\n"
    assert "(kept)" in capsys.readouterr().err
    assert build(["sthv2", str(anno), "--video-dir", str(anno)]) == 2
    assert "none of the 3 videos of something-something-v2-train.json is there" in capsys.readouterr().err

    (anno / prepare.SSV2_FILES["val"]).write_text(json.dumps([{"id": "9", "template": "Spinning [something]"}]))
    with pytest.raises(PrepareError, match=r"validation.json: entry 0 \(id 9\): class 'Spinning something'"):
        prepare.read_ssv2_split(anno / prepare.SSV2_FILES["val"], prepare.read_ssv2_labels(
            anno / prepare.SSV2_FILES["labels"]))
    (anno / prepare.SSV2_FILES["labels"]).write_text('{"a": "0", "b": "2"}')
    with pytest.raises(PrepareError, match=r"labels.json: ids are not 0..1"):
        prepare.read_ssv2_labels(anno / prepare.SSV2_FILES["labels"])


def test_resize_mirrors_tree_and_lists_failures(tree, cli):
    process, out, err = cli["resize"]
    assert process.returncode == 1  # the corrupt and the empty file
    assert "corrupt.mp4:" in err and "empty.mp4:" in err
    assert "4 resized, 0 skipped, 2 failed" in out
    resized = tree / "resized"
    assert frame_size(resized / "train" / "air drumming" / "a1.mp4") in ((42, 32), (44, 32))
    assert frame_size(resized / "train" / "air drumming" / "a2.mp4") in ((32, 42), (32, 44))
    assert frame_size(resized / "val" / "abseiling" / "b2.mp4")[1] == 32
    assert sorted(path.name for path in resized.rglob("*") if path.is_file()) == ["a1.mp4", "a2.mp4", "b1.mp4",
                                                                                   "b2.mp4"]  # no .part left


def test_resize_resumes(tmp_path, capsys):
    write_video(tmp_path / "src" / "x" / "v.mp4")
    resize = tool_main("resize_videos")
    args = [str(tmp_path / "src"), str(tmp_path / "dst"), "--short-side", "24", "--jobs", "1"]
    assert resize(args) == 0
    assert frame_size(tmp_path / "dst" / "x" / "v.mp4") == (32, 24)
    assert resize(args) == 0
    assert "0 resized, 1 skipped, 0 failed" in capsys.readouterr().out
    source = tmp_path / "src" / "x" / "v.mp4"
    later = (tmp_path / "dst" / "x" / "v.mp4").stat().st_mtime + 10
    os.utime(source, (later, later))  # the source changed after its output was written
    assert resize(args) == 0
    assert "1 resized, 0 skipped, 0 failed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        resize(args[:2] + ["--short-side", "25"])


def test_ffmpeg_lookup(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    import imageio_ffmpeg

    assert prepare.find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes the import fail
    with pytest.raises(PrepareError, match="ffmpeg not found: install it"):
        prepare.find_ffmpeg()


def test_checker_finds_unreadable_videos(tree, cli):
    process, out, err = cli["check"]
    assert process.returncode == 1, err
    bad = (tree / "bad.txt").read_text().splitlines()
    assert [line.split(": ")[0] for line in bad] == [f"{tree / 'check.txt'}:{n}" for n in (2, 3, 4)]
    assert bad[2].endswith("gone.mp4: missing")
    assert "2 of 5 videos decode, 3 failed" in err


def test_checker_folder_mode(tree, tmp_path, capsys):
    check = tool_main("check_videos")
    assert check([str(tree / "k400" / "val")]) == 0
    assert check([str(tree / "k400" / "train"), "--jobs", "1"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [Path(line.split(": ")[0]).name for line in out] == ["corrupt.mp4", "empty.mp4"]
    (tmp_path / "bad.txt").write_text("a.mp4\n")
    assert check([str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt:1: expected" in capsys.readouterr().err
