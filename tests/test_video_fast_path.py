"""The fast video path: PyAV / torchcodec frames equal decord's, fused training crops, normalisation, multi-clip mode.

Videos are tiny H.264 files written with PyAV with x264's default B-frames (so non-reference frames exist and the
skipping of their decoding is exercised) and short keyframe intervals (so clips cross keyframes).
"""
import av
import cv2
import decord
import numpy as np
import pytest
import torch

from sts3d.data.sampling import sample_frame_indices
from sts3d.data.transforms import (crop_frames, random_resized_crop_box, resize_frames, resized_crops,
                                   short_side_size, source_box, three_crop_boxes)
from sts3d.data.video import (MEAN, STD, ClipSettings, PyAVReader, TorchcodecReader, VideoDataset, VideoRecord,
                              open_video, read_frames)


def write_bframe_mp4(path, frames, gop):
    """``frames`` (T, H, W, 3) uint8 -> H.264 with B-frames (x264 defaults, lossy) and a keyframe every ``gop``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "20", "preset": "medium", "g": str(gop), "keyint_min": str(gop), "bf": "3"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    rng = np.random.default_rng(0)
    t = np.arange(90)[:, None, None, None]
    y, x = (grid[None, :, :, None] for grid in np.mgrid[:64, :96])
    # moving texture plus noise: x264 picks B-frames, and every frame differs
    frames = ((x * 3 + t * 4) % 256 + (y * 2) % 64 + rng.integers(0, 30, (90, 64, 96, 3))).astype(np.uint8)
    return write_bframe_mp4(tmp_path_factory.mktemp("fast") / "clip.mp4", frames, gop=24)


def decord_frames(path, indices):
    return decord.VideoReader(str(path), num_threads=1).get_batch(list(indices)).asnumpy()


def test_the_video_has_nonreference_frames(video):
    container = av.open(str(video))
    stream = container.streams.video[0]
    stream.codec_context.skip_frame = "NONREF"
    assert len(list(container.decode(stream))) < 90  # otherwise the skipping below is not tested


@pytest.mark.parametrize("start,interval,length", [(0, 2, 32), (5, 2, 32), (23, 1, 20), (30, 8, 7), (71, 3, 6)])
def test_pyav_frames_equal_decords(video, start, interval, length):
    indices = np.arange(start, start + interval * length, interval) % 90  # the last case wraps around
    reader = open_video(video, "pyav")
    assert len(reader) == len(decord.VideoReader(str(video)))
    np.testing.assert_array_equal(read_frames(reader, indices), decord_frames(video, indices))


def test_pyav_reader_is_reusable_and_takes_any_order(video):
    reader = PyAVReader(video)
    for indices in ([40, 3, 3, 88], [0], [89, 88, 87]):
        np.testing.assert_array_equal(reader.get(indices), decord_frames(video, indices))
    with pytest.raises(IndexError):
        reader.get([90])


def _torchcodec_or_skip(video):
    try:
        return TorchcodecReader(video)
    except (ImportError, RuntimeError, OSError) as error:  # no torchcodec, or FFmpeg's shared libraries missing
        pytest.skip(f"torchcodec unusable here (pip install torchcodec; apt-get install ffmpeg): {error}")


def test_torchcodec_frames_equal_decords(video):
    reader = _torchcodec_or_skip(video)
    indices = sample_frame_indices(90, 16, 2, 3, test_mode=True)
    assert len(reader) == 90
    # equal, not merely close: torchcodec and decord convert with the same swscale path
    np.testing.assert_array_equal(read_frames(reader, indices), decord_frames(video, indices))


@pytest.mark.parametrize("decoder", ["decord", "pyav", "torchcodec"])
def test_test_views_are_the_seeds_two_step_resize(video, decoder):
    if decoder == "torchcodec":
        _torchcodec_or_skip(video)
    settings = ClipSettings(clip_len=8, frame_interval=2, num_clips=2, short_side=48, crop_size=48,
                            test_crop="three")
    views, label, skipped = VideoDataset([VideoRecord(video, 3, "x:1")], settings, test_mode=True,
                                         decoder=decoder)[0]
    frames = decord_frames(video, sample_frame_indices(90, 8, 2, 2, test_mode=True))
    frames = np.stack([cv2.resize(f, (72, 48), interpolation=cv2.INTER_LINEAR) for f in frames])
    expected = []
    for box in three_crop_boxes((48, 72), 48):
        clip = torch.from_numpy(crop_frames(frames, box).copy()).float()
        clip = (clip - torch.tensor(MEAN)) / torch.tensor(STD)
        expected.append(clip.view(2, 8, 48, 48, 3).permute(0, 4, 1, 2, 3))
    assert (label, skipped) == (3, 0)
    torch.testing.assert_close(views, torch.cat(expected), rtol=0, atol=0)


def test_fused_resize_maps_the_box_to_the_source():
    assert source_box((10, 20, 110, 220), (256, 454), (320, 568)) == (13, 25, 138, 275)
    assert source_box((0, 0, 454, 256), (256, 454), (320, 568)) == (0, 0, 568, 320)
    frames = np.random.default_rng(3).integers(0, 256, (3, 80, 120, 3), dtype=np.uint8)
    for flip in (False, True):
        out = resized_crops(frames, (10, 5, 90, 65), (32, 32), flip)
        expected = resize_frames(crop_frames(frames, (10, 5, 90, 65)), (32, 32))
        np.testing.assert_array_equal(out, expected[:, :, ::-1] if flip else expected)
    # close to the seed's two resizes: the same part of the scene, one interpolation instead of two
    rng = np.random.default_rng(4)
    smooth = cv2.GaussianBlur(frames[0], (0, 0), 4)[None]
    resized = short_side_size(80, 120, 64)
    box = random_resized_crop_box(resized, rng)
    seed = resize_frames(crop_frames(resize_frames(smooth, resized), box), (32, 32))
    fused = resized_crops(smooth, source_box(box, resized, (80, 120)), (32, 32))
    assert np.abs(seed.astype(int) - fused).mean() < 3


@pytest.mark.parametrize("fused", [True, False])
def test_train_clips_shape_dtype_and_normalisation(video, fused):
    settings = ClipSettings(clip_len=8, frame_interval=2, short_side=48, crop_size=32, fused_train_resize=fused)
    data = VideoDataset([VideoRecord(video, 1, "x:1")], settings, seed=7)
    clip, label, skipped = data[0]
    assert clip.shape == (1, 3, 8, 32, 32) and clip.dtype == torch.float32 and clip.is_contiguous()
    assert (label, skipped) == (1, 0)
    pixels = clip * torch.tensor(STD).view(3, 1, 1, 1) + torch.tensor(MEAN).view(3, 1, 1, 1)
    torch.testing.assert_close(pixels, pixels.round(), atol=1e-3, rtol=0)  # uint8 values, normalised per channel
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3


def test_train_output_equals_a_direct_computation(video):
    """The fast train path against crop, resize, flip, normalise written out plainly, with the same draws."""
    settings = ClipSettings(clip_len=8, frame_interval=2, short_side=48, crop_size=32)
    data = VideoDataset([VideoRecord(video, 0, "x:1")], settings, decoder="pyav")
    for seed in range(4):
        clip = data.load(data.records[0], np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        frames = decord_frames(video, sample_frame_indices(90, 8, 2, 1, rng=rng))
        box = random_resized_crop_box((48, 72), rng)
        x1, y1, x2, y2 = source_box(box, (48, 72), (64, 96))
        crops = np.stack([cv2.resize(f[y1:y2, x1:x2], (32, 32), interpolation=cv2.INTER_LINEAR) for f in frames])
        if rng.random() < 0.5:
            crops = crops[:, :, ::-1]
        expected = (torch.from_numpy(crops.copy()).float() - torch.tensor(MEAN)) / torch.tensor(STD)
        torch.testing.assert_close(clip[0], expected.permute(3, 0, 1, 2), rtol=0, atol=0)


def test_several_clips_from_one_decode(video, monkeypatch):
    calls = []
    get = PyAVReader.get
    monkeypatch.setattr(PyAVReader, "get", lambda self, indices: calls.append(len(indices)) or get(self, indices))
    settings = ClipSettings(clip_len=8, frame_interval=2, short_side=48, crop_size=32, clips_per_decode=4)
    clips, _, _ = VideoDataset([VideoRecord(video, 0, "x:1")], settings, decoder="pyav", seed=1)[0]
    assert clips.shape == (4, 3, 8, 32, 32) and len(calls) == 1
    # different starts and crops: no two clips alike
    assert all(not torch.equal(clips[i], clips[j]) for i in range(4) for j in range(i))
    test = VideoDataset([VideoRecord(video, 0, "x:1")], ClipSettings(clip_len=8, short_side=48, crop_size=48,
                                                                     clips_per_decode=4), test_mode=True)
    assert test[0][0].shape == (1, 3, 8, 48, 48)  # test views ignore it
