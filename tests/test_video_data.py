"""Video lists, decoding real mp4 files, train clips and test views, and unreadable videos."""
import av
import numpy as np
import pytest
import torch

from sts3d.data.sampling import sample_frame_indices
from sts3d.data.video import (MEAN, STD, AnnotationError, ClipSettings, VideoDataset, open_video, read_annotations,
                              read_frames)


def write_mp4(path, frames):
    """``frames`` (T, H, W, 3) uint8 -> an H.264 mp4 through PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    # frame t carries its index in its brightness, so a decoded frame tells which one it is
    base = rng.integers(0, 60, (1, 48, 64, 3), dtype=np.uint8)
    frames = (base + (np.arange(24) * 8)[:, None, None, None]).astype(np.uint8)
    write_mp4(root / "videos" / "a b" / "one.mp4", frames)
    write_mp4(root / "videos" / "two.mp4", frames[:10])
    (root / "videos" / "corrupt.mp4").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (root / "videos" / "empty.mp4").write_bytes(b"")
    (root / "train.txt").write_text("a b/one.mp4 0\ntwo.mp4 1\n")
    (root / "bad.txt").write_text("a b/one.mp4 0\ntwo.mp4 1\ncorrupt.mp4 1\nempty.mp4 0\nmissing.mp4 1\n")
    return root


def test_annotation_list_and_its_errors(videos, tmp_path):
    records = read_annotations(videos / "train.txt", videos / "videos", num_classes=2)
    assert [(r.path.name, r.label) for r in records] == [("one.mp4", 0), ("two.mp4", 1)]
    assert records[0].path.parent.name == "a b"  # paths may hold spaces
    for text, message in [("a.mp4\n", "train.txt:1: expected"), ("ok.mp4 0\nb.mp4 x\n", "train.txt:2: label 'x'"),
                          ("a.mp4 5\n", "train.txt:1: label 5 is outside"), ("\n", "no videos")]:
        (tmp_path / "train.txt").write_text(text)
        with pytest.raises(AnnotationError, match=message):
            read_annotations(tmp_path / "train.txt", num_classes=2)


def test_decoded_frames_are_the_requested_ones(videos):
    reader = open_video(videos / "videos" / "a b" / "one.mp4")
    assert len(reader) == 24
    indices = sample_frame_indices(24, 8, 4, 2, test_mode=True)
    frames = read_frames(reader, indices)
    brightness = frames.astype(float).mean(axis=(1, 2, 3))
    assert np.all(np.diff(brightness.reshape(2, 8)[:, :6]) > 0)  # looping aside, brightness rises with the index
    torch.testing.assert_close(torch.from_numpy(frames), torch.from_numpy(reader.get(indices.tolist())))


def test_train_clips_and_test_views(videos):
    records = read_annotations(videos / "train.txt", videos / "videos")
    settings = ClipSettings(clip_len=4, frame_interval=2, num_clips=1, short_side=40, crop_size=32)
    train = VideoDataset(records, settings)
    clip, label, skipped = train[0]
    assert skipped == 0
    assert clip.shape == (1, 3, 4, 32, 32) and clip.dtype == torch.float32 and label == 0
    test = VideoDataset(records, ClipSettings(clip_len=4, frame_interval=2, num_clips=2, short_side=40, crop_size=40,
                                              test_crop="three"), test_mode=True)
    views, label, _ = test[1]
    assert views.shape == (6, 3, 4, 40, 40) and label == 1
    # deterministic, and normalised with the seed's mean and std
    torch.testing.assert_close(views, test[1][0])
    assert views.mean().abs() < 3 and views.min() >= -MEAN[0] / STD[0] - 1e-3


def test_unreadable_videos_are_skipped_with_a_warning(videos):
    records = read_annotations(videos / "bad.txt", videos / "videos")
    data = VideoDataset(records, ClipSettings(clip_len=2, short_side=32, crop_size=32))
    for index in (2, 3, 4):
        with pytest.warns(RuntimeWarning, match=f"skipping unreadable video .*{records[index].path.name}"):
            clip, label, skipped = data[index]
        assert clip.shape == (1, 3, 2, 32, 32) and skipped >= 1
    assert len(data.skipped) >= 3
    test = VideoDataset(records, ClipSettings(clip_len=2, short_side=32, crop_size=32), test_mode=True)
    with pytest.warns(RuntimeWarning, match="corrupt.mp4"):
        views, label, skipped = test[2]
    assert views.numel() == 0 and label == 1 and skipped == 1
