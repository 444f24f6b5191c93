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


# --- the pipeline lists read as mmaction2 0.20 runs them, step after step ---------------------------------------------

from sts3d.data.pipeline import PipelineError, clip_settings  # noqa: E402

_SAMPLE = dict(type="SampleFrames", clip_len=2)
_TEST_SAMPLE = dict(_SAMPLE, test_mode=True)
_SHORT = dict(type="Resize", scale=(-1, 40))
_RRC = dict(type="RandomResizedCrop")
_FIXED = dict(type="Resize", scale=(32, 32), keep_ratio=False)
_NORM = dict(type="Normalize", mean=list(MEAN), std=list(STD), to_bgr=False)


def test_a_pipeline_without_a_short_side_resize_crops_the_decoded_frames(videos):
    # mmaction's CenterCrop / ThreeCrop / RandomResizedCrop work on whatever frames reach them: without a Resize step
    # the decoded frames are cropped as they are (here 48x64), never resized to a default short side first.
    settings, test_mode = clip_settings([_TEST_SAMPLE, dict(type="CenterCrop", crop_size=32)])
    assert test_mode and settings.short_side is None
    records = read_annotations(videos / "train.txt", videos / "videos")
    views, _, _ = VideoDataset(records, settings, test_mode=True)[0]
    reader = open_video(records[0].path)
    frames = read_frames(reader, sample_frame_indices(len(reader), 2, 1, 1, test_mode=True))
    crop = frames[:, 8:40, 16:48]  # CenterCrop's box on 48x64: left (64 - 32) // 2, top (48 - 32) // 2
    expected = (torch.from_numpy(crop).permute(3, 0, 1, 2).float() - torch.tensor(MEAN).view(3, 1, 1, 1)) \
        / torch.tensor(STD).view(3, 1, 1, 1)
    torch.testing.assert_close(views[0], expected, rtol=0, atol=0)


def test_resize_takes_minus_one_on_either_side():
    # mmaction's Resize: a keep-ratio scale whose smaller entry is -1 becomes (inf, the other), so (S, -1) and
    # (-1, S) both resize the short side to S (mmcv's rescale_size)
    for scale in ((-1, 40), (40, -1)):
        settings, _ = clip_settings([_TEST_SAMPLE, dict(type="Resize", scale=scale), dict(type="CenterCrop",
                                                                                           crop_size=32)])
        assert settings.short_side == 40


@pytest.mark.parametrize("pipeline, message", [
    # RandomResizedCrop's crop keeps its own size when no fixed-size Resize follows it
    ([_SAMPLE, _SHORT, _RRC], "fixed-size Resize"),
    # the train path never applies CenterCrop / ThreeCrop
    ([_SAMPLE, _SHORT, _RRC, _FIXED, dict(type="CenterCrop", crop_size=32)], "CenterCrop"),
    # mmaction's test_mode changes SampleFrames only: a random crop or flip would still be random
    ([_TEST_SAMPLE, _SHORT, _RRC, _FIXED], "RandomResizedCrop"),
    ([_TEST_SAMPLE, _SHORT, dict(type="CenterCrop", crop_size=32), dict(type="Flip", flip_ratio=0.5)], "Flip"),
    # without a crop mmaction's test views are the whole resized frames
    ([_TEST_SAMPLE, _SHORT], "CenterCrop or ThreeCrop"),
    # mmaction applies the steps in list order: these orders (or a step twice) give other pixels than ours
    ([_TEST_SAMPLE, dict(type="CenterCrop", crop_size=32), _SHORT], "before"),
    ([_SAMPLE, _SHORT, _RRC, dict(type="Flip", flip_ratio=0.5), _FIXED], "before"),
    ([_SAMPLE, _NORM, _SHORT, _RRC, _FIXED], "before"),
    ([_TEST_SAMPLE, dict(type="Resize", scale=(-1, 64)), _SHORT, dict(type="CenterCrop", crop_size=32)], "second"),
    ([_TEST_SAMPLE, _SHORT, dict(type="CenterCrop", crop_size=32), dict(type="ThreeCrop", crop_size=32)], "second"),
])
def test_pipelines_read_otherwise_than_mmaction_runs_them_are_refused(pipeline, message):
    with pytest.raises(PipelineError, match=message):
        clip_settings(pipeline)


