"""The synthetic embedded default: image and video sets, their layout, determinism, motion and the manifest."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from sts3d.data import synthetic
from sts3d.data.synthetic import (MANIFEST, SHAPES, image_class_names, read_manifest, render_video,
                                  video_class_names, write_image_dataset, write_video_dataset)

decord = pytest.importorskip("decord")
pytest.importorskip("av")

IMG = dict(num_classes=3, train_per_class=4, val_per_class=2, size=32, seed=0, workers=1, progress=False)
VID = dict(num_shapes=2, train_per_class=3, val_per_class=2, frames=8, size=40, fps=8, seed=0, workers=1,
           progress=False)


@pytest.fixture(scope="module")
def image_set(tmp_path_factory):
    return write_image_dataset(tmp_path_factory.mktemp("images") / "set", **IMG)


@pytest.fixture(scope="module")
def video_set(tmp_path_factory):
    return write_video_dataset(tmp_path_factory.mktemp("videos") / "set", **VID)


def read_list(path):
    out = []
    for line in path.read_text().splitlines():
        rel, label = line.split(" ")
        out.append((rel, int(label)))
    return out


def decode(path):
    return decord.VideoReader(str(path)).get_batch(list(range(len(decord.VideoReader(str(path)))))).asnumpy()


def test_class_names():
    assert image_class_names(3) == ["00_circle", "01_square", "02_triangle"]
    assert video_class_names(2) == ["circle_top_to_bottom", "circle_bottom_to_top",
                                    "square_top_to_bottom", "square_bottom_to_top"]
    assert len(video_class_names(len(SHAPES), 4)) == 4 * len(SHAPES)
    with pytest.raises(ValueError, match="num_classes must be an integer from 1 to 8"):
        image_class_names(9)
    with pytest.raises(ValueError, match="directions must be 2"):
        video_class_names(2, 3)


def test_image_layout_reads_with_imagefolder(image_set):
    datasets = pytest.importorskip("torchvision.datasets")
    names = image_class_names(3)
    assert (image_set / "label_map.txt").read_text().splitlines() == names
    for split, per_class in (("train", 4), ("val", 2)):
        ds = datasets.ImageFolder(str(image_set / split))
        assert ds.classes == names     # alphabetical order is label order
        assert len(ds) == 3 * per_class
        assert sorted(ds.targets) == sorted(list(range(3)) * per_class)
        img, label = ds[0]
        assert img.size == (32, 32) and img.mode == "RGB" and label == 0
    manifest = read_manifest(image_set)
    assert manifest["kind"] == "images" and manifest["classes"] == names
    assert len(manifest["files"]) == 18


def test_images_are_deterministic_for_a_seed(image_set, tmp_path):
    again = write_image_dataset(tmp_path / "again", **{**IMG, "workers": 2})   # worker count does not matter
    other = write_image_dataset(tmp_path / "other", **{**IMG, "seed": 1})
    for rel in read_manifest(image_set)["files"]:
        a = np.asarray(Image.open(image_set / rel))
        assert np.array_equal(a, np.asarray(Image.open(again / rel)))
    rel = read_manifest(image_set)["files"][0]
    assert not np.array_equal(np.asarray(Image.open(image_set / rel)), np.asarray(Image.open(other / rel)))


def test_video_lists_and_label_map(video_set):
    names = video_class_names(2)
    assert (video_set / "label_map.txt").read_text().splitlines() == names
    for split, per_class in (("train", 3), ("val", 2)):
        entries = read_list(video_set / f"{split}.txt")
        assert len(entries) == len(names) * per_class
        assert sorted(label for _, label in entries) == sorted(list(range(len(names))) * per_class)
        for rel, label in entries:
            assert not os.path.isabs(rel) and rel.startswith(f"{split}/{names[label]}/") and rel.endswith(".mp4")
            assert (video_set / "videos" / rel).is_file()
    assert len(list((video_set / "videos").rglob("*.mp4"))) == len(names) * 5


def test_every_video_decodes_to_the_right_frames_and_size(video_set):
    import av

    for split in ("train", "val"):
        for rel, _ in read_list(video_set / f"{split}.txt"):
            path = video_set / "videos" / rel
            vr = decord.VideoReader(str(path))
            assert len(vr) == VID["frames"]
            assert vr[0].shape == (40, 40, 3)
            assert decode(path).shape == (VID["frames"], 40, 40, 3)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == VID["fps"]


def test_videos_are_deterministic_for_a_seed(video_set, tmp_path):
    again = write_video_dataset(tmp_path / "again", **{**VID, "workers": 2})
    for rel in read_manifest(video_set)["files"]:
        assert (video_set / rel).read_bytes() == (again / rel).read_bytes()


def centroid_y(frame):
    """Row centroid of the bright objects (the backgrounds are dark, the shapes light)."""
    luma = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    weight = np.clip(luma - 130, 0, None)
    rows = np.arange(frame.shape[0], dtype=np.float32)
    return float((weight.sum(1) * rows).sum() / max(weight.sum(), 1e-6))


def test_motion_direction_is_in_the_decoded_videos(video_set):
    # Down-moving classes have even labels, up-moving odd ones; the shape travels at least 0.3 of the frame.
    moved = {0: [], 1: []}
    for split in ("train", "val"):
        for rel, label in read_list(video_set / f"{split}.txt"):
            clip = decode(video_set / "videos" / rel)
            moved[label % 2].append(centroid_y(clip[-1]) - centroid_y(clip[0]))
    assert all(d > 0 for d in moved[0]), moved[0]
    assert all(d < 0 for d in moved[1]), moved[1]


@pytest.mark.parametrize("shape", SHAPES)
def test_opposite_directions_are_time_reversals(shape):
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    down, track_down = render_video(rng(), shape, "top_to_bottom", 6, 32, return_track=True)
    up, track_up = render_video(rng(), shape, "bottom_to_top", 6, 32, return_track=True)
    assert np.array_equal(up, down[::-1]) and np.array_equal(track_up, track_down[::-1])
    assert track_down[-1, 1] - track_down[0, 1] > 0.2 * 32    # y grows: down
    right, track = render_video(rng(), shape, "left_to_right", 6, 32, return_track=True)
    assert track[-1, 0] - track[0, 0] > 0.2 * 32 and right.shape == (6, 32, 32, 3)


def test_manifest_skips_a_complete_set_and_rebuilds_otherwise(tmp_path, capsys):
    out = tmp_path / "set"
    small = dict(IMG, train_per_class=2, val_per_class=1)
    write_image_dataset(out, **small)
    stamp = (out / MANIFEST).stat().st_mtime_ns
    marker = out / "train" / "00_circle" / "0000.png"
    os.utime(marker, ns=(1, 1))

    # Same settings: nothing is rewritten.
    write_image_dataset(out, **dict(small, progress=True))
    assert "nothing to do" in capsys.readouterr().out
    assert (out / MANIFEST).stat().st_mtime_ns == stamp and marker.stat().st_mtime_ns == 1

    # Other settings: rebuilt from clean (no file of the old set survives).
    write_image_dataset(out, **dict(small, num_classes=2, train_per_class=1))
    assert read_manifest(out)["settings"]["num_classes"] == 2
    assert sorted(p.name for p in (out / "train").iterdir()) == ["00_circle", "01_square"]
    assert sorted(p.name for p in (out / "train" / "00_circle").iterdir()) == ["0000.png"]

    # An interrupted build (no manifest, files missing) is rebuilt from clean.
    (out / MANIFEST).unlink()
    (out / "val" / "01_square" / "0000.png").unlink()
    (out / "train" / "stray.txt").write_text("left over")
    write_image_dataset(out, **small)
    assert read_manifest(out)["settings"]["num_classes"] == 3
    assert not (out / "train" / "stray.txt").exists()
    assert len(list(out.rglob("*.png"))) == 9

    # A complete manifest whose files went missing is rebuilt too.
    (out / "val" / "01_square" / "0000.png").unlink()
    write_image_dataset(out, **small)
    assert (out / "val" / "01_square" / "0000.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".set.")]   # no hidden build dirs left


def test_a_directory_of_other_files_is_not_replaced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        write_image_dataset(out, **IMG)
    assert (out / "thesis.tex").read_text() == "precious"


def test_a_failed_build_leaves_no_trace(tmp_path, monkeypatch):
    def boom(job):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_make_image", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image_dataset(tmp_path / "set", **IMG)
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video_dataset(tmp_path / "v", **{**VID, "size": 33})
    with pytest.raises(ValueError, match="decord cannot read this frame size"):
        write_video_dataset(tmp_path / "v", **{**VID, "size": 48, "train_per_class": 1, "val_per_class": 0})
    with pytest.raises(ValueError, match="frames"):
        write_video_dataset(tmp_path / "v", **{**VID, "frames": 1})
    with pytest.raises(ValueError, match="nothing to write"):
        write_image_dataset(tmp_path / "i", **{**IMG, "train_per_class": 0, "val_per_class": 0})
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_and_then_skips(tmp_path, capsys):
    out = tmp_path / "vid"
    argv = ["videos", str(out), "--shapes", "1", "--train-per-class", "1", "--val-per-class", "1", "--frames", "4",
            "--size", "32", "--workers", "1"]
    assert synthetic.main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 files for 2 classes" in printed and "train.txt" in printed
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["settings"] == dict(num_shapes=1, directions=2, train_per_class=1, val_per_class=1, frames=4,
                                        size=32, fps=8, seed=0)
    assert synthetic.main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert synthetic.main(["images", str(tmp_path / "img"), "--classes", "99"]) == 2
    assert "num_classes must be" in capsys.readouterr().err