@pytest.mark.parametrize("init, decode", [("PyAVInit", "PyAVDecode"), ("OpenCVInit", "OpenCVDecode")])
def test_decoding_steps_other_than_decords_are_refused(init, decode):
    # mmaction's PyAVInit / OpenCVInit count a video's frames from the container's metadata (total_frames, which
    # SampleFrames spreads its clips over) and PyAVDecode / OpenCVDecode fall back to other frames past the last
    # decodable one; the loader here numbers frames as decord does, so these steps would give other clips
    pipeline = [dict(type=init), _TEST_SAMPLE, dict(type=decode), _SHORT, dict(type="CenterCrop", crop_size=32)]
    with pytest.raises(PipelineError, match=f"{init}: .*DecordInit"):
        clip_settings(pipeline)


def test_the_seeds_pipeline_forms_are_read():
    train, test_mode = clip_settings([dict(type="DecordInit"), _SAMPLE, dict(type="DecordDecode"), _SHORT, _RRC,
                                      _FIXED, dict(type="Flip", flip_ratio=0.5), _NORM,
                                      dict(type="FormatShape", input_format="NCTHW"), dict(type="Collect"),
                                      dict(type="ToTensor")])
    assert not test_mode and (train.short_side, train.crop_size, train.flip) == (40, 32, True)
    test, test_mode = clip_settings([_TEST_SAMPLE, _SHORT, dict(type="ThreeCrop", crop_size=40), _NORM])
    assert test_mode and (test.short_side, test.crop_size, test.test_crop) == (40, 40, "three")


def test_decord_decode_only_in_its_accurate_mode():
    # DecordDecode(mode='efficient') (mmaction 0.2x) seeks to keyframes only: other frames than the loader's
    with pytest.raises(PipelineError, match="only mode='accurate'"):
        clip_settings([_TEST_SAMPLE, dict(type="DecordDecode", mode="efficient"), _SHORT,
                       dict(type="CenterCrop", crop_size=32)])
    clip_settings([dict(type="DecordInit", num_threads=4), _TEST_SAMPLE, dict(type="DecordDecode", mode="accurate"),
                   _SHORT, dict(type="CenterCrop", crop_size=32)])


@pytest.mark.parametrize("step", [dict(type="Normalize", mean=list(MEAN)), dict(type="FormatShape"),
                                  dict(type="CenterCrop"), dict(type="Resize")])
def test_a_missing_required_argument_is_named(step):
    # mmaction's Normalize(mean, std), FormatShape(input_format), CenterCrop(crop_size), Resize(scale) and
    # SampleFrames(clip_len) have no defaults: without one the step's constructor raised a TypeError
    with pytest.raises(PipelineError, match="missing argument"):
        clip_settings([_TEST_SAMPLE, step])
    with pytest.raises(PipelineError, match="SampleFrames: missing argument 'clip_len'"):
        clip_settings([dict(type="SampleFrames", test_mode=True), dict(type="CenterCrop", crop_size=32)])


def test_a_three_crop_that_does_not_fit_stops_rather_than_skipping_every_video(videos):
    # mmaction's ThreeCrop asserts that a side of the frame equals the crop: a config error stops the run at the first
    # video; it is not an unreadable video to be skipped (which would leave no video scored)
    records = read_annotations(videos / "train.txt", videos / "videos")
    test = VideoDataset(records, ClipSettings(clip_len=2, short_side=40, crop_size=32, test_crop="three"),
                        test_mode=True)
    with pytest.raises(ValueError, match="ThreeCrop needs a frame side equal to the crop size 32"):
        test[0]
    assert test.skipped == []
